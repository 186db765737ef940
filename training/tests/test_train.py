"""The trainer on a tiny model and a few synthetic 64x128 frames, on CPU."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from panoptic_depthlab_ros.checkpoint import load_checkpoint
from panoptic_depthlab_ros.predictor import Predictor
from panoptic_depthlab_training import train as T
from panoptic_depthlab_training.cityscapes import CityscapesPanopticDepth, DatasetError, list_samples, read_camera

REPO = Path(__file__).resolve().parents[2]
D2_FIXTURES = REPO / "test" / "fixtures" / "detectron2"
LOSS_KEYS = ("loss_sem_seg", "loss_center", "loss_offset", "loss_depth")


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: on two shared cores, OpenMP threads that spin while other
    processes hold a core cost far more than they gain (measured 2-3x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# quick_cpu shrunk to the 64x128 test frames; no eval, no image panels, no progress bar.
SMALL = [
    "data.crop_size=[64,128]",
    "data.workers=0",
    "data.batch_per_device=1",
    "solver.ims_per_batch=2",
    "eval.period=0",
    "log.image_period=0",
    "log.period=1",
]


def _config(*overrides: str) -> dict:
    return T.load_config("quick_cpu", [*SMALL, *overrides])


def _run(config: dict, data: Path, out: Path, **kwargs) -> list[dict[str, float]]:
    history: list[dict[str, float]] = []
    T.train(
        config,
        data_root=data,
        out_dir=out,
        progress=False,
        callback=lambda it, values: history.append({"iteration": it, **values}),
        **kwargs,
    )
    return history


# ----------------------------------------------------------------------------- config
def test_bundled_configs_load_and_overrides_apply():
    for name in ("quick_cpu", "joint", "writeup_depth_only"):
        config = T.load_config(name)
        assert config["mode"] in T.MODES
    writeup = T.load_config("writeup_depth_only")
    # the write-up: depth branch only, Adam, lr 1e-3, 10k iterations, batch 14, L1 depth
    assert writeup["mode"] == "depth-only" and writeup["init"]["type"] == "detectron2"
    assert writeup["solver"]["optimizer"] == "adam" and writeup["solver"]["lr"] == 0.001
    assert writeup["solver"]["max_iter"] == 10000 and writeup["solver"]["ims_per_batch"] == 14
    assert writeup["loss"]["depth_loss"] == "l1"
    config = T.load_config("quick_cpu", ["solver.lr=5e-4", "data.crop_size=[32, 64]", "init.path=null"])
    assert config["solver"]["lr"] == 5e-4 and config["data"]["crop_size"] == [32, 64]
    assert config["init"]["path"] is None
    assert T.load_config(T.resolve_config_path("joint"))["solver"]["ims_per_batch"] == 32


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["solver.lrr=0.1"], "unknown config key 'solver.lrr'"),
        (["solver.lr"], "section.key=value"),
        (["mode=both"], "mode must be one of"),
        (["data.crop_size=[60,128]"], "multiples of 32"),
        (["init.type=detectron2"], "init.weights"),
        (["loss.depth_loss=l2"], "depth_loss"),
    ],
)
def test_bad_configs_are_refused(overrides, message):
    with pytest.raises(T.TrainingError, match=message):
        T.load_config("quick_cpu", overrides)


def test_lr_schedule_matches_detectron2_warmup_poly():
    kw = {"max_iter": 1000, "warmup_iters": 100, "warmup_factor": 0.001, "power": 0.9, "constant_ending": 0.0}
    assert T.lr_factor(0, schedule="poly", **kw) == pytest.approx(0.001)
    # half-way through warmup: 0.001 * 0.5 + 0.5, times (1 - 50/1000)^0.9
    assert T.lr_factor(50, schedule="poly", **kw) == pytest.approx(0.5005 * 0.95**0.9)
    assert T.lr_factor(500, schedule="poly", **kw) == pytest.approx(0.5**0.9)
    assert T.lr_factor(1000, schedule="poly", **kw) == 0.0
    assert T.lr_factor(500, schedule="constant", **kw) == 1.0
    assert T.lr_factor(999, schedule="poly", **{**kw, "constant_ending": 0.1}) == 0.1


def test_accumulation_reaches_the_configured_batch():
    assert T.accumulation_steps(14, 7, 2) == 1  # the write-up: two GPUs x 7
    assert T.accumulation_steps(14, 2, 1) == 7  # one small GPU
    assert T.accumulation_steps(32, 4, 2) == 4
    with pytest.raises(T.TrainingError, match="multiple"):
        T.accumulation_steps(14, 4, 1)


def test_sampler_shards_epochs_and_resumes_mid_stream():
    def take(sampler, n):
        it = iter(sampler)
        return [next(it) for _ in range(n)]

    ranks = [take(T.TrainSampler(7, rank=r, world_size=2, seed=3), 6) for r in (0, 1)]
    # 7 samples over 2 ranks: 3 per rank per epoch, disjoint within an epoch
    for epoch in (0, 1):
        seen = [i for r in ranks for (e, i) in r if e == epoch]
        assert len(seen) == 6 and len(set(seen)) == 6
    full = take(T.TrainSampler(7, rank=1, world_size=2, seed=3), 8)
    resumed = take(T.TrainSampler(7, rank=1, world_size=2, seed=3, start=4), 4)
    assert resumed == full[4:]


# ----------------------------------------------------------------------------- training
def test_depth_camera_comes_from_the_data_unless_configured(synth_root, synth_copy):
    info = T.DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), owns_group=False)
    config = _config()
    init = T.build_initialized_model(config)
    T.record_depth_camera(init, config, synth_root, info)
    fx = read_camera(list_samples(synth_root, "train")[0].camera)["fx"]
    assert init.model_config.depth_focal_px == pytest.approx(fx)
    config = _config("model.depth_focal_px=500.0")
    init = T.build_initialized_model(config)
    T.record_depth_camera(init, config, synth_root, info)
    assert init.model_config.depth_focal_px == 500.0
    for camera in (synth_copy / "camera" / "train").rglob("*.json"):
        camera.unlink()
    with pytest.raises(T.TrainingError, match="training cameras: .*camera"):
        T.record_depth_camera(T.build_initialized_model(_config()), _config(), synth_copy, info)


def test_scale_range_is_relative_to_the_input_scale(synth_root):
    """A model that will see frames enlarged 1.5x (``input_scale``) trains on crops drawn
    around 1.5x: with ``scale_range`` [1, 1] every crop is the whole frame at 1.5x, depth
    divided by 1.5 (the enlarged camera)."""
    info = T.DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), owns_group=False)
    config = _config("data.crop_size=[96,192]", "data.scale_range=[1.0,1.0]", "data.flip_prob=0.0")
    init = T.build_initialized_model(config)
    loader = T.build_train_loader(config, synth_root, init.classes, info, start=0, input_scale=1.5)
    batch = next(iter(loader))
    plain = CityscapesPanopticDepth(synth_root, "train")
    raw = plain[[s.stem for s in plain.samples].index(batch["stem"][0])]
    assert tuple(raw["image"].shape[-2:]) == (64, 128)
    image = raw["image"].permute(1, 2, 0).numpy().astype(np.uint8)
    expected = cv2.resize(image, (192, 96), interpolation=cv2.INTER_LINEAR).transpose(2, 0, 1)
    np.testing.assert_array_equal(batch["image"][0].numpy(), expected.astype(np.float32))
    valid = batch["depth_valid"][0]
    assert bool(valid.any())
    depth = batch["depth"][0][valid]
    assert float(depth.max()) == pytest.approx(float(raw["depth"][raw["depth_valid"]].max()) / 1.5, rel=1e-5)


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
    config = _config(
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
    history = _run(config, synth_root, tmp_path / "run")
    assert [h["iteration"] for h in history] == list(range(1, steps + 1))
    for key in LOSS_KEYS:
        first = history[0][key]
        last = np.mean([h[key] for h in history[-3:]])
        assert math.isfinite(first) and first > 0
        assert last < 0.75 * first, f"{key}: {first:.4f} -> {last:.4f}"
    assert (tmp_path / "run" / T.FINAL_MODEL).is_file()
    if variant:  # the stride-2 instance branch travels with the checkpoint and predicts
        predictor = Predictor.from_checkpoint(tmp_path / "run" / T.FINAL_MODEL, device="cpu")
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
    config = _config("solver.max_iter=4", "checkpoint.period=2", "solver.warmup_iters=2")
    straight = _run(config, synth_root, tmp_path / "a")

    def crash_at_3(iteration, values):
        if iteration == 3:
            raise _CrashError

    with pytest.raises(_CrashError):
        T.train(config, data_root=synth_root, out_dir=tmp_path / "b", progress=False, callback=crash_at_3)
    assert T.load_training_state(tmp_path / "b" / T.STATE_FILE)["iteration"] == 2
    with pytest.raises(T.TrainingError, match="--resume"):
        T.train(config, data_root=synth_root, out_dir=tmp_path / "b", progress=False)
    resumed = _run(config, synth_root, tmp_path / "b", resume=True)
    assert [h["iteration"] for h in resumed] == [3, 4]
    for a, b in zip(straight[2:], resumed, strict=True):
        for key in (*LOSS_KEYS, "lr"):
            assert b[key] == pytest.approx(a[key], rel=1e-6, abs=1e-9), (a["iteration"], key)
    final_a = load_file(tmp_path / "a" / T.FINAL_MODEL)
    final_b = load_file(tmp_path / "b" / T.FINAL_MODEL)
    for key, value in final_a.items():
        torch.testing.assert_close(final_b[key], value, rtol=1e-5, atol=1e-6, msg=key)
    # the exported model is the core's format and runs in the Predictor
    ckpt = load_checkpoint(tmp_path / "b" / T.FINAL_MODEL)
    assert ckpt.info["training"]["iteration"] == 4 and ckpt.info["training"]["mode"] == "joint"
    assert ckpt.postprocess.stuff_area == 32  # quick_cpu's postprocess override
    # the depth branch's metres are tied to the training camera, recorded from the data
    fx = {read_camera(f.camera)["fx"] for f in list_samples(synth_root, "train")}
    assert len(fx) == 1 and ckpt.model_config.depth_focal_px == pytest.approx(fx.pop())
    predictor = Predictor.from_checkpoint(tmp_path / "b" / T.FINAL_MODEL, device="cpu")
    result = predictor.predict(np.zeros((64, 128, 3), np.uint8))
    assert result.depth.shape == (64, 128) and np.isfinite(result.depth).all()


def test_depth_only_trains_only_the_depth_branch(synth_root, tmp_path):
    # The write-up's recipe at toy size: Detectron2 weights (the tiny fixture, trained
    # with 64x128 crops), frozen backbone/semantic/instance branches, Adam on depth_head.
    config = _config(
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
    init = T.build_initialized_model(config)
    assert not init.model_config.depth_trained  # Detectron2 has no depth branch: ours starts untrained
    start = init.model.state_dict()
    history = _run(config, synth_root, tmp_path / "run")
    assert all(set(h) & set(LOSS_KEYS) == {"loss_depth"} for h in history)
    assert np.mean([h["loss_depth"] for h in history[-3:]]) < 0.8 * history[0]["loss_depth"]
    final = load_checkpoint(tmp_path / "run" / T.FINAL_MODEL)
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


def test_the_depth_branch_counts_as_trained_once_its_loss_was():
    init = T.build_initialized_model(_config("model.preset=tiny"))
    assert not init.model_config.depth_trained  # fresh weights
    config = _config("model.preset=tiny")
    assert T.trained_depth(init, iteration=10, config=config)
    assert not T.trained_depth(init, iteration=0, config=config)
    without = _config("model.preset=tiny", "loss.depth_weight=0")
    assert not T.trained_depth(init, iteration=10, config=without)
    init.model_config = init.model_config.with_(depth_trained=True)  # e.g. a trained checkpoint to start from
    assert T.trained_depth(init, iteration=10, config=without)


def test_depth_only_freezing_helpers():
    init = T.build_initialized_model(_config("model.preset=tiny"))
    model = init.model
    params = T.configure_trainable(model, "depth-only")
    assert {id(p) for p in params} == {id(p) for p in model.depth_head.parameters()}
    assert not any(p.requires_grad for p in model.backbone.parameters())
    T.set_training_mode(model, "depth-only")
    assert model.depth_head.training and not model.backbone.training
    assert not model.sem_seg_head.training and not model.ins_embed_head.training
    T.set_training_mode(model, "joint")
    assert all(m.training for m in model.modules())


def test_training_refuses_a_broken_dataset(synth_copy, tmp_path):
    victim = list_samples(synth_copy, "train")[0].disparity
    victim.unlink()
    with pytest.raises(DatasetError, match="refusing to train") as info:
        T.train(_config("solver.max_iter=1"), data_root=synth_copy, out_dir=tmp_path / "run", progress=False)
    assert str(victim) in str(info.value)
    assert not (tmp_path / "run" / T.STATE_FILE).exists()


def test_a_bad_sample_is_logged_and_replaced(synth_copy, caplog):
    samples = list_samples(synth_copy, "train")
    samples[1].image.write_bytes(b"not a png")
    robust = T.RobustTrainSet(CityscapesPanopticDepth(synth_copy, "train"))
    with caplog.at_level(logging.WARNING, logger="panoptic_depthlab_training"):
        item = robust[(0, 1)]
    assert item["stem"] == samples[2].stem  # the next frame stands in
    assert str(samples[1].image) in caplog.text
    for sample in samples:
        sample.image.write_bytes(b"broken")
    with pytest.raises(DatasetError, match="in a row"):
        robust[(0, 0)]


def test_training_survives_a_corrupt_sample_when_not_verified(synth_copy, tmp_path, caplog):
    list_samples(synth_copy, "train")[0].label_ids.write_bytes(b"truncated")
    config = _config(
        "data.verify=false",
        "solver.max_iter=3",
        "checkpoint.period=3",
        "data.batch_per_device=2",
        "solver.ims_per_batch=2",
    )
    with caplog.at_level(logging.WARNING, logger="panoptic_depthlab_training"):
        history = _run(config, synth_copy, tmp_path / "run")
    assert len(history) == 3 and all(math.isfinite(h["total_loss"]) for h in history)
    assert "skipping training sample" in caplog.text
