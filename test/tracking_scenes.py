"""Synthetic frames for the tracker's tests and benchmark: boxes in 3D seen by a pinhole camera.

Each thing is an upright rectangle (width x height metres) facing the camera at its 3D
centre; things are painted far to near, so nearer ones occlude farther ones. Stuff is
sky above the principal point and road below it. The segments carry what the predictor
would report: area, inclusive box, depth statistics (the rectangle's depth, constant) and
the centroid, either the true 3D centre, the mean of the visible pixels back-projected
(as ``postprocess`` computes it) or NaN (no intrinsics).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from panoptic_depthlab_ros.result import PanopticDepthResult, SegmentDepth

ROAD, SKY, PERSON, CAR = 0, 10, 11, 13
NAMES = {ROAD: "road", SKY: "sky", PERSON: "person", CAR: "car"}
THINGS = {PERSON, CAR}
SKY_DEPTH_M, ROAD_DEPTH_M = 80.0, 20.0


@dataclass(frozen=True)
class Thing:
    """One object: class, its instance id in this frame, centre (m, camera frame), size (m)."""

    category: int
    instance: int
    position: tuple[float, float, float]
    size: tuple[float, float] = (1.8, 1.5)


def intrinsics(height: int, width: int, focal: float | None = None) -> np.ndarray:
    """3x3 pinhole matrix, principal point at the image centre (focal: width / 2 by default)."""
    f = width / 2 if focal is None else focal
    return np.array([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]])


def render(
    things: Sequence[Thing],
    *,
    size: tuple[int, int] = (96, 192),
    k: np.ndarray | None = None,
    centroid: str = "true",
    label_divisor: int = 1000,
) -> PanopticDepthResult:
    """One frame. ``centroid``: "true" (exact 3D centre), "visible" (back-projected visible
    pixels) or "none" (NaN, as without intrinsics)."""
    h, w = size
    k = intrinsics(h, w) if k is None else k
    fx, fy, cx, cy = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
    panoptic = np.full((h, w), ROAD * label_divisor, np.int32)
    depth = np.full((h, w), ROAD_DEPTH_M, np.float32)
    horizon = int(math.floor(cy))
    panoptic[:horizon] = SKY * label_divisor
    depth[:horizon] = SKY_DEPTH_M
    for t in sorted(things, key=lambda t: -t.position[2]):
        x, y, z = t.position
        if z <= 0:
            continue
        half_w, half_h = t.size[0] / 2, t.size[1] / 2
        u0, u1 = round(cx + fx * (x - half_w) / z), round(cx + fx * (x + half_w) / z)
        v0, v1 = round(cy + fy * (y - half_h) / z), round(cy + fy * (y + half_h) / z)
        u0, v0, u1, v1 = max(u0, 0), max(v0, 0), min(u1, w), min(v1, h)
        if u1 <= u0 or v1 <= v0:
            continue
        panoptic[v0:v1, u0:u1] = t.category * label_divisor + t.instance
        depth[v0:v1, u0:u1] = z
    by_id = {t.category * label_divisor + t.instance: t for t in things}
    segments = []
    for sid in np.unique(panoptic).tolist():
        rows, cols = np.nonzero(panoptic == sid)
        category = sid // label_divisor
        z_pix = depth[rows, cols].astype(np.float64)
        mean = float(z_pix.mean())
        if centroid == "none":
            c = (math.nan, math.nan, math.nan)
        elif centroid == "true" and sid in by_id:
            c = by_id[sid].position
        else:
            c = (
                float(((cols - cx) * z_pix).mean() / fx),
                float(((rows - cy) * z_pix).mean() / fy),
                mean,
            )
        segments.append(
            SegmentDepth(
                id=sid,
                category_id=category,
                label=NAMES.get(category, str(category)),
                is_thing=category in THINGS,
                score=1.0,
                area=int(rows.size),
                x_min=int(cols.min()),
                y_min=int(rows.min()),
                x_max=int(cols.max()),
                y_max=int(rows.max()),
                depth_valid_pixels=int(rows.size),
                depth_mean=mean,
                depth_median=float(np.median(z_pix)),
                depth_min=float(z_pix.min()),
                depth_std=float(z_pix.std()),
                depth_robust=mean,
                centroid=c,
            )
        )
    semantic = (panoptic // label_divisor).astype(np.uint8)
    return PanopticDepthResult(
        panoptic=panoptic, semantic=semantic, depth=depth, segments=segments, label_divisor=label_divisor
    )


def segment_of(result: PanopticDepthResult, category: int, instance: int) -> int | None:
    """Index in ``result.segments`` of the segment with this id, None if not visible."""
    sid = category * result.label_divisor + instance
    for i, s in enumerate(result.segments):
        if s.id == sid:
            return i
    return None


def paint(result: PanopticDepthResult, colours: dict[int, tuple[int, int, int]]) -> np.ndarray:
    """The BGR uint8 frame of ``result``: each panoptic id in ``colours`` in its colour, the rest grey."""
    image = np.full((*result.panoptic.shape, 3), 128, np.uint8)
    for panoptic_id, colour in colours.items():
        image[result.panoptic == panoptic_id] = colour
    return image
