"""Panoptic fusion: semantic logits, center heatmap and offsets -> panoptic ids.

Follows Panoptic-DeepLab (Cheng et al., CVPR 2020) exactly as Detectron2's
``projects/Panoptic-DeepLab/panoptic_deeplab/post_processing.py`` computes it for
Cityscapes (same centers, same grouping, same instance numbering), but vectorised:
Detectron2 builds a [centers x pixels] distance tensor and loops over instances in
Python; here each thing pixel is compared only with the few centers that can be
nearest to it (an exact pruning), and the merge is a handful of bincounts.

:func:`panoptic_fusion` is the entry point: :func:`find_instance_centers`, then the
grouping of thing pixels to their nearest center and the merge with the semantic
labels (the steps ``_group_pixels`` and ``_merge_semantic_and_instance`` are
Detectron2's functions of those names, kept for the tests that hold them against
Detectron2's own code).  :class:`PostprocessConfig` holds the settings of the fusion
and of the segment statistics that follow it (:mod:`.segment_stats`).

Every full-image pass counts (the time budget: docs/performance.md): passes are few,
on int32/uint8 where possible, and the slow torch CPU kernels are replaced by exact
equivalents (:mod:`.kernels`).  The logits are read once, for the argmax and the softmax
probability of the winning class together; the fusion hands that probability and the
map's segments on to the segment statistics, which would otherwise compute them again.
On CPU the work runs in lanes (:mod:`.parallel`); results do not depend on their number.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from . import native
from .fields import check_int, check_number
from .kernels import (
    argmax_channels,
    count_values,
    flat_nonzero,
    indices_above,
    lookup,
    softmax_probability,
    window_extreme,
)
from .metadata import ClassMetadata
from .parallel import cpu_lanes, lanes_for, run_parallel

VOID = -1

# _group_pixels: at most _GRID x _GRID cells over the predicted locations.
_GRID = 64
# The cell side panoptic_fusion uses (pixels); any value gives the same result.
_FUSION_CELL = 16
# Relative (and absolute, px^2) slack of the nearest-center pruning bounds.
_SLACK = 1e-5
# The fewest thing pixels worth a lane of their own in the grouping.
_GROUP_LANE_PIXELS = 1 << 15
# Up to this many (pixel, center) pairs the grouping compares all of them (cheaper than the cells).
_DENSE_PAIRS = 1 << 18
# Up to this many centers the compiled grouping compares every center (native.py); more use the cells.
_COMPILED_CENTERS = 64


@dataclass(frozen=True)
class PostprocessConfig:
    """Fusion and segment-depth settings (defaults: Detectron2's Cityscapes values).

    center_threshold: heatmap values <= this are not centers.
    nms_kernel: max-pool window for center NMS.
    top_k: at most ``top_k - 1`` centers survive (Detectron2 keeps scores strictly
        above the top_k-th one).
    stuff_area: stuff classes with fewer unassigned pixels become void.
    thing_area: thing segments with fewer pixels become void (0: keep all, as Detectron2);
        at low resolution most few-pixel instances are false positives.
    depth_erosion_px: erode each segment by this many pixels before its depth
        statistics (edges bleed depth from neighbours); a segment that erosion
        would erase keeps its uneroded pixels.
    robust_trim: fraction cut from each end for ``depth_robust`` (trimmed mean).
    """

    center_threshold: float = 0.1
    nms_kernel: int = 7
    top_k: int = 200
    stuff_area: int = 2048
    thing_area: int = 0
    depth_erosion_px: int = 0
    robust_trim: float = 0.1

    def __post_init__(self) -> None:
        """Every field checked (type, range, finite); ``ValueError`` names the field and value."""
        check_number("center_threshold", self.center_threshold, 0.0, 1.0)
        check_int("nms_kernel", self.nms_kernel, 1, 255)
        if self.nms_kernel % 2 == 0:
            raise ValueError(f"nms_kernel must be odd and >= 1, got {self.nms_kernel}")
        check_int("top_k", self.top_k, 1, 100_000)
        check_int("stuff_area", self.stuff_area, 0, 2**31 - 1)
        check_int("thing_area", self.thing_area, 0, 2**31 - 1)
        check_int("depth_erosion_px", self.depth_erosion_px, 0, 1024)
        check_number("robust_trim", self.robust_trim, 0.0, 0.5)
        if not self.robust_trim < 0.5:
            raise ValueError(f"robust_trim must be in [0, 0.5), got {self.robust_trim}")

    def to_dict(self) -> dict[str, float | int]:
        """Plain dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, float | int]) -> PostprocessConfig:
        """Inverse of :meth:`to_dict` (unknown keys ignored: newer files stay readable)."""
        if not isinstance(d, dict):
            raise ValueError(f"postprocess settings must be a mapping, got {d!r}")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})  # type: ignore[arg-type]


