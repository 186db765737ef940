"""Tracker (panoptic_depthlab_ros/tracker.py) on synthetic pinhole scenes (test/tracking_scenes.py).

Frames are 96x192 unless said (fx = fy = 96 px, principal point at the centre), 10 Hz
stamps. Per-frame instance ids are shuffled where identity matters, so that nothing
can ride on them.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from tracking_scenes import CAR, PERSON, ROAD, SKY, Thing, intrinsics, paint, render, segment_of

from panoptic_depthlab_ros.tracker import (
    SegmentTrack,
    Tracker,
    TrackerConfig,
    TrackState,
    track_panoptic,
)

DT = 0.1
T0_NS = 1_700_000_000_000_000_000  # a realistic epoch stamp: nanosecond arithmetic must stay exact


def stamp(frame: float) -> int:
    return T0_NS + round(frame * DT * 1e9)


def shown(**settings: object) -> TrackerConfig:
    """Settings that give a track its id from its first frame, so that association shows at once."""
    return TrackerConfig(report_tentative=True, **settings)  # type: ignore[arg-type]


def track_of(frame, result, category: int, instance: int) -> SegmentTrack:
    i = segment_of(result, category, instance)
    assert i is not None, f"{category}:{instance} not visible"
    return frame.tracks[i]


# --------------------------------------------------------------------- config and input
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("confirm_frames", 0),
        ("max_lost_frames", -1),
        ("max_gap_s", 0.0),
        ("max_gap_s", math.inf),
        ("min_iou", 1.5),
        ("gate_depth_rel", -0.1),
        ("accel_noise_mps2", math.nan),
        ("velocity_min_frames", 1),
        ("velocity_max_std_mps", 0.0),
        ("mask_samples", 2.5),
        ("border_px", -1),
        ("smooth_depth", "yes"),
        ("report_tentative", 1),
        ("size_noise_px", -1.0),
        ("size_weight", math.inf),
        ("appearance_weight", -0.5),
        ("static_gate", -1.0),
        ("static_max_speed_mps", math.nan),
        ("static_labels", ["car"]),
    ],
)
def test_config_rejects_bad_values_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"TrackerConfig.{field} "):
        TrackerConfig(**{field: value})


def test_config_defaults_and_infinite_std_are_valid() -> None:
    TrackerConfig()
    TrackerConfig(velocity_max_std_mps=math.inf, max_lost_frames=0, confirm_frames=1)


def test_bad_stamps_and_results_raise_and_leave_the_state() -> None:
    tracker = Tracker(shown())
    result = render([Thing(CAR, 1, (0.0, 1.0, 10.0))])
    first = tracker.update(result, stamp_ns=stamp(0))
    with pytest.raises(ValueError, match="exactly one of stamp_ns"):
        tracker.update(result)
    with pytest.raises(ValueError, match="exactly one of stamp_ns"):
        tracker.update(result, stamp_ns=1, stamp_s=1.0)
    with pytest.raises(ValueError, match="stamp_s must be finite"):
        tracker.update(result, stamp_s=math.nan)
    with pytest.raises(ValueError, match="stamp_ns must be an integer"):
        tracker.update(result, stamp_ns=1.5)  # type: ignore[arg-type]
    bad = dataclasses.replace(result, panoptic=result.panoptic[None])
    with pytest.raises(ValueError, match=r"result.panoptic must be an \[H, W\] integer array"):
        tracker.update(bad, stamp_ns=stamp(1))
    with pytest.raises(ValueError, match=r"result.segments\[0\] is a dict"):
        tracker.update(dataclasses.replace(result, segments=[{}]), stamp_ns=stamp(1))  # type: ignore[list-item]
    # Nothing above touched the tracker: the next frame is 0.1 s after the first, same track.
    second = tracker.update(result, stamp_ns=stamp(1))
    assert second.dt_s == pytest.approx(DT, abs=1e-12) and second.reset_reason is None
    i = segment_of(result, CAR, 1)
    assert second.tracks[i].track_id == first.tracks[i].track_id == 1
    assert second.tracks[i].track_age == 2


# --------------------------------------------------------------------- states and ids
def test_stuff_and_untracked_things_get_zero() -> None:
    tracker = Tracker(shown(min_area_px=50))
    big = Thing(CAR, 1, (0.0, 1.0, 10.0))  # 1.8 m at 10 m: 17 x 14 px = 238 px
    tiny = Thing(PERSON, 1, (-3.0, 0.5, 40.0), (0.5, 1.7))  # 1 x 4 px: under min_area_px
    result = render([big, tiny])
    frame = tracker.update(result, stamp_s=0.0)
    assert segment_of(result, PERSON, 1) is not None
    for i, seg in enumerate(result.segments):
        track = frame.tracks[i]
        if seg.id == CAR * 1000 + 1:
            assert (track.track_id, track.track_age, track.state) == (1, 1, TrackState.TENTATIVE)
        else:  # road, sky and the tiny person
            assert (track.track_id, track.track_age, track.state) == (0, 0, None)
            assert all(math.isnan(v) for v in track.velocity) and math.isnan(track.time_to_contact)
        assert track.depth == seg.depth_mean  # smoothing off: the segment's own depth
    assert [seg.category_id for seg, tr in zip(result.segments, frame.tracks, strict=True) if tr.track_id == 0] == [
        ROAD,
        SKY,
        PERSON,
    ]


def test_tentative_confirmed_lost_and_a_one_frame_false_positive() -> None:
    tracker = Tracker(shown(confirm_frames=3, max_lost_frames=2))
    car = Thing(CAR, 1, (0.0, 1.0, 10.0))
    ghost = Thing(PERSON, 1, (-3.0, 0.5, 8.0), (0.6, 1.7))
    states, counts = [], []
    for f, things in enumerate([[car, ghost], [car], [car], [], [], [], [car]]):
        result = render(things)
        frame = tracker.update(result, stamp_ns=stamp(f))
        i = segment_of(result, CAR, 1)
        states.append(None if i is None else (frame.tracks[i].track_id, frame.tracks[i].state))
        counts.append((frame.num_tentative, frame.num_confirmed, frame.num_lost))
    t, c = TrackState.TENTATIVE, TrackState.CONFIRMED
    # New tracks take ids in segment order: the ghost (person, id 11001) 1, the car 2. The
    # ghost lives one frame: tentative, unmatched, gone. The car confirms at its third frame,
    # is lost for frames 3, 4 (missed 1, 2 <= 2) and dies in frame 5 (missed 3); back in
    # frame 6 it is a new tentative track with the next id.
    assert states == [(2, t), (2, t), (2, c), None, None, None, (3, t)]
    assert counts == [(2, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (0, 0, 1), (0, 0, 0), (1, 0, 0)]


def test_by_default_an_id_is_shown_once_its_track_is_confirmed() -> None:
    tracker = Tracker()  # confirm_frames 3, report_tentative off
    car = Thing(CAR, 1, (0.0, 1.0, 10.0))
    ghost = Thing(PERSON, 1, (-3.0, 0.5, 8.0), (0.6, 1.7))
    shown_ids, ghost_track = [], None
    for f, things in enumerate([[car, ghost], [car], [car], [car]]):
        result = render(things)
        frame = tracker.update(result, stamp_ns=stamp(f))
        track = track_of(frame, result, CAR, 1)
        shown_ids.append((track.track_id, track.track_age, track.state))
        if f == 0:
            ghost_track = track_of(frame, result, PERSON, 1)
            panoptic = track_panoptic(result, frame.tracks)
    t, c = TrackState.TENTATIVE, TrackState.CONFIRMED
    # Ids as with report_tentative (the ghost took 1, the car 2), but shown from the
    # confirming frame on; frames seen and the state are reported all along.
    assert shown_ids == [(0, 1, t), (0, 2, t), (2, 3, c), (2, 4, c)]
    assert ghost_track is not None
    assert (ghost_track.track_id, ghost_track.track_age, ghost_track.state) == (0, 1, t)
    # The video panoptic map has instance 0 (untracked) for both in the first frame.
    assert set(np.unique(panoptic)) >= {CAR * 1000, PERSON * 1000}
    assert not set(np.unique(panoptic)) & {CAR * 1000 + 2, PERSON * 1000 + 1}


def test_track_ids_stay_under_the_label_divisor_and_skip_live_ones() -> None:
    # label_divisor 5: ids 1..4 so that category * 5 + id stays a valid panoptic id.
    tracker = Tracker(shown(confirm_frames=1, max_lost_frames=0))
    keeper = Thing(CAR, 1, (0.0, 1.0, 10.0))
    seen = []
    for f in range(6):  # the keeper stays; a new person each frame lives one frame
        person = Thing(PERSON, 1, (-3.0 + f * 1.2, 0.5, 8.0 + 5 * f), (0.6, 1.7))
        result = render([keeper, person], label_divisor=5)
        frame = tracker.update(result, stamp_ns=stamp(f))
        seen.append((track_of(frame, result, CAR, 1).track_id, track_of(frame, result, PERSON, 1).track_id))
    # Frame 0 numbers in segment order (person 11001 before car 13001): person 1, keeper 2.
    # Then counting on 3, 4, 1, (2 is the keeper's: skipped) 3, 4.
    assert seen == [(2, 1), (2, 3), (2, 4), (2, 1), (2, 3), (2, 4)]


# --------------------------------------------------------------------- association
def _cross(
    tracker: Tracker, far: float, shrink: float, centroid: str, frames: int = 41
) -> tuple[list[int], list[int | None]]:
    """Car A at 12 m drives right at 3 m/s; car B at ``far`` m drives left, in the image as A
    mirrored, ``shrink`` times A's size; per-frame instance ids alternate. Track ids per frame."""
    size, k = (128, 256), intrinsics(128, 256, 200.0)
    ids_a: list[int] = []
    ids_b: list[int | None] = []
    for f in range(frames):
        t = f * DT
        ia, ib = (1, 2) if f % 2 else (2, 1)
        a = Thing(CAR, ia, (-4.0 + 3.0 * t, 1.0, 12.0), (4.0, 1.5))
        s = far / 12.0  # B projects as A would at 12 m, mirrored, times shrink
        b = Thing(CAR, ib, ((4.0 - 3.0 * t) * s, 1.0 * s, far), (4.0 * s * shrink, 1.5 * s * shrink))
        result = render([a, b], size=size, k=k, centroid=centroid)
        frame = tracker.update(result, stamp_ns=stamp(f))
        ids_a.append(track_of(frame, result, CAR, ia).track_id)
        ib_index = segment_of(result, CAR, ib)
        ids_b.append(None if ib_index is None else frame.tracks[ib_index].track_id)
    return ids_a, ids_b


