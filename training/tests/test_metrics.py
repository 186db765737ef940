"""Tests of panoptic_depthlab_training.metrics on hand-built scenes with derived answers.

The last tests run cityscapesscripts' own panoptic evaluation (with its multiprocessing
pool) on COCO-panoptic files written from the same random scenes and compare.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from cityscapesscripts.evaluation.evalPanopticSemanticLabeling import evaluatePanoptic
from PIL import Image

from panoptic_depthlab_ros.metadata import cityscapes_metadata
from panoptic_depthlab_training.metrics import (
    DPQ_THRESHOLDS,
    DepthErrors,
    PanopticDepthEvaluator,
    PanopticQuality,
    SemanticIoU,
    ThingsByDistance,
    depth_errors,
    dpq_void_mask,
    format_table,
    match_panoptic,
)
from panoptic_depthlab_training.predict import panoptic_categories

META = cityscapes_metadata()
ROAD, SKY, PERSON, CAR = 0, 10, 11, 13
assert [META.names[i] for i in (ROAD, SKY, PERSON, CAR)] == ["road", "sky", "person", "car"]


def pid(category: int, instance: int = 0) -> int:
    return category * META.label_divisor + instance


# --------------------------------------------------------------------------- scene A
def scene_a() -> dict[str, np.ndarray]:
    """10 x 12 street: sky rows 0-3, road rows 4-9, car and person on the road.

    GT: sky 48 px; car rows 6-9 x cols 0-3 (16 px); person rows 6-9 x cols 8-9 (8 px);
    road the remaining 72 - 24 = 48 px. GT depth valid on rows 4-9 only, 10 m everywhere.
    """
    gt = np.full((10, 12), pid(ROAD), np.int32)
    gt[:4] = pid(SKY)
    gt[6:10, 0:4] = pid(CAR, 1)
    gt[6:10, 8:10] = pid(PERSON, 1)
    gt_depth = np.full((10, 12), 10.0, np.float32)
    gt_depth[:4] = 0.0
    valid = np.zeros((10, 12), bool)
    valid[4:] = True
    return {"gt": gt, "gt_depth": gt_depth, "valid": valid}


def perturbed_a() -> tuple[np.ndarray, np.ndarray]:
    """Prediction for scene A.

    * row 3, cols 0-5 (6 px of sky) predicted road;
    * car shifted right by 3 columns: rows 6-9 x cols 3-6; its old cols 0-2 become road;
    * person exact.
    Depth: GT everywhere except person 12 m (x1.2), road row 4 13 m (x1.3), rows 0-3 100 m.
    """
    s = scene_a()
    pred = s["gt"].copy()
    pred[3, 0:6] = pid(ROAD)
    pred[6:10, 0:4] = pid(ROAD)
    pred[6:10, 3:7] = pid(CAR, 1)
    depth = s["gt_depth"].copy()
    depth[:4] = 100.0
    depth[4] = 13.0
    depth[6:10, 8:10] = 12.0
    return pred, depth


def evaluate(pairs: list[tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]]) -> dict:
    ev = PanopticDepthEvaluator(metadata=META)
    for pred, pred_depth, s in pairs:
        ev.add(pred, None, pred_depth, s["gt"], None, s["gt_depth"], s["valid"])
    return ev.summary()


EXPECTED_KEYS = {
    "PQ",
    "SQ",
    "RQ",
    "PQ_th",
    "SQ_th",
    "RQ_th",
    "PQ_st",
    "SQ_st",
    "RQ_st",
    "mIoU",
    "AbsRel",
    "SqRel",
    "RMSE",
    "RMSElog",
    "delta1",
    "delta2",
    "delta3",
    "DPQ",
    "DPQ_0.1",
    "DPQ_0.25",
    "DPQ_0.5",
    "DPQ_th",
    "DPQ_st",
    "segment_depth_mae",
    "segment_depth_absrel",
    "segment_depth_mae_th",
    "segment_depth_absrel_th",
    "segment_depth_mae_st",
    "segment_depth_absrel_st",
    "per_class",
    "by_distance",
}


def test_perfect_prediction_scores_perfectly() -> None:
    s = scene_a()
    out = evaluate([(s["gt"].copy(), s["gt_depth"].copy(), s)])
    assert set(out) == EXPECTED_KEYS
    for key in ("PQ", "SQ", "RQ", "PQ_th", "PQ_st", "mIoU", "DPQ", "DPQ_0.1", "DPQ_0.5"):
        assert out[key] == pytest.approx(100.0), key
    assert out["AbsRel"] == 0.0 and out["RMSE"] == 0.0 and out["RMSElog"] == 0.0
    assert out["delta1"] == out["delta3"] == 1.0
    assert out["segment_depth_mae"] == 0.0 and out["segment_depth_absrel"] == 0.0
    # road, car and person have GT depth; sky has none, so three pairs are scored
    assert sum(r["segment_count"] for r in out["per_class"].values()) == 3
    # classes absent from GT and prediction are undefined, not zero
    assert math.isnan(out["per_class"]["bus"]["PQ"])
    assert math.isnan(out["per_class"]["bus"]["IoU"])


def test_perturbation_hand_computed() -> None:
    s = scene_a()
    pred, depth = perturbed_a()
    out = evaluate([(pred, depth, s), (s["gt"].copy(), s["gt_depth"].copy(), s)])
    # Two images: the perturbed one, then a perfect copy (tests accumulation).
    # sky: pred 42 px inside GT 48 -> IoU 42/48 = 0.875, twice 1.0 -> iou_sum 1.875, tp 2.
    # road: pred = 48 - 12 (under the shifted car) + 12 (old car cols 0-2) + 6 (row 3) = 54;
    #   overlap 36 -> IoU 36 / (54 + 48 - 36) = 6/11 > 0.5 (tp); second image 1.0.
    # car: overlap col 3 = 4 px, IoU 4 / 28 -> fn + fp; second image tp 1.0.
    # person: exact both times.
    sky = 1.875 / 2
    road = (6 / 11 + 1) / 2
    car_pq, car_sq, car_rq = 1 / (1 + 0.5 + 0.5), 1.0, 1 / 2
    pc = out["per_class"]
    assert (pc["car"]["TP"], pc["car"]["FP"], pc["car"]["FN"]) == (1, 1, 1)
    assert pc["sky"]["PQ"] == pytest.approx(100 * sky)
    assert pc["road"]["SQ"] == pytest.approx(100 * road)
    assert pc["car"]["PQ"] == pytest.approx(100 * car_pq)
    assert out["PQ"] == pytest.approx(100 * (sky + road + 1 + car_pq) / 4)
    assert out["SQ"] == pytest.approx(100 * (sky + road + 1 + car_sq) / 4)
    assert out["RQ"] == pytest.approx(100 * (1 + 1 + 1 + car_rq) / 4)
    assert out["PQ_th"] == pytest.approx(100 * (1 + car_pq) / 2)
    assert out["RQ_th"] == pytest.approx(100 * (1 + car_rq) / 2)
    assert out["PQ_st"] == pytest.approx(100 * (sky + road) / 2)
    assert out["RQ_st"] == pytest.approx(100.0)
    # mIoU from pixels summed over both images (GT | pred | overlap):
    # sky 96 | 90 | 90 -> 90/96; road 96 | 102 | 84 -> 84/114; car 32 | 32 | 20 -> 20/44.
    assert pc["road"]["IoU"] == pytest.approx(100 * 84 / 114)
    assert out["mIoU"] == pytest.approx(100 * (90 / 96 + 84 / 114 + 20 / 44 + 1) / 4)
    # Depth of image 1 over its 72 valid px: 8 px err 2 m (x1.2), 12 px err 3 m (x1.3).
    # Image 2 is perfect; the reported value is the mean of the two per-image values.
    absrel = (8 * 0.2 + 12 * 0.3) / 72
    sqrel = (8 * 4 / 10 + 12 * 9 / 10) / 72
    rmse = math.sqrt((8 * 4 + 12 * 9) / 72)
    rmselog = math.sqrt((8 * math.log(1.2) ** 2 + 12 * math.log(1.3) ** 2) / 72)
    assert out["AbsRel"] == pytest.approx(absrel / 2)
    assert out["SqRel"] == pytest.approx(sqrel / 2)
    assert out["RMSE"] == pytest.approx(rmse / 2)
    assert out["RMSElog"] == pytest.approx(rmselog / 2)
    assert out["delta1"] == pytest.approx((60 / 72 + 1) / 2)  # 1.3 >= 1.25
    assert out["delta2"] == 1.0 and out["delta3"] == 1.0
    # DPQ, image 1 (image 2 is perfect at every λ):
    # λ=0.5: nothing voided -> image-1 counts as above.
    # λ=0.25: road row 4 (err 0.3, 12 px) voided: road pred 42, overlap 24,
    #   IoU 24 / (42 + 48 - 24) = 4/11 -> road fp + fn. Sky (no GT depth) is kept.
    # λ=0.1: also the person (err 0.2) voided entirely -> person fn only.
    road_025 = 1 / (1 + 0.5 + 0.5)  # tp 1 (IoU 1), fp 1, fn 1
    person_01 = 1 / (1 + 0.5)  # tp 1, fn 1
    assert out["DPQ_0.5"] == pytest.approx(out["PQ"])
    assert out["DPQ_0.25"] == pytest.approx(100 * (sky + road_025 + 1 + car_pq) / 4)
    assert out["DPQ_0.1"] == pytest.approx(100 * (sky + road_025 + person_01 + car_pq) / 4)
    assert out["DPQ"] == pytest.approx((out["DPQ_0.1"] + out["DPQ_0.25"] + out["DPQ_0.5"]) / 3)
    # Segment depth, matched pairs with GT depth (sky has none): image 1 road and person,
    # image 2 road, car, person (all exact).
    # road image 1: pred mean over its 54 px = (12*13 + 36*10 + 6*100)/54 = 62/3 m, GT 10 m
    #   (the 6 sky px predicted as road drag the segment depth: err 32/3 m, rel 16/15);
    # person image 1: 12 m vs 10 m -> err 2 m, rel 0.2.
    assert out["segment_depth_mae"] == pytest.approx((32 / 3 + 2) / 5)
    assert out["segment_depth_absrel"] == pytest.approx((16 / 15 + 0.2) / 5)
    assert out["segment_depth_mae_th"] == pytest.approx(2 / 3)  # person x2, car x1
    assert out["segment_depth_mae_st"] == pytest.approx(32 / 3 / 2)  # road x2
    assert pc["person"]["segment_depth_absrel"] == pytest.approx(0.2 / 2)
    assert pc["road"]["segment_count"] == 2


# --------------------------------------------------------------------------- crowd
def crowd_scene() -> tuple[np.ndarray, np.ndarray]:
    """4 x 12: car crowd cols 0-3, void cols 8-9, car rows 0-1 x cols 5-6, road elsewhere.

    Prediction:
    * car "A" cols 0-1 (8 px, all on the car crowd)     -> ignored, not FP;
    * person col 2 (4 px on the *car* crowd)            -> FP (other class's crowd);
    * car "C" col 3 (crowd) + col 4 (road): 4/8 = 0.5   -> not > 0.5, so FP;
    * car "B" = the GT car (4 px) + the void cols 8-9 (8 px): void leaves the union,
      IoU 4 / (12 + 4 - 4 - 8) = 1 -> TP;
    * road col 7, rows 2-3 x cols 5-6, cols 10-11 = 16 px inside GT road (20 px) -> IoU 0.8.
    """
    gt = np.full((4, 12), pid(ROAD), np.int32)
    gt[:, 0:4] = pid(CAR, 0)
    gt[:, 8:10] = -1
    gt[0:2, 5:7] = pid(CAR, 1)
    pred = np.full((4, 12), pid(ROAD), np.int32)
    pred[:, 0:2] = pid(CAR, 1)
    pred[:, 2] = pid(PERSON, 1)
    pred[:, 3:5] = pid(CAR, 3)
    pred[0:2, 5:7] = pid(CAR, 2)
    pred[:, 8:10] = pid(CAR, 2)
    return pred, gt


def test_crowd_and_void_handling_hand_computed() -> None:
    pred, gt = crowd_scene()
    pq = PanopticQuality(metadata=META)
    match = pq.add(pred, gt)
    assert match.gt_ids.tolist() == [pid(ROAD), pid(CAR, 1)]
    assert match.pred_ids.tolist() == [pid(ROAD), pid(CAR, 2)]
    assert match.pair_iou.tolist() == [0.8, 1.0]
    out = pq.result()
    pc = out["per_class"]
    assert (pc["car"]["TP"], pc["car"]["FP"], pc["car"]["FN"]) == (1, 1, 0)  # crowd: no FN
    assert (pc["person"]["TP"], pc["person"]["FP"], pc["person"]["FN"]) == (0, 1, 0)
    car, person, road = 1 / 1.5, 0.0, 0.8
    assert out["PQ"] == pytest.approx(100 * (car + person + road) / 3)
    assert out["SQ"] == pytest.approx(100 * (1 + 0 + 0.8) / 3)
    assert out["RQ"] == pytest.approx(100 * (car + 0 + 1) / 3)
    assert (out["PQ_th"], out["SQ_th"]) == (pytest.approx(100 / 3), pytest.approx(50.0))
    assert (out["PQ_st"], out["RQ_st"]) == (pytest.approx(80.0), pytest.approx(100.0))
    assert (out["n"], out["n_th"], out["n_st"]) == (3, 2, 1)


def test_crowd_given_as_segments_or_ids_matches_default() -> None:
    pred, gt = crowd_scene()
    default = match_panoptic(pred, gt, metadata=META)
    segments = [
        {"id": pid(ROAD), "category_id": ROAD, "iscrowd": 0},
        {"id": pid(CAR, 0), "category_id": CAR, "iscrowd": 1},
        {"id": pid(CAR, 1), "category_id": CAR, "iscrowd": 0},
    ]
    by_list = match_panoptic(pred, gt, metadata=META, gt_segments=segments)
    by_ids = match_panoptic(pred, gt, metadata=META, gt_crowd_ids={pid(CAR, 0)})
    for other in (by_list, by_ids):
        for field in ("tp", "fp", "fn", "iou"):
            np.testing.assert_array_equal(getattr(other, field), getattr(default, field))
    # Without the crowd flag the crowd region is an ordinary car: FN, and car "A" is FP.
    no_crowd = match_panoptic(pred, gt, metadata=META, gt_crowd_ids=set())
    assert (no_crowd.tp[CAR], no_crowd.fp[CAR], no_crowd.fn[CAR]) == (1, 2, 1)


def test_only_last_listed_crowd_segment_of_a_class_is_consulted() -> None:
    # cityscapesscripts keeps one crowd label per category (a dict, last one wins).
    # Split the car crowd into ids 13000 (cols 0-1) and 13500 (cols 2-3), listed in that
    # order: car "A" (on 13000) is now a false positive.
    pred, gt = crowd_scene()
    gt[:, 2:4] = pid(CAR, 500)
    segments = [
        {"id": pid(ROAD), "category_id": ROAD, "iscrowd": 0},
        {"id": pid(CAR, 0), "category_id": CAR, "iscrowd": 1},
        {"id": pid(CAR, 500), "category_id": CAR, "iscrowd": 1},
        {"id": pid(CAR, 1), "category_id": CAR, "iscrowd": 0},
    ]
    m = match_panoptic(pred, gt, metadata=META, gt_segments=segments)
    assert (m.tp[CAR], m.fp[CAR], m.fn[CAR]) == (1, 2, 0)
    m = match_panoptic(pred, gt, metadata=META, gt_segments=[segments[i] for i in (0, 2, 1, 3)])
    assert (m.tp[CAR], m.fp[CAR], m.fn[CAR]) == (1, 1, 0)


# --------------------------------------------------------------------------- DPQ
def test_dpq_error_between_quarter_and_half() -> None:
    # 8 x 8: sky rows 0-1 (no GT depth), road rows 2-7 at 10 m, person rows 4-5 x cols 3-6
    # at 20 m. Panoptic prediction is exact. Depth: person x1.3 and road row 7 x1.3
    # (error 0.3), sky predicted 5 m where GT depth is invalid.
    gt = np.full((8, 8), pid(ROAD), np.int32)
    gt[:2] = pid(SKY)
    gt[4:6, 3:7] = pid(PERSON, 1)
    gt_depth = np.full((8, 8), 10.0, np.float32)
    gt_depth[:2] = 0.0
    gt_depth[4:6, 3:7] = 20.0
    valid = gt_depth > 0
    pred_depth = gt_depth.copy()
    pred_depth[:2] = 5.0
    pred_depth[4:6, 3:7] = 26.0
    pred_depth[7] = 13.0

    assert not dpq_void_mask(pred_depth, gt_depth, valid, 0.5).any()
    for t in (0.25, 0.1):
        expected = np.zeros((8, 8), bool)
        expected[4:6, 3:7] = True
        expected[7] = True
        np.testing.assert_array_equal(dpq_void_mask(pred_depth, gt_depth, valid, t), expected)

    out = evaluate([(gt.copy(), pred_depth, {"gt": gt, "gt_depth": gt_depth, "valid": valid})])
    # λ=0.5: exact -> 100. λ=0.25 and 0.1: sky kept (no GT depth) -> 1; road loses row 7
    # (8 of 40 px) -> IoU 32/40 = 0.8; person fully voided -> FN -> 0. Mean 60.
    assert out["DPQ_0.5"] == pytest.approx(100.0)
    assert out["DPQ_0.25"] == pytest.approx(60.0)
    assert out["DPQ_0.1"] == pytest.approx(60.0)
    assert out["DPQ"] == pytest.approx((100 + 60 + 60) / 3)
    assert out["DPQ_th"] == pytest.approx(100 / 3)
    assert out["per_class"]["person"]["DPQ"] == pytest.approx(100 / 3)
    assert out["PQ"] == pytest.approx(100.0)
    assert out["AbsRel"] == pytest.approx((8 * 0.3 + 8 * 0.3) / 48)


def test_dpq_treats_nonfinite_prediction_on_valid_gt_as_wrong() -> None:
    gt_depth = np.full((2, 3), 10.0, np.float32)
    valid = np.array([[True, True, True], [True, True, False]])
    pred = np.array([[10.0, np.nan, np.inf], [0.0, 10.9, np.nan]], np.float32)
    np.testing.assert_array_equal(
        dpq_void_mask(pred, gt_depth, valid, 0.1),
        [[False, True, True], [True, False, False]],
    )


# --------------------------------------------------------------------------- pieces
def test_semantic_iou_ignores_gt_void_and_counts_invalid_prediction_as_miss() -> None:
    gt = np.array([[0, 0, 1, 255]])
    pred = np.array([[0, 255, 1, 1]])
    miou = SemanticIoU(num_classes=3)
    miou.add(pred, gt)
    # class 0: tp 1, fn 1 (predicted 255) -> 0.5; class 1: tp 1 (GT-void pixel skipped) -> 1
    iou = miou.iou()
    assert iou[0] == 0.5 and iou[1] == 1.0 and math.isnan(iou[2])
    assert miou.miou() == pytest.approx(75.0)


def test_depth_errors_skip_unusable_pixels_and_empty_images() -> None:
    gt = np.array([[2.0, 4.0, 0.0, 5.0]], np.float32)
    pred = np.array([[1.2, 4.0, 3.0, np.nan]], np.float32)
    valid = np.ones((1, 4), bool)
    errors = depth_errors(pred, gt, valid)
    assert errors is not None
    # pixels 0 and 1 score: abs rel (0.4 + 0) / 2; ratio 5/3 (>= 1.25^2, < 1.25^3) and 1
    assert errors["AbsRel"] == pytest.approx(0.2)
    assert errors["delta2"] == 0.5
    assert errors["delta1"] == 0.5 and errors["delta3"] == 1.0
    acc = DepthErrors()
    acc.add(pred, gt, valid)
    assert acc.add(pred, gt, np.zeros_like(valid)) is None
    assert acc.num_images == 1 and acc.result()["AbsRel"] == pytest.approx(0.2)


def test_bad_inputs_raise_value_error() -> None:
    s = scene_a()
    gt = s["gt"]
    ev = PanopticDepthEvaluator(metadata=META)
    with pytest.raises(ValueError, match="shape"):
        ev.add(gt[:5], None, s["gt_depth"], gt, None, s["gt_depth"], s["valid"])
    with pytest.raises(ValueError, match="19000"):
        match_panoptic(np.full_like(gt, 19000), gt, metadata=META)
    with pytest.raises(ValueError, match="not in gt_segments"):
        match_panoptic(gt, gt, metadata=META, gt_segments=[{"id": 0, "category_id": 0, "iscrowd": 0}])
    with pytest.raises(ValueError, match="not both"):
        match_panoptic(gt, gt, metadata=META, gt_segments=[], gt_crowd_ids=set())
    with pytest.raises(ValueError, match="gt_semantic holds 33"):
        SemanticIoU(num_classes=19).add(np.zeros((1, 1), int), np.full((1, 1), 33))


def test_format_table_lists_every_class_and_the_totals() -> None:
    s = scene_a()
    pred, depth = perturbed_a()
    text = format_table(evaluate([(pred, depth, s)]))
    assert all(name in text for name in META.names)
    assert "Things" in text and "DPQ" in text and "AbsRel" in text


# --------------------------------------------------------------------------- by distance
def scene_by_distance() -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Road at 10 m with a near car found, a far car missed and a spurious person.

    * car 1 rows 6-9 x cols 0-3 (16 px), GT 10 m, predicted exactly at 11 m: TP at 0-20 m,
      segment depth error 0.1;
    * car 2 rows 1-2 x cols 8-11 (8 px), GT 50 m, predicted road at 40 m: FN at 40-80 m;
    * a person predicted on road rows 6-7 x cols 6-7 (4 px) at 30 m: FP at 20-40 m (its
      own depth), pixel error 2.0 at 0-20 m (the road's GT depth).
    GT depth is valid everywhere but row 0 (road only).
    """
    gt = np.full((10, 12), pid(ROAD), np.int32)
    gt[6:10, 0:4] = pid(CAR, 1)
    gt[1:3, 8:12] = pid(CAR, 2)
    gt_depth = np.full((10, 12), 10.0, np.float32)
    gt_depth[1:3, 8:12] = 50.0
    valid = np.ones((10, 12), bool)
    valid[0] = False
    pred = np.full_like(gt, pid(ROAD))
    pred[6:10, 0:4] = pid(CAR, 1)
    pred[6:8, 6:8] = pid(PERSON, 1)
    depth = gt_depth.copy()
    depth[6:10, 0:4] = 11.0
    depth[1:3, 8:12] = 40.0
    depth[6:8, 6:8] = 30.0
    return {"gt": gt, "gt_depth": gt_depth, "valid": valid}, pred, depth


def test_things_by_distance_hand_computed() -> None:
    s, pred, depth = scene_by_distance()
    out = evaluate([(pred, depth, s)])
    near, mid, far, beyond = out["by_distance"]
    assert [(r["min_m"], r["max_m"]) for r in out["by_distance"]] == [(0, 20), (20, 40), (40, 80), (80, math.inf)]
    assert (near["TP"], near["FP"], near["FN"]) == (1, 0, 0)
    assert near["PQ_th"] == pytest.approx(100.0) and near["SQ_th"] == pytest.approx(100.0)
    assert near["segment_depth_absrel_th"] == pytest.approx(0.1) and near["segment_count_th"] == 1
    # 120 - 12 (row 0) - 8 (car 2) valid pixels below 20 m: 16 car px off by 0.1, 4 person px by 2.0
    assert near["pixels"] == 100 and near["AbsRel"] == pytest.approx((16 * 0.1 + 4 * 2.0) / 100)
    assert (mid["TP"], mid["FP"], mid["FN"]) == (0, 1, 0) and mid["PQ_th"] == 0.0
    assert mid["pixels"] == 0 and math.isnan(mid["AbsRel"])
    assert (far["TP"], far["FP"], far["FN"]) == (0, 0, 1) and far["PQ_th"] == 0.0
    assert far["pixels"] == 8 and far["AbsRel"] == pytest.approx(0.2)
    assert (beyond["TP"], beyond["FP"], beyond["FN"]) == (0, 0, 0) and math.isnan(beyond["PQ_th"])
    # the bands split the split-wide thing counts
    per_class = out["per_class"]
    for key in ("TP", "FP", "FN"):
        assert sum(r[key] for r in out["by_distance"]) == sum(per_class[n][key] for n in ("car", "person"))
    assert "things at" in format_table(out) and "40-80 m" in format_table(out)


def test_things_by_distance_edges_merge_and_segments_without_depth() -> None:
    s, pred, depth = scene_by_distance()
    s["valid"][:] = False  # no GT depth: GT things fall in no band; the FP keeps its own depth
    ev = PanopticDepthEvaluator(metadata=META, distance_bands=(5.0, 35.0))
    ev.add(pred, None, depth, s["gt"], None, s["gt_depth"], s["valid"])
    low, high = ev.summary()["by_distance"]
    assert (low["TP"], low["FP"], low["FN"], low["pixels"]) == (0, 1, 0, 0)
    assert (high["TP"], high["FP"], high["FN"]) == (0, 0, 0)
    other = PanopticDepthEvaluator(metadata=META, distance_bands=(5.0, 35.0))
    other.add(pred, None, depth, s["gt"], None, s["gt_depth"], s["valid"])
    ev.merge(other)
    merged = ev.summary()
    assert merged["by_distance"][0]["FP"] == 2 and merged["per_class"]["car"]["TP"] == 2  # matched, in no band
    assert sum(r["TP"] for r in merged["by_distance"]) == 0
    with pytest.raises(ValueError, match="different edges"):
        ev.merge(PanopticDepthEvaluator(metadata=META, distance_bands=(0.0, 35.0)))
    with pytest.raises(ValueError, match="without"):
        ev.merge(PanopticDepthEvaluator(metadata=META, distance_bands=None))
    assert "by_distance" not in PanopticDepthEvaluator(metadata=META, distance_bands=()).summary()
    bands = ThingsByDistance((5.0, 35.0), num_classes=19, thing_ids=META.thing_ids)
    assert bands.band_of(np.array([1.0, 5.0, 34.9, 35.0, 1e6, np.nan, np.inf])).tolist() == [-1, 0, 0, 1, 1, -1, -1]
    for bad in ((), (20.0, 10.0), (-1.0, 5.0), (0.0, math.inf)):
        with pytest.raises(ValueError, match="distance band edges"):
            ThingsByDistance(bad, num_classes=19, thing_ids=META.thing_ids)


# --------------------------------------------------------------------------- cityscapesscripts
def random_scene(rng: np.random.Generator, h: int = 48, w: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """GT and a noisy prediction with stuff blocks, instances, crowds, void, spurious segments."""
    stuff = rng.integers(0, 11, size=(h // 8, w // 8)).repeat(8, 0).repeat(8, 1)
    gt = (stuff * 1000).astype(np.int32)
    boxes = []
    for k in range(1, 9):
        cat = int(rng.integers(11, 19))
        y, x = int(rng.integers(0, h - 6)), int(rng.integers(0, w - 6))
        bh, bw = int(rng.integers(5, 18)), int(rng.integers(5, 18))
        inst = 0 if k % 4 == 0 else k  # every 4th box is a crowd region
        gt[y : y + bh, x : x + bw] = pid(cat, inst)
        boxes.append((cat, inst, y, x, bh, bw))
    y = int(rng.integers(0, h - 6))
    gt[y : y + 6, : int(rng.integers(4, 20))] = -1

    relabel = rng.integers(0, 11, size=(h // 8, w // 8)).repeat(8, 0).repeat(8, 1)
    flip = (rng.random((h // 8, w // 8)) < 0.2).repeat(8, 0).repeat(8, 1)
    pred = np.where(flip, relabel, stuff).astype(np.int32) * 1000
    for n, (cat, _, y, x, bh, bw) in enumerate(boxes):
        r = rng.random()
        if r < 0.15:
            continue  # missed
        dy, dx = (int(v) for v in rng.integers(-2, 3, size=2))
        new_cat = cat if r < 0.85 else int(rng.integers(11, 19))
        y0, x0 = max(0, y + dy), max(0, x + dx)
        pred[y0 : y0 + bh, x0 : x0 + bw] = pid(new_cat, n + 1)
    for n in range(int(rng.integers(0, 4))):  # spurious small detections
        y, x = int(rng.integers(0, h - 4)), int(rng.integers(0, w - 4))
        pred[y : y + 4, x : x + 4] = pid(int(rng.integers(11, 19)), 50 + n)
    pred[rng.random((h, w)) < 0.02] = -1
    return gt, pred


def to_cityscapes_id(panoptic_id: int) -> int:
    """Our id -> createPanopticImgs' segment id: labelId*1000+instance, or labelId."""
    cat, inst = divmod(panoptic_id, META.label_divisor)
    label_id = META.dataset_ids[cat]
    return label_id * 1000 + inst if inst > 0 else label_id


def write_coco_panoptic(path: Path, panoptic: np.ndarray, segments: list[dict]) -> list[dict]:
    """Write the PNG (void 0) and return ``segments_info`` in cityscapesscripts' format."""
    cs = np.zeros(panoptic.shape, np.int64)
    info = []
    for seg in segments:
        mask = panoptic == seg["id"]
        if not mask.any():
            continue
        cs_id = to_cityscapes_id(seg["id"])
        cs[mask] = cs_id
        ys, xs = np.nonzero(mask)
        info.append(
            {
                "id": cs_id,
                "category_id": META.dataset_ids[seg["category_id"]],
                "iscrowd": int(seg["iscrowd"]),
                "area": int(mask.sum()),
                "bbox": [int(xs.min()), int(ys.min()), int(np.ptp(xs) + 1), int(np.ptp(ys) + 1)],
            }
        )
    rgb = np.stack([cs % 256, cs // 256 % 256, cs // 65536], axis=-1).astype(np.uint8)
    Image.fromarray(rgb).save(path)
    return info


def default_segments(panoptic: np.ndarray) -> list[dict]:
    out = []
    for sid in np.unique(panoptic).tolist():
        if sid == -1:
            continue
        cat, inst = divmod(sid, META.label_divisor)
        out.append({"id": sid, "category_id": cat, "iscrowd": int(META.is_thing(cat) and inst == 0)})
    return out


def test_pq_equals_cityscapesscripts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(2024)
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    pred_dir.mkdir()
    ours = PanopticQuality(metadata=META)
    gt_anns, pred_anns = [], []
    for i in range(8):
        gt, pred = random_scene(rng)
        gt_segments = default_segments(gt)
        if i == 3:  # two car crowds; 13999 listed first, so only 13000 is consulted
            gt[40:48, 0:10] = pid(CAR, 999)
            gt[0:8, 56:64] = pid(CAR, 0)
            gt_segments = [s for s in default_segments(gt) if s["id"] != pid(CAR, 999)]
            gt_segments.insert(0, {"id": pid(CAR, 999), "category_id": CAR, "iscrowd": 1})
            pred[40:48, 0:6] = pid(CAR, 77)  # on 13999 only: a false positive
            pred[0:4, 52:60] = pid(CAR, 78)  # half on 13000: 0.5 is not > 0.5, also FP
        ours.add(pred, gt, gt_segments=gt_segments)
        name = f"city_{i:06d}_000019"
        gt_info = write_coco_panoptic(gt_dir / f"{name}.png", gt, gt_segments)
        pred_info = write_coco_panoptic(pred_dir / f"{name}.png", pred, default_segments(pred))
        for s in pred_info:
            del s["iscrowd"], s["area"], s["bbox"]
        gt_anns.append({"image_id": name, "file_name": f"{name}.png", "segments_info": gt_info})
        pred_anns.append({"image_id": name, "file_name": f"{name}.png", "segments_info": pred_info})
    categories = panoptic_categories()
    (tmp_path / "gt.json").write_text(json.dumps({"annotations": gt_anns, "categories": categories}))
    (tmp_path / "pred.json").write_text(json.dumps({"annotations": pred_anns}))

    # runs cityscapesscripts' multiprocessing pool with cpu_count() workers
    ref = evaluatePanoptic(
        str(tmp_path / "gt.json"),
        str(gt_dir),
        str(tmp_path / "pred.json"),
        str(pred_dir),
        str(tmp_path / "result.json"),
    )
    assert "Number of cores" in capsys.readouterr().out

    mine = ours.result()
    for group, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
        assert ref[group]["n"] == mine[f"n{suffix}"]
        for metric in ("pq", "sq", "rq"):
            assert mine[metric.upper() + suffix] / 100 == pytest.approx(ref[group][metric], abs=1e-9)
    assert ref["All"]["n"] >= 12 and ref["Things"]["n"] >= 4  # the data exercise both kinds
    for train_id, name in enumerate(META.names):
        theirs = ref["per_class"][META.dataset_ids[train_id]]
        row = mine["per_class"][name]
        if row["TP"] + row["FP"] + row["FN"] == 0:
            assert math.isnan(row["PQ"]) and theirs["pq"] == 0.0
        else:
            for metric in ("pq", "sq", "rq"):
                assert row[metric.upper()] / 100 == pytest.approx(theirs[metric], abs=1e-9)


def test_dpq_thresholds_are_vip_deeplabs() -> None:
    assert DPQ_THRESHOLDS == (0.1, 0.25, 0.5)
