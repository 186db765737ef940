#!/usr/bin/env python3
"""``make demo``: the real node on the bundled demo bag, every output recorded.

Starts the installed ``panoptic_depthlab_node`` executable (real rclpy, its own
process), plays the bag's camera images and CameraInfo to it over loopback,
records every output topic, and writes to ``--out``:

* ``bag/``: an MCAP bag with the input topics and all outputs,
* ``overlay/frame_XXXX.png`` and ``overlay.mp4``: the overlay stream,
* ``summary.json``: frames, segments per frame, what was tracked, latency percentiles,
  and what the odometry did,
* ``node.log``: what the node printed.

A bag with a ``nav_msgs/Odometry`` topic (the demo bag's ``/odom``) has it played too: the
node is started with ``odometry_topic`` set to it and the camera mount the bag's
``metadata.yaml`` records (``custom_data`` ``panoptic_depthlab.camera_mount_xyz`` and
``panoptic_depthlab.camera_mount_rpy``, as ``demo-bag`` writes them; none recorded: the
node's default mount), so that things standing still are reported at rest.

``--out`` is written aside and moved into place at the end: a previous demo output is
replaced, anything else at that path is refused and left as it is.

Frames are played in lock-step (the next image goes out when the previous one's
SegmentDepthArray came back), so every frame is processed, as offline replay
should be; ``--rate`` plays at the bag's timing instead (the node then drops
stale frames, as on a vehicle).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np
import rclpy
import yaml
from nav_msgs.msg import Odometry
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys.store import Typestore
from sensor_msgs.msg import CameraInfo, Image

from panoptic_depthlab_ros.bag import MARK_PREFIX
from panoptic_depthlab_ros.bag_reading import typestore_with_our_messages
from panoptic_depthlab_ros.checkpoint import bundled_checkpoint
from panoptic_depthlab_ros.errors import PanopticDepthLabError
from panoptic_depthlab_ros.exit_codes import run_command
from panoptic_depthlab_ros.msg_conversions import image_to_bgr
from panoptic_depthlab_ros.node_outputs import NAMESPACE, OUTPUTS
from panoptic_depthlab_ros.odometry import ODOMETRY_TYPE
from panoptic_depthlab_ros.output import MARKER, StagedOutput, marker_says, write_marker
from panoptic_depthlab_ros.ros.node import message_class
from panoptic_depthlab_ros.tracker import TrackerConfig

WRITTEN_BY = "panoptic-depthlab demo"
# What the demo writes: a folder holding only these (from before outputs were marked) is a demo's.
DEMO_ENTRIES = {"bag", "overlay", "overlay.mp4", "summary.json", "node.log", MARKER}
DIAGNOSTICS = "/diagnostics"
# Every topic recorded: the node's outputs and its diagnostics -> message type.
RECORDED = {o.topic: o.msg_type for o in OUTPUTS} | {DIAGNOSTICS: "diagnostic_msgs/msg/DiagnosticArray"}
DEFAULT_INFO_TOPIC = "/camera/camera_info"
# The node's parameters of the camera mount, as a bag's metadata.yaml may record them (custom_data).
MOUNT_PARAMETERS = ("camera_mount_xyz", "camera_mount_rpy")
Stamp = tuple[int, int]


class DemoError(PanopticDepthLabError):
    """The demo cannot go on (no image topic, the node died or never answered); the message says why."""


# ------------------------------------------------------------------ the input bag
@dataclass(frozen=True)
class OdometryInput:
    """The bag's odometry topic and the camera mount to start the node with (None: the node's default)."""

    topic: str
    mount: dict[str, list[float]] | None  # camera_mount_xyz, camera_mount_rpy -> 3 numbers each

    def parameters(self) -> list[str]:
        """The node's parameters for it (``name:=value``)."""
        mount = self.mount or {}
        return [f"odometry_topic:={self.topic}", *(f"{name}:={value}" for name, value in mount.items())]


