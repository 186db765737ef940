"""Thing segments tracked across frames: stable ids, 3D velocity and time to contact.

Each frame stands alone in :class:`~panoptic_depthlab_ros.result.PanopticDepthResult`; a
vehicle needs to know that the car in this frame is the car of the last one, how fast it
moves and whether it approaches. :class:`Tracker` takes the per-frame results with their
input stamps and returns, for every segment of the frame, a :class:`SegmentTrack`.

How (one frame):

1. Time comes only from the stamps: ``dt`` is the stamp difference, so dropped frames
   widen it. A stamp that does not advance (a looping bag) or a gap over
   ``max_gap_s`` drops every track; :attr:`TrackedFrame.reset_reason` says why.
2. Every track's motion filter is predicted to the new stamp: per axis a constant-velocity
   Kalman filter on the 3D centroid (x, y, z, metres, camera optical frame), on the
   bounding-box centre (u, v, pixels) and on the inverse box height (looming). The axes
   are independent, so the filter is vectorised over tracks and axes (no per-track Python).
   A segment's 3D point is its centroid moved along its ray to the segment's median depth
   (outline pixels that read the background pull a mean away). A segment cut by the image
   border (``border_px``) shows only part of its thing, whose centroid moves with the
   border: it measures the box centre but neither the 3D axes nor its height.
3. Thing segments are associated to tracks of the same class by a cost that adds
   ``1 - IoU`` (mask IoU on a subsampled grid against the track's mask of the last frame,
   shifted by the box motion its filter predicts; for a track unseen last frame the IoU of
   its motion-predicted box), the centroid distance to the prediction (3D, or in the image
   when either centroid is NaN, i.e. without intrinsics, or the segment is cut by the
   border), the depth difference, each normalised by a gate that grows with depth and
   with the time the track went unseen, and the area ratio. An axis whose velocity was too
   uncertain to report when the track was last matched is predicted where it was matched,
   not extrapolated. Pairs outside every gate are not allowed; the optimal assignment is
   SciPy's ``linear_sum_assignment``, in two rounds: the tracks seen last frame first, then
   the lost ones with what is left.
4. Matched tracks update their filter; unmatched tentative tracks die, unmatched confirmed
   ones become lost and can be re-identified for ``max_lost_frames`` frames; unmatched
   segments start tentative tracks, confirmed after ``confirm_frames`` hits.

How well it tracks on synthetic drives with the bundled model: ``docs/tracking.md``.

Velocity is the filter's, in m/s in the camera frame, i.e. relative to the (moving)
camera: a parked car approaches at the ego speed. It is NaN per axis until that axis has
``velocity_min_frames`` measurements and a standard deviation under
``velocity_max_std_mps``; without intrinsics x and y are never measured, so vx and vy stay
NaN while vz (from the segment depth) and the time to contact are still known. vz fuses
the depth's rate with looming (the rate of the inverse box height times the depth) where
the two agree. Time to contact is ``z / -vz``: depth over closing speed, +inf when not
closing, NaN unknown.

ROS-free and torch-free: numpy and SciPy only.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment

from panoptic_depthlab_ros.result import PanopticDepthResult, SegmentDepth

NAN = math.nan
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

_NS = 1_000_000_000
# Filter axes: 3D centroid (m, camera optical frame), box centre (px) and the inverse of the
# box height (1/px), which grows linearly with depth for a rigid thing: its rate is the looming.
_X, _Y, _Z, _U, _V, _S = range(6)
_AXES = 6
_UV = slice(_U, _V + 1)
# Looming is fused into vz only where it agrees with the depth's rate within this many sigmas.
_LOOMING_AGREE_SIGMA = 2.0
# Track states as stored (int8) and as reported.
_TENTATIVE, _CONFIRMED, _LOST = 0, 1, 2


class TrackState(str, enum.Enum):
    """Life cycle of a track."""

    TENTATIVE = "tentative"  # seen fewer than ``confirm_frames`` frames in a row
    CONFIRMED = "confirmed"  # seen in this frame, after confirmation
    LOST = "lost"  # confirmed, unseen in this frame; kept for re-identification


_STATE_NAMES = (TrackState.TENTATIVE, TrackState.CONFIRMED, TrackState.LOST)


@dataclass(frozen=True)
class TrackerConfig:
    """How segments are associated and how motion is filtered.

    Ages (frames are the frames given to :meth:`Tracker.update`):
        confirm_frames: frames in a row a new track must be seen to become confirmed
            (1: confirmed at once). A tentative track unseen once dies.
        report_tentative: give tentative tracks' segments their track id too. Off by
            default: a segment's id stays 0 until its track is confirmed, so that an id
            once given is one the tracker keeps following (a thing seen for a frame or
            two, or a fragment of one, would otherwise show an id that vanishes or
            passes on: on synthetic drives reporting them raised ID switches by 14-50 %,
            docs/tracking.md).
        max_lost_frames: frames a confirmed track may go unseen and still be
            re-identified (the re-identification window); then it dies.
        max_gap_s: a stamp gap over this many seconds resets every track (the scene
            may have changed entirely; a prediction over it means little).
        min_area_px: thing segments smaller than this (pixels) stay untracked (id 0).
        border_px: a segment whose box comes within this many pixels of the image border
            is cut by it: associated as usual, it measures no 3D motion (0: every
            segment measures).

    Association (a pair is allowed if same class, inside the depth gate and either
    overlapping by ``min_iou`` or inside the distance gate):
        min_iou: mask (or predicted box) IoU that alone admits a pair.
        gate_distance_m, gate_distance_rel: 3D distance gate, metres, is
            ``gate_distance_m + gate_distance_rel * z + gate_growth_mps * t_unseen``.
        gate_image: image-plane gate (without 3D centroids) as a multiple of the mean of
            the two boxes' half-diagonals, plus 3 standard deviations of the filter's
            predicted box centre (which grow while a track goes unseen).
        gate_depth_rel: depth gate, metres, is ``gate_depth_rel * z + gate_growth_mps * t_unseen``.
        gate_growth_mps: how fast (m/s) the gates widen while a track goes unseen
            (``t_unseen``: seconds since its last match, one ``dt`` for a track seen last frame).
        iou_weight, distance_weight, depth_weight: weights of ``1 - IoU``, of the
            gate-normalised distance and of the gate-normalised depth difference in the cost.
            Monocular depth jumps from frame to frame by more than neighbours differ, so by
            default depth only gates (depth_weight 0) and the overlap decides.
        mask_samples: about how many pixels of the panoptic map the mask IoU samples (a
            regular grid of stride ``floor(sqrt(H * W / mask_samples))``, at least 1);
            bounds the cost per frame whatever the image size.

    Motion filter (constant velocity per axis, white-noise acceleration):
        position_noise_m, depth_noise_rel: standard deviation of a centroid measurement
            on each axis, ``position_noise_m + depth_noise_rel * z`` metres (monocular
            depth errors grow with depth, and x, y scale with it).
        pixel_noise_px: standard deviation of a box-centre measurement.
        accel_noise_mps2: standard deviation of the unmodelled acceleration, m/s^2: larger
            follows braking and turns faster, smaller smooths more.
        pixel_accel_noise: the same for the box centre, px/s^2.
        velocity_min_frames: measurements an axis needs before its velocity is reported.
        velocity_max_std_mps: and the most uncertain (1 sigma, m/s) a reported velocity may be.
            This keeps the first, two-point estimates (sqrt(2) sigma / dt: ~10 m/s at 20 m
            and 10 Hz) out; with the default noise the filter's steady state is 1.1 m/s at
            10 m, 1.5 at 40 m and 1.7 at 60 m, so at 10 Hz a velocity is known from the
            4th frame at 10 m, the 6th at 20 m, the 9th at 40 m and the 13th at 60 m.
        min_closing_speed_mps: closing speeds below this count as not closing (time to
            contact +inf), so that a still object's noise does not read as a contact.
        smooth_depth: report the filter's depth (:attr:`SegmentTrack.depth`) instead of
            the segment's own ``depth_mean``; less flicker, some lag when an object brakes
            (figures: ``bench/README.md``, bench_tracker.py).
        size_noise_px: standard deviation (px) of a box-height measurement, for looming: the
            inverse box height of a rigid thing grows in proportion to its depth, so its rate
            times the depth is vz, free of the monocular depth's frame-to-frame noise; it is
            fused with the depth's own rate by inverse variance where the two agree within 2
            sigma (a box being covered shrinks while its thing approaches). 0: looming off.

    Association, continued:
        size_weight: weight of the area ratio in the cost, ``min(|ln(area / last area)| /
            ln 4, 1)``: a thing's area changes little from frame to frame, a fragment of it or
            a mask merged with a neighbour does not (0: off).
    """

    confirm_frames: int = 3
    report_tentative: bool = False
    max_lost_frames: int = 10
    max_gap_s: float = 1.0
    min_area_px: int = 1
    border_px: int = 2
    min_iou: float = 0.1
    gate_distance_m: float = 1.5
    gate_distance_rel: float = 0.1
    gate_image: float = 1.0
    gate_depth_rel: float = 0.4
    gate_growth_mps: float = 3.0
    iou_weight: float = 1.0
    distance_weight: float = 1.0
    depth_weight: float = 0.0
    mask_samples: int = 16384
    position_noise_m: float = 0.1
    depth_noise_rel: float = 0.03
    pixel_noise_px: float = 4.0
    accel_noise_mps2: float = 2.0
    pixel_accel_noise: float = 400.0
    velocity_min_frames: int = 3
    velocity_max_std_mps: float = 2.0
    min_closing_speed_mps: float = 0.1
    smooth_depth: bool = False
    size_noise_px: float = 2.0
    size_weight: float = 0.5

    def __post_init__(self) -> None:
        def need(ok: bool, name: str, what: str) -> None:
            if not ok:
                raise ValueError(f"TrackerConfig.{name} must be {what}, got {getattr(self, name)!r}")

        least = {"confirm_frames": 1, "max_lost_frames": 0, "min_area_px": 1, "mask_samples": 1, "border_px": 0}
        least["velocity_min_frames"] = 2  # a velocity needs two positions
        for name, low in least.items():
            value = getattr(self, name)
            need(isinstance(value, int) and not isinstance(value, bool) and value >= low, name, f"an integer >= {low}")
        for name in ("smooth_depth", "report_tentative"):
            need(isinstance(getattr(self, name), bool), name, "a bool")
        positive = ("max_gap_s", "gate_image", "gate_depth_rel", "pixel_noise_px", "velocity_max_std_mps")
        non_negative = (
            "min_iou",
            "gate_distance_m",
            "gate_distance_rel",
            "gate_growth_mps",
            "iou_weight",
            "distance_weight",
            "depth_weight",
            "position_noise_m",
            "depth_noise_rel",
            "accel_noise_mps2",
            "pixel_accel_noise",
            "min_closing_speed_mps",
            "size_noise_px",
            "size_weight",
        )
        for name in positive + non_negative:
            value = getattr(self, name)
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if name == "velocity_max_std_mps":  # +inf: report a velocity as soon as it has the frames
                ok = number and (value > 0) and not math.isnan(value)
            else:
                ok = number and math.isfinite(value) and (value > 0 if name in positive else value >= 0)
            what = "a finite number > 0" if name in positive else "a finite number >= 0"
            need(ok, name, "a number > 0 (inf allowed)" if name == "velocity_max_std_mps" else what)
        need(self.min_iou <= 1, "min_iou", "in [0, 1]")
        need(self.position_noise_m > 0 or self.depth_noise_rel > 0, "position_noise_m", "> 0 or depth_noise_rel > 0")
        need(self.gate_distance_m > 0 or self.gate_distance_rel > 0, "gate_distance_m", "> 0 or gate_distance_rel > 0")


@dataclass(frozen=True)
class SegmentTrack:
    """What tracking adds to one segment of a frame (aligned with ``result.segments``).

    track_id: stable over frames, 1 .. label_divisor - 1; 0 for stuff and untracked things,
        and for a tentative track's segment unless ``TrackerConfig.report_tentative``.
    track_age: frames this track has been seen, this one included (0 untracked); a
        tentative track's segment shows it with id 0 (seen, not confirmed yet).
    state: TENTATIVE or CONFIRMED for a tracked segment, None untracked.
    velocity: (vx, vy, vz) m/s in the camera optical frame, relative to the camera; NaN
        per axis until known.
    time_to_contact: seconds until the segment reaches the camera plane at its current
        closing speed (``z / -vz``); +inf when not closing, NaN unknown.
    depth: metres; the track's filtered depth with ``smooth_depth``, else the segment's
        ``depth_mean``.
    """

    track_id: int = 0
    track_age: int = 0
    state: TrackState | None = None
    velocity: tuple[float, float, float] = (NAN, NAN, NAN)
    time_to_contact: float = NAN
    depth: float = NAN


@dataclass(frozen=True)
class TrackedFrame:
    """One :meth:`Tracker.update`: per-segment tracks and what happened to time.

    tracks: one :class:`SegmentTrack` per ``result.segments`` entry, same order.
    stamp_ns: this frame's stamp.
    dt_s: seconds since the previous frame; NaN for the first frame and after a reset.
    reset_reason: why every track was dropped before this frame (a stamp that went
        back or repeated, or a gap over ``max_gap_s``); None when nothing was reset.
    num_tentative, num_confirmed, num_lost: tracks alive after this frame by state.
    """

    tracks: list[SegmentTrack]
    stamp_ns: int
    dt_s: float
    reset_reason: str | None
    num_tentative: int
    num_confirmed: int
    num_lost: int

    @property
    def reset(self) -> bool:
        """Whether the tracks were reset before this frame."""
        return self.reset_reason is not None


@dataclass
class _Detections:
    """The frame's trackable thing segments as arrays, and their subsampled masks."""

    seg_index: IntArray  # [D] index into result.segments
    category: IntArray  # [D]
    box: FloatArray  # [D, 4] x_min, y_min, x_max, y_max (inclusive pixels)
    meas: FloatArray  # [D, 5] x, y, z, u, v; NaN where unknown
    labels: npt.NDArray[np.int32]  # [h, w] detection index per grid sample, D elsewhere
    area: IntArray  # [D] grid samples per detection
    stride: int  # pixels between grid samples
    cut: BoolArray  # [D] cut by the image border: its box moves in the image, but measures no 3D motion
    px_area: FloatArray  # [D] pixels

    def motion(self, index: IntArray) -> FloatArray:
        """``[N, 6]`` measurements of detections ``index`` for the filters (3D and size axes NaN where cut)."""
        out = self.meas[index].copy()
        cut = self.cut[index]
        out[cut, :3] = NAN
        out[cut, _S] = NAN
        return out


