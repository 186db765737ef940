"""The exact stand-ins of panoptic_depthlab_ros/kernels.py against the plain torch they replace.

Each fast path is run where it applies (CPU, the dtypes and sizes it takes) and compared
with the obvious torch computation on the values that break fast paths: ties, NaN, +-inf,
huge logits, views of cropped tensors, blocks that do not divide the image.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from panoptic_depthlab_ros import kernels
from panoptic_depthlab_ros.kernels import (
    SPREAD,
    argmax_channels,
    flat_nonzero,
    fold_spread,
    indices_above,
    lookup,
    softmax_probability,
    spread_keys_,
    window_extreme,
)


def ref_probability(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Softmax probability of ``classes`` at each column of ``logits`` [C, ...]: exp(x_c - logsumexp(x)) in float64."""
    x = logits.double()
    return x.gather(0, classes[None])[0].sub(torch.logsumexp(x, 0)).exp().float()


def ref_top_probability(logits: torch.Tensor) -> torch.Tensor:
    """The softmax probability of the argmax class, the slow way."""
    return ref_probability(logits, logits.argmax(0))


def assert_probability_close(got: torch.Tensor, ref: torch.Tensor, logits: torch.Tensor) -> None:
    """float32 rounding (1e-6); where the float32 exp sum over- or underflows, the float32
    logsumexp of logits around +-100 (an ulp of 1e-5) bounds it."""
    torch.testing.assert_close(got, ref, rtol=2e-5, atol=1e-7, equal_nan=True)
    total = logits.exp().sum(0)
    ordinary = (total > 1e-30) & (total < math.inf) & (ref > 1e-30)
    assert int(ordinary.sum()) > got.numel() * 3 // 4
    torch.testing.assert_close(got[ordinary], ref[ordinary], rtol=1e-6, atol=0)


def awkward_logits(seed: int, c: int = 19, h: int = 37, w: int = 53) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(c, h, w, generator=g) * 6
    x[4, :3] = x[9, :3] = 50.0  # exact ties: the lower class wins
    x[:, 5, :7] = x[0, 5, :7]  # every class tied
    x[2, 10, 10] = x[7, 10, 10] = math.nan  # NaN counts as the maximum (the first NaN)
    x[:, 11, 11] = math.nan
    x[3, 12, 12] = math.inf
    x[:, 13, 13] = -math.inf
    x[5, 14, :] = 200.0  # exp overflows: the logsumexp formula
    x[:, 15, :] = -120.0  # the exp sum underflows
    return x


@pytest.mark.parametrize("block", [64, 1 << 12])
@pytest.mark.parametrize("lanes", [1, 3])
def test_argmax_and_top_probability_equal_torch(
    monkeypatch: pytest.MonkeyPatch, block: int, lanes: int, passes: str
) -> None:
    monkeypatch.setattr(kernels, "ARGMAX_BLOCK_PIXELS", block)  # 64: one row a block, many blocks
    for seed in range(3):
        x = awkward_logits(seed)
        prob = torch.empty(x.shape[1:])
        labels = argmax_channels(x, lanes=lanes, top_probability=prob)
        assert labels.dtype == torch.uint8 and torch.equal(labels.long(), x.argmax(0))
        assert torch.equal(argmax_channels(x, lanes=lanes), labels)  # the same without the probability
        assert_probability_close(prob, ref_top_probability(x), x)
        assert torch.isnan(prob[10, 10]) and torch.isnan(prob[11, 11])  # NaN logits: NaN, as torch gives
        assert prob[14].gt(0.99).all() and prob[15].sub(1 / 19).abs().lt(1e-6).all()


def test_argmax_reads_a_cropped_view_without_copying_it(passes: str) -> None:
    x = awkward_logits(3, h=40, w=70)
    view = x[:, 2:35, 5:61]  # a padded output cropped: not contiguous
    prob = torch.empty(view.shape[1:])
    labels = argmax_channels(view, lanes=2, top_probability=prob)
    assert torch.equal(labels.long(), view.argmax(0))
    assert_probability_close(prob, ref_top_probability(view), view)


