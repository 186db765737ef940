"""The trainer's LR schedule and gradient accumulation."""

from __future__ import annotations

import pytest

from panoptic_depthlab_training.train.config import TrainingError
from panoptic_depthlab_training.train.optim import accumulation_steps, lr_factor


def test_lr_schedule_matches_detectron2_warmup_poly():
    kw = {"max_iter": 1000, "warmup_iters": 100, "warmup_factor": 0.001, "power": 0.9, "constant_ending": 0.0}
    assert lr_factor(0, schedule="poly", **kw) == pytest.approx(0.001)
    # half-way through warmup: 0.001 * 0.5 + 0.5, times (1 - 50/1000)^0.9
    assert lr_factor(50, schedule="poly", **kw) == pytest.approx(0.5005 * 0.95**0.9)
    assert lr_factor(500, schedule="poly", **kw) == pytest.approx(0.5**0.9)
    assert lr_factor(1000, schedule="poly", **kw) == 0.0
    assert lr_factor(500, schedule="constant", **kw) == 1.0
    assert lr_factor(999, schedule="poly", **{**kw, "constant_ending": 0.1}) == 0.1


def test_accumulation_reaches_the_configured_batch():
    assert accumulation_steps(14, 7, 2) == 1  # the write-up: two GPUs x 7
    assert accumulation_steps(14, 2, 1) == 7  # one small GPU
    assert accumulation_steps(32, 4, 2) == 4
    with pytest.raises(TrainingError, match="multiple"):
        accumulation_steps(14, 4, 1)
