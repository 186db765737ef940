"""Bag to bag replay without ROS: every camera frame of a rosbag2 through the model.

    panoptic-depthlab bag IN OUT [--image-topic T]... [--camera-info-topic T]... [--odometry-topic T]

Reads sqlite3 or MCAP bags (see :mod:`.bag_reading`) and writes a new bag with
all input topics plus every output the node publishes (``/panoptic_depthlab/<name>``
for each output of :data:`~.node_outputs.OUTPUTS`, made by the same function as the
node's: markers and points only when the bag has a CameraInfo topic, no depth outputs
from an untrained depth branch), each stamped with its input image's header and
written at the input's receive time.  Offline: every frame, in order.
A bag file cut short (a recorder that was killed or lost power), which no reader
opens, is salvaged (see :mod:`.salvage`): every complete message before the cut is
replayed.  Several ``--image-topic`` replay several cameras, each with its own K (the
``--camera-info-topic`` in the same position, or else the CameraInfo beside its image
topic: ``/front/camera_info`` for ``/front/image_raw``) and its outputs under its own
name, ``/panoptic_depthlab/<camera>/<name>``; the camera is the image topic's namespace
(``front`` for ``/front/image_raw``).  With an odometry topic (``nav_msgs/Odometry``) the
tracker is given the camera's motion at each frame as the node does it (:mod:`.odometry`):
of the twists read before the image, the one whose stamp is nearest the image's header
stamp, within ``odometry_max_age_s``, moved to the camera by its mount.  With several
cameras the odometry is read once and used for each, moved by that camera's own mount.
Damage inside a file (a chunk failing its checksum, broken sqlite3 pages)
found while reading switches to salvaged copies of the bag's files and the replay
goes on after the last message handled.  Either way the loss is reported in
``ReplaySummary.damage``.  A bag directory whose recorder died before writing
``metadata.yaml``, and a split bag (``<bag>_0.mcap``, ``<bag>_1.mcap``, ... or
``.db3``) with such a file, are read file by file in split order.  What cannot be
salvaged ends the replay there: what was done is a complete bag (or, before the first
frame, an error naming the bag).

The output is written beside ``OUT`` and moved into place when the replay ends (see
:mod:`.output`): a failed run keeps the previous output, and ``--overwrite`` replaces
only a bag this tool wrote (its ``metadata.yaml`` says so in ``custom_data``).  A stop
request (SIGINT / SIGTERM, see :mod:`.interrupt`) ends the replay like the end of the
input.  Frames over ``max_pixels`` and messages that do not deserialize as their type
are skipped, named and counted.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from rosbags.interfaces import Connection
from rosbags.rosbag2 import Reader, Writer
from rosbags.typesys.store import Typestore
from tqdm import tqdm

from . import msg_conversions
from .bag_reading import (
    IMAGE_TYPES,
    PACKAGE,
    bag_files,
    copy_connection,
    deserialize,
    older_definition,
    open_readers,
    pick_topic,
    read_messages,
    readable_sources,
    storage_of,
    typestore_with_our_messages,
)
from .ego_motion import CameraMount
from .errors import BagError, InputError, NothingDoneError
from .image_io import DEFAULT_MAX_PIXELS
from .node_outputs import NAMESPACE, OUTPUTS, SEGMENT_ARRAY_TYPE, OutputSettings, output_messages
from .odometry import DEFAULT_MAX_AGE_S, ODOMETRY_TYPE, OdometryBuffer, camera_mounts, odometry_sample
from .output import StagedOutput
from .pipeline import camera_topic
from .predictor import Predictor
from .tracker import Tracker, TrackerConfig

CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
WRITTEN_BY = "panoptic-depthlab bag"
# custom_data keys in metadata.yaml: which tool wrote the bag, and from what.
MARK_PREFIX = "panoptic_depthlab."


@dataclass
class ReplaySummary:
    """What a replay did."""

    frames: int = 0
    frames_per_camera: dict[str, int] = field(default_factory=dict)  # several cameras: frames of each
    skipped: list[str] = field(default_factory=list)
    segments_per_frame: list[int] = field(default_factory=list)
    latency_s: list[float] = field(default_factory=list)
    output_topics: list[str] = field(default_factory=list)
    damage: str | None = None  # set when a cut-short or damaged input was salvaged: what was lost
    interrupted: bool = False  # a stop request ended the replay early (the output holds what was done)
    tracker_resets: list[str] = field(default_factory=list)  # "<stamp>: <reason>" per reset of the tracks
    upgraded: dict[str, int] = field(default_factory=dict)  # topic -> messages of an older definition rewritten
    odometry_messages: int = 0  # odometry messages taken (with an odometry topic)
    # "<stamp>: <why>" per frame tracked without it ("camera C at <stamp>: <why>" with several cameras)
    without_odometry: list[str] = field(default_factory=list)


def bag_marker_says(path: Path, tool: str) -> str | None:
    """None when bag folder ``path``'s ``metadata.yaml`` says ``tool`` wrote it; else why it is not ``tool``'s."""
    try:
        doc = yaml.safe_load((path / "metadata.yaml").read_text())
        custom = doc["rosbag2_bagfile_information"].get("custom_data") or {}
    except FileNotFoundError:
        return "no metadata.yaml: not a complete bag"
    except (OSError, yaml.YAMLError, TypeError, KeyError, AttributeError) as exc:
        return f"its metadata.yaml is unreadable ({type(exc).__name__})"
    if custom.get(MARK_PREFIX + "written_by") != tool:
        return f"its metadata.yaml has no custom_data {MARK_PREFIX}written_by: {tool}"
    return None


def mark_bag(writer: Writer, tool: str, **details: object) -> None:
    """Record in the bag's ``metadata.yaml`` (``custom_data``) that ``tool`` wrote it, and from what."""
    writer.set_custom_data(MARK_PREFIX + "written_by", tool)
    for key, value in details.items():
        writer.set_custom_data(MARK_PREFIX + key, str(value))


