"""Pictures of a result: the write-up's depth-tinted panoptic overlay and depth maps.

Colour scale (the Panoptic-DepthLab write-up's): near segments red, medium green,
far blue, interpolated linearly in between and clamped outside ``[near, far]``.
All functions take and return BGR uint8 images (OpenCV's order).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from .result import PanopticDepthResult, SegmentDepth

# Closing or receding slower than this (m/s) is not worth a word in a label.
LABEL_MIN_SPEED_MPS = 0.1

# Scale anchors in BGR: near red, mid green, far blue.
_ANCHORS_BGR = np.array([[0, 0, 255], [0, 200, 0], [255, 64, 0]], dtype=np.float32)


def depth_to_bgr(depth: np.ndarray, *, near: float, far: float) -> np.ndarray:
    """Depth values (any shape, meters) -> BGR uint8 colours (shape + (3,)); NaN -> grey."""
    if not far > near:
        raise ValueError(f"overlay range needs far > near, got near={near}, far={far}")
    d = np.asarray(depth, dtype=np.float32)
    t = np.clip((d - near) / (far - near), 0.0, 1.0) * 2.0  # 0..2 across the three anchors
    i = np.clip(np.floor(np.nan_to_num(t, nan=0.0)).astype(np.int64), 0, 1)
    f = (np.nan_to_num(t, nan=0.0) - i)[..., None]
    out = _ANCHORS_BGR[i] * (1 - f) + _ANCHORS_BGR[i + 1] * f
    out[~np.isfinite(d)] = (128, 128, 128)
    return out.astype(np.uint8)


def depth_colormap(depth: np.ndarray, *, near: float = 5.0, far: float = 60.0) -> np.ndarray:
    """[H, W] meters -> [H, W, 3] BGR on the overlay's near/mid/far scale (invalid: black)."""
    out = depth_to_bgr(depth, near=near, far=far)
    out[~np.isfinite(depth) | (np.asarray(depth) <= 0)] = 0
    return out


def _segment_index(panoptic: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """[H, W] index into ``ids`` per pixel, -1 where the id is not listed (void)."""
    pos = np.searchsorted(ids, panoptic)
    pos = np.clip(pos, 0, max(len(ids) - 1, 0))
    found = (ids[pos] == panoptic) if len(ids) else np.zeros(panoptic.shape, bool)
    return np.where(found, pos, -1)


def segment_label(seg: SegmentDepth, *, depth: bool = True) -> str:
    """What the overlay and the markers write on a segment: "car #12 14.3 m, 2.1 m/s closing".

    The track id only for a tracked thing; the distance only with ``depth`` ("?" when the
    segment has no valid depth); the speed along the optical axis only once the track's
    velocity is known: "closing" (towards the camera), "receding", nothing when slower than
    :data:`LABEL_MIN_SPEED_MPS`; then ", at rest" for a thing the tracker found still in the
    world (``at_rest``, with odometry): "car #12 14.3 m, 8.0 m/s closing, at rest" is a car
    standing still that the vehicle drives towards at 8 m/s.
    """
    text = seg.label + (f" #{seg.track_id}" if seg.track_id else "")
    if not depth:
        return text
    text += " ?" if math.isnan(seg.depth_mean) else f" {seg.depth_mean:.1f} m"
    vz = seg.velocity[2]
    if seg.track_id and math.isfinite(vz) and abs(vz) >= LABEL_MIN_SPEED_MPS:
        text += f", {abs(vz):.1f} m/s {'closing' if vz < 0 else 'receding'}"
    if seg.track_id and seg.at_rest:
        text += ", at rest"
    return text


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float, color: tuple[int, int, int]) -> None:
    thickness = max(1, round(scale * 2))
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, color, thickness, cv2.LINE_AA)


