"""The camera's own motion (panoptic_depthlab_ros/ego_motion.py) and things at rest in the tracker.

Scenes: test/tracking_scenes.py (96x192, fx = fy = 96 px, 10 Hz). The camera drives forward
at 10 m/s; a parked car then approaches at exactly 10 m/s. Its depth reads only 90 % of each
metre it approaches by (monocular depth's scale drifts as a thing nears), so that the filter's
own velocity is 10 % slow. Looming is off: the scene's box heights follow the depth read.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from tracking_scenes import CAR, PERSON, Thing, render, segment_of

from panoptic_depthlab_ros.ego_motion import OPTICAL_RPY, CameraMount, EgoMotion, rpy_matrix
from panoptic_depthlab_ros.tracker import Tracker, TrackerConfig

DT = 0.1
T0_NS = 1_700_000_000_000_000_000
EGO = EgoMotion(linear=(0.0, 0.0, 10.0))


def drifting(z: float) -> float:
    """The depth read: exact at 30 m, 90 % of each metre nearer."""
    return 0.9 * z + 3.0


def drive(config: TrackerConfig, category: int, position, ego: EgoMotion | None, frames: int = 20):
    """One thing at ``position(t)`` (true metres), its depth drifting; the tracks frame by frame."""
    tracker = Tracker(config)
    out = []
    for f in range(frames):
        x, y, z = position(f * DT)
        zm = drifting(z)
        result = render([Thing(category, 1, (x * zm / z, y * zm / z, zm))])
        frame = tracker.update(result, stamp_ns=T0_NS + round(f * DT * 1e9), ego=ego)
        i = segment_of(result, category, 1)
        assert i is not None
        out.append((frame, frame.tracks[i]))
    return out


def parked(t: float) -> tuple[float, float, float]:
    return (-3.0, 1.0, 30.0 - 10.0 * t)


def test_mount_turns_a_body_twist_into_the_optical_frame() -> None:
    # Default mount: optical z = body x, optical x = -body y, optical y = -body z.
    np.testing.assert_allclose(rpy_matrix(OPTICAL_RPY).T @ [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], atol=1e-12)
    ego = CameraMount().ego_motion((10.0, 0.0, 0.0), (0.0, 0.0, 0.1))  # forward, turning left
    np.testing.assert_allclose(ego.linear, (0.0, 0.0, 10.0), atol=1e-12)
    np.testing.assert_allclose(ego.angular, (0.0, -0.1, 0.0), atol=1e-12)
    # Turning left, a point straight ahead drifts right: -w x p = (1, 0, 0) m/s at 10 m, plus -v.
    np.testing.assert_allclose(ego.static_velocity(np.array([[0.0, 0.0, 10.0]])), [[1.0, 0.0, -10.0]], atol=1e-12)
    # A camera 1.5 m ahead of the body's origin moves sideways by w x r = 0.15 m/s to the left (-x optical).
    ahead = CameraMount(xyz=(1.5, 0.0, 1.2)).ego_motion((10.0, 0.0, 0.0), (0.0, 0.0, 0.1))
    np.testing.assert_allclose(ahead.linear, (-0.15, 0.0, 10.0), atol=1e-12)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: EgoMotion(linear=(0.0, math.nan, 1.0)), "EgoMotion.linear must be 3 finite numbers"),
        (lambda: EgoMotion(linear=(0.0, 1.0)), "EgoMotion.linear must be 3 finite numbers"),  # type: ignore[arg-type]
        (lambda: EgoMotion(linear=(0, 0, 1), angular="abc"), "EgoMotion.angular must be 3"),  # type: ignore[arg-type]
        (lambda: CameraMount(rpy=(0.0, 0.0, math.inf)), "camera mount rpy must be 3 finite numbers"),
        (lambda: CameraMount().ego_motion((1.0, 0.0, math.nan), (0, 0, 0)), "odometry linear velocity"),
    ],
)
def test_bad_motion_is_refused_naming_the_field(make, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


def test_a_parked_car_is_at_rest_with_the_worlds_velocity_exactly() -> None:
    config = TrackerConfig(confirm_frames=1, size_noise_px=0.0)
    alone = drive(config, CAR, parked, None)
    fused = drive(config, CAR, parked, EGO)
    # Without the camera's motion the drifting depth puts its approach about 10 % too slow.
    assert alone[-1][1].velocity[2] == pytest.approx(-9.0, abs=1e-6) and not alone[-1][1].at_rest
    assert not any(frame.ego_motion for frame, _ in alone) and all(frame.ego_motion for frame, _ in fused)
    rest = [track.at_rest for _, track in fused]
    # At rest from the frame its velocity is known (std under velocity_max_std_mps), then throughout.
    known = [not math.isnan(track.velocity[2]) for _, track in alone]
    assert rest == known and known.index(True) == 6
    for _, track in fused[6:]:
        assert track.velocity == (-0.0, -0.0, -10.0)
        assert track.time_to_contact == pytest.approx(track.depth / 10.0, rel=1e-6)  # float32 depth map
    assert [t.track_id for _, t in fused] == [t.track_id for _, t in alone]  # association untouched


def test_moving_things_and_pedestrians_keep_their_own_velocity() -> None:
    config = TrackerConfig(confirm_frames=1, size_noise_px=0.0)

    def crossing(t: float) -> tuple[float, float, float]:  # a car crossing at 5 m/s
        return (-6.0 + 5.0 * t, 1.0, 30.0 - 10.0 * t)

    for category, position in ((CAR, crossing), (PERSON, parked)):  # a standing person: not a rest class
        alone, fused = drive(config, category, position, None), drive(config, category, position, EGO)
        assert not any(track.at_rest for _, track in fused)
        np.testing.assert_array_equal([t.velocity for _, t in fused], [t.velocity for _, t in alone])
    assert fused[-1][1].velocity[2] == pytest.approx(-9.0, abs=1e-6)  # the person's velocity stays the filter's
    with_people = TrackerConfig(confirm_frames=1, size_noise_px=0.0, static_labels=("person",))
    assert drive(with_people, PERSON, parked, EGO)[-1][1].at_rest


def test_a_slow_far_thing_within_the_gate_is_still_not_at_rest_over_the_speed_cap() -> None:
    # A car 60 m ahead driving away at 2 m/s: its depth noise model (0.1 + 0.03 z = 1.9 m) leaves
    # its velocity uncertain enough for a wide chi-square gate, but 2 m/s is over the cap.
    def slow(t: float) -> tuple[float, float, float]:
        return (-3.0, 1.0, 60.0 - 8.0 * t)

    wide = TrackerConfig(confirm_frames=1, size_noise_px=0.0, static_gate=1e6, velocity_max_std_mps=math.inf)
    assert not any(t.at_rest for _, t in drive(wide, CAR, slow, EGO))
    loose = TrackerConfig(
        confirm_frames=1, size_noise_px=0.0, static_gate=1e6, static_max_speed_mps=3.0, velocity_max_std_mps=math.inf
    )
    assert drive(loose, CAR, slow, EGO)[-1][1].at_rest
    off = TrackerConfig(confirm_frames=1, size_noise_px=0.0, static_gate=0.0)
    assert not any(t.at_rest for _, t in drive(off, CAR, parked, EGO))


def test_an_ego_that_is_not_an_ego_motion_is_refused_and_leaves_the_state() -> None:
    tracker = Tracker(TrackerConfig(confirm_frames=1))
    result = render([Thing(CAR, 1, (0.0, 1.0, 10.0))])
    tracker.update(result, stamp_ns=T0_NS)
    with pytest.raises(ValueError, match="ego must be an EgoMotion or None, got tuple"):
        tracker.update(result, stamp_ns=T0_NS + 100_000_000, ego=(0.0, 0.0, 10.0))  # type: ignore[arg-type]
    after = tracker.update(result, stamp_ns=T0_NS + 100_000_000)
    assert after.dt_s == pytest.approx(DT) and after.tracks[segment_of(result, CAR, 1)].track_age == 2