def bag_output(bag_in: str | Path, bag_out: str | Path, *, overwrite: bool, tool: str = WRITTEN_BY) -> StagedOutput:
    """Check the output rules for a replay (before any model is loaded); see :mod:`.output`."""
    bag_in, bag_out = Path(bag_in), Path(bag_out)
    if not bag_in.exists():
        raise BagError(f"{bag_in}: no such bag")
    return StagedOutput.at(
        bag_out,
        what=tool,
        overwrite=overwrite,
        why_not_ours=lambda path: bag_marker_says(path, tool),
        inputs=[bag_in],
        containers=[bag_in] if bag_in.is_dir() else [],
    )


def replay_bag(
    bag_in: str | Path,
    bag_out: str | Path,
    *,
    predictor: Predictor,
    image_topic: str | Sequence[str] | None = None,
    camera_info_topic: str | Sequence[str] | None = None,
    overwrite: bool = False,
    near: float = OutputSettings.near,
    far: float = OutputSettings.far,
    progress: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    stop: Callable[[], bool] = lambda: False,
    tracking: bool | TrackerConfig = True,
    odometry_topic: str | None = None,
    odometry_max_age_s: float = DEFAULT_MAX_AGE_S,
    camera_mount: CameraMount | Sequence[CameraMount] | None = None,
) -> ReplaySummary:
    """Replay ``bag_in`` through ``predictor`` into a new bag ``bag_out`` (see module docstring).

    ``image_topic`` / ``camera_info_topic``: a topic, or one per camera (see the module
    docstring).  ``stop()`` is asked before each message; once True the replay ends as at
    the end of the input.  ``tracking``: True tracks with the default :class:`TrackerConfig`,
    a config with that one (one tracker per camera), False not at all.  ``odometry_topic``:
    a ``nav_msgs/Odometry`` topic giving the tracker the camera's motion, the twist nearest
    each image stamp within ``odometry_max_age_s``, moved to the camera by ``camera_mount``
    (one camera: a mount, default :class:`CameraMount`'s; several: one mount per camera, in
    the order of ``image_topic``).  Raises :class:`BagError` naming a missing topic, before
    anything is written, and (keeping any previous ``bag_out``) when no frame could be replayed.
    """
    # A bad max age or mount (not one per camera): ValueError, before anything is read or written.
    odometry = None
    if odometry_topic is not None:
        mounts = camera_mounts(camera_mount, max(len(_topics(image_topic)), 1))
        odometry = (odometry_topic, [OdometryBuffer(mount, odometry_max_age_s) for mount in mounts])
    staged = bag_output(bag_in, bag_out, overwrite=overwrite)
    bag_in, bag_out = Path(bag_in), Path(bag_out)
    ts = typestore_with_our_messages()
    summary = ReplaySummary()
    with staged as staging, ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pdl_bag_")))
        sources, salvages = readable_sources(bag_in, workdir)
        recovered = False

        def recover(problem: BagError) -> list[Reader]:
            """Damage found: salvage every file of the bag and read the copies instead (once)."""
            nonlocal recovered
            if recovered or not bag_files(bag_in):
                raise problem
            recovered = True
            try:
                copies, found = readable_sources(bag_in, workdir / "recovered", salvage_all=True)
                readers = open_readers(copies, bag_in, stack)
            except BagError as again:
                raise BagError(f"{problem}; salvaging it failed too: {again}") from again
            salvages[:] = found
            return readers

        try:
            readers = open_readers(sources, bag_in, stack)
        except BagError as exc:
            readers = recover(exc)
            summary.damage = f"{exc}; read a salvaged copy"

        _replay(
            readers,
            recover,
            bag_in,
            staging / bag_out.name,
            ts,
            summary,
            predictor=predictor,
            image_topics=_topics(image_topic),
            camera_info_topics=_topics(camera_info_topic),
            settings=OutputSettings(near=near, far=far),
            progress=progress,
            max_pixels=max_pixels,
            stop=stop,
            tracking=(TrackerConfig() if tracking is True else tracking) if tracking else None,
            odometry=odometry,
        )
        damaged = [v.describe() for v in salvages if v.dropped or v.cut_short]
        if summary.damage or damaged:
            summary.damage = "; ".join(filter(None, [summary.damage, *damaged]))
        if summary.frames == 0 and not summary.interrupted:
            more = f" (+{len(summary.skipped) - 1} more)" if len(summary.skipped) > 1 else ""
            why = f"{summary.skipped[0]}{more}" if summary.skipped else summary.damage or "its image topic is empty"
            raise NothingDoneError(f"{bag_in}: no frame could be replayed: {why}", summary.skipped)
    return summary


