"""Train Panoptic-DepthLab: the write-up's depth-only recipe or all branches jointly.

    panoptic-depthlab-training train --config CFG.yaml --data ROOT --out DIR \
        [--iters N] [--resume] [section.key=value ...]
    torchrun --nproc_per_node=G -m panoptic_depthlab_training.cli train ...   # DDP

Layout follows torchvision's ``references/segmentation/train.py``: plain functions, a
reusable :func:`get_args_parser`, dict checkpoints, :func:`evaluate` under no_grad.

Modes:
* ``depth-only`` (the write-up): start from Detectron2 Panoptic-DeepLab weights, freeze
  the backbone and the semantic and instance branches, train the depth branch.
* ``joint``: every branch, Detectron2's WarmupPolyLR schedule, SyncBatchNorm under DDP.

Outputs in ``--out``: ``last_state.pt`` (everything ``--resume`` needs: model, optimizer,
scheduler, AMP scaler, per-rank RNG states, iteration; written atomically every
``checkpoint.period`` iterations and at the end), ``model_iter_XXXXXXX.safetensors`` /
``model_final.safetensors`` in the core's format (``Predictor.from_checkpoint`` loads
them), ``tensorboard/``, ``log.txt``, ``config.yaml`` and ``metrics.jsonl``.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import logging
import math
import os
import random
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from panoptic_depthlab_ros.checkpoint import (
    load_checkpoint,
    load_detectron2,
    load_state_dict_checked,
    postprocess_from_detectron2,
    save_checkpoint,
)
from panoptic_depthlab_ros.errors import PanopticDepthLabError
from panoptic_depthlab_ros.fusion import PostprocessConfig
from panoptic_depthlab_ros.metadata import ClassMetadata, cityscapes_metadata
from panoptic_depthlab_ros.model import ModelConfig, PanopticDepthLab, build_model
from panoptic_depthlab_ros.model.config import load_detectron2_yaml
from panoptic_depthlab_ros.model.panoptic_depthlab import upsample
from panoptic_depthlab_ros.predictor import Predictor
from panoptic_depthlab_ros.visualize import depth_colormap

from .cityscapes import CityscapesPanopticDepth, DatasetError, focal_length, list_samples, require_valid
from .evaluate import band_metrics, evaluate_split, flat_metrics
from .losses import LossConfig, panoptic_depth_losses
from .targets import PanopticTargetGenerator
from .transforms import TrainAugmentation

LOGGER = logging.getLogger("panoptic_depthlab_training")

MODES = ("joint", "depth-only")
INIT_TYPES = ("none", "detectron2", "checkpoint")
MODEL_PRESETS = ("r52", "tiny")
STATE_FILE = "last_state.pt"
FINAL_MODEL = "model_final.safetensors"
STATE_FORMAT = "panoptic-depthlab-train-state"
STATE_VERSION = 1
CONFIG_DIRS = (Path(__file__).resolve().parent / "configs", Path(__file__).resolve().parents[1] / "configs")

# Every key a config may set. ``model`` and ``postprocess`` are checked by ModelConfig and
# PostprocessConfig; everything else must appear here (a typo is an error, not a no-op).
DEFAULT_CONFIG: dict[str, Any] = {
    "mode": "joint",
    "seed": 0,
    "device": "auto",  # auto | cpu | cuda (under torchrun: cuda:LOCAL_RANK)
    "model": {"preset": "r52"},  # preset + ModelConfig field overrides
    "init": {"type": "none", "weights": None, "config": None, "path": None},
    "postprocess": {},  # PostprocessConfig overrides stored in the exported checkpoints
    "data": {
        "train_split": "train",
        "val_split": "val",
        "crop_size": [512, 1024],
        "scale_range": [0.5, 2.0],
        "flip_prob": 0.5,
        "batch_per_device": 8,
        "workers": 4,
        "verify": True,
    },
    "targets": {
        "sigma": 10,
        "small_instance_area": 4096,
        "small_instance_weight": 3.0,
        "ignore_stuff_in_offset": True,
        "ignore_crowd_in_semantic": False,
    },
    "solver": {
        "optimizer": "adam",
        "lr": 0.001,
        "weight_decay": 0.0,
        "momentum": 0.9,
        "betas": [0.9, 0.999],
        "schedule": "poly",  # poly (Detectron2 WarmupPolyLR) | constant (with the same warmup)
        "warmup_iters": 1000,
        "warmup_factor": 0.001,
        "poly_power": 0.9,
        "poly_constant_ending": 0.0,
        "max_iter": 90000,
        "ims_per_batch": 32,  # images per optimizer step, over all devices and accumulation
        "clip_grad_norm": 0.0,  # 0 = off
        "amp": True,  # float16 autocast + GradScaler, CUDA only
        "cpu_bf16": False,  # bfloat16 autocast on CPU: 1.5x faster steps on an AVX512-BF16 CPU (bench_training.py)
        "channels_last": False,  # NHWC weights and inputs: for tensor cores; no gain on our 2-core CPU
        "sync_bn": True,  # joint mode under multi-GPU DDP
    },
    "loss": LossConfig().to_dict(),
    "checkpoint": {"period": 1000},
    "log": {"period": 20, "image_period": 500},
    "eval": {"period": 0, "max_images": 0, "max_depth": None},
}


class TrainingError(PanopticDepthLabError):
    """A training run that cannot start or continue (bad config, clobbered output, ...)."""


# ----------------------------------------------------------------------------- config
class _ConfigLoader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` as a float (YAML 1.1 wants ``1.0e-3``)."""


_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 - a SafeLoader subclass


