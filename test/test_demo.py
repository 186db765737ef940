"""A shortened ``make demo`` (tools/demo.py): the real node executable on the bundled bag and model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
from rosbags.rosbag2 import Reader

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


def test_demo_three_frames(tmp_path: Path) -> None:
    out = tmp_path / "demo_output"
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "demo.py"), "--frames", "3", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "3/3 frames" in proc.stdout and "overlay.mp4" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames_sent"] == summary["frames_answered"] == 3
    assert len(summary["segments_per_frame"]) == 3 and min(summary["segments_per_frame"]) > 3
    assert summary["latency_ms"]["p50"] > 0
    assert sorted(p.name for p in (out / "overlay").iterdir()) == [f"frame_{i:04d}.png" for i in range(3)]
    assert cv2.imread(str(out / "overlay" / "frame_0000.png")).shape == (192, 384, 3)
    cap = cv2.VideoCapture(str(out / "overlay.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    with Reader(out / "bag") as r:
        counts = {c.topic: c.msgcount for c in r.connections}
    for name in ("panoptic", "semantic", "depth", "segments", "overlay", "markers", "points"):
        assert counts[f"/panoptic_depthlab/{name}"] == 3, name
    assert counts["/camera/image_raw"] == 3
