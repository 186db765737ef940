"""Exact, faster stand-ins for torch CPU kernels that are slow for the fusion's shapes.

torch's CPU argmax over a leading axis is scalar code, and its max-pool does a full
window per pixel; these give bit-identical results from a few vectorised passes
(the cost: docs/performance.md).  Used by the fusion and the segment statistics.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch
from torch import Tensor

from .parallel import BLOCK_PIXELS, row_blocks, run_parallel


def argmax_channels(x: Tensor, *, lanes: int = 1, also: Sequence[Callable[[], Any]] = ()) -> Tensor:
    """``x.argmax(0)`` of [C, H, W] scores -> [H, W] (uint8 on CPU, else int64).

    Same result as torch: the first maximum on ties, and a NaN counts as the
    maximum.  A running maximum over the class planes, in blocks of rows that stay
    in cache, instead of torch's scalar loop.  ``also``: other tasks to run in the
    same lanes (see :func:`~.parallel.run_parallel`).
    """
    num, h, w = x.shape
    if x.device.type != "cpu" or not 0 < num <= 256 or not x.is_floating_point():
        run_parallel(also, 1)
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

    blocks = row_blocks(h, w, BLOCK_PIXELS, x.device)
    run_parallel([*also, *(partial(block, r0, r1) for r0, r1 in blocks)], lanes)
    if nan_rows:  # argmax takes the first NaN; redo those pixels with torch
        nan = torch.isnan(x).any(0)
        index[nan] = x[:, nan].argmax(0).to(torch.uint8)
    return index


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
    """[H, W] -> [H, W] max (or min) over the ``size`` x ``size`` window (separable, exact)."""
    rows = _sliding_extreme(x, 1, size, largest=largest)
    return _sliding_extreme(rows, 0, size, largest=largest)