@pytest.mark.parametrize("centroid", ["true", "visible", "none"])
def test_two_crossing_cars_hidden_for_frames_keep_their_ids(centroid: str) -> None:
    # B at 16 m, half A's size in the image, passes behind A: hidden for 4 frames (12..15;
    # its box, 33 px wide, lies inside A's, 67 px, while they are < 17 px apart at 100 px/s),
    # then seen on A's other side, partly covered at first. In frame 0 B is car 1 and A car 2,
    # so B's track is id 1 and A's id 2. The lost B is re-identified from its predicted
    # position (3D, or the box centre without intrinsics).
    ids_a, ids_b = _cross(Tracker(shown()), 16.0, 0.5, centroid)
    assert [f for f, i in enumerate(ids_b) if i is None] == [12, 13, 14, 15]
    assert set(ids_a) == {2} and {i for i in ids_b if i is not None} == {1}
    # Without the re-identification window B comes back as a new track (and A is unaffected).
    ids_a, ids_b = _cross(Tracker(shown(max_lost_frames=0)), 16.0, 0.5, centroid)
    assert set(ids_a) == {2} and ids_b[16:] == [3] * 25


def test_subsampled_masks_keep_the_crossing_ids() -> None:
    # mask_samples 1024 on 128x256: the IoU grid has stride isqrt(32768 // 1024) = 5 (26 x 52
    # samples); B (33 x 12 px at its smallest full view) still has ~15 samples.
    ids_a, ids_b = _cross(Tracker(shown(mask_samples=1024)), 16.0, 0.5, "visible")
    assert set(ids_a) == {2} and {i for i in ids_b if i is not None} == {1}


