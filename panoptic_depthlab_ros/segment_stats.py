"""Per-segment depth statistics: one :class:`~.result.SegmentDepth` record per panoptic id.

:func:`segment_depth_statistics` gives each segment's area, bounding box and score, and
the mean, median, minimum, standard deviation, trimmed mean and 3D centroid of its
valid depth pixels (optionally eroded first, so that edges bleeding depth from their
neighbours do not count), all segments at once with scatter ops: no per-segment mask.

Medians and trimmed means need the depths sorted per segment; instead of a full
(segment, depth) sort, a per-segment histogram of the float bits locates the bucket
of each wanted rank and only those few buckets are sorted (exact, see
:func:`_order_statistics`).  A depth map that is valid everywhere (a network's) needs no
masks.  On CPU the per-pixel passes run as tasks over the lanes of :mod:`.parallel`, each
in one fixed order, so results do not depend on the lanes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import Tensor

from . import native
from .fusion import PostprocessConfig, SegmentIndex, class_flags
from .kernels import (
    SPREAD,
    count_values,
    flat_nonzero,
    fold_spread,
    lookup,
    softmax_probability,
    spread_keys_,
    window_extreme,
)
from .metadata import ClassMetadata
from .native import SegmentSums
from .parallel import BLOCK_PIXELS, SMALL_BLOCK_PIXELS, cpu_lanes, lanes_for, row_blocks, run_parallel
from .result import SegmentDepth

# Ids up to this use a lookup table instead of torch.unique, and the
# (segment x depth bucket) histogram holds at most this many bins.
_ID_TABLE_LIMIT = 1 << 22
_HIST_BINS = 1 << 19
# Bounding boxes from (row or column) x segment counts up to this size, else scatters.
_LINE_TABLE_LIMIT = 1 << 23
# Pixels per chunk of the class probabilities on a GPU (see _class_probability_gpu).
_GPU_CHUNK = 1 << 18


def segment_depth_statistics(
    panoptic: Tensor,
    depth: Tensor | None,
    *,
    classes: ClassMetadata,
    config: PostprocessConfig,
    sem_logits: Tensor | None = None,
    center: Tensor | None = None,
    camera_k: np.ndarray | Sequence[Sequence[float]] | None = None,
    segments: SegmentIndex | None = None,
    class_probability: Tensor | None = None,
) -> list[SegmentDepth]:
    """One :class:`SegmentDepth` per panoptic id (ascending), with scatter ops only.

    ``panoptic`` [H, W] int32; ``depth`` [H, W] meters (invalid: NaN, inf or <= 0; None:
    no depth at all, so every depth field and centroid is NaN);
    ``sem_logits`` [C, H, W] and ``center`` [1, H, W] give the scores (NaN without
    them); ``camera_k`` is the 3x3 pinhole matrix for the 3D centroid (NaN without).
    ``segments`` (the segments of ``panoptic``) and ``class_probability`` ([H, W] softmax
    probability of each pixel's segment class) save passes when the caller has them: the
    fusion's :class:`~.fusion.FusionOutput` does.
    Area and bbox use the whole segment; depth statistics use its valid pixels
    after erosion (see :class:`PostprocessConfig`).  Median is the lower median;
    ``depth_robust`` the mean between the ``robust_trim`` and ``1 - robust_trim``
    ranks; std the population standard deviation.
    """
    device = panoptic.device
    if depth is None:
        depth = torch.full(panoptic.shape, math.nan, dtype=torch.float32, device=device)
        camera_k = None
    with cpu_lanes(device) as lanes:
        return _segment_depth_statistics(
            panoptic,
            depth,
            classes=classes,
            config=config,
            sem_logits=sem_logits,
            center=center,
            camera_k=camera_k,
            segments=segments,
            class_probability=class_probability,
            lanes=lanes,
        )


@dataclass
class _DepthSums:
    """Per (segment, depth bucket), [n + 1, B] each (row n: unused pixels): what the statistics need of the depths.

    key: [P] the spread key of each pixel (see :func:`_depth_buckets`); hist: int64 pixels;
    z, zz: float64 sums of depth and depth^2; uz, vz: float64 sums of u*z and v*z (column,
    row), None without intrinsics.
    """

    key: Tensor
    hist: Tensor
    z: Tensor
    zz: Tensor
    uz: Tensor | None
    vz: Tensor | None


@dataclass
class _PixelSums:
    """What the passes over the pixels sum up per segment.

    extent: area, y_min, y_max, x_min, x_max, sum of y, sum of x (int64 [n] each).
    depth: the depth sums per (segment, bucket); None without used depth.
    probability: float64 [n + 1] sums of the softmax probability of each segment's class; None without logits.
    """

    extent: tuple[Tensor, ...]
    depth: _DepthSums | None
    probability: Tensor | None


def _segment_depth_statistics(
    panoptic: Tensor,
    depth: Tensor,
    *,
    classes: ClassMetadata,
    config: PostprocessConfig,
    sem_logits: Tensor | None,
    center: Tensor | None,
    camera_k: np.ndarray | Sequence[Sequence[float]] | None,
    segments: SegmentIndex | None,
    class_probability: Tensor | None,
    lanes: int,
) -> list[SegmentDepth]:
    h, w = panoptic.shape
    if segments is None:
        ids, seg = _segment_index(panoptic.reshape(-1))  # seg [H*W] int32, void = n
    else:
        ids, seg = segments.ids, segments.seg.reshape(-1)
    n = int(ids.numel())
    if n == 0:
        return []
    category = torch.div(ids, classes.label_divisor, rounding_mode="floor")
    d = depth.reshape(-1).to(torch.float32).contiguous()
    compiled = native.usable(seg, d)
    if compiled:  # the compiled passes check each depth's validity themselves
        use = None if config.depth_erosion_px == 0 else _depth_pixels(panoptic, seg, d, n, config.depth_erosion_px)[0]
        depth_range = None
    else:
        use, depth_range = _depth_pixels(panoptic, seg, d, n, config.depth_erosion_px)
    px = _PixelInputs(seg, d, use, category, n, h, w, sem_logits, class_probability, config.robust_trim, lanes)
    sums = _compiled_sums(px) if compiled else _torch_sums(px, depth_range, centroid=camera_k is not None)
    score = _scores(sums.extent, sums.probability, category, classes=classes, center=center, h=h, w=w)

    f64 = torch.float64
    cnt = sums.count.to(f64)
    mean = sums.sum_z / cnt
    std = (sums.sum_zz / cnt - mean * mean).clamp(min=0).sqrt()
    centroid = torch.full((n, 3), math.nan, dtype=f64, device=panoptic.device)
    if camera_k is not None and sums.sum_uz is not None and sums.sum_vz is not None:
        k = np.asarray(camera_k, dtype=np.float64).reshape(3, 3)
        fx, fy, cx0, cy0 = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
        u, v = sums.sum_uz / cnt, sums.sum_vz / cnt
        centroid = torch.stack(((u - cx0 * mean) / fx, (v - cy0 * mean) / fy, mean), 1)

    area, y_min, y_max, x_min, x_max, _sum_y, _sum_x = sums.extent
    columns = [ids, category, score, area, x_min, y_min, x_max, y_max, cnt, mean]
    columns += [sums.median, sums.minimum, std, sums.trimmed, *centroid.T]
    rows = torch.stack([c.to(f64) for c in columns], 1).cpu().numpy()
    return [_record(r, classes) for r in rows]  # tens to hundreds of segments, no per-pixel work


@dataclass(frozen=True)
class _PixelInputs:
    """What both implementations of the per-pixel passes read.

    seg: [H*W] int32 segment of each pixel (void = n); d: [H*W] float32 depth; use: [H*W]
    bool pixels whose depth counts (None: all); category: [n] class of each segment;
    sem_logits / class_probability: for the class-probability sums (None: no scores);
    trim: the trimmed mean's fraction per side; lanes: parallel parts asked for.
    """

    seg: Tensor
    d: Tensor
    use: Tensor | None
    category: Tensor
    n: int
    h: int
    w: int
    sem_logits: Tensor | None
    class_probability: Tensor | None
    trim: float
    lanes: int


def _compiled_sums(px: _PixelInputs) -> SegmentSums:
    """The per-pixel passes in the compiled library (:func:`.native.segment_sums`)."""
    probability = None
    if px.sem_logits is not None:
        class_probability = px.class_probability
        if class_probability is None:  # not handed over by the fusion: the probability of each pixel's segment class
            segment_class = torch.cat((px.category, px.category.new_zeros(1)))
            class_probability = softmax_probability(px.sem_logits.flatten(1), lookup(segment_class, px.seg))
        probability = class_probability.reshape(-1).to(torch.float32).contiguous()
    return native.segment_sums(
        px.seg,
        px.d,
        px.use,
        probability,
        n=px.n,
        height=px.h,
        width=px.w,
        trim=px.trim,
        lanes=lanes_for(px.h * px.w, px.lanes),
    )


def _torch_sums(px: _PixelInputs, depth_range: tuple[float, float] | None, *, centroid: bool) -> SegmentSums:
    """The per-pixel passes as torch ops (:func:`_pixel_sums`, :func:`_order_statistics`): any device."""
    seg, d, n = px.seg, px.d, px.n
    # [H*W] int32: the segment of each used (valid, eroded) depth pixel; the others in bin n.
    seg_use = seg if px.use is None else torch.where(px.use, seg, n)
    make_key = (
        None if depth_range is None else partial(_depth_buckets, seg_use, d, n, px.w, depth_range, exact=px.use is None)
    )
    sums = _pixel_sums(
        seg,
        d,
        px.category,
        n=n,
        h=px.h,
        w=px.w,
        make_key=make_key,
        sem_logits=px.sem_logits,
        class_probability=px.class_probability,
        centroid=centroid,
        lanes=px.lanes,
    )
    f64 = torch.float64
    device = seg.device
    if sums.depth is None:
        nan = torch.full((n,), math.nan, dtype=f64, device=device)
        zero = torch.zeros(n, dtype=f64, device=device)
        count = torch.zeros(n, dtype=torch.int64, device=device)
        return SegmentSums(sums.extent, count, zero, zero, None, None, nan, nan, nan, sums.probability)
    hist, weight = sums.depth.hist[:n], sums.depth.z[:n]  # [n, B]; row n: the unused pixels
    count = hist.sum(1)
    d_min, d_median, robust = _order_statistics(sums.depth.key, d, hist, weight, count, px.trim)
    uz = None if sums.depth.uz is None else sums.depth.uz[:n].sum(1)
    vz = None if sums.depth.vz is None else sums.depth.vz[:n].sum(1)
    zz = sums.depth.zz[:n].sum(1)
    return SegmentSums(sums.extent, count, weight.sum(1), zz, uz, vz, d_min, d_median, robust, sums.probability)


def _depth_pixels(
    panoptic: Tensor, seg: Tensor, d: Tensor, n: int, erosion_px: int
) -> tuple[Tensor | None, tuple[float, float] | None]:
    """The pixels whose depth counts (finite, positive; eroded by ``erosion_px``) and their depth range.

    Returns ([H*W] bool, or None when every pixel counts; (lowest, highest) depth of
    those pixels, or of a superset of them, None when none counts).  A segment that
    erosion would erase keeps its uneroded pixels.  A network's depth is valid
    everywhere: one pass finds that out, and the masks are skipped.
    """
    low, high = torch.aminmax(d)  # NaN if any depth is NaN
    bounds = (float(low), float(high))
    all_valid = bounds[0] > 0 and bounds[1] < math.inf
    valid = None if all_valid else (d > 0) & (d < math.inf)  # finite and positive
    use = valid
    if erosion_px > 0:
        eroded = erode_labels(panoptic, erosion_px).reshape(-1)
        if valid is not None:
            eroded &= valid
        eroded_count = count_values(torch.where(eroded, seg, n), n + 1)[:n]
        fallback = torch.cat(((eroded_count == 0), eroded_count.new_zeros(1, dtype=torch.bool)))
        erased = fallback.index_select(0, seg)  # the pixels of segments erosion would erase
        use = eroded | (erased if valid is None else valid & erased)
    if use is None:
        return None, bounds
    if not all_valid:
        low, high = torch.where(use, d, math.inf).amin(), torch.where(use, d, 0.0).amax()
        bounds = (float(low), float(high))
        if not bounds[0] < math.inf:
            return use, None
    return use, bounds


def _scores(
    extent: tuple[Tensor, ...],
    probability: Tensor | None,
    category: Tensor,
    *,
    classes: ClassMetadata,
    center: Tensor | None,
    h: int,
    w: int,
) -> Tensor:
    """Per segment [n] float64: the mean softmax probability of its class (times the center value for things).

    ``extent`` and ``probability`` (the sums of the probability per segment; None without
    logits: NaN) as :class:`~.native.SegmentSums` holds them.
    """
    n = category.numel()
    f64 = torch.float64
    if probability is None:
        return torch.full((n,), math.nan, dtype=f64, device=category.device)
    area, _y_min, _y_max, _x_min, _x_max, sum_y, sum_x = extent
    score = probability[:n] / area
    if center is not None:
        cy = (sum_y.to(f64) / area).long()
        cx = (sum_x.to(f64) / area).long()
        thing = class_flags(classes.thing_ids, classes.num_classes, category.device).index_select(0, category)
        score = torch.where(thing, score * center.reshape(h, w)[cy, cx].to(f64), score)
    return score


def _record(r: np.ndarray, classes: ClassMetadata) -> SegmentDepth:
    """One row of the statistics table (see :func:`_segment_depth_statistics`) -> a record."""
    cat = int(r[1])
    return SegmentDepth(
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


def erode_labels(labels: Tensor, radius: int) -> Tensor:
    """Pixels whose whole (2r+1)^2 window carries their own label ([H, W] bool).

    Image borders do not erode (only other labels do); void (-1) pixels are False.
    """
    if radius <= 0:
        return labels >= 0
    k = 2 * radius + 1
    with cpu_lanes(labels.device):
        hi = window_extreme(labels, k, largest=True)
        lo = window_extreme(labels, k, largest=False)
        return (hi == lo) & (labels >= 0)


def _segment_index(flat: Tensor) -> tuple[Tensor, Tensor]:
    """Panoptic ids [P] -> (ids [n] int64 ascending, segment [P] int32 in [0, n]; void = n)."""
    device = flat.device
    top = int(flat.max()) if flat.numel() else -1
    if top < 0:
        return flat.new_zeros(0, dtype=torch.int64), flat.new_zeros(flat.shape, dtype=torch.int32)
    if top < _ID_TABLE_LIMIT:
        key = (flat.clamp(min=-1) + 1).to(torch.int32)  # every negative id -> 0 (void)
        ids = torch.nonzero(count_values(key, top + 2)[1:])[:, 0]
        table = torch.full((top + 2,), ids.numel(), dtype=torch.int32, device=device)
        table[ids + 1] = torch.arange(ids.numel(), dtype=torch.int32, device=device)
        return ids, table.index_select(0, key)
    member = flat >= 0
    ids, inverse = torch.unique(flat[member].to(torch.int64), return_inverse=True)
    seg = torch.full(flat.shape, ids.numel(), dtype=torch.int32, device=device)
    seg[member] = inverse.to(torch.int32)
    return ids, seg


def _pixel_sums(
    seg: Tensor,
    d: Tensor,
    category: Tensor,
    *,
    n: int,
    h: int,
    w: int,
    make_key: Callable[[], tuple[Tensor, int]] | None,
    sem_logits: Tensor | None,
    class_probability: Tensor | None,
    centroid: bool,
    lanes: int,
) -> _PixelSums:
    """Every per-pixel pass, as independent tasks over the lanes.

    ``make_key``: the depth keys and buckets per segment (:func:`_depth_buckets`; None
    without used depth), made in the depth task.

    Each sum keeps one order whatever the lanes (the class probabilities are added block by
    block, in block order), so the result does not depend on them.
    """
    blocks = row_blocks(h, w, SMALL_BLOCK_PIXELS, seg.device)
    done: dict[str, Any] = {}
    tasks: list[Callable[[], Any]] = []  # the longest first
    if make_key is not None:
        big_blocks = row_blocks(h, w, BLOCK_PIXELS, seg.device)

        def depth_task() -> None:
            key, buckets = make_key()
            done["depth"] = _depth_sums(key, d, n=n, buckets=buckets, w=w, blocks=big_blocks, centroid=centroid)

        tasks.append(depth_task)
    tasks.append(lambda: done.__setitem__("extent", _segment_extent(seg, n, h, w)))
    prob_parts: list[Tensor | None] = [None] * len(blocks)
    if sem_logits is not None:
        segment_class = torch.cat((category, category.new_zeros(1)))
        grid = seg.view(h, w)

        def prob_block(i: int, r0: int, r1: int) -> None:
            given = None if class_probability is None else class_probability[r0:r1]
            prob_parts[i] = _class_probability(sem_logits[:, r0:r1], grid[r0:r1], segment_class, given)

        tasks += [partial(prob_block, i, r0, r1) for i, (r0, r1) in enumerate(blocks)]
    run_parallel(tasks, lanes_for(h * w, lanes))
    probability = None
    if sem_logits is not None:
        parts = [part for part in prob_parts if part is not None]
        assert len(parts) == len(blocks)  # every block ran
        probability = torch.stack(parts).sum(0)  # in block order: independent of the lanes
    return _PixelSums(extent=done["extent"], depth=done.get("depth"), probability=probability)


def _segment_extent(seg: Tensor, n: int, h: int, w: int) -> tuple[Tensor, ...]:
    """Per segment: area, y_min, y_max, x_min, x_max, sum of y, sum of x (int64 [n] each).

    ``seg`` [H*W] int32 in [0, n] (n = void).  Counts per (row, segment) and per
    (column, segment) give all of them with two bincounts (scatter-reduces when
    there are too many segments for those tables).
    """
    device = seg.device
    if max(h * SPREAD, w) * (n + 1) > _LINE_TABLE_LIMIT:
        member = flat_nonzero(seg < n)
        s = seg[member].to(torch.int64)
        big = torch.iinfo(torch.int64).max
        out = [count_values(s, n)]
        for coord in (torch.div(member, w, rounding_mode="floor"), member % w):
            out += [
                torch.full((n,), big, device=device).scatter_reduce(0, s, coord, "amin"),
                torch.full((n,), -1, device=device).scatter_reduce(0, s, coord, "amax"),
                torch.zeros(n, dtype=torch.int64, device=device).index_add_(0, s, coord),
            ]
        area, y_min, y_max, sum_y, x_min, x_max, sum_x = out
        return area, y_min, y_max, x_min, x_max, sum_y, sum_x
    grid = seg.view(h, w)
    # Rows: a segment's pixels run along a row, so its keys are spread over tables (see spread_keys_).
    row_start = torch.arange(h, dtype=torch.int32, device=device)[:, None] * (n + 1)
    rows = count_values(spread_keys_(torch.add(grid, row_start), h * (n + 1)), SPREAD * h * (n + 1))
    rows = fold_spread(rows).view(h, n + 1)
    col_start = torch.arange(w, dtype=torch.int32, device=device)[None, :] * (n + 1)
    cols = count_values(torch.add(grid, col_start).view(-1), w * (n + 1)).view(w, n + 1)
    res = []
    for lines, length in ((rows, h), (cols, w)):
        lines = lines[:, :n]  # [length, n] pixels per line and segment
        hit = lines > 0
        position = torch.arange(length, device=device)[:, None]
        first = torch.where(hit, position, length).amin(0)
        last = torch.where(hit, position, -1).amax(0)
        res.append((lines.sum(0), first, last, (lines * position).sum(0)))
    (area, y_min, y_max, sum_y), (_, x_min, x_max, sum_x) = res
    return area, y_min, y_max, x_min, x_max, sum_y, sum_x


def _histogram_bins(pixels: int, n: int) -> int:
    """How many (segment x depth bucket) bins the order statistics use, at most :data:`_HIST_BINS`.

    Finer buckets leave fewer depths to sort in the buckets that hold the wanted ranks
    (about pixels * n / bins), coarser ones cost less per bin (tables, prefix sums):
    about sqrt(pixels * n) balances the two (measured 1.1-1.6x faster than a fixed size).
    """
    return int(min(_HIST_BINS, max(1 << 12, 16 * math.sqrt(pixels * n))))


def _depth_buckets(
    seg_use: Tensor, d: Tensor, n: int, w: int, depth_range: tuple[float, float], *, exact: bool
) -> tuple[Tensor, int]:
    """Spread keys [P] int32 of ``segment * buckets + bucket`` (see ``spread_keys_``), and the buckets per segment.

    The bit patterns of positive floats order like the floats, so a bucket is a run of
    leading bits of the depth's float32 pattern, as fine as fits in :func:`_histogram_bins`
    (segment x bucket) bins.  ``depth_range``: the lowest and highest depth of the used
    pixels; ``exact``: every depth lies in it (else unused pixels, segment n, are
    clamped into row n); ``w``: the image width.
    """
    bits_lo, bits_hi = (int(np.float32(v).view(np.int32)) for v in depth_range)
    bins = _histogram_bins(seg_use.numel(), n)
    shift = 0  # 31 at most: one bucket per segment (then the buckets are sorted whole)
    while shift < 31 and n * ((bits_hi >> shift) - (bits_lo >> shift) + 1) > bins:
        shift += 1
    base = bits_lo >> shift
    buckets = (bits_hi >> shift) - base + 1
    bucket = (d.view(torch.int32) >> shift).sub_(base)
    if not exact:
        bucket.clamp_(0, buckets - 1)
    return spread_keys_(bucket.add_(seg_use, alpha=buckets).view(-1, w), (n + 1) * buckets), buckets


def _order_statistics(
    key: Tensor, d: Tensor, hist: Tensor, weight: Tensor, count: Tensor, trim: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Per segment: min, lower median and ``trim``-trimmed mean of its used depths (f64 [n]).

    ``key`` [P] spread keys from :func:`_depth_buckets`; ``d`` [P] float32 depths; ``hist`` /
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
    wanted_keys = flat_nonzero(wanted[: n * buckets])  # [W] ascending
    slot_of = torch.full(((n + 1) * buckets,), -1, dtype=torch.int32, device=device)
    slot_of[wanted_keys] = torch.arange(wanted_keys.numel(), dtype=torch.int32, device=device)
    picked = flat_nonzero(wanted.repeat(SPREAD).index_select(0, key))  # pixels in wanted buckets
    picked_key = key.index_select(0, picked).remainder_((n + 1) * buckets).to(torch.int64)  # unspread
    slot = slot_of.index_select(0, picked_key).to(torch.int64)
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
    varied = flat_nonzero(~constant.index_select(0, slot))
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
    key: Tensor, d: Tensor, *, n: int, buckets: int, w: int, blocks: list[tuple[int, int]], centroid: bool
) -> _DepthSums:
    """The :class:`_DepthSums` of the spread ``key`` [P] (see :func:`_depth_buckets`) and depths ``d`` [P] float32.

    Block by block (the float64 temporaries stay in cache), in raster order within each
    sub-bin, the sub-bins added at the end: one fixed order.
    """
    f64 = torch.float64
    device = d.device
    size = (n + 1) * buckets * SPREAD
    hist = count_values(key, size)
    sums = [torch.zeros(size, dtype=f64, device=device) for _ in range(4 if centroid else 2)]
    u = torch.arange(w, dtype=f64, device=device)
    for r0, r1 in blocks:
        s, e = r0 * w, r1 * w
        k = key[s:e]
        z = d[s:e].to(f64)
        sums[0].index_add_(0, k, z)
        sums[1].index_add_(0, k, z * z)
        if centroid:
            z_rows = z.view(r1 - r0, w)
            sums[2].index_add_(0, k, (z_rows * u).view(-1))
            v = torch.arange(r0, r1, dtype=f64, device=device)[:, None]
            sums[3].index_add_(0, k, (z_rows * v).view(-1))
    hist_b, z_b, zz_b, *uv = (fold_spread(t).view(n + 1, buckets) for t in (hist, *sums))
    uz, vz = (uv[0], uv[1]) if centroid else (None, None)
    return _DepthSums(key=key, hist=hist_b, z=z_b, zz=zz_b, uz=uz, vz=vz)


def _class_probability(logits: Tensor, seg: Tensor, segment_class: Tensor, probability: Tensor | None) -> Tensor:
    """Per segment [n + 1] float64 sums of the softmax probability of the segment's class.

    ``logits`` [C, h, w] (a block of rows); ``seg`` [h, w] int32 segment of each pixel;
    ``segment_class`` [n + 1] int64 class of each segment; ``probability`` [h, w] those
    probabilities when the caller has them (else :func:`~.kernels.softmax_probability`).
    """
    if logits.device.type != "cpu":
        return _class_probability_gpu(logits.flatten(1), seg.flatten(), segment_class)
    if probability is None:
        probability = softmax_probability(logits.flatten(1), lookup(segment_class, seg))
    size = segment_class.numel()
    out = torch.zeros(SPREAD * size, dtype=torch.float64, device=logits.device)
    return fold_spread(out.index_add_(0, spread_keys_(seg.clone(), size), probability.flatten().to(torch.float64)))


def _class_probability_gpu(logits: Tensor, seg: Tensor, segment_class: Tensor) -> Tensor:
    """:func:`_class_probability` off the CPU: no host sync, no [C, H*W] temporary, no float64 atomics.

    Detectron2's formula exp(x_c - logsumexp(x)) for every pixel (no data-dependent choice
    to read back), over chunks of :data:`_GPU_CHUNK` pixels (the temporaries stay small:
    ~20 MB for 19 classes, not ~160 MB at 1024x2048); each chunk is summed per segment in
    float32 and the chunks in float64. Agrees with the CPU's to ~1e-6 relative.
    """
    out = torch.zeros(segment_class.numel(), dtype=torch.float64, device=logits.device)
    pixels = seg.numel()
    for s in range(0, pixels, _GPU_CHUNK):
        e = min(s + _GPU_CHUNK, pixels)
        block, index = logits[:, s:e], seg[s:e]
        picked = block.gather(0, segment_class.index_select(0, index)[None])[0]
        prob = picked.sub_(torch.logsumexp(block, 0)).exp_()
        out += torch.zeros(segment_class.numel(), dtype=torch.float32, device=logits.device).index_add_(0, index, prob)
    return out
