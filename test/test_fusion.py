"""Panoptic fusion against straightforward reference implementations.

The references below are written the slow, obvious way (Detectron2's dense
distance matrix and per-instance loops), so they can be trusted by reading them.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from panoptic_depthlab_ros import fusion, native
from panoptic_depthlab_ros.fusion import (
    PostprocessConfig,
    _group_pixels,
    _merge_semantic_and_instance,
    find_instance_centers,
    panoptic_fusion,
)
from panoptic_depthlab_ros.metadata import cityscapes_metadata

CLASSES = cityscapes_metadata()


@pytest.fixture(params=["cells", "dense", "compiled"])
def grouping(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a grouping test through the cell pruning, the all-pairs comparison and the compiled pass."""
    if request.param == "compiled":
        assert native.LIBRARY is not None, native.UNAVAILABLE
        monkeypatch.setattr(fusion, "_COMPILED_CENTERS", 1 << 20)
    else:
        monkeypatch.setattr(native, "LIBRARY", None)
        monkeypatch.setattr(fusion, "_DENSE_PAIRS", 0 if request.param == "cells" else 1 << 40)
    return str(request.param)


def ref_group(centers: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Detectron2's grouping: a [K, H*W] distance tensor and argmin."""
    h, w = offset.shape[1:]
    yy, xx = torch.meshgrid(torch.arange(h, dtype=offset.dtype), torch.arange(w, dtype=offset.dtype), indexing="ij")
    loc = (torch.stack((yy, xx)) + offset).flatten(1).T[None]  # [1, HW, 2]
    dist = torch.norm(centers[:, None, :].to(offset.dtype) - loc, dim=-1)
    return (dist.argmin(0).reshape(h, w) + 1) * mask


def ref_merge(sem, ins, thing_ids, div, stuff_area, thing_area=0):
    """Detectron2's merge loop (plus ``thing_area``: smaller instances stay void)."""
    pan = torch.full_like(sem, -1)
    thing_seg = torch.zeros_like(sem)
    for t in thing_ids:
        thing_seg[sem == t] = 1
    is_thing = (ins > 0) & (thing_seg > 0)
    tracker: Counter = Counter()
    for i in torch.unique(ins):
        if i == 0:
            continue
        m = (ins == i) & is_thing
        if m.sum() == 0 or m.sum() < thing_area:
            continue
        c, _ = torch.mode(sem[m].view(-1))
        tracker[int(c)] += 1
        pan[m] = c * div + tracker[int(c)]
    for c in torch.unique(sem):
        if int(c) in thing_ids:
            continue
        m = (sem == c) & (ins == 0)
        if m.sum() >= stuff_area:
            pan[m] = c * div
    return pan


def test_centers_threshold_nms_plateau_and_topk() -> None:
    heat = torch.zeros(1, 20, 20)
    heat[0, 2, 2] = 0.9
    heat[0, 2, 4] = 0.5  # within 7x7 of the 0.9 peak: suppressed
    heat[0, 15, 15] = heat[0, 15, 16] = 0.4  # plateau: both kept
    heat[0, 10, 2] = 0.1  # not above the threshold
    centers = find_instance_centers(heat, threshold=0.1, nms_kernel=7, top_k=200)
    assert centers.tolist() == [[2, 2], [15, 15], [15, 16]]
    # top_k=2: keep scores strictly above max(2nd best, 0) = 0.4 -> only the 0.9 peak.
    assert find_instance_centers(heat, threshold=0.1, nms_kernel=7, top_k=2).tolist() == [[2, 2]]


@pytest.mark.parametrize("seed,num_centers", [(0, 3), (1, 40), (2, 199)])
def test_group_pixels_equals_dense_argmin(seed: int, num_centers: int, grouping: str) -> None:
    g = torch.Generator().manual_seed(seed)
    h, w = 96, 160
    centers = torch.stack(
        (torch.randint(0, h, (num_centers,), generator=g), torch.randint(0, w, (num_centers,), generator=g)), 1
    )
    offset = torch.randn(2, h, w, generator=g) * 25
    mask = torch.rand(h, w, generator=g) < 0.7
    ours = _group_pixels(centers, offset, mask)
    ref = ref_group(centers, offset, mask)
    # Only exact distance ties may differ (none expected with random float offsets).
    assert torch.equal(ours, ref)


def test_group_pixels_tie_goes_to_lowest_index(grouping: str) -> None:
    centers = torch.tensor([[0, 4], [0, 0]])
    offset = torch.zeros(2, 1, 5)
    ours = _group_pixels(centers, offset, torch.ones(1, 5, dtype=torch.bool))
    # x=2 is equidistant from both: Detectron2's argmin takes center 0 -> id 1.
    assert ours.tolist() == [[2, 2, 1, 1, 1]]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_merge_equals_detectron2_loop(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    h, w = 64, 96
    sem = torch.randint(0, 19, (h, w), generator=g)
    sem[:32] = torch.randint(11, 19, (32, w), generator=g)  # many thing pixels
    sem[40:, :50] = 0  # one large stuff region
    thing = torch.isin(sem, torch.tensor(CLASSES.thing_ids))
    ins = torch.randint(1, 9, (h, w), generator=g) * thing
    ours = _merge_semantic_and_instance(
        sem, ins, thing_ids=CLASSES.thing_ids, num_classes=19, label_divisor=1000, stuff_area=100
    )
    ref = ref_merge(sem, ins, CLASSES.thing_ids, 1000, 100)
    assert torch.equal(ours.long(), ref)
    assert (ours[40:, :50] == 0).all()  # the large road region is kept as stuff id 0


def test_thing_area_voids_small_instances_and_numbers_the_rest() -> None:
    g = torch.Generator().manual_seed(3)
    h, w = 48, 64
    sem = torch.randint(11, 19, (h, w), generator=g)
    sem[32:] = 0
    ins = torch.zeros(h, w, dtype=torch.long)
    sizes = {}
    for i, (y, x, side) in enumerate([(0, 0, 2), (0, 10, 3), (0, 20, 4), (8, 0, 6), (8, 20, 10), (20, 40, 12)], 1):
        ins[y : y + side, x : x + side] = i
        sizes[i] = side * side
    kwargs = {"thing_ids": CLASSES.thing_ids, "num_classes": 19, "label_divisor": 1000, "stuff_area": 10}
    for thing_area in (0, 9, 16, 17, 200):
        ours = _merge_semantic_and_instance(sem, ins, thing_area=thing_area, **kwargs)
        assert torch.equal(ours.long(), ref_merge(sem, ins, CLASSES.thing_ids, 1000, 10, thing_area)), thing_area
        kept = {i for i, a in sizes.items() if a >= thing_area}
        assert all((ours[ins == i] >= 11000).all() == (i in kept) for i in sizes), thing_area
    # through the whole fusion: a 4-pixel car and a 36-pixel car, one center each
    logits = torch.zeros(19, 20, 20)
    logits[0] = 1.0
    logits[13, 2:4, 2:4] = logits[13, 10:16, 10:16] = 5.0
    center = torch.zeros(1, 20, 20)
    center[0, 2, 2] = center[0, 12, 12] = 0.9
    offset = torch.zeros(2, 20, 20)
    config = PostprocessConfig(stuff_area=10, thing_area=5)
    out = panoptic_fusion(logits, center, offset, classes=CLASSES, config=config)
    assert (out.panoptic[2:4, 2:4] == -1).all() and (out.panoptic[10:16, 10:16] == 13001).all()
    with pytest.raises(ValueError, match="thing_area"):
        PostprocessConfig(thing_area=-1)


def test_fusion_without_centers_leaves_things_void() -> None:
    logits = torch.zeros(19, 8, 8)
    logits[13, :4] = 5.0  # car on top half
    logits[0, 4:] = 5.0  # road below
    out = panoptic_fusion(
        logits, torch.zeros(1, 8, 8), torch.zeros(2, 8, 8), classes=CLASSES, config=PostprocessConfig(stuff_area=10)
    )
    assert out.centers.shape == (0, 2)
    assert (out.panoptic[:4] == -1).all() and (out.panoptic[4:] == 0).all()


# --- The fast paths: each is checked against the slow, obvious computation.


def ref_centers(heat: torch.Tensor, threshold: float, nms_kernel: int, top_k: int | None) -> torch.Tensor:
    """Detectron2's find_instance_center: threshold to -1, max-pool NMS, top-k."""
    heat = torch.nn.functional.threshold(heat, threshold, -1.0)
    pooled = torch.nn.functional.max_pool2d(heat[None], nms_kernel, stride=1, padding=nms_kernel // 2)[0]
    heat = torch.where(heat == pooled, heat, torch.full_like(heat, -1.0))[0]
    if top_k is None:
        return torch.nonzero(heat > 0)
    kth = torch.topk(heat.flatten(), min(top_k, heat.numel())).values[-1].clamp(min=0)
    return torch.nonzero(heat > kth)


@pytest.mark.parametrize("seed", range(4))
def test_centers_equal_detectron2_on_random_heatmaps(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    heat = torch.rand(1, 37, 53, generator=g)
    if seed % 2:
        heat = (heat * 4).round() / 4  # plateaus and exact ties
    heat[0, 5, 5] = float("nan")
    for threshold in (-0.5, 0.0, 0.3):
        for kernel in (1, 3, 7, 9):
            for top_k in (None, 1, 3, 200):
                ours = find_instance_centers(heat, threshold=threshold, nms_kernel=kernel, top_k=top_k)
                assert torch.equal(ours, ref_centers(heat, threshold, kernel, top_k)), (threshold, kernel, top_k)


def test_semantic_is_torch_argmax_with_ties_and_nan(passes: str) -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(19, 40, 70, generator=g)
    logits[4, :3] = logits[9, :3] = 50.0  # ties: the lower class wins
    logits[2, 10, 10] = logits[7, 10, 10] = float("nan")  # NaN counts as the maximum (first NaN)
    logits[:, 11, 11] = float("nan")
    out = panoptic_fusion(
        logits, torch.zeros(1, 40, 70), torch.zeros(2, 40, 70), classes=CLASSES, config=PostprocessConfig(stuff_area=10)
    )
    assert out.semantic.dtype == torch.uint8 and torch.equal(out.semantic.long(), logits.argmax(0))


def test_group_pixels_non_finite_location_goes_to_center_0(grouping: str) -> None:
    # Detectron2's distance from a NaN/inf location is NaN/inf for every center; argmin -> 0.
    g = torch.Generator().manual_seed(3)
    centers = torch.tensor([[10, 10], [30, 40], [5, 60]])
    offset = torch.randn(2, 40, 64, generator=g) * 10
    offset[0, 3, 4] = float("nan")
    offset[1, 20, 30] = float("inf")
    offset[0, 21, 30] = -float("inf")
    mask = torch.ones(40, 64, dtype=torch.bool)
    ours = _group_pixels(centers, offset, mask)
    assert ours[3, 4] == 1 and ours[20, 30] == 1 and ours[21, 30] == 1
    assert torch.equal(ours, ref_group(centers, offset, mask))


def test_group_pixels_does_not_depend_on_the_cell_size(grouping: str) -> None:
    g = torch.Generator().manual_seed(4)
    centers = torch.stack((torch.randint(0, 60, (80,), generator=g), torch.randint(0, 90, (80,), generator=g)), 1)
    offset = (torch.randn(2, 60, 90, generator=g) * 30).round()  # integer locations: many exact ties
    mask = torch.rand(60, 90, generator=g) < 0.8
    ref = ref_group(centers, offset, mask)
    for cell in (1, 2, 8, 32, 1000):
        assert torch.equal(_group_pixels(centers, offset, mask, cell=cell), ref), cell


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int32, torch.int64])
def test_counting_by_index_add_is_bincount(dtype) -> None:
    """The GPU's sync-free count (run here on the CPU) gives bincount's counts."""
    from panoptic_depthlab_ros.kernels import count_by_index_add, count_values

    values = torch.randint(0, 19, (5000,), generator=torch.Generator().manual_seed(1)).to(dtype)
    expected = torch.bincount(values, minlength=25)
    got = count_by_index_add(values, 25)
    assert got.dtype == torch.int64 and torch.equal(got, expected)
    assert torch.equal(count_values(values, 25), expected)
    assert torch.equal(count_by_index_add(values[:0], 3), torch.zeros(3, dtype=torch.int64))


def test_fusion_gives_the_segments_and_class_probability_of_its_map(passes: str) -> None:
    """What the fusion hands to the segment statistics equals what they would compute from the map."""
    from panoptic_depthlab_ros.segment_stats import _segment_index

    g = torch.Generator().manual_seed(8)
    h, w = 60, 90
    logits = torch.randn(19, h, w, generator=g) * 2
    logits[13, 10:40, 10:50] += 6  # a car ...
    logits[12, 20:30, 20:30] += 9  # ... with a rider on it: the rider's pixels join the car's instance
    logits[0, 45:] += 6  # road
    center = torch.zeros(1, h, w)
    center[0, 25, 30] = 0.9
    offset = torch.zeros(2, h, w)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    offset[0], offset[1] = 25 - yy, 30 - xx  # every pixel points at the one center
    out = panoptic_fusion(logits, center, offset, classes=CLASSES, config=PostprocessConfig(stuff_area=20))
    ids, seg = _segment_index(out.panoptic.reshape(-1))
    assert out.segments is not None and torch.equal(out.segments.ids, ids)
    assert torch.equal(out.segments.seg.reshape(-1), seg) and out.segments.seg.dtype == torch.int32
    # The probability of each pixel's segment class: the instance's class (car) on the rider's pixels.
    assert (out.panoptic[20:30, 20:30] == 13001).all() and (out.semantic[20:30, 20:30] == 12).sum() > 80
    cls = torch.where(out.panoptic >= 0, torch.div(out.panoptic, 1000, rounding_mode="floor"), out.semantic.long())
    ref = torch.softmax(logits.double(), 0).gather(0, cls[None])[0].float()
    assert out.class_probability is not None
    torch.testing.assert_close(out.class_probability, ref, rtol=1e-6, atol=1e-7)
