"""The training loop: set a run up, then step, report, save and evaluate until ``solver.max_iter``.

Layout follows torchvision's ``references/segmentation/train.py``: plain functions, dict
checkpoints, evaluation under no_grad. Each step of :func:`train` is a named function
below; the parts it uses live in the sibling modules (config, model, optim, data,
state, report) and in :mod:`..distributed`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from panoptic_depthlab_ros.model import PanopticDepthLab
from panoptic_depthlab_ros.predictor import Predictor

from ..distributed import DistInfo, decided_on_rank0, distributed_job
from ..evaluate import band_metrics, evaluate_split, flat_metrics
from ..losses import panoptic_depth_losses
from .config import TrainConfig, TrainingError
from .data import batch_to_device, build_train_loader, verify_dataset
from .model import (
    Initialized,
    TrainingNetwork,
    build_initialized_model,
    configure_trainable,
    normalize_images,
    record_depth_camera,
    set_training_mode,
)
from .optim import Optimization, build_optimization
from .report import FileLog, RunReport
from .state import (
    FINAL_MODEL,
    STATE_FILE,
    Resumed,
    restore_rng_state,
    resume_training,
    run_dir_problem,
    save_model,
    save_run,
    seed_everything,
)

LOGGER = logging.getLogger("panoptic_depthlab_training")

StepCallback = Callable[[int, Mapping[str, float]], None]


@dataclass
class TrainResult:
    """Where a run ended: completed iterations, its files, the last averaged losses (rank 0's view)."""

    iteration: int
    final_model: Path
    state: Path
    losses: dict[str, float]


@dataclass
class Run:
    """A run once set up: what every step of the loop reads."""

    config: TrainConfig
    info: DistInfo
    data_root: Path
    out_dir: Path
    init: Initialized  # the model, its config and what its files record
    opt: Optimization
    net: nn.Module  # the model as trained: TrainingNetwork, behind DDP with several processes
    batches: Iterator[dict[str, Any]]
    report: RunReport


@dataclass
class StepResult:
    """One optimizer step: losses and lr, time spent waiting for data, a sample kept for a panel."""

    values: dict[str, float]
    data_time: float
    panel: tuple[Tensor, dict[str, Tensor], dict[str, Tensor]] | None


def train(
    config: TrainConfig,
    *,
    data_root: str | Path,
    out_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    callback: StepCallback | None = None,
) -> TrainResult:
    """Train as ``config`` says (DDP under torchrun).

    ``callback(iteration, values)`` runs on every rank after each optimizer step with
    that rank's losses (``loss_*``, ``total_loss``), ``lr`` and step times; ``iteration``
    counts completed steps (1 after the first).
    """
    data_root, out_dir = Path(data_root), Path(out_dir)
    with distributed_job(config.device) as info:
        # rank 0 decides before it writes anything; every rank raises the same
        problem = decided_on_rank0(lambda: run_dir_problem(out_dir, resume), info)
        if problem is not None:
            raise TrainingError(problem)
        file_log = None
        if info.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
            file_log = FileLog(out_dir)
        try:
            return _train(
                config,
                data_root=data_root,
                out_dir=out_dir,
                resume=resume,
                progress=progress,
                callback=callback,
                info=info,
            )
        finally:
            if file_log is not None:
                file_log.close()


def _train(
    config: TrainConfig,
    *,
    data_root: Path,
    out_dir: Path,
    resume: bool,
    progress: bool,
    callback: StepCallback | None,
    info: DistInfo,
) -> TrainResult:
    """Set the run up (the order matters for reproducible resumes: the RNG streams come back last), then loop."""
    seed_everything(config.seed + info.rank)
    _check_dataset(config, data_root, info)
    init = _prepare_model(config, data_root, info)
    opt = build_optimization(configure_trainable(init.model, config.mode), config, info)
    resumed = _resume(config, out_dir / STATE_FILE, init.model, opt, info) if resume else Resumed(0, None)
    if info.is_main:
        _announce(config, init, opt, out_dir, info)
    net = _network(init.model, config, info)
    per_step = opt.accum * config.data.batch_per_device
    loader = build_train_loader(
        config,
        data_root,
        init.classes,
        info,
        start=resumed.iteration * per_step,
        input_scale=init.model_config.input_scale,
    )
    batches = iter(loader)
    if resumed.rng is not None:
        restore_rng_state(resumed.rng)  # last: nothing above may draw from the restored streams
    max_iter = config.solver.max_iter
    report = RunReport(
        out_dir,
        info,
        classes=init.classes,
        start_iter=resumed.iteration,
        max_iter=max_iter,
        log_period=config.log.period,
        image_period=config.log.image_period,
        progress=progress,
    )
    run = Run(config, info, data_root, out_dir, init, opt, net, batches, report)
    with report:
        for iteration in range(resumed.iteration + 1, max_iter + 1):
            values = _iteration(run, iteration)
            _after_step(run, iteration)
            # Last: an exception raised here is a crash after this iteration's files exist.
            if callback is not None:
                callback(iteration, values)
    final = out_dir / FINAL_MODEL
    if resumed.iteration >= max_iter and info.is_main and not final.exists():
        save_model(final, init, iteration=resumed.iteration, config=config, data_root=data_root)
    return TrainResult(
        iteration=max(resumed.iteration, max_iter), final_model=final, state=out_dir / STATE_FILE, losses=report.last
    )


def _check_dataset(config: TrainConfig, data_root: Path, info: DistInfo) -> None:
    """Verify the splits the run reads (unless ``data.verify`` is off)."""
    splits = [config.data.train_split]
    if config.eval.period > 0:
        splits.append(config.data.val_split)
    if config.data.verify:
        verify_dataset(data_root, splits, info)
    else:
        LOGGER.warning("data.verify=false: the dataset is not checked before training")


def _prepare_model(config: TrainConfig, data_root: Path, info: DistInfo) -> Initialized:
    """Build and initialise the model, record its training camera, put it on the device."""
    init = build_initialized_model(config)
    record_depth_camera(init, config, data_root, info)
    if config.mode == "depth-only" and config.init.type == "none":
        LOGGER.warning("depth-only mode with init.type=none freezes a randomly initialised backbone")
    if config.mode == "joint" and info.world_size > 1 and config.solver.sync_bn:
        if info.device.type == "cuda":
            init.model = nn.SyncBatchNorm.convert_sync_batchnorm(init.model)
        else:
            LOGGER.warning("SyncBatchNorm needs CUDA; per-process BatchNorm statistics on CPU")
    init.model.to(info.device)
    if config.solver.channels_last:
        init.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return init


def _resume(config: TrainConfig, state_path: Path, model: nn.Module, opt: Optimization, info: DistInfo) -> Resumed:
    """``--resume``: continue from ``state_path``, or from the initial weights if there is none yet."""
    if state_path.exists():
        return resume_training(state_path, model, opt, config=config, info=info)
    if info.is_main:
        LOGGER.info("--resume: no %s yet, starting from the initial weights", state_path)
    return Resumed(0, None)


def _announce(config: TrainConfig, init: Initialized, opt: Optimization, out_dir: Path, info: DistInfo) -> None:
    """Log what is trained how, and write the run's ``config.yaml`` (rank 0)."""
    LOGGER.info(
        "model: %s; mode %s; %d trainable parameters; %d process(es) x %d images x %d "
        "accumulation = %d images per step",
        init.note,
        config.mode,
        sum(p.numel() for p in opt.params),
        info.world_size,
        config.data.batch_per_device,
        opt.accum,
        config.solver.ims_per_batch,
    )
    (out_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))


