"""Optimisation: the optimizer, Detectron2's WarmupPolyLR schedule, precision, gradient accumulation."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import torch
from torch import nn

from ..distributed import DistInfo
from .config import SolverConfig, TrainConfig, TrainingError

LOGGER = logging.getLogger("panoptic_depthlab_training")


@dataclass
class Optimization:
    """Everything one optimizer step needs besides the network and the data."""

    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler  # enabled with float16 AMP (CUDA) only
    autocast_dtype: torch.dtype | None  # float16 (CUDA AMP), bfloat16 (solver.cpu_bf16) or None
    accum: int  # micro-batches per step


def build_optimization(params: list[nn.Parameter], config: TrainConfig, info: DistInfo) -> Optimization:
    """Optimizer, schedule, precision and accumulation of ``config.solver`` on ``info.device``."""
    solver = config.solver
    optimizer = build_optimizer(params, solver)
    use_cuda = info.device.type == "cuda"
    amp = solver.amp and use_cuda
    if solver.amp and not use_cuda and info.is_main:
        LOGGER.info("solver.amp needs CUDA; training in float32")
    autocast_dtype = torch.float16 if amp else None
    if solver.cpu_bf16 and not use_cuda:
        autocast_dtype = torch.bfloat16  # same exponent range as float32: no loss scaling needed
        if info.is_main:
            LOGGER.info("bfloat16 autocast on CPU (solver.cpu_bf16)")
    return Optimization(
        params=params,
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, solver),
        scaler=torch.amp.GradScaler(info.device.type, enabled=amp),
        autocast_dtype=autocast_dtype,
        accum=accumulation_steps(solver.ims_per_batch, config.data.batch_per_device, info.world_size),
    )


def build_optimizer(params: list[nn.Parameter], solver: SolverConfig) -> torch.optim.Optimizer:
    """Adam (Detectron2's Panoptic-DeepLab and the write-up), AdamW or SGD with momentum."""
    name = solver.optimizer.lower()
    if name == "adam":
        return torch.optim.Adam(params, lr=solver.lr, betas=solver.betas, weight_decay=solver.weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=solver.lr, betas=solver.betas, weight_decay=solver.weight_decay)
    return torch.optim.SGD(params, lr=solver.lr, momentum=solver.momentum, weight_decay=solver.weight_decay)


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


def build_scheduler(optimizer: torch.optim.Optimizer, solver: SolverConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-iteration LR schedule (stepped once per optimizer step)."""
    factor = functools.partial(
        lr_factor,
        schedule=solver.schedule,
        max_iter=solver.max_iter,
        warmup_iters=solver.warmup_iters,
        warmup_factor=solver.warmup_factor,
        power=solver.poly_power,
        constant_ending=solver.poly_constant_ending,
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def accumulation_steps(ims_per_batch: int, batch_per_device: int, world_size: int) -> int:
    """Micro-batches per optimizer step so that one step sees ``ims_per_batch`` images."""
    per_pass = batch_per_device * world_size
    if ims_per_batch % per_pass:
        raise TrainingError(
            f"solver.ims_per_batch={ims_per_batch} is not a multiple of data.batch_per_device="
            f"{batch_per_device} x {world_size} process(es); choose a batch_per_device dividing it"
        )
    return ims_per_batch // per_pass
