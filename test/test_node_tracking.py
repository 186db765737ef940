"""Tracking in the node over real rclpy (loopback, test-unique domain) with the tiny model:
ids stable over frames, time from the image stamps (dropped frames widen dt, a jump back
resets with a warning), tracking off, tracks forgotten across the lifecycle, the camera's
motion from nav_msgs/Odometry (things at rest get the world's velocity; no odometry in time:
tracked without it, said in /diagnostics and a warning; a NaN twist ignored with a warning).

The same image sent again and again gives the same segments, which the tracker must
follow under one id each; how it tracks moving things is test_tracker.py's, and the
bundled model's moving things through the installed node test_demo.py's."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from node_utils import NodeHarness, camera_info_msg, image_msg, random_image

# Ids from a track's first frame (tracking_report_tentative), so that every frame shows them.
PARAMS = {"qos_reliability": "reliable", "qos_depth": 100, "tracking_report_tentative": True}
OUTPUTS = ("segments", "tracked_panoptic", "panoptic")
NS = 10**9


def _send(h: NodeHarness, bgr: np.ndarray, stamp: tuple[int, int]):
    """Publish a frame and wait for every output the node publishes for it; its segments."""
    h.image_pub.publish(image_msg(bgr, stamp=stamp))
    published = tuple(name for name in OUTPUTS if name in h.node.outputs.publishers)
    h.wait_for(lambda: h.answered(stamp, published), 60, f"the frame stamped {stamp}")
    return h.answer("segments", stamp)


def _things(msg) -> dict[int, tuple[int, int]]:
    """Panoptic id -> (track id, track age) of the thing segments."""
    return {s.id: (s.track_id, s.track_age) for s in msg.segments if s.is_thing}


def _odometry_msg(stamp: tuple[int, int], forward: float, yaw_rate: float = 0.0):
    """nav_msgs/Odometry of a vehicle driving ``forward`` m/s, turning ``yaw_rate`` rad/s (twist in its body frame)."""
    from nav_msgs.msg import Odometry

    msg = Odometry(child_frame_id="base_link")
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp
    msg.header.frame_id = "odom"
    msg.twist.twist.linear.x = forward
    msg.twist.twist.angular.z = yaw_rate
    return msg


def _rosout(h: NodeHarness) -> list:
    from rcl_interfaces.msg import Log
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    logs: list = []
    qos = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    h.probe.create_subscription(Log, "/rosout", logs.append, qos)
    return logs


@pytest.fixture
def harness(ros_context, tiny_checkpoint):
    h = NodeHarness(ros_context, tiny_checkpoint, params=PARAMS, outputs=OUTPUTS)
    try:
        yield h
    finally:
        h.close()


def test_ids_stay_then_a_time_jump_resets_with_a_warning(harness) -> None:
    from rcl_interfaces.msg import Log

    h = harness
    logs = _rosout(h)
    h.wait_connected()
    bgr = random_image(5)
    first = _things(_send(h, bgr, (20, 0)))
    assert first and all(track_id > 0 and age == 1 for track_id, age in first.values())
    ids = {pid: track_id for pid, (track_id, _) in first.items()}
    for n, sec in enumerate((20, 20, 20), start=2):  # 0.1 s apart: the same things, one id each, ageing
        got = _things(_send(h, bgr, (sec, n * 100_000_000)))
        assert got == {pid: (ids[pid], n) for pid in ids}
    seg = h.answer("segments", (20, 400_000_000))
    assert all(s.track_id == 0 and s.track_age == 0 for s in seg.segments if not s.is_thing)
    # Standing still: a velocity, once known, is 0 and never closing (time to contact +inf).
    for s in seg.segments:
        if s.is_thing and not math.isnan(s.velocity.z):
            assert abs(s.velocity.z) < 1e-6 and s.time_to_contact == math.inf
    assert not any(s.at_rest for s in seg.segments)  # still, but without odometry never reported at rest
    tracked = h.node.pipeline.last_tracked
    assert tracked is not None and tracked.dt_s == pytest.approx(0.1) and tracked.num_confirmed == len(ids)
    # The video panoptic image carries the track ids as instance ids.
    panoptic = np.frombuffer(h.answer("panoptic", (20, 400_000_000)).data, np.int32).reshape(64, 128)
    video = np.frombuffer(h.answer("tracked_panoptic", (20, 400_000_000)).data, np.int32).reshape(64, 128)
    for pid, track_id in ids.items():
        assert set(np.unique(video[panoptic == pid])) == {pid // 1000 * 1000 + track_id}

    # A stamp that goes back (a bag played again): every track is dropped, new ids, ages from 1.
    back = _things(_send(h, bgr, (19, 0)))
    assert set(back) == set(ids) and all(age == 1 for _, age in back.values())
    assert not {track_id for track_id, _ in back.values()} & set(ids.values())  # ids count on
    assert h.counts()["tracker_resets"] == 1
    h.wait_for(lambda: any(m.level == Log.WARN and "tracks reset" in m.msg for m in logs), 15, "the warning")
    warning = next(m.msg for m in logs if m.level == Log.WARN and "tracks reset" in m.msg)
    assert warning == "tracks reset: stamp went back by 1.400 s"


def test_dropped_frames_widen_dt_and_a_long_gap_resets(harness) -> None:
    h = harness
    h.wait_connected()
    bgr = random_image(6)
    base = _things(_send(h, bgr, (30, 0)))
    _send(h, bgr, (30, 100_000_000))
    assert h.node.pipeline.last_tracked.dt_s == pytest.approx(0.1)
    # Frames 0.2 .. 0.6 never arrive (dropped on the way): dt spans the gap, the tracks go on.
    got = _things(_send(h, bgr, (30, 700_000_000)))
    tracked = h.node.pipeline.last_tracked
    assert tracked.dt_s == pytest.approx(0.6) and tracked.reset_reason is None
    assert {pid: track_id for pid, (track_id, _) in got.items()} == {pid: t for pid, (t, _) in base.items()}
    assert all(age == 3 for _, age in got.values())
    # A pause over tracking_max_gap_s (1 s): a reset, named.
    _send(h, bgr, (32, 0))
    tracked = h.node.pipeline.last_tracked
    assert tracked.reset_reason == "gap of 1.300 s over max_gap_s 1" and math.isnan(tracked.dt_s)
    assert h.counts()["tracker_resets"] == 1


def test_tracking_off(ros_context, tiny_checkpoint) -> None:
    h = NodeHarness(ros_context, tiny_checkpoint, params={**PARAMS, "tracking": False}, outputs=OUTPUTS)
    try:
        assert "tracked_panoptic" not in h.node.outputs.publishers  # nothing to publish without tracks
        h.wait_connected()
        for n in range(2):
            seg = _send(h, random_image(5), (40, n * 100_000_000))
            assert seg.segments and all(s.track_id == 0 and s.track_age == 0 for s in seg.segments)
            assert all(math.isnan(s.time_to_contact) for s in seg.segments)
        assert h.node.pipeline.tracker is None
    finally:
        h.close()


def test_tracks_are_forgotten_on_deactivate_and_cleanup(ros_context, tiny_checkpoint) -> None:
    h = NodeHarness(ros_context, tiny_checkpoint, params={**PARAMS, "managed": True}, outputs=OUTPUTS)
    try:
        lc = h.lifecycle()
        assert lc.change("configure") and lc.change("activate")
        h.wait_connected()
        bgr = random_image(5)
        for n in range(2):
            ages = {age for _, age in _things(_send(h, bgr, (50, n * 100_000_000))).values()}
        assert ages == {2}
        assert lc.change("deactivate")
        assert h.node.pipeline.tracker is None  # the next activation starts afresh
        assert lc.change("activate")
        h.wait_connected()
        ages = {age for _, age in _things(_send(h, bgr, (50, 200_000_000))).values()}
        assert ages == {1}
        pipeline = h.node.pipeline
        assert pipeline.tracker is not None
        assert lc.change("deactivate") and lc.change("cleanup")
        assert h.node.pipeline is None and pipeline.tracker is None
        time.sleep(0.1)
    finally:
        h.close()


def test_tracking_settings_change_at_run_time_and_start_new_tracks(harness) -> None:
    from rclpy.parameter import Parameter

    h = harness
    h.wait_connected()
    bgr = random_image(7)
    first = _things(_send(h, bgr, (50, 0)))
    assert first and all(track_id > 0 and age == 1 for track_id, age in first.values())  # ids shown at once
    assert _things(_send(h, bgr, (50, 100_000_000))) == {pid: (t, 2) for pid, (t, _) in first.items()}
    result = h.node.set_parameters([Parameter("tracking_report_tentative", value=False)])[0]
    assert result.successful, result.reason
    # The next frame starts new tracks with the new settings: seen once, not confirmed, no id shown.
    again = _things(_send(h, bgr, (50, 200_000_000)))
    assert set(again) == set(first) and all(track == (0, 1) for track in again.values())
    assert h.node.pipeline.cameras[0].tracker.config.report_tentative is False
    # Tracking itself (which decides the publishers) and bad values are refused, naming why.
    refused = h.node.set_parameters([Parameter("tracking", value=False)])[0]
    assert not refused.successful and "read-only parameter: tracking" in refused.reason
    refused = h.node.set_parameters([Parameter("tracking_velocity_min_frames", value=1)])[0]
    assert not refused.successful and "tracking_velocity_min_frames" in refused.reason


# A random image whose tiny-model segments include trucks away from the image border (which may
# stand still), persons and riders (which may not); with this K their centroids are in metres.
STATIC_SCENE = 3
K = np.array([[100.0, 0.0, 64.0], [0.0, 100.0, 32.0], [0.0, 0.0, 1.0]])
ODOMETRY = {**PARAMS, "odometry_topic": "/vehicle/odom", "odometry_max_age_s": 0.05}


def _odometry_harness(ros_context, tiny_checkpoint, params: dict):
    """The node with odometry, a probe publisher of /vehicle/odom, and K given (3D centroids)."""
    from nav_msgs.msg import Odometry
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    h = NodeHarness(ros_context, tiny_checkpoint, params=params, outputs=OUTPUTS)
    odom_pub = h.probe.create_publisher(
        Odometry, "/vehicle/odom", QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    )
    h.wait_connected()
    h.wait_for(lambda: odom_pub.get_subscription_count() >= 1, 15, "the odometry subscription")
    h.info_pub.publish(camera_info_msg(K, width=128, height=64))
    h.wait_for(lambda: h.counts()["camera_info_received"] == 1, 15, "camera_info")
    return h, odom_pub


def _send_odometry(h: NodeHarness, odom_pub, msg, counter: str = "odometry_received") -> None:
    before = h.counts()[counter]
    odom_pub.publish(msg)
    stamp = (msg.header.stamp.sec, msg.header.stamp.nanosec)
    h.wait_for(lambda: h.counts()[counter] == before + 1, 15, f"the odometry stamped {stamp}")


def _velocity(segment) -> tuple[float, float, float]:
    return (segment.velocity.x, segment.velocity.y, segment.velocity.z)


def test_odometry_gives_things_at_rest_the_world_velocity(ros_context, tiny_checkpoint) -> None:
    """A parked scene seen from a camera driving at 0.5 m/s: the odometry nearest each image stamp
    reaches the tracker, which reports the things that may stand still at exactly -0.5 m/s in z."""
    from rcl_interfaces.msg import Log

    from panoptic_depthlab_ros.ego_motion import CameraMount
    from panoptic_depthlab_ros.tracker import TrackerConfig

    h, odom_pub = _odometry_harness(ros_context, tiny_checkpoint, ODOMETRY)
    try:
        logs = _rosout(h)
        bgr = random_image(STATIC_SCENE)
        for n in range(6):  # 10 Hz; per frame, odometry 30 ms before (slower) and 10 ms after (the nearest)
            stamp = (60, n * 100_000_000)
            _send_odometry(h, odom_pub, _odometry_msg((60, n * 100_000_000 + 10_000_000), forward=0.5))
            if n:
                _send_odometry(h, odom_pub, _odometry_msg((60, n * 100_000_000 - 30_000_000), forward=0.2))
            seg = _send(h, bgr, stamp)
            assert h.node.pipeline.last_tracked.ego_motion  # every frame had the camera's motion
        ego = CameraMount().ego_motion((0.5, 0.0, 0.0), (0.0, 0.0, 0.0))  # the nearest's twist, at the camera
        world = tuple(-np.asarray(ego.linear))  # a thing at rest, seen from the camera driving ahead
        assert world == pytest.approx((0.0, 0.0, -0.5), abs=1e-12)
        known = [s for s in seg.segments if s.is_thing and not any(map(math.isnan, _velocity(s)))]
        at_rest = [s for s in known if s.label in TrackerConfig.static_labels]
        assert len(at_rest) >= 2 and {s.label for s in at_rest} == {"truck"}
        assert all(_velocity(s) == world for s in at_rest)  # exactly the world's, not the measured 0
        assert all(s.at_rest for s in at_rest)  # and ~/segments says so
        assert all(10.0 < s.time_to_contact < 20.0 for s in at_rest)  # closing at 0.5 m/s from 5-10 m
        others = [s for s in known if s.label not in TrackerConfig.static_labels]
        assert others and all(abs(s.velocity.z) < 1e-6 for s in others)  # persons, riders: what the still image shows
        assert not any(s.at_rest for s in others) and not any(s.at_rest for s in seg.segments if not s.is_thing)
        counts = h.counts()
        assert (counts["odometry_received"], counts["tracked_without_odometry"]) == (11, 0)

        # A NaN twist: ignored with a warning, the node goes on with the odometry it has.
        _send_odometry(h, odom_pub, _odometry_msg((60, 590_000_000), forward=math.nan), "odometry_dropped_bad_input")
        _send_odometry(h, odom_pub, _odometry_msg((60, 610_000_000), forward=0.5))
        seg = _send(h, bgr, (60, 600_000_000))
        assert h.node.pipeline.last_tracked.ego_motion and h.counts()["odometry_dropped_bad_input"] == 1
        assert [_velocity(s) for s in seg.segments if s.label == "truck" and s.track_id][:2] == [world, world]
        h.wait_for(
            lambda: any(m.level == Log.WARN and "odometry twist is not finite" in m.msg for m in logs),
            15,
            "the warning",
        )
        warning = next(m.msg for m in logs if "odometry twist is not finite" in m.msg)
        assert warning == (
            "dropped bad input: odometry twist is not finite (linear [nan, 0.0, 0.0], angular [0.0, 0.0, 0.0]): ignored"
        )
        h.wait_for(
            lambda: any("odometry ok" in d.status[0].message for d in h.messages("diagnostics")), 15, "diagnostics"
        )
    finally:
        h.close()


def test_no_odometry_in_time_tracks_without_it_and_says_so(ros_context, tiny_checkpoint) -> None:
    from diagnostic_msgs.msg import DiagnosticStatus
    from rcl_interfaces.msg import Log

    h, odom_pub = _odometry_harness(ros_context, tiny_checkpoint, {**ODOMETRY, "diagnostics_period_s": 0.5})
    try:
        logs = _rosout(h)
        bgr = random_image(STATIC_SCENE)
        first = _things(_send(h, bgr, (70, 0)))  # no odometry yet at all
        tracked = h.node.pipeline.last_tracked
        assert not tracked.ego_motion and h.counts()["tracked_without_odometry"] == 1
        # Odometry, but 60 ms from the image stamp, over odometry_max_age_s (50 ms): tracked without it.
        _send_odometry(h, odom_pub, _odometry_msg((70, 40_000_000), forward=0.5))
        second = _things(_send(h, bgr, (70, 100_000_000)))
        assert not h.node.pipeline.last_tracked.ego_motion and h.counts()["tracked_without_odometry"] == 2
        assert {pid: t for pid, (t, _) in second.items()} == {pid: t for pid, (t, _) in first.items()}  # tracks go on
        assert all(age == 2 for _, age in second.values())
        h.wait_for(lambda: sum("tracked without the camera's motion" in m.msg for m in logs) >= 1, 15, "the warning")
        warning = next(m for m in logs if "tracked without the camera's motion" in m.msg)
        assert warning.level == Log.WARN
        assert warning.msg == "frame stamped 70.000 s tracked without the camera's motion: no odometry received yet"

        def report():
            for d in reversed(h.messages("diagnostics")):
                values = {kv.key: kv.value for kv in d.status[0].values}
                if values.get("tracked_without_odometry") == "2":
                    return d.status[0], values
            return None

        h.wait_for(lambda: report() is not None, 15, "a report of the frames without odometry")
        status, values = report()
        assert values["odometry_received"] == "1" and values["odometry_dropped_bad_input"] == "0"
        assert "no odometry in time" in status.message
        # The report that counted them is a warning naming the last reason.
        warned = [
            d.status[0] for d in h.messages("diagnostics") if "frames tracked without odometry" in d.status[0].message
        ]
        assert warned and all(s.level == DiagnosticStatus.WARN for s in warned)
        assert "the nearest odometry is 0.060 s before it, over odometry_max_age_s 0.05" in warned[-1].message
        # Within the max age again: the camera's motion is back.
        _send_odometry(h, odom_pub, _odometry_msg((70, 230_000_000), forward=0.5))
        _send(h, bgr, (70, 200_000_000))
        assert h.node.pipeline.last_tracked.ego_motion and h.counts()["tracked_without_odometry"] == 2
    finally:
        h.close()


def test_without_odometry_topic_nothing_is_subscribed(harness) -> None:
    h = harness
    assert h.node.cameras[0].odometry is None
    subs = dict(h.node.get_subscriber_names_and_types_by_node("panoptic_depthlab", "/"))
    assert "nav_msgs/msg/Odometry" not in {t for types in subs.values() for t in types}
    h.wait_connected()
    _send(h, random_image(5), (80, 0))
    assert not h.node.pipeline.last_tracked.ego_motion and h.counts()["tracked_without_odometry"] == 0
