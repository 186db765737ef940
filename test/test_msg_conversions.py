"""Messages <-> numpy (panoptic_depthlab_ros/msg_conversions.py), with rclpy's
generated classes and with rosbags' dataclasses (the bag tools' path)."""

from __future__ import annotations

import math
import sys
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from node_utils import image_msg, random_image
from panoptic_depthlab_ros.errors import InputError, PanopticDepthLabError
from panoptic_depthlab_ros.msg_conversions import (
    ImageConversionError,
    array_to_image,
    camera_k,
    compressed_to_bgr,
    depth_for_rep118,
    image_to_bgr,
    segment_from_msg,
    segment_to_msg,
    segments_to_msg,
)
from panoptic_depthlab_ros.result import PanopticDepthResult, SegmentDepth
from pdl_testing import REPO, SEGMENT_EXACT_FIELDS, imports_without_ros

ENCODINGS = ("bgr8", "rgb8", "bgra8", "rgba8", "mono8")


def _expected(bgr: np.ndarray, encoding: str) -> np.ndarray:
    if encoding == "mono8":
        gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        return np.repeat(gray[..., None], 3, axis=2)
    return bgr


@pytest.mark.parametrize("pad", [0, 5])
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_image_to_bgr_every_encoding(encoding: str, pad: int) -> None:
    bgr = random_image(3, 24, 40)
    msg = image_msg(bgr, encoding, pad=pad)
    channels = {"mono8": 1, "bgr8": 3, "rgb8": 3, "bgra8": 4, "rgba8": 4}[encoding]
    assert msg.step == 40 * channels + pad
    out = image_to_bgr(msg)
    assert out.shape == (24, 40, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, _expected(bgr, encoding))


@pytest.mark.parametrize("pad", [0, 7])
def test_bgr8_is_zero_copy(pad: int) -> None:
    msg = image_msg(random_image(4, 16, 32), "bgr8", pad=pad)
    out = image_to_bgr(msg)
    assert np.shares_memory(out, np.frombuffer(msg.data, np.uint8))
    # The padded view still works with OpenCV and the predictor's preprocessing.
    assert cv2.resize(out, (16, 8)).shape == (8, 16, 3)


def test_big_endian_flag_irrelevant_for_8_bit() -> None:
    bgr = random_image(5, 8, 8)
    msg = image_msg(bgr, "rgb8")
    msg.is_bigendian = 1
    np.testing.assert_array_equal(image_to_bgr(msg), bgr)


def _bad(**changes):
    msg = image_msg(random_image(6, 8, 16), "rgb8")
    for k, v in changes.items():
        setattr(msg, k, v)
    return msg


@pytest.mark.parametrize(
    ("changes", "kind", "words"),
    [
        ({"encoding": "yuv422"}, "encoding", "unsupported encoding 'yuv422'"),
        ({"encoding": "16UC1"}, "encoding", "unsupported encoding '16UC1'"),
        ({"data": bytes(8 * 16 * 3 - 1)}, "data", "fewer than step*height"),
        ({"step": 16 * 3 - 1}, "layout", "step 47 is smaller than width*channels"),
        ({"height": 0, "data": b""}, "empty", "zero-size image"),
        ({"width": 0}, "empty", "zero-size image"),
        ({"is_bigendian": 2}, "layout", "is_bigendian must be 0 or 1"),
    ],
)
def test_bad_images_are_named(changes: dict, kind: str, words: str) -> None:
    with pytest.raises(ImageConversionError) as info:
        image_to_bgr(_bad(**changes))
    assert info.value.kind == kind
    assert words in str(info.value)
    assert isinstance(info.value, InputError) and isinstance(info.value, PanopticDepthLabError)


def test_pixel_limit() -> None:
    msg = image_msg(random_image(7, 8, 16), "bgr8")
    assert image_to_bgr(msg, max_pixels=128).shape == (8, 16, 3)
    with pytest.raises(ImageConversionError, match="128 pixels, above the limit max_input_pixels=127"):
        image_to_bgr(msg, max_pixels=127)


def test_longer_data_than_needed_is_fine() -> None:
    bgr = random_image(8, 8, 16)
    msg = image_msg(bgr, "bgr8")
    msg.data = bytes(msg.data) + b"\x01\x02"
    np.testing.assert_array_equal(image_to_bgr(msg), bgr)


def _compressed(data: bytes, fmt: str):
    from sensor_msgs.msg import CompressedImage

    return CompressedImage(format=fmt, data=data)


