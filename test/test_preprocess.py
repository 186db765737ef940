"""The CPU preprocessing (numpy, one thread) gives the very floats of the torch formula it replaces."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from panoptic_depthlab_ros.model import ModelConfig
from panoptic_depthlab_ros.preprocess import prepare_image


def torch_reference(image_bgr: np.ndarray, config: ModelConfig) -> torch.Tensor:
    """Channel order, ``(x - mean) / std`` in float32, zero padding to ``size_divisibility``."""
    img = image_bgr[:, :, ::-1] if config.input_format == "RGB" else image_bgr
    x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).to(torch.float32)
    mean = torch.tensor(config.pixel_mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(config.pixel_std, dtype=torch.float32).view(3, 1, 1)
    x = (x - mean) / std
    d = max(config.size_divisibility, 1)
    h, w = x.shape[-2:]
    return F.pad(x, (0, (-w) % d, 0, (-h) % d), value=0.0)[None]


@pytest.mark.parametrize("input_format", ["RGB", "BGR"])
@pytest.mark.parametrize("divisibility", [0, 1, 32])
@pytest.mark.parametrize("size", [(37, 53), (64, 128)])
def test_cpu_preprocessing_equals_the_torch_formula(
    input_format: str, divisibility: int, size: tuple[int, int]
) -> None:
    config = ModelConfig(
        input_format=input_format,
        size_divisibility=divisibility,
        pixel_mean=(103.53, 116.28, 123.675),
        pixel_std=(57.375, 57.12, 58.395),
    )
    image = np.random.default_rng(size[0] + divisibility).integers(0, 256, (*size, 3), dtype=np.uint8)
    prep = prepare_image(image, config, device="cpu")
    ref = torch_reference(image, config)
    assert prep.tensor.dtype == torch.float32 and prep.tensor.shape == ref.shape
    assert torch.equal(prep.tensor, ref)
    assert prep.network_size == size and not prep.resized
