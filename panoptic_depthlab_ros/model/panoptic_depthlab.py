"""Panoptic-DepthLab: Panoptic-DeepLab with a third decoder branch for depth.

Composition only: a backbone and three branches built elsewhere, and the
upsampling of their outputs (stride 4, or 2 for a branch that also fuses the stem)
to the (padded) input size.  Normalisation and padding happen before
(:mod:`..preprocess`), fusion after (:mod:`..fusion`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch.nn.functional as F
from torch import Tensor, nn

from .backbone import ResNetDeepLab
from .config import BranchConfig, ModelConfig
from .decoder import DeepLabDecoder
from .heads import DepthHead, InstanceHead, SemanticHead

OUTPUT_NAMES = ("sem_seg", "center", "offset", "depth")


class PanopticDepthLab(nn.Module):
    """Backbone + semantic, instance (center/offset) and depth branches.

    ``forward(x)`` with ``x`` [N, 3, H, W] normalized (and padded) returns, at [H, W]:
    ``sem_seg`` [N, C, H, W] logits, ``center`` [N, 1, H, W] heatmap,
    ``offset`` [N, 2, H, W] in pixels, channel order (dy, dx), and
    ``depth`` [N, 1, H, W] meters.  Upsampling is bilinear with
    align_corners=False and offsets are multiplied by the stride, as Detectron2.
    """

    def __init__(
        self,
        backbone: nn.Module,
        sem_seg_head: SemanticHead,
        ins_embed_head: InstanceHead,
        depth_head: DepthHead,
        *,
        strides: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.sem_seg_head = sem_seg_head
        self.ins_embed_head = ins_embed_head
        self.depth_head = depth_head
        # Output stride per branch ("semantic", "instance", "depth"); Detectron2: all 4.
        self.strides = {"semantic": 4, "instance": 4, "depth": 4, **(strides or {})}

    def forward_heads(self, x: Tensor, *, with_depth: bool = True) -> dict[str, Tensor]:
        """Outputs at their branch's stride, before upsampling (offsets unscaled, depth as logits)."""
        features = self.backbone(x)
        center, offset = self.ins_embed_head(features)
        out = {"sem_seg": self.sem_seg_head(features), "center": center, "offset": offset}
        if with_depth:
            out["depth_logit"] = self.depth_head(features)
        return out

    def forward(self, x: Tensor, *, with_depth: bool = True) -> dict[str, Tensor]:
        """See the class docstring; ``with_depth=False`` skips the depth branch (no ``depth`` key)."""
        raw = self.forward_heads(x, with_depth=with_depth)
        s_sem, s_ins, s_dep = (self.strides[k] for k in ("semantic", "instance", "depth"))
        out = {
            "sem_seg": upsample(raw["sem_seg"], s_sem),
            "center": upsample(raw["center"], s_ins),
            "offset": upsample(raw["offset"], s_ins) * s_ins,
        }
        if with_depth:
            out["depth"] = self.depth_head.to_meters(upsample(raw["depth_logit"], s_dep))
        return out


def upsample(t: Tensor, stride: int) -> Tensor:
    """A branch output at ``stride`` -> input resolution (bilinear, align_corners=False as Detectron2)."""
    return F.interpolate(t, scale_factor=stride, mode="bilinear", align_corners=False)


def build_model(config: ModelConfig) -> PanopticDepthLab:
    """Build the network described by ``config`` (weights freshly initialised)."""
    backbone = ResNetDeepLab(
        depth=config.resnet_depth,
        stem_channels=config.stem_channels,
        res2_channels=config.res2_channels,
        bottleneck_channels=config.bottleneck_channels,
        res4_dilation=config.res4_dilation,
        res5_dilation=config.res5_dilation,
        res5_multi_grid=config.res5_multi_grid,
    )

    def decoder(branch: BranchConfig) -> DeepLabDecoder:
        return DeepLabDecoder(
            backbone.out_channels,
            project_channels=branch.project_channels,
            aspp_channels=branch.aspp_channels,
            aspp_dilations=config.aspp_dilations,
            aspp_dropout=config.aspp_dropout,
            aspp_pool_kernel_size=config.aspp_pool_kernel_size,
            aspp_strict_pool_size=config.aspp_strict_pool_size,
            decoder_channels=branch.convs_dim,
            depthwise_separable=config.depthwise_separable,
            low_level=branch.low_level,
        )

    sem, ins, dep = config.semantic, config.instance, config.depth
    model = PanopticDepthLab(
        backbone,
        SemanticHead(
            decoder(sem),
            decoder_channels=sem.convs_dim,
            head_channels=sem.head_channels,
            num_classes=config.num_classes,
            depthwise_separable=config.depthwise_separable,
        ),
        InstanceHead(
            decoder(ins),
            decoder_channels=ins.convs_dim,
            head_channels=ins.head_channels,
            depthwise_separable=config.depthwise_separable,
        ),
        DepthHead(
            decoder(dep),
            decoder_channels=dep.convs_dim,
            head_channels=dep.head_channels,
            depthwise_separable=config.depthwise_separable,
            min_depth=config.min_depth,
            max_depth=config.max_depth,
        ),
        strides={"semantic": sem.output_stride, "instance": ins.output_stride, "depth": dep.output_stride},
    )
    _init_weights(model)
    return model


def _init_weights(model: nn.Module) -> None:
    """He-normal convs, unit BatchNorm; predictors keep their small init."""
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and not name.endswith("predictor"):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
