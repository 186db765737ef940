"""Shared fixtures: one small synthetic Cityscapes tree per test session."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# The bad-input corpus generators live with the core's tests (test/bad_inputs.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "test"))

from panoptic_depthlab_training.synth import generate_dataset


@dataclass(frozen=True)
class SynthSpec:
    """How :func:`synth_root` was generated."""

    seed: int = 7
    size: tuple[int, int] = (64, 128)
    counts: dict[str, int] = field(default_factory=lambda: {"train": 3, "val": 2})


@pytest.fixture(scope="session")
def synth_spec() -> SynthSpec:
    return SynthSpec()


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory, synth_spec: SynthSpec) -> Path:
    """A read-only synthetic dataset (3 train + 2 val frames, 64x128)."""
    root = tmp_path_factory.mktemp("synth") / "cityscapes"
    generate_dataset(
        root,
        train=synth_spec.counts["train"],
        val=synth_spec.counts["val"],
        seed=synth_spec.seed,
        height=synth_spec.size[0],
        width=synth_spec.size[1],
        progress=False,
    )
    return root


@pytest.fixture
def synth_copy(synth_root: Path, tmp_path: Path) -> Path:
    """A private, modifiable copy of :func:`synth_root`."""
    dst = tmp_path / "cityscapes"
    shutil.copytree(synth_root, dst)
    return dst


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The core tests' tiny random-weight model (test/pdl_testing.py): fast, any input size."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "test"))
    from pdl_testing import write_tiny_checkpoint  # noqa: PLC0415

    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One intra-op torch thread: on two shared cores, OpenMP threads that spin while other
    processes hold a core cost far more than they gain (measured 2-3x slower)."""
    import torch  # noqa: PLC0415

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
