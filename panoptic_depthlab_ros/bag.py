"""Bag to bag replay without ROS: every camera frame of a rosbag2 through the model.

    panoptic-depthlab bag IN OUT [--image-topic T] [--camera-info-topic T]

Reads sqlite3 or MCAP bags with the ``rosbags`` library and writes a new bag with
all input topics plus every output the node publishes (``/panoptic_depthlab/<name>``
for each output of :data:`~.node_outputs.OUTPUTS`, made by the same function as the
node's: markers and points only when the bag has a CameraInfo topic, no depth outputs
from an untrained depth branch), each stamped with its input image's header and
written at the input's receive time.  Offline: every frame, in order.
A bag file cut short (a recorder that was killed or lost power), which no reader
opens, is salvaged (see ``salvage``): every complete message before the cut is
replayed.  Damage inside a file (a chunk failing its checksum, broken sqlite3 pages)
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

import os
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from rosbags.interfaces import Connection
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.rosbag2.errors import ReaderError
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore
from tqdm import tqdm

from . import msg_conversions
from .errors import BagError, InputError, NothingDoneError, PanopticDepthLabError
from .image_io import DEFAULT_MAX_PIXELS
from .node_outputs import NAMESPACE, OUTPUTS, SEGMENT_ARRAY_TYPE, OutputSettings, output_messages
from .output import StagedOutput
from .predictor import Predictor
from .salvage import Salvage, is_cut_short, salvage
from .tracker import Tracker, TrackerConfig

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
PACKAGE = "panoptic_depthlab_ros"
MSG_NAMES = ("SegmentDepth", "SegmentDepthArray")
WRITTEN_BY = "panoptic-depthlab bag"
# custom_data keys in metadata.yaml: which tool wrote the bag, and from what.
MARK_PREFIX = "panoptic_depthlab."


@dataclass
class ReplaySummary:
    """What a replay did."""

    frames: int = 0
    skipped: list[str] = field(default_factory=list)
    segments_per_frame: list[int] = field(default_factory=list)
    latency_s: list[float] = field(default_factory=list)
    output_topics: list[str] = field(default_factory=list)
    damage: str | None = None  # set when a cut-short or damaged input was salvaged: what was lost
    interrupted: bool = False  # a stop request ended the replay early (the output holds what was done)
    tracker_resets: list[str] = field(default_factory=list)  # "<stamp>: <reason>" per reset of the tracks
    upgraded: dict[str, int] = field(default_factory=dict)  # topic -> messages of an older definition rewritten


def msg_definition_dir() -> Path:
    """Where ``SegmentDepth.msg`` lives: the source tree, or an install's share/ directory."""
    candidates = [Path(__file__).resolve().parents[1] / "msg"]
    prefixes = [sys.prefix, *os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)]
    candidates += [Path(p) / "share" / PACKAGE / "msg" for p in prefixes if p]
    for c in candidates:
        if (c / "SegmentDepthArray.msg").is_file():
            return c
    raise PanopticDepthLabError(f"cannot find {PACKAGE}'s msg/ definitions (looked in {[str(c) for c in candidates]})")


def typestore_with_our_messages() -> Typestore:
    """ROS 2 Jazzy types plus ``panoptic_depthlab_ros/msg/*`` registered from msg/."""
    ts = get_typestore(Stores.ROS2_JAZZY)
    folder = msg_definition_dir()
    types: dict[str, Any] = {}
    for name in MSG_NAMES:
        types.update(get_types_from_msg((folder / f"{name}.msg").read_text(), f"{PACKAGE}/msg/{name}"))
    ts.register(types)
    return ts


def _pick_topic(
    connections: list[Connection], bag: Path, topic: str | None, types: tuple[str, ...], what: str, required: bool
) -> Connection | None:
    listing = ", ".join(f"{c.topic} [{c.msgtype}]" for c in connections) or "none"
    if topic is not None:
        matches = [c for c in connections if c.topic == topic]
        if not matches:
            raise BagError(f"{bag}: no topic {topic!r}; the bag has: {listing}")
        if matches[0].msgtype not in types:
            raise BagError(f"{bag}: topic {topic!r} is {matches[0].msgtype}, not {' or '.join(types)}")
        return matches[0]
    candidates = [c for c in connections if c.msgtype in types]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates and not required:
        return None
    reason = "several" if candidates else "no"
    raise BagError(
        f"{bag}: {reason} {what} topics, choose one with --{what.replace(' ', '-')}-topic; the bag has: {listing}"
    )