@dataclass
class FusionOutput:
    """Result of :func:`panoptic_fusion` (all on the input tensors' device).

    panoptic: [H, W] int32 ids (``class * label_divisor + k``, void -1).
    semantic: [H, W] argmax of the logits (uint8 on the CPU for up to 255 classes, else int64).
    centers:  [K, 2] int64 (y, x) in raster order.
    segments: the panoptic map's segments (see :class:`SegmentIndex`).
    class_probability: [H, W] softmax probability of each pixel's segment class (a thing
        pixel's instance class, else its argmax class), on the CPU from the argmax's pass
        over the logits; None off the CPU.

    ``segments`` and ``class_probability`` are what
    :func:`~.segment_stats.segment_depth_statistics` would otherwise compute again from the
    panoptic map and the logits.
    """

    panoptic: Tensor
    semantic: Tensor
    centers: Tensor
    segments: SegmentIndex | None = None
    class_probability: Tensor | None = None


@dataclass
class SegmentIndex:
    """The segments of a panoptic map, numbered in ascending id order.

    ids: [n] int64 ascending panoptic ids (void excluded).
    seg: [H, W] int32 index into ``ids`` of each pixel's segment (void: n).
    """

    ids: Tensor
    seg: Tensor


def panoptic_fusion(
    sem_logits: Tensor,
    center: Tensor,
    offset: Tensor,
    *,
    classes: ClassMetadata,
    config: PostprocessConfig,
) -> FusionOutput:
    """Semantic logits [C,H,W], center [1,H,W], offset [2,H,W] -> :class:`FusionOutput`.

    Thing pixels (semantic argmax in ``classes.thing_ids``) are grouped to the
    centers; without any center they stay void, as in Detectron2.  Same result as
    :func:`find_instance_centers` -> :func:`_group_pixels` ->
    :func:`_merge_semantic_and_instance`, without the full-size instance map.
    """
    num_classes = sem_logits.shape[0]
    with cpu_lanes(sem_logits.device) as lanes:
        found: list[Tensor] = []
        find = partial(
            find_instance_centers,
            center,
            threshold=config.center_threshold,
            nms_kernel=config.nms_kernel,
            top_k=config.top_k,
        )
        probability = torch.empty(sem_logits.shape[1:], dtype=sem_logits.dtype) if sem_logits.is_cpu else None
        labels = argmax_channels(
            sem_logits, lanes=lanes, also=[lambda: found.append(find())], top_probability=probability
        )
        centers = found[0]
        flat = labels.reshape(-1)  # [H*W] uint8 on CPU
        index = flat_nonzero(_in_classes(flat, classes.thing_ids, num_classes))
        area: list[Tensor] = []  # pixels per class, counted beside the grouping

        def count_area() -> None:
            area.append(count_values(flat, num_classes)[:num_classes])

        if centers.numel() and index.numel():
            member = _nearest_center_parallel(
                centers, offset, index, lanes=lanes_for(flat.numel(), lanes), also=[count_area]
            )
        else:
            index = member = index[:0]
            count_area()
        tables = _id_tables(
            flat,
            index,
            member,
            area=area[0],
            is_thing_class=class_flags(classes.thing_ids, num_classes, flat.device),
            num_classes=num_classes,
            label_divisor=classes.label_divisor,
            stuff_area=config.stuff_area,
            thing_area=config.thing_area,
            void_label=VOID,
            num_instances=centers.shape[0],
        )
        panoptic, ids, seg = _segments(tables, flat, index, member, lanes=lanes_for(flat.numel(), lanes))
        if probability is not None and tables.thing_class is not None:
            _instance_class_probability(probability, sem_logits, tables.thing_class, flat, index, member)
    return FusionOutput(
        panoptic=panoptic.view(labels.shape),
        semantic=labels,
        centers=centers,
        segments=SegmentIndex(ids=ids, seg=seg.view(labels.shape)),
        class_probability=probability,
    )


