"""A shortened ``make demo`` (tools/demo.py): the real node executable on the bundled bag and model."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import yaml
from rosbags.rosbag2 import Reader, StoragePlugin, Writer

from panoptic_depthlab_ros.bag_reading import typestore_with_our_messages
from panoptic_depthlab_ros.checkpoint import bundled_checkpoint, load_checkpoint
from panoptic_depthlab_ros.ego_motion import CameraMount
from pdl_testing import REPO

DEMO_BAG = REPO / "data" / "demo_bag"


def _demo_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("demo_tool", REPO / "tools" / "demo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _recorded_mount() -> tuple[list[float], list[float], float]:
    """The demo bag's camera mount (xyz, rpy) and speed, as its metadata.yaml records them."""
    custom = yaml.safe_load((DEMO_BAG / "metadata.yaml").read_text())["rosbag2_bagfile_information"]["custom_data"]
    xyz, rpy = (yaml.safe_load(custom[f"panoptic_depthlab.camera_mount_{k}"]) for k in ("xyz", "rpy"))
    return xyz, rpy, float(custom["panoptic_depthlab.speed_mps"])


def test_bundled_assets_are_small_and_loadable() -> None:
    ckpt = bundled_checkpoint()
    assert ckpt.stat().st_size < 25 * 1024 * 1024
    assert load_checkpoint(ckpt).info["training"]["iteration"] > 0  # a trained model, not an initialisation
    assert sum(p.stat().st_size for p in DEMO_BAG.iterdir()) < 6 * 1024 * 1024
    with Reader(DEMO_BAG) as r:
        counts = {c.topic: (c.msgtype, c.msgcount) for c in r.connections}
        assert 2.9 <= r.duration / 1e9 <= 6.0  # 30-60 frames at 10 Hz: first to last stamp
    assert counts == {
        "/camera/image_raw": ("sensor_msgs/msg/Image", 30),
        "/camera/camera_info": ("sensor_msgs/msg/CameraInfo", 30),
        "/odom": ("nav_msgs/msg/Odometry", 146),  # 50 Hz over the 2.9 s from the first image to the last
    }


def test_demo_bag_odometry_is_the_drive() -> None:
    """/odom: 50 Hz from the first image's stamp, the drive's speed along x; the mount is the camera's."""
    ts = typestore_with_our_messages()
    with Reader(DEMO_BAG) as r:
        conns = [c for c in r.connections if c.topic in ("/odom", "/camera/image_raw")]
        messages = [(c.topic, t, raw) for c, t, raw in r.messages(conns)]
    images = [t for topic, t, _ in messages if topic == "/camera/image_raw"]
    odom = [ts.deserialize_cdr(raw, "nav_msgs/msg/Odometry") for topic, _, raw in messages if topic == "/odom"]
    stamps = [m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec for m in odom]
    assert stamps[0] == images[0] and stamps[-1] == images[-1] and set(np.diff(stamps)) == {20_000_000}
    xyz, rpy, speed = _recorded_mount()
    assert speed == 8.0
    for m in odom:
        linear, angular = m.twist.twist.linear, m.twist.twist.angular
        assert (linear.x, linear.y, linear.z, angular.x, angular.y, angular.z) == (speed, 0, 0, 0, 0, 0)
        assert (m.header.frame_id, m.child_frame_id) == ("odom", "base_link")
    # A camera 1.25-1.45 m up, looking forward pitched down 0.01-0.05 rad (the synthetic scenes' range).
    pitch = -rpy[0] - math.pi / 2
    assert xyz[:2] == [0.0, 0.0] and 1.25 <= xyz[2] <= 1.45 and 0.01 <= pitch <= 0.05
    assert rpy[1:] == [0.0, -math.pi / 2]
    camera = CameraMount(xyz=xyz, rpy=rpy).ego_motion((speed, 0, 0), (0, 0, 0))
    np.testing.assert_allclose(camera.linear, (0.0, -speed * math.sin(pitch), speed * math.cos(pitch)), atol=1e-9)


