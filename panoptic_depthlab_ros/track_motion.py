"""The tracks' motion: per axis a constant-velocity Kalman filter, vectorised over tracks and axes.

Axes: the 3D centroid (x, y, z: metres, camera optical frame), the box centre (u, v:
pixels) and the inverse box height (s: 1/px), which grows in proportion to the depth of a
rigid thing, so that its rate times the depth is vz free of the monocular depth's
frame-to-frame noise (looming). The axes are independent: each is a two-state filter
(position, velocity) with white-noise acceleration, and every track's and axis's filter
updates at once as arrays, no per-track Python.

Velocity is reported per axis once the axis has ``velocity_min_frames`` measurements and a
standard deviation under ``velocity_max_std_mps``; vz fuses the depth's rate with looming
where the two agree. Time to contact is ``z / -vz``: +inf when not closing, NaN unknown.
Given the camera's own motion, a thing whose velocity is that of the world is reported at
rest, with the world's velocity (:meth:`MotionFilters.estimate`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from panoptic_depthlab_ros.ego_motion import EgoMotion
from panoptic_depthlab_ros.track_config import TrackerConfig

NAN = float("nan")
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

# Filter axes: 3D centroid (m, camera optical frame), box centre (px) and the inverse of the
# box height (1/px), which grows linearly with depth for a rigid thing: its rate is the looming.
X, Y, Z, U, V, S = range(6)
AXES = 6
UV = slice(U, V + 1)
# Looming is fused into vz only where it agrees with the depth's rate within this many sigmas.
LOOMING_AGREE_SIGMA = 2.0


@dataclass(frozen=True)
class MotionEstimate:
    """What the filters report for some tracks (arrays aligned with the rows asked for).

    depth: [N] filtered depth, metres (NaN before the first depth measurement).
    velocity: [N, 3] vx, vy, vz m/s, NaN per axis until known.
    time_to_contact: [N] seconds (+inf not closing, NaN unknown).
    at_rest: [N] still in the world (only with the camera's motion): velocity is the world's.
    """

    depth: FloatArray
    velocity: FloatArray
    time_to_contact: FloatArray
    at_rest: BoolArray


class MotionFilters:
    """One row of per-axis filters per track; rows are added and dropped with the track table's.

    Per row and axis: position, velocity, covariance ``[[p00, p01], [p01, p11]]``, the
    measurements so far (``count``) and the seconds since the axis's last measurement.
    """

    _FIELDS = ("pos", "vel", "p00", "p01", "p11", "count", "since")

    def __init__(self, config: TrackerConfig) -> None:
        self.config = config
        accel = (config.accel_noise_mps2,) * 3 + (config.pixel_accel_noise,) * 2 + (0.0,)
        self.q = np.square(np.asarray(accel, np.float64))  # [6] acceleration spectral density (size: per track)
        self.pos = np.zeros((0, AXES), np.float64)
        self.vel = np.zeros((0, AXES), np.float64)
        self.p00 = np.zeros((0, AXES), np.float64)
        self.p01 = np.zeros((0, AXES), np.float64)
        self.p11 = np.zeros((0, AXES), np.float64)
        self.count = np.zeros((0, AXES), np.int64)
        self.since = np.zeros((0, AXES), np.float64)

    def __len__(self) -> int:
        return int(self.pos.shape[0])

    def keep(self, mask: BoolArray) -> None:
        """Drop the rows where ``mask`` is False."""
        for name in self._FIELDS:
            setattr(self, name, getattr(self, name)[mask])

    def add(self, n: int) -> IntArray:
        """Append ``n`` rows with no measurement yet; their row indices."""
        start = len(self)
        for name in self._FIELDS:
            value = getattr(self, name)
            setattr(self, name, np.concatenate((value, np.zeros((n, AXES), value.dtype))))
        return start + np.arange(n)

    def predict(self, dt: float) -> None:
        """Constant-velocity prediction of every row by ``dt`` seconds."""
        moving = self.count >= 2  # axes with a velocity; one measurement holds its position
        q = np.broadcast_to(self.q, self.pos.shape).copy()
        # The inverse box height is depth times 1 / (f * H): its acceleration noise is the
        # depth's scaled by s / z (where the depth is not known yet, as at 10 m).
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(self.count[:, Z] > 0, np.abs(self.pos[:, Z]), 10.0)
            q[:, S] = self.q[X] * np.square(self.pos[:, S] / np.maximum(z, 1.0))
        p00 = self.p00 + dt * (2.0 * self.p01 + dt * self.p11) + q * dt**3 / 3.0
        p01 = self.p01 + dt * self.p11 + q * dt**2 / 2.0
        p11 = self.p11 + q * dt
        self.pos = np.where(moving, self.pos + self.vel * dt, self.pos)
        self.p00 = np.where(moving, p00, self.p00)
        self.p01 = np.where(moving, p01, self.p01)
        self.p11 = np.where(moving, p11, self.p11)
        self.since = self.since + dt

    def measurement_variance(self, depth: FloatArray, inv_height: FloatArray) -> FloatArray:
        """``[N, 6]`` variance of a measurement of each axis at ``depth`` [N] metres and 1 / box height [N]."""
        c = self.config
        sigma = np.empty((depth.size, AXES))
        sigma[:, :3] = (c.position_noise_m + c.depth_noise_rel * np.abs(depth))[:, None]
        sigma[:, UV] = c.pixel_noise_px
        sigma[:, S] = c.size_noise_px * np.square(inv_height)
        return np.square(sigma)

    def correct(self, rows: IntArray, meas: FloatArray) -> None:
        """Kalman update of ``rows`` with ``meas`` [N, 6] (NaN: axis not measured)."""
        valid = np.isfinite(meas)
        count = self.count[rows]
        # The noise scales with the track's predicted depth, not the measured one: weighting
        # by the measurement would favour the nearer (smaller-variance) draws, a bias to near.
        r = self.measurement_variance(
            np.where(count[:, Z] > 0, self.pos[rows, Z], meas[:, Z]),
            np.where(count[:, S] > 0, self.pos[rows, S], meas[:, S]),
        )
        pos, vel = self.pos[rows], self.vel[rows]
        p00, p01, p11, since = self.p00[rows], self.p01[rows], self.p11[rows], self.since[rows]
        m = np.where(valid, meas, 0.0)
        r = np.where(valid, r, 1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            # Second measurement: two-point start (exact velocity for exact positions).
            span = np.where(since > 0, since, 1.0)
            v2 = (m - pos) / span
            # Later measurements: the usual update.
            s = p00 + r
            k0, k1 = p00 / s, p01 / s
            innov = m - pos
        first, second, later = valid & (count == 0), valid & (count == 1), valid & (count >= 2)
        new_pos = np.where(later, pos + k0 * innov, np.where(first | second, m, pos))
        new_vel = np.where(later, vel + k1 * innov, np.where(second, v2, np.where(first, 0.0, vel)))
        new_p00 = np.where(later, (1.0 - k0) * p00, np.where(first | second, r, p00))
        new_p01 = np.where(later, (1.0 - k0) * p01, np.where(second, r / span, np.where(first, 0.0, p01)))
        new_p11 = np.where(later, p11 - k1 * p01, np.where(second, (p00 + r) / span**2, np.where(first, 0.0, p11)))
        self.pos[rows], self.vel[rows] = new_pos, new_vel
        self.p00[rows], self.p01[rows], self.p11[rows] = new_p00, new_p01, new_p11
        self.count[rows] = count + valid
        self.since[rows] = np.where(valid, 0.0, since)

    def velocity_certain(self, rows: IntArray) -> BoolArray:
        """``[N, 3]`` whether each 3D axis's velocity is certain enough to report (and extrapolate)."""
        return np.sqrt(self.p11[rows, :3]) <= self.config.velocity_max_std_mps

    def estimate(
        self, rows: IntArray, ego: EgoMotion | None = None, may_rest: BoolArray | None = None
    ) -> MotionEstimate:
        """Depth, velocity and time to contact of ``rows`` as reported (unknown: NaN).

        ``ego``: the camera's motion at this frame; with it, the rows where ``may_rest`` [N]
        is True and whose velocity, once known, is the world's are reported at rest
        (:meth:`_at_rest`). Only a known velocity is tested: an early or far one is uncertain
        enough to pass for the world's while the thing moves (an oncoming car at 90 m).
        """
        c = self.config
        z = np.where(self.count[rows, Z] > 0, self.pos[rows, Z], NAN)
        vel3, var3 = self.vel[rows, :3].copy(), self.p11[rows, :3].copy()
        enough = self.count[rows, :3] >= c.velocity_min_frames
        self._fuse_looming(rows, z, vel3, var3, enough)
        known = enough & (np.sqrt(var3) <= c.velocity_max_std_mps)
        vel = np.where(known, vel3, NAN)
        at_rest = np.zeros(rows.size, np.bool_)
        if ego is not None and c.static_gate > 0 and may_rest is not None:
            world = ego.static_velocity(self.pos[rows, :3])
            at_rest = self._at_rest(vel3, var3, world, known.all(axis=1) & may_rest)
            vel = np.where(at_rest[:, None], world, vel)
        closing = -vel[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            ttc = np.where(closing > c.min_closing_speed_mps, z / closing, np.inf)
        ttc = np.where(np.isnan(closing) | np.isnan(z), NAN, ttc)
        return MotionEstimate(depth=z, velocity=vel, time_to_contact=ttc, at_rest=at_rest)

    def _at_rest(self, vel: FloatArray, var: FloatArray, world: FloatArray, eligible: BoolArray) -> BoolArray:
        """``[N]`` whether each filtered velocity ``vel`` [N, 3] (variances ``var``) is the world's ``world`` [N, 3].

        Both a chi-square test (is the difference within the filter's own uncertainty?) and
        a cap on the difference: the test alone would call still a far thing walking by, whose
        velocity is uncertain enough to pass it.
        """
        c = self.config
        diff = vel - world
        with np.errstate(divide="ignore", invalid="ignore"):
            chi2 = np.sum(np.square(diff) / var, axis=1)
        speed = np.linalg.norm(diff, axis=1)
        return eligible & (chi2 <= c.static_gate) & (speed <= c.static_max_speed_mps)

    def _fuse_looming(self, rows: IntArray, z: FloatArray, vel: FloatArray, var: FloatArray, enough: BoolArray) -> None:
        """Fuse looming into vz (``vel[:, 2]`` and ``var[:, 2]``, in place) where it agrees with the depth's rate.

        A rigid thing's inverse box height is proportional to its depth, so
        ``z * (ds/dt) / s`` is vz, free of the frame-to-frame noise and scale drift of
        monocular depth. The two estimates are averaged by inverse variance. A box that
        shrinks while its thing approaches is being covered (or its mask lost a part), not
        receding: looming that disagrees with the depth's rate by more than
        :data:`LOOMING_AGREE_SIGMA` standard deviations is left out.
        """
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = z / self.pos[rows, S]
            vz_s = scale * self.vel[rows, S]
            var_s = np.square(scale) * self.p11[rows, S]
            agree = np.abs(vz_s - vel[:, 2]) <= LOOMING_AGREE_SIGMA * np.sqrt(var_s + var[:, 2])
        use = enough[:, 2] & (self.count[rows, S] >= self.config.velocity_min_frames) & (var_s > 0) & agree
        if use.any():
            w_z, w_s = 1.0 / var[use, 2], 1.0 / var_s[use]
            var[use, 2] = 1.0 / (w_z + w_s)
            vel[use, 2] = (w_z * vel[use, 2] + w_s * vz_s[use]) * var[use, 2]
