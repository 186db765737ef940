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

Cost (issue 3, ``bench/bench_network.py``): fusion + segment depth at 1024 x 2048
must stay within 0.5 s on 2 CPU cores even with ~200 centers.  So every full-image
pass counts: passes are few, on int32/uint8 where possible, and three torch CPU
kernels that are slow for these shapes are replaced by exact equivalents: argmax over
the class axis (a running maximum), the NMS max-pool (separable sliding maxima) and
the (segment, depth) sort behind medians and trimmed means (a per-segment histogram
of the float bits that sorts only the few buckets holding the wanted ranks).

Threads: on CPU the public functions run torch ops on one intra-op thread and hand
whole blocks of work to ``torch.get_num_threads()`` Python threads instead (see
:func:`_cpu_lanes`); the caller's setting is restored.  Results do not depend on it.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .fields import check_int, check_number
from .metadata import ClassMetadata
from .result import SegmentDepth

VOID = -1

# group_pixels: at most _GRID x _GRID cells over the predicted locations.
_GRID = 64
# The cell side panoptic_fusion uses (pixels); any value gives the same result.
_FUSION_CELL = 16
# Relative (and absolute, px^2) slack of the nearest-center pruning bounds.
_SLACK = 1e-5
# Pixels per block of the per-pixel loops: keeps temporaries in cache (and reused).
_ARGMAX_CHUNK = 1 << 17
_PIXEL_CHUNK = 1 << 15
# At most this many threads share the blocks of one call (see _cpu_lanes).
_MAX_LANES = 4
# segment_depth_statistics: ids up to this use a lookup table instead of torch.unique,
# and the (segment x depth bucket) histogram holds at most this many bins.
_ID_TABLE_LIMIT = 1 << 22
_HIST_BINS = 1 << 19
# Bounding boxes from (row or column) x segment counts up to this size, else scatters.
_LINE_TABLE_LIMIT = 1 << 23


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


# ------------------------------------------------------------------ threads and blocks
@contextmanager
def _cpu_lanes(device: torch.device) -> Iterator[int]:
    """Run the body with torch's intra-op threads at 1; yield how many lanes to use.

    On CPU, torch splits every op over its OpenMP threads and each op then waits for
    all of them: with ~ms-long ops and the cores shared with other processes that
    wait is a scheduler time slice per op (measured 3-20x slower on 2 busy cores).
    So ops run single-threaded, and the caller's thread budget goes to lanes that
    take whole blocks of work (:func:`_run_parallel`) and never wait for each other.
    """
    if device.type != "cpu":
        yield 1
        return
    before = torch.get_num_threads()
    if before > 1:
        torch.set_num_threads(1)
    try:
        yield max(1, min(before, _MAX_LANES))
    finally:
        if before > 1:
            torch.set_num_threads(before)


def _run_parallel(tasks: Sequence[Callable[[], Any]], lanes: int) -> None:
    """Run every task once: the calling thread and ``lanes - 1`` helpers take them in order.

    Results must not depend on which thread runs a task (each task writes its own
    outputs).  Helpers use one intra-op thread and the caller's inference mode; the
    first exception is re-raised.
    """
    lanes = min(lanes, len(tasks))
    if lanes <= 1:
        for task in tasks:
            task()
        return
    counter = itertools.count()  # next() is atomic under the GIL
    errors: list[BaseException] = []
    inference = torch.is_inference_mode_enabled()

    def lane(helper: bool) -> None:
        try:
            if helper:
                torch.set_num_threads(1)
            with torch.inference_mode(inference):
                while not errors:
                    i = next(counter)
                    if i >= len(tasks):
                        return
                    tasks[i]()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            errors.append(exc)

    helpers = [threading.Thread(target=lane, args=(True,), daemon=True) for _ in range(lanes - 1)]
    for thread in helpers:
        thread.start()
    lane(False)
    for thread in helpers:
        thread.join()
    if errors:
        raise errors[0]