class _Tracks:
    """Struct of arrays, one row per live track (rows are compacted when tracks die)."""

    def __init__(self) -> None:
        self.ids = np.zeros(0, np.int64)
        self.category = np.zeros(0, np.int64)
        self.state = np.zeros(0, np.int8)
        self.hits = np.zeros(0, np.int64)  # frames seen
        self.missed = np.zeros(0, np.int64)  # frames unseen in a row
        self.unseen_s = np.zeros(0, np.float64)  # seconds since the last match
        self.prev_det = np.zeros(0, np.int64)  # detection index in the previous frame, -1
        self.box = np.zeros((0, 4), np.float64)  # last matched box
        self.area = np.zeros(0, np.float64)  # last matched area, pixels
        self.vel_ok = np.zeros((0, 3), np.bool_)  # 3D velocity certain enough to extrapolate, as of the last match
        self.box_uv = np.zeros((0, 2), np.float64)  # filtered box centre when it was matched
        self.match_xyz = np.zeros((0, 3), np.float64)  # filtered 3D position when it was matched
        # Kalman filter per axis: position, velocity, covariance [[p00, p01], [p01, p11]],
        # measurements so far, seconds since the axis's last measurement.
        self.pos = np.zeros((0, _AXES), np.float64)
        self.vel = np.zeros((0, _AXES), np.float64)
        self.p00 = np.zeros((0, _AXES), np.float64)
        self.p01 = np.zeros((0, _AXES), np.float64)
        self.p11 = np.zeros((0, _AXES), np.float64)
        self.count = np.zeros((0, _AXES), np.int64)
        self.since = np.zeros((0, _AXES), np.float64)

    _FIELDS = (
        "ids",
        "category",
        "state",
        "hits",
        "missed",
        "unseen_s",
        "prev_det",
        "box",
        "area",
        "vel_ok",
        "box_uv",
        "match_xyz",
        "pos",
        "vel",
        "p00",
        "p01",
        "p11",
        "count",
        "since",
    )

    def __len__(self) -> int:
        return int(self.ids.size)

    def keep(self, mask: BoolArray) -> None:
        """Drop the rows where ``mask`` is False."""
        for name in self._FIELDS:
            setattr(self, name, getattr(self, name)[mask])

    def append(self, other: dict[str, np.ndarray]) -> None:
        """Add rows (every field given, same length)."""
        for name in self._FIELDS:
            setattr(self, name, np.concatenate((getattr(self, name), other[name])))


