"""The output table and the one result -> messages function (panoptic_depthlab_ros/node_outputs.py),
with rosbags' classes (the bag tool's) on a tiny hand-built result."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from panoptic_depthlab_ros.bag_reading import typestore_with_our_messages
from panoptic_depthlab_ros.geometry3d import AT_REST_ALPHA
from panoptic_depthlab_ros.metadata import cityscapes_metadata
from panoptic_depthlab_ros.msg_conversions import OUTPUT_ENCODINGS
from panoptic_depthlab_ros.node_outputs import (
    OUTPUT_NAMES,
    OUTPUTS,
    QOS_DEPTH,
    OutputSettings,
    output_messages,
)
from panoptic_depthlab_ros.result import PanopticDepthResult, SegmentDepth
from panoptic_depthlab_ros.tracker import SegmentTrack, TrackState
from panoptic_depthlab_ros.visualize import segment_label

K = np.array([[50.0, 0, 4.0], [0, 50.0, 2.0], [0, 0, 1]])


@pytest.fixture(scope="module")
def typestore():
    return typestore_with_our_messages()


def _result(with_depth: bool) -> PanopticDepthResult:
    panoptic = np.full((4, 8), 0, np.int32)
    panoptic[:, 4:] = 13001
    car = SegmentDepth(13001, 13, "car", True, 0.9, 16, 4, 0, 7, 3, 16, 10.0, 10.0, 10.0, 0.0, 10.0, (0.4, 0.0, 10.0))
    road = SegmentDepth(0, 0, "road", False, 0.8, 16, 0, 0, 3, 3, 16, 5.0, 5.0, 5.0, 0.0, 5.0, (-0.3, 0.0, 5.0))
    depth = np.where(panoptic > 0, 10.0, 5.0).astype(np.float32) if with_depth else None
    return PanopticDepthResult(panoptic, (panoptic // 1000).astype(np.uint8), depth, [road, car])


def _messages(typestore, result, camera_k, wanted=OUTPUT_NAMES):
    t = typestore.types
    header = t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=1, nanosec=2), frame_id="cam")
    return output_messages(
        result,
        np.zeros((4, 8, 3), np.uint8),
        wanted=wanted,
        header=header,
        camera_k=camera_k,
        settings=OutputSettings(points_stride=1),
        classes=t.__getitem__,
        class_colors=cityscapes_metadata().colors,
    )


def test_the_table() -> None:
    assert len(set(OUTPUT_NAMES)) == len(OUTPUTS)
    assert OUTPUT_NAMES[0] == "segments" and OUTPUT_NAMES[-1] == "overlay"  # records first, the picture last
    for o in OUTPUTS:
        assert o.topic == f"/panoptic_depthlab/{o.name}" and o.qos in QOS_DEPTH and len(o.description) > 20
        assert (o.msg_type == "sensor_msgs/msg/Image") == (o.encoding in OUTPUT_ENCODINGS), o.name
    assert {o.name for o in OUTPUTS if o.needs_intrinsics} == {"markers", "points"}
    assert {o.name for o in OUTPUTS if o.needs_depth} == {"depth", "markers", "points"}
    assert {o.name for o in OUTPUTS if o.needs_tracks} == {"tracked_panoptic"}


def _tracked(result: PanopticDepthResult) -> PanopticDepthResult:
    """The car tracked as #7, closing at 2 m/s, and moving right at 0.5 m/s."""
    car = SegmentTrack(7, 12, TrackState.CONFIRMED, (0.5, 0.0, -2.0), 5.0, 10.0)
    return result.with_tracks([SegmentTrack(depth=5.0), car])


