"""What a run tells its user: ``log.txt``, TensorBoard scalars and sample panels, ``metrics.jsonl``, progress.

Rank 0 reports; the other ranks take part in the averaging only. A
:class:`RunReport` is opened once per run and closed at its end.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from panoptic_depthlab_ros.metadata import ClassMetadata
from panoptic_depthlab_ros.visualize import depth_colormap

from ..distributed import DistInfo, mean_over_ranks

LOGGER = logging.getLogger("panoptic_depthlab_training")


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


class FileLog:
    """INFO+ of the trainer's logger also into ``OUT/log.txt``, whatever the root logger does."""

    def __init__(self, out_dir: Path) -> None:
        self.handler = logging.FileHandler(out_dir / "log.txt")
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        LOGGER.addHandler(self.handler)
        self.old_level = LOGGER.level
        if LOGGER.getEffectiveLevel() > logging.INFO:
            LOGGER.setLevel(logging.INFO)

    def close(self) -> None:
        """Detach from the logger and restore its level."""
        LOGGER.removeHandler(self.handler)
        LOGGER.setLevel(self.old_level)
        self.handler.close()


class RunReport:
    """Progress bar, averaged scalars every ``log_period`` steps, sample panels and evaluations."""

    def __init__(
        self,
        out_dir: Path,
        info: DistInfo,
        *,
        classes: ClassMetadata,
        start_iter: int,
        max_iter: int,
        log_period: int,
        image_period: int,
        progress: bool,
    ) -> None:
        self.out_dir = out_dir
        self.info = info
        self.classes = classes
        self.max_iter = max_iter
        self.log_period = log_period
        self.image_period = image_period
        self.writer = SummaryWriter(out_dir / "tensorboard", purge_step=start_iter) if info.is_main else None
        self.bar = tqdm(
            total=max_iter,
            initial=start_iter,
            desc="train",
            unit="it",
            dynamic_ncols=True,
            disable=not (progress and info.is_main),
        )
        self.window: dict[str, list[float]] = {}
        self.last: dict[str, float] = {}  # the last averaged values

    def __enter__(self) -> RunReport:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.bar.close()
        if self.writer is not None:
            self.writer.close()

    def wants_panel(self, iteration: int) -> bool:
        """Whether the step of ``iteration`` should keep a sample for :meth:`panel`."""
        return self.writer is not None and self.image_period > 0 and iteration % self.image_period == 0

    def step(self, iteration: int, values: Mapping[str, float]) -> None:
        """Record one step's values; every ``log_period`` steps (and at the end) average over steps and ranks."""
        for k, v in values.items():
            self.window.setdefault(k, []).append(v)
        self.bar.update()
        if iteration % self.log_period and iteration != self.max_iter:
            return
        self.last = mean_over_ranks({k: float(np.mean(v)) for k, v in self.window.items()}, self.info)
        self.window = {}
        if self.writer is None:
            return
        for k, v in self.last.items():
            group = "loss" if k.startswith(("loss_", "total")) else "train"
            self.writer.add_scalar(f"{group}/{k}", v, iteration)
        self.bar.set_postfix(loss=f"{self.last['total_loss']:.3f}", lr=f"{self.last['lr']:.2e}")
        LOGGER.info("iter %d/%d %s", iteration, self.max_iter, " ".join(f"{k} {v:.4g}" for k, v in self.last.items()))

    def panel(self, iteration: int, image: Tensor, outputs: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> None:
        """A sample panel (:func:`sample_panel`) into TensorBoard as ``train/sample``."""
        if self.writer is not None:
            picture = sample_panel(image, outputs, batch, self.classes)
            self.writer.add_image("train/sample", picture, iteration, dataformats="HWC")

    def evaluation(self, iteration: int, metrics: Mapping[str, float | None], summary: Mapping[str, Any]) -> None:
        """Validation metrics into TensorBoard (``val/...``), ``metrics.jsonl`` and the log (rank 0)."""
        if not self.info.is_main:
            return
        if self.writer is not None:
            for k, v in metrics.items():
                if v is not None:
                    self.writer.add_scalar(f"val/{k}", v, iteration)
        with (self.out_dir / "metrics.jsonl").open("a") as f:
            f.write(json.dumps({"iteration": iteration, **metrics}) + "\n")
        LOGGER.info(
            "iteration %d val: PQ %.2f mIoU %.2f AbsRel %.4f DPQ %.2f",
            iteration,
            summary["PQ"],
            summary["mIoU"],
            summary["AbsRel"],
            summary["DPQ"],
        )