def _split_index(path: Path) -> tuple[int, str]:
    """rosbag2 names split files ``<bag>_0.mcap``, ``<bag>_1.mcap``, ...: order by that number."""
    tail = path.stem.rsplit("_", 1)[-1]
    return (int(tail) if tail.isdigit() else -1, path.name)


BAG_FILE_SUFFIXES = (".mcap", ".db3")


def _bag_files(bag: Path) -> list[Path]:
    """The MCAP / sqlite3 files of a bag, in split order (none: not a bag we can salvage)."""
    if bag.is_dir():
        return sorted((f for f in bag.iterdir() if f.suffix in BAG_FILE_SUFFIXES), key=_split_index)
    return [bag] if bag.suffix in BAG_FILE_SUFFIXES else []


def _readable_sources(bag: Path, workdir: Path, *, salvage_all: bool = False) -> tuple[list[Path], list[Salvage]]:
    """What to open, in order: the bag itself, or its files with cut-short ones salvaged.

    A bag rosbags can read as it is (``metadata.yaml`` present, every file whole) is
    one source.  Otherwise each MCAP or sqlite3 file is its own source, in split order.
    ``salvage_all`` salvages every file (damage was found inside one while reading).
    """
    files = _bag_files(bag)
    if not files:
        if bag.is_dir() and not (bag / "metadata.yaml").exists():
            raise BagError(f"{bag}: not a bag: the folder holds no metadata.yaml and no .mcap or .db3 file")
        if bag.is_file():
            raise BagError(f"{bag}: not a bag: a ROS 2 bag is a folder or an .mcap or .db3 file")
        return [bag], []
    cut = [salvage_all or is_cut_short(f) for f in files]
    if bag.is_dir() and (bag / "metadata.yaml").exists() and not any(cut):
        return [bag], []
    workdir.mkdir(parents=True, exist_ok=True)
    sources, salvages = [], []
    for i, (file, is_cut) in enumerate(zip(files, cut, strict=True)):
        if is_cut:
            copy = workdir / f"salvaged_{i}{file.suffix}"
            salvages.append(salvage(file, copy))
            file = copy
        sources.append(file)
    return sources, salvages


def _open_readers(sources: list[Path], bag: Path, stack: ExitStack) -> list[Reader]:
    readers = []
    for source in sources:
        try:
            reader = Reader(source)
            reader.open()
        except (ReaderError, OSError, ValueError, KeyError) as exc:
            name = bag if source == bag else f"{bag} ({source.name})"
            raise BagError(f"{name}: cannot open bag ({type(exc).__name__}: {exc})") from exc
        stack.callback(reader.close)
        readers.append(reader)
    return readers


def _messages(
    reader: Reader, bag: Path, connections: list[Connection] | None = None
) -> Iterator[tuple[Connection, int, bytes]]:
    try:
        yield from reader.messages(connections=connections) if connections is not None else reader.messages()
    except Exception as exc:  # noqa: BLE001 - storage layers raise their own types (apsw, struct, zstd...)
        raise BagError(f"{bag}: corrupt or truncated bag ({type(exc).__name__}: {exc})") from exc


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
    return StagedOutput(
        bag_out.parent,
        [bag_out.name],
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
    image_topic: str | None = None,
    camera_info_topic: str | None = None,
    overwrite: bool = False,
    near: float = OutputSettings.near,
    far: float = OutputSettings.far,
    progress: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    stop: Callable[[], bool] = lambda: False,
    tracking: bool | TrackerConfig = True,
) -> ReplaySummary:
    """Replay ``bag_in`` through ``predictor`` into a new bag ``bag_out`` (see module docstring).

    ``stop()`` is asked before each message; once True the replay ends as at the end of
    the input.  ``tracking``: True tracks with the default :class:`TrackerConfig`, a
    config with that one, False not at all.  Raises :class:`BagError` (and keeps any
    previous ``bag_out``) when no frame could be replayed.
    """
    staged = bag_output(bag_in, bag_out, overwrite=overwrite)
    bag_in, bag_out = Path(bag_in), Path(bag_out)
    ts = typestore_with_our_messages()
    summary = ReplaySummary()
    with staged as staging, ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pdl_bag_")))
        sources, salvages = _readable_sources(bag_in, workdir)
        recovered = False

        def recover(problem: BagError) -> list[Reader]:
            """Damage found: salvage every file of the bag and read the copies instead (once)."""
            nonlocal recovered
            if recovered or not _bag_files(bag_in):
                raise problem
            recovered = True
            try:
                copies, found = _readable_sources(bag_in, workdir / "recovered", salvage_all=True)
                readers = _open_readers(copies, bag_in, stack)
            except BagError as again:
                raise BagError(f"{problem}; salvaging it failed too: {again}") from again
            salvages[:] = found
            return readers

        try:
            readers = _open_readers(sources, bag_in, stack)
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
            image_topic=image_topic,
            camera_info_topic=camera_info_topic,
            settings=OutputSettings(near=near, far=far),
            progress=progress,
            max_pixels=max_pixels,
            stop=stop,
            tracker=Tracker(None if tracking is True else tracking) if tracking else None,
        )
        damaged = [v.describe() for v in salvages if v.dropped or v.cut_short]
        if summary.damage or damaged:
            summary.damage = "; ".join(filter(None, [summary.damage, *damaged]))
        if summary.frames == 0 and not summary.interrupted:
            more = f" (+{len(summary.skipped) - 1} more)" if len(summary.skipped) > 1 else ""
            why = f"{summary.skipped[0]}{more}" if summary.skipped else summary.damage or "its image topic is empty"
            raise NothingDoneError(f"{bag_in}: no frame could be replayed: {why}", summary.skipped)
    return summary