@pytest.mark.parametrize("centroid", ["true", "visible"])
def test_two_crossing_cars_at_close_depths_never_swap(centroid: str) -> None:
    # B at 13 m, nearly A's depth, passes behind A: for a few frames only slivers of B show,
    # first right of A, then (frame 14) left of it. With visible-pixel centroids the sliver's
    # centroid jumps 4 m, so B's track cannot follow it and loses B (a new id for B), but
    # the assignment must never hand A's segment to B's track and B's sliver to A's (two
    # allowed but poor pairs beat one good pair if forbidden pairs cost "infinity").
    ids_a, ids_b = _cross(Tracker(shown()), 13.0, 0.95, centroid)
    assert set(ids_a) == {2}
    assert 2 not in ids_b and ids_b[0] == 1
    if centroid == "true":  # exact centroids: B keeps its id too
        assert set(ids_b) == {1}


def test_association_is_class_consistent() -> None:
    # A person stands exactly where the car was (same place, same depth): it is not the car.
    tracker = Tracker(shown(confirm_frames=1))
    place = (0.0, 1.0, 10.0)
    car, person = Thing(CAR, 1, place), Thing(PERSON, 1, place, (1.8, 1.5))
    r0 = render([car])
    f0 = tracker.update(r0, stamp_ns=stamp(0))
    r1 = render([person])
    f1 = tracker.update(r1, stamp_ns=stamp(1))
    r2 = render([car])
    f2 = tracker.update(r2, stamp_ns=stamp(2))
    assert track_of(f0, r0, CAR, 1).track_id == 1
    assert track_of(f1, r1, PERSON, 1).track_id == 2  # a new track, not the car's
    assert track_of(f2, r2, CAR, 1).track_id == 1  # the car, re-identified after one lost frame
    assert f1.num_lost == 1 and f2.num_lost == 1  # the car, then the person


@pytest.mark.parametrize("hidden", [1, 4, 5, 6])
def test_occluded_car_is_reidentified_within_the_window_only(hidden: int) -> None:
    # max_lost_frames 5: a confirmed car unseen for up to 5 frames keeps its id, for 6 it is new.
    # The car drives right at 3 m/s at 15 m: while hidden it moves 0.3 m per frame, which the
    # filter's prediction follows (its velocity is known by then).
    tracker = Tracker(shown(max_lost_frames=5))
    other = Thing(CAR, 7, (-2.0, 1.0, 30.0))  # an unrelated car far away, always visible
    ids = []
    for f in range(8 + hidden + 3):
        car = Thing(CAR, 1, (-3.0 + 3.0 * f * DT, 1.0, 15.0))
        things = [other] if 8 <= f < 8 + hidden else [car, other]
        result = render(things, centroid="visible")
        frame = tracker.update(result, stamp_ns=stamp(f))
        if segment_of(result, CAR, 1) is not None:
            ids.append(track_of(frame, result, CAR, 1).track_id)
    assert ids[:8] == [1] * 8
    expected = 1 if hidden <= 5 else 3  # 2 is the far car's
    assert ids[8:] == [expected] * 3


def test_a_thing_faster_than_its_width_per_frame_keeps_its_id() -> None:
    # A person (0.6 m wide: 15 px at 12 m, focal 300) runs right at 6 m/s: 15 px per frame,
    # its own width, so its mask of the last frame never overlaps its mask of this one. From
    # frame 5 on a second person stands exactly where the first was a frame before: an
    # unshifted last mask would overlap the stander fully and hand it the runner's track.
    # Shifted by the motion its box filter predicts, it overlaps the runner.
    k = intrinsics(96, 192, focal=300.0)
    tracker = Tracker(shown(confirm_frames=1))
    runner_ids, stander_ids = [], []
    for f in range(10):
        runner = Thing(PERSON, 1 + f % 2, (-3.0 + 0.6 * f, 0.5, 12.0), (0.6, 1.7))
        things = [runner]
        if f >= 5:
            things.append(Thing(PERSON, 2 - f % 2, (-3.0 + 0.6 * 4, 0.5, 12.0), (0.6, 1.7)))
        result = render(things, k=k)
        frame = tracker.update(result, stamp_ns=stamp(f))
        runner_ids.append(track_of(frame, result, PERSON, 1 + f % 2).track_id)
        if f >= 5:
            stander_ids.append(track_of(frame, result, PERSON, 2 - f % 2).track_id)
    assert set(runner_ids) == {1}
    assert set(stander_ids) == {2}


