"""Convolution building blocks with Detectron2's parameter names.

Detectron2 attaches the norm layer to the convolution (``conv.norm``), so its
state-dict keys read ``...conv1.weight`` / ``...conv1.norm.running_mean``.
Keeping that shape lets a Detectron2 checkpoint load key for key.
"""

from __future__ import annotations

from torch import Tensor, nn


class ConvNormAct(nn.Conv2d):
    """``Conv2d`` followed by an optional BatchNorm (``.norm``) and optional ReLU.

    Args:
        norm: add a BatchNorm2d after the convolution (the convolution then has
            no bias, as in Detectron2).
        relu: apply ReLU last.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        groups: int = 1,
        norm: bool = True,
        relu: bool = True,
        bias: bool | None = None,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=(not norm) if bias is None else bias,
        )
        self.norm = nn.BatchNorm2d(out_channels) if norm else None
        self.relu = relu

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        x = self._conv_forward(x, self.weight, self.bias)
        if self.norm is not None:
            x = self.norm(x)
        return x.relu() if self.relu else x


class DepthwiseSeparableConv2d(nn.Module):
    """Depthwise KxK conv + BN + ReLU, then pointwise 1x1 conv + BN + ReLU.

    Panoptic-DeepLab's ``_dsconv`` variant uses one 5x5 of these in place of two
    3x3 convolutions (same receptive field, fewer weights).
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, *, padding: int, dilation: int = 1
    ) -> None:
        super().__init__()
        self.depthwise = ConvNormAct(
            in_channels, in_channels, kernel_size, padding=padding, dilation=dilation, groups=in_channels
        )
        self.pointwise = ConvNormAct(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        return self.pointwise(self.depthwise(x))


def fusion_convs(in_channels: int, out_channels: int, *, depthwise_separable: bool) -> nn.Module:
    """Two 3x3 conv+BN+ReLU, or one 5x5 depthwise-separable block (same receptive field).

    Used for the decoder's fuse convolutions and for the heads' transforms; the
    first 3x3 maps ``in -> in`` when used as a head (see ``head_convs``), so the
    channel plan is the caller's.
    """
    if depthwise_separable:
        return DepthwiseSeparableConv2d(in_channels, out_channels, 5, padding=2)
    return nn.Sequential(
        ConvNormAct(in_channels, out_channels, 3, padding=1),
        ConvNormAct(out_channels, out_channels, 3, padding=1),
    )


def head_convs(in_channels: int, out_channels: int, *, depthwise_separable: bool) -> nn.Module:
    """A head's transform before its 1x1 predictor, as Detectron2 builds it.

    Plain: 3x3 ``in -> in`` then 3x3 ``in -> out`` (note: different from
    :func:`fusion_convs`, which widens first). Depthwise-separable: one 5x5 block.
    """
    if depthwise_separable:
        return DepthwiseSeparableConv2d(in_channels, out_channels, 5, padding=2)
    return nn.Sequential(
        ConvNormAct(in_channels, in_channels, 3, padding=1),
        ConvNormAct(in_channels, out_channels, 3, padding=1),
    )
