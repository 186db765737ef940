"""Shared by the trainer's tests: quick_cpu shrunk to the 64x128 synthetic frames, and a recorded run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from panoptic_depthlab_training.train.config import TrainConfig, load_config
from panoptic_depthlab_training.train.loop import train

LOSS_KEYS = ("loss_sem_seg", "loss_center", "loss_offset", "loss_depth")

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


def small_config(*overrides: str) -> TrainConfig:
    """``quick_cpu`` with :data:`SMALL` and ``overrides``."""
    return load_config("quick_cpu", [*SMALL, *overrides])


def run_recorded(config: TrainConfig, data: Path, out: Path, **kwargs: Any) -> list[dict[str, float]]:
    """Train; every step's callback values with their ``iteration``."""
    history: list[dict[str, float]] = []
    train(
        config,
        data_root=data,
        out_dir=out,
        progress=False,
        callback=lambda it, values: history.append({"iteration": it, **values}),
        **kwargs,
    )
    return history
