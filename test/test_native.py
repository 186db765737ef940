"""The compiled post-processing passes: built by make setup, switchable off, refused cleanly when missing.

Their results are held against torch's by the tests of the passes themselves, each run both ways
(the ``passes`` fixture): test_kernels.py, test_fusion.py, test_segment_stats.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from panoptic_depthlab_ros import native
from panoptic_depthlab_ros.fusion import PostprocessConfig, panoptic_fusion
from panoptic_depthlab_ros.kernels import argmax_channels
from panoptic_depthlab_ros.metadata import cityscapes_metadata
from pdl_testing import REPO


def test_make_setup_builds_it_and_the_switch_turns_it_off() -> None:
    assert native.LIBRARY is not None, native.UNAVAILABLE
    code = "from panoptic_depthlab_ros import native; print(native.LIBRARY is None, native.UNAVAILABLE)"
    off = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={"PANOPTIC_DEPTHLAB_NATIVE": "0", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert off.stdout.strip() == "True PANOPTIC_DEPTHLAB_NATIVE=0"


def test_a_missing_stale_or_broken_library_says_why(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(native, "FILE_NAME", "libpdl_missing.so")
    library, why = native._load()
    assert library is None
    assert why.endswith("libpdl_missing.so is not built (make setup, pip install or colcon build compile it)")
    monkeypatch.undo()
    monkeypatch.setattr(native, "INTERFACE_VERSION", 999)  # a build of older sources is refused, not called
    library, why = native._load()
    assert library is None and why.endswith("was built from other sources (interface 1, not 999): rebuild it")
    monkeypatch.undo()
    broken = Path(native.__file__).with_name(native.FOLDER) / "libpdl_broken_test.so"
    broken.write_bytes(b"not a shared library")
    try:
        monkeypatch.setattr(native, "FILE_NAME", broken.name)
        library, why = native._load()
        assert library is None and why.startswith(f"{broken} does not load: ")
    finally:
        broken.unlink()


def test_fusion_gives_one_result_either_way(monkeypatch: pytest.MonkeyPatch) -> None:
    g = torch.Generator().manual_seed(3)
    h, w = 70, 110
    logits = torch.randn(19, h, w, generator=g) * 3
    logits[13, 10:50, 20:60] += 8  # a car
    logits[11, 30:60, 70:90] += 8  # a person
    center = torch.zeros(1, h, w)
    center[0, 30, 40] = center[0, 45, 80] = 0.9
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    near_car = xx < 65
    offset = torch.stack((torch.where(near_car, 30 - yy, 45 - yy), torch.where(near_car, 40 - xx, 80 - xx))).float()
    config, classes = PostprocessConfig(stuff_area=20), cityscapes_metadata()
    compiled = panoptic_fusion(logits, center, offset, classes=classes, config=config)
    monkeypatch.setattr(native, "LIBRARY", None)
    plain = panoptic_fusion(logits, center, offset, classes=classes, config=config)
    assert torch.equal(compiled.panoptic, plain.panoptic) and torch.equal(compiled.semantic, plain.semantic)
    assert set(compiled.panoptic.unique().tolist()) >= {13001, 11001, 0}
    assert compiled.class_probability is not None and plain.class_probability is not None
    torch.testing.assert_close(compiled.class_probability, plain.class_probability, rtol=1e-6, atol=1e-7)


def test_an_empty_map_gives_empty_labels() -> None:
    labels = argmax_channels(torch.randn(19, 0, 5), lanes=2, top_probability=torch.empty(0, 5))
    assert labels.shape == (0, 5) and labels.dtype == torch.uint8


@pytest.mark.parametrize("shape", ["spread", "median_in_first", "median_in_last"])
def test_order_statistics_of_a_large_segment(shape: str) -> None:
    # 20000 depths (above the partial-sort limit): the histogram path. The median's bucket is a
    # bucket of its own, or the trimmed range's first or last one (trim 0.1: ranks 2000-17999).
    gen = torch.Generator().manual_seed(3)
    d = 1.0 + 99.0 * torch.rand(20000, generator=gen)
    if shape == "median_in_first":  # ranks 0-10999 equal: the range's start (2000) and the median (9999)
        d[:11000] = 7.25
        d[11000:] = 7.25 + d[11000:]
    elif shape == "median_in_last":  # ranks 9000-19999 equal: the median and the range's end (17999)
        d[:9000] = 1.0 + 49.0 * torch.rand(9000, generator=gen)
        d[9000:] = 99.5
    d = d[torch.randperm(d.numel(), generator=gen)].to(torch.float32).contiguous()
    seg = torch.zeros(d.numel(), dtype=torch.int32)
    sums = native.segment_sums(seg, d, None, None, n=1, height=100, width=200, trim=0.1, lanes=1)
    ordered = torch.sort(d.double()).values
    assert sums.median[0].item() == ordered[(d.numel() - 1) // 2].item()
    assert sums.trimmed[0].item() == pytest.approx(ordered[2000:18000].mean().item(), rel=1e-12)
    assert sums.minimum[0].item() == ordered[0].item()