def test_demo_plays_odometry_when_the_bag_has_it(tmp_path: Path) -> None:
    """The node gets odometry_topic and the recorded mount for the demo bag; nothing of it for a bag without."""
    demo = _demo_tool()
    xyz, rpy, _ = _recorded_mount()
    inputs = demo.read_inputs(DEMO_BAG, 3)
    assert inputs.odometry.topic == "/odom"
    assert inputs.odometry.mount == {"camera_mount_xyz": xyz, "camera_mount_rpy": rpy}
    odom = [stamp for topic, stamp, _ in inputs.messages if topic == "/odom"]
    assert len(odom) == 11  # up to the third image, 0.2 s after the first
    command = demo.node_command(
        Path("m.safetensors"), inputs.image_topic, inputs.info_topic, Path("p.yaml"), inputs.odometry
    )
    assert "odometry_topic:=/odom" in command and f"camera_mount_xyz:={xyz}" in command
    assert f"camera_mount_rpy:={rpy}" in command

    plain = tmp_path / "plain"  # the demo bag's first two frames, without odometry
    with Reader(DEMO_BAG) as r:
        keep = [c for c in r.connections if c.topic != "/odom"]
        messages = [(c.topic, t, raw) for c, t, raw in r.messages(keep)][:4]
    with Writer(plain, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        out = {c.topic: w.add_connection(c.topic, c.msgtype, typestore=typestore_with_our_messages()) for c in keep}
        for topic, t, raw in messages:
            w.write(out[topic], t, raw)
    inputs = demo.read_inputs(plain, None)
    assert inputs.odometry is None and {topic for topic, _, _ in inputs.messages} == {c.topic for c in keep}
    command = demo.node_command(Path("m.safetensors"), inputs.image_topic, inputs.info_topic, Path("p.yaml"), None)
    assert not [arg for arg in command if "odometry" in arg or "camera_mount" in arg]


def test_demo_ten_frames_tracked(tmp_path: Path) -> None:
    """Ten frames of the drive through the installed node: every output, and the things tracked.

    Ten, so that the parked bicycle's velocity is known (from its tenth frame) and it is at rest.
    """
    frames = 10
    out = tmp_path / "demo_output"
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "demo.py"), "--frames", str(frames), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"{frames}/{frames} frames" in proc.stdout and "overlay.mp4" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames_sent"] == summary["frames_answered"] == frames
    assert len(summary["segments_per_frame"]) == frames and min(summary["segments_per_frame"]) > 3
    assert summary["latency_ms"]["p50"] > 0
    assert sorted(p.name for p in (out / "overlay").iterdir()) == [f"frame_{i:04d}.png" for i in range(frames)]
    assert cv2.imread(str(out / "overlay" / "frame_0000.png")).shape == (192, 384, 3)
    cap = cv2.VideoCapture(str(out / "overlay.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == frames
    with Reader(out / "bag") as r:
        counts = {c.topic: c.msgcount for c in r.connections}
    for name in ("panoptic", "tracked_panoptic", "semantic", "depth", "segments", "overlay", "markers", "points"):
        assert counts[f"/panoptic_depthlab/{name}"] == frames, name
    assert counts["/camera/image_raw"] == frames
    odometry_sent = 5 * (frames - 1) + 1  # 50 Hz up to the last image's stamp
    assert counts["/odom"] == odometry_sent

    # The drive's cars keep their ids from frame to frame, and velocities become known.
    tracking = summary["tracking"]
    assert tracking["longest_track_frames"] == frames and "tracked" in proc.stdout
    assert tracking["with_velocity_per_frame"][0] == 0 and tracking["with_velocity_per_frame"][-1] > 0
    ts = typestore_with_our_messages()
    with Reader(out / "bag") as r:
        topic = lambda name: [c for c in r.connections if c.topic == f"/panoptic_depthlab/{name}"]  # noqa: E731
        segments = [ts.deserialize_cdr(raw, c.msgtype) for c, _, raw in r.messages(topic("segments"))]
        markers = [ts.deserialize_cdr(raw, c.msgtype) for c, _, raw in r.messages(topic("markers"))]
    ids = [{s.track_id: s.track_age for s in m.segments if s.track_id} for m in segments]
    assert not ids[0] and not ids[1]  # no id before a track is confirmed (its third frame)
    steady = set.intersection(*(set(frame) for frame in ids[2:]))
    assert steady and all(ids[i][t] == i + 1 for t in steady for i in range(2, frames))  # one id each, ageing
    last = [s for s in segments[-1].segments if s.track_id and np.isfinite(s.velocity.z)]
    arrows = [m for m in markers[-1].markers if m.ns == "velocities"]
    assert last and len(arrows) == len(last)  # an arrow per thing with a known velocity
    labels = {m.text for m in markers[-1].markers if m.ns == "labels"}
    assert any(f"#{s.track_id} " in text for s in last for text in labels)

    # The drive's odometry was played: every frame tracked with the camera's motion, and things
    # found still in the world reported at rest, with exactly the world's velocity.
    xyz, rpy, speed = _recorded_mount()
    odometry = summary["odometry"]
    assert odometry["topic"] == "/odom" and odometry["camera_mount"] == {
        "camera_mount_xyz": xyz,
        "camera_mount_rpy": rpy,
    }
    assert odometry["messages_sent"] == odometry["messages_taken_by_node"] == odometry_sent
    assert odometry["frames_tracked_with_odometry"] == frames and odometry["frames_tracked_without_odometry"] == 0
    at_rest = [[s for s in m.segments if s.at_rest] for m in segments]
    assert tracking["at_rest_per_frame"] == [len(frame) for frame in at_rest] and sum(tracking["at_rest_per_frame"]) > 0
    assert tracking["at_rest"] == sorted({s.track_id for frame in at_rest for s in frame})
    world = -np.array(CameraMount(xyz=xyz, rpy=rpy).ego_motion((speed, 0, 0), (0, 0, 0)).linear)
    for i, frame in enumerate(at_rest):
        labels = {m.text for m in markers[i].markers if m.ns == "labels"}
        for s in frame:
            assert s.track_id and s.label in ("car", "truck", "bus", "train", "motorcycle", "bicycle")
            np.testing.assert_allclose([s.velocity.x, s.velocity.y, s.velocity.z], world, atol=1e-5)
            assert any(f"#{s.track_id} " in text and text.endswith(", at rest") for text in labels)
    assert "things at rest" in proc.stdout
