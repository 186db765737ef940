"""The live tracks as a struct of arrays: one row per track, rows compacted when tracks die.

Each row holds a track's id, class and life cycle, what it looked like when last matched
(box, area, filtered position, colour histogram) and, in :attr:`TrackTable.motion`, its motion filters.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from panoptic_depthlab_ros.track_config import TrackerConfig
from panoptic_depthlab_ros.track_motion import MotionFilters

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

# Bins of the colour histogram a track's appearance is (see track_association.appearance).
APPEARANCE_BITS = 2  # the leading bits of each channel: 4 bins per channel
APPEARANCE_BINS = 1 << APPEARANCE_BITS
APPEARANCE_SIZE = APPEARANCE_BINS**3
# Track states as stored (int8).
TENTATIVE, CONFIRMED, LOST = 0, 1, 2


class TrackTable:
    """One row per live track; :attr:`motion` keeps its rows aligned with these."""

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
        "appearance",
        "has_appearance",
    )

    def __init__(self, config: TrackerConfig) -> None:
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
        self.appearance = np.zeros((0, APPEARANCE_SIZE), np.float64)  # colour histogram, following the matches
        self.has_appearance = np.zeros(0, np.bool_)  # seen with an image at least once
        self.motion = MotionFilters(config)

    def __len__(self) -> int:
        return int(self.ids.size)

    def keep(self, mask: BoolArray) -> None:
        """Drop the rows where ``mask`` is False."""
        for name in self._FIELDS:
            setattr(self, name, getattr(self, name)[mask])
        self.motion.keep(mask)

    def append(self, rows: dict[str, np.ndarray]) -> IntArray:
        """Add rows (every field given, same length) with fresh motion filters; their row indices."""
        for name in self._FIELDS:
            setattr(self, name, np.concatenate((getattr(self, name), rows[name])))
        return self.motion.add(rows["ids"].size)
