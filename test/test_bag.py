"""Bag replay without ROS: round trip in both storages, equal to the predictor; clear errors."""

from __future__ import annotations

import math
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.rosbag2.errors import ReaderError
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from node_utils import random_image
from panoptic_depthlab_ros.bag import replay_bag
from panoptic_depthlab_ros.bag_reading import typestore_with_our_messages
from panoptic_depthlab_ros.errors import BagError, OutputError
from panoptic_depthlab_ros.geometry3d import point_cloud, segment_markers
from panoptic_depthlab_ros.msg_conversions import pointcloud_to_array
from panoptic_depthlab_ros.node_outputs import OUTPUT_NAMES
from panoptic_depthlab_ros.predictor import Predictor
from panoptic_depthlab_ros.salvage import db3_is_cut_short, mcap_is_cut_short, salvage_db3, salvage_mcap
from panoptic_depthlab_ros.tracker import Tracker, TrackerConfig, track_panoptic
from pdl_testing import REPO, rosbags_camera_info, rosbags_odometry

TS = get_typestore(Stores.ROS2_JAZZY)
RUN = {"capture_output": True, "text": True, "cwd": REPO}
K = [100.0, 0.0, 64.0, 0.0, 100.0, 32.0, 0.0, 0.0, 1.0]


def _frame(i: int) -> np.ndarray:
    img = np.random.default_rng(i).integers(0, 256, (64, 128, 3), dtype=np.uint8)
    img[:20] = (180, 140, 90)
    return img


def make_bag(path: Path, storage: StoragePlugin, *, frames: int = 4, compressed: bool = False, first: int = 0) -> Path:
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
        for i in range(first, first + frames):
            stamp = (1_000 + i) * 10**8
            ci = rosbags_camera_info(TS, header(i), K)
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


def _read_raw(bag: Path, topic: str) -> list:
    with Reader(bag) as r:
        return [(c, raw) for c, _, raw in r.messages([c for c in r.connections if c.topic == topic])]


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
    assert summary.output_topics == [f"/panoptic_depthlab/{name}" for name in OUTPUT_NAMES]  # every output
    tracker = Tracker()  # tracked as a Tracker fed the images' header stamps tracks
    for i in range(4):
        expected = predictor.predict(_frame(i), camera_k=np.array(K).reshape(3, 3))
        expected = expected.with_tracks(
            tracker.update(expected, stamp_ns=(100 + i) * 10**9 + 5, image=_frame(i)).tracks
        )
        for name in OUTPUT_NAMES:
            stamp, msg = got[f"/panoptic_depthlab/{name}"][i]
            assert stamp == img_stamps[i]  # written at the input's receive time
            header = msg.markers[0].header if name == "markers" else msg.header  # a MarkerArray has none of its own
            assert (header.stamp.sec, header.stamp.nanosec, header.frame_id) == (100 + i, 5, "cam_optical")
        pan = got["/panoptic_depthlab/panoptic"][i][1]
        assert (pan.encoding, pan.height, pan.width) == ("32SC1", 64, 128)
        np.testing.assert_array_equal(np.frombuffer(pan.data.tobytes(), np.int32).reshape(64, 128), expected.panoptic)
        dep = got["/panoptic_depthlab/depth"][i][1]
        np.testing.assert_allclose(np.frombuffer(dep.data.tobytes(), np.float32).reshape(64, 128), expected.depth)
        assert got["/panoptic_depthlab/semantic"][i][1].encoding == "mono8"
        assert got["/panoptic_depthlab/overlay"][i][1].encoding == "bgr8"
        segs = got["/panoptic_depthlab/segments"][i][1]
        assert [s.id for s in segs.segments] == [s.id for s in expected.segments]
        assert [(s.track_id, s.track_age) for s in segs.segments] == [
            (s.track_id, s.track_age) for s in expected.segments
        ]
        # Ids show from the frame that confirms a track (the third); frames seen from the first.
        assert any(s.track_age == i + 1 for s in segs.segments)
        assert any(s.track_id for s in segs.segments) == (i >= TrackerConfig.confirm_frames - 1)
        tracked = got["/panoptic_depthlab/tracked_panoptic"][i][1]
        np.testing.assert_array_equal(
            np.frombuffer(tracked.data.tobytes(), np.int32).reshape(64, 128),
            track_panoptic(expected),  # the track ids its segments carry
        )
        for a, b in zip(segs.segments, expected.segments, strict=True):
            assert a.depth_mean == pytest.approx(b.depth_mean, rel=1e-6)
            assert (a.centroid.x, a.centroid.y, a.centroid.z) == pytest.approx(b.centroid, rel=1e-5)
        # The 3D outputs (the bag has CameraInfo), as the node's defaults make them.
        cloud = point_cloud(
            expected.depth,
            expected.panoptic,
            np.array(K).reshape(3, 3),
            class_colors=predictor.classes.colors,
            label_divisor=1000,
            stride=4,
        )
        points = got["/panoptic_depthlab/points"][i][1]
        assert (points.height, points.width, [f.name for f in points.fields]) == (
            1,
            cloud.width,
            list("xyz") + ["rgb", "label"],
        )
        assert pointcloud_to_array(points).tobytes() == cloud.points.tobytes()
        markers = got["/panoptic_depthlab/markers"][i][1].markers
        specs = segment_markers(expected, np.array(K).reshape(3, 3), near=5.0, far=60.0)
        assert markers[0].action == 3 and len(markers) == len(specs) + 1 > 1  # DELETEALL, then one per spec
        assert [(m.ns, m.id, m.text) for m in markers[1:]] == [(m.namespace, m.id, m.text) for m in specs]
        assert all(m.header.frame_id == "cam_optical" for m in markers)