def _legend(img: np.ndarray, near: float, far: float, scale: float) -> None:
    h, w = img.shape[:2]
    bar_w, bar_h = max(60, w // 4), max(6, round(12 * scale))
    x0, y0 = w - bar_w - 10, h - bar_h - 10
    if x0 < 0 or y0 < 0:
        return
    ramp = depth_to_bgr(np.linspace(near, far, bar_w, dtype=np.float32)[None].repeat(bar_h, 0), near=near, far=far)
    img[y0 : y0 + bar_h, x0 : x0 + bar_w] = ramp
    cv2.rectangle(img, (x0 - 1, y0 - 1), (x0 + bar_w, y0 + bar_h), (255, 255, 255), 1)
    mid = (near + far) / 2
    for value, x in ((near, x0), (mid, x0 + bar_w // 2), (far, x0 + bar_w)):
        label = f"{value:g} m"
        (tw, _), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.4 * scale, 1)
        _text(img, label, (min(max(0, x - tw // 2), w - tw), y0 - 4), 0.4 * scale, (255, 255, 255))


def overlay(
    image: np.ndarray,
    result: PanopticDepthResult,
    *,
    near: float = 5.0,
    far: float = 60.0,
    alpha: float = 0.5,
    min_label_area: int = 150,
    legend: bool = True,
    class_colors: Sequence[tuple[int, int, int]] | None = None,
) -> np.ndarray:
    """The write-up's picture: each segment tinted by its mean depth and labelled.

    ``image`` [H, W, 3] BGR uint8 (the predicted image); returns a new BGR image with
    segments tinted near red / mid green / far blue, thin segment outlines, a
    "label 12.3 m" tag (:func:`segment_label`: "car #12 14.3 m, 2.1 m/s closing" for a
    tracked thing) on every segment of at least ``min_label_area`` pixels, and
    a colour legend.  Void pixels keep the image's own colours.  A result without depth
    (``result.depth`` None: an untrained depth branch) gets no distances: segments tinted
    in their ``class_colors`` (RGB by category; grey without), tags with the label only,
    no legend.
    """
    if image.shape[:2] != result.panoptic.shape:
        raise ValueError(f"image {image.shape[:2]} and result {result.panoptic.shape} sizes differ")
    out = image.copy()
    segs = result.segments
    with_depth = result.depth is not None
    if segs:
        ids = np.array([s.id for s in segs], dtype=np.int64)
        if with_depth:
            colors = depth_to_bgr(np.array([s.depth_mean for s in segs], np.float32), near=near, far=far)
        elif class_colors is not None:
            colors = np.array([class_colors[s.category_id][::-1] for s in segs], np.uint8)
        else:
            colors = np.full((len(segs), 3), 128, np.uint8)
        index = _segment_index(result.panoptic.astype(np.int64), ids)
        inside = index >= 0
        tint = colors[np.where(inside, index, 0)]
        blended = (image.astype(np.float32) * (1 - alpha) + tint.astype(np.float32) * alpha).astype(np.uint8)
        out[inside] = blended[inside]
        pan = result.panoptic
        edge = np.zeros(pan.shape, bool)
        edge[:, :-1] |= pan[:, :-1] != pan[:, 1:]
        edge[:-1, :] |= pan[:-1, :] != pan[1:, :]
        out[edge] = (255, 255, 255)
        # Label position: the mean pixel of each segment, from one bincount pass.
        flat = index[inside]
        ys, xs = np.nonzero(inside)
        count = np.bincount(flat, minlength=len(segs))
        cy = np.bincount(flat, ys, minlength=len(segs)) / np.maximum(count, 1)
        cx = np.bincount(flat, xs, minlength=len(segs)) / np.maximum(count, 1)
        scale = max(0.35, image.shape[1] / 1600.0)
        for seg, y, x in zip(segs, cy, cx, strict=True):
            if seg.area < min_label_area:
                continue
            text = segment_label(seg, depth=with_depth)
            (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.45 * scale, 1)
            org = (
                int(np.clip(x - tw / 2, 0, max(0, image.shape[1] - tw))),
                int(np.clip(y + th / 2, th, image.shape[0] - 1)),
            )
            _text(out, text, org, 0.45 * scale, (255, 255, 255))
    if legend and with_depth:
        _legend(out, near, far, max(0.6, image.shape[1] / 1200.0))
    return out


def panoptic_to_rgb(panoptic: np.ndarray) -> np.ndarray:
    """Cityscapes / COCO panoptic PNG encoding: id = R + 256 G + 256^2 B (void -> 0).

    Returns [H, W, 3] **RGB** uint8 (write with ``cv2.imwrite(path, rgb[..., ::-1])``).
    """
    ids = np.where(panoptic < 0, 0, panoptic).astype(np.uint32)
    return np.stack((ids % 256, (ids // 256) % 256, ids // 65536), -1).astype(np.uint8)