def test_a_lost_track_with_an_unsure_velocity_waits_where_it_was_seen() -> None:
    # A still car at 40 m whose depth reads 35 m in its second frame: the two-point start
    # says it closes at 50 m/s (std 18 m/s at 40 m, over velocity_max_std_mps), which would
    # carry its prediction to 5 m in the 6 frames it then goes unseen. Predicted where it was
    # last matched instead, it is re-identified when it shows again at 40 m.
    tracker = Tracker(shown(confirm_frames=1))
    ids = []
    for f, z in [(0, 40.0), (1, 35.0), (7, 40.0), (8, 40.0)]:
        result = render([Thing(CAR, 1, (0.0, 1.0, z))])
        frame = tracker.update(result, stamp_ns=stamp(f))
        ids.append(track_of(frame, result, CAR, 1).track_id)
    assert ids == [1, 1, 1, 1]


def test_a_lost_track_with_a_known_velocity_is_found_where_it_went() -> None:
    # A car at 15 m drives right at 8 m/s (its velocity known, std 1.2 m/s) and goes unseen
    # for 8 frames; meanwhile its velocity's std grows past velocity_max_std_mps (2 m/s after
    # 7 frames of acceleration noise 2 m/s^2). It shows again 7.2 m on, and a second car
    # appears where the first was last seen. Known at its last match, the velocity keeps
    # carrying the prediction: the car keeps id 1 and the newcomer gets id 2. Snapped back
    # to where it was last seen, the track would take the newcomer (distance 0) instead.
    k = intrinsics(96, 384, 96.0)
    tracker = Tracker(shown())
    last_seen_x = -6.0 + 0.8 * 9
    for f in range(20):
        things = [] if 10 <= f < 18 else [Thing(CAR, 1, (-6.0 + 0.8 * f, 1.0, 15.0))]
        if f >= 18:
            things.append(Thing(CAR, 2, (last_seen_x, 1.0, 15.0)))
        result = render(things, size=(96, 384), k=k)
        frame = tracker.update(result, stamp_ns=stamp(f))
        if things:
            assert track_of(frame, result, CAR, 1).track_id == 1
    assert track_of(frame, result, CAR, 2).track_id == 2


@pytest.mark.parametrize(("size_weight", "full_id", "fragment_id"), [(0.5, 1, 2), (0.0, 2, 1)])
def test_area_ratio_keeps_the_track_on_the_whole_thing(size_weight: float, full_id: int, fragment_id: int) -> None:
    # A still car at 10 m (17 x 14 px) tracked for 4 frames; then its segment comes 1 m to the
    # side (IoU 0.26 with its last mask, distance 1 m of a 2.8 m gate: cost 0.74 + 0.36) and
    # a fragment of a quarter of its area shows where it was (IoU 0.24, distance 0: cost 0.76).
    # The area ratio adds 0.5 * min(|ln(56 / 238)| / ln 4, 1) = 0.5 to the fragment's cost, so
    # the track stays on the whole car; without it the fragment takes the track.
    tracker = Tracker(shown(size_weight=size_weight))
    for f in range(4):
        tracker.update(render([Thing(CAR, 1, (0.0, 1.0, 10.0))]), stamp_ns=stamp(f))
    result = render([Thing(CAR, 2, (1.0, 1.0, 10.0)), Thing(CAR, 3, (0.0, 1.0, 10.0), (0.9, 0.75))])
    frame = tracker.update(result, stamp_ns=stamp(4))
    assert result.segments[segment_of(result, CAR, 3)].area * 4 < result.segments[segment_of(result, CAR, 2)].area
    assert track_of(frame, result, CAR, 2).track_id == full_id
    assert track_of(frame, result, CAR, 3).track_id == fragment_id


RED, WHITE = (40, 40, 200), (230, 230, 230)


@pytest.mark.parametrize(("weight", "kept"), [(1.5, True), (0.0, False)])
def test_colour_keeps_ids_where_geometry_would_swap_them(weight: float, kept: bool) -> None:
    # A red car and a white one side by side at 10 m, 2 m apart, seen for 4 frames; after a
    # dropped frame each has come 1.2 m towards the other, so that each is nearer the other's
    # last place (0.8 m) than its own (1.2 m) and overlaps the other's last mask more. Geometry
    # alone gives each track the other car; the colours keep each on its own.
    tracker = Tracker(shown(appearance_weight=weight))
    for f in range(4):
        before = render([Thing(CAR, 1, (-1.0, 1.0, 10.0)), Thing(CAR, 2, (1.0, 1.0, 10.5))])
        frame = tracker.update(before, stamp_ns=stamp(f), image=paint(before, {13001: RED, 13002: WHITE}))
    red, white = track_of(frame, before, CAR, 1).track_id, track_of(frame, before, CAR, 2).track_id
    after = render([Thing(CAR, 4, (0.2, 1.0, 10.0)), Thing(CAR, 3, (-0.2, 1.0, 10.5))])  # ids shuffled
    frame = tracker.update(after, stamp_ns=stamp(5), image=paint(after, {13004: RED, 13003: WHITE}))
    got = (track_of(frame, after, CAR, 4).track_id, track_of(frame, after, CAR, 3).track_id)
    assert got == ((red, white) if kept else (white, red))


def test_frames_without_an_image_track_by_geometry_alone() -> None:
    # Appearance needs the frame's image; without one the association is the geometric one,
    # and a track first seen without an image takes its colours from its first match with one.
    scene = [Thing(CAR, 1, (-1.0, 1.0, 10.0)), Thing(CAR, 2, (1.0, 1.0, 10.5))]
    plain, coloured = Tracker(shown(appearance_weight=0.0)), Tracker(shown())
    for f in range(6):
        result = render(scene)
        image = paint(result, {13001: RED, 13002: WHITE}) if f >= 3 else None
        want = plain.update(result, stamp_ns=stamp(f)).tracks
        got = coloured.update(result, stamp_ns=stamp(f), image=image).tracks
        assert [(t.track_id, t.track_age, t.state) for t in got] == [(t.track_id, t.track_age, t.state) for t in want]
        np.testing.assert_array_equal([t.velocity for t in got], [t.velocity for t in want])
    assert coloured._tracks.has_appearance.all()


