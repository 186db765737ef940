"""Losses on tiny hand-built tensors; every expected value is derived in a comment."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from panoptic_depthlab_training.losses import (
    LossConfig,
    center_loss,
    depth_l1_loss,
    depth_supervision_mask,
    hard_pixel_cross_entropy,
    offset_loss,
    panoptic_depth_losses,
    silog_loss,
)

LN2 = math.log(2.0)


def _two_class_logits(margins: list[float]) -> torch.Tensor:
    """[1, 2, 1, P] logits whose class-0 log-probability is -log(1 + exp(-m)) per pixel."""
    m = torch.tensor(margins)
    return torch.stack((m, torch.zeros_like(m)))[None, :, None, :]


def test_hard_pixel_ce_averages_the_hardest_fraction():
    # margins 0, 0, 2, -2 for target class 0 -> per-pixel CE = log(1 + exp(-m)):
    # ln2, ln2, log(1+e^-2) = 0.126928, log(1+e^2) = 2.126928. Pixel 1 is ignored (loss 0)
    # but still counts in N*H*W = 4 (as Detectron2): top_k 0.5 -> k = 2 -> the two
    # largest are 2.126928 and ln2.
    logits = _two_class_logits([0.0, 0.0, 2.0, -2.0])
    target = torch.tensor([[[0, 255, 0, 0]]])
    loss = hard_pixel_cross_entropy(logits, target, ignore_label=255, top_k=0.5)
    expected = (math.log(1 + math.exp(2)) + LN2) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_hard_pixel_ce_weights_before_mining_and_top_k_one_is_plain_mean():
    logits = _two_class_logits([0.0, 0.0, 2.0, -2.0])
    target = torch.tensor([[[0, 255, 0, 0]]])
    weights = torch.tensor([[[3.0, 1.0, 1.0, 1.0]]])
    # weighted losses: 3 ln2 = 2.0794, 0, 0.126928, 2.126928; top 2 = 2.126928 and 2.0794
    loss = hard_pixel_cross_entropy(logits, target, weights, ignore_label=255, top_k=0.5)
    assert loss.item() == pytest.approx((math.log(1 + math.exp(2)) + 3 * LN2) / 2, rel=1e-6)
    # top_k = 1: mean over all 4 pixels, the ignored one contributing 0
    full = hard_pixel_cross_entropy(logits, target, ignore_label=255, top_k=1.0)
    expected = (LN2 + math.log(1 + math.exp(-2)) + math.log(1 + math.exp(2))) / 4
    assert full.item() == pytest.approx(expected, rel=1e-6)
    # a fraction too small for one pixel still averages the single hardest one
    tiny = hard_pixel_cross_entropy(logits, target, ignore_label=255, top_k=0.01)
    assert tiny.item() == pytest.approx(math.log(1 + math.exp(2)), rel=1e-6)


def test_hard_pixel_ce_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="target"):
        hard_pixel_cross_entropy(torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 3, dtype=torch.long))


def test_center_loss_is_weighted_mse_normalised_by_weight_sum():
    pred = torch.tensor([[[[0.0, 0.5], [1.0, 0.0]]]])
    target = torch.tensor([[[[1.0, 0.5], [0.0, 0.0]]]])
    weights = torch.tensor([[[[1.0, 1.0], [0.0, 1.0]]]])
    # squared errors 1, 0, (1, weight 0), 0 -> 1 / 3
    assert center_loss(pred, target, weights).item() == pytest.approx(1 / 3)


def test_offset_loss_sums_channels_and_counts_pixels_once():
    pred = torch.zeros(1, 2, 1, 2)
    target = torch.tensor([[[[1.0, 4.0]], [[-2.0, 8.0]]]])  # (dy, dx) per pixel
    weights = torch.tensor([[[[1.0, 0.0]]]])
    # only pixel 0: |1| + |-2| = 3, divided by one weighted pixel
    assert offset_loss(pred, target, weights).item() == pytest.approx(3.0)


def test_weighted_losses_are_zero_but_connected_without_weights():
    pred = torch.randn(1, 2, 3, 3, requires_grad=True)
    loss = offset_loss(pred, torch.randn(1, 2, 3, 3), torch.zeros(1, 1, 3, 3))
    assert loss.item() == 0.0
    loss.backward()
    assert pred.grad is not None and torch.count_nonzero(pred.grad) == 0


def test_depth_mask_drops_invalid_and_out_of_range_targets():
    depth = torch.tensor([[[[0.0, 0.4, 0.5, 10.0, 80.0, 120.0]]]])
    valid = torch.tensor([[[[False, True, True, True, True, True]]]])
    mask = depth_supervision_mask(depth, valid, min_depth=0.5, max_depth=80.0)
    assert mask.tolist() == [[[[False, False, True, True, True, False]]]]


def test_depth_l1_on_masked_pixels_only_and_ignores_nan_outside():
    pred = torch.tensor([[[[10.0, 10.0, 3.0]]]], requires_grad=True)
    target = torch.tensor([[[[12.0, 7.0, float("nan")]]]])
    mask = torch.tensor([[[[True, True, False]]]])
    loss = depth_l1_loss(pred, target, mask)
    assert loss.item() == pytest.approx((2 + 3) / 2)  # |10-12|, |10-7| over two pixels
    loss.backward()
    assert pred.grad.tolist() == [[[[-0.5, 0.5, 0.0]]]]  # d|x|/dx / 2; the masked pixel gets none
    empty = depth_l1_loss(pred, target, torch.zeros_like(mask))
    assert empty.item() == 0.0


def test_silog_of_a_uniform_scale_error():
    # pred = 2 * target everywhere: g = ln 2 for every pixel -> sqrt(ln2^2 - 0.85 ln2^2)
    target = torch.tensor([[[[4.0, 9.0, 20.0]]], [[[1.0, 1.0, 1.0]]]])
    mask = torch.tensor([[[[True, True, True]]], [[[False, False, False]]]])  # image 2 unsupervised
    loss = silog_loss(2 * target, target, mask, variance_weight=0.85)
    assert loss.item() == pytest.approx(math.sqrt(0.15) * LN2, rel=1e-5)
    # with lambda 0 it is the log-RMSE, ln 2
    assert silog_loss(2 * target, target, mask, variance_weight=0.0).item() == pytest.approx(LN2, rel=1e-5)


def test_depth_losses_weight_pixels():
    # pixel errors: |g| = ln 2 on pixel 0 (pred 2x), 0 on pixel 1; weights 3 and 1
    target = torch.tensor([[[[5.0, 7.0]]]])
    pred = torch.tensor([[[[10.0, 7.0]]]])
    mask = torch.ones(1, 1, 1, 2, dtype=torch.bool)
    weights = torch.tensor([[[[3.0, 1.0]]]])
    assert depth_l1_loss(pred, target, mask, weights).item() == pytest.approx(3 * 5.0 / 4)  # (3*5 + 1*0) / 4
    # log-RMSE: sqrt((3 ln2^2 + 0) / 4); unweighted sqrt(ln2^2 / 2)
    assert silog_loss(pred, target, mask, variance_weight=0.0, weights=weights).item() == pytest.approx(
        LN2 * math.sqrt(3 / 4), rel=1e-5
    )
    assert silog_loss(pred, target, mask, variance_weight=0.0).item() == pytest.approx(LN2 * math.sqrt(1 / 2), rel=1e-5)
    # a weight on a masked-out pixel counts for nothing
    assert depth_l1_loss(pred, target, torch.tensor([[[[False, True]]]]), weights).item() == 0.0


def test_thing_pixels_weigh_more_in_the_depth_loss():
    # pixel 0 a thing (offset target) 2x off, pixel 1 stuff exact; thing weight 4: (4*5 + 0) / 5 = 4 m
    batch = {
        "depth": torch.tensor([[[[5.0, 7.0]]]]),
        "depth_valid": torch.ones(1, 1, 1, 2, dtype=torch.bool),
        "offset_weights": torch.tensor([[[[1.0, 0.0]]]]),
    }
    outputs = {"depth": torch.tensor([[[[10.0, 7.0]]]])}
    weighted = LossConfig(depth_loss="l1", depth_thing_weight=4.0)
    assert panoptic_depth_losses(outputs, batch, weighted, min_depth=0.5, max_depth=80.0)[
        "loss_depth"
    ].item() == pytest.approx(4.0)
    plain = LossConfig(depth_loss="l1")  # (5 + 0) / 2
    assert panoptic_depth_losses(outputs, batch, plain, min_depth=0.5, max_depth=80.0)["loss_depth"].item() == 2.5


def test_panoptic_depth_losses_applies_weights_and_skips_absent_outputs():
    torch.manual_seed(0)
    n, c, h, w = 2, 3, 4, 4
    batch = {
        "sem_seg": torch.randint(0, c, (n, h, w)),
        "sem_seg_weights": torch.ones(n, h, w),
        "center": torch.rand(n, 1, h, w),
        "center_weights": torch.ones(n, 1, h, w),
        "offset": torch.randn(n, 2, h, w),
        "offset_weights": torch.ones(n, 1, h, w),
        "depth": torch.full((n, 1, h, w), 10.0),
        "depth_valid": torch.ones(n, 1, h, w, dtype=torch.bool),
    }
    outputs = {
        "sem_seg": torch.randn(n, c, h, w),
        "center": torch.zeros(n, 1, h, w),
        "offset": torch.zeros(n, 2, h, w),
        "depth": torch.full((n, 1, h, w), 12.0),
    }
    config = LossConfig(semantic_top_k=1.0, depth_weight=0.5)
    losses = panoptic_depth_losses(outputs, batch, config, min_depth=0.5, max_depth=80.0)
    assert set(losses) == {"loss_sem_seg", "loss_center", "loss_offset", "loss_depth"}
    ce = F.cross_entropy(outputs["sem_seg"], batch["sem_seg"])  # no ignore: plain mean
    assert losses["loss_sem_seg"].item() == pytest.approx(ce.item(), rel=1e-6)
    assert losses["loss_center"].item() == pytest.approx(200 * batch["center"].square().mean().item(), rel=1e-5)
    per_pixel_l1 = batch["offset"].abs().sum(1).mean().item()
    assert losses["loss_offset"].item() == pytest.approx(0.01 * per_pixel_l1, rel=1e-5)
    assert losses["loss_depth"].item() == pytest.approx(0.5 * 2.0)
    depth_only = panoptic_depth_losses({"depth": outputs["depth"]}, batch, config, min_depth=0.5, max_depth=80.0)
    assert set(depth_only) == {"loss_depth"}


def test_loss_config_validation():
    with pytest.raises(ValueError, match="depth_loss"):
        LossConfig(depth_loss="l2")
    with pytest.raises(ValueError, match="semantic_top_k"):
        LossConfig(semantic_top_k=0.0)
    with pytest.raises(ValueError, match="depth_thing_weight"):
        LossConfig(depth_thing_weight=0.0)
    with pytest.raises(ValueError, match="unknown"):
        LossConfig.from_dict({"center_weigth": 1.0})
