"""What a run leaves in its folder, and how ``--resume`` picks it up.

``last_state.pt`` holds everything a resumed run needs (model, optimizer, scheduler,
AMP loss scale, each rank's RNG streams, iteration, config), written atomically;
``model_*.safetensors`` are the model in the core's format (what
``Predictor.from_checkpoint`` loads). :func:`run_dir_problem` says whether a folder
may take a new or a resumed run.
"""

from __future__ import annotations

import logging
import os
import random
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from panoptic_depthlab_ros.checkpoint import save_checkpoint

from ..distributed import DistInfo, gather_objects
from .config import TrainConfig, TrainingError, config_differences
from .model import Initialized
from .optim import Optimization

LOGGER = logging.getLogger("panoptic_depthlab_training")

STATE_FILE = "last_state.pt"
FINAL_MODEL = "model_final.safetensors"
STATE_FORMAT = "panoptic-depthlab-train-state"
STATE_VERSION = 1


def model_file_name(iteration: int, *, final: bool) -> str:
    """``model_final.safetensors`` or ``model_iter_XXXXXXX.safetensors``."""
    return FINAL_MODEL if final else f"model_iter_{iteration:07d}.safetensors"


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


# ----------------------------------------------------------------------------- RNG
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


def seed_everything(seed: int) -> None:
    """Seed torch, Python and numpy (each rank with its own seed)."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


# ----------------------------------------------------------------------------- resume state
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


def save_training_state(
    path: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    iteration: int,
    config: TrainConfig,
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
        "scaler": scaler.state_dict(),  # {} when AMP is off
        "rng": rng,
        "world_size": len(rng),
        "config": config.to_dict(),
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


def restore_scaler(scaler: torch.amp.GradScaler, saved: Mapping[str, Any]) -> None:
    """Load the saved AMP loss scale, unless AMP was switched since the state was saved.

    A scaler saved with AMP off (``solver.amp=false``, or a CPU run) has an empty state,
    which ``GradScaler.load_state_dict`` refuses: with AMP on now, the run continues with
    a fresh loss scale (it re-calibrates within a few steps). With AMP off now, a saved
    loss scale has no use.
    """
    if scaler.is_enabled() and not saved:
        LOGGER.warning("AMP is on but the saved state was trained without it: starting with a fresh loss scale")
        return
    if not scaler.is_enabled() and saved:
        LOGGER.warning("AMP is off but the saved state was trained with it: its loss scale is not used")
        return
    scaler.load_state_dict(dict(saved))


@dataclass
class Resumed:
    """Where a resumed run continues: completed iterations, and this rank's RNG streams if it has them."""

    iteration: int
    rng: dict[str, Any] | None


def resume_training(path: Path, model: nn.Module, opt: Optimization, *, config: TrainConfig, info: DistInfo) -> Resumed:
    """Load ``path`` into the model and ``opt`` (in place); the caller restores the RNG streams, last."""
    state = load_training_state(path)
    diffs = config_differences(state["config"], config.to_dict())
    if diffs and info.is_main:
        LOGGER.warning("resuming with a changed config:\n  %s", "\n  ".join(diffs))
    model.load_state_dict(state["model"])
    opt.optimizer.load_state_dict(state["optimizer"])
    opt.scheduler.load_state_dict(state["scheduler"])
    restore_scaler(opt.scaler, state["scaler"])
    rng = None
    if state["world_size"] == info.world_size:
        rng = state["rng"][info.rank]
    else:
        LOGGER.warning(
            "resuming on %d processes (saved with %d): RNG streams restart", info.world_size, state["world_size"]
        )
    LOGGER.info("resumed %s at iteration %d", path, int(state["iteration"]))
    return Resumed(iteration=int(state["iteration"]), rng=rng)


def save_run(
    model: nn.Module,
    opt: Optimization,
    *,
    iteration: int,
    config: TrainConfig,
    init: Initialized,
    out_dir: Path,
    data_root: Path,
    info: DistInfo,
    final: bool,
) -> None:
    """Write the model file and the resume state (rank 0 writes; every rank gives its RNG streams)."""
    rng = gather_objects(capture_rng_state(), info.world_size)
    if not info.is_main:
        return
    name = model_file_name(iteration, final=final)
    save_model(out_dir / name, init, iteration=iteration, config=config, data_root=data_root)
    save_training_state(
        out_dir / STATE_FILE,
        model=model,
        optimizer=opt.optimizer,
        scheduler=opt.scheduler,
        scaler=opt.scaler,
        iteration=iteration,
        config=config,
        rng=rng,
    )
    LOGGER.info("iteration %d: wrote %s and %s", iteration, name, STATE_FILE)


# ----------------------------------------------------------------------------- model files
def trained_depth(init: Initialized, *, iteration: int, config: TrainConfig) -> bool:
    """Whether the depth branch has been trained: it came trained, or a depth loss has been trained.

    A Detectron2 start (or fresh weights) has an untrained one until the first iteration with
    ``loss.depth_weight`` above zero (both modes train depth then; ``depth-only`` nothing else).
    """
    return init.model_config.depth_trained or (iteration > 0 and config.loss.depth_weight > 0)


def save_model(path: Path, init: Initialized, *, iteration: int, config: TrainConfig, data_root: Path) -> Path:
    """Write the model in the core's safetensors format (what ``Predictor.from_checkpoint`` loads).

    The header's ``info.training`` records the iteration, mode, dataset, init and the
    whole config; the model config says whether the depth branch is trained yet.
    """
    info = {
        "training": {
            "iteration": iteration,
            "mode": config.mode,
            "dataset": str(data_root),
            "init": init.note,
            "config": config.to_dict(),
        }
    }
    model_config = init.model_config.with_(depth_trained=trained_depth(init, iteration=iteration, config=config))
    return save_checkpoint(
        path, init.model, model_config=model_config, classes=init.classes, postprocess=init.postprocess, info=info
    )