def resolve_config_path(name: str | Path) -> Path:
    """Return a config file path, or the path of a bundled config (``quick_cpu``, ...)."""
    path = Path(name)
    if path.is_file():
        return path
    stem = path.name.removesuffix(".yaml")
    for folder in CONFIG_DIRS:
        candidate = folder / f"{stem}.yaml"
        if candidate.is_file():
            return candidate
    bundled = sorted({p.stem for folder in CONFIG_DIRS if folder.is_dir() for p in folder.glob("*.yaml")})
    raise TrainingError(f"config {str(name)!r} is neither a file nor a bundled config {bundled}")


def _merge(base: dict[str, Any], update: Mapping[str, Any], *, where: str, free: bool) -> dict[str, Any]:
    """Deep-merge ``update`` into a copy of ``base``; unknown keys are errors unless ``free``."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        name = f"{where}.{key}" if where else key
        section_free = free or name in ("model", "postprocess")
        if key not in out and not section_free:
            raise TrainingError(f"unknown config key {name!r}")
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value, where=name, free=section_free)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_overrides(config: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (value parsed as YAML: numbers, lists, null, ...)."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise TrainingError(f"override {item!r} is not of the form section.key=value")
        value = _yaml_load(raw) if raw else None
        nested: Any = value
        for part in reversed(key.split(".")):
            nested = {part: nested}
        config = _merge(config, nested, where="", free=False)
    return config


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Defaults <- YAML file <- command-line overrides, checked for unknown keys."""
    file = resolve_config_path(path)
    try:
        loaded = _yaml_load(file.read_text()) or {}
    except yaml.YAMLError as exc:
        raise TrainingError(f"{file}: not valid YAML: {exc}") from exc
    if not isinstance(loaded, dict):
        raise TrainingError(f"{file}: top level must be a mapping")
    config = apply_overrides(_merge(DEFAULT_CONFIG, loaded, where="", free=False), overrides)
    check_config(config)
    return config


def check_config(config: Mapping[str, Any]) -> None:
    """Raise :class:`TrainingError` for values that cannot work (before any heavy work)."""
    if config["mode"] not in MODES:
        raise TrainingError(f"mode must be one of {MODES}, got {config['mode']!r}")
    init = config["init"]
    if init["type"] not in INIT_TYPES:
        raise TrainingError(f"init.type must be one of {INIT_TYPES}, got {init['type']!r}")
    if init["type"] == "detectron2" and not (init["weights"] and init["config"]):
        raise TrainingError("init.type=detectron2 needs init.weights (.pkl/.pth) and init.config (its YAML)")
    if init["type"] == "checkpoint" and not init["path"]:
        raise TrainingError("init.type=checkpoint needs init.path (one of our .safetensors files)")
    crop = config["data"]["crop_size"]
    if len(crop) != 2 or any(int(c) <= 0 or int(c) % 32 for c in crop):
        raise TrainingError(f"data.crop_size must be two positive multiples of 32, got {crop}")
    solver = config["solver"]
    if solver["schedule"] not in ("poly", "constant"):
        raise TrainingError(f"solver.schedule must be poly or constant, got {solver['schedule']!r}")
    if solver["optimizer"].lower() not in ("adam", "adamw", "sgd"):
        raise TrainingError(f"solver.optimizer must be adam, adamw or sgd, got {solver['optimizer']!r}")
    if int(solver["max_iter"]) < 1 or int(solver["ims_per_batch"]) < 1:
        raise TrainingError("solver.max_iter and solver.ims_per_batch must be >= 1")
    if int(config["data"]["batch_per_device"]) < 1 or int(config["checkpoint"]["period"]) < 1:
        raise TrainingError("data.batch_per_device and checkpoint.period must be >= 1")
    try:
        LossConfig.from_dict(config["loss"])
    except (TypeError, ValueError) as exc:
        raise TrainingError(str(exc)) from exc


def accumulation_steps(ims_per_batch: int, batch_per_device: int, world_size: int) -> int:
    """Micro-batches per optimizer step so that one step sees ``ims_per_batch`` images."""
    per_pass = batch_per_device * world_size
    if ims_per_batch % per_pass:
        raise TrainingError(
            f"solver.ims_per_batch={ims_per_batch} is not a multiple of data.batch_per_device="
            f"{batch_per_device} x {world_size} process(es); choose a batch_per_device dividing it"
        )
    return ims_per_batch // per_pass


# ----------------------------------------------------------------------------- distributed
@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job (world_size 1 without torchrun)."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool  # we initialised the process group, so we destroy it

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files, logs and shows progress."""
        return self.rank == 0


def init_distributed(device: str) -> DistInfo:
    """Join the torchrun job if there is one (NCCL on CUDA, gloo on CPU) and pick the device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    name = str(device)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise TrainingError(f"device {device!r} requested but CUDA is not available")
        dev = torch.device("cuda", local_rank) if name == "cuda" else torch.device(name)
        torch.cuda.set_device(dev)
    elif name == "cpu":
        dev = torch.device("cpu")
    else:
        raise TrainingError(f"device must be auto, cpu or cuda[:N], got {device!r}")
    owns = False
    if world_size > 1 and not dist.is_initialized():
        # Long timeout: rank 0 verifies the dataset while the others wait.
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", timeout=timedelta(minutes=30))
        owns = True
    rank = dist.get_rank() if dist.is_initialized() else 0
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=dev, owns_group=owns)


