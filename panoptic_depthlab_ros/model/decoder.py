"""DeepLabV3+ style decoder shared by the semantic, instance and depth branches.

ASPP on res5, then for res3 and res2 (top-down; optionally also the stride-2 stem):
project the low-level feature with a 1x1 conv, upsample the running feature to its
size, concatenate ``[projection, upsampled]`` and fuse.  Keys:
``decoder.<res>.project_conv`` and ``decoder.<res>.fuse_conv``, as in Detectron2's
``DeepLabV3PlusHead``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .aspp import ASPP
from .layers import ConvNormAct, fusion_convs


class DeepLabDecoder(nn.ModuleDict):
    """Features ``{"res2", "res3", "res5"}`` -> one stride-4 map of ``decoder_channels``.

    With ``low_level`` starting at ``stem`` the map is stride 2.
    A ``ModuleDict`` keyed by feature name, so a head that owns it as ``decoder``
    has the keys ``decoder.res2.project_conv...`` that Detectron2 checkpoints use.
    """

    def __init__(
        self,
        in_channels: Mapping[str, int],
        *,
        project_channels: Sequence[int],
        aspp_channels: int,
        aspp_dilations: Sequence[int],
        aspp_dropout: float,
        aspp_pool_kernel_size: tuple[int, int] | None,
        aspp_strict_pool_size: bool,
        decoder_channels: int,
        depthwise_separable: bool,
        low_level: Sequence[str] = ("res2", "res3"),
    ) -> None:
        super().__init__()
        if len(project_channels) != len(low_level):
            raise ValueError(f"project_channels needs one width per {list(low_level)}, got {list(project_channels)}")
        self.low_level = tuple(low_level)
        # Each stage fuses its projection with the stage above: the next coarser one, or ASPP.
        above = [decoder_channels] * (len(low_level) - 1) + [aspp_channels]
        for name, proj, above_channels in zip(low_level, project_channels, above, strict=True):
            self[name] = nn.ModuleDict(
                {
                    "project_conv": ConvNormAct(in_channels[name], proj, 1),
                    "fuse_conv": fusion_convs(
                        proj + above_channels, decoder_channels, depthwise_separable=depthwise_separable
                    ),
                }
            )
        self["res5"] = nn.ModuleDict(
            {
                "project_conv": ASPP(
                    in_channels["res5"],
                    aspp_channels,
                    aspp_dilations,
                    pool_kernel_size=aspp_pool_kernel_size,
                    strict_pool_size=aspp_strict_pool_size,
                    dropout=aspp_dropout,
                    depthwise_separable=depthwise_separable,
                )
            }
        )

    def forward(self, features: Mapping[str, Tensor]) -> Tensor:
        """Features by name -> [N, decoder_channels, H/s, W/s] (s: the finest feature's stride)."""
        y = cast(nn.ModuleDict, self["res5"])["project_conv"](features["res5"])
        for name in reversed(self.low_level):
            stage = cast(nn.ModuleDict, self[name])
            proj = stage["project_conv"](features[name])
            y = F.interpolate(y, size=proj.shape[-2:], mode="bilinear", align_corners=False)
            y = stage["fuse_conv"](torch.cat([proj, y], dim=1))
        return y