def _replay(
    readers: list[Reader],
    recover: Callable[[BagError], list[Reader]],
    bag_in: Path,
    bag_out: Path,
    ts: Typestore,
    summary: ReplaySummary,
    *,
    predictor: Predictor,
    image_topics: list[str],
    camera_info_topics: list[str],
    settings: OutputSettings,
    progress: bool,
    max_pixels: int,
    stop: Callable[[], bool],
    tracking: TrackerConfig | None,
    odometry: tuple[str, list[OdometryBuffer]] | None = None,
) -> None:
    """Every input message copied, every image frame answered with the node's outputs.

    ``readers`` are the bag's files in order (one reader for a bag rosbags opens whole);
    topics are matched by name across them, as a split bag's connection ids are per file.
    Damage found while reading calls ``recover`` once for salvaged readers, and the
    replay goes on after the last message handled (see :func:`_read_all`).
    """
    connections = list({c.topic: c for r in reversed(readers) for c in r.connections}.values())
    cameras = _bag_cameras(connections, bag_in, image_topics, camera_info_topics)
    if odometry is not None:
        pick_topic(connections, bag_in, odometry[0], (ODOMETRY_TYPE,), "odometry", True)
        if tracking is not None:  # odometry is for the tracker: each camera's buffer, with its own mount
            for camera, buffer in zip(cameras, odometry[1], strict=True):
                camera.odometry_topic, camera.odometry = odometry[0], buffer
    writer = Writer(bag_out, version=9, storage_plugin=storage_of(bag_in))
    mark_bag(writer, WRITTEN_BY, input=bag_in.resolve(), checkpoint=predictor.source or "(in memory)")
    writer.open()
    try:
        images = {c.image_topic for c in cameras}
        frames = sum(c.msgcount for r in readers for c in r.connections if c.topic in images)
        with tqdm(total=frames, desc=f"replay {bag_in.name}", unit="frame", disable=not progress) as bar:
            replay = _FrameReplay(
                writer,
                ts,
                summary,
                predictor=predictor,
                settings=settings,
                max_pixels=max_pixels,
                cameras=cameras,
                on_frame=lambda: bar.update(1),
                tracking=tracking,
            )
            replay.copy_connections(connections, bag_in)
            _read_all(readers, recover, replay.handle, bag_in, summary, stop)
    finally:
        writer.close()  # whatever happened, what was written is a complete bag


