"""Thing segments tracked across frames: stable ids, 3D velocity and time to contact.

Each frame stands alone in :class:`~panoptic_depthlab_ros.result.PanopticDepthResult`; a
vehicle needs to know that the car in this frame is the car of the last one, how fast it
moves and whether it approaches. :class:`Tracker` takes the per-frame results with their
input stamps and returns, for every segment of the frame, a :class:`SegmentTrack`.

How (one frame):

1. Time comes only from the stamps: ``dt`` is the stamp difference, so dropped frames
   widen it. A stamp that does not advance (a looping bag) or a gap over
   ``max_gap_s`` drops every track; :attr:`TrackedFrame.reset_reason` says why.
2. Every track's motion filters are predicted to the new stamp (:mod:`.track_motion`:
   constant-velocity Kalman filters on the 3D centroid, the box centre and the inverse
   box height, vectorised over tracks and axes).
3. The frame's thing segments become detections (a segment's 3D point is its centroid
   moved along its ray to its median depth; one cut by the image border measures only
   its box centre) and are associated to tracks of the same class by gated costs and an
   optimal assignment (:mod:`.track_association`).
4. Matched tracks update their filters; unmatched tentative tracks die, unmatched
   confirmed ones become lost and can be re-identified for ``max_lost_frames`` frames;
   unmatched segments start tentative tracks, confirmed after ``confirm_frames`` hits
   (the live tracks: :mod:`.track_table`; the settings: :class:`TrackerConfig`).

How well it tracks on synthetic drives with the bundled model: ``docs/tracking.md``.

Velocity is the filter's, in m/s in the camera frame, i.e. relative to the (moving)
camera: a parked car approaches at the ego speed. It is NaN per axis until that axis has
``velocity_min_frames`` measurements and a standard deviation under
``velocity_max_std_mps``; without intrinsics x and y are never measured, so vx and vy stay
NaN while vz (from the segment depth) and the time to contact are still known. vz fuses
the depth's rate with looming (the rate of the inverse box height times the depth) where
the two agree. Time to contact is ``z / -vz``: depth over closing speed, +inf when not
closing, NaN unknown. Given the camera's own motion (odometry, ``ego``), a parked car's
velocity is known exactly: a thing whose filtered velocity is the world's is reported at
rest, with the world's velocity (:mod:`.ego_motion`).

ROS-free and torch-free: numpy, SciPy and the package's image check.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from panoptic_depthlab_ros.ego_motion import EgoMotion
from panoptic_depthlab_ros.result import PanopticDepthResult, relabel_ids
from panoptic_depthlab_ros.track_association import Detections, associate, find_detections
from panoptic_depthlab_ros.track_config import TrackerConfig
from panoptic_depthlab_ros.track_motion import NAN, UV, IntArray
from panoptic_depthlab_ros.track_table import APPEARANCE_SIZE, CONFIRMED, LOST, TENTATIVE, TrackTable

__all__ = ["EgoMotion", "SegmentTrack", "TrackState", "TrackedFrame", "Tracker", "TrackerConfig", "track_panoptic"]

_NS = 1_000_000_000
# How much of a track's colour histogram stays at each match (the rest is the new segment's).
_APPEARANCE_KEEP = 0.5


class TrackState(str, enum.Enum):
    """Life cycle of a track."""

    TENTATIVE = "tentative"  # seen fewer than ``confirm_frames`` frames in a row
    CONFIRMED = "confirmed"  # seen in this frame, after confirmation
    LOST = "lost"  # confirmed, unseen in this frame; kept for re-identification


_STATE_NAMES = (TrackState.TENTATIVE, TrackState.CONFIRMED, TrackState.LOST)  # by stored state


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
    at_rest: the thing stands still in the world (only when the tracker is given the
        camera's motion): its velocity is then exactly the world's relative to the camera.
    """

    track_id: int = 0
    track_age: int = 0
    state: TrackState | None = None
    velocity: tuple[float, float, float] = (NAN, NAN, NAN)
    time_to_contact: float = NAN
    depth: float = NAN
    at_rest: bool = False


