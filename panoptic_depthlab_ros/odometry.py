"""Odometry for the tracker: the twist nearest an image's stamp, as the camera's motion.

The node and ``panoptic-depthlab bag`` take ``nav_msgs/Odometry`` beside the images. Each
message's twist (in its ``child_frame_id``, the vehicle's body) goes into an
:class:`OdometryBuffer` with its header stamp; for each image the buffer gives the twist
whose stamp is nearest the image's header stamp, if that one is within ``max_age_s`` of it,
turned into the camera's :class:`~.ego_motion.EgoMotion` by the camera's
:class:`~.ego_motion.CameraMount`. No twist that near: the frame is tracked without the
camera's motion (:meth:`OdometryBuffer.why_none` says why).

ROS-free: a message is read by its field names, so rclpy's and rosbags' messages both do.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .ego_motion import CameraMount, EgoMotion
from .errors import InputError
from .msg_conversions import stamp_ns

ODOMETRY_TYPE = "nav_msgs/msg/Odometry"
# The odometry message nearest an image's stamp is used if it is at most this far from it (s).
DEFAULT_MAX_AGE_S = 0.2
# Twists kept: those up to this many seconds older than the newest (at least max_age_s), so
# that a frame the node takes late still finds the odometry of its stamp; at most CAPACITY.
KEEP_S = 2.0
CAPACITY = 4096
_NS = 1_000_000_000

Vector = tuple[float, float, float]


@dataclass(frozen=True)
class OdometrySample:
    """One odometry message's twist: ``stamp_ns`` its header stamp, ``linear`` m/s, ``angular`` rad/s (body frame)."""

    stamp_ns: int
    linear: Vector
    angular: Vector


def odometry_sample(msg: Any) -> OdometrySample:
    """The twist and stamp of a ``nav_msgs/Odometry``; :class:`InputError` (kind ``odometry``) when not finite."""
    twist = msg.twist.twist
    linear = (float(twist.linear.x), float(twist.linear.y), float(twist.linear.z))
    angular = (float(twist.angular.x), float(twist.angular.y), float(twist.angular.z))
    if not all(math.isfinite(v) for v in (*linear, *angular)):
        raise InputError(
            f"odometry twist is not finite (linear {list(linear)}, angular {list(angular)}): ignored",
            kind="odometry",
        )
    return OdometrySample(stamp_ns=stamp_ns(msg.header), linear=linear, angular=angular)


def mount_numbers_fit(count: int, cameras: int, *, used: bool) -> bool:
    """Whether a mount setting of ``count`` numbers (an xyz or an rpy) fits ``cameras`` cameras.

    3 numbers per camera; one triple for several cameras only where the mounts are not used
    (no odometry): cameras placed differently move differently.
    """
    return count == 3 * cameras or (count == 3 and not used)


def mounts_from_numbers(xyz: Sequence[float], rpy: Sequence[float], cameras: int) -> tuple[CameraMount, ...]:
    """One :class:`CameraMount` per camera from 3 numbers per camera in ``xyz`` and in ``rpy``."""
    return tuple(
        CameraMount(xyz=tuple(xyz[3 * i : 3 * i + 3]), rpy=tuple(rpy[3 * i : 3 * i + 3]))  # type: ignore[arg-type]
        for i in range(cameras)
    )


def camera_mounts(
    mount: CameraMount | Sequence[CameraMount] | None, cameras: int, *, name: str = "camera_mount"
) -> tuple[CameraMount, ...]:
    """One mount per camera, in the cameras' order: ``mount`` as a sequence of ``cameras`` mounts.

    A single mount, or None (the default :class:`CameraMount`), only for one camera: cameras
    placed differently move differently, so several cameras sharing one mount is refused.
    Raises ``ValueError`` naming ``name``.
    """
    if mount is None or isinstance(mount, CameraMount):
        if cameras == 1:
            return (mount or CameraMount(),)
        given = "one mount" if mount is not None else "no mount"
        raise ValueError(
            f"{name}: {cameras} cameras need {cameras} camera mounts, one per camera in their order, got {given} "
            "(one mount shared by differently placed cameras is a mistake)"
        )
    mounts = tuple(mount)
    if len(mounts) != cameras or not all(isinstance(m, CameraMount) for m in mounts):
        raise ValueError(f"{name}: {cameras} camera(s) need {cameras} CameraMount, one per camera, got {mounts!r}")
    return mounts