def _broadcast(value: Any, info: DistInfo) -> Any:
    """Rank 0's ``value`` on every rank."""
    if info.world_size == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _all_gather(value: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``value``, in rank order."""
    if info.world_size == 1:
        return [value]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, value)
    return out


def _mean_over_ranks(values: dict[str, float], info: DistInfo) -> dict[str, float]:
    if info.world_size == 1 or not values:
        return values
    keys = sorted(values)
    t = torch.tensor(
        [values[k] for k in keys], dtype=torch.float64, device=info.device if info.device.type == "cuda" else "cpu"
    )
    dist.all_reduce(t)
    return {k: float(v) / info.world_size for k, v in zip(keys, t.tolist(), strict=True)}


def verify_dataset(root: Path, splits: Sequence[str], info: DistInfo) -> None:
    """Rank 0 checks every file of ``splits``; every rank raises the same report if broken."""
    message = None
    if info.is_main:
        LOGGER.info("verifying %s (%s) ...", root, ", ".join(splits))
        try:
            report = require_valid(root, splits, require_depth=True)
            LOGGER.info("%s", report.format())
        except DatasetError as exc:
            message = str(exc)
    message = _broadcast(message, info)
    if message is not None:
        raise DatasetError(f"refusing to train on a broken dataset:\n{message}")


# ----------------------------------------------------------------------------- model
@dataclass
class Initialized:
    """The network to train and what the exported checkpoints need to describe it."""

    model: PanopticDepthLab
    model_config: ModelConfig
    classes: ClassMetadata
    postprocess: PostprocessConfig
    note: str


def _model_config(base: ModelConfig, overrides: Mapping[str, Any]) -> ModelConfig:
    merged = _merge(base.to_dict(), overrides, where="model", free=True)
    try:
        return ModelConfig.from_dict(merged)
    except (TypeError, ValueError) as exc:
        raise TrainingError(f"model config: {exc}") from exc


def build_initialized_model(config: Mapping[str, Any]) -> Initialized:
    """Build the model of ``config['model']`` initialised as ``config['init']`` says.

    ``none``: the preset (``r52`` = Detectron2's R-52 Cityscapes model, ``tiny``) with
    fresh weights. ``detectron2``: architecture from the Detectron2 YAML, its weights,
    the depth branch freshly initialised. ``checkpoint``: one of our files. In the last
    two cases ``model`` keys other than ``preset`` override the file's architecture
    (e.g. ``max_depth``); weights must still fit.
    """
    overrides = {k: v for k, v in config["model"].items() if k != "preset"}
    init = config["init"]
    post_overrides = dict(config["postprocess"])
    if init["type"] == "none":
        preset = config["model"].get("preset", "r52")
        if preset not in MODEL_PRESETS:
            raise TrainingError(f"model.preset must be one of {MODEL_PRESETS}, got {preset!r}")
        base = ModelConfig.tiny() if preset == "tiny" else ModelConfig()
        model_config = _model_config(base, overrides).with_(depth_trained=False)  # fresh weights everywhere
        model, classes, post = build_model(model_config), cityscapes_metadata(), PostprocessConfig()
        note = f"fresh {preset} weights"
    elif init["type"] == "detectron2":
        try:
            d2 = load_detectron2_yaml(init["config"])
            d2_config = ModelConfig.from_detectron2(d2)
        except (OSError, ValueError) as exc:
            raise TrainingError(f"init.config: {exc}") from exc
        model_config = _model_config(d2_config, overrides)
        model, _, _, report = load_detectron2(init["weights"], model_config)
        classes, post = cityscapes_metadata(), postprocess_from_detectron2(d2)
        note = (
            f"Detectron2 {init['weights']}: {len(report.loaded)} tensors loaded, "
            f"{len(report.initialized)} depth-branch tensors initialised"
        )
    else:
        ckpt = load_checkpoint(init["path"])
        model_config = _model_config(ckpt.model_config, overrides)
        model = build_model(model_config)
        load_state_dict_checked(model, ckpt.state_dict, source=init["path"], allow_missing_prefix=None)
        classes, post = ckpt.classes, ckpt.postprocess
        note = f"checkpoint {init['path']}"
    try:
        post = PostprocessConfig.from_dict({**post.to_dict(), **post_overrides})
    except (TypeError, ValueError) as exc:
        raise TrainingError(f"postprocess config: {exc}") from exc
    unknown = sorted(set(post_overrides) - set(post.to_dict()))
    if unknown:
        raise TrainingError(f"unknown postprocess keys: {unknown}")
    return Initialized(model=model, model_config=model_config, classes=classes, postprocess=post, note=note)


def record_depth_camera(init: Initialized, config: Mapping[str, Any], data_root: Path, info: DistInfo) -> None:
    """Store the training cameras' focal length in the model config (``depth_focal_px``).

    The depth branch learns metres for the cameras it sees (scale augmentation keeps
    that camera, see ``transforms``); the predictor rescales for other cameras. A value
    set in ``config['model']`` wins (e.g. images resized before training).
    """
    if "depth_focal_px" in config["model"]:
        return
    split = config["data"]["train_split"]
    try:
        fx, spread = focal_length(list_samples(data_root, split))
    except DatasetError as exc:
        raise TrainingError(f"training cameras: {exc}") from exc
    init.model_config = init.model_config.with_(depth_focal_px=fx)
    if info.is_main:
        LOGGER.info("depth is learnt for fx = %.1f px (median of the %s cameras)", fx, split)
        if spread > 0.05:
            LOGGER.warning(
                "the %s cameras' fx differ by %.0f%%: depth is learnt for a mix of cameras; "
                "set model.depth_focal_px or train on one camera",
                split,
                100 * spread,
            )


def configure_trainable(model: PanopticDepthLab, mode: str) -> list[nn.Parameter]:
    """Set ``requires_grad`` for ``mode`` and return the parameters to optimise.

    ``depth-only`` trains ``depth_head`` alone; the frozen parts get no gradients (no
    wasted backward through the backbone, and nothing an optimizer could touch).
    """
    if mode == "joint":
        for p in model.parameters():
            p.requires_grad_(True)
        return list(model.parameters())
    for p in model.parameters():
        p.requires_grad_(False)
    for p in model.depth_head.parameters():
        p.requires_grad_(True)
    return list(model.depth_head.parameters())


def set_training_mode(model: PanopticDepthLab, mode: str) -> None:
    """``model.train()``, except that frozen parts stay in eval mode in ``depth-only``.

    ``requires_grad=False`` does not stop a BatchNorm in train mode from normalising with
    the batch's statistics and overwriting its running statistics: the frozen backbone
    and heads would drift from the pretrained ones (and produce other features than at
    inference). In eval mode they compute exactly what the deployed model computes, and
    ASPP dropout in the frozen heads is off.
    """
    model.train()
    if mode == "depth-only":
        model.backbone.eval()
        model.sem_seg_head.eval()
        model.ins_embed_head.eval()


class TrainingNetwork(nn.Module):
    """What DDP wraps: the model's outputs for the branches being trained.

    ``joint``: ``PanopticDepthLab.forward``. ``depth-only``: backbone without autograd,
    then the depth branch only (the semantic and instance heads would be pure waste),
    upsampled and mapped to metres exactly as ``PanopticDepthLab.forward`` does.
    """

    def __init__(self, model: PanopticDepthLab, *, depth_only: bool) -> None:
        super().__init__()
        self.model = model
        self.depth_only = depth_only

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """``x`` [N, 3, H, W] normalized -> outputs at [H, W] (see ``PanopticDepthLab``)."""
        if not self.depth_only:
            return self.model(x)
        with torch.no_grad():
            features = self.model.backbone(x)
        logit = self.model.depth_head(features)
        return {"depth": self.model.depth_head.to_meters(upsample(logit, self.model.strides["depth"]))}


def normalize_images(images: Tensor, model_config: ModelConfig) -> Tensor:
    """[N, 3, H, W] float RGB 0..255 -> the network's normalised input (as ``prepare_image``)."""
    if model_config.input_format == "BGR":
        images = images.flip(1)
    mean = torch.tensor(model_config.pixel_mean, dtype=images.dtype, device=images.device)
    std = torch.tensor(model_config.pixel_std, dtype=images.dtype, device=images.device)
    return (images - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)


# ----------------------------------------------------------------------------- optimisation
def build_optimizer(params: list[nn.Parameter], solver: Mapping[str, Any]) -> torch.optim.Optimizer:
    """Adam (Detectron2's Panoptic-DeepLab and the write-up), AdamW or SGD with momentum."""
    name = solver["optimizer"].lower()
    lr, wd = float(solver["lr"]), float(solver["weight_decay"])
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=tuple(solver["betas"]), weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=tuple(solver["betas"]), weight_decay=wd)
    return torch.optim.SGD(params, lr=lr, momentum=float(solver["momentum"]), weight_decay=wd)


def lr_factor(
    iteration: int,
    *,
    schedule: str,
    max_iter: int,
    warmup_iters: int,
    warmup_factor: float,
    power: float,
    constant_ending: float,
) -> float:
    """Multiplier of the base LR at ``iteration`` (0-based), as Detectron2's WarmupPolyLR.

    Linear warmup from ``warmup_factor`` over ``warmup_iters``, times
    ``(1 - iteration / max_iter) ** power`` for ``poly`` (held at ``constant_ending`` once
    below it after warmup) or 1 for ``constant``.
    """
    warm = 1.0
    if iteration < warmup_iters:
        alpha = iteration / warmup_iters
        warm = warmup_factor * (1 - alpha) + alpha
    if schedule == "constant":
        return warm
    decay = (1.0 - min(iteration, max_iter) / max_iter) ** power
    if constant_ending > 0 and warm == 1.0 and decay < constant_ending:
        return constant_ending
    return warm * decay


def build_scheduler(optimizer: torch.optim.Optimizer, solver: Mapping[str, Any]) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-iteration LR schedule (stepped once per optimizer step)."""
    factor = functools.partial(
        lr_factor,
        schedule=solver["schedule"],
        max_iter=int(solver["max_iter"]),
        warmup_iters=int(solver["warmup_iters"]),
        warmup_factor=float(solver["warmup_factor"]),
        power=float(solver["poly_power"]),
        constant_ending=float(solver["poly_constant_ending"]),
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# ----------------------------------------------------------------------------- data
class TrainSampler(Sampler[tuple[int, int]]):
    """Endless ``(epoch, index)`` stream of one rank, resumable at any position.

    Epoch ``e`` is ``randperm(size)`` seeded with ``seed + e`` (as ``DistributedSampler``),
    cut to a multiple of ``world_size`` and dealt round-robin, so every rank sees
    ``size // world_size`` distinct samples per epoch. ``start`` = samples this rank has
    already consumed: the stream continues exactly where an earlier run stopped.
    """

    def __init__(self, size: int, *, rank: int, world_size: int, seed: int, start: int = 0) -> None:
        if size // world_size < 1:
            raise TrainingError(f"{size} training samples cannot be split over {world_size} processes")
        self.size = size
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.start = start
        self.per_rank = size // world_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, skip = divmod(self.start, self.per_rank)
        while True:
            g = torch.Generator()
            g.manual_seed(self.seed + epoch)
            order = torch.randperm(self.size, generator=g)[: self.per_rank * self.world_size]
            for index in order[self.rank :: self.world_size].tolist()[skip:]:
                yield epoch, index
            epoch, skip = epoch + 1, 0


class RobustTrainSet(Dataset):
    """Items by ``(epoch, index)``; a sample that fails to load is logged and replaced.

    A long run must survive one corrupt file: on :class:`DatasetError` (its message names
    the file) the next index is tried, up to ``max_tries`` in a row. The epoch selects
    the augmentation stream (see ``CityscapesPanopticDepth``) inside the worker.
    """

    def __init__(self, dataset: CityscapesPanopticDepth, *, max_tries: int = 10) -> None:
        self.dataset = dataset
        self.max_tries = max_tries

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        epoch, index = key
        self.dataset.set_epoch(epoch)
        error: DatasetError | None = None
        for attempt in range(self.max_tries):
            i = (index + attempt) % len(self.dataset)
            try:
                return self.dataset[i]
            except DatasetError as exc:
                error = exc
                LOGGER.warning("skipping training sample %d (%s): %s", i, self.dataset.samples[i].stem, exc)
        raise DatasetError(f"{self.max_tries} training samples in a row failed to load; last: {error}")


def build_train_loader(
    config: Mapping[str, Any],
    data_root: Path,
    classes: ClassMetadata,
    info: DistInfo,
    *,
    start: int,
    input_scale: float = 1.0,
) -> DataLoader:
    """Endless loader of this rank's augmented crops, from sample position ``start``.

    ``data.scale_range`` is relative to the model's ``input_scale`` (the scale the
    predictor will show it frames at), so the augmentation is centred where it will run.
    """
    data, targets = config["data"], config["targets"]
    lo, hi = (input_scale * float(s) for s in data["scale_range"])
    generator = PanopticTargetGenerator(
        classes.thing_ids,
        ignore_label=classes.ignore_label,
        sigma=int(targets["sigma"]),
        ignore_stuff_in_offset=bool(targets["ignore_stuff_in_offset"]),
        small_instance_area=int(targets["small_instance_area"]),
        small_instance_weight=float(targets["small_instance_weight"]),
        ignore_crowd_in_semantic=bool(targets["ignore_crowd_in_semantic"]),
    )
    augment = TrainAugmentation(
        crop_size=(int(data["crop_size"][0]), int(data["crop_size"][1])),
        scale_range=(lo, hi),
        flip_prob=float(data["flip_prob"]),
    )
    dataset = CityscapesPanopticDepth(
        data_root,
        data["train_split"],
        transform=augment,  # type: ignore[arg-type]  # generic over the sample type
        target_generator=generator,
        seed=int(config["seed"]),
    )
    sampler = TrainSampler(
        len(dataset), rank=info.rank, world_size=info.world_size, seed=int(config["seed"]), start=start
    )
    workers = int(data["workers"])
    # Own generator: creating the iterator must not draw from the global RNG that --resume restores.
    return DataLoader(
        RobustTrainSet(dataset),
        batch_size=int(data["batch_per_device"]),
        sampler=sampler,
        num_workers=workers,
        pin_memory=info.device.type == "cuda",
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(int(config["seed"])),
    )


_TARGET_KEYS = (
    "sem_seg",
    "sem_seg_weights",
    "center",
    "center_weights",
    "offset",
    "offset_weights",
    "depth",
    "depth_valid",
)


def batch_to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Tensor]:
    """Move the image and target tensors of a collated batch to ``device``."""
    nb = device.type == "cuda"
    return {k: batch[k].to(device, non_blocking=nb) for k in ("image", *_TARGET_KEYS)}


# ----------------------------------------------------------------------------- checkpoints
def _atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file in the same directory, fsync, then rename."""
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def capture_rng_state() -> dict[str, Any]:
    """Return the torch, CUDA, Python and numpy RNG states (weights_only-loadable types)."""
    np_state = cast(tuple, np.random.get_state())  # legacy ("MT19937", keys, pos, has_gauss, gauss)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "gauss": float(np_state[4]),
        },
    }


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))


