"""Atrous Spatial Pyramid Pooling, as Panoptic-DeepLab uses it (DeepLabV3, Chen et al. 2017).

Branch order (and so the concatenation order Detectron2 weights expect): 1x1,
dilated 3x3 per rate, image pooling; then a 1x1 projection.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import ConvNormAct, DepthwiseSeparableConv2d


def feature_size(height: int, width: int, stride: int) -> tuple[int, int]:
    """Size of the ASPP input (res5) for a network input of ``height`` x ``width``.

    Every stride-2 stage of the backbone rounds up.
    """
    return -(-height // stride), -(-width // stride)


def detectron2_accepts(feature: tuple[int, int], window: tuple[int, int] | None) -> bool:
    """Whether Detectron2's image pooling runs on this res5 size (global pooling: always)."""
    return window is None or (feature[0] % window[0] == 0 and feature[1] % window[1] == 0)


def pooling_policy(window: tuple[int, int] | None, stride: int, *, strict: bool) -> str:
    """What the image pooling does with frame sizes, in one phrase (start-up logs, ``info``)."""
    if window is None:
        return "global (any frame size)"
    kh, kw = window
    text = f"Detectron2's {kh}x{kw} window ({kh * stride}x{kw * stride} px of network input)"
    if strict:
        return text + "; frames whose res5 is not a multiple of it are refused, as Detectron2 refuses them"
    return (
        text + "; any frame size: exactly Detectron2's outputs where it accepts the size, the same window"
        " (clipped to a smaller res5) where it refuses it"
    )


def box_average(x: Tensor, kh: int, kw: int) -> Tensor:
    """``AvgPool2d(kernel=(kh, kw), stride=1)`` as two 1-D averages (a box mean is the mean of its column means).

    The same values up to float32 rounding (~1e-6 relative), for kh + kw additions per output
    instead of kh * kw: Detectron2's 32x64 window over 2048 res5 channels is the slowest step of
    a full-size frame on a CPU otherwise (the figures: docs/detectron2.md).
    """
    return F.avg_pool2d(F.avg_pool2d(x, (kh, 1), stride=1), (1, kw), stride=1)


class ASPP(nn.Module):
    """ASPP with Detectron2's image pooling.

    Detectron2 pools with ``AvgPool2d(kernel=train_crop/16, stride=1)`` instead of a
    global pool, also at test time, then resizes the pooled map back to the feature
    size (bilinear, align_corners=False); it raises ``ValueError`` unless the feature
    size is divisible by that kernel.  ``strict_pool_size=True`` keeps that
    behaviour exactly; ``False`` runs the same pooling on any size (the window clipped
    to the feature where the feature is smaller): identical results whenever Detectron2
    would run at all. Chosen by measurement against padding, resizing and global pooling
    (docs/detectron2.md). ``pool_kernel_size=None`` is a global average pool.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        dilations: Sequence[int],
        *,
        pool_kernel_size: tuple[int, int] | None,
        strict_pool_size: bool = True,
        dropout: float = 0.1,
        depthwise_separable: bool = False,
    ) -> None:
        super().__init__()
        self.pool_kernel_size = pool_kernel_size
        self.strict_pool_size = strict_pool_size
        self.dropout = dropout
        convs: list[nn.Module] = [ConvNormAct(in_channels, out_channels, 1)]
        for d in dilations:
            if depthwise_separable:
                convs.append(DepthwiseSeparableConv2d(in_channels, out_channels, 3, padding=d, dilation=d))
            else:
                convs.append(ConvNormAct(in_channels, out_channels, 3, padding=d, dilation=d))
        # Image pooling: the pool itself has no weights; index 1 is the 1x1 conv
        # (with bias, no norm) so the keys read `convs.<n>.1.weight` as in Detectron2.
        convs.append(nn.Sequential(nn.Identity(), ConvNormAct(in_channels, out_channels, 1, norm=False)))
        self.convs = nn.ModuleList(convs)
        self.project = ConvNormAct((len(dilations) + 2) * out_channels, out_channels, 1)

    def _pool(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        if self.pool_kernel_size is None:
            return F.adaptive_avg_pool2d(x, 1)
        kh, kw = self.pool_kernel_size
        if self.strict_pool_size:
            if not detectron2_accepts((int(size[0]), int(size[1])), (kh, kw)):
                raise ValueError(
                    f"ASPP image pooling: feature size {tuple(size)} is not divisible by the pooling "
                    f"kernel {(kh, kw)} (Detectron2 behaviour; the kernel is the training crop / 16). "
                    "Use an input size whose stride-16 feature is a multiple of it, or a model config "
                    "with strict_pool_size=False."
                )
            return box_average(x, kh, kw)
        return box_average(x, min(kh, int(size[0])), min(kw, int(size[1])))

    def forward(self, x: Tensor) -> Tensor:
        """[N, C_in, h, w] -> [N, C_out, h, w]."""
        branches = [conv(x) for conv in self.convs[:-1]]
        pooled = self.convs[-1](self._pool(x))
        branches.append(F.interpolate(pooled, size=x.shape[-2:], mode="bilinear", align_corners=False))
        y = self.project(torch.cat(branches, dim=1))
        if self.dropout > 0 and self.training:
            y = F.dropout(y, self.dropout, training=True)
        return y