def _stamp(sample: OdometrySample) -> int:
    return sample.stamp_ns


def nearest_sample(samples: Sequence[OdometrySample], stamp_ns: int) -> OdometrySample | None:
    """The sample of ``samples`` (in stamp order) whose stamp is nearest ``stamp_ns``; of two as near, the earlier."""
    if not samples:
        return None
    i = bisect.bisect_left(samples, stamp_ns, key=_stamp)
    candidates = samples[max(i - 1, 0) : i + 1]
    return min(candidates, key=lambda s: abs(s.stamp_ns - stamp_ns))  # min keeps the first of equals


def within(sample: OdometrySample | None, stamp_ns: int, max_age_s: float) -> bool:
    """Whether ``sample`` is at most ``max_age_s`` seconds from ``stamp_ns`` (before or after it)."""
    return sample is not None and abs(sample.stamp_ns - stamp_ns) <= round(max_age_s * _NS)


class OdometryBuffer:
    """The recent odometry of one vehicle, and the camera's motion at an image's stamp.

    :meth:`add` takes twists as they come (from a subscription callback: thread-safe); a
    twist stamped more than ``keep_s`` before the newest starts the buffer afresh (a bag
    played again, a clock reset). :meth:`ego_at` gives the camera's motion at a stamp, or
    None when no twist is within ``max_age_s`` of it.
    """

    def __init__(
        self,
        mount: CameraMount | None = None,
        max_age_s: float = DEFAULT_MAX_AGE_S,
        *,
        keep_s: float = KEEP_S,
        capacity: int = CAPACITY,
    ) -> None:
        if not (math.isfinite(max_age_s) and max_age_s >= 0):
            raise ValueError(f"odometry max age must be a finite number >= 0 s, got {max_age_s!r}")
        if capacity < 1:
            raise ValueError(f"odometry buffer capacity must be at least 1, got {capacity}")
        self.mount = mount or CameraMount()
        self.max_age_s = max_age_s
        self._keep_ns = round(max(keep_s, max_age_s) * _NS)
        self._capacity = capacity
        self._lock = threading.Lock()
        self._samples: list[OdometrySample] = []  # in stamp order

    def __len__(self) -> int:
        with self._lock:
            return len(self._samples)

    def add(self, sample: OdometrySample) -> None:
        """Keep ``sample`` (one of the same stamp is replaced); drop what is older than ``keep_s`` before the newest."""
        with self._lock:
            samples = self._samples
            if samples and sample.stamp_ns < samples[-1].stamp_ns - self._keep_ns:
                samples.clear()  # time went back: what is kept belongs to another run
            i = bisect.bisect_left(samples, sample.stamp_ns, key=_stamp)
            if i < len(samples) and samples[i].stamp_ns == sample.stamp_ns:
                samples[i] = sample
            else:
                samples.insert(i, sample)
            oldest = samples[-1].stamp_ns - self._keep_ns
            drop = max(bisect.bisect_left(samples, oldest, key=_stamp), len(samples) - self._capacity)
            del samples[:drop]

    def clear(self) -> None:
        """Forget every twist."""
        with self._lock:
            self._samples.clear()

    def nearest(self, stamp_ns: int) -> OdometrySample | None:
        """The twist nearest ``stamp_ns`` if within ``max_age_s`` of it, else None."""
        with self._lock:
            sample = nearest_sample(self._samples, stamp_ns)
        return sample if within(sample, stamp_ns, self.max_age_s) else None

    def ego_at(self, stamp_ns: int) -> EgoMotion | None:
        """The camera's motion at ``stamp_ns`` (the nearest twist within ``max_age_s``, through the mount), or None."""
        sample = self.nearest(stamp_ns)
        return None if sample is None else self.mount.ego_motion(sample.linear, sample.angular)

    def why_none(self, stamp_ns: int) -> str:
        """Why :meth:`ego_at` gives nothing at ``stamp_ns``: none received, or how far the nearest one is."""
        with self._lock:
            sample = nearest_sample(self._samples, stamp_ns)
        if sample is None:
            return "no odometry received yet"
        gap = (sample.stamp_ns - stamp_ns) / _NS
        side = "after" if gap > 0 else "before"
        return f"the nearest odometry is {abs(gap):.3f} s {side} it, over odometry_max_age_s {self.max_age_s:g}"
