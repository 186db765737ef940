"""Test-time augmentation: the network's outputs averaged over a mirrored and zoomed input.

Flip averaging runs the network on the horizontally mirrored input too; multi-scale
averaging on copies zoomed by each of ``scales``. What each costs and gains on the demo
model: docs/performance.md and docs/model.md.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor

from .model import SCALE_RANGE, SCALE_RANGE_TEXT

SEGMENTATION_OUTPUTS = ("sem_seg", "center", "offset")


def average_with_mirrored(out: dict[str, Tensor], mirrored: dict[str, Tensor]) -> dict[str, Tensor]:
    """Average network outputs with those of the horizontally mirrored input.

    The mirrored outputs are flipped back first; an offset's dx changes sign under a
    mirror (the center is on the other side), dy does not.  Logits, center heatmap
    and depth are averaged as they are (what it gains: docs/performance.md).
    """
    back = {k: v.flip(-1) for k, v in mirrored.items()}  # new tensors: changed in place below
    back["offset"][:, 1].neg_()  # = * -1 exactly, without a small tensor copied to the GPU
    return {k: (out[k] + back[k]) / 2 for k in out}


def zoomed_input(x: Tensor, scale: float, divisibility: int) -> tuple[Tensor, tuple[int, int]]:
    """The padded network input ``x`` [1, 3, Hp, Wp] resized by ``scale`` and padded again.

    Returns the tensor and the resized (unpadded) size. The zero padding of ``x`` is the
    mean colour, so resizing the whole canvas keeps the image where it was.
    """
    h, w = x.shape[-2:]
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    y = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=scale < 1)
    d = max(divisibility, 1)
    pad_h, pad_w = (-size[0]) % d, (-size[1]) % d
    return (F.pad(y, (0, pad_w, 0, pad_h)) if pad_h or pad_w else y), size


def average_over_scales(base: dict[str, Tensor], zoomed: list[tuple[float, dict[str, Tensor]]]) -> dict[str, Tensor]:
    """Average the segmentation outputs of the input at several scales (depth: ``base``'s).

    ``zoomed``: ``(scale, outputs)`` of the input resized by ``scale`` (see
    :func:`zoomed_input`; outputs cropped to the resized size). Each is resized back to
    ``base``'s size, offsets divided by the scale (they are in the zoomed pixels), and
    logits, centers and offsets averaged with ``base``'s. Depth stays the scale-1
    prediction: a zoomed image looks like a longer lens, and the network's depth for it
    was measured worse (docs/performance.md).
    """
    size = base["sem_seg"].shape[-2:]
    total = {k: base[k].clone() for k in SEGMENTATION_OUTPUTS}
    for scale, out in zoomed:
        for k in SEGMENTATION_OUTPUTS:
            v = F.interpolate(out[k], size=size, mode="bilinear", align_corners=False)
            total[k] += v / scale if k == "offset" else v
    n = len(zoomed) + 1
    return {**base, **{k: v / n for k, v in total.items()}}


def check_scales(scales: Any) -> tuple[float, ...]:
    """``scales`` (any iterable) as a sorted tuple; ``ValueError`` unless in 0.25..4 and holding 1.0."""
    try:
        out = tuple(sorted({float(s) for s in scales}))
    except (TypeError, ValueError):
        raise ValueError(f"scales must be numbers, got {scales!r}") from None
    if not all(SCALE_RANGE[0] <= s <= SCALE_RANGE[1] for s in out) or 1.0 not in out:  # NaN fails the range test
        raise ValueError(
            f"scales must lie in {SCALE_RANGE_TEXT} and include 1.0 (depth is read at 1.0), got {list(out)}"
        )
    return out