def _instance_class_probability(
    probability: Tensor, sem_logits: Tensor, thing_class: Tensor, labels: Tensor, index: Tensor, member: Tensor
) -> None:
    """Where a thing pixel's instance has another class than the pixel's argmax, put that class's probability.

    ``probability`` [H, W] holds the argmax class's (changed in place); ``thing_class`` [K]
    the class of each instance; thing pixels ``index`` [N] (flat) belong to instances
    ``member`` [N]; ``labels`` [H*W] the argmax classes.
    """
    cls = thing_class.index_select(0, member)
    other = torch.nonzero(cls != labels.index_select(0, index).long())[:, 0]
    if other.numel():
        pixels = index.index_select(0, other)
        width = sem_logits.shape[-1]
        columns = sem_logits[:, torch.div(pixels, width, rounding_mode="floor"), pixels % width]  # [C, M]: few
        probability.view(-1).index_copy_(0, pixels, softmax_probability(columns, cls.index_select(0, other)))


def find_instance_centers(center: Tensor, *, threshold: float, nms_kernel: int, top_k: int | None) -> Tensor:
    """Instance centers from the heatmap: threshold, max-pool NMS, top-k.

    ``center``: [1, H, W] (or [H, W]) heatmap -> [K, 2] int64 (y, x), raster order.
    As Detectron2: values <= threshold become -1; every pixel equal to its
    ``nms_kernel`` neighbourhood max survives (a plateau gives several centers);
    with ``top_k``, only scores strictly above max(k-th best, 0) are kept.
    """
    heat = center.reshape(center.shape[-2:])  # [H, W]
    # Detectron2 pools the thresholded map; for a pixel above max(threshold, 0) that
    # pool equals the pool of the raw map (its window maximum is above the threshold
    # too), and only such pixels can survive the final "> max(k-th, 0)" test.
    with cpu_lanes(heat.device):
        candidates = indices_above(heat, max(threshold, 0.0))  # raster order; few pixels
        flat = heat.reshape(-1)
        value = flat.index_select(0, candidates)
        pooled = window_extreme(heat, nms_kernel, largest=True).reshape(-1).index_select(0, candidates)
        keep = torch.nonzero(value == pooled)[:, 0]
        peak, scores = candidates.index_select(0, keep), value.index_select(0, keep)
        width = heat.shape[1]
        points = torch.stack((torch.div(peak, width, rounding_mode="floor"), peak % width), 1)
    if top_k is None:
        return points
    k = min(top_k, heat.numel())
    if points.shape[0] < k:  # the k-th best score is <= 0: every positive peak stays
        return points
    kth = torch.topk(scores, k).values[-1]
    return points[scores > kth]


def _group_pixels(centers: Tensor, offset: Tensor, mask: Tensor, *, cell: int = 32) -> Tensor:
    """Assign each masked pixel to the center nearest to where its offset points.

    ``centers`` [K, 2] (y, x); ``offset`` [2, H, W] (dy, dx); ``mask`` [H, W] bool.
    Returns [H, W] int64: 0 outside the mask, ``k + 1`` for center ``k``.  Ties go
    to the lowest center index, as ``torch.argmin`` in Detectron2; a non-finite
    predicted location goes to center 0, as Detectron2's argmin over NaN/inf does.

    Exact pruning: predicted locations are binned into square cells (side at least
    ``cell`` pixels); a center can be nearest to some point of a cell only if its
    distance to the cell is at most the smallest farthest-distance of any center to
    that cell.  Each pixel then compares against its cell's candidates only (a
    handful, instead of all K).
    """
    h, w = mask.shape
    out = torch.zeros(h * w, dtype=torch.int64, device=mask.device)
    with cpu_lanes(mask.device) as lanes:
        index = torch.nonzero(mask.reshape(-1))[:, 0]
        if centers.numel() and index.numel():
            member = _nearest_center_parallel(centers, offset, index, lanes=lanes, cell=cell)
            out.index_copy_(0, index, member + 1)
    return out.view(h, w)


