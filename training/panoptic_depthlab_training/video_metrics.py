"""Video metrics of tracked panoptic depth: VPQ, DVPQ, ID switches, velocity and time-to-contact errors.

Pure numpy; never imports ROS. The per-frame matching is :mod:`.metrics`' (Cityscapes PQ
counting, crowd and void rules included); this module adds time.

Inputs per frame (:class:`VideoFrame`): the predicted panoptic map in the video panoptic
convention (``category * label_divisor + track id``, as ``tracker.track_panoptic`` renders
it), the predicted depth, and the ground truth whose instance ids are consistent over a
sequence, with each thing's true 3D velocity (m/s, camera frame) if known.

Definitions:

* VPQ^k and DVPQ^k_λ: Qiao et al., "ViP-DeepLab", CVPR 2021, as its
  ``cityscapes-dvps/eval_dvpq.py`` computes them. For every window of ``k`` consecutive
  frames of a sequence (sliding by one frame; a sequence shorter than ``k`` has none), the
  frames' panoptic maps are concatenated side by side and matched as one image; tp, fp,
  fn and IoU sums are accumulated over all windows of all sequences, then PQ per class
  and its mean over classes. A prediction keeps its identity across the window only if
  its id does, so an ID switch splits a thing into two segments. DVPQ first voids the
  prediction where the ground-truth depth is valid and ``|d - d*| / d* > λ``
  (:func:`.metrics.dpq_void_mask`), λ in 0.1, 0.25, 0.5. ``DVPQ_k`` averages λ, ``DVPQ``
  averages k and λ, ``VPQ`` averages k. With k = 1 they are the per-frame PQ and DPQ.
  Classes are averaged as in :class:`.metrics.PanopticQuality` (those with a tp, fp or fn;
  eval_dvpq.py averages all 19, which differs only when a class never occurs). The
  default windows are 1, 2, 3; ViP-DeepLab reports Cityscapes-DVPS over 1..4
  (``windows=(1, 2, 3, 4)``).
* ID switches (CLEAR MOT, Bernardin & Stiefelhagen 2008): per ground-truth thing, the
  predicted id it is matched to (IoU > 0.5, per frame) is compared with the last one it
  was matched to in the sequence; a change is a switch. A frame where a ground-truth thing
  is matched to a tracked prediction (instance id > 0) is a tracked frame. Counted for
  things whose mean ground-truth depth is within ``id_switch_max_depth_m``. Reported per
  100 tracked frames.
* Velocity error: for matched things with a true velocity, ``|v - v*|`` (m/s, 3D) and
  ``|vz - vz*|`` (the closing axis, known without intrinsics too); medians per distance
  band of the thing's mean ground-truth depth. A prediction with an unknown (NaN) axis
  counts as unknown and is left out of that error.
* Time to contact: ground truth ``z* / -vz*`` with ``z*`` the thing's mean ground-truth
  depth (+inf when not closing), for matched things within ``ttc_max_depth_m``. A thing
  closing within ``ttc_horizon_s`` is scored: absolute and relative error when the
  prediction is finite, else it is missed (+inf) or unknown (NaN). A thing not closing
  within the horizon whose prediction is within it is a false alarm.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from panoptic_depthlab_ros.metadata import ClassMetadata, cityscapes_metadata

from .metrics import (
    DISTANCE_BANDS_M,
    DPQ_THRESHOLDS,
    PanopticMatch,
    PanopticQuality,
    _check_map,
    _gt_info,
    _index_panoptic,
    _match,
    _relative_depth_error,
    _segment_mean,
    distance_band_edges,
)

VPQ_WINDOWS: tuple[int, ...] = (1, 2, 3)
TTC_MAX_DEPTH_M = 30.0
TTC_HORIZON_S = 10.0
ID_SWITCH_MAX_DEPTH_M = 40.0

Velocity = tuple[float, float, float]


@dataclass
class VideoFrame:
    """One frame of a sequence; every map ``[H, W]``, the same size within a sequence.

    pred_panoptic: int, ``category * label_divisor + track id`` (``-1`` void).
    pred_depth: float metres.
    gt_panoptic: int, instance ids consistent over the sequence (``-1`` void).
    gt_depth, gt_depth_valid: float metres and where they are meaningful.
    gt_velocity: ground-truth panoptic id -> true 3D velocity (m/s, camera frame).
    pred_velocity: predicted panoptic id -> estimated velocity (NaN axes: unknown).
    pred_ttc: predicted panoptic id -> time to contact (s; +inf not closing, NaN unknown).
    pred_at_rest: predicted panoptic ids the tracker reported at rest (given odometry).
    gt_still: ground-truth panoptic ids still in the world (their velocity that of the
        world relative to the camera); None when the frame does not say (no camera motion).
    gt_segments, gt_crowd_ids: crowd description of ``gt_panoptic``, as for
        :func:`.metrics.match_panoptic` (default: a thing class with instance 0 is crowd).
    """

    pred_panoptic: np.ndarray
    pred_depth: np.ndarray
    gt_panoptic: np.ndarray
    gt_depth: np.ndarray
    gt_depth_valid: np.ndarray
    gt_velocity: Mapping[int, Velocity] = field(default_factory=dict)
    pred_velocity: Mapping[int, Velocity] = field(default_factory=dict)
    pred_ttc: Mapping[int, float] = field(default_factory=dict)
    pred_at_rest: frozenset[int] = frozenset()
    gt_still: frozenset[int] | None = None
    gt_segments: Sequence[Mapping[str, Any]] | None = None
    gt_crowd_ids: Iterable[int] | None = None


@dataclass
class _Buffered:
    """What a window needs of a frame already seen."""

    gt: np.ndarray
    pred: np.ndarray
    voids: dict[float, np.ndarray]  # λ -> [H, W] bool prediction pixels DVPQ voids
    gt_segments: Sequence[Mapping[str, Any]] | None
    gt_crowd_ids: frozenset[int] | None


class VideoPanopticEvaluator:
    """Accumulates VPQ, DVPQ, ID switches, velocity and TTC errors over sequences.

    Feed each sequence's frames in order with :meth:`add`, then call
    :meth:`end_sequence` (windows and ID histories never span two sequences); or
    :meth:`add_sequence` for both. :meth:`summary` reports everything so far.
    """

    def __init__(
        self,
        *,
        metadata: ClassMetadata | None = None,
        windows: Sequence[int] = VPQ_WINDOWS,
        distance_bands: Sequence[float] = DISTANCE_BANDS_M,
        ttc_max_depth_m: float = TTC_MAX_DEPTH_M,
        ttc_horizon_s: float = TTC_HORIZON_S,
        id_switch_max_depth_m: float = ID_SWITCH_MAX_DEPTH_M,
    ) -> None:
        self.metadata = metadata or cityscapes_metadata()
        self.windows = tuple(int(k) for k in windows)
        if not self.windows or any(k < 1 for k in self.windows) or len(set(self.windows)) != len(self.windows):
            raise ValueError(f"windows must be distinct frame counts >= 1, got {list(windows)}")
        self.band_edges = np.asarray(distance_band_edges(distance_bands), dtype=np.float64)
        for name, value in (
            ("ttc_max_depth_m", ttc_max_depth_m),
            ("ttc_horizon_s", ttc_horizon_s),
            ("id_switch_max_depth_m", id_switch_max_depth_m),
        ):
            if not value > 0:  # +inf allowed: no limit
                raise ValueError(f"{name} must be > 0 (inf: no limit), got {value!r}")
        self.ttc_max_depth_m = float(ttc_max_depth_m)
        self.ttc_horizon_s = float(ttc_horizon_s)
        self.id_switch_max_depth_m = float(id_switch_max_depth_m)
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated, including the current sequence."""
        self.vpq = {k: PanopticQuality(metadata=self.metadata) for k in self.windows}
        self.dvpq = {(k, t): PanopticQuality(metadata=self.metadata) for k in self.windows for t in DPQ_THRESHOLDS}
        self.sequences = 0
        self.frames = 0
        self.id_switches = 0
        self.tracked_frames = 0
        bands = self.band_edges.size
        self.velocity_errors: list[list[float]] = [[] for _ in range(bands)]  # [band] 3D |v - v*|
        self.velocity_z_errors: list[list[float]] = [[] for _ in range(bands)]  # [band] |vz - vz*|
        self.velocity_pairs = np.zeros(bands, np.int64)  # matched things with a true velocity
        self.velocity_unknown = np.zeros(bands, np.int64)  # ... whose predicted velocity has a NaN axis
        self.ttc_abs_errors: list[float] = []
        self.ttc_rel_errors: list[float] = []
        self.ttc_closing = 0
        self.ttc_missed = 0
        self.ttc_unknown = 0
        self.ttc_not_closing = 0
        self.ttc_false_alarms = 0
        self.at_rest = 0  # matched things reported at rest
        self.at_rest_moving = 0  # ... that move in the world
        self.still = 0  # matched things still in the world (frames that say)
        self.still_found = 0  # ... reported at rest
        self._buffer: list[_Buffered] = []
        self._last_pred: dict[int, int] = {}
        self._in_sequence = False

    # ------------------------------------------------------------------ feeding
    def add_sequence(self, frames: Iterable[VideoFrame]) -> None:
        """Accumulate one whole sequence."""
        for frame in frames:
            self.add(frame)
        self.end_sequence()

    def end_sequence(self) -> None:
        """Close the current sequence: the next frame starts a new one."""
        if self._in_sequence:
            self.sequences += 1
        self._buffer = []
        self._last_pred = {}
        self._in_sequence = False

    def add(self, frame: VideoFrame) -> None:
        """Accumulate the next frame of the current sequence."""
        index = self.frames
        name = f"frame {index}"
        _check_map(f"{name}: gt_panoptic", frame.gt_panoptic, None, "iu")
        shape = frame.gt_panoptic.shape
        _check_map(f"{name}: pred_panoptic", frame.pred_panoptic, shape, "iu")
        _check_map(f"{name}: pred_depth", frame.pred_depth, shape, "f")
        _check_map(f"{name}: gt_depth", frame.gt_depth, shape, "f")
        _check_map(f"{name}: gt_depth_valid", frame.gt_depth_valid, shape, "b")
        if self._buffer and self._buffer[-1].gt.shape != shape:
            raise ValueError(
                f"{name}: gt_panoptic has shape {shape}, the sequence's frames {self._buffer[-1].gt.shape}"
                " (call end_sequence between sequences)"
            )
        depth_ok, rel = _relative_depth_error(frame.pred_depth, frame.gt_depth, frame.gt_depth_valid)
        crowd = frozenset(int(i) for i in frame.gt_crowd_ids) if frame.gt_crowd_ids is not None else None
        entry = _Buffered(
            gt=frame.gt_panoptic,
            pred=frame.pred_panoptic,
            voids={t: depth_ok & ~(rel <= t) for t in DPQ_THRESHOLDS},  # as dpq_void_mask
            gt_segments=frame.gt_segments,
            gt_crowd_ids=crowd,
        )
        buffer = [*self._buffer, entry][-max(self.windows) :]
        # Match everything first: a bad frame raises before anything is accumulated.
        matched = {k: self._window(buffer[-k:], name) for k in self.windows if len(buffer) >= k}
        single = matched[1][0] if 1 in matched else self._window([entry], name, depth=False)[0]
        for k, (_, by_threshold) in matched.items():
            self.vpq[k].update(by_threshold[None])
            for t in DPQ_THRESHOLDS:
                self.dvpq[(k, t)].update(by_threshold[t])
        self._buffer = buffer
        self._in_sequence = True
        self.frames += 1

        match, gt_index = single
        gt_depth = _segment_mean(gt_index.pixels, gt_index.ids.size, frame.gt_depth, depth_ok)  # [S_gt]
        match_depth = gt_depth[np.searchsorted(gt_index.ids, match.gt_ids)]  # [M]
        self._count_id_switches(match, match_depth)
        self._score_motion(frame, match, match_depth)

    def _window(
        self, frames: list[_Buffered], name: str, *, depth: bool = True
    ) -> tuple[tuple[PanopticMatch, Any], dict[float | None, PanopticMatch]]:
        """Match a window of frames side by side: plainly (key None) and per DVPQ threshold.

        Also returns the plain match with the indexed ground truth (for per-thing depth).
        """
        gt_map = np.concatenate([f.gt for f in frames], axis=1)
        pred_map = np.concatenate([f.pred for f in frames], axis=1)
        gt = _index_panoptic(gt_map, self.metadata, f"{name}: gt_panoptic")
        pred = _index_panoptic(pred_map, self.metadata, f"{name}: pred_panoptic")
        info = _gt_info(gt, self.metadata, *_window_crowd(frames))
        num_classes = self.metadata.num_classes
        out: dict[float | None, PanopticMatch] = {None: _match(gt, info, pred, pred.pixels, num_classes)}
        for t in DPQ_THRESHOLDS if depth else ():
            void = np.concatenate([f.voids[t] for f in frames], axis=1)
            out[t] = _match(gt, info, pred, np.where(void.reshape(-1), 0, pred.pixels), num_classes)
        return (out[None], gt), out

    # ------------------------------------------------------------------ tracking
    def _is_thing(self, ids: np.ndarray) -> np.ndarray:
        is_thing = np.zeros(self.metadata.num_classes, dtype=bool)
        is_thing[list(self.metadata.thing_ids)] = True
        return is_thing[ids // self.metadata.label_divisor]

    def _count_id_switches(self, match: PanopticMatch, gt_depth: np.ndarray) -> None:
        divisor = self.metadata.label_divisor
        tracked = self._is_thing(match.gt_ids) & (match.pred_ids % divisor > 0)
        near = gt_depth <= self.id_switch_max_depth_m  # NaN depth (no valid GT depth): not counted
        for g, p, counted in zip(
            match.gt_ids[tracked].tolist(), match.pred_ids[tracked].tolist(), near[tracked].tolist(), strict=True
        ):
            last = self._last_pred.get(g)
            if counted:
                self.tracked_frames += 1
                self.id_switches += int(last is not None and last != p)
            self._last_pred[g] = p

    def _score_motion(self, frame: VideoFrame, match: PanopticMatch, gt_depth: np.ndarray) -> None:
        if not frame.gt_velocity:
            return
        things = self._is_thing(match.gt_ids)
        band = np.searchsorted(self.band_edges, gt_depth, side="right") - 1
        columns = (match.gt_ids, match.pred_ids, gt_depth, band, things)
        for g, p, z, b, thing in zip(*(c.tolist() for c in columns), strict=True):
            true = frame.gt_velocity.get(g)
            if not thing or true is None or not math.isfinite(z):
                continue
            vt = np.asarray(true, np.float64)
            vp = np.asarray(frame.pred_velocity.get(p, (math.nan,) * 3), np.float64)
            if b >= 0:
                self.velocity_pairs[b] += 1
                if np.isfinite(vp).all():
                    self.velocity_errors[b].append(float(np.linalg.norm(vp - vt)))
                else:
                    self.velocity_unknown[b] += 1
                if math.isfinite(vp[2]):
                    self.velocity_z_errors[b].append(abs(float(vp[2] - vt[2])))
            if z <= self.ttc_max_depth_m:
                self._score_ttc(z / -vt[2] if vt[2] < 0 else math.inf, frame.pred_ttc.get(p, math.nan))
            if frame.gt_still is not None:
                reported, still = p in frame.pred_at_rest, g in frame.gt_still
                self.at_rest += int(reported)
                self.at_rest_moving += int(reported and not still)
                self.still += int(still)
                self.still_found += int(reported and still)

    def _score_ttc(self, true: float, pred: float) -> None:
        if true <= self.ttc_horizon_s:
            self.ttc_closing += 1
            if math.isnan(pred):
                self.ttc_unknown += 1
            elif math.isinf(pred):
                self.ttc_missed += 1
            else:
                self.ttc_abs_errors.append(abs(pred - true))
                self.ttc_rel_errors.append(abs(pred - true) / true)
        else:
            self.ttc_not_closing += 1
            self.ttc_false_alarms += int(pred <= self.ttc_horizon_s)  # NaN compares False

    # ------------------------------------------------------------------ results
    def merge(self, other: VideoPanopticEvaluator) -> None:
        """Add another evaluator's sums (same windows, bands and classes; finished sequences)."""
        if other.windows != self.windows or not np.array_equal(other.band_edges, self.band_edges):
            raise ValueError("cannot merge video evaluators with different windows or distance bands")
        for mine, theirs in [(self.vpq[k], other.vpq[k]) for k in self.windows] + [
            (self.dvpq[key], other.dvpq[key]) for key in self.dvpq
        ]:
            mine.tp += theirs.tp
            mine.fp += theirs.fp
            mine.fn += theirs.fn
            mine.iou += theirs.iou
        for name in (
            "sequences",
            "frames",
            "id_switches",
            "tracked_frames",
            "ttc_closing",
            "ttc_missed",
            "ttc_unknown",
            "ttc_not_closing",
            "ttc_false_alarms",
            "at_rest",
            "at_rest_moving",
            "still",
            "still_found",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.velocity_pairs += other.velocity_pairs
        self.velocity_unknown += other.velocity_unknown
        for b in range(self.band_edges.size):
            self.velocity_errors[b] += other.velocity_errors[b]
            self.velocity_z_errors[b] += other.velocity_z_errors[b]
        self.ttc_abs_errors += other.ttc_abs_errors
        self.ttc_rel_errors += other.ttc_rel_errors

    def summary(self) -> dict[str, Any]:
        """Everything so far; percentages for (D)VPQ, NaN where undefined.

        Keys: ``VPQ``, ``VPQ_th``, ``VPQ_st`` (mean over windows), ``VPQ_k{k}`` (and
        ``_th``/``_st``); ``DVPQ``, ``DVPQ_th``, ``DVPQ_st`` (mean over windows and
        thresholds), ``DVPQ_k{k}`` (mean over thresholds, and ``_th``/``_st``),
        ``DVPQ_k{k}_{λ}``; ``sequences``, ``frames``; ``id_switches``, ``tracked_frames``,
        ``id_switches_per_100``; ``velocity``: one row per distance band (``min_m``,
        ``max_m``, ``pairs``, ``unknown``, ``median_error``, ``median_error_z``, m/s);
        ``ttc``: ``closing``, ``scored``, ``median_abs_error`` (s), ``median_rel_error``,
        ``missed``, ``unknown``, ``not_closing``, ``false_alarms``; ``at_rest`` (matched things
        of frames that say which are still): ``reported`` at rest, of them ``moving`` in the
        world, ``still`` things, of them ``found`` at rest.
        """
        out: dict[str, Any] = {"sequences": self.sequences, "frames": self.frames}
        suffixes = ("", "_th", "_st")
        vpq = {k: self.vpq[k].result() for k in self.windows}
        dvpq = {key: acc.result() for key, acc in self.dvpq.items()}
        for k in self.windows:
            for s in suffixes:
                out[f"VPQ_k{k}{s}"] = vpq[k][f"PQ{s}"]
                out[f"DVPQ_k{k}{s}"] = _mean([dvpq[(k, t)][f"PQ{s}"] for t in DPQ_THRESHOLDS])
            for t in DPQ_THRESHOLDS:
                out[f"DVPQ_k{k}_{t:g}"] = dvpq[(k, t)]["PQ"]
        for s in suffixes:
            out[f"VPQ{s}"] = _mean([out[f"VPQ_k{k}{s}"] for k in self.windows])
            out[f"DVPQ{s}"] = _mean([dvpq[(k, t)][f"PQ{s}"] for k in self.windows for t in DPQ_THRESHOLDS])
        out["id_switches"] = self.id_switches
        out["tracked_frames"] = self.tracked_frames
        out["id_switches_per_100"] = 100 * self.id_switches / self.tracked_frames if self.tracked_frames else math.nan
        rows = []
        for b, low in enumerate(self.band_edges.tolist()):
            high = float(self.band_edges[b + 1]) if b + 1 < self.band_edges.size else math.inf
            rows.append(
                {
                    "min_m": low,
                    "max_m": high,
                    "pairs": int(self.velocity_pairs[b]),
                    "unknown": int(self.velocity_unknown[b]),
                    "median_error": _median(self.velocity_errors[b]),
                    "median_error_z": _median(self.velocity_z_errors[b]),
                }
            )
        out["velocity"] = rows
        out["ttc"] = {
            "max_depth_m": self.ttc_max_depth_m,
            "horizon_s": self.ttc_horizon_s,
            "closing": self.ttc_closing,
            "scored": len(self.ttc_abs_errors),
            "median_abs_error": _median(self.ttc_abs_errors),
            "median_rel_error": _median(self.ttc_rel_errors),
            "missed": self.ttc_missed,
            "unknown": self.ttc_unknown,
            "not_closing": self.ttc_not_closing,
            "false_alarms": self.ttc_false_alarms,
        }
        out["at_rest"] = {
            "reported": self.at_rest,
            "moving": self.at_rest_moving,
            "still": self.still,
            "found": self.still_found,
        }
        return out


def format_video_table(summary: Mapping[str, Any]) -> str:
    """Render :meth:`VideoPanopticEvaluator.summary` as plain text."""
    windows = sorted(int(key[5:]) for key in summary if key.startswith("VPQ_k") and key[5:].isdigit())
    lines = [f"{summary['sequences']} sequences, {summary['frames']} frames"]
    heads = ("VPQ", "VPQ_th", "VPQ_st", "DVPQ", "DVPQ_th", "DVPQ_st")
    lines.append(f"{'window':>8s} " + " ".join(f"{h:>{max(6, len(h))}s}" for h in heads))
    for k in windows:
        lines.append(
            f"{k:>8d} {summary[f'VPQ_k{k}']:6.1f} {summary[f'VPQ_k{k}_th']:6.1f} {summary[f'VPQ_k{k}_st']:6.1f}"
            f" {summary[f'DVPQ_k{k}']:6.1f} {summary[f'DVPQ_k{k}_th']:7.1f} {summary[f'DVPQ_k{k}_st']:7.1f}"
        )
    lines.append(
        f"{'mean':>8s} {summary['VPQ']:6.1f} {summary['VPQ_th']:6.1f} {summary['VPQ_st']:6.1f}"
        f" {summary['DVPQ']:6.1f} {summary['DVPQ_th']:7.1f} {summary['DVPQ_st']:7.1f}"
    )
    lines.append(
        f"ID switches {summary['id_switches']} in {summary['tracked_frames']} tracked frames"
        f" = {summary['id_switches_per_100']:.2f} per 100"
    )
    lines.append(f"{'things at':>14s} {'pairs':>6s} {'unknown':>7s} {'|v-v*| med':>10s} {'|vz-vz*| med':>12s}")
    for row in summary["velocity"]:
        high = row["max_m"]
        span = f"{row['min_m']:g}-{high:g} m" if high is not None and math.isfinite(high) else f">= {row['min_m']:g} m"
        lines.append(
            f"{span:>14s} {row['pairs']:6d} {row['unknown']:7d} {row['median_error']:8.2f} m/s"
            f" {row['median_error_z']:8.2f} m/s"
        )
    ttc = summary["ttc"]
    lines.append(
        f"time to contact (things within {ttc['max_depth_m']:g} m, closing within {ttc['horizon_s']:g} s):"
        f" {ttc['scored']} of {ttc['closing']} scored, median error {ttc['median_abs_error']:.2f} s"
        f" ({100 * ttc['median_rel_error']:.1f} %), missed {ttc['missed']}, unknown {ttc['unknown']},"
        f" false alarms {ttc['false_alarms']} of {ttc['not_closing']}"
    )
    rest = summary.get("at_rest")
    if rest and rest["still"]:
        lines.append(
            f"at rest (given odometry): {rest['found']} of {rest['still']} still things found;"
            f" {rest['reported']} reported, {rest['moving']} of them moving"
        )
    return "\n".join(lines)


def _window_crowd(
    frames: Sequence[_Buffered],
) -> tuple[list[Mapping[str, Any]] | None, frozenset[int] | None]:
    """The crowd description of a window: its frames' ``gt_segments`` or crowd ids, joined."""
    segments = [f.gt_segments for f in frames]
    crowd = [f.gt_crowd_ids for f in frames]
    if all(s is not None for s in segments):
        return [seg for s in segments if s is not None for seg in s], None
    if all(c is not None for c in crowd):
        return None, frozenset().union(*(c for c in crowd if c is not None))
    if any(s is not None for s in segments) or any(c is not None for c in crowd):
        raise ValueError("give gt_segments (or gt_crowd_ids) for every frame of a sequence or for none")
    return None, None


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if values else math.nan


def _median(values: Sequence[float]) -> float:
    return float(np.median(values)) if values else math.nan