def test_softmax_probability_of_any_class_equals_torch() -> None:
    x = awkward_logits(4).flatten(1)
    classes = torch.randint(0, 19, (x.shape[1],), generator=torch.Generator().manual_seed(5))
    assert_probability_close(softmax_probability(x, classes), ref_probability(x, classes), x)


def ref_window(x: torch.Tensor, size: int, largest: bool) -> torch.Tensor:
    """Max (min) pooling with the window clipped at the borders: -inf (+inf) padding, as max_pool2d."""
    t = x.double()[None, None] * (1 if largest else -1)
    out = F.max_pool2d(F.pad(t, (size // 2,) * 4, value=-math.inf), size, stride=1)[0, 0]
    return (out * (1 if largest else -1)).to(x.dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int32, torch.uint8])
@pytest.mark.parametrize("size", [1, 3, 7, 9])
def test_window_extreme_equals_pooling(dtype: torch.dtype, size: int) -> None:
    g = torch.Generator().manual_seed(size)
    x = (torch.rand(31, 45, generator=g) * 200 - 100).round()  # plateaus and exact ties
    if dtype == torch.uint8:
        x = x.abs()
    x = x.to(dtype)
    for largest in (True, False):
        assert torch.equal(window_extreme(x, size, largest=largest), ref_window(x, size, largest)), largest


def test_window_extreme_with_nan_and_inf_takes_the_torch_path() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(20, 30, generator=g)
    x[3, 4] = math.nan
    x[0, 0] = x[19, 29] = -math.inf  # at the borders: the padding must not replace them
    x[10, 10] = math.inf
    for largest in (True, False):
        got = window_extreme(x, 5, largest=largest)
        torch.testing.assert_close(got, ref_window(x, 5, largest), equal_nan=True, rtol=0, atol=0)


def test_nonzero_and_threshold_indices_equal_torch() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.rand(33, 47, generator=g)
    x[1, 1] = float(np.float32(0.1))  # equal to the threshold in float32: not above it, as in torch
    x[2, 2] = math.nan
    for mask in (x > 0.5, x > 2.0, torch.ones_like(x, dtype=torch.bool)):
        assert torch.equal(flat_nonzero(mask), torch.nonzero(mask.flatten())[:, 0])
    for threshold in (0.1, 0.5, -1.0):
        assert torch.equal(indices_above(x, threshold), torch.nonzero((x > threshold).flatten())[:, 0]), threshold
    assert torch.equal(indices_above(x.double(), 0.1), torch.nonzero((x.double() > 0.1).flatten())[:, 0])


def test_lookup_equals_index_select() -> None:
    g = torch.Generator().manual_seed(3)
    table = torch.randint(-5, 1 << 30, (19,), generator=g, dtype=torch.int32)
    index = torch.randint(0, 19, (40, 50), generator=g)
    expected = table.index_select(0, index.flatten())
    for idx in (index.to(torch.uint8), index.to(torch.int32), index):
        got = lookup(table, idx)
        assert got.dtype == torch.int32 and torch.equal(got, expected), idx.dtype


def test_spread_keys_count_and_sum_like_the_plain_keys() -> None:
    g = torch.Generator().manual_seed(4)
    keys = torch.randint(0, 11, (23, 37), generator=g, dtype=torch.int32)
    values = torch.rand(23 * 37, generator=g, dtype=torch.float64)
    spread = spread_keys_(keys.clone(), 11)
    assert spread.shape == (23 * 37,) and int(spread.max()) < SPREAD * 11
    assert torch.equal(torch.remainder(spread, 11), keys.flatten())  # each key in its own column's table
    counts = fold_spread(torch.bincount(spread, minlength=SPREAD * 11))
    assert torch.equal(counts, torch.bincount(keys.flatten(), minlength=11))
    sums = fold_spread(torch.zeros(SPREAD * 11, dtype=torch.float64).index_add_(0, spread, values))
    torch.testing.assert_close(sums, torch.zeros(11, dtype=torch.float64).index_add_(0, keys.flatten().long(), values))