def _nearest_center_parallel(
    centers: Tensor,
    offset: Tensor,
    index: Tensor,
    *,
    lanes: int,
    cell: int = _FUSION_CELL,
    also: Sequence[Callable[[], Any]] = (),
) -> Tensor:
    """:func:`_nearest_center` with the pixels split over ``lanes`` (each part is exact).

    A part has at least :data:`_GROUP_LANE_PIXELS` pixels: below that, its fixed cost (the
    cells' candidate tables) outweighs what it takes off the others.  ``also``: other tasks
    to run in the same lanes.
    """
    parts = lanes_for(index.numel(), lanes, per_lane=_GROUP_LANE_PIXELS)
    member = torch.empty_like(index)
    bounds = [index.numel() * i // parts for i in range(parts + 1)]

    compiled = (
        centers.shape[0] <= _COMPILED_CENTERS
        and offset.dtype == torch.float32
        and index.dtype == torch.int64
        and index.is_contiguous()
        and native.usable(offset)
    )

    def part(a: int, b: int) -> None:
        if compiled:  # every center for every pixel, compiled: the pruning's tables cost more for few centers
            native.nearest_center(offset, index[a:b], centers, member[a:b])
        else:
            member[a:b] = _nearest_center(centers, offset, index[a:b], cell=cell)

    run_parallel([*(partial(part, a, b) for a, b in itertools.pairwise(bounds) if b > a), *also], lanes)
    return member


def _nearest_center(centers: Tensor, offset: Tensor, index: Tensor, *, cell: int) -> Tensor:
    """For the flat pixel ``index`` [N]: index [N] int64 of the nearest of ``centers``."""
    width = offset.shape[-1]
    flat = offset.reshape(2, -1)
    pixel = index.to(torch.int32) if offset[0].numel() < 2**31 else index
    ys = torch.div(pixel, width, rounding_mode="floor")
    xs = pixel - ys * width
    # Predicted locations, with the same float ops as the dense reference.
    loc_y = ys.to(flat.dtype) + flat[0].index_select(0, index)
    loc_x = xs.to(flat.dtype) + flat[1].index_select(0, index)
    c = centers.to(flat.dtype)  # [K, 2]
    if index.numel() * c.shape[0] <= _DENSE_PAIRS:  # Detectron2's own computation: argmin of every distance
        d = (c[None, :, 0] - loc_y[:, None]).square_().add_((c[None, :, 1] - loc_x[:, None]).square_())
        return d.argmin(1)  # first minimum; a NaN distance (from a NaN location) counts as the minimum
    extent = torch.stack((*torch.aminmax(loc_y), *torch.aminmax(loc_x))).tolist()
    if all(math.isfinite(v) for v in extent):
        return _nearest_in_cells(c, loc_y, loc_x, extent, cell=cell)
    # Distances from a NaN/inf location are all NaN/inf: the dense argmin says center 0.
    best = torch.zeros_like(index)
    finite = torch.nonzero(torch.isfinite(loc_y) & torch.isfinite(loc_x))[:, 0]
    if finite.numel():
        loc_y, loc_x = loc_y[finite], loc_x[finite]
        extent = torch.stack((*torch.aminmax(loc_y), *torch.aminmax(loc_x))).tolist()
        best[finite] = _nearest_in_cells(c, loc_y, loc_x, extent, cell=cell)
    return best


def _nearest_in_cells(c: Tensor, loc_y: Tensor, loc_x: Tensor, extent: list[float], *, cell: int) -> Tensor:
    """Nearest center [N] int64 for finite locations ``loc_y``/``loc_x`` [N] (see _group_pixels).

    ``c`` [K, 2] float centers; ``extent`` = [y_min, y_max, x_min, x_max] of the locations.
    """
    num_centers, n = c.shape[0], loc_y.shape[0]
    device = c.device
    if num_centers == 1:
        return torch.zeros(n, dtype=torch.int64, device=device)
    y_min, y_max, x_min, x_max = extent
    lo_y, lo_x = math.floor(y_min), math.floor(x_min)
    side = max(float(cell), float(math.ceil((max(y_max - lo_y, x_max - lo_x) + 1.0) / _GRID)))
    grid_h, grid_w = int((y_max - lo_y) // side) + 1, int((x_max - lo_x) // side) + 1
    # Cell of each location (rounding may move a location on a border to the next
    # cell: the cells' half-pixel margin below covers it).
    cell_y = torch.sub(loc_y, lo_y).mul_(1.0 / side).floor_().clamp_(0, grid_h - 1)
    cell_x = torch.sub(loc_x, lo_x).mul_(1.0 / side).floor_().clamp_(0, grid_w - 1)
    cell_id = cell_y.mul_(grid_w).add_(cell_x).to(torch.int32)  # exact: < _GRID**2
    used = torch.nonzero(count_values(cell_id, grid_h * grid_w))[:, 0]  # [U]
    slot = torch.zeros(grid_h * grid_w, dtype=torch.int64, device=device)
    slot[used] = torch.arange(used.numel(), device=device)
    pixel_cell = slot.index_select(0, cell_id)  # [N] in [0, U)

    # Candidate centers per used cell, in float64.  Each cell is grown by half a pixel
    # on every side, so a location rounding onto a neighbouring cell is still inside.
    f64 = torch.float64
    margin = 0.5
    top = (torch.div(used, grid_w, rounding_mode="floor").to(f64) * side + lo_y - margin)[:, None]
    left = ((used % grid_w).to(f64) * side + lo_x - margin)[:, None]
    span = side + 2 * margin
    c64 = c.to(f64)
    near_y, far_y = _axis_distances(top, span, c64[None, :, 0])  # [U, K]
    near_x, far_x = _axis_distances(left, span, c64[None, :, 1])
    d_near = near_y.square() + near_x.square()
    bound = (far_y.square() + far_x.square()).amin(1, keepdim=True)
    # Slack: float32 distances err by ~1e-7 relatively; it only adds candidates.
    candidate = d_near <= bound * (1 + _SLACK) + _SLACK  # [U, K]
    width = int(candidate.sum(1).max())  # >= 1: the center attaining the bound qualifies
    # Each cell's candidates by distance to the cell (nearest first), padded with
    # center K (at infinity, distance inf).
    near_sorted, order = torch.where(candidate, d_near, math.inf).sort(dim=1, stable=True)
    near_sorted = near_sorted[:, :width]  # [U, width] float64, inf for padding
    table = torch.where(near_sorted.isfinite(), order[:, :width], num_centers)
    inf = c.new_full((1,), math.inf)
    c_y, c_x = torch.cat((c[:, 0], inf)), torch.cat((c[:, 1], inf))

    # Every pixel takes its cell's first candidate; a later candidate is tried only
    # while it can still be as near as the best so far (its distance to the cell <=
    # the best distance, with slack): for locations near a center that is rare.
    # Ties go to the lower center index, as argmin's.
    best = table[:, 0].index_select(0, pixel_cell)
    best_d = _squared_distance(c_y, c_x, best, loc_y, loc_x)
    if width == 1:
        return best
    # Pixels that may need the second candidate: best_d >= (near - abs) / (1 + rel),
    # lowered a little more so that the float32 threshold errs on the side of trying.
    second = ((near_sorted[:, 1] - _SLACK) / (1 + _SLACK) * (1 - 1e-6)).to(loc_y.dtype)
    active = torch.nonzero(best_d >= second.index_select(0, pixel_cell))[:, 0]
    table, table_near = table.reshape(-1), near_sorted.reshape(-1)  # [U * width]
    base = pixel_cell.index_select(0, active) * width
    for j in range(1, width):
        if j > 1:
            near = table_near.index_select(0, base + j)
            keep = near <= best_d.index_select(0, active).to(f64) * (1 + _SLACK) + _SLACK
            active, base = active[keep], base[keep]
        if active.numel() == 0:
            break
        k = table.index_select(0, base + j)
        d = _squared_distance(c_y, c_x, k, loc_y.index_select(0, active), loc_x.index_select(0, active))
        held, held_d = best.index_select(0, active), best_d.index_select(0, active)
        better = (d < held_d) | ((d == held_d) & (k < held))
        won = active[better]
        best.index_copy_(0, won, k[better])
        best_d.index_copy_(0, won, d[better])
    return best


def _axis_distances(lo: Tensor, span: float, c: Tensor) -> tuple[Tensor, Tensor]:
    """Nearest and farthest 1-D distance from coordinates ``c`` to intervals [lo, lo + span]."""
    near = (lo - c).clamp(min=0) + (c - (lo + span)).clamp(min=0)
    far = torch.maximum((lo - c).abs(), (lo + span - c).abs())
    return near, far


def _squared_distance(c_y: Tensor, c_x: Tensor, k: Tensor, loc_y: Tensor, loc_x: Tensor) -> Tensor:
    """Squared distance [N] from the locations to centers ``k`` [N] (reference float ops)."""
    return (c_y.index_select(0, k) - loc_y).square() + (c_x.index_select(0, k) - loc_x).square()


def _merge_semantic_and_instance(
    semantic: Tensor,
    instance: Tensor,
    *,
    thing_ids: Sequence[int],
    num_classes: int,
    label_divisor: int,
    stuff_area: int,
    thing_area: int = 0,
    void_label: int = VOID,
) -> Tensor:
    """Panoptic ids from semantic labels and instance assignment (Detectron2's merge).

    ``semantic`` [H, W] int64 class per pixel; ``instance`` [H, W] int64 (0 = none).
    Each instance takes the most frequent class of its pixels (lowest class on
    ties, like ``torch.mode``); instances are numbered from 1 per class in
    ascending instance order, skipping empty ones and those under ``thing_area``
    pixels (which become void).  Each stuff class with at least ``stuff_area``
    unassigned pixels becomes ``class * label_divisor``; everything else is
    ``void_label``.  Returns [H, W] int32.
    """
    flat = instance.reshape(-1)
    with cpu_lanes(flat.device):
        index = torch.nonzero(flat > 0)[:, 0]
        member = flat.index_select(0, index) - 1
        flat_semantic = semantic.reshape(-1)
        tables = _id_tables(
            flat_semantic,
            index,
            member,
            is_thing_class=class_flags(thing_ids, num_classes, semantic.device),
            num_classes=num_classes,
            label_divisor=label_divisor,
            stuff_area=stuff_area,
            thing_area=thing_area,
            void_label=void_label,
        )
        panoptic = _panoptic_map(tables, flat_semantic, index, member)
    return panoptic.view(semantic.shape)


def class_flags(ids: Sequence[int], num_classes: int, device: torch.device) -> Tensor:
    """[num_classes] bool: True for the classes ``ids`` (kept per device: no copy to a GPU per frame)."""
    return _class_flags(tuple(ids), num_classes, device).clone()


@functools.lru_cache(maxsize=64)
def _class_flags(ids: tuple[int, ...], num_classes: int, device: torch.device) -> Tensor:
    flags = torch.zeros(num_classes, dtype=torch.bool)
    flags[list(ids)] = True
    return flags.to(device)


def _in_classes(labels: Tensor, ids: Sequence[int], num_classes: int) -> Tensor:
    """``labels`` in ``ids`` (bool, same shape): one or two comparisons per run of ids.

    On CPU in numpy, whose compares into bool are vectorised (4x faster than torch's here).
    """
    runs: list[list[int]] = []
    for i in sorted(set(ids)):
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    cpu = labels.device.type == "cpu"
    values: Any = labels.numpy() if cpu else labels
    mask: Any = np.zeros(labels.shape, dtype=bool) if cpu else torch.zeros_like(labels, dtype=torch.bool)
    for first, last in runs:
        if first == last:
            mask |= values == first
        elif last == num_classes - 1:  # e.g. Cityscapes things: trainIds 11..18 of 19
            mask |= values >= first
        else:
            mask |= (values >= first) & (values <= last)
    return torch.from_numpy(mask) if cpu else mask


@dataclass
class _IdTables:
    """The panoptic id of each class's unassigned pixels and of each instance.

    stuff_value: [C] int32 (void for thing classes and stuff under ``stuff_area``).
    stuff_pixels: [C] int64 unassigned pixels per class.
    thing_value: [K] int32 per instance (void when empty or under ``thing_area``); None without thing pixels.
    thing_class: [K] int64 class of each instance (its pixels' most frequent); None without thing pixels.
    """

    stuff_value: Tensor
    stuff_pixels: Tensor
    thing_value: Tensor | None
    thing_class: Tensor | None = None


def _id_tables(
    semantic: Tensor,
    index: Tensor,
    member: Tensor,
    *,
    is_thing_class: Tensor,
    num_classes: int,
    label_divisor: int,
    stuff_area: int,
    thing_area: int,
    void_label: int,
    num_instances: int | None = None,
    area: Tensor | None = None,
) -> _IdTables:
    """The id tables of the merge of :func:`_merge_semantic_and_instance`, from flat maps (void: ``void_label``).

    ``semantic`` [P] integer classes; pixels ``index`` [N] belong to the 0-based
    instances ``member`` [N]; all other pixels are unassigned. ``num_instances``: more
    than the largest ``member`` (the number of centers; None: read from ``member``, a
    host sync on a GPU); instances without pixels get no number either way. ``area``: the
    pixels per class of ``semantic`` when the caller has counted them.
    """
    device = semantic.device
    if area is None:
        area = count_values(semantic, num_classes)[:num_classes]  # uint8 is fastest
    thing_value = cls = None
    if index.numel():
        num_inst = int(member.max()) + 1 if num_instances is None else num_instances
        if _compiled_maps(semantic, index, member):
            counts = native.instance_class_counts(semantic, index, member, num_inst, num_classes)
        else:
            sem_at = semantic.index_select(0, index).long()
            counts = count_values(member * num_classes + sem_at, num_inst * num_classes).view(num_inst, num_classes)
        present = counts.sum(1) >= max(thing_area, 1)
        cls = counts.argmax(1)  # first maximum = lowest class on ties
        per_class = F.one_hot(cls, num_classes) * present[:, None]
        number = per_class.cumsum(0).gather(1, cls[:, None])[:, 0]
        thing_value = torch.where(present, cls * label_divisor + number, void_label).to(torch.int32)
        area = area - counts.sum(0)  # unassigned
    keep = (area >= stuff_area) & ~is_thing_class
    stuff_value = torch.arange(num_classes, device=device) * label_divisor
    stuff_value = torch.where(keep, stuff_value, void_label).to(torch.int32)
    return _IdTables(stuff_value=stuff_value, stuff_pixels=area, thing_value=thing_value, thing_class=cls)


def _compiled_maps(semantic: Tensor, index: Tensor, member: Tensor) -> bool:
    """Whether the compiled passes (:mod:`.native`) take the class counts and the maps: uint8 classes, CPU."""
    return semantic.dtype == torch.uint8 and member.dtype == torch.int64 and native.usable(semantic, index, member)


def _panoptic_map(tables: _IdTables, semantic: Tensor, index: Tensor, member: Tensor) -> Tensor:
    """The panoptic map [P] int32 ``tables`` give: each pixel's class value, then each instance pixel's id."""
    panoptic = lookup(tables.stuff_value, semantic)
    if tables.thing_value is not None:
        panoptic.index_copy_(0, index, tables.thing_value.index_select(0, member))
    return panoptic


def _segments(
    tables: _IdTables, semantic: Tensor, index: Tensor, member: Tensor, *, lanes: int = 1
) -> tuple[Tensor, Tensor, Tensor]:
    """The panoptic map [P] int32 ``tables`` give (void: :data:`VOID`) and its segments: ids [n] int64, seg [P] int32.

    A kept stuff class is a segment when it has unassigned pixels; an instance, when it has an id.
    """
    stuff = (tables.stuff_value != VOID) & (tables.stuff_pixels > 0)
    values = [tables.stuff_value[stuff]]
    if tables.thing_value is not None:
        values.append(tables.thing_value[tables.thing_value != VOID])
    ids = torch.sort(torch.cat(values).long()).values
    n = ids.numel()
    stuff_seg = torch.where(stuff, torch.searchsorted(ids, tables.stuff_value.long()), n).to(torch.int32)
    things = None  # each instance's (value, segment)
    if tables.thing_value is not None:
        thing = tables.thing_value.long()
        things = (tables.thing_value, torch.where(thing != VOID, torch.searchsorted(ids, thing), n).to(torch.int32))
    if _compiled_maps(semantic, index, member):
        panoptic, seg = native.paint(semantic, index, member, (tables.stuff_value, stuff_seg), things, lanes)
        return panoptic, ids, seg
    panoptic = _panoptic_map(tables, semantic, index, member)
    seg = lookup(stuff_seg, semantic)
    if things is not None:
        seg.index_copy_(0, index, things[1].index_select(0, member))
    return panoptic, ids, seg