def test_every_output_with_depth_and_intrinsics(typestore) -> None:
    messages = _messages(typestore, _tracked(_result(True)), K)
    assert list(messages) == list(OUTPUT_NAMES)  # table order
    for o in OUTPUTS:  # each serializes as its type
        typestore.serialize_cdr(messages[o.name], o.msg_type)
    assert messages["panoptic"].encoding == "32SC1" and messages["depth"].encoding == "32FC1"
    assert [s.id for s in messages["segments"].segments] == [0, 13001]
    assert messages["points"].width == 32  # every pixel has depth, stride 1
    markers = messages["markers"].markers
    assert [m.text for m in markers if m.ns == "labels"] == ["road 5.0 m", "car #7 10.0 m, 2.0 m/s closing"]
    (arrow,) = [m for m in markers if m.ns == "velocities"]
    assert arrow.type == 0 and arrow.id == 1  # ARROW, segment 1
    assert [(p.x, p.y, p.z) for p in arrow.points] == [(0.4, 0.0, 10.0), (0.9, 0.0, 8.0)]  # centroid + v * 1 s
    car = messages["segments"].segments[1]
    assert (car.track_id, car.track_age, car.time_to_contact) == (7, 12, 5.0)
    assert (car.velocity.x, car.velocity.y, car.velocity.z) == (0.5, 0.0, -2.0)
    road = messages["segments"].segments[0]
    assert (road.track_id, road.track_age) == (0, 0) and np.isnan(road.velocity.z)
    tracked = messages["tracked_panoptic"]
    ids = np.frombuffer(tracked.data, np.int32).reshape(4, 8)
    np.testing.assert_array_equal(ids[:, 4:], 13007)  # class * 1000 + track id
    np.testing.assert_array_equal(ids[:, :4], 0)  # road, stuff: instance 0
    assert (car.at_rest, road.at_rest) == (False, False)  # tracked without odometry: never at rest


def test_a_thing_at_rest_says_so_in_the_segments_and_its_label(typestore) -> None:
    """The car found still given odometry: at_rest in ~/segments, ', at rest' after its speed in the
    label (the overlay's and the markers'); the arrow stays that of its velocity, faint (the world's
    motion, not the thing's own)."""
    car = SegmentTrack(7, 12, TrackState.CONFIRMED, (0.0, 0.0, -8.0), 1.25, 10.0, at_rest=True)
    result = _result(True).with_tracks([SegmentTrack(depth=5.0), car])
    messages = _messages(typestore, result, K)
    road_msg, car_msg = messages["segments"].segments
    assert (car_msg.track_id, car_msg.at_rest, car_msg.velocity.z, car_msg.time_to_contact) == (7, True, -8.0, 1.25)
    assert road_msg.at_rest is False
    raw = typestore.serialize_cdr(messages["segments"], OUTPUTS[0].msg_type)  # and it travels
    assert [s.at_rest for s in typestore.deserialize_cdr(raw, OUTPUTS[0].msg_type).segments] == [False, True]
    labels = [m.text for m in messages["markers"].markers if m.ns == "labels"]
    assert labels == ["road 5.0 m", "car #7 10.0 m, 8.0 m/s closing, at rest"]
    (arrow,) = [m for m in messages["markers"].markers if m.ns == "velocities"]
    assert [(p.x, p.y, p.z) for p in arrow.points] == [(0.4, 0.0, 10.0), (0.4, 0.0, 2.0)]  # centroid + v * 1 s
    assert arrow.color.a == pytest.approx(AT_REST_ALPHA)
    moving = _messages(
        typestore, _result(True).with_tracks([SegmentTrack(depth=5.0), dataclasses.replace(car, at_rest=False)]), K
    )
    (solid,) = [m for m in moving["markers"].markers if m.ns == "velocities"]
    assert solid.color.a == 1.0 and (solid.color.r, solid.color.g, solid.color.b) == (
        arrow.color.r,
        arrow.color.g,
        arrow.color.b,
    )

    still_camera = dataclasses.replace(result.segments[1], velocity=(0.0, 0.0, 0.0), time_to_contact=math.inf)
    assert segment_label(still_camera) == "car #7 10.0 m, at rest"  # no speed worth a word
    assert segment_label(still_camera, depth=False) == "car #7"
    untracked = dataclasses.replace(still_camera, track_id=0)
    assert segment_label(untracked) == "car 10.0 m"  # only a tracked thing's word counts


def test_what_a_frame_cannot_give_is_left_out(typestore) -> None:
    tracked = ["segments", "panoptic", "tracked_panoptic", "semantic", "depth", "overlay"]
    assert list(_messages(typestore, _tracked(_result(True)), None)) == tracked
    assert list(_messages(typestore, _result(True), None)) == ["segments", "panoptic", "semantic", "depth", "overlay"]
    assert list(_messages(typestore, _result(False), K)) == ["segments", "panoptic", "semantic", "overlay"]
    assert list(_messages(typestore, _result(True), K, wanted={"overlay", "segments"})) == ["segments", "overlay"]
    assert _messages(typestore, _result(True), K, wanted=()) == {}


def test_output_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="near < far"):
        OutputSettings(near=60.0, far=5.0)
    with pytest.raises(ValueError, match="points_color"):
        OutputSettings(points_color="rainbow")
    with pytest.raises(ValueError, match="points_stride"):
        OutputSettings(points_stride=0)
