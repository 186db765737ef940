"""Training data: the dataset check, a resumable per-rank sampler, a loader that survives bad files."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from panoptic_depthlab_ros.metadata import ClassMetadata

from ..cityscapes import CityscapesPanopticDepth, DatasetError, require_valid
from ..distributed import DistInfo, decided_on_rank0
from ..targets import PanopticTargetGenerator
from ..transforms import TrainAugmentation
from .config import TrainConfig, TrainingError

LOGGER = logging.getLogger("panoptic_depthlab_training")

TARGET_KEYS = (
    "sem_seg",
    "sem_seg_weights",
    "center",
    "center_weights",
    "offset",
    "offset_weights",
    "depth",
    "depth_valid",
)


def dataset_problem(root: Path, splits: Sequence[str]) -> str | None:
    """The report of every broken file of ``splits`` (None: all read), logged as it goes."""
    LOGGER.info("verifying %s (%s) ...", root, ", ".join(splits))
    try:
        report = require_valid(root, splits, require_depth=True)
    except DatasetError as exc:
        return str(exc)
    LOGGER.info("%s", report.format())
    return None


def verify_dataset(root: Path, splits: Sequence[str], info: DistInfo) -> None:
    """Rank 0 checks every file of ``splits``; every rank raises the same report if broken."""
    message = decided_on_rank0(lambda: dataset_problem(root, splits), info)
    if message is not None:
        raise DatasetError(f"refusing to train on a broken dataset:\n{message}")


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
    config: TrainConfig,
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
    data, targets = config.data, config.targets
    lo, hi = (input_scale * s for s in data.scale_range)
    generator = PanopticTargetGenerator(
        classes.thing_ids,
        ignore_label=classes.ignore_label,
        sigma=targets.sigma,
        ignore_stuff_in_offset=targets.ignore_stuff_in_offset,
        small_instance_area=targets.small_instance_area,
        small_instance_weight=targets.small_instance_weight,
        ignore_crowd_in_semantic=targets.ignore_crowd_in_semantic,
    )
    augment = TrainAugmentation(crop_size=data.crop_size, scale_range=(lo, hi), flip_prob=data.flip_prob)
    dataset = CityscapesPanopticDepth(
        data_root,
        data.train_split,
        transform=augment,  # type: ignore[arg-type]  # generic over the sample type
        target_generator=generator,
        seed=config.seed,
    )
    sampler = TrainSampler(len(dataset), rank=info.rank, world_size=info.world_size, seed=config.seed, start=start)
    # Own generator: creating the iterator must not draw from the global RNG that --resume restores.
    return DataLoader(
        RobustTrainSet(dataset),
        batch_size=data.batch_per_device,
        sampler=sampler,
        num_workers=data.workers,
        pin_memory=info.device.type == "cuda",
        persistent_workers=data.workers > 0,
        generator=torch.Generator().manual_seed(config.seed),
    )


def batch_to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Tensor]:
    """Move the image and target tensors of a collated batch to ``device``."""
    nb = device.type == "cuda"
    return {k: batch[k].to(device, non_blocking=nb) for k in ("image", *TARGET_KEYS)}