def test_a_segment_without_colour_samples_is_neither_penalised_nor_blended() -> None:
    # The colours are read on the mask-IoU grid (here every 16th pixel, mask_samples 72): a car
    # far away covers no grid sample, so its colour is unknown. It keeps its track, and the
    # track's histogram stays a histogram (it sums to 1 once known, 0 before).
    tracker = Tracker(shown(mask_samples=72))
    for f in range(5):
        result = render([Thing(CAR, 1, (-1.0, 1.0, 10.0)), Thing(CAR, 2, (2.0, 0.5, 60.0), (0.6, 0.5))])
        frame = tracker.update(result, stamp_ns=stamp(f), image=paint(result, {13001: RED, 13002: WHITE}))
        assert track_of(frame, result, CAR, 2).track_id == 2
    table = tracker._tracks
    np.testing.assert_allclose(table.appearance.sum(axis=1), [1.0, 0.0])
    assert table.has_appearance.tolist() == [True, False]


def test_an_image_that_is_not_the_frame_is_refused() -> None:
    tracker = Tracker()
    result = render([Thing(CAR, 1, (0.0, 1.0, 10.0))])
    for image, message in (
        (np.zeros((96, 192), np.uint8), r"image must be \[H, W, 3\] \(BGR\), got shape \(96, 192\)"),
        (np.zeros((96, 192, 3), np.float32), "image must be uint8, got float32"),
        (np.zeros((48, 96, 3), np.uint8), "image is 96x48 but the panoptic map is 192x96"),
    ):
        with pytest.raises(ValueError, match=message):
            tracker.update(result, stamp_ns=stamp(0), image=image)
    first = tracker.update(result, stamp_ns=stamp(0))  # the refusals left no trace
    assert math.isnan(first.dt_s) and first.reset_reason is None
    assert track_of(first, result, CAR, 1).track_age == 1


# --------------------------------------------------------------------- time
@pytest.mark.parametrize(
    ("jump", "reason"),
    [(-5.0, r"stamp went back by 5\.\d+ s"), (0.0, "stamp repeated"), (2.5, r"gap of 2\.6\d+ s over max_gap_s 1")],
)
def test_time_jumps_reset_the_tracks(jump: float, reason: str) -> None:
    # A looping bag jumps back; a repeated stamp is no motion; a gap over max_gap_s (1 s)
    # leaves too little of the scene to predict. Each drops every track, says why, and the
    # next id comes up (ids are not reused after a reset).
    tracker = Tracker(shown())
    car = Thing(CAR, 1, (0.0, 1.0, 10.0))
    result = render([car])
    for f in range(5):
        frame = tracker.update(result, stamp_ns=stamp(f))
        assert frame.reset_reason is None and not frame.reset
    assert track_of(frame, result, CAR, 1).track_age == 5
    after = tracker.update(result, stamp_ns=stamp(4) + round((jump + (DT if jump > 0 else 0)) * 1e9))
    assert after.reset and after.reset_reason is not None
    assert __import__("re").fullmatch(reason, after.reset_reason), after.reset_reason
    assert math.isnan(after.dt_s)
    track = track_of(after, result, CAR, 1)
    assert (track.track_id, track.track_age, track.state) == (2, 1, TrackState.TENTATIVE)
    assert (after.num_tentative, after.num_confirmed, after.num_lost) == (1, 0, 0)


def test_gap_at_the_limit_does_not_reset() -> None:
    tracker = Tracker(shown(max_gap_s=0.5))
    result = render([Thing(CAR, 1, (0.0, 1.0, 10.0))])
    tracker.update(result, stamp_s=100.0)
    frame = tracker.update(result, stamp_s=100.5)
    assert frame.reset_reason is None and frame.dt_s == pytest.approx(0.5, abs=1e-9)
    assert track_of(frame, result, CAR, 1).track_age == 2


def test_manual_reset_forgets_tracks_and_stamp() -> None:
    tracker = Tracker(shown())
    result = render([Thing(CAR, 1, (0.0, 1.0, 10.0))])
    tracker.update(result, stamp_s=10.0)
    tracker.reset()
    frame = tracker.update(result, stamp_s=1.0)  # earlier stamp: no "went back" after a reset
    assert frame.reset_reason is None and math.isnan(frame.dt_s)
    assert track_of(frame, result, CAR, 1).track_id == 2


# --------------------------------------------------------------------- velocity and TTC
def _drive(tracker: Tracker, frames, position, *, centroid: str = "true"):
    """Feed one car at ``position(t)`` at frame indices ``frames``; its tracks, frame by frame."""
    out = []
    for f in frames:
        result = render([Thing(CAR, 1, position(f * DT))], centroid=centroid)
        frame = tracker.update(result, stamp_ns=stamp(f))
        out.append((frame, track_of(frame, result, CAR, 1)))
    return out


