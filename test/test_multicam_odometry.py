"""Odometry with several cameras through one real node (real rclpy, the tiny model): one
subscription feeds every camera's tracker, each camera moved by its own mount (a camera
looking left sees the world go by along its optical x, the front one along its z); counters
and /diagnostics per camera; mount parameters of the wrong length refused, naming them."""

from __future__ import annotations

import math

import numpy as np
import pytest

from node_utils import NodeHarness, camera_info_msg, image_msg, random_image

CAMERAS = ("front", "left")
# Optical frames in the body (REP 103): front looks along x; left is yawed by 90 degrees and
# looks along y (its optical z = body y, optical x = body x, optical y = -body z).
FRONT_RPY = (-math.pi / 2, 0.0, -math.pi / 2)
LEFT_RPY = (-math.pi / 2, 0.0, 0.0)
FRONT_XYZ, LEFT_XYZ = (1.6, 0.0, 1.3), (1.0, 0.8, 1.3)
MOUNTS = {"camera_mount_xyz": [*FRONT_XYZ, *LEFT_XYZ], "camera_mount_rpy": [*FRONT_RPY, *LEFT_RPY]}
PARAMS = {
    "qos_reliability": "reliable",
    "qos_depth": 100,
    "tracking_report_tentative": True,
    "odometry_topic": "/vehicle/odom",
    "odometry_max_age_s": 0.05,
    "diagnostics_period_s": 0.2,
    **MOUNTS,
}
OUTPUTS = ("segments",)
STATIC_SCENE = 3  # random_image(3): trucks (which may stand still), persons and riders
K = np.array([[100.0, 0.0, 64.0], [0.0, 100.0, 32.0], [0.0, 0.0, 1.0]])
SPEED = 0.5  # m/s, straight ahead


def _odometry_msg(stamp: tuple[int, int], forward: float):
    """nav_msgs/Odometry of a vehicle driving ``forward`` m/s along its body x."""
    from nav_msgs.msg import Odometry

    msg = Odometry(child_frame_id="base_link")
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp
    msg.header.frame_id = "odom"
    msg.twist.twist.linear.x = forward
    return msg


def _counts(h: NodeHarness, camera: str) -> dict[str, int]:
    (stream,) = [c for c in h.node.cameras if c.name == camera]
    return stream.stats.snapshot().counts


def _velocity(segment) -> tuple[float, float, float]:
    return (segment.velocity.x, segment.velocity.y, segment.velocity.z)


