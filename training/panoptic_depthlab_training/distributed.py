"""Where this process sits in a ``torchrun`` job: process group, rank and device.

Training and evaluation join the job here, so both do it in the one right order: each
rank selects its CUDA device *before* the NCCL group is created (otherwise every rank
sits on cuda:0 and NCCL fails with "Duplicate GPU"). Torch builds without
``torch.distributed`` (some Jetson wheels) have no ``dist.is_initialized`` and the
rest: nothing here touches them unless ``dist.is_available()`` says they exist, so a
single process runs on such builds.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar, cast

import torch
import torch.distributed as dist

from panoptic_depthlab_ros.errors import PanopticDepthLabError

T = TypeVar("T")

# Long: rank 0 verifies the dataset (minutes on Cityscapes) while the others wait.
GROUP_TIMEOUT = timedelta(minutes=30)


class DistributedError(PanopticDepthLabError):
    """A device or ``torchrun`` job this process cannot use."""


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


def in_process_group() -> bool:
    """Whether a process group is up (False on builds without ``torch.distributed``)."""
    return dist.is_available() and dist.is_initialized()


def select_device(device: str, local_rank: int = 0) -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` (= ``cuda:LOCAL_RANK``) | ``cuda:N``, made current on CUDA."""
    name = str(device)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if not name.startswith("cuda"):
        raise DistributedError(f"device must be auto, cpu or cuda[:N], got {device!r}")
    if not torch.cuda.is_available():
        raise DistributedError(f"device {device!r} requested but CUDA is not available")
    dev = torch.device("cuda", local_rank) if name == "cuda" else torch.device(name)
    torch.cuda.set_device(dev)
    return dev


def init_distributed(device: str) -> DistInfo:
    """Pick this rank's device, then join the torchrun job if there is one (NCCL on CUDA, gloo on CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world_size > 1 and not dist.is_available():
        raise DistributedError(
            f"WORLD_SIZE={world_size} (a torchrun job), but this torch build has no torch.distributed:"
            " run a single process"
        )
    dev = select_device(device, local_rank)  # first: NCCL binds each rank to the current device
    owns = False
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", timeout=GROUP_TIMEOUT)
        owns = True
    rank = dist.get_rank() if in_process_group() else 0
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=dev, owns_group=owns)


@contextmanager
def distributed_job(device: str) -> Iterator[DistInfo]:
    """:func:`init_distributed` for a ``with`` block; the group it created ends with the block."""
    info = init_distributed(device)
    try:
        yield info
    finally:
        if info.owns_group:
            dist.destroy_process_group()


def broadcast_object(value: T, world_size: int) -> T:
    """Rank 0's ``value`` on every rank."""
    if world_size == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(value: T, world_size: int) -> list[T]:
    """Every rank's ``value``, in rank order."""
    if world_size == 1:
        return [value]
    out: list[Any] = [None] * world_size
    dist.all_gather_object(out, value)
    return out


def mean_over_ranks(values: dict[str, float], info: DistInfo) -> dict[str, float]:
    """The mean of every value over the ranks (the same keys on every rank)."""
    if info.world_size == 1 or not values:
        return values
    keys = sorted(values)
    device = info.device if info.device.type == "cuda" else torch.device("cpu")  # NCCL reduces CUDA tensors
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return {k: float(v) / info.world_size for k, v in zip(keys, t.tolist(), strict=True)}


def decided_on_rank0(decide: Callable[[], T], info: DistInfo) -> T:
    """Run ``decide`` on rank 0 only and give its answer to every rank (e.g. a check of files)."""
    answer = decide() if info.is_main else None
    return cast(T, broadcast_object(answer, info.world_size))