def save_training_state(
    path: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    iteration: int,
    config: Mapping[str, Any],
    rng: list[dict[str, Any]],
) -> None:
    """Write everything ``--resume`` needs, atomically (``rng``: one state per rank)."""
    state = {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "iteration": iteration,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": rng,
        "world_size": len(rng),
        "config": dict(config),
    }
    _atomic_torch_save(state, path)


def load_training_state(path: Path) -> dict[str, Any]:
    """Read :func:`save_training_state`'s file with ``weights_only=True`` (no code runs)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same problem for the user
        raise TrainingError(f"{path}: cannot read the training state ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise TrainingError(f"{path}: not a {STATE_FORMAT} file")
    return state


def trained_depth(init: Initialized, *, iteration: int, config: Mapping[str, Any]) -> bool:
    """Whether the depth branch has been trained: it came trained, or a depth loss has been trained.

    A Detectron2 start (or fresh weights) has an untrained one until the first iteration with
    ``loss.depth_weight`` above zero (both modes train depth then; ``depth-only`` nothing else).
    """
    return init.model_config.depth_trained or (iteration > 0 and float(config["loss"]["depth_weight"]) > 0)


def export_model(path: Path, init: Initialized, *, iteration: int, config: Mapping[str, Any], data_root: Path) -> Path:
    """Write the model in the core's format (what ``Predictor.from_checkpoint`` loads)."""
    info = {
        "training": {
            "iteration": iteration,
            "mode": config["mode"],
            "dataset": str(data_root),
            "init": init.note,
            "config": dict(config),
        }
    }
    model_config = init.model_config.with_(depth_trained=trained_depth(init, iteration=iteration, config=config))
    return save_checkpoint(
        path, init.model, model_config=model_config, classes=init.classes, postprocess=init.postprocess, info=info
    )


