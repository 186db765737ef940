"""Exact, faster stand-ins for torch CPU kernels that are slow for the fusion's shapes.

torch's CPU argmax over a leading axis is scalar code, its max-pool does a full window
per pixel, its float compare into bool and its nonzero are scalar, and a scatter whose
updates follow each other into one bin waits for each; these give the same results from
vectorised passes, OpenCV (dilation, lookup tables) and numpy (compare, nonzero) where
those are faster (the cost: docs/performance.md).  Used by the fusion and the segment
statistics; off the CPU each is the plain torch op.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from functools import partial
from itertools import pairwise
from typing import Any

import cv2
import numpy as np
import torch
from torch import Tensor

from . import native
from .parallel import lanes_for, run_parallel, scratch

# Pixels per block of argmax_channels: the block's [C, pixels] scratch stays in cache.
ARGMAX_BLOCK_PIXELS = 1 << 13


def argmax_channels(
    x: Tensor, *, lanes: int = 1, also: Sequence[Callable[[], Any]] = (), top_probability: Tensor | None = None
) -> Tensor:
    """``x.argmax(0)`` of [C, H, W] scores -> [H, W] (uint8 on CPU, else int64).

    Same result as torch: the first maximum on ties, and a NaN counts as the maximum.
    On CPU, in blocks of pixels that stay in cache: the maximum over the classes, then
    the first class equal to it, each a vectorised reduction over the block (torch's own
    argmax over a leading axis is scalar code).  ``top_probability``: an [H, W] tensor of
    ``x``'s dtype to fill with the softmax probability of the argmax class
    (:func:`softmax_probability`'s formula) in the same pass: the logits are read from
    memory once for both.  ``also``: other tasks to run in the same lanes (see
    :func:`~.parallel.run_parallel`).  With the compiled library (:mod:`.native`), float32
    scores take its single pass instead: the same labels, probabilities within float rounding.
    """
    num, h, w = x.shape
    if x.device.type != "cpu" or not 0 < num < 256 or not x.is_floating_point():
        run_parallel(also, 1)
        index = x.argmax(0)
        if top_probability is not None:
            flat = x.flatten(1)
            top_probability.copy_(softmax_probability(flat, index.flatten()).view(h, w))
        return index
    probability_ok = top_probability is None or (top_probability.is_contiguous() and top_probability.dtype == x.dtype)
    if x.dtype == torch.float32 and probability_ok and native.usable(x):  # one compiled pass (native.py)
        index = torch.empty((h, w), dtype=torch.uint8)
        lanes = lanes_for(h * w, lanes)
        parts = max(1, min(h, 4 * lanes))  # several parts per lane: lanes that finish early take more
        bounds = [h * i // parts for i in range(parts + 1)]
        tasks = [partial(native.argmax_probability, x, index, top_probability, a, b) for a, b in pairwise(bounds)]
        run_parallel([*also, *tasks], lanes)
        return index
    # Class k scores num - k where it equals the maximum: the largest score is num - (the first maximum).
    rank = torch.arange(num, 0, -1, dtype=x.dtype)[:, None, None]
    rows = max(1, ARGMAX_BLOCK_PIXELS // w)
    lanes = lanes_for(h * w, lanes)
    with ExitStack() as stack:
        best = stack.enter_context(scratch((h, w), x.dtype)) if top_probability is None else top_probability
        top = stack.enter_context(scratch((h, w), x.dtype))
        total = None if top_probability is None else stack.enter_context(scratch((h, w), x.dtype))
        # Per block: the scores and the outputs it writes (views made at once: cheaper than slicing).
        totals = [None] * len(best.split(rows)) if total is None else total.split(rows)
        views = list(zip(x.split(rows, 1), best.split(rows), top.split(rows), totals, strict=True))

        def group(part_views: list[tuple[Tensor, Tensor, Tensor, Tensor | None]]) -> None:
            with scratch((num, rows, w), x.dtype) as block:  # reused block by block: stays in cache
                for part, m, t, s in part_views:
                    sc = block[:, : part.shape[1]]
                    torch.amax(part, 0, out=m)  # NaN where any score is NaN
                    torch.eq(part, m, out=sc).mul_(rank)  # a float compare is vectorised, a bool one is not
                    torch.amax(sc, 0, out=t)  # num - first maximum; num where NaN
                    if s is not None:
                        torch.sum(torch.exp(part, out=sc), 0, out=s)

        size = max(1, len(views) // (4 * lanes))  # several groups per lane: lanes that finish early take more
        run_parallel([*also, *(partial(group, views[i : i + size]) for i in range(0, len(views), size))], lanes)
        index = top.to(torch.uint8).neg_().add_(num)  # num - (num - k) = k, exact in uint8 (mod 256)
        if int(index.amax()) == num:  # NaN scores: argmax takes the first NaN; redo those pixels with torch
            nan = torch.isnan(x).any(0)
            index[nan] = x[:, nan].argmax(0).to(torch.uint8)
        if top_probability is not None and total is not None:  # best is top_probability: exp(max) / sum
            _softmax_divide(best, total, x, out=top_probability)
    return index


def softmax_probability(logits: Tensor, classes: Tensor) -> Tensor:
    """Softmax probability [N] of class ``classes`` [N] (int) at each column of ``logits`` [C, N].

    exp(x_c) / sum_k exp(x_k): one exp per logit and no max pass, safe while the sum
    neither overflows nor underflows (logits within about +-80); a pixel whose sum does
    (inf, NaN or huge logits) takes exp(x_c - logsumexp(x)), Detectron2's formula.  The
    two agree to float32 rounding (~1e-7 relative).
    """
    picked = logits.gather(0, classes.long()[None])[0]
    return _softmax_divide(picked, logits.exp().sum(0), logits, out=picked)


def _softmax_divide(picked: Tensor, total: Tensor, logits: Tensor, *, out: Tensor) -> Tensor:
    """``out`` = exp(``picked``) / ``total`` with :func:`softmax_probability`'s fallback.

    ``total``: the exp sum of ``logits`` [C, ...] over dim 0; ``out`` may be ``picked``.
    """
    low, high = torch.aminmax(total)
    fallback = None
    if not (bool(high < math.inf) and bool(low > 1e-30)):
        bad = ~((total > 1e-30) & (total < math.inf))
        fallback = (bad, picked[bad].sub(torch.logsumexp(logits[:, bad], 0)).exp_())
    torch.exp(picked, out=out).div_(total)
    if fallback is not None:
        out[fallback[0]] = fallback[1]
    return out


def count_values(x: Tensor, size: int) -> Tensor:
    """``torch.bincount(x, minlength=size)`` of integers known to lie in ``[0, size)``: int64 [size].

    The CPU runs bincount itself. Elsewhere it is :func:`count_by_index_add`: CUDA's
    bincount reads the maximum back to the host to size its output, a sync per call.
    """
    if x.device.type == "cpu":
        return torch.bincount(x, minlength=size)
    return count_by_index_add(x, size)


def count_by_index_add(x: Tensor, size: int) -> Tensor:
    """Counts of the values of ``x`` (all in ``[0, size)``) by adding ones: no host sync."""
    index = (x if x.dtype in (torch.int32, torch.int64) else x.long()).reshape(-1)
    ones = torch.ones((), dtype=torch.int64, device=x.device).expand(index.numel())
    return torch.zeros(size, dtype=torch.int64, device=x.device).index_add_(0, index, ones)


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


def window_extreme(x: Tensor, size: int, *, largest: bool) -> Tensor:
    """[H, W] -> [H, W] max (or min) over the ``size`` x ``size`` window, clipped at the borders.

    On CPU, OpenCV's dilation (erosion) with a square kernel: exact, and 10x faster than
    torch here; NaN and infinite values (whose border handling OpenCV does not promise)
    take the separable torch path, as every other device.
    """
    if x.device.type == "cpu" and size > 1 and x.dim() == 2 and x.numel():
        image = _cv2_image(x)
        if image is not None:
            kernel = np.ones((size, size), dtype=np.uint8)
            out = (cv2.dilate if largest else cv2.erode)(image, kernel)
            return torch.from_numpy(out).to(x.dtype)
    rows = _sliding_extreme(x, 1, size, largest=largest)
    return _sliding_extreme(rows, 0, size, largest=largest)


def _cv2_image(x: Tensor) -> np.ndarray | None:
    """``x`` as an array OpenCV's morphology takes exactly (None: it cannot).

    float32 / float64 with only finite values as they are; integers up to 32 bits as float64.
    """
    if x.dtype in (torch.float32, torch.float64):
        if not math.isfinite(float(x.sum())):  # NaN or inf somewhere (or an overflowing sum: rare, then exact anyway)
            return None
        return np.ascontiguousarray(x.numpy())
    if x.dtype in (torch.int32, torch.int16, torch.int8, torch.uint8):
        return x.to(torch.float64).numpy()
    return None


def flat_nonzero(mask: Tensor) -> Tensor:
    """Indices [N] int64 of the True elements of ``mask`` in raster order (``torch.nonzero(mask.flatten())[:, 0]``).

    On CPU numpy's, 2-10x faster than torch's for image-sized masks.
    """
    if mask.device.type == "cpu":
        return torch.from_numpy(np.flatnonzero(mask.numpy()))
    return torch.nonzero(mask.flatten())[:, 0]


# Scatter keys spread over this many sub-bins by column (see spread_keys_).
SPREAD = 4


def spread_keys_(keys: Tensor, size: int) -> Tensor:
    """[H, W] int32 keys in ``[0, size)`` -> ``keys + (column % SPREAD) * size`` in place, as [H*W].

    A bincount or index_add whose consecutive updates hit one bin waits for each previous
    update, and a segment's pixels come in runs along a row: spread over SPREAD tables by
    column, neighbouring pixels update different bins (2-3x faster).  Count or sum into
    ``SPREAD * size`` bins, then add the tables with :func:`fold_spread`.
    """
    lane = torch.arange(keys.shape[-1], dtype=keys.dtype, device=keys.device).bitwise_and_(SPREAD - 1).mul_(size)
    return keys.add_(lane).view(-1)


def fold_spread(t: Tensor) -> Tensor:
    """[SPREAD * size] counts or sums of spread keys -> [size] (the tables added in order)."""
    return t.view(SPREAD, -1).sum(0)


def lookup(table: Tensor, index: Tensor) -> Tensor:
    """``table.index_select(0, index.flatten())`` for small tables; uint8 indices on CPU through OpenCV's LUT.

    A uint8 class map indexes a class table in one pass (torch needs the map as int32 first).
    """
    flat = index.reshape(-1)
    if flat.device.type == "cpu" and flat.dtype == torch.uint8 and table.numel() <= 256 and table.dtype == torch.int32:
        lut = np.zeros(256, dtype=np.int32)
        lut[: table.numel()] = table.numpy()
        return torch.from_numpy(cv2.LUT(flat.numpy(), lut).reshape(-1))
    return table.index_select(0, flat if flat.dtype in (torch.int32, torch.int64) else flat.to(torch.int32))


def indices_above(x: Tensor, threshold: float) -> Tensor:
    """Flat indices [N] int64 of the elements of ``x`` greater than ``threshold``, in raster order.

    On CPU numpy's compare and nonzero (a float compare into bool is scalar code in torch).
    """
    if x.device.type == "cpu" and x.is_contiguous() and x.is_floating_point():
        array = x.numpy()
        above = array > np.asarray(threshold, dtype=array.dtype)  # as torch compares: in x's dtype
        return torch.from_numpy(np.flatnonzero(above))
    return flat_nonzero(x > threshold)
