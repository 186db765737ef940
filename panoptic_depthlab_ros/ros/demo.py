"""``make demo``: the real node on the bundled demo bag, every output recorded.

Starts the installed ``panoptic_depthlab_node`` executable (real rclpy, its own
process), plays the bag's camera images and CameraInfo to it over loopback,
records every output topic, and writes to ``--out``:

* ``bag/``: an MCAP bag with the input topics and all outputs,
* ``overlay/frame_XXXX.png`` and ``overlay.mp4``: the overlay stream,
* ``summary.json``: frames, segments per frame, latency percentiles.

``--out`` is written aside and moved into place at the end (:mod:`..output`): a previous
demo output is replaced, anything else at that path is refused and left as it is.

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
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from sensor_msgs.msg import CameraInfo, Image

from .. import msg_conversions as conversions
from ..bag import typestore_with_our_messages
from ..checkpoint import bundled_checkpoint
from ..exit_codes import run_command
from ..node_outputs import NAMESPACE
from ..node_outputs import OUTPUTS as NODE_OUTPUTS
from ..output import MARKER, StagedOutput, marker_says, write_marker

REPO = Path(__file__).resolve().parents[2]
DEFAULT_BAG = REPO / "data" / "demo_bag"
NODE = NAMESPACE
# Output topic -> message type (as recorded).
OUTPUTS = {o.topic: o.msg_type for o in NODE_OUTPUTS} | {"/diagnostics": "diagnostic_msgs/msg/DiagnosticArray"}


def _msg_class(msgtype: str) -> Any:
    pkg, _, name = msgtype.split("/")
    module = __import__(f"{pkg}.msg", fromlist=[name])
    return getattr(module, name)


def _node_command(checkpoint: Path, image_topic: str, info_topic: str, params: Path) -> list[str]:
    exe = shutil.which("panoptic_depthlab_node", path=str(Path(sys.executable).parent)) or shutil.which(
        "panoptic_depthlab_node"
    )
    if exe is None:
        raise SystemExit("panoptic_depthlab_node is not installed: run `make setup` first")
    return [
        exe,
        "--ros-args",
        "--params-file",
        str(params),
        "-p",
        f"checkpoint:={checkpoint}",
        "-p",
        "device:=cpu",
        "-p",
        "qos_reliability:=reliable",
        "-p",
        "qos_depth:=5",
        "-r",
        f"image:={image_topic}",
        "-r",
        f"camera_info:={info_topic}",
    ]


WRITTEN_BY = "panoptic-depthlab demo"
# What the demo writes: a folder holding only these (from before outputs were marked) is a demo's.
DEMO_ENTRIES = {"bag", "overlay", "overlay.mp4", "summary.json", "node.log", MARKER}


def demo_output_says(path: Path) -> str | None:
    """None when ``path`` is a demo output (marked, or holding only what the demo writes); else why not."""
    reason = marker_says(path, WRITTEN_BY)
    if reason is None or (path.is_dir() and {p.name for p in path.iterdir()} <= DEMO_ENTRIES):
        return None
    return reason


def run_demo(bag: Path, out: Path, *, checkpoint: Path, **options: Any) -> dict[str, Any]:
    """Play ``bag`` through the node, record everything into ``out``; returns the summary.

    A previous demo output at ``out`` is replaced once the new one is complete.
    """
    staged = StagedOutput(
        out.parent, [out.name], what=WRITTEN_BY, overwrite=True, why_not_ours=demo_output_says, inputs=[bag]
    )
    with staged as staging:
        summary = _record(bag, staging / out.name, checkpoint=checkpoint, **options)
        write_marker(staging / out.name, WRITTEN_BY, bag=bag.resolve(), checkpoint=checkpoint)
    return summary


def _record(
    bag: Path,
    out: Path,
    *,
    checkpoint: Path,
    frames: int | None,
    rate: float | None,
    timeout_s: float = 120.0,
    params: Path | None = None,
) -> dict[str, Any]:
    params = params or REPO / "config" / "panoptic_depthlab.yaml"
    (out / "overlay").mkdir(parents=True)
    with Reader(bag) as reader:
        image_conn = next((c for c in reader.connections if c.msgtype == "sensor_msgs/msg/Image"), None)
        info_conn = next((c for c in reader.connections if c.msgtype == "sensor_msgs/msg/CameraInfo"), None)
        if image_conn is None:
            raise SystemExit(
                f"{bag}: no sensor_msgs/Image topic; the bag has {[(c.topic, c.msgtype) for c in reader.connections]}"
            )
        inputs = [
            (c.topic, stamp, raw)
            for c, stamp, raw in reader.messages()
            if c.id in {image_conn.id, getattr(info_conn, "id", -1)}
        ]
    images = [m for m in inputs if m[0] == image_conn.topic][: frames or None]
    last_stamp = images[-1][1]
    inputs = [m for m in inputs if m[1] <= last_stamp]

    env = dict(os.environ)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    proc = subprocess.Popen(
        _node_command(checkpoint, image_conn.topic, info_conn.topic if info_conn else "/camera/camera_info", params),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    log_lines: list[str] = []
    stdout = proc.stdout
    assert stdout is not None
    threading.Thread(target=lambda: log_lines.extend(iter(stdout.readline, "")), daemon=True).start()

    ts = typestore_with_our_messages()
    context = rclpy.Context()
    rclpy.init(context=context)
    node = Node("panoptic_depthlab_demo_player", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    writer = Writer(out / "bag", version=9, storage_plugin=StoragePlugin.MCAP)
    lock = threading.Lock()
    received: dict[str, list[tuple[int, bytes]]] = {t: [] for t in OUTPUTS}
    answered: dict[tuple[int, int], float] = {}
    node_status: dict[str, str] = {}  # key -> value of the node's latest /diagnostics report
    summary: dict[str, Any] = {}
    try:
        writer.open()
        conns = {t: writer.add_connection(t, mt, typestore=ts) for t, mt in OUTPUTS.items()}
        conns[image_conn.topic] = writer.add_connection(image_conn.topic, image_conn.msgtype, typestore=ts)
        if info_conn:
            conns[info_conn.topic] = writer.add_connection(info_conn.topic, info_conn.msgtype, typestore=ts)

        def recorder(topic: str):
            def on_raw(raw: bytes) -> None:
                now = time.time_ns()
                with lock:
                    writer.write(conns[topic], now, raw)
                    received[topic].append((now, raw))
                    if topic.endswith("/segments"):
                        msg: Any = ts.deserialize_cdr(raw, OUTPUTS[topic])
                        answered[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = time.perf_counter()
                    elif topic == "/diagnostics":
                        report: Any = ts.deserialize_cdr(raw, OUTPUTS[topic])
                        for status in report.status:
                            if status.name == f"{NODE}: pipeline":
                                node_status.update({kv.key: kv.value for kv in status.values})

            return on_raw

        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        subscriptions = [
            node.create_subscription(_msg_class(msgtype), topic, recorder(topic), reliable, raw=True)
            for topic, msgtype in OUTPUTS.items()
        ]
        image_pub = node.create_publisher(Image, image_conn.topic, reliable)
        info_pub = node.create_publisher(CameraInfo, info_conn.topic if info_conn else "/camera/camera_info", reliable)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()

        # Wait until both sides of every connection have matched: the node only produces the
        # outputs it sees subscribers for, and discovery finishes at different times per topic
        # and per side, so our view alone is not enough; the node's /diagnostics say its view.
        def node_ready() -> bool:
            inputs_matched = image_pub.get_subscription_count() > 0 and info_pub.get_subscription_count() > 0
            outputs_matched = all(sub.get_publisher_count() > 0 for sub in subscriptions)
            with lock:
                subscribed = set(node_status.get("outputs_subscribed", "").split(","))
            node_side = {t.rsplit("/", 1)[1] for t in OUTPUTS if t.startswith(NODE)} <= subscribed
            return inputs_matched and outputs_matched and node_side

        def wait_until(condition: Callable[[], bool], what: str, poll_s: float = 0.02) -> None:
            deadline = time.monotonic() + timeout_s
            while not condition():
                if proc.poll() is not None:
                    raise SystemExit(f"the node exited while we waited for {what}:\n" + "".join(log_lines[-30:]))
                if time.monotonic() > deadline:
                    raise SystemExit(f"timed out waiting for {what}:\n" + "".join(log_lines[-30:]))
                time.sleep(poll_s)

        def has_camera_info() -> bool:
            with lock:
                return int(node_status.get("camera_info_received", "0")) > 0

        wait_until(node_ready, "the node to come up and match every topic")

        latencies: list[float] = []
        sent: dict[tuple[int, int], float] = {}
        t0_wall, t0_bag = time.monotonic(), inputs[0][1]
        infos_sent = 0
        for topic, stamp, raw in inputs:
            if rate:
                wait = (stamp - t0_bag) / 1e9 / rate - (time.monotonic() - t0_wall)
                if wait > 0:
                    time.sleep(wait)
            with lock:
                writer.write(conns[topic], time.time_ns(), raw)
            if topic != image_conn.topic:
                info_pub.publish(deserialize_message(raw, CameraInfo))
                infos_sent += 1
                continue
            if not sent and infos_sent:
                # The node takes images and camera_info on separate subscriptions: make sure the
                # first frame already has its intrinsics (markers and points need them).
                wait_until(has_camera_info, "the node to take the first camera_info")
                t0_wall = time.monotonic() - (stamp - t0_bag) / 1e9 / (rate or 1.0)  # the clock starts now
            msg = deserialize_message(raw, Image)
            key = (msg.header.stamp.sec, msg.header.stamp.nanosec)
            sent[key] = time.perf_counter()
            image_pub.publish(msg)
            if rate is None:  # lock-step: wait for this frame's answer (polled finely: it paces the replay)

                def has_answer(key: tuple[int, int] = key) -> bool:
                    with lock:
                        return key in answered

                wait_until(has_answer, f"the answer to the frame stamped {key}", poll_s=0.002)
        # Trailing outputs: a reliable sample lost on the way is only re-sent after the writer's
        # next heartbeat (Fast DDS: every 3 s), so wait for the counts rather than a fixed time.
        expected = [o.topic for o in NODE_OUTPUTS if infos_sent or not o.needs_intrinsics]

        def outputs_complete() -> bool:
            with lock:
                return len(answered) >= len(sent) and all(len(received[t]) >= len(answered) for t in expected)

        end = time.monotonic() + 10.0
        while time.monotonic() < end and not outputs_complete():
            time.sleep(0.05)
        time.sleep(0.2)
        with lock:
            latencies = [answered[k] - sent[k] for k in sent if k in answered]
            segments_per_frame = [
                len(cast(Any, ts.deserialize_cdr(raw, OUTPUTS[f"{NODE}/segments"])).segments)
                for _, raw in received[f"{NODE}/segments"]
            ]
            overlays = [raw for _, raw in received[f"{NODE}/overlay"]]
        video = None
        for i, raw in enumerate(overlays):
            frame = conversions.image_to_bgr(ts.deserialize_cdr(raw, "sensor_msgs/msg/Image")).copy()
            cv2.imwrite(str(out / "overlay" / f"frame_{i:04d}.png"), frame)
            if video is None:
                video = cv2.VideoWriter(
                    str(out / "overlay.mp4"), cv2.VideoWriter.fourcc(*"mp4v"), 10.0, (frame.shape[1], frame.shape[0])
                )
            video.write(frame)
        if video is not None:
            video.release()
        lat = np.array(latencies) * 1000 if latencies else np.array([np.nan])
        summary = {
            "bag": str(bag),
            "checkpoint": str(checkpoint),
            "mode": "lock-step" if rate is None else f"rate {rate}",
            "frames_sent": len(sent),
            "frames_answered": len(latencies),
            "segments_per_frame": segments_per_frame,
            "latency_ms": {
                "p50": float(np.percentile(lat, 50)),
                "p90": float(np.percentile(lat, 90)),
                "p99": float(np.percentile(lat, 99)),
                "max": float(lat.max()),
                "mean": float(lat.mean()),
            },
            "messages_recorded": {t: len(v) for t, v in received.items()},
        }
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    finally:
        executor.shutdown()
        node.destroy_node()
        context.try_shutdown()
        if writer is not None:
            try:
                writer.close()
            except Exception:  # noqa: BLE001 - the writer may not have opened
                pass
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        (out / "node.log").write_text("".join(log_lines))
    return summary


def main(argv: list[str] | None = None) -> int:
    """Command line of ``make demo``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bag", type=Path, default=DEFAULT_BAG, help="input bag (default: the bundled demo bag)")
    parser.add_argument("--out", type=Path, default=Path("demo_output"))
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: the bundled demo model")
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
    summary = run_demo(args.bag, args.out, checkpoint=checkpoint, frames=args.frames, rate=args.rate)
    out = args.out
    print(
        f"\nDemo done in {time.monotonic() - t0:.0f} s: {summary['frames_answered']}/{summary['frames_sent']} "
        f"frames, latency p50 {summary['latency_ms']['p50']:.0f} ms, p90 {summary['latency_ms']['p90']:.0f} ms"
    )
    print(
        f"  {out / 'bag'}/           all topics (MCAP): ros2 bag info {out / 'bag'}; "
        f"ros2 bag play {out / 'bag'} + rviz2 -d rviz/panoptic_depthlab.rviz"
    )
    print(f"  {out / 'overlay.mp4'}      the overlay stream (any video player)")
    print(f"  {out / 'overlay'}/         one PNG per frame")
    print(f"  {out / 'summary.json'}     frames, segments per frame, latency percentiles")
    return 0 if summary["frames_answered"] == summary["frames_sent"] else 1


if __name__ == "__main__":
    sys.exit(main())