def test_constant_velocity_and_time_to_contact_are_exact() -> None:
    # Exact centroids on a line: the filter's two-point start gives v = (p2 - p1) / dt exactly
    # and every later innovation is 0, so the velocity is exact up to float rounding (~1e-12
    # m/s); TTC = z / -vz = z / 10 exactly. velocity_min_frames 3 with no std limit: NaN for
    # frames 0 and 1, known from frame 2 on. Looming off (size_noise_px 0): box heights are
    # whole pixels, so the rate of their inverse is exact only on average.
    v = (1.0, -0.2, -10.0)
    p0 = (-2.0, 1.0, 40.0)
    tracker = Tracker(shown(velocity_min_frames=3, velocity_max_std_mps=math.inf, size_noise_px=0.0))
    tracks = _drive(tracker, range(12), lambda t: tuple(p + dv * t for p, dv in zip(p0, v, strict=True)))
    for f, (_, track) in enumerate(tracks):
        z = p0[2] + v[2] * f * DT
        if f < 2:
            assert all(math.isnan(c) for c in track.velocity) and math.isnan(track.time_to_contact)
        else:
            np.testing.assert_allclose(track.velocity, v, rtol=0, atol=1e-9)
            assert track.time_to_contact == pytest.approx(z / 10.0, rel=1e-9)


def test_dropped_frames_widen_dt_and_the_velocity_stays_right() -> None:
    # Frames 3, 4, 6, 7, 8 never arrive: dt is taken from the stamps (0.3 s, 0.4 s), so the
    # positions still lie on the true line and the velocity stays exact (looming off: whole-pixel
    # box heights).
    v = (2.0, 0.0, -5.0)
    p0 = (-3.0, 1.0, 25.0)
    tracker = Tracker(shown(velocity_max_std_mps=math.inf, size_noise_px=0.0))
    frames = [0, 1, 2, 5, 9, 10, 11]
    tracks = _drive(tracker, frames, lambda t: tuple(p + dv * t for p, dv in zip(p0, v, strict=True)))
    assert [round(fr.dt_s, 9) for fr, _ in tracks[1:]] == [0.1, 0.1, 0.3, 0.4, 0.1, 0.1]
    assert len({tr.track_id for _, tr in tracks}) == 1
    for (_, track), f in zip(tracks[2:], frames[2:], strict=True):
        np.testing.assert_allclose(track.velocity, v, rtol=0, atol=1e-9)
        assert track.time_to_contact == pytest.approx((p0[2] + v[2] * f * DT) / 5.0, rel=1e-9)


def test_velocity_from_noisy_depth_is_within_its_derived_error() -> None:
    # z measured with Gaussian noise sigma = 0.3 m, 40 frames at 10 Hz, no acceleration
    # noise in the filter: the Kalman filter then equals a least-squares line fit (the
    # two-point start is a flat prior), whose slope has std
    # sigma * sqrt(12 / (n (n^2 - 1))) / dt = 0.3 * sqrt(12 / (40 * 1599)) / 0.1 = 0.041 m/s
    # (the measurement variance is modelled as nearly constant, 0.1 + 0.03 z, z in 16..24 m,
    # so the weights are close to equal). The test allows 4 sigma: 0.17 m/s.
    sigma, n = 0.3, 40
    rng = np.random.default_rng(3)
    noise = rng.normal(0.0, sigma, n)
    tracker = Tracker(shown(accel_noise_mps2=0.0, velocity_max_std_mps=math.inf))
    tracks = _drive(tracker, range(n), lambda t: (0.0, 1.0, 24.0 - 2.0 * t + noise[round(t / DT)]))
    bound = 4 * sigma * math.sqrt(12 / (n * (n * n - 1))) / DT
    assert abs(tracks[-1][1].velocity[2] - (-2.0)) < bound
    assert abs(tracks[-1][1].velocity[0]) < bound  # x = 0 exactly: no motion, no noise


def test_receding_and_still_things_never_contact() -> None:
    # Receding (vz = +5 m/s) and still (vz = 0, below min_closing_speed_mps): TTC +inf.
    # Looming off, so that the receding velocity is exact (box heights are whole pixels).
    config = shown(velocity_max_std_mps=math.inf, size_noise_px=0.0)
    receding = _drive(Tracker(config), range(6), lambda t: (0.0, 1.0, 10.0 + 5.0 * t))
    still = _drive(Tracker(config), range(6), lambda t: (1.0, 1.0, 10.0))
    assert receding[-1][1].velocity[2] == pytest.approx(5.0, abs=1e-9)
    assert receding[-1][1].time_to_contact == math.inf
    assert still[-1][1].velocity == (0.0, 0.0, 0.0) and still[-1][1].time_to_contact == math.inf


def test_without_intrinsics_only_vz_and_ttc_are_known() -> None:
    # No centroid: x and y are never measured (vx, vy NaN); z comes from depth_mean, so vz
    # and the time to contact are right as with intrinsics, up to the float32 depth map:
    # each depth is off by at most 2^-24 * 20 m = 1.2e-6 m, the two-point velocity by at most
    # 2 * 1.2e-6 / 0.1 = 2.4e-5 m/s (looming off: whole-pixel box heights).
    tracker = Tracker(shown(velocity_max_std_mps=math.inf, size_noise_px=0.0))
    tracks = _drive(tracker, range(6), lambda t: (-1.0 + 2.0 * t, 1.0, 20.0 - 8.0 * t), centroid="none")
    track = tracks[-1][1]
    assert math.isnan(track.velocity[0]) and math.isnan(track.velocity[1])
    assert track.velocity[2] == pytest.approx(-8.0, abs=2.4e-5)
    assert track.time_to_contact == pytest.approx((20.0 - 8.0 * 0.5) / 8.0, rel=1e-5)


