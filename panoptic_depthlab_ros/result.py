"""What the product returns for one image: plain numpy, no torch, no ROS."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

NAN = float("nan")


@dataclass
class SegmentDepth:
    """One panoptic segment and the depth statistics of its pixels.

    Field for field the ``SegmentDepth.msg`` message; see ``msg/SegmentDepth.msg``
    for every field's exact meaning (meters, REP 103/118; inclusive pixel bbox;
    NaN depth fields when ``depth_valid_pixels == 0``; NaN centroid without
    intrinsics).
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
    """

    panoptic: np.ndarray
    semantic: np.ndarray
    depth: np.ndarray | None
    segments: list[SegmentDepth]
    label_divisor: int = 1000
    depth_scale: float = 1.0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def height(self) -> int:
        """Image height in pixels."""
        return int(self.panoptic.shape[0])

    @property
    def width(self) -> int:
        """Image width in pixels."""
        return int(self.panoptic.shape[1])