def test_one_odometry_gives_each_camera_its_own_motion(ros_context, tiny_checkpoint) -> None:
    """A parked scene seen by a front and a left camera of a vehicle driving ahead: the trucks
    each camera finds at rest move exactly as the world does in that camera's optical frame."""
    from nav_msgs.msg import Odometry
    from rcl_interfaces.msg import Log
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    from panoptic_depthlab_ros.ego_motion import CameraMount
    from panoptic_depthlab_ros.tracker import TrackerConfig

    h = NodeHarness(ros_context, tiny_checkpoint, cameras=CAMERAS, outputs=OUTPUTS, params=PARAMS)
    try:
        odom_pub = h.probe.create_publisher(
            Odometry, "/vehicle/odom", QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        )
        logs: list = []
        rosout = QoSProfile(
            depth=1000, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        h.probe.create_subscription(Log, "/rosout", logs.append, rosout)
        sinks = [c.outputs.publishers for c in h.node.cameras]
        h.wait_for(
            lambda: (
                odom_pub.get_subscription_count() >= 1
                and all(pub.get_subscription_count() >= 1 for c in CAMERAS for pub in h.camera_pubs[c])
                and all(sink["segments"].get_subscription_count() >= 1 for sink in sinks)
            ),
            15,
            "discovery",
        )
        # One subscription for the vehicle's odometry, whatever the number of cameras.
        assert odom_pub.get_subscription_count() == 1
        # Each camera's buffer has its own mount, in the order of `cameras`.
        front, left = h.node.cameras
        assert front.odometry is not None and left.odometry is not None and front.odometry is not left.odometry
        assert front.odometry.mount == CameraMount(xyz=FRONT_XYZ, rpy=FRONT_RPY)
        assert left.odometry.mount == CameraMount(xyz=LEFT_XYZ, rpy=LEFT_RPY)
        h.wait_for(lambda: any("camera(s), one model" in m.msg for m in list(logs)), 15, "the start-up log")
        (line,) = [m.msg for m in list(logs) if "camera(s), one model" in m.msg]
        assert "odometry: /vehicle/odom (nearest within 0.05 s of each image stamp; front camera mount xyz " in line
        assert f"left camera mount xyz {list(LEFT_XYZ)}, rpy {list(LEFT_RPY)})" in line

        for c in CAMERAS:
            h.camera_pubs[c][1].publish(camera_info_msg(K, width=128, height=64, frame_id=c))
        h.wait_for(lambda: all(_counts(h, c)["camera_info_received"] == 1 for c in CAMERAS), 15, "camera_info")
        bgr = random_image(STATIC_SCENE)
        names = tuple(f"{c}/segments" for c in CAMERAS)
        for n in range(6):  # 10 Hz; the odometry 10 ms after each image stamp
            odom_pub.publish(_odometry_msg((60, n * 100_000_000 + 10_000_000), SPEED))
            h.wait_for(lambda n=n: all(_counts(h, c)["odometry_received"] == n + 1 for c in CAMERAS), 15, "odometry")
            stamp = (60, n * 100_000_000)
            for c in CAMERAS:
                h.camera_pubs[c][0].publish(image_msg(bgr, stamp=stamp, frame_id=c))
            h.wait_for(lambda stamp=stamp: h.answered(stamp, names), 60, f"the frames stamped {stamp}")
            assert front.last_tracked.ego_motion and left.last_tracked.ego_motion

        # The same twist, at each camera: the front one moves along its optical z, the left one along its x.
        front_ego = CameraMount(xyz=FRONT_XYZ, rpy=FRONT_RPY).ego_motion((SPEED, 0.0, 0.0), (0.0, 0.0, 0.0))
        left_ego = CameraMount(xyz=LEFT_XYZ, rpy=LEFT_RPY).ego_motion((SPEED, 0.0, 0.0), (0.0, 0.0, 0.0))
        assert front.odometry.ego_at(60 * 10**9 + 500_000_000) == front_ego
        assert left.odometry.ego_at(60 * 10**9 + 500_000_000) == left_ego
        assert front_ego.linear == pytest.approx((0.0, 0.0, SPEED), abs=1e-12)
        assert left_ego.linear == pytest.approx((SPEED, 0.0, 0.0), abs=1e-12)
        for camera, ego in (("front", front_ego), ("left", left_ego)):
            world = tuple(-np.asarray(ego.linear))  # a parked thing, seen from this camera
            seg = h.answer(f"{camera}/segments", (60, 500_000_000))
            known = [s for s in seg.segments if s.is_thing and not any(map(math.isnan, _velocity(s)))]
            at_rest = [s for s in known if s.label in TrackerConfig.static_labels]
            assert len(at_rest) >= 2 and {s.label for s in at_rest} == {"truck"}, camera
            assert all(_velocity(s) == world for s in at_rest), camera  # exactly this camera's world
        for c in CAMERAS:
            counts = _counts(h, c)
            assert (counts["odometry_received"], counts["tracked_without_odometry"]) == (6, 0), c

        # A NaN twist: each camera counts it, one warning (the odometry is the vehicle's, not a camera's).
        odom_pub.publish(_odometry_msg((60, 590_000_000), math.nan))
        h.wait_for(lambda: all(_counts(h, c)["odometry_dropped_bad_input"] == 1 for c in CAMERAS), 15, "the NaN")
        h.wait_for(lambda: any("odometry twist is not finite" in m.msg for m in list(logs)), 15, "the warning")
        warnings = [m.msg for m in list(logs) if "odometry twist is not finite" in m.msg]
        assert warnings == [
            "dropped bad input: odometry twist is not finite (linear [nan, 0.0, 0.0], angular [0.0, 0.0, 0.0]): ignored"
        ]

        # /diagnostics: one status per camera, each with its own odometry counters.
        def statuses() -> dict[str, tuple[str, dict[str, str]]]:
            for array in reversed(h.messages("diagnostics")):
                found = {
                    s.name.rsplit("camera ", 1)[-1]: (s.message, {v.key: v.value for v in s.values})
                    for s in array.status
                }
                dropped = [values["odometry_dropped_bad_input"] for _, values in found.values()]
                if set(found) == set(CAMERAS) and dropped == ["1", "1"]:
                    return found
            return {}

        h.wait_for(lambda: statuses(), 15, "per-camera diagnostics")
        for c, (message, values) in statuses().items():
            assert values["odometry_received"] == "7" and values["tracked_without_odometry"] == "0", c
            assert "odometry ok" in message, c
    finally:
        h.close()


def _settings(**changes):
    from panoptic_depthlab_ros.ros.parameters import PARAMETERS, NodeSettings

    values = {p.name: p.default for p in PARAMETERS}
    values.update({k: tuple(v) if isinstance(v, list) else v for k, v in changes.items()})
    return NodeSettings.from_values(values)


def test_mounts_are_one_triple_per_camera() -> None:
    from panoptic_depthlab_ros.ego_motion import CameraMount

    two = _settings(cameras=list(CAMERAS), odometry_topic="/odom", **MOUNTS)
    assert two.camera_mounts() == (
        CameraMount(xyz=FRONT_XYZ, rpy=FRONT_RPY),
        CameraMount(xyz=LEFT_XYZ, rpy=LEFT_RPY),
    )
    buffers = two.odometry()
    assert buffers is not None and [b.mount for b in buffers] == list(two.camera_mounts())
    # One camera: 3 numbers, as always; no odometry without tracking.
    one = _settings(odometry_topic="/odom", camera_mount_xyz=list(FRONT_XYZ))
    assert one.camera_mounts() == (CameraMount(xyz=FRONT_XYZ),)
    assert _settings(odometry_topic="/odom", tracking=False, **MOUNTS | {"cameras": list(CAMERAS)}).odometry() is None
    # Without odometry_topic the mounts are unused: the default 3 numbers, or one triple per camera.
    assert _settings(cameras=list(CAMERAS)).odometry() is None
    assert _settings(cameras=list(CAMERAS), **MOUNTS).odometry() is None
    # camera_mounts() keeps the rule for a caller that skipped the check: one triple per camera.
    shared = _settings(cameras=list(CAMERAS)).replace({"odometry_topic": "/odom"})
    with pytest.raises(ValueError, match=r"camera_mount_xyz has 3 numbers, but odometry_topic with 2 cameras"):
        shared.camera_mounts()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (  # the default (one) mount, shared by two cameras
            {"odometry_topic": "/odom"},
            "camera_mount_xyz has 3 numbers, but odometry_topic with 2 cameras (front, left) needs 6: one [x, y, z] "
            "per camera, in the order of cameras (one mount shared by differently placed cameras is a mistake)",
        ),
        (
            {"odometry_topic": "/odom", "camera_mount_xyz": MOUNTS["camera_mount_xyz"]},
            "camera_mount_rpy has 3 numbers, but odometry_topic with 2 cameras (front, left) needs 6: one "
            "[roll, pitch, yaw] per camera, in the order of cameras (one mount shared",
        ),
        (
            {**MOUNTS, "odometry_topic": "/odom", "camera_mount_xyz": [*FRONT_XYZ, *LEFT_XYZ, 0.0, 0.0, 0.0]},
            "camera_mount_xyz has 9 numbers, but odometry_topic with 2 cameras (front, left) needs 6: one [x, y, z] "
            "per camera, in the order of cameras",
        ),
        (  # without odometry too: 3 numbers or one triple per camera
            {"camera_mount_rpy": [0.0, 0.0, 0.0, 0.0, 0.0]},
            "camera_mount_rpy must be 3 numbers or 6, one [roll, pitch, yaw] per camera in the order of cameras "
            "(front, left), got 5",
        ),
        (
            {**MOUNTS, "odometry_topic": "/odom", "camera_mount_rpy": [*FRONT_RPY, math.nan, 0.0, 0.0]},
            "camera_mount_rpy must be finite numbers, got [",
        ),
    ],
)
def test_mounts_of_the_wrong_length_are_refused_at_start(ros_context, tiny_checkpoint, changes, message) -> None:
    from rclpy.parameter import Parameter

    from panoptic_depthlab_ros.ros.node import PanopticDepthLabNode
    from panoptic_depthlab_ros.ros.parameters import ParameterError

    values = {"checkpoint": str(tiny_checkpoint), "device": "cpu", "cameras": list(CAMERAS), **changes}
    with pytest.raises(ParameterError) as info:
        PanopticDepthLabNode(
            context=ros_context, parameter_overrides=[Parameter(k, value=v) for k, v in values.items()]
        )
    assert message in str(info.value)
