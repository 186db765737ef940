"""``demo-bag``: the drive's odometry on /odom and the camera mount in the bag's metadata."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import yaml
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_typestore

from panoptic_depthlab_ros.ego_motion import CameraMount
from panoptic_depthlab_training.demo_bag import write_demo_bag
from panoptic_depthlab_training.synth import SceneGenerator
from panoptic_depthlab_training.synth.drive import make_drive, render_drive


def test_demo_bag_odometry_and_camera_mount(tmp_path: Path) -> None:
    frames, fps, seed, speed, (height, width) = 4, 10.0, 3, 6.5, (32, 64)
    bag = write_demo_bag(
        tmp_path / "bag", frames=frames, fps=fps, seed=seed, height=height, width=width, speed_mps=speed, progress=False
    )
    ts = get_typestore(Stores.ROS2_JAZZY)
    with Reader(bag) as r:
        types = {c.topic: c.msgtype for c in r.connections}
        messages = [(c.topic, t, raw) for c, t, raw in r.messages()]
    assert types["/odom"] == "nav_msgs/msg/Odometry"
    images = [t for topic, t, _ in messages if topic == "/camera/image_raw"]
    odom = [ts.deserialize_cdr(raw, "nav_msgs/msg/Odometry") for topic, _, raw in messages if topic == "/odom"]

    # 50 Hz from the first image's stamp to the last's, header stamps = receive times.
    stamps = [m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec for m in odom]
    assert stamps == [t for topic, t, _ in messages if topic == "/odom"]
    assert len(odom) == round((frames - 1) / fps * 50) + 1
    assert stamps[0] == images[0] and stamps[-1] == images[-1] and set(np.diff(stamps)) == {20_000_000}
    # Each image comes after the odometry of its own stamp: played in order, the node has it.
    order = [(topic, t) for topic, t, _ in messages if topic != "/camera/camera_info"]
    assert all(order.index(("/odom", t)) < order.index(("/camera/image_raw", t)) for t in images)
    for m, stamp in zip(odom, stamps, strict=True):
        assert (m.header.frame_id, m.child_frame_id) == ("odom", "base_link")
        twist = m.twist.twist
        assert (twist.linear.x, twist.linear.y, twist.linear.z) == (speed, 0.0, 0.0)
        assert (twist.angular.x, twist.angular.y, twist.angular.z) == (0.0, 0.0, 0.0)
        p, q = m.pose.pose.position, m.pose.pose.orientation
        assert math.isclose(p.x, speed * (stamp - stamps[0]) / 1e9) and (p.y, p.z) == (0.0, 0.0)
        assert (q.x, q.y, q.z, q.w) == (0.0, 0.0, 0.0, 1.0)

    # The mount, as the node's parameters: the odometry through it is the camera's true motion.
    custom = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]["custom_data"]
    assert custom["panoptic_depthlab.odometry_topic"] == "/odom"
    assert float(custom["panoptic_depthlab.speed_mps"]) == speed
    xyz = yaml.safe_load(custom["panoptic_depthlab.camera_mount_xyz"])
    rpy = yaml.safe_load(custom["panoptic_depthlab.camera_mount_rpy"])
    drive = make_drive(np.random.default_rng(seed), frames=frames, fps=fps, ego_speed_mps=speed)
    assert xyz == [0.0, 0.0, drive.scene.mount_height]
    assert rpy == [-math.pi / 2 - drive.scene.pitch, 0.0, -math.pi / 2]
    true_motion = next(render_drive(SceneGenerator(height, width, seed=seed), drive)).camera_velocity
    from_odometry = CameraMount(xyz=xyz, rpy=rpy).ego_motion((speed, 0.0, 0.0), (0.0, 0.0, 0.0))
    np.testing.assert_allclose(from_odometry.linear, true_motion, atol=1e-9)
    assert from_odometry.angular == (0.0, 0.0, 0.0)
