"""Shared fixtures: an isolated real-rclpy context per test.

Every test gets its own ROS domain (offset by the process id so parallel runs on
one machine do not hear each other) and localhost-only discovery.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pdl_testing import next_domain_id


@pytest.fixture
def ros_context() -> Iterator[object]:
    """A real rclpy context on a test-unique domain, shut down afterwards."""
    import rclpy  # only ROS tests pull this fixture; the core tests run without ROS

    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=next_domain_id())
    try:
        yield context
    finally:
        context.try_shutdown()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A tiny random-weight model in our checkpoint format (any input size works:
    padding to 32 and a non-strict ASPP pool)."""
    import torch

    from panoptic_depthlab_ros.checkpoint import save_checkpoint
    from panoptic_depthlab_ros.metadata import cityscapes_metadata
    from panoptic_depthlab_ros.model import ModelConfig, build_model
    from panoptic_depthlab_ros.postprocess import PostprocessConfig

    torch.manual_seed(0)
    config = ModelConfig.tiny(aspp_strict_pool_size=False, size_divisibility=32)
    model = build_model(config).eval()
    # Scale the predictors so the random model gives several classes and centers, logits
    # within +-10, offsets of a few pixels and depths of ~5-12 m (no saturated sigmoid).
    with torch.no_grad():
        model.sem_seg_head.predictor.weight.normal_(0, 0.005)
        model.ins_embed_head.center_predictor.weight.normal_(0, 0.002)
        model.ins_embed_head.center_predictor.bias.fill_(0.05)
        model.ins_embed_head.offset_predictor.weight.normal_(0, 0.003)
        model.depth_head.predictor.weight.normal_(0, 0.0003)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(
        path,
        model,
        model_config=config,
        classes=cityscapes_metadata(),
        postprocess=PostprocessConfig(stuff_area=64),
        info={"purpose": "tests"},
    )
    return path


@pytest.fixture(scope="session")
def converted_checkpoint(tmp_path_factory) -> Path:
    """Detectron2's tiny fixture model converted as ``panoptic-depthlab convert`` does: Detectron2's
    4x8 pooling window (its 64x128 crop), no padding, and a depth branch that was never trained."""
    from panoptic_depthlab_ros.checkpoint import convert_detectron2
    from pdl_testing import FIXTURES

    path = tmp_path_factory.mktemp("converted") / "tiny_converted.safetensors"
    convert_detectron2(FIXTURES / "tiny_model.pkl", FIXTURES / "tiny_config.yaml", path)
    return path