def test_velocity_waits_for_its_standard_deviation() -> None:
    # Default noise model at 20 m: sigma = 0.1 + 0.03 * 20 = 0.7 m per measurement. After the
    # two-point start at 10 Hz the velocity std is sqrt(2) * 0.7 / 0.1 = 9.9 m/s, far above
    # velocity_max_std_mps (2): still NaN at frame velocity_min_frames (3). The filter's
    # covariance then falls under 2 m/s at its 6th measurement (frame index 5): the
    # recursion P <- predict(P) with accel_noise 2 m/s^2, then update with R = 0.49 m^2,
    # gives sigma_v = 5.0, 3.2, 2.3, 1.9 m/s after measurements 3..6.
    tracker = Tracker(shown())
    tracks = _drive(tracker, range(30), lambda t: (0.0, 1.0, 20.0))
    known = [not math.isnan(tr.velocity[2]) for _, tr in tracks]
    assert known.index(True) == 5 and all(known[5:])


def test_a_car_cut_by_the_image_border_keeps_its_velocity() -> None:
    # A car (1.8 m wide) at 15 m drives right at 8 m/s and leaves the 192 px wide image: its
    # right edge, u = 96 + 96 (x + 0.9) / 15, comes within border_px (2) of the border at
    # frame 23 (x = 14.4 m), its left edge leaves at frame 25. The visible part's centroid
    # slides with the border, slower than the car: measured, it drags vx down. Cut by the
    # border, the segment measures no 3D motion and vx stays the one measured before
    # (visible centroids of a whole rectangle: exact up to pixel rounding, 0.16 m at 15 m).
    frames = range(25)

    def run(config: TrackerConfig) -> list[float]:
        tracks = _drive(Tracker(config), frames, lambda t: (-4.0 + 8.0 * t, 1.0, 15.0), centroid="visible")
        return [tr.velocity[0] for _, tr in tracks]

    x_max = [render([Thing(CAR, 1, (-4.0 + 0.8 * f, 1.0, 15.0))]).segments[-1].x_max for f in frames]
    cut_from = next(f for f, x in enumerate(x_max) if x > 192 - 1 - 2)
    assert cut_from == 23
    vx = run(shown(velocity_max_std_mps=math.inf))
    assert all(abs(v - 8.0) < 0.25 for v in vx[2:])
    assert vx[cut_from:] == [vx[cut_from - 1]] * 2  # coasting: the filter's velocity as it was
    measured = run(shown(velocity_max_std_mps=math.inf, border_px=0))
    assert measured[2:cut_from] == vx[2:cut_from] and measured[-1] < 7.6


def test_depth_and_centroid_follow_the_median_depth() -> None:
    # Outline pixels that read the background pull a segment's mean depth (and so its
    # centroid, the mean of its back-projected pixels) away by up to 3 m, differently every
    # frame; its median stays. The tracker moves the centroid along its ray to the median:
    # the velocity is then exact (two-point start and zero innovations, as for exact centroids;
    # looming off: whole-pixel box heights).
    rng = np.random.default_rng(2)
    tracker = Tracker(shown(velocity_max_std_mps=math.inf, smooth_depth=True, size_noise_px=0.0))
    for f in range(8):
        z = 30.0 - 1.0 * f
        result = render([Thing(CAR, 1, (2.0, 1.0, z))])
        i = segment_of(result, CAR, 1)
        seg = result.segments[i]
        pull = 1.0 + rng.uniform(0.0, 0.1)  # the mean reads up to 10 % farther than the median
        result.segments[i] = dataclasses.replace(
            seg, depth_mean=seg.depth_mean * pull, centroid=tuple(c * pull for c in seg.centroid)
        )
        frame = tracker.update(result, stamp_ns=stamp(f))
        track = frame.tracks[i]
    np.testing.assert_allclose(track.velocity, (0.0, 0.0, -10.0), atol=1e-6)
    assert track.depth == pytest.approx(23.0, abs=1e-6)


def _approach_with_noisy_depth(size_noise_px: float) -> np.ndarray:
    """vz error per frame of a car closing at 8 m/s from 30 m, depth read with 4 % noise."""
    rng = np.random.default_rng(5)
    size, k = (240, 480), intrinsics(240, 480)
    tracker = Tracker(shown(size_noise_px=size_noise_px))
    errors = []
    for f in range(30):
        result = render([Thing(CAR, 1, (1.0, 0.5, 30.0 - 0.8 * f))], size=size, k=k)
        i = segment_of(result, CAR, 1)
        seg = result.segments[i]
        noise = 1.0 + rng.normal(0.0, 0.04)
        result.segments[i] = dataclasses.replace(
            seg,
            depth_mean=seg.depth_mean * noise,
            depth_median=seg.depth_median * noise,
            centroid=tuple(c * noise for c in seg.centroid),
        )
        errors.append(tracker.update(result, stamp_ns=stamp(f)).tracks[i].velocity[2] + 8.0)
    return np.array(errors)


def test_looming_halves_the_velocity_error_of_noisy_depth() -> None:
    # The car's box (1.5 m tall: 36 px at 30 m, 72 at 15 m) grows as it closes; the rate of
    # its inverse height times the depth is vz, whatever the depth's noise. Fused with the
    # depth's own rate by inverse variance, the error over frames 15..29 falls from 0.53 m/s
    # (depth alone, size_noise_px 0) to 0.26 m/s; both known from frame 6 on.
    depth_only = _approach_with_noisy_depth(0.0)
    fused = _approach_with_noisy_depth(2.0)
    for errors in (depth_only, fused):
        assert np.isnan(errors[:6]).all() and np.isfinite(errors[6:]).all()
    assert np.mean(np.abs(depth_only[15:])) == pytest.approx(0.531, abs=0.01)
    assert np.mean(np.abs(fused[15:])) == pytest.approx(0.262, abs=0.01)


