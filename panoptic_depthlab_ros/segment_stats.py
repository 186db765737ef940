"""Per-segment depth statistics: one :class:`~.result.SegmentDepth` record per panoptic id.

:func:`segment_depth_statistics` gives each segment's area, bounding box and score, and
the mean, median, minimum, standard deviation, trimmed mean and 3D centroid of its
valid depth pixels (optionally eroded first, so that edges bleeding depth from their
neighbours do not count), all segments at once with scatter ops: no per-segment mask.

Medians and trimmed means need the depths sorted per segment; instead of a full
(segment, depth) sort, a per-segment histogram of the float bits locates the bucket
of each wanted rank and only those few buckets are sorted (exact, see
:func:`_order_statistics`).  On CPU the per-pixel passes run as tasks over the lanes
of :mod:`.parallel`, each in raster order, so results do not depend on the lanes.
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

from .fusion import PostprocessConfig, class_flags
from .kernels import count_values, window_extreme
from .metadata import ClassMetadata
from .parallel import BLOCK_PIXELS, SMALL_BLOCK_PIXELS, cpu_lanes, row_blocks, run_parallel
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
    with cpu_lanes(device) as lanes:
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


@dataclass
class _PixelSums:
    """What the passes over the pixels sum up per segment (index n: void or unused pixels).

    extent: area, y_min, y_max, x_min, x_max, sum of y, sum of x (int64 [n] each).
    sum_z, sum_zz: float64 [n] sums of the used depths and of their squares.
    bucket: float64 [(n + 1) * buckets] depth sum per (segment, depth bucket); None without used depth.
    centroid: float64 [n] sums of u*z and v*z (column, row); None without intrinsics.
    probability: float64 [n + 1] sums of the softmax probability of each segment's class; None without logits.
    """

    extent: tuple[Tensor, ...]
    sum_z: Tensor
    sum_zz: Tensor
    bucket: Tensor | None
    centroid: tuple[Tensor, Tensor] | None
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
    lanes: int,
) -> list[SegmentDepth]:
    h, w = panoptic.shape
    ids, seg = _segment_index(panoptic.reshape(-1))  # seg [H*W] int32, void = n
    n = int(ids.numel())
    if n == 0:
        return []
    category = torch.div(ids, classes.label_divisor, rounding_mode="floor")
    d = depth.reshape(-1).to(torch.float32).contiguous()
    use = _depth_pixels(panoptic, seg, d, n, config.depth_erosion_px)
    seg_use = torch.where(use, seg, n)  # [H*W] int32: the valid (eroded) depth pixels; the others in bin n
    count = count_values(seg_use, n + 1)[:n]
    key, buckets = _depth_buckets(seg_use, d, use, n, count)
    sums = _pixel_sums(
        seg,
        seg_use,
        d.to(torch.float64),
        category,
        n=n,
        h=h,
        w=w,
        key=key,
        key_bins=(n + 1) * buckets,
        sem_logits=sem_logits,
        centroid=camera_k is not None,
        lanes=lanes,
    )
    score = _scores(sums, category, classes=classes, center=center, h=h, w=w)

    f64 = torch.float64
    cnt = count.to(f64)
    mean = sums.sum_z / cnt
    std = (sums.sum_zz / cnt - mean * mean).clamp(min=0).sqrt()
    nan = torch.full((n,), math.nan, dtype=f64, device=panoptic.device)
    d_min = d_median = robust = nan
    if key is not None and sums.bucket is not None:
        hist = count_values(key, (n + 1) * buckets)[: n * buckets].view(n, buckets)
        weight = sums.bucket[: n * buckets].view(n, buckets)
        d_min, d_median, robust = _order_statistics(key, d, hist, weight, count, config.robust_trim)

    centroid = torch.full((n, 3), math.nan, dtype=f64, device=panoptic.device)
    if camera_k is not None and sums.centroid is not None:
        k = np.asarray(camera_k, dtype=np.float64).reshape(3, 3)
        fx, fy, cx0, cy0 = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
        sum_uz, sum_vz = sums.centroid
        centroid = torch.stack(((sum_uz / cnt - cx0 * mean) / fx, (sum_vz / cnt - cy0 * mean) / fy, mean), 1)

    area, y_min, y_max, x_min, x_max, _sum_y, _sum_x = sums.extent
    columns = [ids, category, score, area, x_min, y_min, x_max, y_max, cnt, mean]
    columns += [d_median, d_min, std, robust, *centroid.T]
    rows = torch.stack([c.to(f64) for c in columns], 1).cpu().numpy()
    return [_record(r, classes) for r in rows]  # tens to hundreds of segments, no per-pixel work


def _depth_pixels(panoptic: Tensor, seg: Tensor, d: Tensor, n: int, erosion_px: int) -> Tensor:
    """[H*W] bool: the pixels whose depth counts (finite, positive; eroded by ``erosion_px``).

    A segment that erosion would erase keeps its uneroded pixels.
    """
    use = (d > 0) & (d < math.inf)  # finite and positive
    if erosion_px <= 0:
        return use
    eroded = erode_labels(panoptic, erosion_px).reshape(-1) & use
    eroded_count = count_values(torch.where(eroded, seg, n), n + 1)[:n]
    fallback = torch.cat(((eroded_count == 0), eroded_count.new_zeros(1, dtype=torch.bool)))
    return eroded | (use & fallback.index_select(0, seg))


def _pixel_sums(
    seg: Tensor,
    seg_use: Tensor,
    z: Tensor,
    category: Tensor,
    *,
    n: int,
    h: int,
    w: int,
    key: Tensor | None,
    key_bins: int,
    sem_logits: Tensor | None,
    centroid: bool,
    lanes: int,
) -> _PixelSums:
    """Every per-pixel pass, as independent tasks over the lanes.

    Each sum keeps its raster order (the class probabilities are added block by block,
    in block order), so the result does not depend on the lanes.
    """
    blocks = row_blocks(h, w, SMALL_BLOCK_PIXELS, seg.device)
    big_blocks = row_blocks(h, w, BLOCK_PIXELS, seg.device)
    done: dict[str, Any] = {}
    tasks: list[Callable[[], Any]] = [
        lambda: done.__setitem__("extent", _segment_extent(seg, n, h, w)),
        lambda: done.__setitem__(
            "depth", _depth_sums(seg_use, z, n=n, w=w, blocks=big_blocks, key=key, key_bins=key_bins)
        ),
    ]
    if centroid:
        tasks.append(lambda: done.__setitem__("centroid", _centroid_sums(seg_use, z, n=n, h=h, w=w, blocks=big_blocks)))
    prob_parts: list[Tensor | None] = [None] * len(blocks)
    if sem_logits is not None:
        logits = sem_logits.reshape(sem_logits.shape[0], -1)  # [C, H*W]
        segment_class = torch.cat((category, category.new_zeros(1)))

        def prob_block(i: int, r0: int, r1: int) -> None:
            prob_parts[i] = _class_probability(logits, seg, segment_class, r0 * w, r1 * w)

        tasks += [partial(prob_block, i, r0, r1) for i, (r0, r1) in enumerate(blocks)]
    run_parallel(tasks, lanes)
    probability = None
    if sem_logits is not None:
        parts = [part for part in prob_parts if part is not None]
        assert len(parts) == len(blocks)  # every block ran
        probability = torch.stack(parts).sum(0)  # in block order: independent of the lanes
    sum_z, sum_zz, bucket = done["depth"]
    return _PixelSums(
        extent=done["extent"],
        sum_z=sum_z,
        sum_zz=sum_zz,
        bucket=bucket,
        centroid=done.get("centroid"),
        probability=probability,
    )


def _scores(
    sums: _PixelSums, category: Tensor, *, classes: ClassMetadata, center: Tensor | None, h: int, w: int
) -> Tensor:
    """Per segment [n] float64: the mean softmax probability of its class (times the center value for things).

    NaN without logits.
    """
    n = category.numel()
    f64 = torch.float64
    if sums.probability is None:
        return torch.full((n,), math.nan, dtype=f64, device=category.device)
    area, _y_min, _y_max, _x_min, _x_max, sum_y, sum_x = sums.extent
    score = sums.probability[:n] / area
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
    res = []
    for axis, length in ((0, h), (1, w)):
        stride = torch.arange(length, dtype=torch.int32, device=device) * (n + 1)
        key = grid + (stride[:, None] if axis == 0 else stride[None, :])
        lines = count_values(key.reshape(-1), length * (n + 1))
        lines = lines.view(length, n + 1)[:, :n]  # [length, n] pixels per line and segment
        hit = lines > 0
        position = torch.arange(length, device=device)[:, None]
        first = torch.where(hit, position, length).amin(0)
        last = torch.where(hit, position, -1).amax(0)
        res.append((lines.sum(0), first, last, (lines * position).sum(0)))
    (area, y_min, y_max, sum_y), (_, x_min, x_max, sum_x) = res
    return area, y_min, y_max, x_min, x_max, sum_y, sum_x


def _depth_buckets(seg_use: Tensor, d: Tensor, use: Tensor, n: int, count: Tensor) -> tuple[Tensor | None, int]:
    """Keys [P] int32 ``segment * buckets + bucket`` and the number of buckets per segment.

    The bit patterns of positive floats order like the floats, so a bucket is a run of
    leading bits of the depth's float32 pattern, as fine as fits in ``_HIST_BINS``
    (segment x bucket) bins.  Unused pixels (segment n) are clamped into row n.
    ``(None, 0)`` when no segment has a used pixel (``count`` [n]: used pixels per
    segment); one read-back to the host answers that and gives the range.
    """
    low = torch.where(use, d, math.inf).amin().view(torch.int32)
    high = torch.where(use, d, 0.0).amax().view(torch.int32)
    bits_lo, bits_hi, used = torch.stack((low.to(torch.int64), high.to(torch.int64), count.sum())).tolist()
    if not used:
        return None, 0
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
    if logits.device.type != "cpu":
        return _class_probability_gpu(logits, seg, segment_class, start, stop)
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


def _class_probability_gpu(logits: Tensor, seg: Tensor, segment_class: Tensor, start: int, stop: int) -> Tensor:
    """:func:`_class_probability` off the CPU: no host sync, no [C, H*W] temporary, no float64 atomics.

    Detectron2's formula exp(x_c - logsumexp(x)) for every pixel (no data-dependent choice
    to read back), over chunks of :data:`_GPU_CHUNK` pixels (the temporaries stay small:
    ~20 MB for 19 classes, not ~160 MB at 1024x2048); each chunk is summed per segment in
    float32 and the chunks in float64. Agrees with the CPU's to ~1e-6 relative.
    """
    out = torch.zeros(segment_class.numel(), dtype=torch.float64, device=logits.device)
    for s in range(start, stop, _GPU_CHUNK):
        e = min(s + _GPU_CHUNK, stop)
        block, index = logits[:, s:e], seg[s:e]
        picked = block.gather(0, segment_class.index_select(0, index)[None])[0]
        prob = picked.sub_(torch.logsumexp(block, 0)).exp_()
        out += torch.zeros(segment_class.numel(), dtype=torch.float32, device=logits.device).index_add_(0, index, prob)
    return out
