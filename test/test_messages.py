"""Our messages: definitions match what rosidl generated, and they travel over
real rclpy (loopback, test-unique domain) with every field intact."""

from __future__ import annotations

import math

import numpy as np
import pytest
from rosbags.interfaces import Nodetype
from rosbags.typesys import get_types_from_msg

from pdl_testing import REPO, spin_until

# rosbags' parser names builtins the .msg way; rosidl's introspection another.
_ROSIDL_NAME = {"float32": "float", "float64": "double", "bool": "boolean"}


def _msg_fields(name: str) -> list[tuple[str, str]]:
    """(field, rosidl type string) pairs parsed from msg/<name>.msg by rosbags."""
    text = (REPO / "msg" / f"{name}.msg").read_text()
    types = get_types_from_msg(text, f"panoptic_depthlab_ros/msg/{name}")
    _consts, fields = types[f"panoptic_depthlab_ros/msg/{name}"]
    out = []
    for field, (kind, spec) in fields:
        if kind == Nodetype.BASE:  # (typename, string bound)
            out.append((field, _ROSIDL_NAME.get(spec[0], spec[0])))
        elif kind == Nodetype.NAME:  # "pkg/msg/Type"
            out.append((field, spec.replace("/msg/", "/")))
        elif kind == Nodetype.SEQUENCE and spec[0][0] == Nodetype.NAME and spec[1] == 0:
            out.append((field, f"sequence<{spec[0][1].replace('/msg/', '/')}>"))
        else:
            raise AssertionError(f"field kind {kind} of {field} is not handled by this test")
    return out


@pytest.mark.parametrize("name", ["SegmentDepth", "SegmentDepthArray"])
def test_generated_classes_match_msg_files(name: str) -> None:
    from panoptic_depthlab_ros import msg

    generated = getattr(msg, name).get_fields_and_field_types()
    assert list(generated.items()) == _msg_fields(name)


def test_required_fields_present() -> None:
    from panoptic_depthlab_ros.msg import SegmentDepth, SegmentDepthArray

    required = (
        "id category_id label is_thing score area x_min y_min x_max y_max depth_valid_pixels "
        "depth_mean depth_median depth_min depth_std depth_robust centroid "
        "track_id track_age velocity time_to_contact at_rest"
    ).split()
    assert set(required) <= set(SegmentDepth.get_fields_and_field_types())
    assert list(SegmentDepthArray.get_fields_and_field_types()) == [
        "header",
        "height",
        "width",
        "label_divisor",
        "segments",
    ]


def _segment(i: int, nan_centroid: bool):
    """A car; with a centroid: tracked (#12, 7 frames, at rest, closing at 2 m/s); without: untracked (0, NaN)."""
    from geometry_msgs.msg import Point, Vector3

    from panoptic_depthlab_ros.msg import SegmentDepth

    nan = float("nan")
    return SegmentDepth(
        id=13000 + i,
        category_id=13,
        label="car",
        is_thing=True,
        score=0.5 + 0.125 * i,  # float32-exact
        area=1000 + i,
        x_min=1,
        y_min=2,
        x_max=30 + i,
        y_max=40,
        depth_valid_pixels=900,
        depth_mean=12.5,
        depth_median=12.25,
        depth_min=10.0,
        depth_std=1.5,
        depth_robust=12.375,
        centroid=Point(x=nan, y=nan, z=nan) if nan_centroid else Point(x=1.0, y=-0.5, z=12.5),
        track_id=0 if nan_centroid else 12,
        track_age=0 if nan_centroid else 7,
        velocity=Vector3(x=nan, y=nan, z=nan) if nan_centroid else Vector3(x=0.5, y=0.0, z=-2.0),
        time_to_contact=nan if nan_centroid else 6.25,
        at_rest=not nan_centroid,
    )


def _roundtrip(context, msg_type, topic: str, message):
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    node = Node("roundtrip", context=context)
    got = []
    node.create_subscription(msg_type, topic, got.append, 10)
    pub = node.create_publisher(msg_type, topic, 10)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)

    def received() -> bool:
        if not got:
            pub.publish(message)
        return bool(got)

    try:
        assert spin_until(executor, received, timeout=15.0), f"nothing received on {topic}"
    finally:
        executor.shutdown()
        node.destroy_node()
    return got[0]


def test_segment_depth_array_roundtrip(ros_context) -> None:
    from std_msgs.msg import Header

    from panoptic_depthlab_ros.msg import SegmentDepthArray

    sent = SegmentDepthArray(
        header=Header(frame_id="camera_optical"),
        height=480,
        width=640,
        label_divisor=1000,
        segments=[_segment(1, nan_centroid=False), _segment(2, nan_centroid=True)],
    )
    receding = _segment(3, nan_centroid=False)
    receding.velocity.z, receding.time_to_contact, receding.at_rest = 1.5, math.inf, False  # moving, not closing
    sent.segments.append(receding)
    sent.header.stamp.sec, sent.header.stamp.nanosec = 1234, 5678
    got = _roundtrip(ros_context, SegmentDepthArray, "segments", sent)
    assert got.header == sent.header
    assert (got.height, got.width, got.label_divisor) == (480, 640, 1000)
    assert len(got.segments) == 3
    a, b, c = got.segments
    assert c == receding and c.time_to_contact == math.inf and c.at_rest is False
    assert a == sent.segments[0]  # finite everywhere: plain equality holds
    assert (a.centroid.x, a.centroid.y, a.centroid.z) == (1.0, -0.5, 12.5)
    assert (a.track_id, a.track_age, a.time_to_contact, a.at_rest) == (12, 7, 6.25, True)
    assert (a.velocity.x, a.velocity.y, a.velocity.z) == (0.5, 0.0, -2.0)
    assert all(math.isnan(v) for v in (b.centroid.x, b.centroid.y, b.centroid.z))
    assert all(math.isnan(v) for v in (b.velocity.x, b.velocity.y, b.velocity.z, b.time_to_contact))
    assert b.at_rest is False  # untracked
    for field in b.get_fields_and_field_types():
        if field not in ("centroid", "velocity", "time_to_contact"):
            assert getattr(b, field) == getattr(sent.segments[1], field), field
    assert a.score == 0.625


def test_image_roundtrip(ros_context) -> None:
    from sensor_msgs.msg import Image

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    sent = Image(height=48, width=64, encoding="rgb8", is_bigendian=0, step=64 * 3)
    sent.header.frame_id = "cam"
    sent.header.stamp.sec, sent.header.stamp.nanosec = 7, 11
    sent.data = pixels.tobytes()
    got = _roundtrip(ros_context, Image, "image", sent)
    for field in Image.get_fields_and_field_types():
        assert getattr(got, field) == getattr(sent, field), field
    np.testing.assert_array_equal(np.frombuffer(got.data, np.uint8).reshape(48, 64, 3), pixels)
