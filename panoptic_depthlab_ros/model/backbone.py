"""ResNet with the DeepLab stem and a dilated, multi-grid res5 (output stride 16).

Layout and names follow Detectron2's ``build_resnet_deeplab_backbone`` (used by
Panoptic-DeepLab, Cheng et al. CVPR 2020): ``stem.conv{1,2,3}``, then stages
``res2..res5`` of bottleneck blocks ``resN.<i>.{conv1,conv2,conv3,shortcut}``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from .layers import ConvNormAct

# Bottleneck blocks per stage (res2..res5) for each ResNet depth.
BLOCKS_PER_STAGE = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


class DeepLabStem(nn.Module):
    """Three 3x3 convs, the first with stride 2: a stride-2 map.

    Detectron2's stem ends with a 3x3/2 max pool (stride 4); here the body applies it,
    so that a decoder can also fuse the stride-2 map.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        mid = out_channels // 2
        self.conv1 = ConvNormAct(in_channels, mid, 3, stride=2, padding=1)
        self.conv2 = ConvNormAct(mid, mid, 3, padding=1)
        self.conv3 = ConvNormAct(mid, out_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        return self.conv3(self.conv2(self.conv1(x)))


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride, dilation) -> 1x1 with a projection shortcut when widths differ.

    The stride sits on the 3x3 conv (Detectron2 ``STRIDE_IN_1X1=False``).
    """

    def __init__(
        self, in_channels: int, out_channels: int, *, bottleneck_channels: int, stride: int, dilation: int
    ) -> None:
        super().__init__()
        self.shortcut = (
            ConvNormAct(in_channels, out_channels, 1, stride=stride, relu=False)
            if in_channels != out_channels
            else None
        )
        self.conv1 = ConvNormAct(in_channels, bottleneck_channels, 1)
        self.conv2 = ConvNormAct(
            bottleneck_channels, bottleneck_channels, 3, stride=stride, padding=dilation, dilation=dilation
        )
        self.conv3 = ConvNormAct(bottleneck_channels, out_channels, 1, relu=False)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        out = self.conv3(self.conv2(self.conv1(x)))
        shortcut = x if self.shortcut is None else self.shortcut(x)
        return (out + shortcut).relu()


class ResNetDeepLab(nn.Module):
    """ResNet body returning ``{"stem": stride 2, "res2": 4, "res3": 8, "res5": 16}``.

    res4 keeps stride 16 (stride 2, dilation 1 by default); res5 has stride 1 and
    dilation ``res5_dilation * multi_grid[i]`` for its blocks (1, 2, 4 -> 2, 4, 8).
    """

    out_features = ("res2", "res3", "res5")
    res2: nn.Sequential
    res3: nn.Sequential
    res4: nn.Sequential
    res5: nn.Sequential

    def __init__(
        self,
        *,
        depth: int = 50,
        in_channels: int = 3,
        stem_channels: int = 128,
        res2_channels: int = 256,
        bottleneck_channels: int = 64,
        res4_dilation: int = 1,
        res5_dilation: int = 2,
        res5_multi_grid: Sequence[int] = (1, 2, 4),
    ) -> None:
        super().__init__()
        if depth not in BLOCKS_PER_STAGE:
            raise ValueError(f"ResNet depth {depth} not supported (use one of {sorted(BLOCKS_PER_STAGE)})")
        blocks = BLOCKS_PER_STAGE[depth]
        if len(res5_multi_grid) != blocks[3]:
            raise ValueError(f"res5_multi_grid needs {blocks[3]} entries, got {list(res5_multi_grid)}")
        self.stem = DeepLabStem(in_channels, stem_channels)
        channels_in, channels_out, mid = stem_channels, res2_channels, bottleneck_channels
        self.out_channels: dict[str, int] = {"stem": stem_channels}
        for index, name in enumerate(("res2", "res3", "res4", "res5")):
            dilation = {"res4": res4_dilation, "res5": res5_dilation}.get(name, 1)
            first_stride = 1 if index == 0 or dilation > 1 else 2
            dilations = [dilation * g for g in res5_multi_grid] if name == "res5" else [dilation] * blocks[index]
            stage = nn.Sequential(
                *(
                    Bottleneck(
                        channels_in if i == 0 else channels_out,
                        channels_out,
                        bottleneck_channels=mid,
                        stride=first_stride if i == 0 else 1,
                        dilation=d,
                    )
                    for i, d in enumerate(dilations)
                )
            )
            self.add_module(name, stage)
            self.out_channels[name] = channels_out
            channels_in, channels_out, mid = channels_out, channels_out * 2, mid * 2

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """``x``: [N, 3, H, W] normalized image -> features by name."""
        stem = self.stem(x)
        res2 = self.res2(F.max_pool2d(stem, kernel_size=3, stride=2, padding=1))
        res3 = self.res3(res2)
        res5 = self.res5(self.res4(res3))
        return {"stem": stem, "res2": res2, "res3": res3, "res5": res5}
