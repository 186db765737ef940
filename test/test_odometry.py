"""The odometry nearest an image's stamp (panoptic_depthlab_ros/odometry.py), which the node and `bag` share."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore

from panoptic_depthlab_ros.ego_motion import CameraMount
from panoptic_depthlab_ros.errors import InputError
from panoptic_depthlab_ros.odometry import (
    DEFAULT_MAX_AGE_S,
    OdometryBuffer,
    OdometrySample,
    nearest_sample,
    odometry_sample,
    within,
)
from pdl_testing import rosbags_odometry

S = 1_000_000_000
T0 = 100 * S
TS = get_typestore(Stores.ROS2_JAZZY)


def sample(stamp_ns: int, forward: float = 1.0, yaw_rate: float = 0.0) -> OdometrySample:
    return OdometrySample(stamp_ns=stamp_ns, linear=(forward, 0.0, 0.0), angular=(0.0, 0.0, yaw_rate))


def odometry_msg(sec: int, nanosec: int, linear=(0.0, 0.0, 0.0), angular=(0.0, 0.0, 0.0)):
    """A rosbags nav_msgs/Odometry (the buffer reads rclpy's by the same field names)."""
    return rosbags_odometry(TS, sec * S + nanosec, linear, angular)


def test_odometry_sample_reads_stamp_and_twist() -> None:
    got = odometry_sample(odometry_msg(12, 345, linear=(8.5, -0.25, 0.0), angular=(0.0, 0.0, 0.125)))
    assert got == OdometrySample(stamp_ns=12 * S + 345, linear=(8.5, -0.25, 0.0), angular=(0.0, 0.0, 0.125))


@pytest.mark.parametrize("bad", [(math.nan, 0.0, 0.0), (0.0, math.inf, 0.0)])
def test_a_non_finite_twist_is_refused(bad) -> None:
    with pytest.raises(InputError, match=r"odometry twist is not finite \(linear \[") as info:
        odometry_sample(odometry_msg(1, 0, linear=bad))
    assert info.value.kind == "odometry"
    with pytest.raises(InputError, match="odometry twist is not finite"):
        odometry_sample(odometry_msg(1, 0, angular=bad))


def test_nearest_sample_before_after_and_ties() -> None:
    samples = [sample(T0), sample(T0 + 100_000_000), sample(T0 + 300_000_000)]
    assert nearest_sample([], T0) is None
    assert nearest_sample(samples, T0 - 5 * S) is samples[0]  # before every one
    assert nearest_sample(samples, T0 + 9 * S) is samples[2]  # after every one
    assert nearest_sample(samples, T0 + 140_000_000) is samples[1]  # 40 ms after beats 160 ms before
    assert nearest_sample(samples, T0 + 260_000_000) is samples[2]  # 40 ms before beats 160 ms after
    assert nearest_sample(samples, T0 + 200_000_000) is samples[1]  # as near as the next: the earlier
    assert nearest_sample(samples, T0 + 100_000_000) is samples[1]  # the very stamp


def test_within_max_age_is_inclusive_either_side() -> None:
    assert within(sample(T0 + 200_000_000), T0, 0.2) and within(sample(T0 - 200_000_000), T0, 0.2)
    assert not within(sample(T0 + 200_000_001), T0, 0.2) and not within(sample(T0 - 200_000_001), T0, 0.2)
    assert within(sample(T0), T0, 0.0) and not within(sample(T0 + 1), T0, 0.0)
    assert not within(None, T0, 0.2)


def test_buffer_gives_the_nearest_within_max_age_as_the_camera_motion() -> None:
    buffer = OdometryBuffer()  # the default mount: a camera at the body's origin looking along x
    assert buffer.max_age_s == DEFAULT_MAX_AGE_S == 0.2
    assert buffer.ego_at(T0) is None and buffer.why_none(T0) == "no odometry received yet"
    for i, forward in enumerate((4.0, 5.0, 6.0)):  # 20 Hz
        buffer.add(sample(T0 + i * 50_000_000, forward=forward, yaw_rate=0.25))
    ego = buffer.ego_at(T0 + 60_000_000)  # 10 ms after the second
    assert ego is not None
    np.testing.assert_allclose(ego.linear, (0.0, 0.0, 5.0), atol=1e-12)  # optical z is the body's x
    np.testing.assert_allclose(ego.angular, (0.0, -0.25, 0.0), atol=1e-12)  # a left turn: about optical -y
    assert ego == CameraMount().ego_motion((5.0, 0.0, 0.0), (0.0, 0.0, 0.25))
    assert buffer.nearest(T0 + 100_000_000 + 200_000_000) == sample(T0 + 100_000_000, 6.0, 0.25)  # 0.2 s: used
    assert buffer.ego_at(T0 + 100_000_000 + 200_000_001) is None  # just over
    assert buffer.why_none(T0 + 450_000_000) == "the nearest odometry is 0.350 s before it, over odometry_max_age_s 0.2"
    assert buffer.why_none(T0 - S) == "the nearest odometry is 1.000 s after it, over odometry_max_age_s 0.2"


def test_buffer_moves_the_twist_to_the_camera_by_its_mount() -> None:
    # A camera 1.5 m ahead of the body's origin, the vehicle turning left on the spot at 0.5 rad/s:
    # the camera moves at w x r = 0.75 m/s to the body's left, which is optical -x.
    buffer = OdometryBuffer(CameraMount(xyz=(1.5, 0.0, 1.2)), max_age_s=0.05)
    buffer.add(sample(T0, forward=0.0, yaw_rate=0.5))
    ego = buffer.ego_at(T0 + 50_000_000)
    assert ego is not None
    np.testing.assert_allclose(ego.linear, (-0.75, 0.0, 0.0), atol=1e-12)
    assert buffer.ego_at(T0 + 50_000_001) is None


def test_buffer_keeps_order_replaces_a_stamp_and_forgets_the_old() -> None:
    buffer = OdometryBuffer(max_age_s=0.2, keep_s=1.0, capacity=8)
    for stamp in (T0 + 300_000_000, T0, T0 + 100_000_000):  # out of order
        buffer.add(sample(stamp, forward=stamp / S))
    assert buffer.nearest(T0 + 40_000_000) == sample(T0, forward=100.0)
    buffer.add(sample(T0, forward=7.0))  # the same stamp again: the later one counts
    assert len(buffer) == 3 and buffer.nearest(T0) == sample(T0, forward=7.0)
    buffer.add(sample(T0 + 1_100_000_000))  # what is over keep_s (1 s) older than the newest goes: T0
    assert len(buffer) == 3 and buffer.nearest(T0) == sample(T0 + 100_000_000, forward=100.1)
    buffer.add(sample(T0 + 1_200_000_000))  # and then T0 + 0.1 s
    assert len(buffer) == 3 and buffer.nearest(T0) is None
    assert buffer.why_none(T0) == "the nearest odometry is 0.300 s after it, over odometry_max_age_s 0.2"
    for i in range(20):  # at most `capacity`, the newest kept
        buffer.add(sample(T0 + 1_200_000_000 + i * 10_000_000))
    assert len(buffer) == 8 and buffer.nearest(T0 + 1_200_000_000) == sample(T0 + 1_320_000_000)
    buffer.add(sample(T0 - 60 * S, forward=3.0))  # time went back a minute (a bag played again): afresh
    assert len(buffer) == 1 and buffer.nearest(T0 - 60 * S) == sample(T0 - 60 * S, forward=3.0)
    buffer.clear()
    assert len(buffer) == 0 and buffer.ego_at(T0 - 60 * S) is None


def test_keep_s_is_at_least_the_max_age() -> None:
    buffer = OdometryBuffer(max_age_s=3.0, keep_s=1.0)
    buffer.add(sample(T0))
    buffer.add(sample(T0 + 2_500_000_000))  # within 3 s of the newest: both kept
    assert len(buffer) == 2 and buffer.nearest(T0 - 400_000_000) == sample(T0)


def test_buffer_refuses_a_bad_max_age_or_capacity() -> None:
    for bad in (-0.1, math.nan, math.inf):
        with pytest.raises(ValueError, match="odometry max age must be a finite number >= 0 s"):
            OdometryBuffer(max_age_s=bad)
    with pytest.raises(ValueError, match="capacity must be at least 1"):
        OdometryBuffer(capacity=0)


def test_buffer_is_thread_safe() -> None:
    """A subscription thread adds while the worker looks up: no lost or broken state."""
    buffer = OdometryBuffer(max_age_s=0.01, keep_s=100.0, capacity=10_000)
    errors: list[BaseException] = []

    def add(offset: int) -> None:
        try:
            for i in range(1000):
                buffer.add(sample(T0 + (2 * i + offset) * 1_000_000))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        buffer.ego_at(T0 + 500_000_000)
    for t in threads:
        t.join()
    assert not errors and len(buffer) == 2000
    assert buffer.nearest(T0 + 1_234_400_000) == sample(T0 + 1_234_000_000)
