"""Inference-time rewrites that keep the outputs (up to float rounding).

``fold_batchnorm``: a frozen BatchNorm after a convolution is an affine map per
output channel, so it folds into the convolution's weight and bias, saving one
full pass over every feature map.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .layers import ConvNormAct


@torch.no_grad()
def fold_batchnorm(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """Fold each ``ConvNormAct``'s eval-mode BatchNorm into its convolution.

    Returns the rewritten model (a deep copy unless ``inplace``).  Only for
    inference: the folded model has no BatchNorm to train and its state dict no
    longer has the ``.norm`` keys.
    """
    target = model if inplace else copy.deepcopy(model)
    for module in target.modules():
        if isinstance(module, ConvNormAct) and module.norm is not None:
            bn = module.norm
            assert bn.running_var is not None and bn.running_mean is not None  # eval-mode BatchNorm
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            module.weight.mul_(scale.view(-1, 1, 1, 1))
            bias = bn.bias - bn.running_mean * scale
            if module.bias is not None:
                bias = bias + module.bias * scale
            module.bias = nn.Parameter(bias)
            module.norm = None
    return target.eval()
