"""The three prediction branches on top of the shared backbone.

Each branch = its own :class:`DeepLabDecoder` + a small head + a 1x1 predictor, and
returns outputs at its decoder's stride (4, or 2 with the stem); upsampling is the model's job.
Names follow Detectron2 (``sem_seg_head``, ``ins_embed_head``); the depth branch
(``depth_head``) is ours and mirrors the semantic one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from .decoder import DeepLabDecoder
from .layers import head_convs


def _predictor(in_channels: int, out_channels: int) -> nn.Conv2d:
    """1x1 conv with bias (no norm), initialised small as Detectron2 does."""
    conv = nn.Conv2d(in_channels, out_channels, 1)
    nn.init.normal_(conv.weight, 0, 0.001)
    assert conv.bias is not None
    nn.init.zeros_(conv.bias)
    return conv


class SemanticHead(nn.Module):
    """Decoder -> head -> ``num_classes`` logits at the decoder's stride."""

    def __init__(
        self,
        decoder: DeepLabDecoder,
        *,
        decoder_channels: int,
        head_channels: int,
        num_classes: int,
        depthwise_separable: bool,
    ) -> None:
        super().__init__()
        self.decoder = decoder
        self.head = head_convs(decoder_channels, head_channels, depthwise_separable=depthwise_separable)
        self.predictor = _predictor(head_channels, num_classes)

    def forward(self, features: Mapping[str, Tensor]) -> Tensor:
        """Features -> [N, num_classes, H/s, W/s] logits (s: the decoder's stride)."""
        return self.predictor(self.head(self.decoder(features)))


class InstanceHead(nn.Module):
    """Decoder -> (center heatmap [N,1], offsets [N,2] in (dy, dx), in pixels of the decoder's stride).

    The center head is two plain 3x3 convs in both variants; the offset head is
    depthwise-separable in the ``_dsconv`` variant (as in Detectron2).
    """

    def __init__(
        self, decoder: DeepLabDecoder, *, decoder_channels: int, head_channels: int, depthwise_separable: bool
    ) -> None:
        super().__init__()
        self.decoder = decoder
        self.center_head = head_convs(decoder_channels, head_channels, depthwise_separable=False)
        self.center_predictor = _predictor(head_channels, 1)
        self.offset_head = head_convs(decoder_channels, head_channels, depthwise_separable=depthwise_separable)
        self.offset_predictor = _predictor(head_channels, 2)

    def forward(self, features: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Features -> (center [N,1,H/s,W/s], offset [N,2,H/s,W/s] unscaled)."""
        y = self.decoder(features)
        return self.center_predictor(self.center_head(y)), self.offset_predictor(self.offset_head(y))


class DepthHead(nn.Module):
    """Decoder -> one depth logit per pixel at the decoder's stride; :meth:`to_meters` bounds it.

    Parameterisation: ``depth = min_depth * (max_depth / min_depth) ** sigmoid(logit)``,
    i.e. a sigmoid in log-depth.  It is always positive and bounded to
    ``(min_depth, max_depth)``; equal logit steps are equal *relative* depth steps,
    which matches how depth error is judged (AbsRel, log RMSE) and gives near
    objects the same resolution as far ones (a linear ``max * sigmoid`` spends
    most of its range far away).  The logit, not the depth, is upsampled, so
    bilinear blending happens in log-depth space.
    """

    def __init__(
        self,
        decoder: DeepLabDecoder,
        *,
        decoder_channels: int,
        head_channels: int,
        depthwise_separable: bool,
        min_depth: float,
        max_depth: float,
    ) -> None:
        super().__init__()
        if not 0 < min_depth < max_depth:
            raise ValueError(f"depth range needs 0 < min_depth < max_depth, got {min_depth}, {max_depth}")
        self.decoder = decoder
        self.head = head_convs(decoder_channels, head_channels, depthwise_separable=depthwise_separable)
        self.predictor = _predictor(head_channels, 1)
        self.log_min = math.log(min_depth)
        self.log_range = math.log(max_depth) - math.log(min_depth)
        # _predictor starts the bias at 0: the middle of the log range (a geometric-mean depth).

    def forward(self, features: Mapping[str, Tensor]) -> Tensor:
        """Features -> [N, 1, H/s, W/s] depth logits."""
        return self.predictor(self.head(self.decoder(features)))

    def to_meters(self, logit: Tensor) -> Tensor:
        """Depth logits -> meters in (min_depth, max_depth)."""
        return torch.exp(self.log_min + self.log_range * torch.sigmoid(logit))