def test_missing_topic_lists_topics(tmp_path: Path, predictor: Predictor) -> None:
    src = make_bag(tmp_path / "in", StoragePlugin.MCAP, frames=1)
    expected = r"no topic '/camera/image_raw'; the bag has: /cam/image \[sensor_msgs/msg/Image\]"
    with pytest.raises(BagError, match=expected):
        replay_bag(src, tmp_path / "out", predictor=predictor, image_topic="/camera/image_raw", progress=False)
    assert not (tmp_path / "out").exists()


def test_output_rules(tmp_path: Path, predictor: Predictor) -> None:
    src = make_bag(tmp_path / "in", StoragePlugin.MCAP, frames=1)
    with pytest.raises(OutputError, match="is or holds the input"):
        replay_bag(src, src, predictor=predictor, progress=False)
    with pytest.raises(OutputError, match="is inside the input"):
        replay_bag(src, src / "out", predictor=predictor, progress=False)
    (tmp_path / "out").mkdir()  # an empty folder holds nothing to lose
    assert replay_bag(src, tmp_path / "out", predictor=predictor, progress=False).frames == 1
    with pytest.raises(OutputError, match="exists; pass --overwrite"):
        replay_bag(src, tmp_path / "out", predictor=predictor, progress=False)
    assert replay_bag(src, tmp_path / "out", predictor=predictor, overwrite=True, progress=False).frames == 1
    with pytest.raises(BagError, match="no such bag"):
        replay_bag(tmp_path / "nowhere", tmp_path / "o1", predictor=predictor, progress=False)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not a bag")
    with pytest.raises(BagError, match=r"empty: not a bag: the folder holds no metadata.yaml and no \.mcap"):
        replay_bag(tmp_path / "empty", tmp_path / "o2", predictor=predictor, progress=False)
    with pytest.raises(BagError, match=r"notes.txt: not a bag: a ROS 2 bag is a folder or an \.mcap or \.db3 file"):
        replay_bag(tmp_path / "empty" / "notes.txt", tmp_path / "o3", predictor=predictor, progress=False)
    assert not any((tmp_path / name).exists() for name in ("o1", "o2", "o3"))  # nothing half-written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "in", "out"]  # no staging left behind


def test_cut_short_mcap_is_salvaged(tmp_path: Path, tiny_checkpoint: Path) -> None:
    # A recorder killed mid-drive: no summary, no footer, the last chunk half written.
    # 48 frames make two chunks (rosbags closes one at 1 MiB); the cut falls in the second.
    src = make_bag(tmp_path / "in", StoragePlugin.MCAP, frames=48)
    mcap = next(src.glob("*.mcap"))
    whole = mcap.read_bytes()
    with Reader(src) as r:
        first_chunk_end = r.storage.storages[0].chunks[1].chunk_start_offset
    mcap.write_bytes(whole[: first_chunk_end + 5000])
    with pytest.raises(ReaderError, match="File end magic is invalid"):
        Reader(src).open()  # what every other reader says about such a bag
    cmd = [sys.executable, "-m", "panoptic_depthlab_ros.cli", "bag", str(src), str(tmp_path / "out")]
    proc = subprocess.run(cmd + ["--checkpoint", str(tiny_checkpoint), "--device", "cpu"], **RUN)
    assert proc.returncode == 1, proc.stderr  # complete output, damaged input: exit 1 and say why
    assert f"warning: {mcap}: cut short" in proc.stderr and "the rest is lost" in proc.stderr
    got = _read(tmp_path / "out")
    n = len(got["/cam/image"])
    assert f"{n} frames" in proc.stdout
    assert 30 < n < 48  # the complete first chunk: every frame in it, none after the cut
    assert len(got["/panoptic_depthlab/segments"]) == n
    stamps = [m.header.stamp.sec for _, m in got["/panoptic_depthlab/segments"]]
    assert stamps == list(range(100, 100 + n))  # in order, from the first frame


def test_salvage_mcap_keeps_complete_records(tmp_path: Path) -> None:
    src = make_bag(tmp_path / "in", StoragePlugin.MCAP, frames=3)
    mcap = next(src.glob("*.mcap"))
    assert not mcap_is_cut_short(mcap)
    data = mcap.read_bytes()
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(data[: len(data) - 30])  # the cut falls in the summary: every message survives
    assert mcap_is_cut_short(cut)
    report = salvage_mcap(cut, tmp_path / "fixed.mcap")
    assert report.size == len(data) - 30 and report.kept_bytes < report.size
    with Reader(tmp_path / "fixed.mcap") as r:
        assert sorted((c.topic, c.msgcount) for c in r.connections) == [
            ("/cam/image", 3),
            ("/cam/info", 3),
            ("/chatter", 3),
        ]
    (tmp_path / "junk.mcap").write_bytes(b"not an mcap at all")
    with pytest.raises(BagError, match="junk.mcap: not an MCAP file"):
        salvage_mcap(tmp_path / "junk.mcap", tmp_path / "x.mcap")


