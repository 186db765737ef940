from __future__ import annotations

import math

import numpy as np
import pytest

from panoptic_depthlab_training.cityscapes import panoptic_from_instance_ids
from panoptic_depthlab_training.synth import SceneGenerator
from panoptic_depthlab_training.targets import PanopticTargetGenerator, gaussian_kernel, unique_inverse

ROAD, CAR, PERSON, CROWD, VOID = 0, 13001, 11001, 13000, -1
THINGS = (11, 12, 13, 14, 15, 16, 17, 18)


def tiny_case():
    """6x8 map: road stuff, a car (6 px), a person (3 px), a car crowd region, one void px."""
    pan = np.full((6, 8), ROAD, np.int32)
    pan[1:3, 1:4] = CAR  # rows 1-2, cols 1-3: center (1.5, 2.0)
    pan[3:6, 6] = PERSON  # rows 3-5, col 6:     center (4.0, 6.0)
    pan[4:6, 0:2] = CROWD  # rows 4-5, cols 0-1:  center (4.5, 0.5)
    pan[0, 7] = VOID
    segments = [
        {"id": ROAD, "category_id": 0, "iscrowd": 0},
        {"id": CAR, "category_id": 13, "iscrowd": 0},
        {"id": PERSON, "category_id": 11, "iscrowd": 0},
        {"id": CROWD, "category_id": 13, "iscrowd": 1},
    ]
    return pan, segments


def test_gaussian_kernel_shape_and_peak():
    g = gaussian_kernel(8)
    assert g.shape == (51, 51)  # 6 sigma + 3
    assert g[25, 25] == 1.0 and g.max() == 1.0
    assert g[25, 33] == pytest.approx(math.exp(-0.5))  # one sigma away


def test_tiny_hand_built_targets():
    pan, segments = tiny_case()
    gen = PanopticTargetGenerator(THINGS, sigma=1, small_instance_area=5, small_instance_weight=3)
    t = gen(pan, segments)

    sem = np.zeros((6, 8), np.int64)
    sem[1:3, 1:4] = 13
    sem[3:6, 6] = 11
    sem[4:6, 0:2] = 13  # crowd keeps its class (ignore_crowd_in_semantic=False)
    sem[0, 7] = 255
    np.testing.assert_array_equal(t["sem_seg"], sem)

    # peaks (value 1) at the rounded centers: car round(1.5)=2 (half to even), round(2.0)=2;
    # person (4, 6); crowd round(4.5)=4, round(0.5)=0 -- Detectron2 keeps crowd centers
    center = t["center"][0]
    assert center[2, 2] == 1.0 and center[4, 6] == 1.0 and center[4, 0] == 1.0
    # (1, 2) is one pixel from the car peak: exp(-1/2); the others add less (max-combined)
    assert center[1, 2] == pytest.approx(math.exp(-0.5))
    # (0, 5): car peak (2,2) at d^2 = 4 + 9 = 13, person peak (4,6) at d^2 = 16 + 1 = 17
    # (both within the 3 sigma + 1 = 4 px half window); the max is the car's exp(-13/2)
    assert center[0, 5] == pytest.approx(math.exp(-6.5))
    # (0, 0) is 2 rows / 2 cols from the car peak: exp(-8/2); crowd (4,0) is 4 rows away:
    # exp(-16/2) < exp(-4)
    assert center[0, 0] == pytest.approx(math.exp(-4.0))
    assert t["center"].shape == (1, 6, 8)

    # offsets = center - pixel, (dy, dx); zero on stuff and void
    off = t["offset"]
    assert off[:, 1, 1].tolist() == [0.5, 1.0]
    assert off[:, 2, 3].tolist() == [-0.5, -1.0]
    assert off[:, 5, 6].tolist() == [-1.0, 0.0]
    assert off[:, 5, 1].tolist() == [-0.5, -0.5]  # crowd: offsets present, weight 0 below
    assert off[:, 0, 0].tolist() == [0.0, 0.0] and off[:, 0, 7].tolist() == [0.0, 0.0]

    cw = np.ones((6, 8), np.float32)
    cw[4:6, 0:2] = 0  # crowd
    cw[0, 7] = 0  # void
    np.testing.assert_array_equal(t["center_weights"][0], cw)
    ow = np.zeros((6, 8), np.float32)
    ow[1:3, 1:4] = 1
    ow[3:6, 6] = 1  # things only (ignore_stuff_in_offset), crowd excluded
    np.testing.assert_array_equal(t["offset_weights"][0], ow)
    sw = np.ones((6, 8), np.float32)
    sw[3:6, 6] = 3  # person area 3 < 5; car area 6 is not small
    sw[4:6, 0:2] = 3  # crowd thing area 4 < 5 (as Detectron2)
    np.testing.assert_array_equal(t["sem_seg_weights"], sw)
    assert t["center_points"] == [(4.0, 6.0), (4.5, 0.5), (1.5, 2.0)]  # sorted by id