@dataclass
class _BagCamera:
    """One camera of a replay: its name ("" for the single camera), topics, latest K and tracker."""

    name: str
    image_topic: str
    info_topic: str | None
    camera_k: np.ndarray | None = None
    tracker: Tracker | None = None
    outputs: dict[str, tuple[Any, Connection]] = field(default_factory=dict)
    odometry_topic: str | None = None
    odometry: OdometryBuffer | None = None  # the camera's motion for its tracker (None: no odometry)


def _topics(value: str | Sequence[str] | None) -> list[str]:
    return [] if value is None else [value] if isinstance(value, str) else list(value)


def camera_name_of(image_topic: str) -> str:
    """The camera an image topic belongs to: its namespace (``/front/image_raw`` -> ``front``)."""
    topic = image_topic.removesuffix("/compressed")
    return topic.rsplit("/", 1)[0].strip("/")


def _bag_cameras(
    connections: list[Connection], bag: Path, image_topics: list[str], info_topics: list[str]
) -> list[_BagCamera]:
    """The cameras to replay: one (the only image topic, or the one named), or one per ``image_topics``."""
    if len(image_topics) <= 1:
        img = pick_topic(connections, bag, next(iter(image_topics), None), IMAGE_TYPES, "image", True)
        if len(info_topics) > 1:
            raise BagError(f"{bag}: {len(info_topics)} --camera-info-topic for one --image-topic")
        info_conn = pick_topic(
            connections, bag, next(iter(info_topics), None), (CAMERA_INFO_TYPE,), "camera info", False
        )
        assert img is not None
        return [_BagCamera("", img.topic, info_conn.topic if info_conn is not None else None)]
    if info_topics and len(info_topics) != len(image_topics):
        raise BagError(
            f"{bag}: {len(image_topics)} --image-topic but {len(info_topics)} --camera-info-topic: give one per "
            "camera, in the same order, or none (each camera then uses the camera_info beside its image topic)"
        )
    topics = {c.topic for c in connections}
    cameras = []
    for i, topic in enumerate(image_topics):
        pick_topic(connections, bag, topic, IMAGE_TYPES, "image", True)
        name = camera_name_of(topic)
        if not name:
            raise BagError(f"{bag}: image topic {topic!r} has no namespace to name its camera (e.g. /front/image)")
        if info_topics:
            info: str | None = info_topics[i]
            pick_topic(connections, bag, info, (CAMERA_INFO_TYPE,), "camera info", False)
        else:
            beside = "/" + name + "/camera_info"
            info = beside if beside in topics else None
        cameras.append(_BagCamera(name, topic, info))
    names = [c.name for c in cameras]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise BagError(f"{bag}: several image topics of camera {', '.join(repeated)}; one image topic per namespace")
    return cameras