class Tracker:
    """Associates thing segments over frames and estimates their motion.

    Feed every frame, in stamp order, to :meth:`update`; its stamp is the input's (the
    image header's or the bag's), never the wall clock. Not thread-safe: one tracker per
    camera stream.
    """

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self._tracks = _Tracks()
        self._last_ns: int | None = None
        self._next_id = 1
        self._prev_labels: npt.NDArray[np.int32] | None = None
        self._prev_area: IntArray = np.zeros(0, np.int64)
        c = self.config
        accel = (c.accel_noise_mps2,) * 3 + (c.pixel_accel_noise,) * 2 + (0.0,)
        self._q = np.square(np.asarray(accel, np.float64))  # [6] acceleration spectral density (size: per track)

    # ------------------------------------------------------------------ public
    def reset(self) -> None:
        """Forget every track and the last stamp (track ids keep counting on)."""
        self._tracks = _Tracks()
        self._last_ns = None
        self._prev_labels = None
        self._prev_area = np.zeros(0, np.int64)

    def update(
        self, result: PanopticDepthResult, *, stamp_ns: int | None = None, stamp_s: float | None = None
    ) -> TrackedFrame:
        """Track one frame; pass its stamp as ``stamp_ns`` (int) or ``stamp_s`` (float).

        Raises ``ValueError`` for a missing or non-finite stamp or a result whose
        panoptic map is not ``[H, W]`` integer; the tracker's state is unchanged then.
        """
        ns = _stamp_to_ns(stamp_ns, stamp_s)
        panoptic = result.panoptic
        if not isinstance(panoptic, np.ndarray) or panoptic.ndim != 2 or panoptic.dtype.kind not in "iu":
            got = getattr(panoptic, "shape", type(panoptic).__name__)
            raise ValueError(f"result.panoptic must be an [H, W] integer array, got {got}")
        dets = self._detections(result)  # validates the segments before any state changes

        reason: str | None = None
        dt = NAN
        if self._last_ns is not None:
            delta = ns - self._last_ns
            if delta < 0:
                reason = f"stamp went back by {-delta / _NS:.3f} s"
            elif delta == 0:
                reason = "stamp repeated"
            elif delta > self.config.max_gap_s * _NS:
                reason = f"gap of {delta / _NS:.3f} s over max_gap_s {self.config.max_gap_s:g}"
            else:
                dt = delta / _NS
        if reason is not None:
            self.reset()
        self._last_ns = ns
        if math.isfinite(dt):
            self._predict(dt)

        rows, cols = self._associate(dets)
        det_track = self._apply(dets, rows, cols, result.label_divisor)
        return self._output(result, dets, det_track, ns, dt, reason)

    # ------------------------------------------------------------------ detections
    def _detections(self, result: PanopticDepthResult) -> _Detections:
        c = self.config
        rows = []
        for i, s in enumerate(result.segments):
            if not isinstance(s, SegmentDepth):
                raise ValueError(f"result.segments[{i}] is a {type(s).__name__}, not a SegmentDepth")
            if s.is_thing and s.area >= c.min_area_px:
                x, y, z = s.centroid
                rows.append(
                    (
                        i,
                        s.id,
                        s.category_id,
                        s.x_min,
                        s.y_min,
                        s.x_max,
                        s.y_max,
                        x,
                        y,
                        z,
                        s.depth_mean,
                        s.depth_median,
                        s.area,
                    )
                )
        table = np.array(rows, np.float64).reshape(-1, 13)
        seg_index = table[:, 0].astype(np.int64)
        ids = table[:, 1].astype(np.int64)
        if ids.size and ids.min() < 0:
            bad = int(seg_index[np.argmin(ids)])
            raise ValueError(f"result.segments[{bad}] is a thing with the negative id {int(ids.min())}")
        box = table[:, 3:7]
        # The segment's median depth stands for its distance: pixels on its outline often
        # read the background behind it, which pulls the mean (and the centroid, the mean
        # of the back-projected pixels) away. The centroid slides along its ray to it.
        depth, median = table[:, 10], table[:, 11]
        usable = np.isfinite(median) & (median > 0)
        depth = np.where(usable, median, depth)
        with np.errstate(divide="ignore", invalid="ignore"):
            along = np.where(usable & (table[:, 10] > 0), median / table[:, 10], 1.0)
        centroid = table[:, 7:10] * np.where(np.isfinite(along), along, 1.0)[:, None]
        has_3d = np.isfinite(centroid).all(axis=1)
        meas = np.full((len(rows), _AXES), NAN)
        meas[has_3d, :3] = centroid[has_3d]
        meas[:, _Z] = np.where(has_3d, centroid[:, 2], np.where(np.isfinite(depth) & (depth > 0), depth, NAN))
        meas[:, _U] = 0.5 * (box[:, 0] + box[:, 2])
        meas[:, _V] = 0.5 * (box[:, 1] + box[:, 3])
        meas[:, _S] = 1.0 / (box[:, 3] - box[:, 1] + 1) if c.size_noise_px > 0 else NAN
        h, w = result.panoptic.shape
        if c.border_px > 0:
            # A segment cut by the image border shows part of its thing: the part's centroid
            # moves with the border, not with the thing. It is associated as usual, and its
            # box centre still tells where the part goes in the image, but it measures no 3D
            # motion (the track's 3D filter coasts meanwhile).
            b = c.border_px
            cut = (box[:, 0] < b) | (box[:, 1] < b) | (box[:, 2] > w - 1 - b) | (box[:, 3] > h - 1 - b)
        else:
            cut = np.zeros(len(rows), bool)
        stride = max(1, math.isqrt(h * w // c.mask_samples))
        grid = result.panoptic[::stride, ::stride]
        n = ids.size
        labels = _relabel(grid, ids, np.arange(n), n)
        area = np.bincount(labels.ravel(), minlength=n + 1)[:n]
        return _Detections(
            seg_index=seg_index,
            category=table[:, 2].astype(np.int64),
            box=box,
            meas=meas,
            labels=labels,
            area=area,
            stride=stride,
            cut=cut,
            px_area=table[:, 12],
        )

    # ------------------------------------------------------------------ filter
    def _predict(self, dt: float) -> None:
        """Constant-velocity prediction of every track by ``dt`` seconds."""
        t = self._tracks
        moving = t.count >= 2  # axes with a velocity; one measurement holds its position
        q = np.broadcast_to(self._q, t.pos.shape).copy()
        # The inverse box height is depth times 1 / (f * H): its acceleration noise is the
        # depth's scaled by s / z (where the depth is not known yet, as at 10 m).
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(t.count[:, _Z] > 0, np.abs(t.pos[:, _Z]), 10.0)
            q[:, _S] = self._q[_X] * np.square(t.pos[:, _S] / np.maximum(z, 1.0))
        p00 = t.p00 + dt * (2.0 * t.p01 + dt * t.p11) + q * dt**3 / 3.0
        p01 = t.p01 + dt * t.p11 + q * dt**2 / 2.0
        p11 = t.p11 + q * dt
        t.pos = np.where(moving, t.pos + t.vel * dt, t.pos)
        t.p00 = np.where(moving, p00, t.p00)
        t.p01 = np.where(moving, p01, t.p01)
        t.p11 = np.where(moving, p11, t.p11)
        t.since = t.since + dt
        t.unseen_s = t.unseen_s + dt

    def _measurement_variance(self, depth: FloatArray, inv_height: FloatArray) -> FloatArray:
        """``[N, 6]`` variance of a measurement of each axis at ``depth`` [N] metres and 1 / box height [N]."""
        c = self.config
        sigma = np.empty((depth.size, _AXES))
        sigma[:, :3] = (c.position_noise_m + c.depth_noise_rel * np.abs(depth))[:, None]
        sigma[:, _UV] = c.pixel_noise_px
        sigma[:, _S] = c.size_noise_px * np.square(inv_height)
        return np.square(sigma)

    def _correct(self, rows: IntArray, meas: FloatArray) -> None:
        """Kalman update of tracks ``rows`` with ``meas`` [N, 5] (NaN: axis not measured)."""
        t = self._tracks
        valid = np.isfinite(meas)
        count = t.count[rows]
        # The noise scales with the track's predicted depth, not the measured one: weighting
        # by the measurement would favour the nearer (smaller-variance) draws, a bias to near.
        r = self._measurement_variance(
            np.where(count[:, _Z] > 0, t.pos[rows, _Z], meas[:, _Z]),
            np.where(count[:, _S] > 0, t.pos[rows, _S], meas[:, _S]),
        )
        pos, vel = t.pos[rows], t.vel[rows]
        p00, p01, p11, since = t.p00[rows], t.p01[rows], t.p11[rows], t.since[rows]
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
        t.pos[rows], t.vel[rows] = new_pos, new_vel
        t.p00[rows], t.p01[rows], t.p11[rows] = new_p00, new_p01, new_p11
        t.count[rows] = count + valid
        t.since[rows] = np.where(valid, 0.0, since)

    # ------------------------------------------------------------------ association
    def _associate(self, dets: _Detections) -> tuple[IntArray, IntArray]:
        """Optimal track -> detection pairs (row indices, detection indices) inside the gates."""
        t, c = self._tracks, self.config
        n_t, n_d = len(t), dets.seg_index.size
        if n_t == 0 or n_d == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        same = t.category[:, None] == dets.category[None, :]  # [T, D]
        if not same.any():
            return np.zeros(0, np.int64), np.zeros(0, np.int64)

        overlap = self._box_iou(dets)
        mask_iou = self._mask_iou(dets)
        if mask_iou is not None:
            seen = t.prev_det >= 0
            overlap[seen] = mask_iou[seen]

        growth = c.gate_growth_mps * t.unseen_s  # [T]
        # Where a track's velocity was still too uncertain to report at its last match (a
        # two-point start on noisy depth can read 20 m/s), extrapolating by it throws the
        # prediction far off while the track goes unseen: such axes are predicted where they
        # were last matched. A velocity known then keeps carrying the prediction however long
        # the track goes unseen (the gates widen meanwhile).
        trusted = t.vel_ok
        xyz_pred = np.where(trusted, t.pos[:, :3], t.match_xyz)  # [T, 3]
        z_pred = np.where(t.count[:, _Z] > 0, xyz_pred[:, 2], NAN)  # [T]
        z_det = np.where(dets.cut, NAN, dets.meas[:, _Z])  # [D] a cut part's depth is not its thing's
        # Depth: difference against a gate that grows with depth and unseen time.
        z_ref = np.fmax(z_pred[:, None], z_det[None, :])  # [T, D] the farther known depth
        with np.errstate(invalid="ignore"):
            depth_gate = c.gate_depth_rel * z_ref + growth[:, None]
            depth_term = np.abs(z_det[None, :] - z_pred[:, None]) / depth_gate
        depth_known = np.isfinite(depth_term)
        depth_term = np.where(depth_known, depth_term, 0.5)
        # Distance: 3D where both centroids exist, else box centres in the image.
        track_3d = np.all(t.count[:, :3] > 0, axis=1)
        det_3d = np.all(np.isfinite(dets.meas[:, :3]), axis=1) & ~dets.cut
        diff = xyz_pred[:, None, :] - dets.meas[None, :, :3]
        with np.errstate(invalid="ignore"):
            dist_3d = np.sqrt(np.einsum("tdk,tdk->td", diff, diff))
            gate_3d = c.gate_distance_m + c.gate_distance_rel * z_ref + growth[:, None]
        duv = t.pos[:, None, _UV] - dets.meas[None, :, _UV]
        dist_px = np.sqrt(np.einsum("tdk,tdk->td", duv, duv))
        half_diag_t = 0.5 * np.hypot(t.box[:, 2] - t.box[:, 0] + 1, t.box[:, 3] - t.box[:, 1] + 1)
        half_diag_d = 0.5 * np.hypot(dets.box[:, 2] - dets.box[:, 0] + 1, dets.box[:, 3] - dets.box[:, 1] + 1)
        # The box centre's predicted uncertainty widens the gate while a track goes unseen.
        spread_px = 3.0 * np.sqrt(t.p00[:, _U] + t.p00[:, _V])
        gate_px = c.gate_image * 0.5 * (half_diag_t[:, None] + half_diag_d[None, :]) + spread_px[:, None]
        use_3d = track_3d[:, None] & det_3d[None, :]
        distance_term = np.where(use_3d, dist_3d / gate_3d, dist_px / gate_px)

        allowed = same & (depth_term <= 1.0) & ((overlap >= c.min_iou) & (overlap > 0) | (distance_term <= 1.0))
        cost = (
            c.iou_weight * (1.0 - overlap)
            + c.distance_weight * np.minimum(distance_term, 1.0)
            + c.depth_weight * np.minimum(depth_term, 1.0)
        )
        if c.size_weight > 0:
            # A thing's area changes little from frame to frame; a mask that merged with a
            # neighbour or kept a fragment of its thing does not (a factor of 4 costs the most).
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = np.abs(np.log(np.maximum(dets.px_area[None, :], 1.0) / np.maximum(t.area[:, None], 1.0)))
            cost = cost + c.size_weight * np.minimum(ratio / math.log(4.0), 1.0)
        # A forbidden pair costs what the costliest allowed pair can: assigning it means
        # "both unmatched". So the assignment never trades one good pair for two poor ones
        # just to match more (what a huge forbidden cost would do), yet takes every allowed
        # pair that does not compete.
        cost = np.where(allowed, cost, c.iou_weight + c.distance_weight + c.depth_weight + c.size_weight)
        # Two rounds: the tracks seen last frame first, then the lost ones with what is left.
        # A lost track is compared by its predicted box, which overlaps more generously than
        # a mask; in one round it would take a thing from the track that follows it.
        active = t.prev_det >= 0
        r1, k1 = _assign(cost, allowed & active[:, None])
        rest = np.ones(n_d, bool)
        rest[k1] = False
        r2, k2 = _assign(cost, allowed & ~active[:, None] & rest[None, :])
        return np.concatenate((r1, r2)), np.concatenate((k1, k2))

    def _box_iou(self, dets: _Detections) -> FloatArray:
        """``[T, D]`` IoU of each track's motion-predicted box with each detection's box."""
        t = self._tracks
        shift = t.pos[:, _UV] - t.box_uv  # [T, 2] predicted centre motion since the last match
        with np.errstate(invalid="ignore", divide="ignore"):
            scale = np.where(t.count[:, _Z] > 0, t.match_xyz[:, 2] / t.pos[:, _Z], 1.0)  # nearer looks larger
        scale = np.clip(np.where(np.isfinite(scale), scale, 1.0), 0.5, 2.0)
        cu = 0.5 * (t.box[:, 0] + t.box[:, 2]) + shift[:, 0]
        cv = 0.5 * (t.box[:, 1] + t.box[:, 3]) + shift[:, 1]
        hw = 0.5 * (t.box[:, 2] - t.box[:, 0] + 1) * scale
        hh = 0.5 * (t.box[:, 3] - t.box[:, 1] + 1) * scale
        tb = np.stack((cu - hw, cv - hh, cu + hw, cv + hh), axis=1)  # [T, 4] continuous edges
        db = dets.box + np.array([0.0, 0.0, 1.0, 1.0])  # inclusive pixels -> continuous edges
        iw = np.clip(np.minimum(tb[:, None, 2], db[None, :, 2]) - np.maximum(tb[:, None, 0], db[None, :, 0]), 0, None)
        ih = np.clip(np.minimum(tb[:, None, 3], db[None, :, 3]) - np.maximum(tb[:, None, 1], db[None, :, 1]), 0, None)
        inter = iw * ih
        area_t = (tb[:, 2] - tb[:, 0]) * (tb[:, 3] - tb[:, 1])
        area_d = (db[:, 2] - db[:, 0]) * (db[:, 3] - db[:, 1])
        union = area_t[:, None] + area_d[None, :] - inter
        return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)

    def _mask_iou(self, dets: _Detections) -> FloatArray | None:
        """``[T, D]`` mask IoU of each track's last mask, moved by its predicted image motion, with this frame's.

        On the subsampled grid; rows of tracks unseen last frame are 0. Each track's mask of
        the last frame is shifted by the motion its box-centre filter predicts since then,
        so that a thing that moves more than its own width per frame (a pedestrian passing
        near, a sign as the camera drives by) overlaps itself and not its neighbour.
        """
        prev = self._prev_labels
        t = self._tracks
        if prev is None or prev.shape != dets.labels.shape:
            return None
        n_prev, n, n_t = self._prev_area.size, dets.area.size, len(t)
        track_of = np.full(n_prev + 1, -1, np.int64)  # previous detection -> track row
        seen = np.flatnonzero(t.prev_det >= 0)
        track_of[t.prev_det[seen]] = seen
        flat = prev.ravel()
        sample = np.flatnonzero(track_of[flat] >= 0)  # grid samples of a tracked previous mask
        row = track_of[flat[sample]]
        h, w = prev.shape
        shift = (t.pos[:, _UV] - t.box_uv) / dets.stride  # [T, 2] predicted (du, dv) in grid cells
        shift = np.where(np.isfinite(shift), shift, 0.0)
        r = np.rint(sample // w + shift[row, 1]).astype(np.int64)
        c = np.rint(sample % w + shift[row, 0]).astype(np.int64)
        inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
        label = np.full(sample.size, n, np.int64)
        label[inside] = dets.labels[r[inside], c[inside]]
        inter = np.bincount(row * (n + 1) + label, minlength=n_t * (n + 1)).reshape(n_t, n + 1)[:, :n]
        prev_area = np.zeros(n_t, np.int64)
        prev_area[seen] = self._prev_area[t.prev_det[seen]]
        union = prev_area[:, None] + dets.area[None, :] - inter
        return np.where(union > 0, inter / np.maximum(union, 1), 0.0)

    # ------------------------------------------------------------------ bookkeeping
    def _apply(self, dets: _Detections, rows: IntArray, cols: IntArray, label_divisor: int) -> IntArray:
        """Update matched tracks, age the others, start new ones; ``[D]`` track row per detection."""
        t, c = self._tracks, self.config
        n_d = dets.seg_index.size
        if rows.size:
            self._correct(rows, dets.motion(cols))
            t.hits[rows] += 1
            t.missed[rows] = 0
            t.unseen_s[rows] = 0.0
            t.box[rows] = dets.box[cols]
            t.area[rows] = dets.px_area[cols]
            t.box_uv[rows] = t.pos[rows, _UV]
            t.match_xyz[rows] = t.pos[rows, :3]
            t.vel_ok[rows] = np.sqrt(t.p11[rows, :3]) <= c.velocity_max_std_mps
            state = t.state[rows]
            t.state[rows] = np.where(
                (state == _LOST) | ((state == _TENTATIVE) & (t.hits[rows] >= c.confirm_frames)), _CONFIRMED, state
            )
        matched = np.zeros(len(t), bool)
        matched[rows] = True
        t.prev_det = np.full(len(t), -1, np.int64)
        t.prev_det[rows] = cols
        unmatched = ~matched
        t.missed[unmatched] += 1
        t.state[unmatched & (t.state == _CONFIRMED)] = _LOST
        alive = matched | ((t.state == _LOST) & (t.missed <= c.max_lost_frames))
        det_track = np.full(n_d, -1, np.int64)
        det_track[cols] = rows
        if not alive.all():
            new_row = np.cumsum(alive) - 1
            det_track = np.where(det_track >= 0, new_row[np.maximum(det_track, 0)], -1)
            t.keep(alive)

        born = np.flatnonzero(det_track < 0)
        if born.size:
            ids = self._new_ids(born.size, label_divisor)
            ok = ids > 0  # 0: every id in use (label_divisor - 1 live tracks); stays untracked
            born, ids = born[ok], ids[ok]
            start = len(t)
            self._birth(dets, born, ids)
            det_track[born] = start + np.arange(born.size)
        self._prev_labels = dets.labels
        self._prev_area = dets.area
        return det_track

    def _new_ids(self, n: int, label_divisor: int) -> IntArray:
        """``n`` ids in 1 .. label_divisor - 1, counting on and skipping live ones (0: none left)."""
        top = max(1, int(label_divisor) - 1)  # the video panoptic id must stay under the divisor
        live = set(self._tracks.ids.tolist())
        out = np.zeros(n, np.int64)
        for i in range(n):
            for _ in range(top):
                candidate = (self._next_id - 1) % top + 1
                self._next_id = candidate % top + 1
                if candidate not in live:
                    out[i] = candidate
                    live.add(candidate)
                    break
        return out

    def _birth(self, dets: _Detections, born: IntArray, ids: IntArray) -> None:
        n = born.size
        confirmed = self.config.confirm_frames <= 1
        zeros = np.zeros((n, _AXES))
        rows: dict[str, np.ndarray] = {
            "ids": ids,
            "category": dets.category[born],
            "state": np.full(n, _CONFIRMED if confirmed else _TENTATIVE, np.int8),
            "hits": np.zeros(n, np.int64),
            "missed": np.zeros(n, np.int64),
            "unseen_s": np.zeros(n),
            "prev_det": born.astype(np.int64),
            "box": dets.box[born],
            "area": dets.px_area[born],
            "vel_ok": np.zeros((n, 3), np.bool_),
            "box_uv": np.zeros((n, 2)),
            "match_xyz": np.zeros((n, 3)),
            "pos": zeros,
            "vel": zeros.copy(),
            "p00": zeros.copy(),
            "p01": zeros.copy(),
            "p11": zeros.copy(),
            "count": np.zeros((n, _AXES), np.int64),
            "since": zeros.copy(),
        }
        start = len(self._tracks)
        self._tracks.append(rows)
        new = start + np.arange(n)
        self._correct(new, dets.motion(born))
        t = self._tracks
        # A track born cut by the border starts in 3D where its part is, with no 3D measurement yet.
        cut = dets.cut[born]
        part = dets.meas[born[cut], :3]
        t.pos[new[cut], :3] = np.where(np.isfinite(part), part, 0.0)
        t.hits[new] = 1
        t.box_uv[new] = t.pos[new, _UV]
        t.match_xyz[new] = t.pos[new, :3]

    def _fuse_looming(self, rows: IntArray, z: FloatArray, vel: FloatArray, var: FloatArray, enough: BoolArray) -> None:
        """Fuse looming into vz (``vel[:, 2]`` and ``var[:, 2]``, in place) where it agrees with the depth's rate.

        A rigid thing's inverse box height is proportional to its depth, so
        ``z * (ds/dt) / s`` is vz, free of the frame-to-frame noise and scale drift of
        monocular depth. The two estimates are averaged by inverse variance. A box that
        shrinks while its thing approaches is being covered (or its mask lost a part), not
        receding: looming that disagrees with the depth's rate by more than
        ``_LOOMING_AGREE_SIGMA`` standard deviations is left out.
        """
        t = self._tracks
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = z / t.pos[rows, _S]
            vz_s = scale * t.vel[rows, _S]
            var_s = np.square(scale) * t.p11[rows, _S]
            agree = np.abs(vz_s - vel[:, 2]) <= _LOOMING_AGREE_SIGMA * np.sqrt(var_s + var[:, 2])
        use = enough[:, 2] & (t.count[rows, _S] >= self.config.velocity_min_frames) & (var_s > 0) & agree
        if use.any():
            w_z, w_s = 1.0 / var[use, 2], 1.0 / var_s[use]
            var[use, 2] = 1.0 / (w_z + w_s)
            vel[use, 2] = (w_z * vel[use, 2] + w_s * vz_s[use]) * var[use, 2]

    # ------------------------------------------------------------------ output
    def _output(
        self,
        result: PanopticDepthResult,
        dets: _Detections,
        det_track: IntArray,
        ns: int,
        dt: float,
        reason: str | None,
    ) -> TrackedFrame:
        t, c = self._tracks, self.config
        out = [SegmentTrack(depth=s.depth_mean) for s in result.segments]
        tracked = det_track >= 0
        rows = det_track[tracked]
        if rows.size:
            z = np.where(t.count[rows, _Z] > 0, t.pos[rows, _Z], NAN)
            vel3, var3 = t.vel[rows, :3].copy(), t.p11[rows, :3].copy()
            enough = t.count[rows, :3] >= c.velocity_min_frames
            self._fuse_looming(rows, z, vel3, var3, enough)
            known = enough & (np.sqrt(var3) <= c.velocity_max_std_mps)
            vel = np.where(known, vel3, NAN)
            closing = -vel[:, 2]
            with np.errstate(divide="ignore", invalid="ignore"):
                ttc = np.where(closing > c.min_closing_speed_mps, z / closing, np.inf)
            ttc = np.where(np.isnan(closing) | np.isnan(z), NAN, ttc)
            ids, hits, state = t.ids[rows].tolist(), t.hits[rows].tolist(), t.state[rows].tolist()
            vel_list, ttc_list, z_list = vel.tolist(), ttc.tolist(), z.tolist()
            for j, i in enumerate(dets.seg_index[tracked].tolist()):
                depth = z_list[j] if c.smooth_depth and not math.isnan(z_list[j]) else out[i].depth
                shown = c.report_tentative or state[j] != _TENTATIVE
                out[i] = SegmentTrack(
                    track_id=ids[j] if shown else 0,
                    track_age=hits[j],
                    state=_STATE_NAMES[state[j]],
                    velocity=(vel_list[j][0], vel_list[j][1], vel_list[j][2]),
                    time_to_contact=ttc_list[j],
                    depth=depth,
                )
        counts = np.bincount(t.state, minlength=3)
        return TrackedFrame(
            tracks=out,
            stamp_ns=ns,
            dt_s=dt,
            reset_reason=reason,
            num_tentative=int(counts[_TENTATIVE]),
            num_confirmed=int(counts[_CONFIRMED]),
            num_lost=int(counts[_LOST]),
        )


def _assign(cost: FloatArray, allowed: BoolArray) -> tuple[IntArray, IntArray]:
    """Optimal (row, column) pairs of ``cost`` among the ``allowed`` ones."""
    # Only rows and columns with an allowed pair take part (usually far fewer).
    live_r, live_c = np.flatnonzero(allowed.any(axis=1)), np.flatnonzero(allowed.any(axis=0))
    if live_r.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    r, k = linear_sum_assignment(cost[np.ix_(live_r, live_c)])
    r, k = live_r[r], live_c[k]
    keep = allowed[r, k]
    return r[keep].astype(np.int64), k[keep].astype(np.int64)


def _stamp_to_ns(stamp_ns: int | None, stamp_s: float | None) -> int:
    """The stamp in integer nanoseconds; ``ValueError`` unless exactly one valid stamp is given."""
    if (stamp_ns is None) == (stamp_s is None):
        raise ValueError("Tracker.update needs exactly one of stamp_ns (int) or stamp_s (float)")
    if stamp_ns is not None:
        if isinstance(stamp_ns, bool) or not isinstance(stamp_ns, (int, np.integer)):
            raise ValueError(f"stamp_ns must be an integer number of nanoseconds, got {stamp_ns!r}")
        return int(stamp_ns)
    assert stamp_s is not None
    if isinstance(stamp_s, bool) or not isinstance(stamp_s, (int, float, np.floating, np.integer)):
        raise ValueError(f"stamp_s must be a number of seconds, got {stamp_s!r}")
    if not math.isfinite(stamp_s):
        raise ValueError(f"stamp_s must be finite, got {stamp_s!r}")
    return round(float(stamp_s) * _NS)


def track_panoptic(result: PanopticDepthResult, tracks: Sequence[SegmentTrack] | None = None) -> np.ndarray:
    """``[H, W]`` int32 panoptic map with track ids as instance ids (video panoptic convention).

    Each segment's pixels become ``category_id * label_divisor + track_id``: tracked things
    carry their track id, stuff and untracked things instance 0; void stays -1, as do
    pixels whose id is not among ``result.segments``.  ``tracks``: the
    :attr:`TrackedFrame.tracks` of this result; None: the track ids its segments carry
    (a result of :meth:`~.result.PanopticDepthResult.with_tracks`).
    """
    segments = result.segments
    if tracks is not None and len(tracks) != len(segments):
        raise ValueError(
            f"{len(tracks)} tracks for {len(segments)} segments: pass the TrackedFrame.tracks of this result"
        )
    panoptic = result.panoptic
    if not segments:
        return np.full(panoptic.shape, -1, np.int32)
    ids = np.fromiter((s.id for s in segments), np.int64, len(segments))
    track_ids = (s.track_id for s in segments) if tracks is None else (t.track_id for t in tracks)
    value = np.fromiter(
        (s.category_id * result.label_divisor + t for s, t in zip(segments, track_ids, strict=True)),
        np.int64,
        len(segments),
    )
    return _relabel(panoptic, ids, value, -1)


def _relabel(panoptic: np.ndarray, ids: IntArray, values: np.ndarray, fill: int) -> npt.NDArray[np.int32]:
    """``panoptic`` with each of ``ids`` (>= 0) replaced by its ``values`` entry, all else by ``fill``.

    One table lookup: the table spans -1 .. max(ids) + 1 and the map is clipped into it, so
    void, ids absent from ``ids`` and stray large values all land on ``fill``.
    """
    top = int(ids.max()) if ids.size else -1
    lut = np.full(top + 3, fill, np.int32)  # index: id + 1 (void -1 -> 0); last: anything above
    lut[ids + 1] = values
    return lut[np.clip(panoptic, -1, top + 1) + 1]