def _config_differences(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    diffs = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        name = f"{prefix}{key}"
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            diffs += _config_differences(a, b, name + ".")
        elif a != b:
            diffs.append(f"{name}: {a!r} -> {b!r}")
    return diffs


# ----------------------------------------------------------------------------- logging
def _class_colors(classes: ClassMetadata) -> np.ndarray:
    lut = np.zeros((256, 3), np.uint8)  # [256, 3] RGB by train id; 255 (ignore) black
    lut[: classes.num_classes] = np.asarray(classes.colors, np.uint8)
    return lut


def sample_panel(
    image: Tensor, outputs: Mapping[str, Tensor], batch: Mapping[str, Tensor], classes: ClassMetadata, *, index: int = 0
) -> np.ndarray:
    """[H', W', 3] uint8 RGB picture of one training sample for TensorBoard.

    Row 1: image, ground-truth depth, predicted depth (write-up colours, invalid black).
    Row 2 (joint mode): ground-truth semantics, predicted semantics, center heatmap.
    """
    rgb = image[index].detach().clamp(0, 255).byte().permute(1, 2, 0).cpu().numpy()
    gt = batch["depth"][index, 0].detach().cpu().numpy()
    gt = np.where(batch["depth_valid"][index, 0].cpu().numpy(), gt, 0.0)
    pred = outputs["depth"][index, 0].detach().float().cpu().numpy()
    rows = [[rgb, depth_colormap(gt)[..., ::-1], depth_colormap(pred)[..., ::-1]]]
    if "sem_seg" in outputs:
        lut = _class_colors(classes)
        sem_gt = lut[batch["sem_seg"][index].cpu().numpy().clip(0, 255)]
        sem_pred = lut[outputs["sem_seg"][index].argmax(0).cpu().numpy()]
        heat = (outputs["center"][index, 0].detach().float().clamp(0, 1).cpu().numpy() * 255).astype(np.uint8)
        rows.append([sem_gt, sem_pred, np.repeat(heat[..., None], 3, axis=2)])
    return np.concatenate([np.concatenate(r, axis=1) for r in rows], axis=0)


def _setup_file_logging(out_dir: Path) -> tuple[logging.Handler, int]:
    """Log INFO+ to ``OUT/log.txt`` whatever the root logger does; returns the old level."""
    handler = logging.FileHandler(out_dir / "log.txt")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    LOGGER.addHandler(handler)
    old_level = LOGGER.level
    if LOGGER.getEffectiveLevel() > logging.INFO:
        LOGGER.setLevel(logging.INFO)
    return handler, old_level


# ----------------------------------------------------------------------------- training
StepCallback = Callable[[int, Mapping[str, float]], None]


def train(
    config: Mapping[str, Any],
    *,
    data_root: str | Path,
    out_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    callback: StepCallback | None = None,
) -> dict[str, Any]:
    """Train as ``config`` says; returns ``{"iteration", "final_model", "state", "losses"}``.

    ``callback(iteration, values)`` runs on every rank after each optimizer step with
    that rank's losses (``loss_*``, ``total_loss``) and ``lr``; ``iteration`` counts
    completed steps (1 after the first).
    """
    cfg = copy.deepcopy(dict(config))
    check_config(cfg)
    data_root, out_dir = Path(data_root), Path(out_dir)
    info = init_distributed(cfg["device"])
    handler: logging.Handler | None = None
    old_level = LOGGER.level
    try:
        problem = None
        if info.is_main:  # rank 0 decides before it writes anything; every rank raises the same
            problem = run_dir_problem(out_dir, resume)
        problem = _broadcast(problem, info)
        if problem is not None:
            raise TrainingError(problem)
        if info.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
            handler, old_level = _setup_file_logging(out_dir)
        return _train(
            cfg, data_root=data_root, out_dir=out_dir, resume=resume, progress=progress, callback=callback, info=info
        )
    finally:
        if handler is not None:
            LOGGER.removeHandler(handler)
            LOGGER.setLevel(old_level)
            handler.close()
        if info.owns_group:
            dist.destroy_process_group()


def run_dir_problem(out_dir: Path, resume: bool) -> str | None:
    """Why ``out_dir`` cannot take this run (None: it can).

    A new run needs a new or empty folder (nothing there is overwritten or mixed in), or
    one where a run stopped before writing anything but its ``log.txt`` (a refused dataset);
    ``--resume`` needs a folder a run wrote (its ``log.txt`` or ``last_state.pt``).
    """
    if out_dir.exists() and not out_dir.is_dir():
        return f"--out {out_dir} is a file, not a folder"
    entries = sorted(p.name for p in out_dir.iterdir()) if out_dir.is_dir() else []
    if set(entries) <= {"log.txt"}:
        return None
    if not resume:
        shown = ", ".join(entries[:5]) + (f" (+{len(entries) - 5} more)" if len(entries) > 5 else "")
        return (
            f"--out {out_dir} is not empty ({shown}): a new run needs a new or empty folder;"
            " --resume continues the run written there"
        )
    if not any((out_dir / name).exists() for name in ("log.txt", STATE_FILE)):
        return f"--out {out_dir} holds no run to resume (no log.txt or {STATE_FILE}); nothing there was changed"
    return None


def _train(
    config: dict[str, Any],
    *,
    data_root: Path,
    out_dir: Path,
    resume: bool,
    progress: bool,
    callback: StepCallback | None,
    info: DistInfo,
) -> dict[str, Any]:
    mode, solver = config["mode"], config["solver"]
    max_iter = int(solver["max_iter"])
    state_path = out_dir / STATE_FILE
    torch.manual_seed(int(config["seed"]) + info.rank)
    random.seed(int(config["seed"]) + info.rank)
    np.random.seed(int(config["seed"]) + info.rank)

    splits = [config["data"]["train_split"]]
    if int(config["eval"]["period"]) > 0:
        splits.append(config["data"]["val_split"])
    if config["data"]["verify"]:
        verify_dataset(data_root, splits, info)
    else:
        LOGGER.warning("data.verify=false: the dataset is not checked before training")

    init = build_initialized_model(config)
    record_depth_camera(init, config, data_root, info)
    model = init.model
    if mode == "depth-only" and config["init"]["type"] == "none":
        LOGGER.warning("depth-only mode with init.type=none freezes a randomly initialised backbone")
    use_cuda = info.device.type == "cuda"
    if mode == "joint" and info.world_size > 1 and solver["sync_bn"]:
        if use_cuda:
            model = init.model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:
            LOGGER.warning("SyncBatchNorm needs CUDA; per-process BatchNorm statistics on CPU")
    model.to(info.device)
    if solver["channels_last"]:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    params = configure_trainable(model, mode)
    optimizer = build_optimizer(params, solver)
    scheduler = build_scheduler(optimizer, solver)
    amp = bool(solver["amp"]) and use_cuda
    if solver["amp"] and not use_cuda and info.is_main:
        LOGGER.info("solver.amp needs CUDA; training in float32")
    scaler = torch.amp.GradScaler(info.device.type, enabled=amp)
    autocast_dtype = torch.float16 if amp else None
    if solver["cpu_bf16"] and not use_cuda:
        autocast_dtype = torch.bfloat16  # same exponent range as float32: no loss scaling needed
        if info.is_main:
            LOGGER.info("bfloat16 autocast on CPU (solver.cpu_bf16)")
    loss_config = LossConfig.from_dict(config["loss"])
    accum = accumulation_steps(int(solver["ims_per_batch"]), int(config["data"]["batch_per_device"]), info.world_size)

    start_iter, rng_states = 0, None
    if resume and state_path.exists():
        state = load_training_state(state_path)
        diffs = _config_differences(state["config"], config)
        if diffs and info.is_main:
            LOGGER.warning("resuming with a changed config:\n  %s", "\n  ".join(diffs))
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start_iter = int(state["iteration"])
        if state["world_size"] == info.world_size:
            rng_states = state["rng"][info.rank]
        else:
            LOGGER.warning(
                "resuming on %d processes (saved with %d): RNG streams restart", info.world_size, state["world_size"]
            )
        LOGGER.info("resumed %s at iteration %d", state_path, start_iter)
    elif resume and info.is_main:
        LOGGER.info("--resume: no %s yet, starting from the initial weights", state_path)
    if info.is_main:
        LOGGER.info(
            "model: %s; mode %s; %d trainable parameters; %d process(es) x %d images x %d "
            "accumulation = %d images per step",
            init.note,
            mode,
            sum(p.numel() for p in params),
            info.world_size,
            int(config["data"]["batch_per_device"]),
            accum,
            int(solver["ims_per_batch"]),
        )
        (out_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    set_training_mode(model, mode)
    net: nn.Module = TrainingNetwork(model, depth_only=mode == "depth-only")
    if info.world_size > 1:
        net = DistributedDataParallel(net, device_ids=[info.device.index] if use_cuda else None)
    if use_cuda:
        torch.backends.cudnn.benchmark = True  # fixed crop size
    per_step = accum * int(config["data"]["batch_per_device"])
    loader = build_train_loader(
        config, data_root, init.classes, info, start=start_iter * per_step, input_scale=init.model_config.input_scale
    )
    batches = iter(loader)
    if rng_states is not None:
        restore_rng_state(rng_states)  # last: nothing above may draw from the restored streams

    writer = SummaryWriter(out_dir / "tensorboard", purge_step=start_iter) if info.is_main else None
    bar = tqdm(
        total=max_iter,
        initial=start_iter,
        desc="train",
        unit="it",
        dynamic_ncols=True,
        disable=not (progress and info.is_main),
    )
    log_period, image_period = int(config["log"]["period"]), int(config["log"]["image_period"])
    ckpt_period, eval_period = int(config["checkpoint"]["period"]), int(config["eval"]["period"])
    window: dict[str, list[float]] = {}
    last: dict[str, float] = {}
    try:
        for iteration in range(start_iter + 1, max_iter + 1):
            t0 = time.perf_counter()
            values, data_time, panel_data = _train_step(
                net,
                batches,
                optimizer=optimizer,
                scheduler=scheduler,
                scaler=scaler,
                params=params,
                accum=accum,
                autocast_dtype=autocast_dtype,
                channels_last=bool(solver["channels_last"]),
                loss_config=loss_config,
                init=init,
                solver=solver,
                info=info,
                keep_panel=writer is not None and image_period > 0 and iteration % image_period == 0,
            )
            if not math.isfinite(values["total_loss"]):
                raise FloatingPointError(f"loss became {values['total_loss']} at iteration {iteration}: {values}")
            step_time = time.perf_counter() - t0
            values.update(
                time_data=data_time, time_step=step_time, throughput=int(solver["ims_per_batch"]) / max(step_time, 1e-9)
            )
            for k, v in values.items():
                window.setdefault(k, []).append(v)
            bar.update()
            if iteration % log_period == 0 or iteration == max_iter:
                last = _mean_over_ranks({k: float(np.mean(v)) for k, v in window.items()}, info)
                window = {}
                if writer is not None:
                    for k, v in last.items():
                        group = "loss" if k.startswith(("loss_", "total")) else "train"
                        writer.add_scalar(f"{group}/{k}", v, iteration)
                    bar.set_postfix(loss=f"{last['total_loss']:.3f}", lr=f"{last['lr']:.2e}")
                    LOGGER.info("iter %d/%d %s", iteration, max_iter, " ".join(f"{k} {v:.4g}" for k, v in last.items()))
            if panel_data is not None and writer is not None:
                image, outputs, batch = panel_data
                writer.add_image(
                    "train/sample", sample_panel(image, outputs, batch, init.classes), iteration, dataformats="HWC"
                )
            if iteration % ckpt_period == 0 or iteration == max_iter:
                _save(
                    model,
                    optimizer,
                    scheduler,
                    scaler,
                    iteration=iteration,
                    config=config,
                    init=init,
                    out_dir=out_dir,
                    data_root=data_root,
                    info=info,
                    final=iteration == max_iter,
                )
            if eval_period > 0 and (iteration % eval_period == 0 or iteration == max_iter):
                _evaluate_during_training(
                    model,
                    init,
                    config,
                    data_root=data_root,
                    out_dir=out_dir,
                    iteration=iteration,
                    info=info,
                    writer=writer,
                )
            # Last: an exception raised here is a crash after this iteration's files exist.
            if callback is not None:
                callback(iteration, values)
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    final = out_dir / FINAL_MODEL
    if start_iter >= max_iter and info.is_main and not final.exists():
        export_model(final, init, iteration=start_iter, config=config, data_root=data_root)
    return {"iteration": max(start_iter, max_iter), "final_model": final, "state": state_path, "losses": last}


def _train_step(
    net: nn.Module,
    batches: Iterator[dict[str, Any]],
    *,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    params: list[nn.Parameter],
    accum: int,
    autocast_dtype: torch.dtype | None,
    channels_last: bool,
    loss_config: LossConfig,
    init: Initialized,
    solver: Mapping[str, Any],
    info: DistInfo,
    keep_panel: bool,
) -> tuple[dict[str, float], float, tuple[Any, ...] | None]:
    """Do one optimizer step over ``accum`` micro-batches -> (losses + lr, data time, panel)."""
    optimizer.zero_grad(set_to_none=True)
    lr = optimizer.param_groups[0]["lr"]
    sums: dict[str, Tensor] = {}
    data_time = 0.0
    panel = None
    for micro in range(accum):
        t = time.perf_counter()
        batch = batch_to_device(next(batches), info.device)
        data_time += time.perf_counter() - t
        x = normalize_images(batch["image"], init.model_config)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        sync = micro == accum - 1 or not isinstance(net, DistributedDataParallel)
        with nullcontext() if sync else net.no_sync():  # type: ignore[operator]
            with torch.autocast(info.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                outputs = net(x)
            outputs = {k: v.float() for k, v in outputs.items()}  # losses in float32
            losses = panoptic_depth_losses(
                outputs,
                batch,
                loss_config,
                min_depth=init.model_config.min_depth,
                max_depth=init.model_config.max_depth,
            )
            total = torch.stack(list(losses.values())).sum()
            scaler.scale(total / accum).backward()
        for k, v in {**losses, "total_loss": total}.items():
            sums[k] = sums.get(k, 0.0) + v.detach() / accum
        if keep_panel and micro == 0:
            panel = (batch["image"], {k: v.detach() for k, v in outputs.items()}, batch)
    if float(solver["clip_grad_norm"]) > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, float(solver["clip_grad_norm"]))
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    keys = list(sums)
    values = dict(zip(keys, torch.stack([sums[k] for k in keys]).tolist(), strict=True))  # one sync
    values["lr"] = lr
    return values, data_time, panel


def _save(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    *,
    iteration: int,
    config: Mapping[str, Any],
    init: Initialized,
    out_dir: Path,
    data_root: Path,
    info: DistInfo,
    final: bool,
) -> None:
    """Export the model and write the resume state (rank 0 writes; all ranks give their RNG)."""
    rng = _all_gather(capture_rng_state(), info)
    if not info.is_main:
        return
    name = FINAL_MODEL if final else f"model_iter_{iteration:07d}.safetensors"
    export_model(out_dir / name, init, iteration=iteration, config=config, data_root=data_root)
    save_training_state(
        out_dir / STATE_FILE,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        iteration=iteration,
        config=config,
        rng=rng,
    )
    LOGGER.info("iteration %d: wrote %s and %s", iteration, name, STATE_FILE)


def _evaluate_during_training(
    model: PanopticDepthLab,
    init: Initialized,
    config: Mapping[str, Any],
    *,
    data_root: Path,
    out_dir: Path,
    iteration: int,
    info: DistInfo,
    writer: SummaryWriter | None,
) -> None:
    """Evaluate on the val split (sharded over ranks), log on rank 0, back to training mode."""
    ev = config["eval"]
    max_depth = ev["max_depth"] if ev["max_depth"] is not None else init.model_config.max_depth
    model.eval()
    try:
        predictor = Predictor(
            model,
            model_config=init.model_config,
            classes=init.classes,
            postprocess=init.postprocess,
            device=info.device,
            untrained_depth=True,  # scored while it is being trained
        )
        summary = evaluate_split(
            predictor,
            data_root=data_root,
            split=config["data"]["val_split"],
            max_depth=float(max_depth) or None,
            limit=int(ev["max_images"]) or None,
            rank=info.rank,
            world_size=info.world_size,
            progress=False,
        )
    finally:
        set_training_mode(model, config["mode"])
    if not info.is_main:
        return
    metrics = {**flat_metrics(summary), **band_metrics(summary)}
    if writer is not None:
        for k, v in metrics.items():
            if v is not None:
                writer.add_scalar(f"val/{k}", v, iteration)
    with (out_dir / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"iteration": iteration, **metrics}) + "\n")
    LOGGER.info(
        "iteration %d val: PQ %.2f mIoU %.2f AbsRel %.4f DPQ %.2f",
        iteration,
        summary["PQ"],
        summary["mIoU"],
        summary["AbsRel"],
        summary["DPQ"],
    )


# ----------------------------------------------------------------------------- CLI
def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    """Arguments of ``train`` (reused by the ``panoptic-depthlab-training`` CLI)."""
    parser = argparse.ArgumentParser(description="Train Panoptic-DepthLab", add_help=add_help)
    parser.add_argument(
        "--config", required=True, help="YAML file, or a bundled name: writeup_depth_only, joint, quick_cpu"
    )
    parser.add_argument("--data", required=True, type=Path, help="Cityscapes root (or a synthetic tree)")
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--iters", type=int, help="override solver.max_iter")
    parser.add_argument(
        "--resume", action="store_true", help="continue from OUT/last_state.pt (starts from init if there is none yet)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides with dotted keys, e.g. solver.lr=0.0005 data.workers=2",
    )
    return parser


def main(args: argparse.Namespace) -> int:
    """Run ``train`` from parsed arguments; returns the exit code."""
    overrides = list(args.overrides)
    if args.iters is not None:
        overrides.append(f"solver.max_iter={args.iters}")
    config = load_config(args.config, overrides)
    result = train(config, data_root=args.data, out_dir=args.out, resume=args.resume, progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"trained to iteration {result['iteration']}: {result['final_model']}")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    sys.exit(main(get_args_parser().parse_args()))