def test_looming_of_a_box_being_covered_is_left_out() -> None:
    # A car closes at 8 m/s with exact depth while something covers it from below: its box's
    # height shrinks 4 % per frame. Looming then says the car recedes. While its own std is
    # still large (frames 6-8) the gap is within 2 sigma and it pulls vz by up to 0.81 m/s;
    # from frame 9 on it is far outside and left out: vz is the depth's own, exactly as with
    # looming off.
    k = intrinsics(240, 480)

    def run(size_noise_px: float) -> list[float]:
        tracker = Tracker(shown(size_noise_px=size_noise_px))
        out = []
        for f in range(16):
            result = render([Thing(CAR, 1, (1.0, 0.5, 30.0 - 0.8 * f))], size=(240, 480), k=k)
            i = segment_of(result, CAR, 1)
            seg = result.segments[i]
            height = (seg.y_max - seg.y_min + 1) * 0.96**f
            result.segments[i] = dataclasses.replace(seg, y_max=seg.y_min + round(height) - 1)
            out.append(tracker.update(result, stamp_ns=stamp(f)).tracks[i].velocity[2])
        return out

    covered, depth_only = run(2.0), run(0.0)
    assert np.isnan(covered[:6]).all() and np.allclose(depth_only[6:], -8.0, atol=1e-6)
    np.testing.assert_allclose(covered[6:9], [-7.266, -7.192, -7.206], atol=1e-3)
    assert covered[9:] == depth_only[9:]


# --------------------------------------------------------------------- depth smoothing
def test_depth_smoothing_cuts_flicker_of_a_still_car() -> None:
    # A still car at 20 m with 3 % depth noise (sigma 0.6 m): the raw frame-to-frame change
    # averages 2 sigma / sqrt(pi) = 0.68 m. The filter averages over its effective memory
    # (several frames at accel_noise 2 m/s^2, R = 0.7^2 m^2), so the smoothed change must be
    # well under half of the raw one. With smoothing off, depth is the segment's own.
    rng = np.random.default_rng(5)
    noise = rng.normal(0.0, 0.6, 60)
    smooth, raw = [], []
    for on, sink in ((True, smooth), (False, raw)):
        tracker = Tracker(shown(smooth_depth=on))
        for f in range(60):
            result = render([Thing(CAR, 1, (0.0, 1.0, 20.0 + noise[f]))])
            frame = tracker.update(result, stamp_ns=stamp(f))
            track = track_of(frame, result, CAR, 1)
            i = segment_of(result, CAR, 1)
            if not on:
                assert track.depth == result.segments[i].depth_mean
            # What the messages, overlay and files show: the track's depth as the segment's.
            assert result.with_tracks(frame.tracks).segments[i].depth_mean == track.depth
            sink.append(track.depth)
    flicker_raw = np.mean(np.abs(np.diff(raw[10:])))
    flicker_smooth = np.mean(np.abs(np.diff(smooth[10:])))
    assert flicker_raw == pytest.approx(2 * 0.6 / math.sqrt(math.pi), rel=0.25)
    assert flicker_smooth < 0.5 * flicker_raw


# --------------------------------------------------------------------- video panoptic map
def test_track_panoptic_uses_track_ids_as_instances() -> None:
    tracker = Tracker(shown())
    a, b = Thing(CAR, 5, (-2.0, 1.0, 10.0)), Thing(PERSON, 9, (2.0, 0.5, 8.0), (0.6, 1.7))
    result = render([a, b])
    result.panoptic[0, 0] = -1  # a void pixel stays void
    frame = tracker.update(result, stamp_s=0.0)
    video = track_panoptic(result, frame.tracks)
    assert video.dtype == np.int32 and video.shape == result.panoptic.shape
    # Ids in segment order: the person (11009) 1, the car (13005) 2.
    expected = {ROAD * 1000: ROAD * 1000, SKY * 1000: SKY * 1000, CAR * 1000 + 5: CAR * 1000 + 2}
    expected[PERSON * 1000 + 9] = PERSON * 1000 + 1
    for old, new in expected.items():
        assert (video[result.panoptic == old] == new).all()
    assert video[0, 0] == -1
    # Without tracks: the ids the result's segments carry (with_tracks), the same map.
    np.testing.assert_array_equal(track_panoptic(result.with_tracks(frame.tracks)), video)
    with pytest.raises(ValueError, match="2 tracks for 4 segments"):
        track_panoptic(result, frame.tracks[:2])


def test_relabel_ids_is_the_same_with_a_table_or_a_search() -> None:
    # track_panoptic, the tracker's mask grid and the 3D extents relabel maps with result.relabel_ids:
    # a table for ids up to 2**24, a search in the sorted ids beyond (no table grows with the ids).
    from panoptic_depthlab_ros.result import relabel_ids

    rng = np.random.default_rng(3)
    ids = np.array([13004, 11002, 0, 13001])
    panoptic = rng.choice(np.array([-1, 0, 11002, 13001, 13004, 13005, 7]), size=(6, 9)).astype(np.int32)
    values = np.array([40, 30, 20, 10])
    table = relabel_ids(panoptic, ids, values, -5)
    shift = 1 << 30  # the same map with ids above the table's limit
    far = relabel_ids(
        np.where(panoptic > 0, panoptic + shift, panoptic), np.where(ids > 0, ids + shift, ids), values, -5
    )
    want = np.vectorize(lambda v: dict(zip(ids.tolist(), values.tolist(), strict=True)).get(int(v), -5))(panoptic)
    np.testing.assert_array_equal(table, want)
    np.testing.assert_array_equal(far, want)
    assert table.dtype == far.dtype == np.int32
    np.testing.assert_array_equal(relabel_ids(panoptic, ids[:0], values[:0], 9), np.full(panoptic.shape, 9))