class _FrameReplay:
    """Writes one replay's output bag: the input copied, and each frame's outputs as the node publishes them.

    The outputs are those of :data:`~.node_outputs.OUTPUTS` this replay can give: no
    depth outputs from an untrained depth branch, no markers or points without a
    CameraInfo topic (nor before its first message), no tracked panoptic without tracking.
    Each camera has its own K, tracker and output topics.
    """

    def __init__(
        self,
        writer: Writer,
        ts: Typestore,
        summary: ReplaySummary,
        *,
        predictor: Predictor,
        settings: OutputSettings,
        max_pixels: int,
        cameras: list[_BagCamera],
        on_frame: Callable[[], Any],
        tracking: TrackerConfig | None,
    ) -> None:
        self.writer, self.ts, self.summary = writer, ts, summary
        self.predictor, self.settings, self.max_pixels = predictor, settings, max_pixels
        self.on_frame = on_frame
        self.copies: dict[str, Connection] = {}
        self.upgrades: dict[str, Typestore] = {}  # topic -> a typestore with the bag's older definition
        self.by_image = {c.image_topic: c for c in cameras}
        self.by_info = {c.info_topic: c for c in cameras if c.info_topic is not None}
        self.by_odometry: dict[str, list[_BagCamera]] = {}  # the odometry topic -> every camera it moves
        for c in cameras:
            if c.odometry_topic and c.odometry is not None:
                self.by_odometry.setdefault(c.odometry_topic, []).append(c)
        for camera in cameras:
            camera.tracker = Tracker(tracking) if tracking is not None else None
            intrinsics = camera.info_topic is not None
            for o in OUTPUTS:
                if o.available(depth=predictor.depth_enabled, intrinsics=intrinsics, tracks=tracking is not None):
                    topic = f"{NAMESPACE}/{camera_topic(camera.name, o.name)}"
                    camera.outputs[o.name] = (o, writer.add_connection(topic, o.msg_type, typestore=ts))
                    summary.output_topics.append(topic)
            if camera.name:
                summary.frames_per_camera[camera.name] = 0

    def copy_connections(self, connections: list[Connection], bag: Path) -> None:
        """Every input topic, except outputs of an earlier replay (they are replaced, not doubled).

        A topic of our segments with an older definition is written with today's (see
        :meth:`_upgrade`): one bag holds one definition per type.
        """
        for c in connections:
            if c.topic.startswith(NAMESPACE + "/"):
                continue
            older = older_definition(c, self.ts, bag)
            if older is None:
                self.copies[c.topic] = copy_connection(self.writer, c, self.ts, bag)
            else:
                self.upgrades[c.topic] = older
                qos = getattr(c.ext, "offered_qos_profiles", [])
                self.copies[c.topic] = self.writer.add_connection(
                    c.topic, c.msgtype, typestore=self.ts, offered_qos_profiles=qos
                )

    def handle(self, conn: Connection, stamp_ns: int, raw: bytes) -> None:
        """One input message: copied; a CameraInfo updates K; an image is answered."""
        if conn.topic in self.upgrades:
            self._upgrade(conn, stamp_ns, raw)
        elif conn.topic in self.copies:
            self.writer.write(self.copies[conn.topic], stamp_ns, raw)
        if conn.topic in self.by_info:  # a CameraInfo topic is never an image topic (types differ)
            self._camera_info(self.by_info[conn.topic], conn, stamp_ns, raw)
        elif conn.topic in self.by_image:
            self.on_frame()
            self._frame(self.by_image[conn.topic], conn, stamp_ns, raw)
        elif conn.topic in self.by_odometry:
            self._odometry(self.by_odometry[conn.topic], conn, stamp_ns, raw)

    def _upgrade(self, conn: Connection, stamp_ns: int, raw: bytes) -> None:
        """A ``SegmentDepthArray`` of an older definition, rewritten with today's.

        Missing fields are unknown: the tracking fields of a bag from before tracking untracked
        (0, 0, NaN, NaN), ``at_rest`` of one from before it False (:func:`~.msg_conversions.segment_from_msg`).
        """
        try:
            old: Any = deserialize(self.upgrades[conn.topic], raw, conn)
        except InputError as exc:
            self.summary.skipped.append(f"{conn.topic} at {stamp_ns}: {exc}")
            return
        t = self.ts.types
        stamp = t["builtin_interfaces/msg/Time"](sec=old.header.stamp.sec, nanosec=old.header.stamp.nanosec)
        message = msg_conversions.segments_to_msg(
            [msg_conversions.segment_from_msg(s) for s in old.segments],
            header=t["std_msgs/msg/Header"](stamp=stamp, frame_id=old.header.frame_id),
            array_cls=t[SEGMENT_ARRAY_TYPE],
            segment_cls=t[f"{PACKAGE}/msg/SegmentDepth"],
            point_cls=t["geometry_msgs/msg/Point"],
            vector_cls=t["geometry_msgs/msg/Vector3"],
            height=old.height,
            width=old.width,
            label_divisor=old.label_divisor,
        )
        self.writer.write(self.copies[conn.topic], stamp_ns, self.ts.serialize_cdr(message, SEGMENT_ARRAY_TYPE))
        self.summary.upgraded[conn.topic] = self.summary.upgraded.get(conn.topic, 0) + 1

    def _camera_info(self, camera: _BagCamera, conn: Connection, stamp_ns: int, raw: bytes) -> None:
        try:
            camera.camera_k = msg_conversions.camera_k(deserialize(self.ts, raw, conn))
        except InputError as exc:  # the previous good K stays in use
            self.summary.skipped.append(f"{conn.topic} at {stamp_ns}: {exc}")

    def _odometry(self, cameras: list[_BagCamera], conn: Connection, stamp_ns: int, raw: bytes) -> None:
        """One odometry message, read once, into every camera's buffer (each moves it by its own mount)."""
        try:
            sample = odometry_sample(deserialize(self.ts, raw, conn))
        except InputError as exc:  # a NaN twist: ignored, the replay goes on
            self.summary.skipped.append(f"{conn.topic} at {stamp_ns}: {exc}")
            return
        for camera in cameras:
            assert camera.odometry is not None
            camera.odometry.add(sample)
        self.summary.odometry_messages += 1

    def _frame(self, camera: _BagCamera, conn: Connection, stamp_ns: int, raw: bytes) -> None:
        try:
            msg: Any = deserialize(self.ts, raw, conn)
            compressed = conn.msgtype.endswith("CompressedImage")
            convert = msg_conversions.compressed_to_bgr if compressed else msg_conversions.image_to_bgr
            image = convert(msg, max_pixels=self.max_pixels, limit_name="--max-pixels")
            result = self.predictor.predict(image, camera_k=camera.camera_k)
        except InputError as exc:  # one bad frame is reported and skipped, the replay goes on
            self.summary.skipped.append(f"{conn.topic} at {stamp_ns}: {exc}")
            return
        if camera.tracker is not None:  # time: the image's own stamp, as in the node
            stamp = msg_conversions.stamp_ns(msg.header)
            ego = None
            if camera.odometry is not None:
                ego = camera.odometry.ego_at(stamp)
                if ego is None:
                    where = f"camera {camera.name} at " if camera.name else ""
                    self.summary.without_odometry.append(f"{where}{stamp}: {camera.odometry.why_none(stamp)}")
            tracked = camera.tracker.update(result, stamp_ns=stamp, image=image, ego=ego)
            if tracked.reset_reason is not None:
                where = f"camera {camera.name} at " if camera.name else ""
                self.summary.tracker_resets.append(f"{where}{stamp}: {tracked.reset_reason}")
            result = result.with_tracks(tracked.tracks)
        header = self.ts.types["std_msgs/msg/Header"](stamp=msg.header.stamp, frame_id=msg.header.frame_id)
        messages = output_messages(
            result,
            image,
            wanted=camera.outputs,
            header=header,
            camera_k=camera.camera_k,
            settings=self.settings,
            classes=self.ts.types.__getitem__,
            class_colors=self.predictor.classes.colors,
        )
        for name, message in messages.items():  # written at the input's receive time
            output, connection = camera.outputs[name]
            self.writer.write(connection, stamp_ns, self.ts.serialize_cdr(message, output.msg_type))
        self.summary.frames += 1
        if camera.name:
            self.summary.frames_per_camera[camera.name] += 1
        self.summary.segments_per_frame.append(len(result.segments))
        self.summary.latency_s.append(result.timings["total"])


