"""The camera's own motion, as odometry tells it: what lets the tracker know a thing stands still.

Relative to a moving camera a parked car approaches at the camera's speed. Its velocity
measured from monocular depth is a few per cent off (the depth's scale drifts as the car
nears); with the camera's motion known, a thing whose measured motion is that of the world
(``-v - w x p``) is reported with exactly that motion (:mod:`.track_motion`).

:class:`EgoMotion` is the camera's linear (m/s) and angular (rad/s) velocity in its optical
frame (x right, y down, z forward). :class:`CameraMount` turns an odometry twist, given in the
vehicle's body frame (``nav_msgs/Odometry``: the twist is in ``child_frame_id``), into it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

# The optical frame of a camera looking along the body's +x (REP 103 body, REP 105 optical):
# optical z = body x, optical x = -body y, optical y = -body z.
OPTICAL_RPY = (-math.pi / 2, 0.0, -math.pi / 2)


def _vector(value: Sequence[float], name: str) -> tuple[float, float, float]:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be 3 numbers, got {value!r}") from None
    if len(out) != 3 or not all(math.isfinite(v) for v in out):
        raise ValueError(f"{name} must be 3 finite numbers, got {value!r}")
    return out


@dataclass(frozen=True)
class EgoMotion:
    """The camera's velocity in its optical frame: ``linear`` m/s, ``angular`` rad/s."""

    linear: tuple[float, float, float]
    angular: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "linear", _vector(self.linear, "EgoMotion.linear"))
        object.__setattr__(self, "angular", _vector(self.angular, "EgoMotion.angular"))

    def static_velocity(self, points: FloatArray) -> FloatArray:
        """``[N, 3]`` velocity, relative to the camera, of world-fixed points at ``points`` [N, 3] (m)."""
        v = np.asarray(self.linear, np.float64)
        w = np.asarray(self.angular, np.float64)
        return -(v + np.cross(w, np.asarray(points, np.float64)))


def rpy_matrix(rpy: Sequence[float]) -> FloatArray:
    """Rotation of fixed-axis roll, pitch, yaw (ROS / URDF order: ``Rz(yaw) Ry(pitch) Rx(roll)``)."""
    r, p, y = rpy
    cr, sr, cp, sp, cy, sy = math.cos(r), math.sin(r), math.cos(p), math.sin(p), math.cos(y), math.sin(y)
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]], np.float64)
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]], np.float64)
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]], np.float64)
    return rz @ ry @ rx


@dataclass(frozen=True)
class CameraMount:
    """Where the camera's optical frame sits in the odometry's body frame: ``xyz`` m, ``rpy`` rad.

    The default is a camera at the body's origin looking forward (the usual
    ``camera_link`` to ``camera_optical_frame`` rotation). It is the transform
    ``child_frame_id -> camera optical frame`` that tf would give.
    """

    xyz: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rpy: tuple[float, float, float] = OPTICAL_RPY

    def __post_init__(self) -> None:
        object.__setattr__(self, "xyz", _vector(self.xyz, "camera mount xyz"))
        object.__setattr__(self, "rpy", _vector(self.rpy, "camera mount rpy"))

    def ego_motion(self, linear: Sequence[float], angular: Sequence[float]) -> EgoMotion:
        """The camera's motion from the body's twist (``linear`` m/s, ``angular`` rad/s, body frame).

        The camera's origin moves at ``v + w x r`` (``r``: its offset from the body's origin);
        both vectors are then expressed in the optical frame.
        """
        v = np.asarray(_vector(linear, "odometry linear velocity"))
        w = np.asarray(_vector(angular, "odometry angular velocity"))
        to_optical = rpy_matrix(self.rpy).T
        v_cam = to_optical @ (v + np.cross(w, np.asarray(self.xyz)))
        w_cam = to_optical @ w
        return EgoMotion(linear=tuple(v_cam.tolist()), angular=tuple(w_cam.tolist()))
