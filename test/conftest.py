"""Shared fixtures: an isolated real-rclpy context per test, tiny checkpoints, both post-processing paths.

Every test gets its own ROS domain (offset by the process id so parallel runs on
one machine do not hear each other) and localhost-only discovery.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pdl_testing import next_domain_id, write_tiny_checkpoint


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
    """A tiny random-weight model in our checkpoint format (see :func:`pdl_testing.write_tiny_checkpoint`)."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


@pytest.fixture(scope="session")
def converted_checkpoint(tmp_path_factory) -> Path:
    """Detectron2's tiny fixture model converted as ``panoptic-depthlab convert`` does: Detectron2's
    4x8 pooling window (its 64x128 crop), no padding, and a depth branch that was never trained."""
    from panoptic_depthlab_ros.checkpoint import convert_detectron2
    from pdl_testing import FIXTURES

    path = tmp_path_factory.mktemp("converted") / "tiny_converted.safetensors"
    convert_detectron2(FIXTURES / "tiny_model.pkl", FIXTURES / "tiny_config.yaml", path)
    return path


@pytest.fixture(params=["compiled", "torch"])
def passes(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the post-processing's per-pixel passes compiled (native.py) or as torch ops: both paths give the results."""
    from panoptic_depthlab_ros import native  # noqa: PLC0415

    if request.param == "compiled":
        assert native.LIBRARY is not None, f"the compiled post-processing is missing: {native.UNAVAILABLE}"
    else:
        monkeypatch.setattr(native, "LIBRARY", None)
    return str(request.param)