def _network(model: PanopticDepthLab, config: TrainConfig, info: DistInfo) -> nn.Module:
    """The model in training mode, behind :class:`TrainingNetwork` and DDP (with several processes)."""
    set_training_mode(model, config.mode)
    net: nn.Module = TrainingNetwork(model, depth_only=config.mode == "depth-only")
    use_cuda = info.device.type == "cuda"
    if info.world_size > 1:
        net = DistributedDataParallel(net, device_ids=[info.device.index] if use_cuda else None)
    if use_cuda:
        torch.backends.cudnn.benchmark = True  # fixed crop size
    return net


def _iteration(run: Run, iteration: int) -> dict[str, float]:
    """One optimizer step, checked and reported; returns its values (losses, lr, times)."""
    t0 = time.perf_counter()
    step = _train_step(run, keep_panel=run.report.wants_panel(iteration))
    values = step.values
    if not math.isfinite(values["total_loss"]):
        raise FloatingPointError(f"loss became {values['total_loss']} at iteration {iteration}: {values}")
    step_time = time.perf_counter() - t0
    values.update(
        time_data=step.data_time,
        time_step=step_time,
        throughput=run.config.solver.ims_per_batch / max(step_time, 1e-9),
    )
    run.report.step(iteration, values)
    if step.panel is not None:
        run.report.panel(iteration, *step.panel)
    return values


