"""A shortened ``make demo`` (tools/demo.py): the real node executable on the bundled bag and model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
from rosbags.rosbag2 import Reader

from panoptic_depthlab_ros.bag_reading import typestore_with_our_messages
from panoptic_depthlab_ros.checkpoint import bundled_checkpoint, load_checkpoint
from pdl_testing import REPO


def test_bundled_assets_are_small_and_loadable() -> None:
    ckpt = bundled_checkpoint()
    assert ckpt.stat().st_size < 25 * 1024 * 1024
    assert load_checkpoint(ckpt).info["training"]["iteration"] > 0  # a trained model, not an initialisation
    bag = REPO / "data" / "demo_bag"
    assert sum(p.stat().st_size for p in bag.iterdir()) < 6 * 1024 * 1024
    with Reader(bag) as r:
        counts = {c.topic: (c.msgtype, c.msgcount) for c in r.connections}
        assert 2.9 <= r.duration / 1e9 <= 6.0  # 30-60 frames at 10 Hz: first to last stamp
    assert counts == {
        "/camera/image_raw": ("sensor_msgs/msg/Image", 30),
        "/camera/camera_info": ("sensor_msgs/msg/CameraInfo", 30),
    }


def test_demo_six_frames_tracked(tmp_path: Path) -> None:
    """Six frames of the drive through the installed node: every output, and the things tracked."""
    frames = 6
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