@dataclass
class BagInputs:
    """What the demo plays: the image, CameraInfo and odometry messages of the bag, in order."""

    image_topic: str
    info_topic: str | None
    messages: list[tuple[str, int, bytes]]  # (topic, receive time ns, CDR bytes)
    image_type: str
    info_type: str
    odometry: OdometryInput | None = None


def recorded_camera_mount(bag: Path) -> dict[str, list[float]] | None:
    """The camera mount the bag's ``metadata.yaml`` records (``custom_data``); None: none recorded.

    Recorded but not 3 numbers each: :class:`DemoError` (a wrong mount would call moving things still).
    """
    try:
        doc = yaml.safe_load((bag / "metadata.yaml").read_text())
        custom = doc["rosbag2_bagfile_information"].get("custom_data") or {}
    except (OSError, yaml.YAMLError, TypeError, KeyError, AttributeError):
        return None
    texts = {name: custom.get(MARK_PREFIX + name) for name in MOUNT_PARAMETERS}
    if all(text is None for text in texts.values()):
        return None
    mount = {}
    for name, text in texts.items():
        try:
            value = yaml.safe_load(str(text))
            numbers = [float(v) for v in value]
        except (yaml.YAMLError, TypeError, ValueError):
            numbers = []
        if len(numbers) != 3 or not all(np.isfinite(numbers)):
            raise DemoError(f"{bag}: metadata.yaml custom_data {MARK_PREFIX}{name} is {text!r}, not 3 numbers")
        mount[name] = numbers
    return mount


def read_inputs(bag: Path, frames: int | None) -> BagInputs:
    """The bag's first image topic (the first ``frames`` images), its CameraInfo and odometry up to the last of them."""
    with Reader(bag) as reader:
        image_conn = next((c for c in reader.connections if c.msgtype == "sensor_msgs/msg/Image"), None)
        info_conn = next((c for c in reader.connections if c.msgtype == "sensor_msgs/msg/CameraInfo"), None)
        odom_conn = next((c for c in reader.connections if c.msgtype == ODOMETRY_TYPE), None)
        if image_conn is None:
            listing = [(c.topic, c.msgtype) for c in reader.connections]
            raise DemoError(f"{bag}: no sensor_msgs/Image topic; the bag has {listing}")
        wanted = {image_conn.id, getattr(info_conn, "id", -1), getattr(odom_conn, "id", -1)}
        messages = [(c.topic, stamp, raw) for c, stamp, raw in reader.messages() if c.id in wanted]
    images = [m for m in messages if m[0] == image_conn.topic][: frames or None]
    last_stamp = images[-1][1]
    return BagInputs(
        image_topic=image_conn.topic,
        info_topic=info_conn.topic if info_conn is not None else None,
        messages=[m for m in messages if m[1] <= last_stamp],
        image_type=image_conn.msgtype,
        info_type=info_conn.msgtype if info_conn is not None else "sensor_msgs/msg/CameraInfo",
        odometry=OdometryInput(odom_conn.topic, recorded_camera_mount(bag)) if odom_conn is not None else None,
    )


# ------------------------------------------------------------------ the node, in its own process
def node_command(
    checkpoint: Path, image_topic: str, info_topic: str, params: Path, odometry: OdometryInput | None = None
) -> list[str]:
    """The installed node executable with the demo's parameters and remappings (and the odometry's, if any)."""
    exe = shutil.which("panoptic_depthlab_node", path=str(Path(sys.executable).parent)) or shutil.which(
        "panoptic_depthlab_node"
    )
    if exe is None:
        raise DemoError("panoptic_depthlab_node is not installed: run `make setup` first")
    parameters = [f"checkpoint:={checkpoint}", "device:=cpu", "qos_reliability:=reliable", "qos_depth:=5"]
    if odometry is not None:
        parameters += odometry.parameters()
    return [
        exe,
        "--ros-args",
        "--params-file",
        str(params),
        *(arg for p in parameters for arg in ("-p", p)),
        "-r",
        f"image:={image_topic}",
        "-r",
        f"camera_info:={info_topic}",
    ]