def _after_step(run: Run, iteration: int) -> None:
    """The periodic work: model file and resume state, then the validation."""
    config = run.config
    max_iter = config.solver.max_iter
    if iteration % config.checkpoint.period == 0 or iteration == max_iter:
        save_run(
            run.init.model,
            run.opt,
            iteration=iteration,
            config=config,
            init=run.init,
            out_dir=run.out_dir,
            data_root=run.data_root,
            info=run.info,
            final=iteration == max_iter,
        )
    period = config.eval.period
    if period > 0 and (iteration % period == 0 or iteration == max_iter):
        _evaluate_during_training(run, iteration)


def _train_step(run: Run, *, keep_panel: bool) -> StepResult:
    """Do one optimizer step over ``opt.accum`` micro-batches."""
    net, opt, init, config, info = run.net, run.opt, run.init, run.config, run.info
    opt.optimizer.zero_grad(set_to_none=True)
    lr = opt.optimizer.param_groups[0]["lr"]
    sums: dict[str, Tensor] = {}
    data_time = 0.0
    panel = None
    for micro in range(opt.accum):
        t = time.perf_counter()
        batch = batch_to_device(next(run.batches), info.device)
        data_time += time.perf_counter() - t
        x = normalize_images(batch["image"], init.model_config)
        if config.solver.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        sync = micro == opt.accum - 1 or not isinstance(net, DistributedDataParallel)
        with nullcontext() if sync else net.no_sync():  # type: ignore[operator]
            dtype = opt.autocast_dtype
            with torch.autocast(info.device.type, dtype=dtype, enabled=dtype is not None):
                outputs = net(x)
            outputs = {k: v.float() for k, v in outputs.items()}  # losses in float32
            losses = panoptic_depth_losses(
                outputs,
                batch,
                config.loss,
                min_depth=init.model_config.min_depth,
                max_depth=init.model_config.max_depth,
            )
            total = torch.stack(list(losses.values())).sum()
            opt.scaler.scale(total / opt.accum).backward()
        for k, v in {**losses, "total_loss": total}.items():
            sums[k] = sums.get(k, 0.0) + v.detach() / opt.accum
        if keep_panel and micro == 0:
            panel = (batch["image"], {k: v.detach() for k, v in outputs.items()}, batch)
    if config.solver.clip_grad_norm > 0:
        opt.scaler.unscale_(opt.optimizer)
        torch.nn.utils.clip_grad_norm_(opt.params, config.solver.clip_grad_norm)
    opt.scaler.step(opt.optimizer)
    opt.scaler.update()
    opt.scheduler.step()
    keys = list(sums)
    values = dict(zip(keys, torch.stack([sums[k] for k in keys]).tolist(), strict=True))  # one sync
    values["lr"] = lr
    return StepResult(values=values, data_time=data_time, panel=panel)


def _evaluate_during_training(run: Run, iteration: int) -> None:
    """Evaluate on the val split (sharded over ranks), report on rank 0, back to training mode."""
    init, config, info = run.init, run.config, run.info
    max_depth = config.eval.max_depth if config.eval.max_depth is not None else init.model_config.max_depth
    init.model.eval()
    try:
        predictor = Predictor(
            init.model,
            model_config=init.model_config,
            classes=init.classes,
            postprocess=init.postprocess,
            device=info.device,
            untrained_depth=True,  # scored while it is being trained
        )
        summary = evaluate_split(
            predictor,
            data_root=run.data_root,
            split=config.data.val_split,
            max_depth=max_depth or None,
            limit=config.eval.max_images or None,
            rank=info.rank,
            world_size=info.world_size,
            progress=False,
        )
    finally:
        set_training_mode(init.model, config.mode)
    run.report.evaluation(iteration, {**flat_metrics(summary), **band_metrics(summary)}, summary)
