"""Training losses of Panoptic-DepthLab: semantic, center, offset and depth.

References:
* Semantic: cross-entropy with hard pixel mining ("DeeperLab", Yang et al. 2019; TF DeepLab
  ``train_utils.py``; Detectron2 ``projects/DeepLab/deeplab/loss.py`` ``DeepLabCE``).
* Center (MSE) and offset (L1), normalised by the sum of their pixel weights, with weights
  200 and 0.01: Panoptic-DeepLab (Cheng et al., CVPR 2020) as Detectron2
  ``projects/Panoptic-DeepLab/panoptic_deeplab/panoptic_seg.py`` computes them.
* Depth: L1 in metres on valid pixels (the Panoptic-DepthLab write-up), or the
  scale-invariant log loss (Eigen et al., NeurIPS 2014, with the variance weight
  ``lambda`` of BTS / AdaBins).

All losses take full-resolution network outputs (``PanopticDepthLab.forward``) and the
targets of :class:`~.cityscapes.CityscapesPanopticDepth`, and return float32 scalars.
Every loss stays connected to the graph (zero, not a constant) when nothing is supervised,
so DDP and gradient accumulation see the same parameters every step.

"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

DEPTH_LOSSES = ("l1", "silog")


@dataclass(frozen=True)
class LossConfig:
    """Loss weights and options (defaults: Detectron2's Cityscapes values + the write-up's L1).

    semantic_top_k: fraction of pixels (of all pixels in the batch, ignored ones
        included, as Detectron2) whose per-pixel loss is averaged; 1.0 = plain mean.
    depth_loss: ``"l1"`` (metres) or ``"silog"`` (scale-invariant log).
    silog_lambda: variance weight of the scale-invariant loss (0 = log-RMSE, 1 =
        fully scale invariant).
    depth_thing_weight: weight of thing pixels (those with offset targets) in the depth
        loss, against 1 for the rest. Road, buildings and sky fill most of a frame; the
        depth a tracker turns into velocity is the things'.
    """

    semantic_weight: float = 1.0
    semantic_top_k: float = 0.2
    center_weight: float = 200.0
    offset_weight: float = 0.01
    depth_weight: float = 1.0
    depth_loss: str = "l1"
    silog_lambda: float = 0.85
    depth_thing_weight: float = 1.0
    ignore_label: int = 255

    def __post_init__(self) -> None:
        if self.depth_loss not in DEPTH_LOSSES:
            raise ValueError(f"loss.depth_loss must be one of {DEPTH_LOSSES}, got {self.depth_loss!r}")
        if not 0.0 < self.semantic_top_k <= 1.0:
            raise ValueError(f"loss.semantic_top_k must be in (0, 1], got {self.semantic_top_k}")
        if not 0.0 <= self.silog_lambda <= 1.0:
            raise ValueError(f"loss.silog_lambda must be in [0, 1], got {self.silog_lambda}")
        if not self.depth_thing_weight > 0.0:
            raise ValueError(f"loss.depth_thing_weight must be > 0, got {self.depth_thing_weight}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LossConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError`` naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"loss config has unknown keys: {unknown}")
        return cls(**d)


def hard_pixel_cross_entropy(
    logits: Tensor, target: Tensor, weights: Tensor | None = None, *, ignore_label: int = 255, top_k: float = 0.2
) -> Tensor:
    """DeepLab cross-entropy averaged over the hardest ``top_k`` fraction of pixels.

    Args:
        logits: [N, C, H, W] class scores.
        target: [N, H, W] int64 class ids, ``ignore_label`` for void.
        weights: optional [N, H, W] per-pixel weights (multiplied before mining).
        ignore_label: void label; its pixels have loss 0 but still count in ``N*H*W``.
        top_k: fraction in (0, 1]; ``k = int(top_k * N*H*W)`` (at least 1) losses are averaged.

    Returns:
        Scalar: mean of the ``k`` largest weighted per-pixel losses.

    """
    if logits.ndim != 4 or target.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(
            f"logits [N,C,H,W] and target [N,H,W] expected, got {tuple(logits.shape)}, {tuple(target.shape)}"
        )
    pixel = F.cross_entropy(logits, target, ignore_index=ignore_label, reduction="none")  # [N, H, W]
    if weights is not None:
        pixel = pixel * weights
    pixel = pixel.reshape(-1)
    if top_k >= 1.0:
        return pixel.mean()
    k = max(1, int(top_k * pixel.numel()))
    return torch.topk(pixel, k, sorted=False).values.mean()


def _weighted_mean(pixel_loss: Tensor, weights: Tensor) -> Tensor:
    """``sum(loss * w) / sum(w)``; 0 (still in the graph) when every weight is 0.

    ``weights`` [N, 1, H, W] broadcast over the loss channels: a pixel's channels are
    summed and the pixel counted once, as Detectron2 normalises offsets.
    """
    total = (pixel_loss * weights).sum()
    norm = weights.sum()
    return torch.where(norm > 0, total / norm.clamp(min=1e-12), total * 0.0)


def center_loss(pred: Tensor, target: Tensor, weights: Tensor) -> Tensor:
    """Weighted MSE of the center heatmap: pred/target [N, 1, H, W], weights [N, 1, H, W]."""
    return _weighted_mean(F.mse_loss(pred, target, reduction="none"), weights)


def offset_loss(pred: Tensor, target: Tensor, weights: Tensor) -> Tensor:
    """Weighted L1 of offsets: pred/target [N, 2, H, W] (dy, dx) pixels, weights [N, 1, H, W]."""
    return _weighted_mean(F.l1_loss(pred, target, reduction="none"), weights)


def depth_supervision_mask(depth: Tensor, valid: Tensor, *, min_depth: float, max_depth: float) -> Tensor:
    """[N, 1, H, W] bool: valid ground truth the depth head can represent.

    Targets outside ``[min_depth, max_depth]`` are masked, not clamped: the head's
    output is bounded to that open range, so a clamped target would sit at a bound the
    sigmoid only reaches at an infinite logit and keep pushing it there with a
    constant L1 gradient; far Cityscapes disparities (tiny, noisy) carry little signal.
    """
    return valid & torch.isfinite(depth) & (depth >= min_depth) & (depth <= max_depth)


def _pixel_weights(mask: Tensor, weights: Tensor | None, dtype: torch.dtype) -> Tensor:
    """``weights`` inside ``mask`` (1 where no weights are given), 0 outside."""
    inside = mask.to(dtype)
    return inside if weights is None else inside * weights.to(dtype)


def depth_l1_loss(pred: Tensor, target: Tensor, mask: Tensor, weights: Tensor | None = None) -> Tensor:
    """Mean |pred - target| [m] over ``mask``, weighted by ``weights`` if given; 0 if empty.

    ``pred``, ``target``, ``mask``, ``weights``: [N, 1, H, W].
    """
    diff = (pred - torch.where(mask, target, pred)).abs()  # 0 outside the mask, no NaN from invalid
    return _weighted_mean(diff, _pixel_weights(mask, weights, diff.dtype))


def silog_loss(
    pred: Tensor, target: Tensor, mask: Tensor, *, variance_weight: float = 0.85, weights: Tensor | None = None
) -> Tensor:
    """Scale-invariant log loss ``sqrt(mean(g^2) - lambda * mean(g)^2)``, ``g = ln d - ln d*``.

    Computed per image over its ``mask`` pixels (means weighted by ``weights`` if given)
    and averaged over images that have any; 0 (in the graph) when no image does.
    ``pred``, ``target``, ``mask``, ``weights``: [N, 1, H, W].
    """
    safe_target = torch.where(mask, target, torch.ones_like(target))
    g = torch.where(mask, torch.log(pred) - torch.log(safe_target), torch.zeros_like(pred))
    g = g.flatten(1)  # [N, H*W]
    w = _pixel_weights(mask, weights, g.dtype).flatten(1)
    total = w.sum(1)  # [N]
    has = total > 0
    n = total.clamp(min=1e-12)
    mean_sq = (w * g.square()).sum(1) / n
    mean = (w * g).sum(1) / n
    per_image = (mean_sq - variance_weight * mean.square()).clamp(min=1e-8).sqrt()
    per_image = torch.where(has, per_image, torch.zeros_like(per_image))
    return torch.where(has.any(), per_image.sum() / has.sum().clamp(min=1), per_image.sum() * 0.0)


def panoptic_depth_losses(
    outputs: Mapping[str, Tensor],
    batch: Mapping[str, Tensor],
    config: LossConfig,
    *,
    min_depth: float,
    max_depth: float,
) -> dict[str, Tensor]:
    """Weighted losses of whichever outputs are present.

    Args:
        outputs: any of ``sem_seg`` [N,C,H,W] logits, ``center`` [N,1,H,W], ``offset``
            [N,2,H,W] (dy, dx) px, ``depth`` [N,1,H,W] metres, at the targets' size.
        batch: the targets (``sem_seg``, ``sem_seg_weights``, ``center``,
            ``center_weights``, ``offset``, ``offset_weights``, ``depth``, ``depth_valid``).
        config: weights and options.
        min_depth: lower end of the depth head's range (see :func:`depth_supervision_mask`).
        max_depth: upper end of that range.

    Returns:
        ``loss_sem_seg``, ``loss_center``, ``loss_offset``, ``loss_depth`` (each already
        multiplied by its weight; the total loss is their sum), for the outputs given.

    """
    losses: dict[str, Tensor] = {}
    if "sem_seg" in outputs:
        losses["loss_sem_seg"] = config.semantic_weight * hard_pixel_cross_entropy(
            outputs["sem_seg"].float(),
            batch["sem_seg"],
            batch.get("sem_seg_weights"),
            ignore_label=config.ignore_label,
            top_k=config.semantic_top_k,
        )
    if "center" in outputs:
        losses["loss_center"] = config.center_weight * center_loss(
            outputs["center"].float(), batch["center"], batch["center_weights"]
        )
    if "offset" in outputs:
        losses["loss_offset"] = config.offset_weight * offset_loss(
            outputs["offset"].float(), batch["offset"], batch["offset_weights"]
        )
    if "depth" in outputs:
        pred = outputs["depth"].float()
        mask = depth_supervision_mask(batch["depth"], batch["depth_valid"], min_depth=min_depth, max_depth=max_depth)
        weights = None
        if config.depth_thing_weight != 1.0:
            weights = 1.0 + (config.depth_thing_weight - 1.0) * (batch["offset_weights"] > 0).float()
        if config.depth_loss == "l1":
            loss = depth_l1_loss(pred, batch["depth"], mask, weights)
        else:
            loss = silog_loss(pred, batch["depth"], mask, variance_weight=config.silog_lambda, weights=weights)
        losses["loss_depth"] = config.depth_weight * loss
    return losses
