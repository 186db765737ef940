"""The CPU lanes of the post-processing (panoptic_depthlab_ros/parallel.py) change no result."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from panoptic_depthlab_ros import fusion, kernels, parallel, segment_stats
from panoptic_depthlab_ros.fusion import PostprocessConfig, panoptic_fusion
from panoptic_depthlab_ros.metadata import cityscapes_metadata
from panoptic_depthlab_ros.segment_stats import segment_depth_statistics

CLASSES = cityscapes_metadata()


def test_results_do_not_depend_on_torch_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    # On CPU the post-processing runs its ops on one thread and spreads blocks over
    # torch.get_num_threads() lanes; the lanes must not change any result, and the
    # caller's thread setting is restored. Every job takes all the lanes here (a frame
    # this small would otherwise run on one).
    for module in (fusion, kernels, segment_stats):
        monkeypatch.setattr(module, "lanes_for", lambda pixels, lanes, **_: lanes)
    monkeypatch.setattr(kernels, "ARGMAX_BLOCK_PIXELS", 800)  # 4 rows a block: many blocks over the lanes
    g = torch.Generator().manual_seed(5)
    h, w = 120, 200
    logits = torch.randn(19, h, w, generator=g) * 3
    logits[13, 20:80, 30:120] += 8  # a car
    center = torch.zeros(1, h, w)
    center[0, 50, 75] = center[0, 30, 100] = 0.9
    offset = torch.randn(2, h, w, generator=g) * 20
    depth = torch.rand(h, w, generator=g) * 60
    k = np.array([[100.0, 0, 100], [0, 100.0, 60], [0, 0, 1]])
    config = PostprocessConfig(stuff_area=50, depth_erosion_px=1)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            fused = panoptic_fusion(logits, center, offset, classes=CLASSES, config=config)
            segs = segment_depth_statistics(
                fused.panoptic, depth, classes=CLASSES, config=config, sem_logits=logits, center=center, camera_k=k
            )
            assert torch.get_num_threads() == threads
            results.append((fused.panoptic, [tuple(vars(s).values()) for s in segs]))
    finally:
        torch.set_num_threads(before)
    for panoptic, records in results[1:]:
        assert torch.equal(panoptic, results[0][0])
        assert records == results[0][1]


def test_scratch_is_reused_and_never_shared() -> None:
    # A scratch tensor goes back to the pool after its block and comes out again for the same
    # shape and dtype; two blocks that hold one at the same time get different tensors.
    shape = (3, 5, 7)
    with parallel.scratch(shape, torch.float32) as a:
        first = a.data_ptr()
        with parallel.scratch(shape, torch.float32) as b:
            assert b.data_ptr() != first
            assert b.shape == shape and b.dtype == torch.float32
    with parallel.scratch(shape, torch.float32) as c:
        assert c.data_ptr() in (first, b.data_ptr())
    with parallel.scratch(shape, torch.float64) as d:
        assert d.dtype == torch.float64 and d.data_ptr() not in (first, b.data_ptr())


def test_scratch_pool_keeps_few_sizes() -> None:
    # Frames of ever new sizes (a folder of images) cannot grow the pool without end.
    for i in range(parallel.SCRATCH_SHAPES + 5):
        with parallel.scratch((11, 13 + i), torch.float32):
            pass
    assert len(parallel._scratch_free) <= parallel.SCRATCH_SHAPES
    assert ((11, 13 + parallel.SCRATCH_SHAPES + 4), torch.float32) in parallel._scratch_free


def test_scratch_serves_inside_and_outside_inference_mode() -> None:
    # A tensor first made inside inference mode is written in place outside it later (and the
    # other way round): the pool's tensors are normal tensors.
    shape = (2, 9, 4)
    with torch.inference_mode(), parallel.scratch(shape, torch.float32) as a:
        a.fill_(1.0)
    with parallel.scratch(shape, torch.float32) as b:
        b.fill_(2.0)
        assert not b.is_inference()
    with torch.inference_mode(), parallel.scratch(shape, torch.float32) as c:
        torch.add(c, 1.0, out=c)
