"""Tests of panoptic_depthlab_training.video_metrics on tiny hand-built sequences.

Maps are a few pixels; each expected value is derived in a comment. Cityscapes train ids:
road 0 (stuff), car 13 (thing); a panoptic id is ``category * 1000 + instance``.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

from panoptic_depthlab_ros.metadata import cityscapes_metadata
from panoptic_depthlab_training.metrics import DPQ_THRESHOLDS, PanopticDepthEvaluator, PanopticQuality
from panoptic_depthlab_training.video_metrics import VideoFrame, VideoPanopticEvaluator, format_video_table

META = cityscapes_metadata()
ROAD, PERSON, CAR = 0, 11, 13


def car(instance: int) -> int:
    return CAR * 1000 + instance


def one_car_frame(track: int, *, wrong_depth_px: int = 0) -> VideoFrame:
    """2x4 frame: a car (4 px, left half, 10 m) and road (4 px, 5 m); GT car id 13001.

    The prediction has the exact masks with the car as ``car(track)``; its depth is exact
    except ``wrong_depth_px`` car pixels 30 % too far (13 m).
    """
    gt = np.array([[car(1), car(1), 0, 0], [car(1), car(1), 0, 0]], np.int32)
    pred = np.where(gt == car(1), car(track), 0).astype(np.int32)
    depth = np.where(gt == car(1), 10.0, 5.0).astype(np.float32)
    pred_depth = depth.copy()
    pred_depth.reshape(-1)[:wrong_depth_px] = 13.0  # pixels (0, 0), (0, 1) are the car's
    return VideoFrame(pred, pred_depth, gt, depth, np.ones_like(gt, bool))


def test_perfect_prediction_scores_100_everywhere() -> None:
    ev = VideoPanopticEvaluator()
    ev.add_sequence([one_car_frame(1) for _ in range(4)])
    s = ev.summary()
    for k in (1, 2, 3):
        assert s[f"VPQ_k{k}"] == s[f"VPQ_k{k}_th"] == s[f"VPQ_k{k}_st"] == 100.0
        assert s[f"DVPQ_k{k}"] == 100.0
        for t in DPQ_THRESHOLDS:
            assert s[f"DVPQ_k{k}_{t:g}"] == 100.0
    assert s["VPQ"] == s["DVPQ"] == 100.0
    # 4 frames: windows 4, 3, 2 for k = 1, 2, 3; the car and the road match in each.
    assert ev.vpq[1].tp[CAR] == 4 and ev.vpq[2].tp[CAR] == 3 and ev.vpq[3].tp[CAR] == 2
    assert (s["sequences"], s["frames"], s["id_switches"], s["tracked_frames"]) == (1, 4, 0, 4)
    assert s["id_switches_per_100"] == 0.0


def test_an_id_switch_lowers_vpq_at_window_2_and_3_but_not_1() -> None:
    # Track ids over 3 frames: 1, 2, 2 (a switch in frame 2, index 1).
    ev = VideoPanopticEvaluator()
    ev.add_sequence([one_car_frame(1), one_car_frame(2), one_car_frame(2)])
    s = ev.summary()
    # k = 1: each frame alone is perfect.
    assert s["VPQ_k1"] == 100.0
    # k = 2, window (0, 1): GT car 8 px; predictions 13001 and 13002 have 4 px each, IoU
    # 4 / 8 = 0.5, not > 0.5: car FN 1, FP 2. Window (1, 2): 13002 both frames, IoU 1: TP.
    # Car: PQ = IoU sum / (TP + FP/2 + FN/2) = 1 / (1 + 1 + 0.5) = 0.4; road 1.0.
    assert s["VPQ_k2_th"] == pytest.approx(40.0)
    assert s["VPQ_k2"] == pytest.approx((40.0 + 100.0) / 2)
    # k = 3, window (0, 1, 2): GT car 12 px; 13002 has 8 px, IoU 2/3: TP; 13001 (4 px) FP.
    # Car PQ = (2/3) / (1 + 0.5) = 4/9.
    assert s["VPQ_k3_th"] == pytest.approx(100 * 4 / 9)
    assert s["VPQ_k3"] == pytest.approx((100 * 4 / 9 + 100.0) / 2)
    assert s["VPQ"] == pytest.approx((100.0 + 70.0 + (400 / 9 + 100) / 2) / 3)
    assert s["VPQ_k2_st"] == s["VPQ_k3_st"] == 100.0
    # One switch (13001 -> 13002) in 3 tracked frames.
    assert (s["id_switches"], s["tracked_frames"]) == (1, 3)
    assert s["id_switches_per_100"] == pytest.approx(100 / 3)


def test_dvpq_voids_pixels_whose_depth_is_wrong() -> None:
    # One car pixel of frame 1 is 30 % too far: voided for λ = 0.1 and 0.25, kept for 0.5.
    ev = VideoPanopticEvaluator()
    ev.add_sequence([one_car_frame(1), one_car_frame(1, wrong_depth_px=1), one_car_frame(1)])
    s = ev.summary()
    assert s["VPQ"] == 100.0  # VPQ ignores depth
    # k = 1: frame 1's car keeps 3 of 4 px, IoU = 3 / (3 + 4 - 3) = 0.75; car PQ over the 3
    # frames = (1 + 0.75 + 1) / 3 = 0.9167; road 1.0.
    car_k1 = (1 + 0.75 + 1) / 3
    assert s["DVPQ_k1_0.1"] == s["DVPQ_k1_0.25"] == pytest.approx(100 * (car_k1 + 1) / 2)
    assert s["DVPQ_k1_0.5"] == 100.0
    # k = 2: both windows hold frame 1: 7 of 8 px, IoU 0.875; car PQ 0.875.
    assert s["DVPQ_k2_0.1"] == pytest.approx(100 * (0.875 + 1) / 2)
    # k = 3: 11 of 12 px: IoU 11/12.
    assert s["DVPQ_k3_0.25"] == pytest.approx(100 * (11 / 12 + 1) / 2)
    k1, k2, k3 = 100 * (car_k1 + 1) / 2, 100 * (0.875 + 1) / 2, 100 * (11 / 12 + 1) / 2
    assert s["DVPQ_k1"] == pytest.approx((2 * k1 + 100) / 3)
    assert s["DVPQ_k2"] == pytest.approx((2 * k2 + 100) / 3)
    assert s["DVPQ"] == pytest.approx((2 * (k1 + k2 + k3) + 300) / 9)
    assert s["DVPQ_k2_th"] == pytest.approx((2 * 87.5 + 100) / 3)


def test_windows_and_id_histories_stay_inside_a_sequence() -> None:
    ev = VideoPanopticEvaluator()
    ev.add_sequence([one_car_frame(1)])
    ev.add_sequence([one_car_frame(5)])  # the same GT id, another prediction id: a new sequence
    s = ev.summary()
    assert (s["sequences"], s["frames"]) == (2, 2)
    assert math.isnan(s["VPQ_k2"]) and math.isnan(s["VPQ_k3"])  # no sequence has 2 frames
    assert s["VPQ_k1"] == 100.0 and math.isnan(s["VPQ"])  # the mean over windows needs every window
    assert (s["id_switches"], s["tracked_frames"]) == (0, 2)
    # Without end_sequence the two frames are one sequence: a window of 2 and a switch.
    ev = VideoPanopticEvaluator()
    ev.add(one_car_frame(1))
    ev.add(one_car_frame(5))
    ev.end_sequence()
    s = ev.summary()
    assert s["sequences"] == 1 and s["id_switches"] == 1 and s["VPQ_k2"] == pytest.approx(50.0)  # car 0, road 100


def test_id_switches_count_near_tracked_things_only() -> None:
    # 2x6 frame: car 1 at 10 m (cols 0-1), car 2 at 50 m (cols 2-3), car 3 at 12 m (cols 4-5).
    # Predicted ids per frame: car 1 -> 1, 2, 2 (one switch); car 2 -> 3, 4, 5 (two switches,
    # but beyond id_switch_max_depth_m 40 m: not counted); car 3 -> 13000, untracked (not a
    # tracked frame). So 1 switch in 3 tracked frames.
    gt = np.repeat(np.array([[car(1), car(1), car(2), car(2), car(3), car(3)]], np.int32), 2, axis=0)
    depth = np.repeat(np.array([[10.0, 10.0, 50.0, 50.0, 12.0, 12.0]], np.float32), 2, axis=0)
    ev = VideoPanopticEvaluator()
    for near, far in ((1, 3), (2, 4), (2, 5)):
        pred = np.select([gt == car(1), gt == car(2)], [car(near), car(far)], car(0)).astype(np.int32)
        ev.add(VideoFrame(pred, depth, gt, depth, np.ones_like(gt, bool)))
    ev.end_sequence()
    s = ev.summary()
    assert (s["id_switches"], s["tracked_frames"]) == (1, 3)


def test_velocity_and_time_to_contact_errors() -> None:
    # 2x12 frame, exact masks. Cars (cols, depth, true velocity, predicted velocity, TTC):
    #   13001 cols 0-1,  10 m, (0, 0, -5),  (0.3, 0, -4.6), 2.5 s
    #   13002 cols 2-3,  25 m, (1, 0, 0),   (1, 0, -0.5),   5.0 s
    #   13003 cols 4-5,  35 m, (0, 0, -10), (0, 0, -8),     3.5 s
    #   13004 cols 6-7,   8 m, (0, 0, -4),  (NaN, NaN, -3), (none given: NaN)
    #   13005 cols 8-9,   6 m, (0, 0, -1),  (0, 0, 0),      +inf
    # and road in cols 10-11.
    cols = [car(1)] * 2 + [car(2)] * 2 + [car(3)] * 2 + [car(4)] * 2 + [car(5)] * 2 + [0, 0]
    gt = np.repeat(np.array([cols], np.int32), 2, axis=0)
    z = [10.0] * 2 + [25.0] * 2 + [35.0] * 2 + [8.0] * 2 + [6.0] * 2 + [5.0] * 2
    depth = np.repeat(np.array([z], np.float32), 2, axis=0)
    nan = math.nan
    frame = VideoFrame(
        gt.copy(),
        depth.copy(),
        gt,
        depth,
        np.ones_like(gt, bool),
        gt_velocity={
            car(1): (0, 0, -5),
            car(2): (1, 0, 0),
            car(3): (0, 0, -10),
            car(4): (0, 0, -4),
            car(5): (0, 0, -1),
        },
        pred_velocity={
            car(1): (0.3, 0, -4.6),
            car(2): (1, 0, -0.5),
            car(3): (0, 0, -8),
            car(4): (nan, nan, -3),
            car(5): (0, 0, 0),
        },
        pred_ttc={car(1): 2.5, car(2): 5.0, car(3): 3.5, car(5): math.inf},
    )
    ev = VideoPanopticEvaluator()
    ev.add_sequence([frame])
    s = ev.summary()
    near, mid, b40, b80 = s["velocity"]
    # 0-20 m: cars 1, 4, 5. |v - v*| = 0.5 (car 1: sqrt(0.3^2 + 0.4^2)), unknown (car 4), 1.0
    # (car 5): median 0.75. |vz - vz*| = 0.4, 1.0, 1.0: median 1.0.
    assert (near["min_m"], near["max_m"], near["pairs"], near["unknown"]) == (0.0, 20.0, 3, 1)
    assert near["median_error"] == pytest.approx(0.75) and near["median_error_z"] == pytest.approx(1.0)
    # 20-40 m: cars 2 (0.5, z 0.5) and 3 (2.0, z 2.0): medians 1.25.
    assert (mid["pairs"], mid["unknown"]) == (2, 0)
    assert mid["median_error"] == pytest.approx(1.25) and mid["median_error_z"] == pytest.approx(1.25)
    assert b40["pairs"] == b80["pairs"] == 0 and math.isnan(b40["median_error"]) and b80["max_m"] == math.inf
    # TTC within 30 m (car 3 at 35 m left out): true TTC car 1 = 10 / 5 = 2 s, car 4 = 8 / 4 =
    # 2 s, car 5 = 6 / 1 = 6 s (closing within 10 s), car 2 not closing (vz* = 0).
    # Car 1 scored: |2.5 - 2| = 0.5 s, 25 %; car 4 unknown; car 5 missed (+inf); car 2's 5 s
    # is a false alarm.
    ttc = s["ttc"]
    assert (ttc["closing"], ttc["scored"], ttc["missed"], ttc["unknown"]) == (3, 1, 1, 1)
    assert ttc["median_abs_error"] == pytest.approx(0.5) and ttc["median_rel_error"] == pytest.approx(0.25)
    assert (ttc["not_closing"], ttc["false_alarms"]) == (1, 1)
    table = format_video_table(s)
    assert "0-20 m" in table and "false alarms 1 of 1" in table


def _random_sequence(rng: np.random.Generator, frames: int, shape=(8, 10)) -> list[VideoFrame]:
    out = []
    ids = np.array([0, 7000, 8000, car(1), car(2), car(3), PERSON * 1000 + 1, -1])
    for _ in range(frames):
        gt = rng.choice(ids, size=shape).astype(np.int32)
        gt[:, :4] = car(1)  # a large thing that the prediction mostly keeps
        pred = np.where(rng.random(shape) < 0.8, gt, rng.choice(ids[:-1], size=shape)).astype(np.int32)
        gt_depth = rng.uniform(2.0, 60.0, shape).astype(np.float32)
        gt_depth[:, :4] = rng.uniform(8.0, 12.0, (shape[0], 4))  # the big car is near
        pred_depth = (gt_depth * rng.uniform(0.6, 1.4, shape)).astype(np.float32)
        things = [car(1), car(2), car(3), PERSON * 1000 + 1]
        velocity = {i: tuple(rng.uniform(-5, 5, 3).tolist()) for i in things}
        out.append(
            VideoFrame(
                pred,
                pred_depth,
                gt,
                gt_depth,
                rng.random(shape) < 0.9,
                gt_velocity=velocity,
                pred_velocity={i: tuple((np.array(v) + rng.normal(0, 1, 3)).tolist()) for i, v in velocity.items()},
                pred_ttc={i: float(rng.uniform(0.5, 20)) for i in things},
            )
        )
    return out


def test_window_1_is_per_frame_pq_and_dpq_of_metrics() -> None:
    # VPQ_k1 and DVPQ_k1 are metrics.py's PQ and DPQ over the same frames.
    rng = np.random.default_rng(0)
    frames = _random_sequence(rng, 5)
    ev = VideoPanopticEvaluator(windows=(1,))
    ev.add_sequence(frames)
    per_frame = PanopticDepthEvaluator()
    for f in frames:
        per_frame.add(f.pred_panoptic, None, f.pred_depth, f.gt_panoptic, None, f.gt_depth, f.gt_depth_valid)
    ref = per_frame.summary()
    s = ev.summary()
    for suffix in ("", "_th", "_st"):
        assert s[f"VPQ_k1{suffix}"] == pytest.approx(ref[f"PQ{suffix}"], abs=1e-9)
        assert s[f"DVPQ_k1{suffix}"] == pytest.approx(ref[f"DPQ{suffix}"], abs=1e-9)
    assert 0 < s["VPQ"] < 100


def test_window_2_is_pq_of_side_by_side_pairs() -> None:
    # By definition: PQ accumulated over [f0 | f1], [f1 | f2], ... of each sequence.
    rng = np.random.default_rng(1)
    sequences = [_random_sequence(rng, 4), _random_sequence(rng, 3)]
    ev = VideoPanopticEvaluator(windows=(2,))
    ref = PanopticQuality()
    for seq in sequences:
        ev.add_sequence(seq)
        for a, b in zip(seq, seq[1:], strict=False):
            ref.add(np.hstack([a.pred_panoptic, b.pred_panoptic]), np.hstack([a.gt_panoptic, b.gt_panoptic]))
    assert ev.summary()["VPQ_k2"] == pytest.approx(ref.result()["PQ"], abs=1e-9)
    assert ev.vpq[2].tp.sum() == ref.tp.sum()


def _flat(tree, prefix: str = "") -> dict:
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in _flat(sub, f"{prefix}{key}.").items()}
    if isinstance(tree, list):
        return {k: v for i, sub in enumerate(tree) for k, v in _flat(sub, f"{prefix}{i}.").items()}
    return {prefix[:-1]: tree}


def test_merge_equals_one_evaluator_over_everything() -> None:
    rng = np.random.default_rng(2)
    a_seq, b_seq = _random_sequence(rng, 4), _random_sequence(rng, 3)
    one, a, b = VideoPanopticEvaluator(), VideoPanopticEvaluator(), VideoPanopticEvaluator()
    one.add_sequence(a_seq)
    one.add_sequence(b_seq)
    a.add_sequence(a_seq)
    b.add_sequence(b_seq)
    a.merge(b)
    merged, whole = _flat(a.summary()), _flat(one.summary())
    assert merged.keys() == whole.keys()
    assert whole["velocity.0.pairs"] > 0 and whole["ttc.closing"] > 0
    for key, value in whole.items():  # floats up to summation order
        assert merged[key] == pytest.approx(value, rel=1e-12, nan_ok=True), key
    with pytest.raises(ValueError, match="different windows"):
        a.merge(VideoPanopticEvaluator(windows=(1, 2)))


def test_bad_input_names_the_frame_and_field_and_loses_nothing() -> None:
    with pytest.raises(ValueError, match="windows must be distinct"):
        VideoPanopticEvaluator(windows=(1, 1))
    with pytest.raises(ValueError, match="ttc_max_depth_m must be > 0"):
        VideoPanopticEvaluator(ttc_max_depth_m=0.0)
    ev = VideoPanopticEvaluator()
    ev.add(one_car_frame(1))
    good = one_car_frame(1)
    bad = VideoFrame(good.pred_panoptic[:, :3], good.pred_depth, good.gt_panoptic, good.gt_depth, good.gt_depth_valid)
    with pytest.raises(ValueError, match=r"frame 1: pred_panoptic has shape \(2, 3\), expected \(2, 4\)"):
        ev.add(bad)
    wider = VideoFrame(
        *(np.hstack([m, m]) for m in (good.pred_panoptic, good.pred_depth, good.gt_panoptic)),
        np.hstack([good.gt_depth] * 2),
        np.hstack([good.gt_depth_valid] * 2),
    )
    with pytest.raises(ValueError, match="call end_sequence between sequences"):
        ev.add(wider)
    broken = one_car_frame(1)
    broken.pred_panoptic[0, 0] = 99_000  # category 99 does not exist
    with pytest.raises(ValueError, match="frame 1: pred_panoptic: id 99000"):
        ev.add(broken)
    ev.add(one_car_frame(1))  # nothing above was counted: this is frame 1, windows (0, 1)
    ev.end_sequence()
    s = ev.summary()
    assert (s["frames"], s["sequences"]) == (2, 1) and ev.vpq[2].tp[CAR] == 1 and ev.vpq[1].tp[CAR] == 2


def test_tracker_output_in_the_video_convention_scores_full_vpq() -> None:
    # The core tracker's video panoptic map plugs in as pred_panoptic: two cars crossing
    # (test/tracking_scenes.py) with per-frame instance ids alternating. With the tracker's
    # ids every window matches (VPQ_k2 = k3 = 100, no switch). With the raw per-frame ids the
    # two cars trade ids every frame: in a window of 2 a raw id covers A in one frame and B
    # in the other, IoU with A = |A| / (2 |A| + |B|) < 0.5, so no car matches (things PQ 0);
    # in a window of 3 an id covers A twice and B once and may match A, with an IoU < 1.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "test"))
    from tracking_scenes import Thing, intrinsics, render  # noqa: PLC0415

    from panoptic_depthlab_ros.tracker import Tracker, TrackerConfig, track_panoptic  # noqa: PLC0415

    tracker = Tracker(TrackerConfig(report_tentative=True))  # ids from the first frame: every window scores
    tracked, raw = VideoPanopticEvaluator(), VideoPanopticEvaluator()
    for f in range(8):
        ia, ib = (1, 2) if f % 2 else (2, 1)
        things = [
            Thing(CAR, ia, (-4.0 + 0.3 * f, 1.0, 12.0), (4.0, 1.5)),
            Thing(CAR, ib, (4.0 - 0.3 * f, 1.0, 20.0), (4.0, 1.5)),
        ]
        result = render(things, size=(64, 128), k=intrinsics(64, 128, 100.0))
        gt = render(
            [Thing(CAR, 1 + (t.instance != ia), t.position, t.size) for t in things],
            size=(64, 128),
            k=intrinsics(64, 128, 100.0),
        ).panoptic  # ground truth: A is always car 1, B car 2
        frame = tracker.update(result, stamp_s=0.1 * f)
        valid = np.ones(gt.shape, bool)
        tracked.add(VideoFrame(track_panoptic(result, frame.tracks), result.depth, gt, result.depth, valid))
        raw.add(VideoFrame(result.panoptic, result.depth, gt, result.depth, valid))
    tracked.end_sequence()
    raw.end_sequence()
    t, r = tracked.summary(), raw.summary()
    assert t["VPQ_k1"] == t["VPQ_k2"] == t["VPQ_k3"] == 100.0 and t["id_switches"] == 0
    assert r["VPQ_k1"] == 100.0 and r["VPQ_k2_th"] == 0.0 and r["VPQ_k3_th"] < 50.0
    assert r["id_switches"] == 14  # both cars, every frame after the first