def test_compressed_png_exact_and_jpeg_close() -> None:
    bgr = random_image(9, 32, 48)
    png = cv2.imencode(".png", bgr)[1].tobytes()
    np.testing.assert_array_equal(compressed_to_bgr(_compressed(png, "png")), bgr)
    jpg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    out = compressed_to_bgr(_compressed(jpg, "rgb8; jpeg compressed bgr8"))
    assert out.shape == bgr.shape
    assert np.abs(out.astype(int) - bgr).mean() < 8
    with pytest.raises(ImageConversionError, match="above the limit"):
        compressed_to_bgr(_compressed(png, "png"), max_pixels=100)


@pytest.mark.parametrize(
    ("data", "fmt", "words"),
    [
        (b"not an image at all", "jpeg", "cannot decode"),
        (b"", "jpeg", "no data"),
        (b"\x89PNG....", "16UC1; compressedDepth", "compressed depth"),
    ],
)
def test_bad_compressed(data: bytes, fmt: str, words: str) -> None:
    with pytest.raises(ImageConversionError, match=words):
        compressed_to_bgr(_compressed(data, fmt))


@pytest.mark.parametrize(
    ("encoding", "array"),
    [
        ("32SC1", np.array([[-1, 0, 13001], [11000, 2**31 - 1, -(2**31)]], np.int32)),
        ("mono8", np.array([[0, 255, 7]], np.uint8)),
        ("32FC1", np.array([[1.5, np.nan], [np.inf, 80.25]], np.float32)),
        ("bgr8", random_image(10, 5, 7)),
    ],
)
def test_array_to_image_roundtrip(encoding: str, array: np.ndarray) -> None:
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    header = Header(frame_id="cam_optical")
    msg = array_to_image(Image, array[:, ::-1], encoding=encoding, header=header)  # non-contiguous input
    assert msg.header is header
    assert (msg.height, msg.width, msg.encoding) == (array.shape[0], array.shape[1], encoding)
    assert msg.step == array.shape[1] * array.itemsize * (3 if array.ndim == 3 else 1)
    assert msg.is_bigendian == (sys.byteorder == "big" and array.itemsize > 1)
    back = np.frombuffer(msg.data, array.dtype).reshape(array[:, ::-1].shape)
    np.testing.assert_array_equal(back, array[:, ::-1])


def test_array_to_image_rejects_wrong_dtype() -> None:
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    with pytest.raises(ValueError, match="32SC1 needs a int32"):
        array_to_image(Image, np.zeros((2, 2), np.int64), encoding="32SC1", header=Header())
    with pytest.raises(ValueError, match="output encoding"):
        array_to_image(Image, np.zeros((2, 2), np.uint16), encoding="16UC1", header=Header())


def test_depth_rep118() -> None:
    good = np.array([[1.0, 2.5]], np.float32)
    assert depth_for_rep118(good) is good  # nothing to fix: no copy
    d = np.array([[1.0, 0.0, -2.0, np.inf, np.nan, 3.0]], np.float32)
    out = depth_for_rep118(d)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(out), [[False, True, True, True, True, False]])
    assert out[0, 0] == 1.0 and out[0, 5] == 3.0


def test_camera_k() -> None:
    from sensor_msgs.msg import CameraInfo

    info = CameraInfo()
    info.k = np.array([100.0, 0, 64, 0, 110.0, 32, 0, 0, 1])
    k = camera_k(info)
    assert k.shape == (3, 3) and k[1, 1] == 110.0 and k[0, 2] == 64
    # A 2x-binned window starting at (20, 8) of that sensor: K of the pixels received.
    info.binning_x = info.binning_y = 2
    info.roi.x_offset, info.roi.y_offset, info.roi.width, info.roi.height = 20, 8, 88, 48
    np.testing.assert_allclose(camera_k(info), [[50.0, 0, 22.0], [0, 55.0, 12.0], [0, 0, 1]])


@pytest.mark.parametrize(
    ("k", "words"),
    [
        ([100.0, 0, 64, 0, 100.0, 32, 0, 0], "must have 9 values, got 8"),
        ([100.0, 0, 64, 0, math.nan, 32, 0, 0, 1], "non-finite"),
        ([0.0] * 9, "focal lengths must be > 0"),
        ([100.0, 0, 64, 0, -1.0, 32, 0, 0, 1], "fy=-1"),
        (["a"] * 9, "not numeric"),
    ],
)
def test_camera_k_malformed(k: list, words: str) -> None:
    with pytest.raises(ImageConversionError, match=words) as info:
        camera_k(SimpleNamespace(k=k))  # duck-typed: rclpy cannot even build a wrong-length k
    assert info.value.kind == "camera_info"


