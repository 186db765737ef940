"""Segment depth statistics against straightforward reference implementations.

The references below are written the slow, obvious way (per-segment numpy masks),
so they can be trusted by reading them.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from panoptic_depthlab_ros.fusion import PostprocessConfig, panoptic_fusion
from panoptic_depthlab_ros.metadata import cityscapes_metadata
from panoptic_depthlab_ros.segment_stats import erode_labels, segment_depth_statistics

CLASSES = cityscapes_metadata()


def ref_stats(pan, depth, k, erosion):
    """Per segment, with numpy masks."""
    out = {}
    eroded = erode_labels(torch.from_numpy(pan), erosion).numpy()
    for sid in np.unique(pan[pan >= 0]):
        m = pan == sid
        valid = np.isfinite(depth) & (depth > 0)
        use = m & valid & eroded
        if erosion and not use.any():
            use = m & valid
        ys, xs = np.nonzero(m)
        d = np.sort(depth[use].astype(np.float64))
        rec = {"area": int(m.sum()), "bbox": (xs.min(), ys.min(), xs.max(), ys.max()), "n": len(d)}
        if len(d):
            cut = int(math.floor(len(d) * 0.1))
            uy, ux = np.nonzero(use)
            z = depth[use].astype(np.float64)
            rec.update(
                mean=d.mean(),
                median=d[(len(d) - 1) // 2],
                min=d[0],
                std=d.std(),
                robust=d[cut : len(d) - cut].mean(),
                centroid=(((ux - k[0, 2]) * z / k[0, 0]).mean(), ((uy - k[1, 2]) * z / k[1, 1]).mean(), z.mean()),
            )
        out[int(sid)] = rec
    return out


@pytest.mark.parametrize(
    "seed,erosion,holes", [(0, 0, True), (1, 0, True), (2, 1, True), (3, 2, True), (4, 0, False), (5, 2, False)]
)
def test_segment_statistics_equal_brute_force(seed: int, erosion: int, holes: bool, passes: str) -> None:
    """``holes``: some depths are invalid; without, every depth is valid (the network's case: no masks)."""
    rng = np.random.default_rng(seed)
    h, w = 60, 80
    # Blocky random segments (some stuff, some things), some void.
    coarse = rng.choice([-1, 0, 2000, 8000, 13001, 13002, 11001, 18001], size=(h // 4, w // 4))
    pan = np.kron(coarse, np.ones((4, 4), dtype=np.int64)).astype(np.int32)
    pan[rng.random((h, w)) < 0.03] = 13002  # scattered pixels: erosion wipes that segment's interior
    depth = rng.uniform(1, 70, (h, w)).astype(np.float32)
    if holes:
        depth[rng.random((h, w)) < 0.1] = np.nan
        depth[rng.random((h, w)) < 0.02] = 0.0
    k = np.array([[100.0, 0, 40.0], [0, 110.0, 30.0], [0, 0, 1]])
    segs = segment_depth_statistics(
        torch.from_numpy(pan),
        torch.from_numpy(depth),
        classes=CLASSES,
        config=PostprocessConfig(depth_erosion_px=erosion),
        camera_k=k,
    )
    ref = ref_stats(pan, depth, k, erosion)
    assert [s.id for s in segs] == sorted(ref)
    for s in segs:
        r = ref[s.id]
        assert s.category_id == s.id // 1000 and s.label == CLASSES.names[s.category_id]
        assert s.is_thing == (s.category_id in CLASSES.thing_ids)
        assert (s.area, (s.x_min, s.y_min, s.x_max, s.y_max), s.depth_valid_pixels) == (r["area"], r["bbox"], r["n"])
        for name in ("mean", "median", "min", "std", "robust"):
            assert getattr(s, f"depth_{name}") == pytest.approx(r[name], rel=1e-6, abs=1e-6), name
        assert s.centroid == pytest.approx(r["centroid"], rel=1e-6, abs=1e-6)


def test_segment_statistics_without_valid_depth_or_camera_are_nan(passes: str) -> None:
    pan = np.zeros((4, 4), np.int32)
    pan[:2] = 13001
    depth = np.full((4, 4), np.nan, np.float32)
    depth[2:] = 5.0
    segs = segment_depth_statistics(
        torch.from_numpy(pan), torch.from_numpy(depth), classes=CLASSES, config=PostprocessConfig()
    )
    road, car = segs
    assert road.depth_valid_pixels == 8 and road.depth_mean == 5.0 and road.depth_std == 0.0
    assert all(math.isnan(v) for v in road.centroid)
    assert car.depth_valid_pixels == 0
    assert all(math.isnan(getattr(car, f"depth_{n}")) for n in ("mean", "median", "min", "std", "robust"))
    assert math.isnan(car.score)  # no logits given


def test_erosion_shrinks_by_radius_but_not_at_image_border() -> None:
    lab = torch.zeros(9, 9, dtype=torch.int64)
    lab[2:7, 2:7] = 5
    er = erode_labels(lab, 1)
    assert er[3:6, 3:6].all() and not er[2, 2:7].any()
    assert not er[1, 1:8].any()  # background next to the square erodes too
    assert er[0, :].all() and er[1, 0]  # the image border is not a boundary


@pytest.mark.parametrize("seed,trim", [(0, 0.0), (1, 0.1), (2, 0.3), (3, 0.49)])
@pytest.mark.parametrize("large", [False, True])
def test_order_statistics_with_ties_wide_range_and_tiny_segments(
    seed: int, trim: float, passes: str, large: bool
) -> None:
    # Depth buckets are runs of float bits: repeated values, a range wide enough to need
    # coarse buckets, constant segments and single-pixel segments all stay exact; large
    # segments (tens of thousands of depths) take the compiled pass's histogram selection.
    rng = np.random.default_rng(seed)
    h, w = (192, 256) if large else (48, 64)
    labels = [0, 2000, 13001] if large else [0, 2000, 8000, 13001, 13002, 11001, 11002]
    pan = rng.choice(labels, size=(h, w)).astype(np.int32)
    pan[:8, :8] = 10000  # constant depth below
    pan[40, 60] = 12001  # single pixel
    depth = np.exp(rng.uniform(-7, 9, (h, w))).astype(np.float32)  # ~1e-3 .. 8e3 m
    tie = rng.random((h, w)) < 0.3
    depth[tie] = np.maximum(np.round(depth[tie]), 1.0)  # many equal values
    depth[:8, :8] = 80.0
    if large:
        depth[:, 100:180] = 150.0  # a saturated band: one bucket with thousands of equal depths
    k = np.array([[50.0, 0, 32.0], [0, 50.0, 24.0], [0, 0, 1]])
    segs = segment_depth_statistics(
        torch.from_numpy(pan),
        torch.from_numpy(depth),
        classes=CLASSES,
        config=PostprocessConfig(robust_trim=trim),
        camera_k=k,
    )
    for s in segs:
        d = np.sort(depth[pan == s.id].astype(np.float64))
        cut = int(math.floor(len(d) * trim))
        assert s.depth_valid_pixels == len(d)
        assert s.depth_min == d[0] and s.depth_median == d[(len(d) - 1) // 2]
        assert s.depth_robust == pytest.approx(d[cut : len(d) - cut].mean(), rel=1e-9)
        assert s.depth_mean == pytest.approx(d.mean(), rel=1e-9)


def test_erosion_equals_max_pool_reference() -> None:
    g = torch.Generator().manual_seed(6)
    labels = torch.randint(-1, 4, (30, 40), generator=g) * 1000
    labels = torch.repeat_interleave(torch.repeat_interleave(labels[::3, ::4], 3, 0), 4, 1)
    for radius in (1, 2, 3):
        x = labels.double()[None, None]
        pad = (radius,) * 4
        hi = torch.nn.functional.max_pool2d(torch.nn.functional.pad(x, pad, value=-math.inf), 2 * radius + 1, 1)
        lo = -torch.nn.functional.max_pool2d(torch.nn.functional.pad(-x, pad, value=-math.inf), 2 * radius + 1, 1)
        assert torch.equal(erode_labels(labels, radius), (hi == lo)[0, 0] & (labels >= 0))


def test_statistics_with_many_segments_and_huge_ids(monkeypatch: pytest.MonkeyPatch, passes: str) -> None:
    # More segments than histogram bins (each bucket then spans a whole segment), ids
    # too large for the id lookup table, and the scatter path for the bounding boxes.
    import panoptic_depthlab_ros.segment_stats as pp

    monkeypatch.setattr(pp, "_HIST_BINS", 64)
    monkeypatch.setattr(pp, "_LINE_TABLE_LIMIT", 64)
    rng = np.random.default_rng(7)
    h, w = 30, 40
    classes = type(CLASSES)(
        names=CLASSES.names, colors=CLASSES.colors, thing_ids=CLASSES.thing_ids, label_divisor=1 << 20
    )
    pan = (rng.integers(11, 19, (h, w)) << 20) + np.arange(h * w).reshape(h, w)  # ~1200 ids >= 2**22
    pan[:4] = -1
    depth = rng.uniform(1, 70, (h, w)).astype(np.float32)
    k = np.array([[40.0, 0, 20.0], [0, 40.0, 15.0], [0, 0, 1]])
    segs = segment_depth_statistics(
        torch.from_numpy(pan.astype(np.int32)),
        torch.from_numpy(depth),
        classes=classes,
        config=PostprocessConfig(),
        camera_k=k,
    )
    ref = ref_stats(pan, depth, k, 0)
    assert [s.id for s in segs] == sorted(ref)
    for s in segs:
        r = ref[s.id]
        assert (s.area, (s.x_min, s.y_min, s.x_max, s.y_max), s.depth_valid_pixels) == (r["area"], r["bbox"], r["n"])
        assert (s.depth_min, s.depth_median) == (r["min"], r["median"])
        assert s.depth_robust == pytest.approx(r["robust"], rel=1e-9)


def test_the_gpu_class_probability_agrees_with_the_cpu_in_chunks(monkeypatch) -> None:
    """The GPU formula (logsumexp per pixel, float32 per chunk, chunks in float64), run here on
    the CPU over chunks that cut the image mid-row, against the CPU's exact sums."""
    from panoptic_depthlab_ros import segment_stats

    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(19, 40 * 64, generator=gen) * 8
    logits[:, 5] = 200.0  # huge logits: the CPU takes its logsumexp branch, the GPU always does
    seg = torch.randint(0, 7, (40 * 64,), generator=gen, dtype=torch.int32)
    segment_class = torch.randint(0, 19, (8,), generator=gen)
    monkeypatch.setattr(segment_stats, "_GPU_CHUNK", 1000)
    cpu = segment_stats._class_probability(logits[:, 64:].view(19, 39, 64), seg[64:].view(39, 64), segment_class, None)
    gpu = segment_stats._class_probability_gpu(logits[:, 64:], seg[64:], segment_class)
    assert gpu.dtype == torch.float64 and gpu[7] == 0  # the void slot gets nothing here
    torch.testing.assert_close(gpu, cpu, rtol=1e-6, atol=1e-9)


def scene(seed: int, h: int = 48, w: int = 80) -> dict[str, torch.Tensor]:
    """Network outputs with stuff bands, two cars on a center each, a rider inside one car."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(19, h, w, generator=g) * 2
    logits[10, : h // 4] += 5  # sky
    logits[0, h // 2 :] += 5  # road
    logits[13, 10:30, 5:35] += 7
    logits[13, 12:32, 45:75] += 7
    logits[12, 15:22, 10:18] += 10  # a rider inside the first car
    center = torch.zeros(1, h, w)
    center[0, 20, 20], center[0, 22, 60] = 0.8, 0.6
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    left = xx < 40
    offset = torch.stack((torch.where(left, 20 - yy, 22 - yy), torch.where(left, 20 - xx, 60 - xx))).float()
    depth = torch.rand(h, w, generator=g) * 50 + 1
    return {"sem_seg": logits, "center": center, "offset": offset, "depth": depth}


def test_scores_equal_the_mean_class_probability_times_the_center(passes: str) -> None:
    out = scene(0)
    config = PostprocessConfig(stuff_area=10)
    fused = panoptic_fusion(out["sem_seg"], out["center"], out["offset"], classes=CLASSES, config=config)
    segs = segment_depth_statistics(
        fused.panoptic,
        out["depth"],
        classes=CLASSES,
        config=config,
        sem_logits=out["sem_seg"],
        center=out["center"],
        segments=fused.segments,
        class_probability=fused.class_probability,
    )
    prob = torch.softmax(out["sem_seg"].double(), 0)
    pan = fused.panoptic
    assert {s.id for s in segs} >= {13001, 13002}
    for s in segs:
        mask = pan == s.id
        score = float(prob[s.category_id][mask].mean())
        if s.is_thing:
            ys, xs = torch.nonzero(mask, as_tuple=True)
            score *= float(out["center"][0, int(ys.double().mean()), int(xs.double().mean())])
        assert s.score == pytest.approx(score, rel=1e-6), s.id


def test_what_the_fusion_hands_over_changes_no_statistic(passes: str) -> None:
    """Segments and class probabilities from the fusion, or computed here from the map and the logits."""
    for seed in range(3):
        out = scene(seed)
        config = PostprocessConfig(stuff_area=10, depth_erosion_px=seed)
        fused = panoptic_fusion(out["sem_seg"], out["center"], out["offset"], classes=CLASSES, config=config)
        kwargs = {"classes": CLASSES, "config": config, "sem_logits": out["sem_seg"], "center": out["center"]}
        kwargs["camera_k"] = np.array([[60.0, 0, 40.0], [0, 60.0, 24.0], [0, 0, 1]])
        handed = segment_depth_statistics(
            fused.panoptic,
            out["depth"],
            segments=fused.segments,
            class_probability=fused.class_probability,
            **kwargs,
        )
        alone = segment_depth_statistics(fused.panoptic, out["depth"], **kwargs)
        assert len(handed) == len(alone) > 3
        for a, b in zip(handed, alone, strict=True):
            assert a.score == pytest.approx(b.score, rel=1e-6)
            assert vars(a) | {"score": 0.0} == vars(b) | {"score": 0.0}
