"""Point cloud and marker geometry (panoptic_depthlab_ros/geometry3d.py) on tiny
hand-built maps, and their messages (msg_conversions.pointcloud_to_msg / markers_to_msg)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from panoptic_depthlab_ros.geometry3d import (
    MIN_BOX_M,
    POINT_DTYPE,
    VOID_RGB,
    instance_rgb,
    point_cloud,
    point_colors,
    segment_extents,
    segment_markers,
)
from panoptic_depthlab_ros.result import PanopticDepthResult, SegmentDepth
from panoptic_depthlab_ros.visualize import depth_to_bgr

# fx = 2, fy = 4, cx = 1, cy = 0.5: x = (u - 1) z / 2, y = (v - 0.5) z / 4.
K = np.array([[2.0, 0.0, 1.0], [0.0, 4.0, 0.5], [0.0, 0.0, 1.0]])
COLORS = [(10 * i, 200 - 10 * i, 7 * i) for i in range(19)]  # RGB per train id
NAN = float("nan")


def _packed(rgb) -> int:
    r, g, b = rgb
    return (r << 16) | (g << 8) | b


def _rgb_bits(points: np.ndarray) -> np.ndarray:
    return points["rgb"].view(np.uint32)


def _reference_points(depth, panoptic, k, stride):
    """Back-projection, written out pixel grid by pixel grid in float64."""
    v, u = np.mgrid[0 : depth.shape[0] : stride, 0 : depth.shape[1] : stride]
    z = depth[::stride, ::stride].astype(np.float64)
    valid = np.isfinite(z) & (z > 0)
    x = (u - k[0, 2]) * z / k[0, 0]
    y = (v - k[1, 2]) * z / k[1, 1]
    return x, y, z, valid, panoptic[::stride, ::stride]


# --------------------------------------------------------------------- point cloud
def test_point_cloud_hand_computed() -> None:
    depth = np.array([[2.0, NAN, 4.0], [0.0, 8.0, np.inf]], np.float32)
    panoptic = np.array([[0, 0, 11001], [-1, 13002, 13002]], np.int32)
    cloud = point_cloud(depth, panoptic, K, class_colors=COLORS, label_divisor=1000)
    # Valid: (v0,u0) z=2, (v0,u2) z=4, (v1,u1) z=8; NaN, 0 and inf are skipped.
    expected_xyz = [
        [(0 - 1) * 2 / 2, (0 - 0.5) * 2 / 4, 2.0],
        [(2 - 1) * 4 / 2, (0 - 0.5) * 4 / 4, 4.0],
        [(1 - 1) * 8 / 2, (1 - 0.5) * 8 / 4, 8.0],
    ]
    p = cloud.points
    assert p.dtype == POINT_DTYPE and p.dtype.itemsize == 20
    assert (cloud.height, cloud.width, cloud.dense) == (1, 3, True)
    np.testing.assert_allclose(np.stack([p["x"], p["y"], p["z"]], 1), expected_xyz, rtol=1e-6)
    assert p["label"].tolist() == [0, 11001, 13002]
    assert _rgb_bits(p).tolist() == [_packed(COLORS[0]), _packed(COLORS[11]), _packed(COLORS[13])]


@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("organized", [False, True])
def test_point_cloud_matches_back_projection_at_stride(stride: int, organized: bool) -> None:
    rng = np.random.default_rng(stride)
    depth = rng.uniform(1, 50, (11, 17)).astype(np.float32)
    depth[rng.random(depth.shape) < 0.3] = NAN
    depth[0, 0] = -1.0
    panoptic = rng.choice([-1, 0, 2000, 11001, 11002, 13005], size=depth.shape).astype(np.int32)
    cloud = point_cloud(
        depth,
        panoptic,
        K,
        class_colors=COLORS,
        label_divisor=1000,
        stride=stride,
        organized=organized,
    )
    x, y, z, valid, labels = _reference_points(depth, panoptic, K, stride)
    p = cloud.points
    if organized:
        assert (cloud.height, cloud.width) == (math.ceil(11 / stride), math.ceil(17 / stride))
        assert cloud.dense is False
        grid = p.reshape(cloud.height, cloud.width)
        for name, ref in (("x", x), ("y", y), ("z", z)):
            np.testing.assert_allclose(grid[name][valid], ref[valid], rtol=1e-5)
            assert np.isnan(grid[name][~valid]).all()  # NaN keeps the grid
        np.testing.assert_array_equal(grid["label"], labels)
    else:
        assert (cloud.height, cloud.width, cloud.dense) == (1, int(valid.sum()), True)
        for name, ref in (("x", x), ("y", y), ("z", z)):
            np.testing.assert_allclose(p[name], ref[valid], rtol=1e-5)  # raster order
        np.testing.assert_array_equal(p["label"], labels[valid])
        assert np.isfinite(np.stack([p["x"], p["y"], p["z"]])).all()


def test_point_cloud_rejects_bad_input() -> None:
    depth = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match="same size"):
        point_cloud(depth, np.zeros((3, 2), np.int32), K, class_colors=COLORS, label_divisor=1000)
    with pytest.raises(ValueError, match="fx, fy > 0"):
        point_cloud(depth, np.zeros((2, 3), np.int32), np.zeros((3, 3)), class_colors=COLORS, label_divisor=1000)
    with pytest.raises(ValueError, match="stride"):
        point_cloud(depth, np.zeros((2, 3), np.int32), K, class_colors=COLORS, label_divisor=1000, stride=0)


def test_point_colors_class_and_instance() -> None:
    labels = np.array([-1, 0, 2000, 11001, 11002, 11001, 13000], np.int32)
    by_class = point_colors(labels, class_colors=COLORS, label_divisor=1000, mode="class")
    assert by_class.tolist() == [
        _packed(VOID_RGB),
        _packed(COLORS[0]),
        _packed(COLORS[2]),
        _packed(COLORS[11]),
        _packed(COLORS[11]),
        _packed(COLORS[11]),
        _packed(COLORS[13]),
    ]
    by_instance = point_colors(labels, class_colors=COLORS, label_divisor=1000, mode="instance")
    # Void and stuff (instance 0, also a thing class's 13000) keep the class colour.
    assert by_instance[[0, 1, 2, 6]].tolist() == by_class[[0, 1, 2, 6]].tolist()
    # Things: a colour of their own, the same for the same id, each channel >= 64.
    assert by_instance[3] == by_instance[5] != by_instance[4]
    assert by_instance[3] == instance_rgb(np.array([11001]))[0]
    channels = np.stack([(by_instance >> s) & 0xFF for s in (16, 8, 0)])
    assert (channels[:, 3:6] >= 64).all() and (by_instance <= 0xFFFFFF).all()
    with pytest.raises(ValueError, match="color mode"):
        point_colors(labels, class_colors=COLORS, label_divisor=1000, mode="rainbow")


def test_pointcloud_msg_round_trip() -> None:
    from sensor_msgs.msg import PointCloud2, PointField
    from std_msgs.msg import Header

    from panoptic_depthlab_ros.msg_conversions import pointcloud_to_array, pointcloud_to_msg

    depth = np.array([[2.0, NAN, 4.0], [1.0, 8.0, 3.0]], np.float32)
    panoptic = np.array([[0, 0, 11001], [-1, 13002, 13002]], np.int32)
    for organized in (False, True):
        cloud = point_cloud(depth, panoptic, K, class_colors=COLORS, label_divisor=1000, organized=organized)
        header = Header(frame_id="cam_optical")
        msg = pointcloud_to_msg(cloud, header=header, cloud_cls=PointCloud2, field_cls=PointField)
        assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
            ("x", 0, PointField.FLOAT32, 1),
            ("y", 4, PointField.FLOAT32, 1),
            ("z", 8, PointField.FLOAT32, 1),
            ("rgb", 12, PointField.FLOAT32, 1),
            ("label", 16, PointField.INT32, 1),
        ]
        assert (msg.point_step, msg.is_bigendian, msg.header.frame_id) == (20, False, "cam_optical")
        assert (msg.height, msg.width, msg.is_dense) == (cloud.height, cloud.width, cloud.dense)
        assert msg.row_step == 20 * msg.width and len(msg.data) == msg.row_step * msg.height
        back = pointcloud_to_array(msg).reshape(-1)
        assert back.tobytes() == cloud.points.tobytes()  # bit for bit, NaNs and rgb bits too
    assert (msg.height, msg.width) == (2, 3)  # organized


# --------------------------------------------------------------------- extents
def test_segment_extents_hand_computed() -> None:
    # One row: pixel 0 is road, pixels u = 1..20 are segment 11001 at z = u + 1
    # (fx = fy = 1, cx = cy = 0: x = u z, y = 0).  z's 5th percentile by numpy's linear
    # rule: 2 + 0.05 * 19 = 2.95, its 95th 2 + 0.95 * 19 = 20.05.
    k = np.eye(3)
    depth = np.arange(1, 22, dtype=np.float32)[None, :]
    panoptic = np.full((1, 21), 11001, np.int32)
    panoptic[0, 0] = 0
    low, high = segment_extents(depth, panoptic, k, [11001, 13002])
    z = np.arange(2, 22, dtype=np.float64)
    x = np.arange(1, 21) * z
    np.testing.assert_allclose(low[0], [np.percentile(x, 5), 0.0, 2.95])
    np.testing.assert_allclose(high[0, 2], 20.05)
    np.testing.assert_allclose(high[0], [np.percentile(x, 95), 0.0, np.percentile(z, 95)])
    assert np.isnan(low[1]).all() and np.isnan(high[1]).all()  # absent from the image


def test_segment_extents_equal_per_segment_percentiles() -> None:
    rng = np.random.default_rng(3)
    h, w = 40, 60
    panoptic = rng.choice([0, 11001, 11002, 13003, 14001], size=(h, w)).astype(np.int32)
    depth = rng.uniform(3, 70, (h, w)).astype(np.float32)
    depth[rng.random((h, w)) < 0.2] = NAN
    k = np.array([[50.0, 0, 30.5], [0, 60.0, 19.0], [0, 0, 1]])
    ids = [14001, 11001, 13003, 11002]  # any order: rows follow ``ids``
    low, high = segment_extents(depth, panoptic, k, ids)
    v, u = np.mgrid[0:h, 0:w]
    for row, sid in enumerate(ids):
        m = (panoptic == sid) & np.isfinite(depth)
        z = depth[m].astype(np.float64)
        pts = np.stack([(u[m] - 30.5) * z / 50.0, (v[m] - 19.0) * z / 60.0, z], 1)
        np.testing.assert_allclose(low[row], np.percentile(pts, 5, axis=0), rtol=1e-9)
        np.testing.assert_allclose(high[row], np.percentile(pts, 95, axis=0), rtol=1e-9)


# --------------------------------------------------------------------- markers
def _segment(sid: int, label: str, is_thing: bool, depth: float, centroid) -> SegmentDepth:
    return SegmentDepth(
        id=sid,
        category_id=sid // 1000,
        label=label,
        is_thing=is_thing,
        score=1.0,
        area=1,
        x_min=0,
        y_min=0,
        x_max=0,
        y_max=0,
        depth_valid_pixels=0 if math.isnan(depth) else 1,
        depth_mean=depth,
        centroid=centroid,
    )


def test_segment_markers_labels_and_boxes() -> None:
    k = np.eye(3)
    depth = np.array([[10.0, 10.0, 30.0, 30.0]], np.float32)
    panoptic = np.array([[0, 0, 13001, 13001]], np.int32)
    segments = [
        _segment(0, "road", False, 10.0, (0.5, 0.0, 10.0)),
        _segment(7000, "sign", False, NAN, (NAN, NAN, NAN)),  # no depth: nowhere to put it
        _segment(13001, "car", True, 30.0, (75.0, 0.0, 30.0)),
    ]
    result = PanopticDepthResult(panoptic=panoptic, semantic=panoptic.astype(np.uint8), depth=depth, segments=segments)
    markers = segment_markers(result, k, near=5.0, far=60.0)
    assert [(m.namespace, m.id, m.kind) for m in markers] == [
        ("labels", 0, "text"),
        ("labels", 4, "text"),
        ("boxes", 5, "box"),
    ]
    road, car, box = markers
    assert (road.text, car.text) == ("road 10.0 m", "car 30.0 m")
    assert road.position == (0.5, 0.0, 10.0) and car.position == (75.0, 0.0, 30.0)
    for marker, d in ((road, 10.0), (car, 30.0)):
        b, g, r = depth_to_bgr(np.float32(d), near=5.0, far=60.0)
        np.testing.assert_allclose(marker.rgba, (r / 255, g / 255, b / 255, 1.0))
    assert box.rgba[:3] == car.rgba[:3] and 0 < box.rgba[3] < 1
    # The car's pixels are u = 2, 3 at z = 30: x = 60 and 90, so x spans the 5th..95th
    # percentile 61.5..88.5; y is 0 everywhere and z constant: both get the minimum size.
    np.testing.assert_allclose(box.position, (75.0, 0.0, 30.0))
    np.testing.assert_allclose(box.scale, (27.0, MIN_BOX_M, MIN_BOX_M))


def _marker_specs():
    from panoptic_depthlab_ros.geometry3d import MarkerSpec

    return [
        MarkerSpec("labels", 0, "text", (1.0, 2.0, 3.0), (0.0, 0.0, 0.5), (1, 0, 0, 1), "car 3.0 m"),
        MarkerSpec("boxes", 1, "box", (1.0, 2.0, 3.0), (4.0, 5.0, 6.0), (1, 0, 0, 0.35)),
    ]


def test_markers_msg_deleteall_first() -> None:
    from std_msgs.msg import Header
    from visualization_msgs.msg import Marker

    from panoptic_depthlab_ros.msg_conversions import markers_to_msg
    from panoptic_depthlab_ros.ros.node import message_class

    header = Header(frame_id="cam")
    header.stamp.sec = 42
    msg = markers_to_msg(_marker_specs(), header=header, classes=message_class)
    clear, text, box = msg.markers
    assert clear.action == Marker.DELETEALL
    assert all(m.header.frame_id == "cam" and m.header.stamp.sec == 42 for m in msg.markers)
    assert (text.type, text.action, text.ns, text.id, text.text) == (
        Marker.TEXT_VIEW_FACING,
        Marker.ADD,
        "labels",
        0,
        "car 3.0 m",
    )
    assert (box.type, box.ns, box.id) == (Marker.CUBE, "boxes", 1)
    assert (box.scale.x, box.scale.y, box.scale.z) == (4.0, 5.0, 6.0)
    assert (box.pose.position.x, box.pose.position.y, box.pose.position.z) == (1.0, 2.0, 3.0)
    assert box.pose.orientation.w == 1.0 and box.color.a == pytest.approx(0.35)
    assert text.lifetime.sec == text.lifetime.nanosec == 0  # replaced by the next DELETEALL


def test_markers_from_rosbags_classes_serialize_like_rclpy() -> None:
    """``markers_to_msg`` builds every field by keyword, so the bag tools' classes work too."""
    from rclpy.serialization import deserialize_message, serialize_message
    from rosbags.typesys import Stores, get_typestore
    from std_msgs.msg import Header
    from visualization_msgs.msg import MarkerArray

    from panoptic_depthlab_ros.msg_conversions import markers_to_msg
    from panoptic_depthlab_ros.ros.node import message_class

    specs = _marker_specs()
    rosbags_types = get_typestore(Stores.ROS2_JAZZY)
    t = rosbags_types.types
    header = t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=3, nanosec=4), frame_id="cam")
    bag_msg = markers_to_msg(specs, header=header, classes=t.__getitem__)
    raw = rosbags_types.serialize_cdr(bag_msg, "visualization_msgs/msg/MarkerArray")
    got = deserialize_message(bytes(raw), MarkerArray)
    rcl_header = Header(frame_id="cam")
    rcl_header.stamp.sec, rcl_header.stamp.nanosec = 3, 4
    want = markers_to_msg(specs, header=rcl_header, classes=message_class)
    assert got == deserialize_message(serialize_message(want), MarkerArray)  # colours are float32 on the wire
    assert [m.text for m in got.markers] == ["", "car 3.0 m", ""]