def _result() -> PanopticDepthResult:
    nan = float("nan")
    segs = [
        SegmentDepth(
            id=0,
            category_id=0,
            label="road",
            is_thing=False,
            score=0.75,
            area=100,
            x_min=0,
            y_min=5,
            x_max=19,
            y_max=9,
            depth_valid_pixels=100,
            depth_mean=4.5,
            depth_median=4.25,
            depth_min=1.0,
            depth_std=0.5,
            depth_robust=4.375,
            centroid=(0.25, 1.5, 4.5),
        ),
        SegmentDepth(
            id=13001,
            category_id=13,
            label="car",
            is_thing=True,
            score=0.5,
            area=9,
            x_min=2,
            y_min=1,
            x_max=4,
            y_max=3,
        ),  # depth fields NaN, centroid NaN
    ]
    panoptic = np.full((10, 20), -1, np.int32)
    return PanopticDepthResult(
        panoptic=panoptic,
        semantic=np.zeros((10, 20), np.uint8),
        depth=np.full((10, 20), nan, np.float32),
        segments=segs,
    )


def _assert_segment_equal(msg, seg: SegmentDepth) -> None:
    for name in SEGMENT_EXACT_FIELDS:
        assert getattr(msg, name) == getattr(seg, name), name
    for name in ("score", "depth_mean", "depth_median", "depth_min", "depth_std", "depth_robust"):
        np.testing.assert_equal(np.float32(getattr(msg, name)), np.float32(getattr(seg, name)), name)
    np.testing.assert_equal([msg.centroid.x, msg.centroid.y, msg.centroid.z], list(seg.centroid))
    assert (msg.track_id, msg.track_age) == (seg.track_id, seg.track_age)
    np.testing.assert_equal([msg.velocity.x, msg.velocity.y, msg.velocity.z], list(seg.velocity))
    np.testing.assert_equal(np.float32(msg.time_to_contact), np.float32(seg.time_to_contact))
    assert msg.at_rest is seg.at_rest


def _tracked_result():
    """``_result()`` with its first segment tracked (#5, seen 4 frames, at rest, closing at 2 m/s), the second
    untracked."""
    from panoptic_depthlab_ros.tracker import SegmentTrack

    at_rest = SegmentTrack(5, 4, None, (0.5, -0.25, -2.0), 2.25, at_rest=True)
    return _result().with_tracks([at_rest, SegmentTrack()])


def test_with_tracks_carries_the_track_fields() -> None:
    tracked, untracked = _tracked_result().segments
    assert (tracked.track_id, tracked.track_age, tracked.time_to_contact) == (5, 4, 2.25)
    assert tracked.velocity == (0.5, -0.25, -2.0)
    assert tracked.at_rest is True and tracked.depth_mean == 4.5  # the track's depth is NaN: the segment's stays
    assert (untracked.track_id, untracked.track_age, untracked.at_rest) == (0, 0, False)
    assert math.isnan(untracked.time_to_contact)


def test_segment_from_msg_inverts_segment_to_msg_and_an_older_message_is_not_at_rest() -> None:
    from geometry_msgs.msg import Point, Vector3

    from panoptic_depthlab_ros.msg import SegmentDepth as SegmentMsg

    classes = {"segment_cls": SegmentMsg, "point_cls": Point, "vector_cls": Vector3}
    tracked, untracked = _tracked_result().segments
    back = segment_from_msg(segment_to_msg(tracked, **classes))
    assert back == tracked and back.at_rest is True  # finite everywhere: plain equality holds
    back = segment_from_msg(segment_to_msg(untracked, **classes))
    assert (back.track_id, back.track_age, back.at_rest) == (0, 0, False) and math.isnan(back.time_to_contact)
    # A message of the definition before at_rest (one of a bag recorded then): the track fields it
    # has are taken, at_rest reads False.
    msg = segment_to_msg(tracked, **classes)
    older = SimpleNamespace(**{f: getattr(msg, f) for f in SegmentMsg.get_fields_and_field_types() if f != "at_rest"})
    back = segment_from_msg(older)
    assert (back.track_id, back.track_age, back.velocity, back.time_to_contact) == (5, 4, (0.5, -0.25, -2.0), 2.25)
    assert back.at_rest is False