def read_bag_frames(
    bag: str | Path,
    pick: Callable[[int], list[int]],
    *,
    image_topic: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[list[np.ndarray], int, list[str]]:
    """Some BGR frames of ``bag``'s image topic (e.g. to calibrate an INT8 export).

    ``pick(total)`` says which message indices to decode, of the topic's ``total``. Returns
    the frames, ``total`` and the skipped frames (topic at stamp: reason). A cut-short bag
    is read from a salvaged copy, as a replay reads it.
    """
    bag = Path(bag)
    ts = typestore_with_our_messages()
    frames: list[np.ndarray] = []
    skipped: list[str] = []
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pdl_bag_")))
        readers = _open_readers(_readable_sources(bag, workdir)[0], bag, stack)
        connections = list({c.topic: c for r in reversed(readers) for c in r.connections}.values())
        img_conn = _pick_topic(connections, bag, image_topic, IMAGE_TYPES, "image", True)
        assert img_conn is not None
        total = sum(c.msgcount for r in readers for c in r.connections if c.topic == img_conn.topic)
        wanted = set(pick(total))
        index = 0
        for reader in readers:
            mine = [c for c in reader.connections if c.topic == img_conn.topic]
            if not mine:  # rosbags reads every topic for an empty list
                continue
            for conn, stamp_ns, raw in _messages(reader, bag, mine):
                index += 1
                if index - 1 not in wanted:
                    continue
                try:
                    msg: Any = _deserialize(ts, raw, conn)
                    convert = (
                        msg_conversions.compressed_to_bgr
                        if conn.msgtype.endswith("CompressedImage")
                        else msg_conversions.image_to_bgr
                    )
                    frames.append(convert(msg, max_pixels=max_pixels, limit_name="--max-pixels"))
                except InputError as exc:
                    skipped.append(f"{conn.topic} at {stamp_ns}: {exc}")
    return frames, total, skipped


def _replay(
    readers: list[Reader],
    recover: Callable[[BagError], list[Reader]],
    bag_in: Path,
    bag_out: Path,
    ts: Typestore,
    summary: ReplaySummary,
    *,
    predictor: Predictor,
    image_topic: str | None,
    camera_info_topic: str | None,
    settings: OutputSettings,
    progress: bool,
    max_pixels: int,
    stop: Callable[[], bool],
    tracker: Tracker | None,
) -> None:
    """Every input message copied, every image frame answered with the node's outputs.

    ``readers`` are the bag's files in order (one reader for a bag rosbags opens whole);
    topics are matched by name across them, as a split bag's connection ids are per file.
    Damage found while reading calls ``recover`` once for salvaged readers, and the
    replay goes on after the last message handled (see :func:`_read_all`).
    """
    connections = list({c.topic: c for r in reversed(readers) for c in r.connections}.values())
    img_conn = _pick_topic(connections, bag_in, image_topic, IMAGE_TYPES, "image", True)
    info_conn = _pick_topic(connections, bag_in, camera_info_topic, (CAMERA_INFO_TYPE,), "camera info", False)
    assert img_conn is not None
    writer = Writer(bag_out, version=9, storage_plugin=_storage_of(bag_in))
    mark_bag(writer, WRITTEN_BY, input=bag_in.resolve(), checkpoint=predictor.source or "(in memory)")
    writer.open()
    try:
        frames = sum(c.msgcount for r in readers for c in r.connections if c.topic == img_conn.topic)
        with tqdm(total=frames, desc=f"replay {bag_in.name}", unit="frame", disable=not progress) as bar:
            replay = _FrameReplay(
                writer,
                ts,
                summary,
                predictor=predictor,
                settings=settings,
                max_pixels=max_pixels,
                image_topic=img_conn.topic,
                info_topic=info_conn.topic if info_conn is not None else None,
                on_frame=lambda: bar.update(1),
                tracker=tracker,
            )
            replay.copy_connections(connections, bag_in)
            _read_all(readers, recover, replay.handle, bag_in, summary, stop)
    finally:
        writer.close()  # whatever happened, what was written is a complete bag


class _FrameReplay:
    """Writes one replay's output bag: the input copied, and each frame's outputs as the node publishes them.

    The outputs are those of :data:`~.node_outputs.OUTPUTS` this replay can give: no
    depth outputs from an untrained depth branch, no markers or points without a
    CameraInfo topic (nor before its first message), no tracked panoptic without a tracker.
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
        image_topic: str,
        info_topic: str | None,
        on_frame: Callable[[], Any],
        tracker: Tracker | None,
    ) -> None:
        self.writer, self.ts, self.summary = writer, ts, summary
        self.predictor, self.settings, self.max_pixels = predictor, settings, max_pixels
        self.image_topic, self.info_topic, self.on_frame = image_topic, info_topic, on_frame
        self.tracker = tracker
        self.copies: dict[str, Connection] = {}
        self.upgrades: dict[str, Typestore] = {}  # topic -> a typestore with the bag's older definition
        self.camera_k: np.ndarray | None = None
        wanted = [
            o
            for o in OUTPUTS
            if o.available(depth=predictor.depth_enabled, intrinsics=info_topic is not None, tracks=tracker is not None)
        ]
        self.outputs = {o.name: (o, writer.add_connection(o.topic, o.msg_type, typestore=ts)) for o in wanted}
        summary.output_topics = [o.topic for o in wanted]

    def copy_connections(self, connections: list[Connection], bag: Path) -> None:
        """Every input topic, except outputs of an earlier replay (they are replaced, not doubled).

        A topic of our segments with an older definition is written with today's (see
        :meth:`_upgrade`): one bag holds one definition per type.
        """
        for c in connections:
            if c.topic.startswith(NAMESPACE + "/"):
                continue
            older = _older_definition(c, self.ts, bag)
            if older is None:
                self.copies[c.topic] = _copy_connection(self.writer, c, self.ts, bag)
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
        if conn.topic == self.info_topic:
            self._camera_info(conn, stamp_ns, raw)
        elif conn.topic == self.image_topic:
            self.on_frame()
            self._frame(conn, stamp_ns, raw)

    def _upgrade(self, conn: Connection, stamp_ns: int, raw: bytes) -> None:
        """A ``SegmentDepthArray`` of an older definition, rewritten with today's (missing fields unknown)."""
        try:
            old: Any = _deserialize(self.upgrades[conn.topic], raw, conn)
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

    def _camera_info(self, conn: Connection, stamp_ns: int, raw: bytes) -> None:
        try:
            self.camera_k = msg_conversions.camera_k(_deserialize(self.ts, raw, conn))
        except InputError as exc:  # the previous good K stays in use
            self.summary.skipped.append(f"{conn.topic} at {stamp_ns}: {exc}")

    def _frame(self, conn: Connection, stamp_ns: int, raw: bytes) -> None:
        try:
            msg: Any = _deserialize(self.ts, raw, conn)
            compressed = conn.msgtype.endswith("CompressedImage")
            convert = msg_conversions.compressed_to_bgr if compressed else msg_conversions.image_to_bgr
            image = convert(msg, max_pixels=self.max_pixels, limit_name="--max-pixels")
            result = self.predictor.predict(image, camera_k=self.camera_k)
        except InputError as exc:  # one bad frame is reported and skipped, the replay goes on
            self.summary.skipped.append(f"{conn.topic} at {stamp_ns}: {exc}")
            return
        if self.tracker is not None:  # time: the image's own stamp, as in the node
            stamp = msg_conversions.stamp_ns(msg.header)
            tracked = self.tracker.update(result, stamp_ns=stamp)
            if tracked.reset_reason is not None:
                self.summary.tracker_resets.append(f"{stamp}: {tracked.reset_reason}")
            result = result.with_tracks(tracked.tracks)
        header = self.ts.types["std_msgs/msg/Header"](stamp=msg.header.stamp, frame_id=msg.header.frame_id)
        messages = output_messages(
            result,
            image,
            wanted=self.outputs,
            header=header,
            camera_k=self.camera_k,
            settings=self.settings,
            classes=self.ts.types.__getitem__,
            class_colors=self.predictor.classes.colors,
        )
        for name, message in messages.items():  # written at the input's receive time
            output, connection = self.outputs[name]
            self.writer.write(connection, stamp_ns, self.ts.serialize_cdr(message, output.msg_type))
        self.summary.frames += 1
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
        for conn, stamp_ns, raw in until_stopped(m for r in readers for m in _messages(r, bag)):
            tracked(conn, stamp_ns, raw)
    except BagError as exc:  # damage inside the bag: go on with what the salvaged copies hold
        summary.damage = f"{exc}; went on after {last_stamp} with the salvaged rest"
        resume_after, done_at_last = last_stamp, Counter(at_last)
        try:
            for conn, stamp_ns, raw in until_stopped(m for r in recover(exc) for m in _messages(r, bag)):
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