def test_cut_short_db3_is_salvaged(tmp_path: Path, predictor: Predictor) -> None:
    # A sqlite3 recorder killed mid-drive: the file is shorter than its header says, so
    # SQLite refuses all of it, and metadata.yaml was never written.
    src = make_bag(tmp_path / "in", StoragePlugin.SQLITE3, frames=12)
    (src / "metadata.yaml").unlink()
    db = next(src.glob("*.db3"))
    whole = db.read_bytes()
    db.write_bytes(whole[: int(len(whole) * 0.6) + 100])  # not even whole pages
    with pytest.raises(ReaderError, match="malformed"):
        Reader(db).open()  # what every other reader says about such a bag
    summary = replay_bag(src, tmp_path / "out", predictor=predictor, progress=False)
    assert summary.damage is not None and summary.damage.startswith(f"{db}: cut short")
    assert 2 < summary.frames < 12
    assert f"in the first {len(whole) * 6 // 10 // 4096 * 4096} of {len(whole) * 6 // 10 + 100} bytes" in (
        summary.damage
    )
    got = _read(tmp_path / "out")
    assert {p.suffix for p in (tmp_path / "out").iterdir()} == {".db3", ".yaml"}  # same storage as the input
    n = summary.frames
    assert [m.header.stamp.sec for _, m in got["/panoptic_depthlab/segments"]] == list(range(100, 100 + n))
    assert [m.header.stamp.sec for _, m in got["/cam/image"]] == list(range(100, 100 + n))
    assert [m.data for _, m in got["/chatter"]][: n - 1] == [f"hello {i}" for i in range(n - 1)]


def test_salvage_db3(tmp_path: Path) -> None:
    src = make_bag(tmp_path / "in", StoragePlugin.SQLITE3, frames=6)
    db = next(src.glob("*.db3"))
    assert not db3_is_cut_short(db)
    with Reader(src) as r:
        whole = {c.topic: c.msgcount for c in r.connections}
    cut = tmp_path / "cut.db3"
    cut.write_bytes(db.read_bytes()[: db.stat().st_size - 4096])  # the last page lost
    assert db3_is_cut_short(cut)
    report = salvage_db3(cut, tmp_path / "fixed.db3")
    assert (report.source, report.size, report.kept_bytes) == (cut, cut.stat().st_size, cut.stat().st_size)
    with Reader(tmp_path / "fixed.db3") as r:
        kept = {c.topic: c.msgcount for c in r.connections}
        assert sum(kept.values()) == report.records
        stamps = [stamp for _, stamp, _ in r.messages()]
    assert set(kept) == set(whole) and 0 < report.records < sum(whole.values())
    assert stamps == sorted(stamps)
    (tmp_path / "junk.db3").write_bytes(b"not sqlite at all")
    with pytest.raises(BagError, match="junk.db3: not a sqlite3 file"):
        salvage_db3(tmp_path / "junk.db3", tmp_path / "x.db3")


def test_salvage_mcap_checks_the_framing_inside_chunks_without_checksum(tmp_path: Path) -> None:
    # rosbags writes chunks with crc 0 (unset): a broken record length inside is what shows.
    src = make_bag(tmp_path / "in", StoragePlugin.MCAP, frames=48)
    mcap = next(src.glob("*.mcap"))
    with Reader(src) as r:
        chunks = list(r.storage.storages[0].chunks)
        whole = sum(c.msgcount for c in r.connections)
    assert len(chunks) == 2 and chunks[0].compression == ""
    data = bytearray(mcap.read_bytes())
    at = chunks[0].chunk_start_offset + 9 + 8 + 8 + 8 + 4 + 4 + 8  # ...crc, "" compression, data length
    messages = 0
    while messages < 10:  # walk to the 10th message record (schemas and channels come first)
        op, length = struct.unpack_from("<BQ", data, at)
        messages += op == 0x05
        at += 9 + length if messages < 10 else 0
    data[at + 1 : at + 9] = (10**9).to_bytes(8, "little")  # its length, now past the chunk's end
    mcap.write_bytes(bytes(data))
    report = salvage_mcap(mcap, tmp_path / "fixed.mcap")
    assert report.dropped == 1 and not report.cut_short
    with Reader(tmp_path / "fixed.mcap") as r:
        assert sum(c.msgcount for c in r.connections) == whole - sum(chunks[0].channel_count.values())