def test_options_ignore_crowd_and_keep_stuff_offsets():
    pan, segments = tiny_case()
    gen = PanopticTargetGenerator(THINGS, sigma=1, ignore_stuff_in_offset=False, ignore_crowd_in_semantic=True)
    t = gen(pan, segments)
    assert (t["sem_seg"][4:6, 0:2] == 255).all()
    assert t["offset_weights"][0, 0, 0] == 1 and t["offset_weights"][0, 5, 1] == 0


def _detectron2_style_reference(pan, segments, thing_ids, sigma, small_area, small_weight):
    """Per-segment full-image masks, as the reference implementation loops."""
    h, w = pan.shape
    sem = np.full((h, w), 255, np.int64)
    center = np.zeros((h, w), np.float32)
    offset = np.zeros((2, h, w), np.float32)
    yy, xx = np.mgrid[0:h, 0:w]
    sw = np.ones((h, w), np.float32)
    cw = np.zeros((h, w), np.float32)
    ow = np.zeros((h, w), np.float32)
    g = gaussian_kernel(sigma)
    for seg in segments:
        mask = pan == seg["id"]
        sem[mask] = seg["category_id"]
        if not seg["iscrowd"]:
            cw[mask] = 1
            if seg["category_id"] in thing_ids:
                ow[mask] = 1
        if seg["category_id"] in thing_ids and mask.any():
            if mask.sum() < small_area:
                sw[mask] = small_weight
            cy, cx = yy[mask].mean(), xx[mask].mean()
            y, x = int(round(cy)), int(round(cx))
            for gy in range(g.shape[0]):
                for gx in range(g.shape[1]):
                    py, px = y - 3 * sigma - 1 + gy, x - 3 * sigma - 1 + gx
                    if 0 <= py < h and 0 <= px < w:
                        center[py, px] = max(center[py, px], g[gy, gx])
            offset[0][mask] = cy - yy[mask]
            offset[1][mask] = cx - xx[mask]
    return sem, center, offset, sw, cw, ow


def test_matches_reference_on_a_synthetic_frame():
    gen = SceneGenerator(48, 96)
    frame = gen.render(gen.make_scene(np.random.default_rng(2)))
    pan, segments = panoptic_from_instance_ids(frame.instance_ids)
    n_things = sum(s["is_thing"] for s in segments)
    assert n_things >= 3
    t = PanopticTargetGenerator(THINGS, sigma=3, small_instance_area=40)(pan, segments)
    sem, center, offset, sw, cw, ow = _detectron2_style_reference(pan, segments, THINGS, 3, 40, 3)
    np.testing.assert_array_equal(t["sem_seg"], sem)
    np.testing.assert_allclose(t["center"][0], center, atol=1e-7)
    np.testing.assert_allclose(t["offset"], offset, atol=1e-4)
    np.testing.assert_array_equal(t["sem_seg_weights"], sw)
    np.testing.assert_array_equal(t["center_weights"][0], cw)
    np.testing.assert_array_equal(t["offset_weights"][0], ow)
    assert len(t["center_points"]) == n_things


def test_rejects_non_2d_panoptic():
    with pytest.raises(ValueError, match="shape"):
        PanopticTargetGenerator(THINGS)(np.zeros((1, 4, 4), np.int32), [])


@pytest.mark.parametrize(
    "ids",
    [
        np.array([[26001, 7, 7], [24000, 26001, 33999]], np.int64),  # count-table path
        np.array([[-1, 7], [11000, -1]], np.int32),  # negative ids: np.unique path
        np.array([[1 << 23, 5]], np.int64),  # beyond the table's size: np.unique path
    ],
)
def test_unique_inverse_matches_numpy(ids):
    unique, inverse = unique_inverse(ids)
    ref_unique, ref_inverse = np.unique(ids, return_inverse=True)
    np.testing.assert_array_equal(unique, ref_unique)
    np.testing.assert_array_equal(inverse, ref_inverse.reshape(ids.shape))
    assert inverse.shape == ids.shape
