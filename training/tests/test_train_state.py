"""The run's files: whether a model file's depth branch is trained; resuming with a changed AMP setting."""

from __future__ import annotations

import logging

import pytest
import torch
from train_testing import small_config

from panoptic_depthlab_training.distributed import DistInfo
from panoptic_depthlab_training.train.model import build_initialized_model, configure_trainable
from panoptic_depthlab_training.train.optim import Optimization, build_optimization
from panoptic_depthlab_training.train.state import (
    load_training_state,
    resume_training,
    save_training_state,
    trained_depth,
)

pytestmark = pytest.mark.usefixtures("one_thread")

CPU = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), owns_group=False)


def _optimization(config, *, amp: bool) -> tuple[torch.nn.Module, Optimization]:
    """The tiny model and its optimisation, with a float16 loss scaler on or off.

    A CPU run never enables the scaler (AMP is CUDA only); GradScaler itself runs on the
    CPU, so a scaler in the state a CUDA AMP run writes can be made here.
    """
    init = build_initialized_model(config)
    opt = build_optimization(configure_trainable(init.model, config.mode), config, CPU)
    opt.scaler = torch.amp.GradScaler("cpu", enabled=amp)
    return init.model, opt


def _save(path, model, opt, config, *, iteration: int) -> None:
    save_training_state(
        path,
        model=model,
        optimizer=opt.optimizer,
        scheduler=opt.scheduler,
        scaler=opt.scaler,
        iteration=iteration,
        config=config,
        rng=[{"unused": 0}],
    )


def test_resume_with_amp_switched_on_starts_a_fresh_loss_scale(tmp_path, caplog):
    config = small_config()
    model, opt = _optimization(config, amp=False)
    path = tmp_path / "last_state.pt"
    _save(path, model, opt, config, iteration=7)
    assert load_training_state(path)["scaler"] == {}  # what an AMP-off (or CPU) run saves
    model, opt = _optimization(config, amp=True)
    with caplog.at_level(logging.WARNING, logger="panoptic_depthlab_training"):
        resumed = resume_training(path, model, opt, config=config, info=CPU)  # raised in GradScaler before
    assert resumed.iteration == 7 and resumed.rng == {"unused": 0}
    assert "fresh loss scale" in caplog.text
    assert opt.scaler.is_enabled() and opt.scaler.get_scale() == 65536.0  # GradScaler's initial scale
    loss = torch.ones((), requires_grad=True)
    assert float(opt.scaler.scale(loss).detach()) == 65536.0  # and it scales losses


def test_resume_keeps_the_loss_scale_or_drops_it_with_amp_off(tmp_path, caplog):
    config = small_config()
    model, opt = _optimization(config, amp=True)
    opt.scaler.scale(torch.ones(()))  # the scale exists once a loss was scaled
    opt.scaler.update(new_scale=1024.0)  # what some steps of float16 training leave
    path = tmp_path / "last_state.pt"
    _save(path, model, opt, config, iteration=3)
    model, opt = _optimization(config, amp=True)
    resume_training(path, model, opt, config=config, info=CPU)
    assert opt.scaler.get_scale() == 1024.0  # AMP on both times: the scale carries over
    model, opt = _optimization(config, amp=False)
    with caplog.at_level(logging.WARNING, logger="panoptic_depthlab_training"):
        assert resume_training(path, model, opt, config=config, info=CPU).iteration == 3
    assert "loss scale is not used" in caplog.text and not opt.scaler.is_enabled()


def test_the_depth_branch_counts_as_trained_once_its_loss_was():
    init = build_initialized_model(small_config("model.preset=tiny"))
    assert not init.model_config.depth_trained  # fresh weights
    config = small_config("model.preset=tiny")
    assert trained_depth(init, iteration=10, config=config)
    assert not trained_depth(init, iteration=0, config=config)
    without = small_config("model.preset=tiny", "loss.depth_weight=0")
    assert not trained_depth(init, iteration=10, config=without)
    init.model_config = init.model_config.with_(depth_trained=True)  # e.g. a trained checkpoint to start from
    assert trained_depth(init, iteration=10, config=without)
