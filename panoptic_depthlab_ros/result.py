"""What the product returns for one image: plain numpy, no torch, no ROS."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # tracker.py imports this module
    from .tracker import SegmentTrack

NAN = float("nan")
# Panoptic ids up to this are relabelled through a table indexed by id; larger ones by a search.
_TABLE_IDS = 1 << 24


def relabel_ids(panoptic: np.ndarray, ids: np.ndarray, values: np.ndarray, fill: int) -> np.ndarray:
    """``panoptic`` (int) with each of ``ids`` replaced by its ``values`` entry, every other value by ``fill``: int32.

    Ids in -1 .. 2**24: one table lookup per pixel (the table spans -1 .. max(ids) + 1 and
    the map is clipped into it, so void, ids absent from ``ids`` and stray large values all
    land on ``fill``); other ids: a binary search in the sorted ids, so that no table
    grows with them.
    """
    ids = np.asarray(ids, dtype=np.int64)
    values = np.asarray(values)
    if ids.size == 0:
        return np.full(panoptic.shape, fill, np.int32)
    top = int(ids.max())
    if int(ids.min()) >= -1 and top < _TABLE_IDS:
        lut = np.full(top + 3, fill, np.int32)  # index: id + 1 (void -1 -> 0); last: anything above
        lut[ids + 1] = values
        return lut[np.clip(panoptic, -1, top + 1) + 1]
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    pos = np.clip(np.searchsorted(sorted_ids, panoptic), 0, ids.size - 1)
    return np.where(sorted_ids[pos] == panoptic, values[order][pos], fill).astype(np.int32)


@dataclass
class SegmentDepth:
    """One panoptic segment and the depth statistics of its pixels.

    Field for field the ``SegmentDepth.msg`` message; see ``msg/SegmentDepth.msg``
    for every field's exact meaning (meters, REP 103/118; inclusive pixel bbox;
    NaN depth fields when ``depth_valid_pixels == 0``; NaN centroid without
    intrinsics).  The tracking fields (``track_id`` .. ``at_rest``) stay at
    "untracked" (0, 0, NaN, NaN, False) unless the result went through a tracker
    (:meth:`PanopticDepthResult.with_tracks`); ``at_rest`` is True only for a thing the
    tracker, given the camera's motion, found still in the world.
    """

    id: int
    category_id: int
    label: str
    is_thing: bool
    score: float
    area: int
    x_min: int
    y_min: int
    x_max: int
    y_max: int
    depth_valid_pixels: int = 0
    depth_mean: float = NAN
    depth_median: float = NAN
    depth_min: float = NAN
    depth_std: float = NAN
    depth_robust: float = NAN
    centroid: tuple[float, float, float] = (NAN, NAN, NAN)
    track_id: int = 0
    track_age: int = 0
    velocity: tuple[float, float, float] = (NAN, NAN, NAN)
    time_to_contact: float = NAN
    at_rest: bool = False


@dataclass
class PanopticDepthResult:
    """Everything predicted for one image, at the input image's resolution.

    panoptic: [H, W] int32, ``category_id * label_divisor + instance`` (-1 void).
    semantic: [H, W] uint8 Cityscapes trainIds (255 void).
    depth:    [H, W] float32 meters along the optical axis (NaN where invalid); None when the
              checkpoint's depth branch was never trained (see ``Predictor``'s ``untrained_depth``).
    segments: one :class:`SegmentDepth` per id in ``panoptic``, ascending id.
    timings:  seconds per stage (``preprocess``, ``network``, ``fusion``,
              ``segment_depth``, ``total``).
    depth_scale: the factor already applied to the network's depth for this camera's
              focal length (1.0: none; see ``Predictor.depth_scale``).
    tracked:  True once a tracker filled the segments' tracking fields (:meth:`with_tracks`).
    """

    panoptic: np.ndarray
    semantic: np.ndarray
    depth: np.ndarray | None
    segments: list[SegmentDepth]
    label_divisor: int = 1000
    depth_scale: float = 1.0
    timings: dict[str, float] = field(default_factory=dict)
    tracked: bool = False

    @property
    def height(self) -> int:
        """Image height in pixels."""
        return int(self.panoptic.shape[0])

    @property
    def width(self) -> int:
        """Image width in pixels."""
        return int(self.panoptic.shape[1])

    def with_tracks(self, tracks: Sequence[SegmentTrack]) -> PanopticDepthResult:
        """A copy whose segments carry ``tracks`` (``Tracker.update(self, ...).tracks``, same order).

        The maps are shared, not copied; ``tracked`` is True.  What the messages, the
        overlay, the markers and the files show of the tracks comes from here. A track's
        finite ``depth`` becomes the segment's ``depth_mean`` (the same value unless the
        tracker smooths depth, ``TrackerConfig.smooth_depth``).
        """
        if len(tracks) != len(self.segments):
            raise ValueError(f"{len(tracks)} tracks for {len(self.segments)} segments: pass this result's tracks")
        segments = [
            dataclasses.replace(
                s,
                track_id=t.track_id,
                track_age=t.track_age,
                velocity=t.velocity,
                time_to_contact=t.time_to_contact,
                at_rest=t.at_rest,
                depth_mean=t.depth if math.isfinite(t.depth) else s.depth_mean,
            )
            for s, t in zip(self.segments, tracks, strict=True)
        ]
        return dataclasses.replace(self, segments=segments, tracked=True)