def test_bag_without_metadata_and_custom_types(tmp_path: Path, predictor: Predictor) -> None:
    # A recorder that died before writing metadata.yaml, holding a message type of the
    # user's own that neither ROS 2's nor our type store knows: it is read from the bag.
    src = make_bag(tmp_path / "in", StoragePlugin.MCAP, frames=2)
    store = get_typestore(Stores.ROS2_JAZZY)
    store.register(get_types_from_msg("int32 lap\nstring note\n", "my_pkg/msg/Lap"))
    extra = tmp_path / "extra"
    with Reader(src) as r, Writer(extra, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        image = next(c for c in r.connections if c.topic == "/cam/image")
        copy = w.add_connection(image.topic, image.msgtype, typestore=TS)
        for _, stamp, raw in r.messages([image]):
            w.write(copy, stamp, raw)
        lap = w.add_connection("/lap", "my_pkg/msg/Lap", typestore=store)
        w.write(lap, 7, store.serialize_cdr(store.types["my_pkg/msg/Lap"](lap=3, note="pit"), "my_pkg/msg/Lap"))
    (src / "metadata.yaml").unlink()
    summary = replay_bag(src, tmp_path / "out", predictor=predictor, progress=False)
    assert summary.frames == 2 and summary.damage is None
    summary = replay_bag(next(extra.glob("*.mcap")), tmp_path / "out2", predictor=predictor, progress=False)
    assert summary.frames == 2 and summary.damage is None
    laps = _read_raw(tmp_path / "out2", "/lap")
    assert [(c.msgtype, store.deserialize_cdr(raw, c.msgtype).note) for c, raw in laps] == [("my_pkg/msg/Lap", "pit")]


def test_split_bag_with_cut_short_last_file(tmp_path: Path, predictor: Predictor) -> None:
    # A long recording split into files, the recorder killed while writing the last one,
    # before it wrote metadata.yaml. Split order is numeric: rec_9 comes before rec_10.
    bag = tmp_path / "rec"
    bag.mkdir()
    for name, first in (("rec_9", 0), ("rec_10", 3)):
        part = make_bag(tmp_path / name, StoragePlugin.MCAP, frames=3, first=first)
        next(part.glob("*.mcap")).rename(bag / f"{name}.mcap")
    last = bag / "rec_10.mcap"
    last.write_bytes(last.read_bytes()[:-30])  # the cut falls in the summary: its messages survive
    summary = replay_bag(bag, tmp_path / "out", predictor=predictor, progress=False)
    assert summary.frames == 6 and summary.damage is not None
    assert summary.damage.startswith(f"{last}: cut short") and "rec_9" not in summary.damage
    got = _read(tmp_path / "out")
    assert [m.header.stamp.sec for _, m in got["/panoptic_depthlab/segments"]] == list(range(100, 106))
    assert [m.data for _, m in got["/chatter"]] == [f"hello {i}" for i in range(6)]


def test_corrupt_middle_of_a_db3_the_replay_goes_on(tmp_path: Path, predictor: Predictor) -> None:
    # Bytes smashed in the middle of the file (a bad disk block): SQLite refuses the bag
    # from its first query, so the replay reads a salvaged copy and goes on.
    src = make_bag(tmp_path / "in", StoragePlugin.SQLITE3, frames=12)
    db = next(src.glob("*.db3"))
    data = bytearray(db.read_bytes())
    start = int(len(data) * 0.45)
    data[start : start + 3000] = b"\xff" * 3000
    db.write_bytes(bytes(data))
    with pytest.raises(ReaderError, match="malformed"):
        Reader(src).open()  # what every other reader says about such a bag
    summary = replay_bag(src, tmp_path / "out", predictor=predictor, progress=False)
    assert summary.damage is not None
    assert summary.damage.startswith(f"{src}: cannot open bag") and f"{db}: damaged: " in summary.damage
    got = _read(tmp_path / "out")
    stamps = [m.header.stamp.sec for _, m in got["/panoptic_depthlab/segments"]]
    assert 0 < summary.frames == len(stamps) < 12
    assert stamps == sorted(stamps) and stamps[-1] == 111  # frames after the damage are replayed
    assert [m.header.stamp.sec for _, m in got["/cam/image"]] == stamps


def test_damaged_mcap_chunk_is_left_out_and_the_replay_goes_on(tmp_path: Path, predictor: Predictor) -> None:
    # 96 frames make three chunks; the middle one fails its checksum (as a bad block would
    # make it in a rosbag2 MCAP, whose chunks carry CRCs). rosbags stops there.
    src = make_bag(tmp_path / "in", StoragePlugin.MCAP, frames=96)
    mcap = next(src.glob("*.mcap"))
    with Reader(src) as r:
        chunks = list(r.storage.storages[0].chunks)
    assert len(chunks) == 3
    data = bytearray(mcap.read_bytes())
    crc_at = chunks[1].chunk_start_offset + 9 + 24  # opcode, length, start, end, uncompressed size
    data[crc_at : crc_at + 4] = b"\xef\xbe\xad\xde"
    mcap.write_bytes(bytes(data))
    summary = replay_bag(src, tmp_path / "out", predictor=predictor, progress=False)
    assert summary.damage is not None and "checksum mismatch" in summary.damage
    assert f"{mcap}: damaged: 1 damaged chunks left out" in summary.damage
    got = _read(tmp_path / "out")
    stamps = [m.header.stamp.sec for _, m in got["/panoptic_depthlab/segments"]]
    first, second, third = (
        {100 + i for i in range(96) if c.message_start_time <= (1_000 + i) * 10**8 <= c.message_end_time}
        for c in chunks
    )
    assert set(stamps) == first | third and not set(stamps) & second  # the sound chunks, each frame once
    assert stamps == sorted(stamps) and summary.frames == len(stamps)
    assert len(got["/chatter"]) == sum(c.channel_count[3] for c in (chunks[0], chunks[2]))


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


def make_two_camera_bag(path: Path, frames: int = 3, *, odometry: bool = False) -> Path:
    """/front/image_raw with /front/camera_info, /left/image_raw (larger frames) without one (and /odom)."""
    t = TS.types
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        conns = {
            c: w.add_connection(f"/{c}/image_raw", "sensor_msgs/msg/Image", typestore=TS) for c in ("front", "left")
        }
        info = w.add_connection("/front/camera_info", "sensor_msgs/msg/CameraInfo", typestore=TS)
        if odometry:
            odom = w.add_connection("/odom", "nav_msgs/msg/Odometry", typestore=TS)
            msg = rosbags_odometry(TS, 100 * 10**9, (1.0, 0.0, 0.0))
            w.write(odom, 1, TS.serialize_cdr(msg, msg.__msgtype__))
        for i in range(frames):
            for j, (camera, (h, w_)) in enumerate((("front", (64, 128)), ("left", (96, 160)))):
                stamp = (1_000 + i) * 10**8 + j
                header = t["std_msgs/msg/Header"](
                    stamp=t["builtin_interfaces/msg/Time"](sec=100 + i, nanosec=j), frame_id=camera
                )
                if camera == "front":
                    ci = rosbags_camera_info(TS, header, K)
                    w.write(info, stamp - 10, TS.serialize_cdr(ci, ci.__msgtype__))
                img = np.ascontiguousarray(np.resize(_frame(10 * j + i), (h, w_, 3)))
                m = t["sensor_msgs/msg/Image"](
                    header=header, height=h, width=w_, encoding="bgr8", is_bigendian=0, step=3 * w_, data=img.ravel()
                )
                w.write(conns[camera], stamp, TS.serialize_cdr(m, m.__msgtype__))
    return path


def test_two_cameras_each_under_its_own_names(tmp_path: Path, predictor: Predictor) -> None:
    src = make_two_camera_bag(tmp_path / "in")
    summary = replay_bag(
        src, tmp_path / "out", predictor=predictor, image_topic=["/front/image_raw", "/left/image_raw"], progress=False
    )
    assert summary.frames == 6 and summary.frames_per_camera == {"front": 3, "left": 3} and summary.skipped == []
    front = [f"/panoptic_depthlab/front/{n}" for n in OUTPUT_NAMES]
    left = [f"/panoptic_depthlab/left/{n}" for n in OUTPUT_NAMES if n not in ("markers", "points")]  # no camera_info
    assert summary.output_topics == front + left
    got = _read(tmp_path / "out")
    assert not any(t.startswith("/panoptic_depthlab/") and t.count("/") == 2 for t in got)  # no single-camera topics
    for camera, (h, w), k in (("front", (64, 128), np.array(K).reshape(3, 3)), ("left", (96, 160), None)):
        segments = got[f"/panoptic_depthlab/{camera}/segments"]
        assert len(segments) == 3
        for i, (_, msg) in enumerate(segments):
            assert (msg.header.stamp.sec, msg.header.frame_id) == (100 + i, camera)
            j = 0 if camera == "front" else 1
            expected = predictor.predict(np.ascontiguousarray(np.resize(_frame(10 * j + i), (h, w, 3))), camera_k=k)
            assert [s.id for s in msg.segments] == [s.id for s in expected.segments]
            assert [s.depth_mean for s in msg.segments] == pytest.approx([s.depth_mean for s in expected.segments])
        pan = got[f"/panoptic_depthlab/{camera}/panoptic"][0][1]
        assert (pan.height, pan.width) == (h, w)
    assert all(m.header.frame_id == "front" for _, ma in got["/panoptic_depthlab/front/markers"] for m in ma.markers)

    with pytest.raises(BagError, match="2 --image-topic but 1 --camera-info-topic"):
        replay_bag(
            src,
            tmp_path / "out2",
            predictor=predictor,
            image_topic=["/front/image_raw", "/left/image_raw"],
            camera_info_topic=["/front/camera_info"],
            progress=False,
        )
    # The same CLI flags, repeated: each camera's K given explicitly (left uses front's K here).
    cmd = [sys.executable, "-m", "panoptic_depthlab_ros.cli", "bag", str(src), str(tmp_path / "out3")]
    cmd += ["--image-topic", "/front/image_raw", "--image-topic", "/left/image_raw"]
    cmd += ["--camera-info-topic", "/front/camera_info", "--camera-info-topic", "/front/camera_info"]
    proc = subprocess.run([*cmd, "--checkpoint", str(predictor.source), "--device", "cpu"], **RUN)
    assert proc.returncode == 0, proc.stderr
    assert "6 frames (front 3, left 3)" in proc.stdout and "/panoptic_depthlab/left/markers" in proc.stdout


# SegmentDepth as it was before the tracking fields: what bags recorded then carry.
OLD_SEGMENT_DEPTH = """\
int32 id
uint8 category_id
string label
bool is_thing
float32 score
uint32 area
uint32 x_min
uint32 y_min
uint32 x_max
uint32 y_max
uint32 depth_valid_pixels
float32 depth_mean
float32 depth_median
float32 depth_min
float32 depth_std
float32 depth_robust
geometry_msgs/Point centroid
"""
# SegmentDepth as it was before at_rest (its fields then, comments left out): what bags of
# tracked runs recorded then carry.
SEGMENT_DEPTH_BEFORE_AT_REST = (
    OLD_SEGMENT_DEPTH
    + """\
uint32 track_id
uint32 track_age
geometry_msgs/Vector3 velocity
float32 time_to_contact
"""
)


@pytest.mark.parametrize(
    ("definition", "tracked"),
    [(OLD_SEGMENT_DEPTH, False), (SEGMENT_DEPTH_BEFORE_AT_REST, True)],
    ids=["before_tracking", "before_at_rest"],
)
@pytest.mark.parametrize("storage", [StoragePlugin.MCAP, StoragePlugin.SQLITE3])
def test_old_segment_definition_is_read_from_the_bag(
    tmp_path: Path, predictor: Predictor, storage, definition: str, tracked: bool
) -> None:
    """A bag with SegmentDepthArray recorded under an old definition: replayed, its segments
    are read with the bag's definition and written with today's (the fields it lacks unknown:
    the tracking fields untracked, at_rest false)."""
    old = get_typestore(Stores.ROS2_JAZZY)
    old.register(get_types_from_msg(definition, "panoptic_depthlab_ros/msg/SegmentDepth"))
    array_def = (REPO / "msg" / "SegmentDepthArray.msg").read_text()
    old.register(get_types_from_msg(array_def, "panoptic_depthlab_ros/msg/SegmentDepthArray"))
    t = old.types
    src = make_bag(tmp_path / "in", storage, frames=2)
    recorded = tmp_path / "recorded"  # the same frames plus the segments a node of then published
    with Reader(src) as r, Writer(recorded, version=9, storage_plugin=storage) as w:
        conns = {c.topic: w.add_connection(c.topic, c.msgtype, typestore=TS) for c in r.connections}
        seg_conn = w.add_connection(
            "/perception/segments", "panoptic_depthlab_ros/msg/SegmentDepthArray", typestore=old
        )
        for c, stamp, raw in r.messages():
            w.write(conns[c.topic], stamp, raw)
        for i in range(2):
            track = {}
            if tracked:  # a tracked run of then: #7, closing at 8 m/s
                velocity = t["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=-8.0)
                track = {"track_id": 7, "track_age": 3 + i, "velocity": velocity, "time_to_contact": 1.5}
            car = t["panoptic_depthlab_ros/msg/SegmentDepth"](
                id=13001, category_id=13, label="car", is_thing=True, score=0.5, area=40 + i,
                x_min=1, y_min=2, x_max=9, y_max=6, depth_valid_pixels=40, depth_mean=12.5, depth_median=12.25,
                depth_min=10.0, depth_std=1.5, depth_robust=12.375,
                centroid=t["geometry_msgs/msg/Point"](x=1.0, y=-0.5, z=12.5), **track,
            )  # fmt: skip
            header = t["std_msgs/msg/Header"](
                stamp=t["builtin_interfaces/msg/Time"](sec=100 + i, nanosec=5), frame_id="c"
            )
            msg = t["panoptic_depthlab_ros/msg/SegmentDepthArray"](
                header=header, height=64, width=128, label_divisor=1000, segments=[car]
            )
            w.write(seg_conn, (1_000 + i) * 10**8 + 2, old.serialize_cdr(msg, msg.__msgtype__))
    with Reader(recorded) as r:  # what was recorded says it is the old definition
        (conn,) = [c for c in r.connections if c.topic == "/perception/segments"]
        assert "at_rest" not in conn.msgdef.data and "depth_robust" in conn.msgdef.data
        assert ("track_id" in conn.msgdef.data) == tracked

    summary = replay_bag(recorded, tmp_path / "out", predictor=predictor, progress=False)
    assert summary.frames == 2 and summary.skipped == []
    assert summary.upgraded == {"/perception/segments": 2}
    with Reader(tmp_path / "out") as r:  # read with the output's own definitions, as a user's tools do
        (conn,) = [c for c in r.connections if c.topic == "/perception/segments"]
        assert "track_id" in conn.msgdef.data and "at_rest" in conn.msgdef.data
        store = get_typestore(Stores.ROS2_JAZZY)
        store.register(get_types_from_msg(conn.msgdef.data, conn.msgtype))
        got = [store.deserialize_cdr(raw, conn.msgtype) for _, _, raw in r.messages([conn])]
    assert [m.header.stamp.sec for m in got] == [100, 101]
    for i, m in enumerate(got):
        (car,) = m.segments
        assert (car.id, car.label, car.area, car.depth_mean, car.depth_robust) == (13001, "car", 40 + i, 12.5, 12.375)
        assert (car.centroid.x, car.centroid.y, car.centroid.z) == (1.0, -0.5, 12.5)
        if tracked:  # the track fields it had are kept
            assert (car.track_id, car.track_age, car.time_to_contact) == (7, 3 + i, 1.5)
            assert (car.velocity.x, car.velocity.y, car.velocity.z) == (0.0, 0.0, -8.0)
        else:
            assert (car.track_id, car.track_age) == (0, 0)  # unknown: it was not tracked then
            assert all(np.isnan(v) for v in (car.velocity.x, car.velocity.y, car.velocity.z, car.time_to_contact))
        assert car.at_rest is False  # unknown: not found at rest
    # Today's outputs beside it, tracked.
    outputs = _read(tmp_path / "out")["/panoptic_depthlab/segments"]
    assert len(outputs) == 2 and any(s.track_age == 2 for s in outputs[1][1].segments)


# ----------------------------------------------------------------------------- odometry
ODOM_S = 10**9
STATIC_SCENE = 3  # random_image(3): trucks away from the border, at rest in this parked scene


def image_stamp(i: int) -> int:
    return 100 * ODOM_S + i * 100_000_000  # 10 Hz


def make_odometry_bag(path: Path, *, frames: int = 6, nan_at: int | None = None) -> Path:
    """A parked scene (one image again and again, 10 Hz, CameraInfo) seen from a vehicle driving at 0.5 m/s.

    Per frame, recorded before the image: odometry stamped 30 ms before it at 0.2 m/s and 10 ms
    after it at 0.5 m/s (the nearest); none around frame 2. ``nan_at``: that frame also has a
    NaN twist stamped 5 ms after it (nearer still, and ignored).
    """
    t = TS.types
    image = random_image(STATIC_SCENE)
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        cam = w.add_connection("/cam/image", "sensor_msgs/msg/Image", typestore=TS)
        info = w.add_connection("/cam/info", "sensor_msgs/msg/CameraInfo", typestore=TS)
        odom = w.add_connection("/odom", "nav_msgs/msg/Odometry", typestore=TS)
        for i in range(frames):
            stamp = image_stamp(i)
            received = stamp + 40_000_000  # the image arrives 40 ms after its stamp
            header = t["std_msgs/msg/Header"](
                stamp=t["builtin_interfaces/msg/Time"](sec=stamp // ODOM_S, nanosec=stamp % ODOM_S), frame_id="cam"
            )
            ci = rosbags_camera_info(TS, header, K)
            w.write(info, received - 30, TS.serialize_cdr(ci, ci.__msgtype__))
            if i != 2:
                for offset, forward in ((-30_000_000, 0.2), (10_000_000, 0.5)):
                    msg = rosbags_odometry(TS, stamp + offset, (forward, 0.0, 0.0))
                    w.write(odom, received - 20 + offset // 10**6, TS.serialize_cdr(msg, msg.__msgtype__))
            if i == nan_at:
                msg = rosbags_odometry(TS, stamp + 5_000_000, (math.nan, 0.0, 0.0))
                w.write(odom, received - 1, TS.serialize_cdr(msg, msg.__msgtype__))
            m = t["sensor_msgs/msg/Image"](
                header=header, height=64, width=128, encoding="bgr8", is_bigendian=0, step=384, data=image.ravel()
            )
            w.write(cam, received, TS.serialize_cdr(m, m.__msgtype__))
    return path


def test_odometry_topic_gives_the_tracker_the_camera_motion(tmp_path: Path, predictor: Predictor) -> None:
    from panoptic_depthlab_ros.ego_motion import CameraMount

    src = make_odometry_bag(tmp_path / "in", nan_at=4)
    summary = replay_bag(
        src, tmp_path / "out", predictor=predictor, odometry_topic="/odom", odometry_max_age_s=0.05, progress=False
    )
    assert summary.frames == 6 and summary.odometry_messages == 10
    # The NaN twist is skipped and named; frame 2, with no odometry within 50 ms, is tracked without it.
    assert summary.skipped == [
        f"/odom at {image_stamp(4) + 40_000_000 - 1}: odometry twist is not finite "
        "(linear [nan, 0.0, 0.0], angular [0.0, 0.0, 0.0]): ignored"
    ]
    assert summary.without_odometry == [
        f"{image_stamp(2)}: the nearest odometry is 0.090 s before it, over odometry_max_age_s 0.05"
    ]
    # Exactly what a tracker is given: per frame the nearest twist (0.5 m/s), none for frame 2.
    image = random_image(STATIC_SCENE)
    ego = CameraMount().ego_motion((0.5, 0.0, 0.0), (0.0, 0.0, 0.0))
    with_ego, without = Tracker(), Tracker()
    got = _read(tmp_path / "out")["/panoptic_depthlab/segments"]
    for i, (_, msg) in enumerate(got):
        result = predictor.predict(image, camera_k=np.array(K).reshape(3, 3))
        expected = with_ego.update(result, stamp_ns=image_stamp(i), image=image, ego=None if i == 2 else ego)
        assert expected.ego_motion == (i != 2)
        velocities = [(s.velocity.x, s.velocity.y, s.velocity.z) for s in msg.segments]
        np.testing.assert_array_equal(velocities, [t.velocity for t in expected.tracks])
        assert [(s.track_id, s.track_age) for s in msg.segments] == [(t.track_id, t.track_age) for t in expected.tracks]
        unaware = without.update(result, stamp_ns=image_stamp(i), image=image)
    # By the last frame the trucks are at rest: exactly the world's velocity seen from the camera.
    world = tuple(-np.asarray(ego.linear))
    at_rest = [(s, t) for s, t in zip(msg.segments, expected.tracks, strict=True) if t.at_rest]
    assert len(at_rest) >= 2 and {s.label for s, _ in at_rest} == {"truck"}
    assert all((s.velocity.x, s.velocity.y, s.velocity.z) == world for s, _ in at_rest)
    assert world == pytest.approx((0.0, 0.0, -0.5), abs=1e-12)
    # Without odometry the same trucks read the (still) image's own motion: none.
    still = {s.id: t.velocity for s, t in zip(result.segments, unaware.tracks, strict=True)}
    assert all(abs(still[s.id][2]) < 1e-6 for s, _ in at_rest)


def test_a_missing_odometry_topic_lists_the_bags_topics(tmp_path: Path, predictor: Predictor) -> None:
    src = make_bag(tmp_path / "in", StoragePlugin.MCAP, frames=1)
    listing = r"/cam/image \[sensor_msgs/msg/Image\], /cam/info \[sensor_msgs/msg/CameraInfo\], /chatter \[std_msgs"
    with pytest.raises(BagError, match=rf"in: no topic '/odom'; the bag has: {listing}"):
        replay_bag(src, tmp_path / "out", predictor=predictor, odometry_topic="/odom", progress=False)
    with pytest.raises(BagError, match="topic '/chatter' is std_msgs/msg/String, not nav_msgs/msg/Odometry"):
        replay_bag(src, tmp_path / "out", predictor=predictor, odometry_topic="/chatter", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # nothing written, no staging left behind


def test_bag_cli_odometry_options(tmp_path: Path, tiny_checkpoint: Path) -> None:
    src = make_odometry_bag(tmp_path / "in")
    cmd = [sys.executable, "-m", "panoptic_depthlab_ros.cli", "bag", str(src), str(tmp_path / "out")]
    cmd += ["--checkpoint", str(tiny_checkpoint), "--device", "cpu", "--odometry-topic", "/odom"]
    cmd += ["--odometry-max-age-s", "0.05", "--camera-mount-xyz", "1.5", "0", "1.2"]
    cmd += ["--camera-mount-rpy", "-1.5707963267948966", "0", "-1.5707963267948966"]
    proc = subprocess.run(cmd, **RUN)
    assert proc.returncode == 0, proc.stderr
    assert "6 frames" in proc.stdout and "/odom: 10 odometry messages" in proc.stdout
    assert (
        f"panoptic-depthlab bag: 1 of 6 frames tracked without odometry, the first at {image_stamp(2)}: "
        "the nearest odometry is 0.090 s before it, over odometry_max_age_s 0.05"
    ) in proc.stderr
    missing = make_bag(tmp_path / "plain", StoragePlugin.MCAP, frames=1)
    cmd = [sys.executable, "-m", "panoptic_depthlab_ros.cli", "bag", str(missing), str(tmp_path / "out2")]
    cmd += ["--checkpoint", str(tiny_checkpoint), "--device", "cpu", "--odometry-topic", "/odom"]
    proc = subprocess.run(cmd, **RUN)
    assert proc.returncode == 2 and "no topic '/odom'; the bag has: /cam/image [sensor_msgs/msg/Image]" in proc.stderr
    assert not (tmp_path / "out2").exists()
    bad = subprocess.run([*cmd, "--odometry-max-age-s", "-1"], **RUN)
    assert bad.returncode == 2 and "--odometry-max-age-s: expected a finite number >= 0, got -1" in bad.stderr


def test_odometry_with_two_cameras_needs_a_mount_each(tmp_path: Path, predictor: Predictor) -> None:
    src = make_two_camera_bag(tmp_path / "in", frames=1, odometry=True)  # more: test_bag_odometry.py
    with pytest.raises(ValueError, match="camera_mount: 2 cameras need 2 camera mounts, one per camera"):
        replay_bag(
            src,
            tmp_path / "out",
            predictor=predictor,
            image_topic=["/front/image_raw", "/left/image_raw"],
            odometry_topic="/odom",
            progress=False,
        )
    assert not (tmp_path / "out").exists()
    # One of its cameras with the odometry: fine.
    summary = replay_bag(
        src,
        tmp_path / "out",
        predictor=predictor,
        image_topic="/front/image_raw",
        odometry_topic="/odom",
        progress=False,
    )
    assert summary.frames == 1 and summary.odometry_messages == 1 and summary.without_odometry == []