@dataclass(frozen=True)
class TrackedFrame:
    """One :meth:`Tracker.update`: per-segment tracks and what happened to time.

    tracks: one :class:`SegmentTrack` per ``result.segments`` entry, same order.
    stamp_ns: this frame's stamp.
    dt_s: seconds since the previous frame; NaN for the first frame and after a reset.
    reset_reason: why every track was dropped before this frame (a stamp that went
        back or repeated, or a gap over ``max_gap_s``); None when nothing was reset.
    num_tentative, num_confirmed, num_lost: tracks alive after this frame by state.
    ego_motion: whether the camera's motion was given for this frame.
    """

    tracks: list[SegmentTrack]
    stamp_ns: int
    dt_s: float
    reset_reason: str | None
    num_tentative: int
    num_confirmed: int
    num_lost: int
    ego_motion: bool = False

    @property
    def reset(self) -> bool:
        """Whether the tracks were reset before this frame."""
        return self.reset_reason is not None


class Tracker:
    """Associates thing segments over frames and estimates their motion.

    Feed every frame, in stamp order, to :meth:`update`; its stamp is the input's (the
    image header's or the bag's), never the wall clock. Not thread-safe: one tracker per
    camera stream.
    """

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self._tracks = TrackTable(self.config)
        self._last_ns: int | None = None
        self._next_id = 1
        self._previous: Detections | None = None  # the last frame's detections (the tracks' last masks)

    def reset(self) -> None:
        """Forget every track and the last stamp (track ids keep counting on)."""
        self._tracks = TrackTable(self.config)
        self._last_ns = None
        self._previous = None

    def update(
        self,
        result: PanopticDepthResult,
        *,
        stamp_ns: int | None = None,
        stamp_s: float | None = None,
        image: np.ndarray | None = None,
        ego: EgoMotion | None = None,
    ) -> TrackedFrame:
        """Track one frame; pass its stamp as ``stamp_ns`` (int) or ``stamp_s`` (float).

        ``image``: the frame ``result`` was predicted from (BGR uint8, the panoptic map's
        size): its colours help tell things apart (``appearance_weight``); without it the
        association uses geometry alone. ``ego``: the camera's own motion at this frame
        (odometry, :class:`.ego_motion.CameraMount`); with it, things of ``static_labels``
        that stand still are reported with the world's velocity (``SegmentTrack.at_rest``).
        Raises ``ValueError`` for a missing or non-finite stamp, a result whose panoptic map
        is not ``[H, W]`` integer, an image that is not that frame's or an ``ego`` that is
        not an :class:`.ego_motion.EgoMotion`; the tracker's state is unchanged then.
        """
        ns = _stamp_to_ns(stamp_ns, stamp_s)
        if ego is not None and not isinstance(ego, EgoMotion):
            raise ValueError(f"ego must be an EgoMotion or None, got {type(ego).__name__}")
        panoptic = result.panoptic
        if not isinstance(panoptic, np.ndarray) or panoptic.ndim != 2 or panoptic.dtype.kind not in "iu":
            got = getattr(panoptic, "shape", type(panoptic).__name__)
            raise ValueError(f"result.panoptic must be an [H, W] integer array, got {got}")
        dets = find_detections(result, self.config, image)  # validates before any state changes

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
            self._tracks.motion.predict(dt)
            self._tracks.unseen_s = self._tracks.unseen_s + dt

        rows, cols = associate(self._tracks, dets, self._previous, self.config)
        det_track = self._apply(dets, rows, cols, result.label_divisor)
        self._previous = dets
        return self._output(result, dets, det_track, ns, dt, reason, ego)

    def _apply(self, dets: Detections, rows: IntArray, cols: IntArray, label_divisor: int) -> IntArray:
        """Update matched tracks, age the others, start new ones; ``[D]`` track row per detection."""
        t, c = self._tracks, self.config
        m = t.motion
        n_d = dets.seg_index.size
        if rows.size:
            m.correct(rows, dets.motion(cols))
            t.hits[rows] += 1
            t.missed[rows] = 0
            t.unseen_s[rows] = 0.0
            t.box[rows] = dets.box[cols]
            t.area[rows] = dets.px_area[cols]
            t.box_uv[rows] = m.pos[rows, UV]
            t.match_xyz[rows] = m.pos[rows, :3]
            t.vel_ok[rows] = m.velocity_certain(rows)
            if dets.appearance is not None:  # the track's colours follow its matches (those with colours)
                coloured = dets.coloured[cols]
                had, seen = rows[coloured], cols[coloured]
                keep = np.where(t.has_appearance[had], _APPEARANCE_KEEP, 0.0)[:, None]  # 0: its first colours
                t.appearance[had] = keep * t.appearance[had] + (1 - keep) * dets.appearance[seen]
                t.has_appearance[had] = True
            state = t.state[rows]
            t.state[rows] = np.where(
                (state == LOST) | ((state == TENTATIVE) & (t.hits[rows] >= c.confirm_frames)), CONFIRMED, state
            )
        matched = np.zeros(len(t), bool)
        matched[rows] = True
        t.prev_det = np.full(len(t), -1, np.int64)
        t.prev_det[rows] = cols
        unmatched = ~matched
        t.missed[unmatched] += 1
        t.state[unmatched & (t.state == CONFIRMED)] = LOST
        alive = matched | ((t.state == LOST) & (t.missed <= c.max_lost_frames))
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
            det_track[born] = self._birth(dets, born, ids)
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

    def _birth(self, dets: Detections, born: IntArray, ids: IntArray) -> IntArray:
        """Start tracks ``ids`` from detections ``born``; their rows."""
        n = born.size
        confirmed = self.config.confirm_frames <= 1
        t = self._tracks
        new = t.append(
            {
                "ids": ids,
                "category": dets.category[born],
                "state": np.full(n, CONFIRMED if confirmed else TENTATIVE, np.int8),
                "hits": np.zeros(n, np.int64),
                "missed": np.zeros(n, np.int64),
                "unseen_s": np.zeros(n),
                "prev_det": born.astype(np.int64),
                "box": dets.box[born],
                "area": dets.px_area[born],
                "vel_ok": np.zeros((n, 3), np.bool_),
                "box_uv": np.zeros((n, 2)),
                "match_xyz": np.zeros((n, 3)),
                "appearance": np.zeros((n, APPEARANCE_SIZE)) if dets.appearance is None else dets.appearance[born],
                "has_appearance": dets.coloured[born],
            }
        )
        m = t.motion
        m.correct(new, dets.motion(born))
        # A track born cut by the border starts in 3D where its part is, with no 3D measurement yet.
        cut = dets.cut[born]
        part = dets.meas[born[cut], :3]
        m.pos[new[cut], :3] = np.where(np.isfinite(part), part, 0.0)
        t.hits[new] = 1
        t.box_uv[new] = m.pos[new, UV]
        t.match_xyz[new] = m.pos[new, :3]
        return new

    def _output(
        self,
        result: PanopticDepthResult,
        dets: Detections,
        det_track: IntArray,
        ns: int,
        dt: float,
        reason: str | None,
        ego: EgoMotion | None,
    ) -> TrackedFrame:
        t, c = self._tracks, self.config
        out = [SegmentTrack(depth=s.depth_mean) for s in result.segments]
        tracked = det_track >= 0
        rows = det_track[tracked]
        if rows.size:
            seg_index = dets.seg_index[tracked].tolist()
            may_rest = None
            if ego is not None:  # which of the tracked things may be still in the world
                may_rest = np.array([result.segments[i].label in c.static_labels for i in seg_index], np.bool_)
            motion = t.motion.estimate(rows, ego, may_rest)
            ids, hits, state = t.ids[rows].tolist(), t.hits[rows].tolist(), t.state[rows].tolist()
            vel_list, ttc_list = motion.velocity.tolist(), motion.time_to_contact.tolist()
            z_list, rest_list = motion.depth.tolist(), motion.at_rest.tolist()
            for j, i in enumerate(seg_index):
                depth = z_list[j] if c.smooth_depth and not math.isnan(z_list[j]) else out[i].depth
                shown = c.report_tentative or state[j] != TENTATIVE
                out[i] = SegmentTrack(
                    track_id=ids[j] if shown else 0,
                    track_age=hits[j],
                    state=_STATE_NAMES[state[j]],
                    velocity=(vel_list[j][0], vel_list[j][1], vel_list[j][2]),
                    time_to_contact=ttc_list[j],
                    depth=depth,
                    at_rest=rest_list[j],
                )
        counts = np.bincount(t.state, minlength=3)
        return TrackedFrame(
            tracks=out,
            stamp_ns=ns,
            dt_s=dt,
            reset_reason=reason,
            num_tentative=int(counts[TENTATIVE]),
            num_confirmed=int(counts[CONFIRMED]),
            num_lost=int(counts[LOST]),
            ego_motion=ego is not None,
        )


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
    return relabel_ids(panoptic, ids, value, -1)
