"""Bag replay without ROS: round trip in both storages, equal to the predictor; clear errors."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from panoptic_depthlab_ros.bag import BagError, replay_bag, typestore_with_our_messages
from panoptic_depthlab_ros.predictor import Predictor
from pdl_testing import REPO

TS = get_typestore(Stores.ROS2_JAZZY)
K = [100.0, 0.0, 64.0, 0.0, 100.0, 32.0, 0.0, 0.0, 1.0]


def _frame(i: int) -> np.ndarray:
    img = np.random.default_rng(i).integers(0, 256, (64, 128, 3), dtype=np.uint8)
    img[:20] = (180, 140, 90)
    return img


def make_bag(path: Path, storage: StoragePlugin, *, frames: int = 4, compressed: bool = False) -> Path:
    t = TS.types
    header = lambda i: t["std_msgs/msg/Header"](  # noqa: E731
        stamp=t["builtin_interfaces/msg/Time"](sec=100 + i, nanosec=5), frame_id="cam_optical"
    )
    with Writer(path, version=9, storage_plugin=storage) as w:
        cam = w.add_connection(
            "/cam/image", "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image", typestore=TS
        )
        info = w.add_connection("/cam/info", "sensor_msgs/msg/CameraInfo", typestore=TS)
        other = w.add_connection("/chatter", "std_msgs/msg/String", typestore=TS)
        for i in range(frames):
            stamp = (1_000 + i) * 10**8
            ci = t["sensor_msgs/msg/CameraInfo"](
                header=header(i),
                height=64,
                width=128,
                distortion_model="plumb_bob",
                d=np.zeros(5),
                k=np.array(K),
                r=np.eye(3).ravel(),
                p=np.zeros(12),
                binning_x=0,
                binning_y=0,
                roi=t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
            )
            w.write(info, stamp - 1, TS.serialize_cdr(ci, ci.__msgtype__))
            if compressed:
                ok, png = cv2.imencode(".png", _frame(i))
                m = t["sensor_msgs/msg/CompressedImage"](header=header(i), format="png", data=png.ravel())
            else:
                m = t["sensor_msgs/msg/Image"](
                    header=header(i),
                    height=64,
                    width=128,
                    encoding="bgr8",
                    is_bigendian=0,
                    step=384,
                    data=_frame(i).ravel(),
                )
            w.write(cam, stamp, TS.serialize_cdr(m, m.__msgtype__))
            s = t["std_msgs/msg/String"](data=f"hello {i}")
            w.write(other, stamp + 1, TS.serialize_cdr(s, s.__msgtype__))
    return path


@pytest.fixture(scope="module")
def predictor(tiny_checkpoint: Path) -> Predictor:
    return Predictor.from_checkpoint(tiny_checkpoint, device="cpu")


def _read(bag: Path) -> dict[str, list]:
    ts = typestore_with_our_messages()
    out: dict[str, list] = {}
    with Reader(bag) as r:
        for conn, stamp, raw in r.messages():
            out.setdefault(conn.topic, []).append((stamp, ts.deserialize_cdr(raw, conn.msgtype)))
    return out


@pytest.mark.parametrize(
    "storage,compressed", [(StoragePlugin.MCAP, False), (StoragePlugin.SQLITE3, False), (StoragePlugin.MCAP, True)]
)
def test_roundtrip_equals_predictor(tmp_path: Path, predictor: Predictor, storage, compressed) -> None:
    src = make_bag(tmp_path / "in", storage, compressed=compressed)
    summary = replay_bag(src, tmp_path / "out", predictor=predictor, progress=False)
    assert summary.frames == 4 and summary.skipped == []
    got = _read(tmp_path / "out")
    suffixes = {p.suffix for p in (tmp_path / "out").iterdir()} - {".yaml"}
    assert suffixes == ({".mcap"} if storage == StoragePlugin.MCAP else {".db3"})
    for topic in ("/cam/image", "/cam/info", "/chatter"):  # inputs copied unchanged
        assert len(got[topic]) == 4
    assert [m.data for _, m in got["/chatter"]] == [f"hello {i}" for i in range(4)]
    img_stamps = [s for s, _ in got["/cam/image"]]
    for i in range(4):
        expected = predictor.predict(_frame(i), camera_k=np.array(K).reshape(3, 3))
        for name in ("panoptic", "semantic", "depth", "segments", "overlay"):
            stamp, msg = got[f"/panoptic_depthlab/{name}"][i]
            assert stamp == img_stamps[i]  # written at the input's receive time
            assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (100 + i, 5, "cam_optical")
        pan = got["/panoptic_depthlab/panoptic"][i][1]
        assert (pan.encoding, pan.height, pan.width) == ("32SC1", 64, 128)
        np.testing.assert_array_equal(np.frombuffer(pan.data.tobytes(), np.int32).reshape(64, 128), expected.panoptic)
        dep = got["/panoptic_depthlab/depth"][i][1]
        np.testing.assert_allclose(np.frombuffer(dep.data.tobytes(), np.float32).reshape(64, 128), expected.depth)
        assert got["/panoptic_depthlab/semantic"][i][1].encoding == "mono8"
        assert got["/panoptic_depthlab/overlay"][i][1].encoding == "bgr8"
        segs = got["/panoptic_depthlab/segments"][i][1]
        assert [s.id for s in segs.segments] == [s.id for s in expected.segments]
        for a, b in zip(segs.segments, expected.segments, strict=True):
            assert a.depth_mean == pytest.approx(b.depth_mean, rel=1e-6)
            assert (a.centroid.x, a.centroid.y, a.centroid.z) == pytest.approx(b.centroid, rel=1e-5)


def test_missing_topic_lists_topics(tmp_path: Path, predictor: Predictor) -> None:
    src = make_bag(tmp_path / "in", StoragePlugin.MCAP, frames=1)
    expected = r"no topic '/camera/image_raw'; the bag has: /cam/image \[sensor_msgs/msg/Image\]"
    with pytest.raises(BagError, match=expected):
        replay_bag(src, tmp_path / "out", predictor=predictor, image_topic="/camera/image_raw", progress=False)
    assert not (tmp_path / "out").exists()


def test_output_rules(tmp_path: Path, predictor: Predictor) -> None:
    src = make_bag(tmp_path / "in", StoragePlugin.MCAP, frames=1)
    with pytest.raises(BagError, match="must not be the input"):
        replay_bag(src, src, predictor=predictor, progress=False)
    (tmp_path / "out").mkdir()
    with pytest.raises(BagError, match="exists; pass --overwrite"):
        replay_bag(src, tmp_path / "out", predictor=predictor, progress=False)
    assert replay_bag(src, tmp_path / "out", predictor=predictor, overwrite=True, progress=False).frames == 1


def test_truncated_bag_is_named(tmp_path: Path, predictor: Predictor) -> None:
    src = make_bag(tmp_path / "in", StoragePlugin.MCAP)
    mcap = next(src.glob("*.mcap"))
    data = mcap.read_bytes()
    mcap.write_bytes(data[: len(data) // 2])
    with pytest.raises(BagError, match=r"in: cannot open bag .*File end magic is invalid"):
        replay_bag(src, tmp_path / "out", predictor=predictor, progress=False)


def test_corrupt_middle_keeps_a_readable_partial_bag(tmp_path: Path, predictor: Predictor) -> None:
    src = make_bag(tmp_path / "in", StoragePlugin.SQLITE3, frames=12)
    db = next(src.glob("*.db3"))
    data = bytearray(db.read_bytes())
    # Smash the last pages (message blobs written last): the header pages stay readable.
    start = len(data) - 3 * 4096
    data[start:] = b"\xff" * (len(data) - start)
    db.write_bytes(bytes(data))
    with pytest.raises(BagError, match=r"in: corrupt or truncated bag \(CorruptError"):
        replay_bag(src, tmp_path / "out", predictor=predictor, progress=False)
    got = _read(tmp_path / "out")  # what was written before the damage is a complete, readable bag
    n = len(got["/panoptic_depthlab/segments"])
    assert 0 < n < 12 and len(got["/cam/image"]) >= n


def test_bag_cli(tmp_path: Path, tiny_checkpoint: Path) -> None:
    src = make_bag(tmp_path / "in", StoragePlugin.MCAP, frames=2)
    cmd = [
        sys.executable,
        "-m",
        "panoptic_depthlab_ros.cli",
        "bag",
        str(src),
        str(tmp_path / "out"),
        "--checkpoint",
        str(tiny_checkpoint),
        "--device",
        "cpu",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert "2 frames" in proc.stdout
    exists = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert exists.returncode == 2 and "exists; pass --overwrite" in exists.stderr
    shutil.rmtree(tmp_path / "out")
    again = subprocess.run(cmd + ["--image-topic", "/nope"], capture_output=True, text=True, cwd=REPO)
    assert again.returncode == 2 and "no topic '/nope'" in again.stderr
