"""The trainer end to end on a tiny model and a few synthetic 64x128 frames, on CPU."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from train_testing import LOSS_KEYS, run_recorded, small_config

from panoptic_depthlab_ros.checkpoint import load_checkpoint
from panoptic_depthlab_ros.predictor import Predictor
from panoptic_depthlab_training.cityscapes import DatasetError, list_samples, read_camera
from panoptic_depthlab_training.train.config import TrainingError
from panoptic_depthlab_training.train.loop import train
from panoptic_depthlab_training.train.model import build_initialized_model
from panoptic_depthlab_training.train.state import FINAL_MODEL, STATE_FILE, load_training_state

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[2]
D2_FIXTURES = REPO / "test" / "fixtures" / "detectron2"

FAST_CPU = (  # what training/configs/demo.yaml trains with
    "solver.cpu_bf16=true",
    "solver.channels_last=true",
    "model.instance.low_level=[stem,res2,res3]",
    "model.instance.project_channels=[8,8,16]",
)


@pytest.mark.parametrize(
    ("variant", "steps"), [((), 30), (FAST_CPU, 40)], ids=["float32", "bf16-nhwc-stride2-instance"]
)
def test_tiny_model_losses_fall(synth_root, tmp_path, variant, steps):
    # All train frames in every step, no augmentation, a large constant LR: every loss
    # must drop well below its first value (measured: 0.18-0.53 of it after 30 steps in
    # float32; the bfloat16 stride-2 variant learns offsets more slowly at first: 0.78
    # after 30 steps, 0.57 after 40).
    n = len(list_samples(synth_root, "train"))
    config = small_config(
        *variant,
        f"data.batch_per_device={n}",
        f"solver.ims_per_batch={n}",
        f"solver.max_iter={steps}",
        "solver.schedule=constant",
        "solver.warmup_iters=0",
        "solver.lr=0.02",
        "data.scale_range=[1,1]",
        "data.flip_prob=0",
        "checkpoint.period=1000",
    )
    history = run_recorded(config, synth_root, tmp_path / "run")
    assert [h["iteration"] for h in history] == list(range(1, steps + 1))
    for key in LOSS_KEYS:
        first = history[0][key]
        last = np.mean([h[key] for h in history[-3:]])
        assert math.isfinite(first) and first > 0
        assert last < 0.75 * first, f"{key}: {first:.4f} -> {last:.4f}"
    assert (tmp_path / "run" / FINAL_MODEL).is_file()
    if variant:  # the stride-2 instance branch travels with the checkpoint and predicts
        predictor = Predictor.from_checkpoint(tmp_path / "run" / FINAL_MODEL, device="cpu")
        assert predictor.model_config.instance.low_level == ("stem", "res2", "res3")
        assert predictor.model_config.instance.output_stride == 2
        image = np.zeros((64, 128, 3), np.uint8)
        image[32:] = (90, 90, 90)
        result = predictor.predict(image)
        assert result.panoptic.shape == (64, 128)


class _CrashError(Exception):
    pass


def test_resume_reproduces_the_uninterrupted_run(synth_root, tmp_path):
    # Augmentation, ASPP dropout, gradient accumulation (2 micro-batches) and a changing LR
    # are all live; the stopped run loses iteration 3 (after the iteration-2 checkpoint).
    config = small_config("solver.max_iter=4", "checkpoint.period=2", "solver.warmup_iters=2")
    straight = run_recorded(config, synth_root, tmp_path / "a")

    def crash_at_3(iteration, values):
        if iteration == 3:
            raise _CrashError

    with pytest.raises(_CrashError):
        train(config, data_root=synth_root, out_dir=tmp_path / "b", progress=False, callback=crash_at_3)
    assert load_training_state(tmp_path / "b" / STATE_FILE)["iteration"] == 2
    with pytest.raises(TrainingError, match="--resume"):
        train(config, data_root=synth_root, out_dir=tmp_path / "b", progress=False)
    resumed = run_recorded(config, synth_root, tmp_path / "b", resume=True)
    assert [h["iteration"] for h in resumed] == [3, 4]
    for a, b in zip(straight[2:], resumed, strict=True):
        for key in (*LOSS_KEYS, "lr"):
            assert b[key] == pytest.approx(a[key], rel=1e-6, abs=1e-9), (a["iteration"], key)
    final_a = load_file(tmp_path / "a" / FINAL_MODEL)
    final_b = load_file(tmp_path / "b" / FINAL_MODEL)
    for key, value in final_a.items():
        torch.testing.assert_close(final_b[key], value, rtol=1e-5, atol=1e-6, msg=key)
    # the exported model is the core's format and runs in the Predictor
    ckpt = load_checkpoint(tmp_path / "b" / FINAL_MODEL)
    assert ckpt.info["training"]["iteration"] == 4 and ckpt.info["training"]["mode"] == "joint"
    assert ckpt.info["training"]["config"] == config.to_dict()  # the header records the whole config
    assert ckpt.postprocess.stuff_area == 32  # quick_cpu's postprocess override
    # the depth branch's metres are tied to the training camera, recorded from the data
    fx = {read_camera(f.camera)["fx"] for f in list_samples(synth_root, "train")}
    assert len(fx) == 1 and ckpt.model_config.depth_focal_px == pytest.approx(fx.pop())
    predictor = Predictor.from_checkpoint(tmp_path / "b" / FINAL_MODEL, device="cpu")
    result = predictor.predict(np.zeros((64, 128, 3), np.uint8))
    assert result.depth.shape == (64, 128) and np.isfinite(result.depth).all()


def test_depth_only_trains_only_the_depth_branch(synth_root, tmp_path):
    # The write-up's recipe at toy size: Detectron2 weights (the tiny fixture, trained
    # with 64x128 crops), frozen backbone/semantic/instance branches, Adam on depth_head.
    config = small_config(
        "mode=depth-only",
        "init.type=detectron2",
        f"init.weights={D2_FIXTURES / 'tiny_model.pkl'}",
        f"init.config={D2_FIXTURES / 'tiny_config.yaml'}",
        "solver.max_iter=12",
        "solver.schedule=constant",
        "solver.warmup_iters=0",
        "solver.lr=0.01",
        "checkpoint.period=12",
    )
    init = build_initialized_model(config)
    assert not init.model_config.depth_trained  # Detectron2 has no depth branch: ours starts untrained
    start = init.model.state_dict()
    history = run_recorded(config, synth_root, tmp_path / "run")
    assert all(set(h) & set(LOSS_KEYS) == {"loss_depth"} for h in history)
    assert np.mean([h["loss_depth"] for h in history[-3:]]) < 0.8 * history[0]["loss_depth"]
    final = load_checkpoint(tmp_path / "run" / FINAL_MODEL)
    assert final.model_config.depth_trained  # the trainer marks it: its depth loss was trained
    end = final.state_dict
    frozen = [k for k in start if not k.startswith("depth_head.")]
    assert len(frozen) > 400
    for key in frozen:  # weights AND BatchNorm running statistics untouched
        assert torch.equal(start[key], end[key]), key
    changed = [k for k in start if k.startswith("depth_head.") and not torch.equal(start[k], end[k])]
    assert any(k.endswith("predictor.weight") for k in changed)
    # the trained branch's BatchNorm runs in train mode: its statistics move
    assert any(k.endswith("running_mean") for k in changed)


def test_training_refuses_a_broken_dataset(synth_copy, tmp_path):
    victim = list_samples(synth_copy, "train")[0].disparity
    victim.unlink()
    with pytest.raises(DatasetError, match="refusing to train") as info:
        train(small_config("solver.max_iter=1"), data_root=synth_copy, out_dir=tmp_path / "run", progress=False)
    assert str(victim) in str(info.value)
    assert not (tmp_path / "run" / STATE_FILE).exists()


def test_training_survives_a_corrupt_sample_when_not_verified(synth_copy, tmp_path, caplog):
    list_samples(synth_copy, "train")[0].label_ids.write_bytes(b"truncated")
    config = small_config(
        "data.verify=false",
        "solver.max_iter=3",
        "checkpoint.period=3",
        "data.batch_per_device=2",
        "solver.ims_per_batch=2",
    )
    with caplog.at_level(logging.WARNING, logger="panoptic_depthlab_training"):
        history = run_recorded(config, synth_copy, tmp_path / "run")
    assert len(history) == 3 and all(math.isfinite(h["total_loss"]) for h in history)
    assert "skipping training sample" in caplog.text
