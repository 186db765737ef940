"""``panoptic-depthlab bag`` with odometry and several cameras: the odometry is read once and
used for every camera, each moved by its own mount (a camera looking left sees the world go
by along its optical x, the front one along its z); one mount per camera or a refusal that
names the option, before anything is written."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from node_utils import random_image
from panoptic_depthlab_ros.bag import replay_bag
from panoptic_depthlab_ros.bag_reading import typestore_with_our_messages
from panoptic_depthlab_ros.cli import camera_mount_args, get_args_parser
from panoptic_depthlab_ros.ego_motion import CameraMount
from panoptic_depthlab_ros.errors import InputError
from panoptic_depthlab_ros.predictor import Predictor
from panoptic_depthlab_ros.tracker import Tracker
from pdl_testing import REPO, rosbags_camera_info, rosbags_odometry

TS = get_typestore(Stores.ROS2_JAZZY)
RUN = {"capture_output": True, "text": True, "cwd": REPO}
K = [100.0, 0.0, 64.0, 0.0, 100.0, 32.0, 0.0, 0.0, 1.0]
S = 10**9
STATIC_SCENE = 3  # random_image(3): trucks away from the border, at rest in this parked scene
SPEED = 0.5  # m/s, straight ahead
CAMERAS = ("front", "left")
TOPICS = [f"/{c}/image_raw" for c in CAMERAS]
# front looks along the body's x; left is yawed by 90 degrees (optical z = body y, optical x = body x).
FRONT = CameraMount(xyz=(1.6, 0.0, 1.3), rpy=(-math.pi / 2, 0.0, -math.pi / 2))
LEFT = CameraMount(xyz=(1.0, 0.8, 1.3), rpy=(-math.pi / 2, 0.0, 0.0))
MOUNT_ARGS = ["--camera-mount-xyz", "1.6", "0", "1.3", "1.0", "0.8", "1.3"]
MOUNT_ARGS += ["--camera-mount-rpy", "-1.5707963267948966", "0", "-1.5707963267948966", "-1.5707963267948966", "0", "0"]


def image_stamp(i: int) -> int:
    return 100 * S + i * 100_000_000  # 10 Hz


@pytest.fixture(scope="module")
def predictor(tiny_checkpoint: Path) -> Predictor:
    return Predictor.from_checkpoint(tiny_checkpoint, device="cpu")


def make_bag(path: Path, *, frames: int = 6, gap_at: int | None = None) -> Path:
    """A parked scene seen by /front and /left (CameraInfo each) of a vehicle driving at 0.5 m/s.

    Per frame, recorded before the images: one odometry message stamped 10 ms after the
    images' stamp; none at frame ``gap_at``.
    """
    t = TS.types
    image = random_image(STATIC_SCENE)
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        odom = w.add_connection("/odom", "nav_msgs/msg/Odometry", typestore=TS)
        conns = {
            c: (
                w.add_connection(f"/{c}/image_raw", "sensor_msgs/msg/Image", typestore=TS),
                w.add_connection(f"/{c}/camera_info", "sensor_msgs/msg/CameraInfo", typestore=TS),
            )
            for c in CAMERAS
        }
        for i in range(frames):
            stamp = image_stamp(i)
            received = stamp + 40_000_000
            if i != gap_at:
                msg = rosbags_odometry(TS, stamp + 10_000_000, (SPEED, 0.0, 0.0))
                w.write(odom, received - 100, TS.serialize_cdr(msg, msg.__msgtype__))
            for j, c in enumerate(CAMERAS):
                header = t["std_msgs/msg/Header"](
                    stamp=t["builtin_interfaces/msg/Time"](sec=stamp // S, nanosec=stamp % S), frame_id=c
                )
                ci = rosbags_camera_info(TS, header, K)
                w.write(conns[c][1], received - 50 + j, TS.serialize_cdr(ci, ci.__msgtype__))
                m = t["sensor_msgs/msg/Image"](
                    header=header, height=64, width=128, encoding="bgr8", is_bigendian=0, step=384, data=image.ravel()
                )
                w.write(conns[c][0], received + j, TS.serialize_cdr(m, m.__msgtype__))
    return path


def _segments(bag: Path, camera: str) -> list:
    ts = typestore_with_our_messages()
    with Reader(bag) as r:
        conns = [c for c in r.connections if c.topic == f"/panoptic_depthlab/{camera}/segments"]
        return [ts.deserialize_cdr(raw, conn.msgtype) for conn, _, raw in r.messages(connections=conns)]


def _velocity(segment) -> tuple[float, float, float]:
    return (segment.velocity.x, segment.velocity.y, segment.velocity.z)


def test_the_odometry_moves_each_camera_by_its_own_mount(tmp_path: Path, predictor: Predictor) -> None:
    src = make_bag(tmp_path / "in", gap_at=2)
    summary = replay_bag(
        src,
        tmp_path / "out",
        predictor=predictor,
        image_topic=TOPICS,
        odometry_topic="/odom",
        odometry_max_age_s=0.05,
        camera_mount=[FRONT, LEFT],
        progress=False,
    )
    assert summary.frames == 12 and summary.frames_per_camera == {"front": 6, "left": 6}
    assert summary.odometry_messages == 5 and summary.skipped == []  # read once, not once per camera
    # Frame 2 has no odometry within 50 ms: tracked without it, in both cameras, each named.
    why = "the nearest odometry is 0.090 s before it, over odometry_max_age_s 0.05"
    assert summary.without_odometry == [f"camera {c} at {image_stamp(2)}: {why}" for c in CAMERAS]

    image = random_image(STATIC_SCENE)
    egos = {c: m.ego_motion((SPEED, 0.0, 0.0), (0.0, 0.0, 0.0)) for c, m in zip(CAMERAS, (FRONT, LEFT), strict=True)}
    assert egos["front"].linear == pytest.approx((0.0, 0.0, SPEED), abs=1e-12)  # along its optical z
    assert egos["left"].linear == pytest.approx((SPEED, 0.0, 0.0), abs=1e-12)  # along its optical x
    for camera, ego in egos.items():
        # Exactly what this camera's tracker is given: its own motion, none at frame 2.
        expected = Tracker()
        got = _segments(tmp_path / "out", camera)
        assert len(got) == 6
        for i, msg in enumerate(got):
            result = predictor.predict(image, camera_k=np.array(K).reshape(3, 3))
            tracked = expected.update(result, stamp_ns=image_stamp(i), image=image, ego=None if i == 2 else ego)
            velocities = [_velocity(s) for s in msg.segments]
            np.testing.assert_array_equal(velocities, [t.velocity for t in tracked.tracks])
        # By the last frame the trucks are at rest: the world's velocity in this camera's frame.
        world = tuple(-np.asarray(ego.linear))
        at_rest = [s for s, t in zip(msg.segments, tracked.tracks, strict=True) if t.at_rest]
        assert len(at_rest) >= 2 and {s.label for s in at_rest} == {"truck"}, camera
        assert all(_velocity(s) == world for s in at_rest), camera


@pytest.mark.parametrize(
    ("mount", "message"),
    [
        (None, "camera_mount: 2 cameras need 2 camera mounts, one per camera in their order, got no mount"),
        (FRONT, "camera_mount: 2 cameras need 2 camera mounts, one per camera in their order, got one mount"),
        ([FRONT, LEFT, LEFT], "camera_mount: 2 camera(s) need 2 CameraMount, one per camera, got"),
    ],
)
def test_several_cameras_need_one_mount_each(tmp_path: Path, predictor: Predictor, mount, message) -> None:
    src = make_bag(tmp_path / "in", frames=1)
    with pytest.raises(ValueError) as info:
        replay_bag(
            src,
            tmp_path / "out",
            predictor=predictor,
            image_topic=TOPICS,
            odometry_topic="/odom",
            camera_mount=mount,
            progress=False,
        )
    assert message in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # nothing written
    # Without odometry the mounts are not used: nothing to give.
    summary = replay_bag(src, tmp_path / "out", predictor=predictor, image_topic=TOPICS, progress=False)
    assert summary.frames == 2 and summary.odometry_messages == 0


def _mount_args(*argv: str):
    args = get_args_parser().parse_args(["bag", "in", "out", *argv])
    return camera_mount_args(args)


def test_cli_mount_options_take_three_numbers_per_camera() -> None:
    two = ["--image-topic", TOPICS[0], "--image-topic", TOPICS[1]]
    assert _mount_args(*two, "--odometry-topic", "/odom", *MOUNT_ARGS) == [FRONT, LEFT]
    assert _mount_args("--odometry-topic", "/odom") == [CameraMount()]
    assert _mount_args("--odometry-topic", "/odom", "--camera-mount-xyz", "1.6", "0", "1.3") == [
        CameraMount(xyz=(1.6, 0.0, 1.3))
    ]
    assert _mount_args(*two, *MOUNT_ARGS) is None  # no odometry: unused
    odom = [*two, "--odometry-topic", "/odom"]
    xyz, rpy = MOUNT_ARGS[:7], MOUNT_ARGS[7:]  # each option with its 6 numbers
    needs = "--odometry-topic with 2 cameras (/front/image_raw, /left/image_raw) needs 6 numbers"
    order = "for each camera in the order of --image-topic"
    shared = "(one mount shared by differently placed cameras is a mistake)"
    refused = [
        (odom, f"--camera-mount-xyz: {needs}, X Y Z {order}; got none {shared}"),
        (
            [*odom, *xyz, "--camera-mount-rpy", "0", "0", "0"],
            f"--camera-mount-rpy: {needs}, ROLL PITCH YAW {order}; got 3 {shared}",
        ),
        (
            [*odom, *xyz[:5], *rpy],
            f"--camera-mount-xyz: {needs}, X Y Z {order}; got 4",
        ),
        (["--odometry-topic", "/odom", *xyz], "--camera-mount-xyz takes 3 numbers (X Y Z), got 6"),
        (
            [*two, "--camera-mount-rpy", "0", "0"],
            "--camera-mount-rpy takes 3 numbers, or ROLL PITCH YAW for each of the 2 cameras, got 2",
        ),
    ]
    for argv, message in refused:
        with pytest.raises(InputError) as info:
            _mount_args(*argv)
        assert str(info.value) == message


def test_cli_bag_with_two_cameras_and_odometry(tmp_path: Path, tiny_checkpoint: Path) -> None:
    src = make_bag(tmp_path / "in", frames=3)
    cmd = [sys.executable, "-m", "panoptic_depthlab_ros.cli", "bag", str(src), str(tmp_path / "out")]
    cmd += ["--checkpoint", str(tiny_checkpoint), "--device", "cpu", "--odometry-topic", "/odom"]
    cmd += ["--image-topic", TOPICS[0], "--image-topic", TOPICS[1], "--odometry-max-age-s", "0.05"]
    proc = subprocess.run([*cmd, *MOUNT_ARGS], **RUN)
    assert proc.returncode == 0, proc.stderr
    assert "6 frames (front 3, left 3)" in proc.stdout and "/odom: 3 odometry messages" in proc.stdout
    assert "without odometry" not in proc.stderr
    # One mount for two cameras: refused, nothing written.
    cmd[5] = str(tmp_path / "out2")
    shared = subprocess.run([*cmd, "--camera-mount-xyz", "1.6", "0", "1.3"], **RUN)
    assert shared.returncode == 2
    assert "error: --camera-mount-xyz: --odometry-topic with 2 cameras" in shared.stderr
    assert not (tmp_path / "out2").exists()