Message = tuple[Connection, int, bytes]


def _read_all(
    readers: list[Reader],
    recover: Callable[[BagError], list[Reader]],
    handle: Callable[[Connection, int, bytes], None],
    bag: Path,
    summary: ReplaySummary,
    stop: Callable[[], bool],
) -> None:
    """Every message of ``readers`` to ``handle``, in order, until the end or ``stop()``.

    Damage found inside the bag switches to the salvaged copies ``recover`` gives, and
    reading goes on after the last message handled (messages come in time order; of
    several at that very stamp, as many per topic as were handled are skipped).
    """
    last_stamp, at_last = -1, Counter[str]()  # where the replay is: for going on after damage

    def tracked(conn: Connection, stamp_ns: int, raw: bytes) -> None:
        nonlocal last_stamp
        if stamp_ns != last_stamp:
            last_stamp = stamp_ns
            at_last.clear()
        at_last[conn.topic] += 1
        handle(conn, stamp_ns, raw)

    def until_stopped(messages: Iterator[Message]) -> Iterator[Message]:
        for message in messages:
            if stop():  # a signal: end here, as at the end of the input
                summary.interrupted = True
                return
            yield message

    try:
        for conn, stamp_ns, raw in until_stopped(m for r in readers for m in read_messages(r, bag)):
            tracked(conn, stamp_ns, raw)
    except BagError as exc:  # damage inside the bag: go on with what the salvaged copies hold
        summary.damage = f"{exc}; went on after {last_stamp} with the salvaged rest"
        resume_after, done_at_last = last_stamp, Counter(at_last)
        try:
            for conn, stamp_ns, raw in until_stopped(m for r in recover(exc) for m in read_messages(r, bag)):
                if stamp_ns < resume_after:
                    continue  # handled before the damage
                if stamp_ns == resume_after and done_at_last[conn.topic] > 0:
                    done_at_last[conn.topic] -= 1
                    continue
                tracked(conn, stamp_ns, raw)
        except BagError as again:  # nothing more to salvage: what was done is the output
            if not summary.frames:
                raise
            summary.damage = f"{again}; the replay ended there"
