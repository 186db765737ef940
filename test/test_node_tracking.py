"""Tracking in the node over real rclpy (loopback, test-unique domain) with the tiny model:
ids stable over frames, time from the image stamps (dropped frames widen dt, a jump back
resets with a warning), tracking off, tracks forgotten across the lifecycle.

The same image sent again and again gives the same segments, which the tracker must
follow under one id each; how it tracks moving things is test_tracker.py's, and the
bundled model's moving things through the installed node test_demo.py's."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from node_utils import NodeHarness, image_msg, random_image

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
