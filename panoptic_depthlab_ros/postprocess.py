"""Panoptic fusion and per-segment depth: pure tensor functions, no ROS, no config files.

Fusion follows Panoptic-DeepLab (Cheng et al., CVPR 2020) exactly as Detectron2's
``projects/Panoptic-DeepLab/panoptic_deeplab/post_processing.py`` computes it for
Cityscapes (same centers, same grouping, same instance numbering), but vectorised:
Detectron2 builds a [centers x pixels] distance tensor and loops over instances in
Python; here each thing pixel is compared only with the few centers that can be
nearest to it (an exact pruning), and the merge is a handful of bincounts.

Steps: :func:`find_instance_centers` -> :func:`group_pixels` ->
:func:`merge_semantic_and_instance` (together :func:`panoptic_fusion`), then
:func:`segment_depth_statistics` for the SegmentDepth records.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .metadata import ClassMetadata
from .result import SegmentDepth

VOID = -1


@dataclass(frozen=True)
class PostprocessConfig:
    """Fusion and segment-depth settings (defaults: Detectron2's Cityscapes values).

    center_threshold: heatmap values <= this are not centers.
    nms_kernel: max-pool window for center NMS.
    top_k: at most ``top_k - 1`` centers survive (Detectron2 keeps scores strictly
        above the top_k-th one).
    stuff_area: stuff classes with fewer unassigned pixels become void.
    depth_erosion_px: erode each segment by this many pixels before its depth
        statistics (edges bleed depth from neighbours); a segment that erosion
        would erase keeps its uneroded pixels.
    robust_trim: fraction cut from each end for ``depth_robust`` (trimmed mean).
    """

    center_threshold: float = 0.1
    nms_kernel: int = 7
    top_k: int = 200
    stuff_area: int = 2048
    depth_erosion_px: int = 0
    robust_trim: float = 0.1

    def __post_init__(self) -> None:
        if self.nms_kernel < 1 or self.nms_kernel % 2 == 0:
            raise ValueError(f"nms_kernel must be odd and >= 1, got {self.nms_kernel}")
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.stuff_area < 0 or self.depth_erosion_px < 0:
            raise ValueError("stuff_area and depth_erosion_px must be >= 0")
        if not 0.0 <= self.robust_trim < 0.5:
            raise ValueError(f"robust_trim must be in [0, 0.5), got {self.robust_trim}")

    def to_dict(self) -> dict[str, float | int]:
        """Plain dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, float | int]) -> PostprocessConfig:
        """Inverse of :meth:`to_dict` (unknown keys ignored: newer files stay readable)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})  # type: ignore[arg-type]


@dataclass
class FusionOutput:
    """Result of :func:`panoptic_fusion` (all on the input tensors' device).

    panoptic: [H, W] int32 ids (``class * label_divisor + k``, void -1).
    semantic: [H, W] int64 argmax of the logits.
    centers:  [K, 2] int64 (y, x) in raster order.
    """

    panoptic: Tensor
    semantic: Tensor
    centers: Tensor


def crop_and_resize(t: Tensor, image_size: tuple[int, int], output_size: tuple[int, int]) -> Tensor:
    """Detectron2's ``sem_seg_postprocess``: crop padding, then bilinear resize.

    ``t``: [C, Hp, Wp] -> [C, *output_size].  Values are not rescaled (Detectron2
    does not rescale offsets either; callers that resize scale them).
    """
    t = t[:, : image_size[0], : image_size[1]]
    if tuple(t.shape[-2:]) == tuple(output_size):
        return t
    return F.interpolate(t[None], size=output_size, mode="bilinear", align_corners=False)[0]


def find_instance_centers(center: Tensor, *, threshold: float, nms_kernel: int, top_k: int | None) -> Tensor:
    """Instance centers from the heatmap: threshold, max-pool NMS, top-k.

    ``center``: [1, H, W] (or [H, W]) heatmap -> [K, 2] int64 (y, x), raster order.
    As Detectron2: values <= threshold become -1; every pixel equal to its
    ``nms_kernel`` neighbourhood max survives (a plateau gives several centers);
    with ``top_k``, only scores strictly above max(k-th best, 0) are kept.
    """
    heat = center.reshape(1, *center.shape[-2:])
    heat = F.threshold(heat, threshold, -1.0)
    pooled = F.max_pool2d(heat[None], kernel_size=nms_kernel, stride=1, padding=(nms_kernel - 1) // 2)[0]
    heat = torch.where(heat == pooled, heat, torch.full_like(heat, -1.0))[0]
    if top_k is None:
        return torch.nonzero(heat > 0)
    k = min(top_k, heat.numel())
    kth = torch.topk(heat.flatten(), k).values[-1].clamp(min=0)
    return torch.nonzero(heat > kth)


def group_pixels(centers: Tensor, offset: Tensor, mask: Tensor, *, cell: int = 32) -> Tensor:
    """Assign each masked pixel to the center nearest to where its offset points.

    ``centers`` [K, 2] (y, x); ``offset`` [2, H, W] (dy, dx); ``mask`` [H, W] bool.
    Returns [H, W] int64: 0 outside the mask, ``k + 1`` for center ``k``.  Ties go
    to the lowest center index, as ``torch.argmin`` in Detectron2.

    Exact pruning: predicted locations are binned into square cells; a center can
    be nearest to some point of a cell only if its distance to the cell is at most
    the smallest farthest-distance of any center to that cell.  Each pixel then
    compares against its cell's candidates only (a handful, instead of all K).
    """
    h, w = mask.shape
    out = torch.zeros((h, w), dtype=torch.int64, device=mask.device)
    ys, xs = torch.nonzero(mask, as_tuple=True)
    if centers.numel() == 0 or ys.numel() == 0:
        return out
    loc = torch.stack((ys.to(offset.dtype) + offset[0, ys, xs], xs.to(offset.dtype) + offset[1, ys, xs]), 1)
    c = centers.to(offset.dtype)  # [K, 2]
    num_centers = c.shape[0]
    # Cells over the predicted locations' extent, at most ~64 x 64 of them.
    lo = loc.amin(0).floor()
    extent = float((loc.amax(0) - lo).max()) + 1.0
    cell_size = max(float(cell), math.ceil(extent / 64.0))
    cell_yx = ((loc - lo) / cell_size).floor().long()
    grid_w = int(cell_yx[:, 1].max()) + 1
    cell_id = cell_yx[:, 0] * grid_w + cell_yx[:, 1]
    used, pixel_cell = torch.unique(cell_id, return_inverse=True)
    top_left = torch.stack((used // grid_w, used % grid_w), 1).to(offset.dtype) * cell_size + lo  # [U, 2]
    near = (top_left[:, None, :] - c[None]).clamp(min=0) + (c[None] - (top_left[:, None, :] + cell_size)).clamp(min=0)
    far = torch.maximum((top_left[:, None, :] - c[None]).abs(), (top_left[:, None, :] + cell_size - c[None]).abs())
    d_near = near.square().sum(-1)  # [U, K]
    d_far = far.square().sum(-1)
    bound = d_far.amin(1, keepdim=True)
    candidate = d_near <= bound * (1 + 1e-5) + 1e-3  # slack only adds candidates, never loses one
    index = torch.arange(num_centers, device=c.device)
    keyed = torch.where(candidate, index[None], torch.full_like(index[None], num_centers))
    width = int(candidate.sum(1).max())
    cand = keyed.sort(dim=1).values[:, :width]  # [U, M] ascending center index, padded with K
    c_pad = torch.cat((c, torch.full((1, 2), float("inf"), dtype=c.dtype, device=c.device)))
    best = torch.empty(loc.shape[0], dtype=torch.int64, device=c.device)
    chunk = max(1, (1 << 24) // max(width, 1))
    for start in range(0, loc.shape[0], chunk):
        sl = slice(start, start + chunk)
        cp = cand[pixel_cell[sl]]  # [n, M]
        cc = c_pad[cp]  # [n, M, 2]
        dist = (cc[..., 0] - loc[sl, None, 0]).square() + (cc[..., 1] - loc[sl, None, 1]).square()
        best[sl] = cp.gather(1, dist.argmin(1, keepdim=True))[:, 0]
    out[ys, xs] = best + 1
    return out


def merge_semantic_and_instance(
    semantic: Tensor, instance: Tensor, *, thing_ids: Sequence[int], num_classes: int,
    label_divisor: int, stuff_area: int, void_label: int = VOID,
) -> Tensor:
    """Panoptic ids from semantic labels and instance assignment (Detectron2's merge).

    ``semantic`` [H, W] int64 class per pixel; ``instance`` [H, W] int64 (0 = none).
    Each instance takes the most frequent class of its pixels (lowest class on
    ties, like ``torch.mode``); instances are numbered from 1 per class in
    ascending instance order, skipping empty ones.  Each stuff class with at
    least ``stuff_area`` unassigned pixels becomes ``class * label_divisor``;
    everything else is ``void_label``.  Returns [H, W] int32.
    """
    device = semantic.device
    panoptic = torch.full(semantic.shape, void_label, dtype=torch.int64, device=device)
    is_thing_class = torch.zeros(num_classes, dtype=torch.bool, device=device)
    is_thing_class[list(thing_ids)] = True
    assigned = instance > 0
    ys, xs = torch.nonzero(assigned, as_tuple=True)
    if ys.numel():
        inst = instance[ys, xs] - 1
        num_inst = int(inst.max()) + 1
        counts = torch.bincount(inst * num_classes + semantic[ys, xs], minlength=num_inst * num_classes)
        counts = counts.view(num_inst, num_classes)
        present = counts.sum(1) > 0
        cls = counts.argmax(1)  # first maximum = lowest class on ties
        per_class = F.one_hot(cls, num_classes) * present[:, None]
        number = per_class.cumsum(0).gather(1, cls[:, None])[:, 0]
        panoptic[ys, xs] = (cls * label_divisor + number)[inst]
    free = ~assigned
    area = torch.bincount(semantic[free], minlength=num_classes)[:num_classes]
    keep = (area >= stuff_area) & ~is_thing_class
    stuff = free & keep[semantic]
    panoptic[stuff] = semantic[stuff] * label_divisor
    return panoptic.to(torch.int32)


def panoptic_fusion(
    sem_logits: Tensor, center: Tensor, offset: Tensor, *, classes: ClassMetadata, config: PostprocessConfig,
) -> FusionOutput:
    """Semantic logits [C,H,W], center [1,H,W], offset [2,H,W] -> :class:`FusionOutput`.

    Thing pixels (semantic argmax in ``classes.thing_ids``) are grouped to the
    centers; without any center they stay void, as in Detectron2.
    """
    semantic = sem_logits.argmax(0)
    is_thing_class = torch.zeros(sem_logits.shape[0], dtype=torch.bool, device=semantic.device)
    is_thing_class[list(classes.thing_ids)] = True
    thing_mask = is_thing_class[semantic]
    centers = find_instance_centers(
        center, threshold=config.center_threshold, nms_kernel=config.nms_kernel, top_k=config.top_k
    )
    instance = group_pixels(centers, offset, thing_mask)
    panoptic = merge_semantic_and_instance(
        semantic, instance, thing_ids=classes.thing_ids, num_classes=sem_logits.shape[0],
        label_divisor=classes.label_divisor, stuff_area=config.stuff_area,
    )
    return FusionOutput(panoptic=panoptic, semantic=semantic, centers=centers)


def erode_labels(labels: Tensor, radius: int) -> Tensor:
    """Pixels whose whole (2r+1)^2 window carries their own label ([H, W] bool).

    Image borders do not erode (only other labels do); void (-1) pixels are False.
    """
    if radius <= 0:
        return labels >= 0
    x = labels.to(torch.float64)[None, None]  # ids < 2**53 stay exact
    k = 2 * radius + 1
    hi = F.max_pool2d(F.pad(x, (radius,) * 4, value=-math.inf), k, stride=1)
    lo = -F.max_pool2d(F.pad(-x, (radius,) * 4, value=-math.inf), k, stride=1)
    return ((hi == lo)[0, 0]) & (labels >= 0)


def segment_depth_statistics(
    panoptic: Tensor, depth: Tensor, *, classes: ClassMetadata, config: PostprocessConfig,
    sem_logits: Tensor | None = None, center: Tensor | None = None,
    camera_k: np.ndarray | Sequence[Sequence[float]] | None = None,
) -> list[SegmentDepth]:
    """One :class:`SegmentDepth` per panoptic id (ascending), with scatter ops only.

    ``panoptic`` [H, W] int32; ``depth`` [H, W] meters (invalid: NaN, inf or <= 0);
    ``sem_logits`` [C, H, W] and ``center`` [1, H, W] give the scores (NaN without
    them); ``camera_k`` is the 3x3 pinhole matrix for the 3D centroid (NaN without).
    Area and bbox use the whole segment; depth statistics use its valid pixels
    after erosion (see :class:`PostprocessConfig`).  Median is the lower median;
    ``depth_robust`` the mean between the ``robust_trim`` and ``1 - robust_trim``
    ranks; std the population standard deviation.
    """
    device = panoptic.device
    h, w = panoptic.shape
    flat = panoptic.reshape(-1).to(torch.int64)
    member = flat >= 0
    ids, seg = torch.unique(flat[member], return_inverse=True)  # sorted ascending
    n = int(ids.numel())
    if n == 0:
        return []
    pix = torch.nonzero(member)[:, 0]
    py, px = pix // w, pix % w
    f64 = torch.float64
    area = torch.bincount(seg, minlength=n)
    big = torch.iinfo(torch.int64).max
    y_min = torch.full((n,), big, device=device).scatter_reduce(0, seg, py, "amin")
    y_max = torch.full((n,), -1, device=device).scatter_reduce(0, seg, py, "amax")
    x_min = torch.full((n,), big, device=device).scatter_reduce(0, seg, px, "amin")
    x_max = torch.full((n,), -1, device=device).scatter_reduce(0, seg, px, "amax")
    category = torch.div(ids, classes.label_divisor, rounding_mode="floor")

    # Scores: mean softmax probability of the segment's class (x center value for things).
    score = torch.full((n,), math.nan, dtype=f64, device=device)
    if sem_logits is not None:
        logits = sem_logits.reshape(sem_logits.shape[0], -1)
        log_norm = torch.logsumexp(logits[:, pix], 0)
        prob = torch.exp(logits[category[seg], pix] - log_norm).to(f64)
        score = torch.zeros(n, dtype=f64, device=device).index_add_(0, seg, prob) / area
        if center is not None:
            cy = (torch.zeros(n, dtype=f64, device=device).index_add_(0, seg, py.to(f64)) / area).long()
            cx = (torch.zeros(n, dtype=f64, device=device).index_add_(0, seg, px.to(f64)) / area).long()
            thing = torch.tensor([classes.is_thing(int(c)) for c in category.tolist()], device=device)
            score = torch.where(thing, score * center.reshape(h, w)[cy, cx].to(f64), score)

    # Depth statistics over valid (eroded) pixels.
    d = depth.reshape(-1)[pix].to(torch.float32)
    valid = torch.isfinite(d) & (d > 0)
    use = valid
    if config.depth_erosion_px > 0:
        eroded = erode_labels(panoptic, config.depth_erosion_px).reshape(-1)[pix] & valid
        eroded_count = torch.bincount(seg[eroded], minlength=n)
        use = eroded | (valid & (eroded_count == 0)[seg])
    s_seg, s_d = seg[use], d[use]
    s_u, s_v = px[use].to(f64), py[use].to(f64)
    count = torch.bincount(s_seg, minlength=n)
    z = s_d.to(f64)
    zeros = torch.zeros(n, dtype=f64, device=device)
    sum_z = zeros.clone().index_add_(0, s_seg, z)
    sum_zz = zeros.clone().index_add_(0, s_seg, z * z)
    cnt = count.to(f64)
    mean = sum_z / cnt
    std = (sum_zz / cnt - mean * mean).clamp(min=0).sqrt()
    # Sort by (segment, depth) in one int64 sort: positive float32 bit patterns order like the floats.
    key = (s_seg << 32) | s_d.view(torch.int32).to(torch.int64)
    order = torch.argsort(key)
    sorted_d = s_d[order].to(f64)
    start = torch.cumsum(count, 0) - count
    last = max(int(sorted_d.numel()) - 1, 0)
    has = count > 0
    d_min = torch.where(has, sorted_d[start.clamp(max=last)] if sorted_d.numel() else zeros, math.nan)
    median_idx = (start + (count - 1).clamp(min=0) // 2).clamp(max=last)
    d_median = torch.where(has, sorted_d[median_idx] if sorted_d.numel() else zeros, math.nan)
    csum = torch.cat((torch.zeros(1, dtype=f64, device=device), torch.cumsum(sorted_d, 0)))
    cut = torch.floor(cnt * config.robust_trim).long()
    lo_i, hi_i = start + cut, start + count - cut
    robust = (csum[hi_i] - csum[lo_i]) / (hi_i - lo_i).to(f64)

    centroid = torch.full((n, 3), math.nan, dtype=f64, device=device)
    if camera_k is not None:
        k = np.asarray(camera_k, dtype=np.float64).reshape(3, 3)
        fx, fy, cx0, cy0 = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
        sum_uz = zeros.clone().index_add_(0, s_seg, s_u * z)
        sum_vz = zeros.clone().index_add_(0, s_seg, s_v * z)
        centroid = torch.stack(((sum_uz / cnt - cx0 * mean) / fx, (sum_vz / cnt - cy0 * mean) / fy, mean), 1)

    rows = torch.stack(
        [ids.to(f64), category.to(f64), score, area.to(f64), x_min.to(f64), y_min.to(f64), x_max.to(f64),
         y_max.to(f64), cnt, mean, d_median, d_min, std, robust, *centroid.T], 1
    ).cpu().numpy()
    out = []
    for r in rows:  # one record per segment (tens to hundreds), no per-pixel work here
        cat = int(r[1])
        out.append(
            SegmentDepth(
                id=int(r[0]), category_id=cat, label=classes.names[cat], is_thing=classes.is_thing(cat),
                score=float(r[2]), area=int(r[3]), x_min=int(r[4]), y_min=int(r[5]), x_max=int(r[6]),
                y_max=int(r[7]), depth_valid_pixels=int(r[8]), depth_mean=float(r[9]),
                depth_median=float(r[10]), depth_min=float(r[11]), depth_std=float(r[12]),
                depth_robust=float(r[13]), centroid=(float(r[14]), float(r[15]), float(r[16])),
            )
        )
    return out