def _row_blocks(h: int, w: int, pixels: int, device: torch.device) -> list[tuple[int, int]]:
    """Blocks of whole rows (r0, r1) of about ``pixels`` pixels (one block off the CPU)."""
    rows = max(1, pixels // max(w, 1)) if device.type == "cpu" else max(h, 1)
    return [(r0, min(r0 + rows, h)) for r0 in range(0, h, rows)]


# ------------------------------------------------------------------ exact fast kernels
def _argmax_channels(x: Tensor, *, lanes: int = 1, also: Sequence[Callable[[], Any]] = ()) -> Tensor:
    """``x.argmax(0)`` of [C, H, W] scores -> [H, W] (uint8 on CPU, else int64).

    Same result as torch: the first maximum on ties, and a NaN counts as the
    maximum.  torch's CPU argmax over a leading axis is scalar code (~0.5 s for
    19 x 1024 x 2048 on one core); a running maximum over the class planes, in
    blocks of rows that stay in cache, is ~8x faster.  ``also``: other tasks to run
    in the same lanes.
    """
    num, h, w = x.shape
    if x.device.type != "cpu" or not 0 < num <= 256 or not x.is_floating_point():
        _run_parallel(also, 1)
        return x.argmax(0)
    index = torch.empty((h, w), dtype=torch.uint8)
    nan_rows: list[int] = []

    def block(r0: int, r1: int) -> None:
        part = x[:, r0:r1]
        best = part[0].clone()
        greater = torch.empty_like(best)  # 1.0 / 0.0: a float compare is vectorised, bool is not
        found = torch.zeros_like(best)  # the class index so far, as a float (exact)
        for k in range(1, num):
            torch.gt(part[k], best, out=greater)  # strictly: a tie keeps the lower class
            torch.maximum(best, part[k], out=best)
            # Classes come in ascending order: a class that beats the best so far is
            # the largest index yet, so a maximum records it.
            torch.maximum(found, greater.mul_(k), out=found)
        index[r0:r1] = found
        if bool(torch.isnan(best).any()):  # torch.maximum propagates NaN
            nan_rows.append(r0)

    blocks = _row_blocks(h, w, _ARGMAX_CHUNK, x.device)
    _run_parallel([*also, *(partial(block, r0, r1) for r0, r1 in blocks)], lanes)
    if nan_rows:  # argmax takes the first NaN; redo those pixels with torch
        nan = torch.isnan(x).any(0)
        index[nan] = x[:, nan].argmax(0).to(torch.uint8)
    return index


def _sliding_extreme(x: Tensor, dim: int, size: int, *, largest: bool) -> Tensor:
    """Max (or min) over the centred window of odd ``size`` along ``dim``.

    The window is clipped at both ends (as max-pooling with implicit -inf padding).
    Built from doubling spans: log2(size) + 1 elementwise passes.
    """
    pick = torch.maximum if largest else torch.minimum
    if x.is_floating_point():
        fill: float = -math.inf if largest else math.inf
    else:
        info = torch.iinfo(x.dtype)
        fill = info.min if largest else info.max
    pad_shape = list(x.shape)
    pad_shape[dim] = size // 2
    pad = torch.full(pad_shape, fill, dtype=x.dtype, device=x.device)
    m = torch.cat((pad, x, pad), dim)
    n = x.shape[dim]
    span = 1
    while 2 * span <= size:
        length = m.shape[dim] - span
        m = pick(m.narrow(dim, 0, length), m.narrow(dim, span, length))
        span *= 2
    # m[i] covers [i, i + span); two overlapping spans cover the window [i, i + size).
    return pick(m.narrow(dim, 0, n), m.narrow(dim, size - span, n))


def _window_extreme(x: Tensor, size: int, *, largest: bool) -> Tensor:
    """[H, W] -> [H, W] max (or min) over the ``size`` x ``size`` window (separable, exact)."""
    rows = _sliding_extreme(x, 1, size, largest=largest)
    return _sliding_extreme(rows, 0, size, largest=largest)


def _as_index(t: Tensor) -> Tensor:
    """Return ``t`` as an ``index_select`` index (int32 or int64)."""
    return t if t.dtype in (torch.int32, torch.int64) else t.to(torch.int32)


# ------------------------------------------------------------------------ fusion steps
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
    with _cpu_lanes(heat.device):
        pooled = _window_extreme(heat, nms_kernel, largest=True)
        # Compares into float 1/0 (vectorised on CPU, unlike into bool).
        peak = torch.eq(heat, pooled, out=torch.empty_like(heat))
        peak.mul_(torch.gt(heat, max(threshold, 0.0), out=torch.empty_like(heat)))
        points = torch.nonzero(peak)
    if top_k is None:
        return points
    k = min(top_k, heat.numel())
    if points.shape[0] < k:  # the k-th best score is <= 0: every positive peak stays
        return points
    scores = heat[points[:, 0], points[:, 1]]
    kth = torch.topk(scores, k).values[-1]
    return points[scores > kth]


def group_pixels(centers: Tensor, offset: Tensor, mask: Tensor, *, cell: int = 32) -> Tensor:
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
    with _cpu_lanes(mask.device) as lanes:
        index = torch.nonzero(mask.reshape(-1))[:, 0]
        if centers.numel() and index.numel():
            member = _nearest_center_parallel(centers, offset, index, lanes=lanes, cell=cell)
            out.index_copy_(0, index, member + 1)
    return out.view(h, w)


def _nearest_center_parallel(
    centers: Tensor, offset: Tensor, index: Tensor, *, lanes: int, cell: int = _FUSION_CELL
) -> Tensor:
    """:func:`_nearest_center` with the pixels split over ``lanes`` (each part is exact)."""
    member = torch.empty_like(index)
    bounds = [index.numel() * i // lanes for i in range(lanes + 1)]

    def part(a: int, b: int) -> None:
        member[a:b] = _nearest_center(centers, offset, index[a:b], cell=cell)

    _run_parallel([partial(part, a, b) for a, b in itertools.pairwise(bounds) if b > a], lanes)
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
    """Nearest center [N] int64 for finite locations ``loc_y``/``loc_x`` [N] (see group_pixels).

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
    used = torch.nonzero(torch.bincount(cell_id, minlength=grid_h * grid_w))[:, 0]  # [U]
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


def merge_semantic_and_instance(
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
    with _cpu_lanes(flat.device):
        index = torch.nonzero(flat > 0)[:, 0]
        member = flat.index_select(0, index) - 1
        panoptic = _merge(
            semantic.reshape(-1),
            index,
            member,
            is_thing_class=_class_flags(thing_ids, num_classes, semantic.device),
            num_classes=num_classes,
            label_divisor=label_divisor,
            stuff_area=stuff_area,
            thing_area=thing_area,
            void_label=void_label,
        )
    return panoptic.view(semantic.shape)


def _class_flags(ids: Sequence[int], num_classes: int, device: torch.device) -> Tensor:
    flags = torch.zeros(num_classes, dtype=torch.bool, device=device)
    flags[list(ids)] = True
    return flags


def _in_classes(labels: Tensor, ids: Sequence[int], num_classes: int) -> Tensor:
    """``labels`` in ``ids`` (bool, same shape): one or two comparisons per run of ids."""
    runs: list[list[int]] = []
    for i in sorted(set(ids)):
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    mask = torch.zeros(labels.shape, dtype=torch.bool, device=labels.device)
    for first, last in runs:
        if first == last:
            mask |= labels == first
        elif last == num_classes - 1:  # e.g. Cityscapes things: trainIds 11..18 of 19
            mask |= labels >= first
        else:
            mask |= (labels >= first) & (labels <= last)
    return mask


def _merge(
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
) -> Tensor:
    """:func:`merge_semantic_and_instance` on flat maps -> [P] int32.

    ``semantic`` [P] integer classes; pixels ``index`` [N] belong to the 0-based
    instances ``member`` [N]; all other pixels are unassigned.
    """
    device = semantic.device
    area = torch.bincount(semantic, minlength=num_classes)[:num_classes]  # uint8 is fastest
    thing_value = None
    if index.numel():
        sem_at = semantic.index_select(0, index).long()
        num_inst = int(member.max()) + 1
        counts = torch.bincount(member * num_classes + sem_at, minlength=num_inst * num_classes)
        counts = counts.view(num_inst, num_classes)
        present = counts.sum(1) >= max(thing_area, 1)
        cls = counts.argmax(1)  # first maximum = lowest class on ties
        per_class = F.one_hot(cls, num_classes) * present[:, None]
        number = per_class.cumsum(0).gather(1, cls[:, None])[:, 0]
        thing_value = torch.where(present, cls * label_divisor + number, void_label).to(torch.int32)
        area = area - torch.bincount(sem_at, minlength=num_classes)[:num_classes]  # unassigned
    keep = (area >= stuff_area) & ~is_thing_class
    stuff_value = torch.arange(num_classes, device=device) * label_divisor
    stuff_value = torch.where(keep, stuff_value, void_label).to(torch.int32)
    panoptic = stuff_value.index_select(0, _as_index(semantic))
    if thing_value is not None:
        panoptic.index_copy_(0, index, thing_value.index_select(0, member))
    return panoptic


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
    :func:`find_instance_centers` -> :func:`group_pixels` ->
    :func:`merge_semantic_and_instance`, without the full-size instance map.
    """
    num_classes = sem_logits.shape[0]
    with _cpu_lanes(sem_logits.device) as lanes:
        found: list[Tensor] = []
        find = partial(
            find_instance_centers,
            center,
            threshold=config.center_threshold,
            nms_kernel=config.nms_kernel,
            top_k=config.top_k,
        )
        labels = _argmax_channels(sem_logits, lanes=lanes, also=[lambda: found.append(find())])
        centers = found[0]
        flat = labels.reshape(-1)  # [H*W] uint8 on CPU
        index = torch.nonzero(_in_classes(flat, classes.thing_ids, num_classes))[:, 0]
        if centers.numel() and index.numel():
            member = _nearest_center_parallel(centers, offset, index, lanes=lanes)
        else:
            index = member = index[:0]
        panoptic = _merge(
            flat,
            index,
            member,
            is_thing_class=_class_flags(classes.thing_ids, num_classes, flat.device),
            num_classes=num_classes,
            label_divisor=classes.label_divisor,
            stuff_area=config.stuff_area,
            thing_area=config.thing_area,
            void_label=VOID,
        )
    return FusionOutput(panoptic=panoptic.view(labels.shape), semantic=labels.long(), centers=centers)


# ---------------------------------------------------------------------- segment depth
def erode_labels(labels: Tensor, radius: int) -> Tensor:
    """Pixels whose whole (2r+1)^2 window carries their own label ([H, W] bool).

    Image borders do not erode (only other labels do); void (-1) pixels are False.
    """
    if radius <= 0:
        return labels >= 0
    k = 2 * radius + 1
    with _cpu_lanes(labels.device):
        hi = _window_extreme(labels, k, largest=True)
        lo = _window_extreme(labels, k, largest=False)
        return (hi == lo) & (labels >= 0)


def _segment_index(flat: Tensor) -> tuple[Tensor, Tensor]:
    """Panoptic ids [P] -> (ids [n] int64 ascending, segment [P] int32 in [0, n]; void = n)."""
    device = flat.device
    top = int(flat.max()) if flat.numel() else -1
    if top < 0:
        return flat.new_zeros(0, dtype=torch.int64), flat.new_zeros(flat.shape, dtype=torch.int32)
    if top < _ID_TABLE_LIMIT:
        key = (flat.clamp(min=-1) + 1).to(torch.int32)  # every negative id -> 0 (void)
        ids = torch.nonzero(torch.bincount(key, minlength=top + 2)[1:])[:, 0]
        table = torch.full((top + 2,), ids.numel(), dtype=torch.int32, device=device)
        table[ids + 1] = torch.arange(ids.numel(), dtype=torch.int32, device=device)
        return ids, table.index_select(0, key)
    member = flat >= 0
    ids, inverse = torch.unique(flat[member].to(torch.int64), return_inverse=True)
    seg = torch.full(flat.shape, ids.numel(), dtype=torch.int32, device=device)
    seg[member] = inverse.to(torch.int32)
    return ids, seg


def _segment_extent(seg: Tensor, n: int, h: int, w: int) -> tuple[Tensor, ...]:
    """Per segment: area, y_min, y_max, x_min, x_max, sum of y, sum of x (int64 [n] each).

    ``seg`` [H*W] int32 in [0, n] (n = void).  Counts per (row, segment) and per
    (column, segment) give all of them with two bincounts (scatter-reduces when
    there are too many segments for those tables).
    """
    device = seg.device
    if max(h, w) * (n + 1) > _LINE_TABLE_LIMIT:
        member = torch.nonzero(seg < n)[:, 0]
        s = seg[member].to(torch.int64)
        big = torch.iinfo(torch.int64).max
        out = [torch.bincount(s, minlength=n)]
        for coord in (torch.div(member, w, rounding_mode="floor"), member % w):
            out += [
                torch.full((n,), big, device=device).scatter_reduce(0, s, coord, "amin"),
                torch.full((n,), -1, device=device).scatter_reduce(0, s, coord, "amax"),
                torch.zeros(n, dtype=torch.int64, device=device).index_add_(0, s, coord),
            ]
        area, y_min, y_max, sum_y, x_min, x_max, sum_x = out
        return area, y_min, y_max, x_min, x_max, sum_y, sum_x
    grid = seg.view(h, w)
    res = []
    for axis, length in ((0, h), (1, w)):
        stride = torch.arange(length, dtype=torch.int32, device=device) * (n + 1)
        key = grid + (stride[:, None] if axis == 0 else stride[None, :])
        lines = torch.bincount(key.reshape(-1), minlength=length * (n + 1))
        lines = lines.view(length, n + 1)[:, :n]  # [length, n] pixels per line and segment
        hit = lines > 0
        position = torch.arange(length, device=device)[:, None]
        first = torch.where(hit, position, length).amin(0)
        last = torch.where(hit, position, -1).amax(0)
        res.append((lines.sum(0), first, last, (lines * position).sum(0)))
    (area, y_min, y_max, sum_y), (_, x_min, x_max, sum_x) = res
    return area, y_min, y_max, x_min, x_max, sum_y, sum_x


def _depth_buckets(seg_use: Tensor, d: Tensor, use: Tensor, n: int) -> tuple[Tensor, int]:
    """Keys [P] int32 ``segment * buckets + bucket`` and the number of buckets per segment.

    The bit patterns of positive floats order like the floats, so a bucket is a run of
    leading bits of the depth's float32 pattern, as fine as fits in ``_HIST_BINS``
    (segment x bucket) bins.  Unused pixels (segment n) are clamped into row n.
    """
    low = torch.where(use, d, math.inf).amin().view(torch.int32)
    high = torch.where(use, d, 0.0).amax().view(torch.int32)
    bits_lo, bits_hi = int(low), int(high)
    shift = 0  # 31 at most: one bucket per segment (then the buckets are sorted whole)
    while shift < 31 and n * ((bits_hi >> shift) - (bits_lo >> shift) + 1) > _HIST_BINS:
        shift += 1
    base = bits_lo >> shift
    buckets = (bits_hi >> shift) - base + 1
    bucket = (d.view(torch.int32) >> shift).sub_(base).clamp_(0, buckets - 1)
    return bucket.add_(seg_use * buckets), buckets


def _order_statistics(
    key: Tensor, d: Tensor, hist: Tensor, weight: Tensor, count: Tensor, trim: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Per segment: min, lower median and ``trim``-trimmed mean of its used depths (f64 [n]).

    ``key`` [P] from :func:`_depth_buckets`; ``d`` [P] float32 depths; ``hist`` /
    ``weight`` [n, B] used pixels / sum of their depths per (segment, bucket);
    ``count`` [n] used pixels per segment.  Empty segments give NaN.  Instead of a
    full (segment, depth) sort: the histogram locates the bucket of each wanted rank,
    and only the elements of those few buckets are sorted.
    """
    device = d.device
    f64 = torch.float64
    n, buckets = hist.shape
    has = count > 0
    cum = hist.cumsum(1)  # [n, B] used pixels up to and including each bucket
    weight_cum = weight.cumsum(1)  # [n, B] their depth sum

    def locate(rank: Tensor) -> tuple[Tensor, Tensor]:
        """Bucket [n] holding 0-based ``rank`` (B when rank == count), and the rank inside it."""
        b = torch.searchsorted(cum, rank[:, None], right=True)[:, 0]
        before = cum.gather(1, (b - 1).clamp(min=0)[:, None])[:, 0]
        return b, rank - torch.where(b > 0, before, 0)

    cut = torch.floor(count.to(f64) * trim).long()
    b_min, _ = locate(torch.zeros_like(count))
    b_med, i_med = locate((count - 1).clamp(min=0) // 2)
    b_lo, i_lo = locate(cut)
    b_hi, i_hi = locate(count - cut)
    # The buckets whose elements are needed: min's, median's, and those a trimmed
    # range starts or ends inside.
    rows = torch.arange(n, device=device)
    wanted = torch.zeros((n + 1) * buckets, dtype=torch.bool, device=device)
    for b, need in ((b_min, has), (b_med, has), (b_lo, has & (i_lo > 0)), (b_hi, has & (i_hi > 0))):
        wanted[rows[need] * buckets + b[need]] = True
    wanted_keys = torch.nonzero(wanted[: n * buckets])[:, 0]  # [W] ascending
    slot_of = torch.full(((n + 1) * buckets,), -1, dtype=torch.int32, device=device)
    slot_of[wanted_keys] = torch.arange(wanted_keys.numel(), dtype=torch.int32, device=device)
    slot = slot_of.index_select(0, key)  # [P] wanted bucket of each pixel, or -1
    picked = torch.nonzero(slot >= 0)[:, 0]
    slot = slot.index_select(0, picked).to(torch.int64)
    picked_key = key.index_select(0, picked).to(torch.int64)
    picked_bits = d.view(torch.int32).index_select(0, picked)
    # A bucket whose elements are all equal (e.g. depth saturated at the head's maximum)
    # needs no sorting; only the others are sorted, by (segment, bucket) then depth.
    int32 = torch.iinfo(torch.int32)
    low = torch.full_like(wanted_keys, int32.max, dtype=torch.int32)
    low = low.scatter_reduce(0, slot, picked_bits, "amin")
    high = torch.full_like(wanted_keys, int32.min, dtype=torch.int32)
    high = high.scatter_reduce(0, slot, picked_bits, "amax")
    constant = low == high
    constant_value = low.view(torch.float32).to(f64)
    varied = torch.nonzero(~constant.index_select(0, slot))[:, 0]
    packed = (picked_key[varied] << 31) | picked_bits[varied].to(torch.int64)
    packed = torch.sort(packed).values
    values = (packed & 0x7FFFFFFF).to(torch.int32).view(torch.float32).to(f64)
    prefix = torch.cat((torch.zeros(1, dtype=f64, device=device), torch.cumsum(values, 0)))
    sorted_count = torch.where(constant, 0, hist.reshape(-1)[wanted_keys])
    sorted_start = torch.cumsum(sorted_count, 0) - sorted_count  # offset in ``values``
    end = values.numel()

    def position(b: Tensor) -> Tensor:
        """Index in ``wanted_keys`` of bucket (segment, b); meaningful for wanted buckets."""
        k = rows * buckets + b.clamp(max=buckets - 1)
        return torch.searchsorted(wanted_keys, k).clamp(max=wanted_keys.numel() - 1)

    def element(b: Tensor, i: Tensor) -> Tensor:
        """The ``i``-th smallest depth in bucket (segment, b)."""
        pos = position(b)
        from_sorted = values[(sorted_start[pos] + i).clamp(0, max(end - 1, 0))] if end else i * 0.0
        return torch.where(constant[pos], constant_value[pos], from_sorted)

    def smallest_sum(b: Tensor, i: Tensor) -> Tensor:
        """Sum of a segment's smallest depths: the buckets before ``b``, then ``i`` of ``b``."""
        pos = position(b)
        start = sorted_start[pos].clamp(max=end)
        inside = prefix[(start + i).clamp(max=end)] - prefix[start]
        inside = torch.where(constant[pos], i * constant_value[pos], inside)
        before = weight_cum.gather(1, (b - 1).clamp(min=0)[:, None])[:, 0]
        return torch.where(b > 0, before, 0.0) + torch.where(i > 0, inside, 0.0)

    d_min = element(b_min, torch.zeros_like(count))
    d_median = element(b_med, i_med)
    robust = (smallest_sum(b_hi, i_hi) - smallest_sum(b_lo, i_lo)) / (count - 2 * cut).to(f64)
    return (torch.where(has, d_min, math.nan), torch.where(has, d_median, math.nan), torch.where(has, robust, math.nan))


def _depth_sums(
    seg_use: Tensor,
    z: Tensor,
    *,
    n: int,
    w: int,
    blocks: list[tuple[int, int]],
    key: Tensor | None,
    key_bins: int,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Per segment [n] float64 sums of z and z^2 over used pixels, and per ``key`` [key_bins].

    ``seg_use`` [P] int32 (n: unused); ``z`` [P] float64 depth.  Sums run in raster
    order per bin, exactly as one ``index_add_`` would.
    """
    f64 = torch.float64
    sum_z = torch.zeros(n + 1, dtype=f64, device=z.device).index_add_(0, seg_use, z)
    sum_zz = torch.zeros(n + 1, dtype=f64, device=z.device)
    for r0, r1 in blocks:
        s, e = r0 * w, r1 * w
        sum_zz.index_add_(0, seg_use[s:e], z[s:e].square())
    bucket = None
    if key is not None:
        bucket = torch.zeros(key_bins, dtype=f64, device=z.device).index_add_(0, key, z)
    return sum_z[:n], sum_zz[:n], bucket


def _centroid_sums(
    seg_use: Tensor, z: Tensor, *, n: int, h: int, w: int, blocks: list[tuple[int, int]]
) -> tuple[Tensor, Tensor]:
    """Per segment [n] float64 sums of u*z and v*z over used pixels (u: column, v: row)."""
    f64 = torch.float64
    sum_uz = torch.zeros(n + 1, dtype=f64, device=z.device)
    sum_vz = torch.zeros(n + 1, dtype=f64, device=z.device)
    u = torch.arange(w, dtype=f64, device=z.device)
    v = torch.arange(h, dtype=f64, device=z.device)[:, None]
    for r0, r1 in blocks:
        s, e = r0 * w, r1 * w
        z_rows = z[s:e].view(r1 - r0, w)
        sum_uz.index_add_(0, seg_use[s:e], (z_rows * u).view(-1))
        sum_vz.index_add_(0, seg_use[s:e], (z_rows * v[r0:r1]).view(-1))
    return sum_uz[:n], sum_vz[:n]


def _class_probability(logits: Tensor, seg: Tensor, segment_class: Tensor, start: int, stop: int) -> Tensor:
    """Per segment [n + 1] float64 sums of the softmax probability of the segment's class.

    Over pixels ``start:stop`` only; ``logits`` [C, P]; ``seg`` [P] int32 segment of
    each pixel; ``segment_class`` [n + 1] int64 class of each segment.  The
    probability is exp(x_c) / sum_k exp(x_k): one exp per logit and no max pass,
    safe while the sum neither overflows nor underflows (logits within about +-80);
    otherwise (inf, NaN or huge logits) it is exp(x_c - logsumexp(x)), Detectron2's
    formula.  The two agree to float32 rounding (~1e-7 relative).
    """
    block = logits[:, start:stop]  # [C, n]
    n = stop - start
    index = seg[start:stop]
    pick = segment_class.index_select(0, index) * n
    pick += torch.arange(n, device=logits.device)
    terms = block.exp()
    total = terms.sum(0)
    if bool(total.amax() < math.inf) and bool(total.amin() > 1e-30):
        prob = terms.view(-1).index_select(0, pick).div_(total)
    else:
        prob = block.reshape(-1).index_select(0, pick).sub_(torch.logsumexp(block, 0)).exp_()
    out = torch.zeros(segment_class.numel(), dtype=torch.float64, device=logits.device)
    return out.index_add_(0, index, prob.to(torch.float64))


def segment_depth_statistics(
    panoptic: Tensor,
    depth: Tensor | None,
    *,
    classes: ClassMetadata,
    config: PostprocessConfig,
    sem_logits: Tensor | None = None,
    center: Tensor | None = None,
    camera_k: np.ndarray | Sequence[Sequence[float]] | None = None,
) -> list[SegmentDepth]:
    """One :class:`SegmentDepth` per panoptic id (ascending), with scatter ops only.

    ``panoptic`` [H, W] int32; ``depth`` [H, W] meters (invalid: NaN, inf or <= 0; None:
    no depth at all, so every depth field and centroid is NaN);
    ``sem_logits`` [C, H, W] and ``center`` [1, H, W] give the scores (NaN without
    them); ``camera_k`` is the 3x3 pinhole matrix for the 3D centroid (NaN without).
    Area and bbox use the whole segment; depth statistics use its valid pixels
    after erosion (see :class:`PostprocessConfig`).  Median is the lower median;
    ``depth_robust`` the mean between the ``robust_trim`` and ``1 - robust_trim``
    ranks; std the population standard deviation.
    """
    device = panoptic.device
    if depth is None:
        depth = torch.full(panoptic.shape, math.nan, dtype=torch.float32, device=device)
        camera_k = None
    with _cpu_lanes(device) as lanes:
        return _segment_depth_statistics(
            panoptic,
            depth,
            classes=classes,
            config=config,
            sem_logits=sem_logits,
            center=center,
            camera_k=camera_k,
            lanes=lanes,
        )


def _segment_depth_statistics(
    panoptic: Tensor,
    depth: Tensor,
    *,
    classes: ClassMetadata,
    config: PostprocessConfig,
    sem_logits: Tensor | None,
    center: Tensor | None,
    camera_k: np.ndarray | Sequence[Sequence[float]] | None,
    lanes: int,
) -> list[SegmentDepth]:
    device = panoptic.device
    h, w = panoptic.shape
    ids, seg = _segment_index(panoptic.reshape(-1))  # seg [H*W] int32, void = n
    n = int(ids.numel())
    if n == 0:
        return []
    f64 = torch.float64
    category = torch.div(ids, classes.label_divisor, rounding_mode="floor")

    # Valid (eroded) depth pixels; the others go to the void bin n.
    d = depth.reshape(-1).to(torch.float32).contiguous()
    use = (d > 0) & (d < math.inf)  # finite and positive
    if config.depth_erosion_px > 0:
        eroded = erode_labels(panoptic, config.depth_erosion_px).reshape(-1) & use
        eroded_count = torch.bincount(torch.where(eroded, seg, n), minlength=n + 1)[:n]
        fallback = torch.cat(((eroded_count == 0), eroded_count.new_zeros(1, dtype=torch.bool)))
        use = eroded | (use & fallback.index_select(0, seg))
    seg_use = torch.where(use, seg, n)  # [H*W] int32
    count = torch.bincount(seg_use, minlength=n + 1)[:n]
    key, buckets = _depth_buckets(seg_use, d, use, n) if int(count.sum()) else (None, 0)

    # The per-pixel passes, as independent tasks over the lanes: each sum keeps its
    # raster order, so the result does not depend on the lanes.
    blocks = _row_blocks(h, w, _PIXEL_CHUNK, device)
    big_blocks = _row_blocks(h, w, _ARGMAX_CHUNK, device)
    z = d.to(f64)
    done: dict[str, Any] = {}
    tasks: list[Callable[[], Any]] = [
        lambda: done.__setitem__("extent", _segment_extent(seg, n, h, w)),
        lambda: done.__setitem__(
            "depth", _depth_sums(seg_use, z, n=n, w=w, blocks=big_blocks, key=key, key_bins=(n + 1) * buckets)
        ),
    ]
    if camera_k is not None:
        tasks.append(lambda: done.__setitem__("centroid", _centroid_sums(seg_use, z, n=n, h=h, w=w, blocks=big_blocks)))
    prob_parts: list[Tensor | None] = [None] * len(blocks)
    if sem_logits is not None:
        logits = sem_logits.reshape(sem_logits.shape[0], -1)  # [C, H*W]
        segment_class = torch.cat((category, category.new_zeros(1)))

        def prob_block(i: int, r0: int, r1: int) -> None:
            prob_parts[i] = _class_probability(logits, seg, segment_class, r0 * w, r1 * w)

        tasks += [partial(prob_block, i, r0, r1) for i, (r0, r1) in enumerate(blocks)]
    _run_parallel(tasks, lanes)
    area, y_min, y_max, x_min, x_max, sum_y, sum_x = done["extent"]
    sum_z, sum_zz, bucket = done["depth"]

    # Scores: mean softmax probability of the segment's class (x center value for things).
    score = torch.full((n,), math.nan, dtype=f64, device=device)
    if sem_logits is not None:
        parts = [part for part in prob_parts if part is not None]
        assert len(parts) == len(blocks)  # every block ran
        prob_sum = torch.stack(parts).sum(0)  # in block order: independent of the lanes
        score = prob_sum[:n] / area
        if center is not None:
            cy = (sum_y.to(f64) / area).long()
            cx = (sum_x.to(f64) / area).long()
            thing = torch.tensor([classes.is_thing(int(c)) for c in category.tolist()], device=device)
            score = torch.where(thing, score * center.reshape(h, w)[cy, cx].to(f64), score)

    cnt = count.to(f64)
    mean = sum_z / cnt
    std = (sum_zz / cnt - mean * mean).clamp(min=0).sqrt()
    nan = torch.full((n,), math.nan, dtype=f64, device=device)
    d_min = d_median = robust = nan
    if key is not None and bucket is not None:
        hist = torch.bincount(key, minlength=(n + 1) * buckets)[: n * buckets].view(n, buckets)
        weight = bucket[: n * buckets].view(n, buckets)
        d_min, d_median, robust = _order_statistics(key, d, hist, weight, count, config.robust_trim)

    centroid = torch.full((n, 3), math.nan, dtype=f64, device=device)
    if camera_k is not None:
        k = np.asarray(camera_k, dtype=np.float64).reshape(3, 3)
        fx, fy, cx0, cy0 = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
        sum_uz, sum_vz = done["centroid"]
        centroid = torch.stack(((sum_uz / cnt - cx0 * mean) / fx, (sum_vz / cnt - cy0 * mean) / fy, mean), 1)

    rows = (
        torch.stack(
            [
                ids.to(f64),
                category.to(f64),
                score,
                area.to(f64),
                x_min.to(f64),
                y_min.to(f64),
                x_max.to(f64),
                y_max.to(f64),
                cnt,
                mean,
                d_median,
                d_min,
                std,
                robust,
                *centroid.T,
            ],
            1,
        )
        .cpu()
        .numpy()
    )
    out = []
    for r in rows:  # one record per segment (tens to hundreds), no per-pixel work here
        cat = int(r[1])
        out.append(
            SegmentDepth(
                id=int(r[0]),
                category_id=cat,
                label=classes.names[cat],
                is_thing=classes.is_thing(cat),
                score=float(r[2]),
                area=int(r[3]),
                x_min=int(r[4]),
                y_min=int(r[5]),
                x_max=int(r[6]),
                y_max=int(r[7]),
                depth_valid_pixels=int(r[8]),
                depth_mean=float(r[9]),
                depth_median=float(r[10]),
                depth_min=float(r[11]),
                depth_std=float(r[12]),
                depth_robust=float(r[13]),
                centroid=(float(r[14]), float(r[15]), float(r[16])),
            )
        )
    return out
