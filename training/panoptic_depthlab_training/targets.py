"""Panoptic-DeepLab training targets from a panoptic id map.

Reference: Detectron2 ``projects/Panoptic-DeepLab/panoptic_deeplab/target_generator.py``
(itself from bowenc0221/panoptic-deeplab ``target_transforms.py``); Cheng et al.,
"Panoptic-DeepLab", CVPR 2020. Same targets, computed per *segment* with one
``np.unique`` + ``np.bincount`` pass instead of one full-image mask per segment; only the
Gaussian pasting loops over thing instances (a (6 sigma + 3)^2 patch each).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np


def gaussian_kernel(sigma: float) -> np.ndarray:
    """[6 sigma + 3, 6 sigma + 3] float32 Gaussian with peak 1 at (3 sigma + 1, 3 sigma + 1)."""
    size = int(6 * sigma + 3)
    x = np.arange(size, dtype=np.float64)
    c = 3 * sigma + 1
    g = np.exp(-((x[None, :] - c) ** 2 + (x[:, None] - c) ** 2) / (2 * sigma**2))
    return g.astype(np.float32)


class PanopticTargetGenerator:
    """Semantic, center and offset targets (plus loss weights) as Detectron2 builds them.

    Args:
        thing_ids: category ids (trainIds) that have instances.
        ignore_label: semantic label of void pixels.
        sigma: standard deviation of each center's Gaussian (pixels).
        ignore_stuff_in_offset: offset loss weight 0 on stuff (Detectron2 Cityscapes: True).
        small_instance_area: thing segments with fewer pixels get ``small_instance_weight``
            in ``sem_seg_weights`` (Detectron2 Cityscapes: 4096 px, weight 3).
        ignore_crowd_in_semantic: semantic label ignore on crowd regions (Detectron2: False).

    Crowd handling follows Detectron2 exactly: a crowd segment (``iscrowd=1``) keeps its
    semantic label (unless ``ignore_crowd_in_semantic``), gets center and offset weight 0,
    but a thing crowd region still gets a center Gaussian and offsets (only masked by the
    weights). Pixels of ids absent from ``segments`` are void: ignore label, weights 0.

    """

    def __init__(
        self,
        thing_ids: Iterable[int],
        *,
        ignore_label: int = 255,
        sigma: int = 8,
        ignore_stuff_in_offset: bool = True,
        small_instance_area: int = 4096,
        small_instance_weight: float = 3.0,
        ignore_crowd_in_semantic: bool = False,
    ) -> None:
        self.thing_ids = frozenset(int(t) for t in thing_ids)
        self.ignore_label = ignore_label
        self.sigma = sigma
        self.ignore_stuff_in_offset = ignore_stuff_in_offset
        self.small_instance_area = small_instance_area
        self.small_instance_weight = small_instance_weight
        self.ignore_crowd_in_semantic = ignore_crowd_in_semantic
        self.gaussian = gaussian_kernel(sigma)

    def __call__(self, panoptic: np.ndarray, segments: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Targets for one image.

        Args:
            panoptic: [H, W] integer segment ids.
            segments: dicts with ``id``, ``category_id`` and ``iscrowd``.

        Returns:
            ``sem_seg`` [H, W] int64; ``sem_seg_weights`` [H, W] float32; ``center``
            [1, H, W] float32 in 0..1; ``center_weights`` [1, H, W] float32 0/1;
            ``offset`` [2, H, W] float32 (offset_y, offset_x), center minus pixel
            coordinate; ``offset_weights`` [1, H, W] float32 0/1; ``center_points`` list of
            (y, x) float centers of the thing segments present.

        """
        if panoptic.ndim != 2:
            raise ValueError(f"panoptic must be [H, W], got shape {panoptic.shape}")
        height, width = panoptic.shape
        ids, inverse = unique_inverse(panoptic)
        n = len(ids)
        by_id = {int(s["id"]): s for s in segments}

        category = np.full(n, self.ignore_label, np.int64)
        known = np.zeros(n, bool)
        crowd = np.zeros(n, bool)
        for k, seg_id in enumerate(ids.tolist()):
            seg = by_id.get(seg_id)
            if seg is not None:
                known[k] = True
                category[k] = int(seg["category_id"])
                crowd[k] = bool(seg["iscrowd"])
        thing = known & np.isin(category, list(self.thing_ids))

        flat = inverse.ravel()
        area = np.bincount(flat, minlength=n).astype(np.float64)
        yy, xx = np.mgrid[0:height, 0:width]
        center_y = np.bincount(flat, weights=yy.ravel(), minlength=n) / np.maximum(area, 1)
        center_x = np.bincount(flat, weights=xx.ravel(), minlength=n) / np.maximum(area, 1)

        sem_lut = np.where(known & ~(crowd & self.ignore_crowd_in_semantic), category, self.ignore_label)
        center_w_lut = known & ~crowd
        offset_w_lut = center_w_lut & (thing | (not self.ignore_stuff_in_offset))
        sem_w_lut = np.where(thing & (area < self.small_instance_area), self.small_instance_weight, 1.0)

        offset = np.zeros((2, height, width), np.float32)
        has_offset = thing[inverse]
        offset[0] = np.where(has_offset, center_y[inverse] - yy, 0.0)
        offset[1] = np.where(has_offset, center_x[inverse] - xx, 0.0)

        center = np.zeros((height, width), np.float32)
        points: list[tuple[float, float]] = []
        for j in np.flatnonzero(thing & (area > 0)).tolist():
            cy, cx = float(center_y[j]), float(center_x[j])
            points.append((cy, cx))
            self._paste_gaussian(center, cy, cx)

        return {
            "sem_seg": sem_lut[inverse],
            "sem_seg_weights": sem_w_lut[inverse].astype(np.float32),
            "center": center[None],
            "center_weights": center_w_lut[inverse][None].astype(np.float32),
            "offset": offset,
            "offset_weights": offset_w_lut[inverse][None].astype(np.float32),
            "center_points": points,
        }

    def _paste_gaussian(self, heatmap: np.ndarray, cy: float, cx: float) -> None:
        """Max-combine the kernel centred on the rounded (cy, cx) into ``heatmap`` in place."""
        height, width = heatmap.shape
        size = self.gaussian.shape[0]
        # top-left corner so that kernel index 3 sigma + 1 lands on the rounded center
        # (Python/NumPy round half to even, as Detectron2's int(round(.)))
        y0 = int(np.round(cy)) - 3 * self.sigma - 1
        x0 = int(np.round(cx)) - 3 * self.sigma - 1
        ys, xs = max(0, y0), max(0, x0)
        ye, xe = min(height, y0 + size), min(width, x0 + size)
        if ye <= ys or xe <= xs:
            return
        patch = self.gaussian[ys - y0 : ye - y0, xs - x0 : xe - x0]
        np.maximum(heatmap[ys:ye, xs:xe], patch, out=heatmap[ys:ye, xs:xe])


def unique_inverse(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(ids, return_inverse=True)`` with the inverse in ``ids``' shape.

    Segment ids are small non-negative integers (Cityscapes instanceIds < 34000), so a
    count table replaces the sort: 3-4x faster per image, for every training sample.
    """
    if ids.size and ids.min() >= 0 and ids.max() < (1 << 22):
        present = np.flatnonzero(np.bincount(ids.ravel()))
        lut = np.zeros(int(present[-1]) + 1, np.intp)
        lut[present] = np.arange(len(present))
        return present, lut[ids]
    unique, inverse = np.unique(ids, return_inverse=True)
    return unique, inverse.reshape(ids.shape)