class NodeProcess:
    """The node executable running beside the demo; what it prints is kept (``node.log``)."""

    def __init__(self, command: list[str]) -> None:
        env = dict(os.environ)
        env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        self._proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        stdout = self._proc.stdout
        assert stdout is not None
        threading.Thread(target=lambda: self.lines.extend(iter(stdout.readline, "")), daemon=True).start()

    def exited(self) -> bool:
        """Whether the node is gone."""
        return self._proc.poll() is not None

    def tail(self, n: int = 30) -> str:
        """The last ``n`` lines the node printed."""
        return "".join(self.lines[-n:])

    def stop(self) -> None:
        """Ctrl-C the node (a clean shutdown), killed if it does not end."""
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()


# ------------------------------------------------------------------ our side of the loopback
class Player:
    """A ROS client beside the node: publishes the bag's inputs and records every output into ``writer``.

    Outputs are received raw (CDR bytes, written as they come); the segments say which
    frame was answered when, the diagnostics what the node sees (its subscribers, its
    camera_info).
    """

    def __init__(self, ts: Typestore, writer: Writer, inputs: BagInputs) -> None:
        self.ts, self.writer = ts, writer
        self.lock = threading.Lock()
        self.received: dict[str, list[bytes]] = {t: [] for t in RECORDED}
        self.answered: dict[Stamp, float] = {}  # frame stamp -> when its segments came back
        self.node_status: dict[str, str] = {}  # key -> value of the node's latest /diagnostics report
        self.connections = {t: writer.add_connection(t, mt, typestore=ts) for t, mt in RECORDED.items()}
        self.connections[inputs.image_topic] = writer.add_connection(
            inputs.image_topic, inputs.image_type, typestore=ts
        )
        info_topic = inputs.info_topic or DEFAULT_INFO_TOPIC
        if inputs.info_topic is not None:
            self.connections[info_topic] = writer.add_connection(info_topic, inputs.info_type, typestore=ts)
        if inputs.odometry is not None:
            odom_topic = inputs.odometry.topic
            self.connections[odom_topic] = writer.add_connection(odom_topic, ODOMETRY_TYPE, typestore=ts)
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = Node("panoptic_depthlab_demo_player", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.subscriptions = [
            self.node.create_subscription(message_class(msgtype), topic, self._recorder(topic), reliable, raw=True)
            for topic, msgtype in RECORDED.items()
        ]
        self.image_pub = self.node.create_publisher(Image, inputs.image_topic, reliable)
        self.info_pub = self.node.create_publisher(CameraInfo, info_topic, reliable)
        self.odometry_pub = (
            self.node.create_publisher(Odometry, inputs.odometry.topic, reliable) if inputs.odometry else None
        )
        threading.Thread(target=self.executor.spin, daemon=True).start()

    def _recorder(self, topic: str) -> Callable[[bytes], None]:
        def on_raw(raw: bytes) -> None:
            now = time.time_ns()
            with self.lock:
                self.writer.write(self.connections[topic], now, raw)
                self.received[topic].append(raw)
                if topic == f"{NAMESPACE}/segments":
                    msg: Any = self.ts.deserialize_cdr(raw, RECORDED[topic])
                    self.answered[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = time.perf_counter()
                elif topic == DIAGNOSTICS:
                    report: Any = self.ts.deserialize_cdr(raw, RECORDED[topic])
                    for status in report.status:
                        if status.name == f"{NAMESPACE}: pipeline":
                            self.node_status.update({kv.key: kv.value for kv in status.values})

        return on_raw

    def record_input(self, topic: str, raw: bytes) -> None:
        """An input message as sent, into the demo's bag."""
        with self.lock:
            self.writer.write(self.connections[topic], time.time_ns(), raw)

    # Discovery finishes at different times per topic and per side, and the node only
    # produces the outputs it sees subscribers for: our view alone is not enough, the
    # node's /diagnostics say its view.
    def matched(self) -> bool:
        """Whether both sides of every connection see each other."""
        publishers = [self.image_pub, self.info_pub] + ([self.odometry_pub] if self.odometry_pub else [])
        inputs = all(pub.get_subscription_count() > 0 for pub in publishers)
        outputs = all(sub.get_publisher_count() > 0 for sub in self.subscriptions)
        with self.lock:
            subscribed = set(self.node_status.get("outputs_subscribed", "").split(","))
        return inputs and outputs and {o.name for o in OUTPUTS} <= subscribed

    def node_count(self, key: str) -> int:
        """A counter of the node's latest /diagnostics report (``camera_info_received``, ``processed``...); 0 before."""
        with self.lock:
            return int(self.node_status.get(key, "0"))

    def node_has_camera_info(self) -> bool:
        """Whether the node says it took a CameraInfo."""
        return self.node_count("camera_info_received") > 0

    def node_has_odometry(self) -> bool:
        """Whether the node says it took an odometry message."""
        return self.node_count("odometry_received") > 0

    def complete(self, frames: int, topics: list[str]) -> bool:
        """Whether every frame was answered on every one of ``topics``."""
        with self.lock:
            return len(self.answered) >= frames and all(len(self.received[t]) >= len(self.answered) for t in topics)

    def close(self) -> None:
        """Stop spinning and leave the ROS graph."""
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()


def wait_until(condition: Callable[[], bool], what: str, node: NodeProcess, timeout_s: float, poll_s: float) -> None:
    """Poll ``condition``; :class:`DemoError` with the node's last words when it dies or time runs out."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if node.exited():
            raise DemoError(f"the node exited while we waited for {what}:\n{node.tail()}")
        if time.monotonic() > deadline:
            raise DemoError(f"timed out waiting for {what}:\n{node.tail()}")
        time.sleep(poll_s)


# ------------------------------------------------------------------ the steps
def expected_topics(*, with_intrinsics: bool) -> list[str]:
    """The outputs every frame gets: all of them once the node has a CameraInfo."""
    return [o.topic for o in OUTPUTS if with_intrinsics or not o.needs_intrinsics]


@dataclass
class Played:
    """What :func:`play` sent: when each frame went out (by stamp), how many CameraInfo and odometry messages."""

    sent: dict[Stamp, float]
    infos: int = 0
    odometry: int = 0


def play(inputs: BagInputs, player: Player, node: NodeProcess, *, rate: float | None, timeout_s: float) -> Played:
    """Send the inputs in order.

    Lock-step (``rate`` None): each image waits until every output of the previous one came
    back.  Waiting for all of them, not only the segments, matters: an image output keeps
    only its latest sample, so one still in transit (a lost sample is re-sent only at the
    writer's next heartbeat) would be replaced by the next frame's.  The first image waits
    until the node took a CameraInfo and an odometry message (if the bag has them): markers
    and points need the one, the first frame's camera motion the other, and the node takes
    them on separate subscriptions.
    """
    played = Played(sent={})
    sent = played.sent
    odometry_topic = inputs.odometry.topic if inputs.odometry else None
    t0_wall, t0_bag = time.monotonic(), inputs.messages[0][1]
    for topic, stamp, raw in inputs.messages:
        if rate:
            wait = (stamp - t0_bag) / 1e9 / rate - (time.monotonic() - t0_wall)
            if wait > 0:
                time.sleep(wait)
        player.record_input(topic, raw)
        if topic == odometry_topic and player.odometry_pub is not None:
            player.odometry_pub.publish(deserialize_message(raw, Odometry))
            played.odometry += 1
            continue
        if topic != inputs.image_topic:
            player.info_pub.publish(deserialize_message(raw, CameraInfo))
            played.infos += 1
            continue
        if not sent and (played.infos or played.odometry):
            if played.infos:
                wait_until(player.node_has_camera_info, "the node to take the first camera_info", node, timeout_s, 0.02)
            if played.odometry:
                wait_until(player.node_has_odometry, "the node to take the first odometry", node, timeout_s, 0.02)
            t0_wall = time.monotonic() - (stamp - t0_bag) / 1e9 / (rate or 1.0)  # the clock starts now
        msg = deserialize_message(raw, Image)
        key = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        sent[key] = time.perf_counter()
        player.image_pub.publish(msg)
        if rate is None:  # polled finely: it paces the replay
            answered = partial(player.complete, len(sent), expected_topics(with_intrinsics=played.infos > 0))
            wait_until(answered, f"every output of the frame stamped {key}", node, timeout_s, 0.002)
    return played


def wait_for_trailing_outputs(player: Player, frames: int, *, with_intrinsics: bool) -> None:
    """Until every frame's outputs are in, for at most 10 s.

    A reliable sample lost on the way is only re-sent after the writer's next heartbeat
    (Fast DDS: every 3 s), so this waits for the counts rather than a fixed time.
    """
    topics = expected_topics(with_intrinsics=with_intrinsics)
    end = time.monotonic() + 10.0
    while time.monotonic() < end and not player.complete(frames, topics):
        time.sleep(0.05)
    time.sleep(0.2)


# Where each image the node received went: the counters add up to `received` once every frame is through.
FRAME_OUTCOMES = ("processed", "dropped_overload", "dropped_bad_input", "skipped_no_subscribers", "errors")


def wait_for_final_report(player: Player, frames: int, timeout_s: float = 5.0) -> None:
    """Until the node's /diagnostics account for every frame sent (its counters then cover the whole run).

    The node reports every ``diagnostics_period_s`` (1 s by default); gives up after ``timeout_s``.
    """

    def through() -> bool:
        with player.lock:  # one report's counters
            count = {k: int(player.node_status.get(k, "0")) for k in ("received", *FRAME_OUTCOMES)}
        return count["received"] >= frames and sum(count[k] for k in FRAME_OUTCOMES) >= count["received"]

    end = time.monotonic() + timeout_s
    while time.monotonic() < end and not through():
        time.sleep(0.05)


def write_overlays(out: Path, overlays: list[bytes], ts: Typestore) -> None:
    """Each overlay as ``overlay/frame_XXXX.png`` and all of them as ``overlay.mp4`` (10 fps)."""
    video = None
    for i, raw in enumerate(overlays):
        frame = image_to_bgr(ts.deserialize_cdr(raw, "sensor_msgs/msg/Image")).copy()
        cv2.imwrite(str(out / "overlay" / f"frame_{i:04d}.png"), frame)
        if video is None:
            size = (frame.shape[1], frame.shape[0])
            video = cv2.VideoWriter(str(out / "overlay.mp4"), cv2.VideoWriter.fourcc(*"mp4v"), 10.0, size)
        video.write(frame)
    if video is not None:
        video.release()


def tracking_summary(frames: list[Any]) -> dict[str, Any]:
    """What the node tracked over the recorded ``SegmentDepthArray`` messages (in order).

    tracks: track ids shown (a track's id shows once it is confirmed, so a small thing the
    model sees in one frame and not the next has none); longest_track_frames: the most
    frames one of them was seen in (its track_age); with_velocity_per_frame: things whose
    velocity was known; closing: the track ids that came closer at some frame ("car #12
    14.3 m, 2.1 m/s closing" in the overlay); at_rest_per_frame: things reported at rest
    (``at_rest``: only with odometry); at_rest: the track ids reported at rest at some frame
    ("car #12 14.3 m, 8.0 m/s closing, at rest").
    """
    seen: dict[int, int] = {}
    with_velocity, at_rest_per_frame, closing, at_rest = [], [], set(), set()
    for msg in frames:
        things = [s for s in msg.segments if s.track_id]
        for s in things:
            seen[s.track_id] = max(seen.get(s.track_id, 0), s.track_age)
            if s.velocity.z < 0 and np.isfinite(s.time_to_contact):
                closing.add(s.track_id)
            if s.at_rest:
                at_rest.add(s.track_id)
        with_velocity.append(sum(bool(np.isfinite(s.velocity.z)) for s in things))
        at_rest_per_frame.append(sum(bool(s.at_rest) for s in things))
    return {
        "tracks": len(seen),
        "longest_track_frames": max(seen.values(), default=0),
        "with_velocity_per_frame": with_velocity,
        "closing": sorted(closing),
        "at_rest_per_frame": at_rest_per_frame,
        "at_rest": sorted(at_rest),
    }


def odometry_summary(inputs: BagInputs, played: Played, player: Player) -> dict[str, Any] | None:
    """What the odometry did (None: the bag has none): messages sent and taken, the mount, frames tracked with it.

    From the node's last /diagnostics report: ``odometry_received``, and the frames processed
    less those ``tracked_without_odometry`` (no odometry within ``odometry_max_age_s``).
    """
    if inputs.odometry is None:
        return None
    processed = player.node_count("processed")
    without = player.node_count("tracked_without_odometry")
    return {
        "topic": inputs.odometry.topic,
        "camera_mount": inputs.odometry.mount or "the node's default",
        "messages_sent": played.odometry,
        "messages_taken_by_node": player.node_count("odometry_received"),
        "frames_tracked_with_odometry": processed - without,
        "frames_tracked_without_odometry": without,
    }


def summarize(
    bag: Path, checkpoint: Path, rate: float | None, inputs: BagInputs, played: Played, player: Player
) -> dict[str, Any]:
    """Frames sent and answered, segments per frame, tracks, odometry, latency percentiles, messages per topic."""
    sent = played.sent
    with player.lock:
        latencies = [player.answered[k] - sent[k] for k in sent if k in player.answered]
        segments = [
            cast(Any, player.ts.deserialize_cdr(raw, RECORDED[f"{NAMESPACE}/segments"]))
            for raw in player.received[f"{NAMESPACE}/segments"]
        ]
        counts = {t: len(v) for t, v in player.received.items()}
    lat = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    return {
        "bag": str(bag),
        "checkpoint": str(checkpoint),
        "mode": "lock-step" if rate is None else f"rate {rate}",
        "frames_sent": len(sent),
        "frames_answered": len(latencies),
        "segments_per_frame": [len(m.segments) for m in segments],
        "tracking": tracking_summary(segments),
        "odometry": odometry_summary(inputs, played, player),
        "latency_ms": {
            "p50": float(np.percentile(lat, 50)),
            "p90": float(np.percentile(lat, 90)),
            "p99": float(np.percentile(lat, 99)),
            "max": float(lat.max()),
            "mean": float(lat.mean()),
        },
        "messages_recorded": counts,
    }


def record(
    bag: Path,
    out: Path,
    *,
    checkpoint: Path,
    params: Path,
    frames: int | None,
    rate: float | None,
    timeout_s: float = 120.0,
) -> dict[str, Any]:
    """Play ``bag`` through the node and record everything into the new folder ``out``; returns the summary."""
    (out / "overlay").mkdir(parents=True)
    inputs = read_inputs(bag, frames)
    node = NodeProcess(
        node_command(checkpoint, inputs.image_topic, inputs.info_topic or DEFAULT_INFO_TOPIC, params, inputs.odometry)
    )
    ts = typestore_with_our_messages()
    writer = Writer(out / "bag", version=9, storage_plugin=StoragePlugin.MCAP)
    player: Player | None = None
    try:
        writer.open()
        player = Player(ts, writer, inputs)
        wait_until(player.matched, "the node to come up and match every topic", node, timeout_s, 0.02)
        played = play(inputs, player, node, rate=rate, timeout_s=timeout_s)
        wait_for_trailing_outputs(player, len(played.sent), with_intrinsics=played.infos > 0)
        wait_for_final_report(player, len(played.sent))
        with player.lock:
            overlays = list(player.received[f"{NAMESPACE}/overlay"])
        write_overlays(out, overlays, ts)
        summary = summarize(bag, checkpoint, rate, inputs, played, player)
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    finally:
        if player is not None:
            player.close()
        try:
            writer.close()
        except Exception:  # noqa: BLE001 - the writer may not have opened
            pass
        node.stop()
        (out / "node.log").write_text("".join(node.lines))
    return summary


def demo_output_says(path: Path) -> str | None:
    """None when ``path`` is a demo output (marked, or holding only what the demo writes); else why not."""
    reason = marker_says(path, WRITTEN_BY)
    if reason is None or (path.is_dir() and {p.name for p in path.iterdir()} <= DEMO_ENTRIES):
        return None
    return reason


def run_demo(bag: Path, out: Path, *, checkpoint: Path, params: Path, **options: Any) -> dict[str, Any]:
    """:func:`record` into ``out``, written aside: a previous demo output is replaced once the new one is complete."""
    staged = StagedOutput(
        out.parent, [out.name], what=WRITTEN_BY, overwrite=True, why_not_ours=demo_output_says, inputs=[bag]
    )
    with staged as staging:
        summary = record(bag, staging / out.name, checkpoint=checkpoint, params=params, **options)
        write_marker(staging / out.name, WRITTEN_BY, bag=bag.resolve(), checkpoint=checkpoint)
    return summary


# ------------------------------------------------------------------ the command
def main(argv: list[str] | None = None) -> int:
    """Command line of ``make demo``."""
    repo = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--bag", type=Path, default=repo / "data" / "demo_bag", help="input bag (default: the demo bag)"
    )
    parser.add_argument("--out", type=Path, default=Path("demo_output"))
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: the bundled demo model")
    parser.add_argument(
        "--params",
        type=Path,
        default=repo / "config" / "panoptic_depthlab.yaml",
        help="the node's parameters file (default: config/panoptic_depthlab.yaml)",
    )
    parser.add_argument("--frames", type=int, default=None, help="only the first N frames")
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="play at N x the bag's timing (the node may drop frames); default lock-step",
    )
    parser.add_argument(
        "--domain-id",
        type=int,
        default=None,
        help="ROS domain for the demo (default: a random one, so it disturbs nobody)",
    )
    args = parser.parse_args(argv)
    os.environ["ROS_DOMAIN_ID"] = str(args.domain_id if args.domain_id is not None else random.randint(1, 100))
    return run_command("panoptic-depthlab demo", lambda: _demo(args))


def _demo(args: argparse.Namespace) -> int:
    checkpoint = args.checkpoint or bundled_checkpoint()
    t0 = time.monotonic()
    summary = run_demo(
        args.bag, args.out, checkpoint=checkpoint, params=args.params, frames=args.frames, rate=args.rate
    )
    out = args.out
    print(
        f"\nDemo done in {time.monotonic() - t0:.0f} s: {summary['frames_answered']}/{summary['frames_sent']} "
        f"frames, latency p50 {summary['latency_ms']['p50']:.0f} ms, p90 {summary['latency_ms']['p90']:.0f} ms"
    )
    print(
        f"  {out / 'bag'}/           all topics (MCAP): ros2 bag info {out / 'bag'}; "
        f"ros2 bag play {out / 'bag'} + rviz2 -d rviz/panoptic_depthlab.rviz"
    )
    tracking = summary["tracking"]
    print(
        f"  tracked {tracking['tracks']} things over {TrackerConfig.confirm_frames}+ frames, the longest over "
        f"{tracking['longest_track_frames']} frames; "
        f"{len(tracking['closing'])} closing in at some point (overlay: 'car #12 14.3 m, 2.1 m/s closing')"
    )
    if (odometry := summary["odometry"]) is not None:
        print(
            f"  odometry {odometry['topic']} played ({odometry['messages_sent']} messages): "
            f"{odometry['frames_tracked_with_odometry']}/{summary['frames_answered']} frames tracked with the "
            f"camera's motion; {len(tracking['at_rest'])} things at rest at some point "
            "(labels: 'car #12 14.3 m, 8.0 m/s closing, at rest')"
        )
    print(f"  {out / 'overlay.mp4'}      the overlay stream (any video player)")
    print(f"  {out / 'overlay'}/         one PNG per frame")
    print(f"  {out / 'summary.json'}     frames, segments per frame, what was tracked, odometry, latency percentiles")
    return 0 if summary["frames_answered"] == summary["frames_sent"] else 1


if __name__ == "__main__":
    sys.exit(main())