def _deserialize(ts: Typestore, raw: bytes, conn: Connection) -> Any:
    """A message of ``conn``'s type, or :class:`InputError` when the bytes are not one (wrong type, damage)."""
    try:
        return ts.deserialize_cdr(raw, conn.msgtype)
    except Exception as exc:  # noqa: BLE001 - the CDR decoder raises struct, index, unicode... errors
        raise InputError(f"{len(raw)} bytes that are not a {conn.msgtype} ({type(exc).__name__}: {exc})") from exc


def _storage_of(bag: Path) -> StoragePlugin:
    """Keep the input's storage format (sqlite3 for ``.db3`` files, else MCAP)."""
    files = [bag] if bag.is_file() else list(bag.iterdir())
    return StoragePlugin.SQLITE3 if any(f.suffix == ".db3" for f in files) else StoragePlugin.MCAP


def _older_definition(conn: Connection, ts: Typestore, bag: Path) -> Typestore | None:
    """A typestore with the bag's definition of our ``SegmentDepthArray`` when it differs from today's, else None.

    Only the segment array is a topic type of ours.  A connection without a definition
    (some salvaged or bare files) is taken to be today's.
    """
    if conn.msgtype != SEGMENT_ARRAY_TYPE or not conn.msgdef.data:
        return None
    try:
        theirs = get_types_from_msg(conn.msgdef.data, conn.msgtype)
    except Exception as exc:  # noqa: BLE001 - the parser raises its own grammar errors
        raise BagError(f"{bag}: topic {conn.topic!r}: cannot read the definition of {conn.msgtype} ({exc})") from exc
    ours = {name: ts.fielddefs[name] for name in theirs if name.startswith(f"{PACKAGE}/")}
    if all(theirs[name] == ours[name] for name in ours):
        return None
    older = get_typestore(Stores.ROS2_JAZZY)
    older.register(theirs)
    return older


def _copy_connection(writer: Writer, conn: Connection, ts: Typestore, bag: Path) -> Connection:
    """Same topic, type, definition and QoS as the input connection.

    A type the store does not know and the bag gives no hash for (a custom message in a
    bare ``.mcap`` file, or a salvaged one) is registered from the bag's own definition.
    """
    qos = getattr(conn.ext, "offered_qos_profiles", [])
    if conn.msgdef.data and conn.digest.startswith("RIHS01_"):
        return writer.add_connection(
            conn.topic, conn.msgtype, msgdef=conn.msgdef.data, rihs01=conn.digest, offered_qos_profiles=qos
        )
    if conn.msgtype not in ts.types and conn.msgdef.data:
        try:
            ts.register(get_types_from_msg(conn.msgdef.data, conn.msgtype))
        except Exception as exc:  # noqa: BLE001 - the parser raises its own grammar errors
            what = f"topic {conn.topic!r}: cannot read the definition of {conn.msgtype}"
            raise BagError(f"{bag}: {what} ({exc})") from exc
    return writer.add_connection(conn.topic, conn.msgtype, typestore=ts, offered_qos_profiles=qos)
