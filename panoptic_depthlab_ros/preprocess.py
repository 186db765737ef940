"""Image -> network input tensor, as Detectron2 feeds Panoptic-DeepLab, and the outputs back.

Channel order to the model's ``input_format``, resize (the model's ``input_scale``,
an optional width limit), then
``(x - mean) / std`` and zero padding (in normalised space) at the bottom and
right up to ``size_divisibility``: normalisation happens before padding.
:func:`crop_and_resize` undoes the padding and the resize on the network's outputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .image_io import check_image
from .model import ModelConfig


@dataclass(frozen=True)
class Prepared:
    """A preprocessed image.

    tensor: [1, 3, Hp, Wp] float32 normalised and padded, on the target device.
    network_size: (h, w) of the image inside the padding (after any resize).
    input_size: (H, W) of the caller's image; outputs are returned at this size.
    """

    tensor: Tensor
    network_size: tuple[int, int]
    input_size: tuple[int, int]

    @property
    def resized(self) -> bool:
        """Whether the image was scaled before the network."""
        return self.network_size != self.input_size


def network_size_for(height: int, width: int, max_input_width: int, input_scale: float = 1.0) -> tuple[int, int]:
    """(h, w) the network sees: the input times ``input_scale``, narrowed to ``max_input_width`` (0: any)."""
    h, w = max(1, round(height * input_scale)), max(1, round(width * input_scale))
    if max_input_width <= 0 or w <= max_input_width:
        return h, w
    return max(1, round(height * max_input_width / width)), max_input_width


def prepare_image(
    image_bgr: np.ndarray,
    config: ModelConfig,
    *,
    device: torch.device | str = "cpu",
    max_input_width: int = 0,
    pin_memory: bool = False,
) -> Prepared:
    """BGR uint8 [H, W, 3] (OpenCV order) -> :class:`Prepared` for ``config``'s network."""
    check_image(image_bgr)
    height, width = image_bgr.shape[:2]
    h, w = network_size_for(height, width, max_input_width, config.input_scale)
    img = image_bgr
    if (h, w) != (height, width):
        # Area averaging when shrinking (no aliasing); bilinear when enlarging, as training's rescale does.
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if w < width else cv2.INTER_LINEAR)
    if torch.device(device).type == "cpu":
        return Prepared(tensor=_normalised_cpu(img, config), network_size=(h, w), input_size=(height, width))
    if config.input_format == "RGB":
        img = img[:, :, ::-1]
    host = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))  # [3, h, w] uint8
    if pin_memory:
        host = host.pin_memory()
    x = host.to(device, non_blocking=pin_memory).to(torch.float32)
    mean = torch.tensor(config.pixel_mean, dtype=torch.float32, device=x.device).view(3, 1, 1)
    std = torch.tensor(config.pixel_std, dtype=torch.float32, device=x.device).view(3, 1, 1)
    x = (x - mean) / std
    d = config.size_divisibility
    if d > 1:
        ph, pw = (-h) % d, (-w) % d
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), value=0.0)
    return Prepared(tensor=x[None], network_size=(h, w), input_size=(height, width))


def _normalised_cpu(img: np.ndarray, config: ModelConfig) -> Tensor:
    """[1, 3, Hp, Wp] of BGR ``img`` [h, w, 3]: the same float32 values as the torch path.

    Channel by channel in numpy, written into the zero padding: no separate transpose or
    padding copy, and no OpenMP threads (which cost more than the work on a busy CPU).
    """
    h, w = img.shape[:2]
    d = max(config.size_divisibility, 1)
    out = torch.zeros((1, 3, h + (-h) % d, w + (-w) % d), dtype=torch.float32)
    planes = cv2.split(img)
    if config.input_format == "RGB":
        planes = planes[::-1]
    array = out.numpy()
    for c, plane in enumerate(planes):
        dst = array[0, c, :h, :w]
        dst[...] = plane  # uint8 -> float32, exact
        np.subtract(dst, np.float32(config.pixel_mean[c]), out=dst)  # as torch: in float32
        np.divide(dst, np.float32(config.pixel_std[c]), out=dst)
    return out


def crop_and_resize(t: Tensor, image_size: tuple[int, int], output_size: tuple[int, int]) -> Tensor:
    """Detectron2's ``sem_seg_postprocess``: crop padding, then bilinear resize.

    ``t``: [C, Hp, Wp] -> [C, *output_size].  Values are not rescaled (Detectron2
    does not rescale offsets either; callers that resize scale them).
    """
    t = t[:, : image_size[0], : image_size[1]]
    if tuple(t.shape[-2:]) == tuple(output_size):
        return t
    return F.interpolate(t[None], size=output_size, mode="bilinear", align_corners=False)[0]
