"""The network being trained: built and initialised, its training camera, which parts learn.

``depth-only`` (the write-up) freezes the backbone and the semantic and instance
branches; ``joint`` trains every branch. :class:`TrainingNetwork` is what DDP wraps.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from panoptic_depthlab_ros.checkpoint import (
    load_checkpoint,
    load_detectron2,
    load_state_dict_checked,
    postprocess_from_detectron2,
)
from panoptic_depthlab_ros.fusion import PostprocessConfig
from panoptic_depthlab_ros.metadata import ClassMetadata, cityscapes_metadata
from panoptic_depthlab_ros.model import ModelConfig, PanopticDepthLab, build_model
from panoptic_depthlab_ros.model.config import load_detectron2_yaml
from panoptic_depthlab_ros.model.panoptic_depthlab import upsample

from ..cityscapes import DatasetError, focal_length, list_samples
from ..distributed import DistInfo
from .config import TrainConfig, TrainingError, deep_update

LOGGER = logging.getLogger("panoptic_depthlab_training")


@dataclass
class Initialized:
    """The network to train and what the exported checkpoints need to describe it."""

    model: PanopticDepthLab
    model_config: ModelConfig
    classes: ClassMetadata
    postprocess: PostprocessConfig
    note: str


def _model_config(base: ModelConfig, overrides: Mapping[str, Any]) -> ModelConfig:
    try:
        return ModelConfig.from_dict(deep_update(base.to_dict(), overrides))
    except (TypeError, ValueError) as exc:
        raise TrainingError(f"model config: {exc}") from exc


def build_initialized_model(config: TrainConfig) -> Initialized:
    """Build the model of ``config.model`` initialised as ``config.init`` says.

    ``none``: the preset (``r52`` = Detectron2's R-52 Cityscapes model, ``tiny``) with
    fresh weights. ``detectron2``: architecture from the Detectron2 YAML, its weights,
    the depth branch freshly initialised. ``checkpoint``: one of our files. In the last
    two cases ``model`` keys other than ``preset`` override the file's architecture
    (e.g. ``max_depth``); weights must still fit. ``config.postprocess`` overrides the
    fusion settings that come with the weights.
    """
    model, init = config.model, config.init
    if init.type == "none":
        base = ModelConfig.tiny() if model.preset == "tiny" else ModelConfig()
        model_config = _model_config(base, model.overrides).with_(depth_trained=False)  # fresh weights everywhere
        network, classes, post = build_model(model_config), cityscapes_metadata(), PostprocessConfig()
        note = f"fresh {model.preset} weights"
    elif init.type == "detectron2":
        assert init.weights is not None and init.config is not None  # InitConfig checks
        try:
            d2 = load_detectron2_yaml(init.config)
            d2_config = ModelConfig.from_detectron2(d2)
        except (OSError, ValueError) as exc:
            raise TrainingError(f"init.config: {exc}") from exc
        model_config = _model_config(d2_config, model.overrides)
        network, _, _, report = load_detectron2(init.weights, model_config)
        classes, post = cityscapes_metadata(), postprocess_from_detectron2(d2)
        note = (
            f"Detectron2 {init.weights}: {len(report.loaded)} tensors loaded, "
            f"{len(report.initialized)} depth-branch tensors initialised"
        )
    else:
        assert init.path is not None  # InitConfig checks
        ckpt = load_checkpoint(init.path)
        model_config = _model_config(ckpt.model_config, model.overrides)
        network = build_model(model_config)
        load_state_dict_checked(network, ckpt.state_dict, source=init.path, allow_missing_prefix=None)
        classes, post = ckpt.classes, ckpt.postprocess
        note = f"checkpoint {init.path}"
    try:
        post = PostprocessConfig.from_dict({**post.to_dict(), **config.postprocess})
    except (TypeError, ValueError) as exc:
        raise TrainingError(f"postprocess config: {exc}") from exc
    return Initialized(model=network, model_config=model_config, classes=classes, postprocess=post, note=note)


def record_depth_camera(init: Initialized, config: TrainConfig, data_root: Path, info: DistInfo) -> None:
    """Store the training cameras' focal length in the model config (``depth_focal_px``).

    The depth branch learns metres for the cameras it sees (scale augmentation keeps
    that camera, see ``transforms``); the predictor rescales for other cameras. A value
    set in ``config.model`` wins (e.g. images resized before training).
    """
    if "depth_focal_px" in config.model.overrides:
        return
    split = config.data.train_split
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