def test_segments_to_msg_rclpy() -> None:
    from geometry_msgs.msg import Point, Vector3
    from std_msgs.msg import Header

    from panoptic_depthlab_ros.msg import SegmentDepth as SegmentMsg
    from panoptic_depthlab_ros.msg import SegmentDepthArray

    result = _tracked_result()
    header = Header(frame_id="cam")
    msg = segments_to_msg(
        result, header=header, array_cls=SegmentDepthArray, segment_cls=SegmentMsg, point_cls=Point, vector_cls=Vector3
    )
    assert (msg.height, msg.width, msg.label_divisor, msg.header) == (10, 20, 1000, header)
    assert len(msg.segments) == 2
    for m, s in zip(msg.segments, result.segments, strict=True):
        _assert_segment_equal(m, s)
    with pytest.raises(ValueError, match="needs height"):
        segments_to_msg(
            result.segments,
            header=header,
            array_cls=SegmentDepthArray,
            segment_cls=SegmentMsg,
            point_cls=Point,
            vector_cls=Vector3,
        )


@pytest.fixture(scope="module")
def rosbags_types():
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_JAZZY)
    for name in ("SegmentDepth", "SegmentDepthArray"):
        store.register(
            get_types_from_msg((REPO / "msg" / f"{name}.msg").read_text(), f"panoptic_depthlab_ros/msg/{name}")
        )
    return store


def test_segments_to_msg_rosbags_classes_serialize_like_rclpy(rosbags_types) -> None:
    """The bag tools' path: the same function fills rosbags dataclasses, and their
    CDR bytes deserialize in rclpy to the message rclpy's own classes give."""
    from geometry_msgs.msg import Point, Vector3
    from rclpy.serialization import deserialize_message
    from std_msgs.msg import Header

    from panoptic_depthlab_ros.msg import SegmentDepth as SegmentMsg
    from panoptic_depthlab_ros.msg import SegmentDepthArray

    t = rosbags_types.types
    header = t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=3, nanosec=4), frame_id="cam")
    bag_msg = segments_to_msg(
        _tracked_result(),
        header=header,
        array_cls=t["panoptic_depthlab_ros/msg/SegmentDepthArray"],
        segment_cls=t["panoptic_depthlab_ros/msg/SegmentDepth"],
        point_cls=t["geometry_msgs/msg/Point"],
        vector_cls=t["geometry_msgs/msg/Vector3"],
    )
    raw = rosbags_types.serialize_cdr(bag_msg, "panoptic_depthlab_ros/msg/SegmentDepthArray")
    got = deserialize_message(bytes(raw), SegmentDepthArray)
    rcl_header = Header(frame_id="cam")
    rcl_header.stamp.sec, rcl_header.stamp.nanosec = 3, 4
    want = segments_to_msg(
        _tracked_result(),
        header=rcl_header,
        array_cls=SegmentDepthArray,
        segment_cls=SegmentMsg,
        point_cls=Point,
        vector_cls=Vector3,
    )
    assert got.header == want.header and len(got.segments) == 2
    assert got.segments[0] == want.segments[0]  # finite everywhere
    _assert_segment_equal(got.segments[1], _tracked_result().segments[1])


def test_rosbags_images_both_ways(rosbags_types) -> None:
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import Image

    t = rosbags_types.types
    header = t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=1, nanosec=2), frame_id="c")
    bgr = random_image(11, 6, 10)
    rgb_rows = np.concatenate([bgr[..., ::-1].reshape(6, 30), np.zeros((6, 2), np.uint8)], axis=1)
    bag_in = t["sensor_msgs/msg/Image"](
        header=header,
        height=6,
        width=10,
        encoding="rgb8",
        is_bigendian=0,
        step=32,
        data=np.ascontiguousarray(rgb_rows).reshape(-1),
    )
    np.testing.assert_array_equal(image_to_bgr(bag_in), bgr)

    depth = np.array([[1.0, 2.0], [np.nan, 4.0]], np.float32)
    bag_out = array_to_image(t["sensor_msgs/msg/Image"], depth, encoding="32FC1", header=header)
    assert isinstance(bag_out.data, np.ndarray) and bag_out.data.dtype == np.uint8
    got = deserialize_message(bytes(rosbags_types.serialize_cdr(bag_out, "sensor_msgs/msg/Image")), Image)
    assert (got.encoding, got.step, got.height, got.width) == ("32FC1", 8, 2, 2)
    np.testing.assert_array_equal(np.frombuffer(got.data, np.float32).reshape(2, 2), depth)

    info = t["sensor_msgs/msg/CameraInfo"]
    assert camera_k(SimpleNamespace(k=np.array([5.0, 0, 1, 0, 5.0, 1, 0, 0, 1])))[0, 0] == 5.0
    assert "k" in info.__dataclass_fields__


def test_conversions_import_without_rclpy() -> None:
    assert imports_without_ros("panoptic_depthlab_ros.msg_conversions", "panoptic_depthlab_ros.geometry3d") == ""
