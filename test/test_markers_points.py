"""The node's 3D outputs over real rclpy with the tiny model: ``~/markers`` and
``~/points`` only with camera_info, checked against the node's own published
panoptic, depth and segments (decoded independently here)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from node_utils import NodeHarness, camera_info_msg, image_msg, random_image, stamp_of
from panoptic_depthlab_ros.metadata import cityscapes_metadata
from panoptic_depthlab_ros.visualize import depth_to_bgr

OUTPUTS = ("segments", "panoptic", "depth", "markers", "points")
PARAMS = {"qos_reliability": "reliable", "qos_depth": 100, "points_stride": 3}
K = np.array([[90.0, 0, 60.5], [0, 110.0, 30.25], [0, 0, 1]])
H, W = 64, 128


@pytest.fixture
def harness(ros_context, tiny_checkpoint, request):
    params = {**PARAMS, **getattr(request, "param", {})}
    h = NodeHarness(ros_context, tiny_checkpoint, params=params, outputs=OUTPUTS)
    try:
        yield h
    finally:
        h.close()


def _image(msg) -> np.ndarray:
    dtype = {"32SC1": np.int32, "32FC1": np.float32}[msg.encoding]
    return np.frombuffer(msg.data, dtype).reshape(msg.height, msg.width)


def _decode_points(msg) -> np.ndarray:
    """PointCloud2 -> structured [height, width] (written here, not the package's decoder)."""
    from sensor_msgs.msg import PointField

    fields = {f.name: f for f in msg.fields}
    assert [f.name for f in msg.fields] == ["x", "y", "z", "rgb", "label"]
    assert [f.datatype for f in msg.fields] == [PointField.FLOAT32] * 4 + [PointField.INT32]
    assert all(f.count == 1 for f in msg.fields) and not msg.is_bigendian
    dtype = np.dtype(
        {
            "names": ["x", "y", "z", "rgb", "label"],
            "formats": ["<f4", "<f4", "<f4", "<u4", "<i4"],  # rgb: the packed bits
            "offsets": [fields[n].offset for n in ("x", "y", "z", "rgb", "label")],
            "itemsize": msg.point_step,
        }
    )
    assert msg.row_step == msg.point_step * msg.width
    return np.frombuffer(bytes(msg.data), dtype).reshape(msg.height, msg.width)


def _send_camera_info(h: NodeHarness) -> None:
    h.info_pub.publish(camera_info_msg(K, width=W, height=H))
    h.wait_for(lambda: h.counts()["camera_info_received"] >= 1, 15, "camera_info")


def _check_markers(h: NodeHarness, stamp, sent_header) -> None:
    from visualization_msgs.msg import Marker

    segments = h.answer("segments", stamp).segments
    markers = h.answer("markers", stamp).markers
    assert markers[0].action == Marker.DELETEALL  # stale markers of the last frame go first
    assert all(m.header == sent_header for m in markers)
    labels = [m for m in markers[1:] if m.ns == "labels"]
    boxes = [m for m in markers[1:] if m.ns == "boxes"]
    arrows = [m for m in markers[1:] if m.ns == "velocities"]
    assert len(labels) + len(boxes) + len(arrows) == len(markers) - 1
    # The tiny model's depth is valid everywhere: every segment has a 3D centroid.
    assert all(s.depth_valid_pixels > 0 for s in segments)
    assert len(labels) == len(segments) > 0
    for i, (m, s) in enumerate(zip(labels, segments, strict=True)):
        assert (m.id, m.type, m.action) == (2 * i, Marker.TEXT_VIEW_FACING, Marker.ADD)
        track = f" #{s.track_id}" if s.track_id else ""  # tracking is on by default
        assert m.text.startswith(f"{s.label}{track} {s.depth_mean:.1f} m")
        p = m.pose.position
        assert (p.x, p.y, p.z) == (s.centroid.x, s.centroid.y, s.centroid.z)
        b, g, r = depth_to_bgr(np.float32(s.depth_mean), near=5.0, far=60.0)
        np.testing.assert_allclose(
            [m.color.r, m.color.g, m.color.b, m.color.a],
            [r / 255, g / 255, b / 255, 1.0],
            atol=1e-6,
        )
    # Boxes: one per thing, spanning the 5th..95th percentile of its back-projected pixels.
    panoptic = _image(h.answer("panoptic", stamp))
    depth = _image(h.answer("depth", stamp)).astype(np.float64)
    v, u = np.mgrid[0:H, 0:W]
    things = [(i, s) for i, s in enumerate(segments) if s.is_thing]
    assert [m.id for m in boxes] == [2 * i + 1 for i, _ in things]
    assert things, "the tiny model should give at least one thing"
    for box, (_, s) in zip(boxes, things, strict=True):
        m = (panoptic == s.id) & np.isfinite(depth)
        z = depth[m]
        pts = np.stack([(u[m] - K[0, 2]) * z / K[0, 0], (v[m] - K[1, 2]) * z / K[1, 1], z], 1)
        lo, hi = np.percentile(pts, [5, 95], axis=0)
        assert box.type == Marker.CUBE and 0 < box.color.a < 1
        p, sc = box.pose.position, box.scale
        np.testing.assert_allclose([p.x, p.y, p.z], (lo + hi) / 2, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose([sc.x, sc.y, sc.z], np.maximum(hi - lo, 0.05), rtol=1e-5, atol=1e-6)


def test_markers_and_points_need_camera_info_then_match_the_maps(harness) -> None:
    h = harness
    h.wait_connected()
    # Without camera_info: the image outputs only.
    h.image_pub.publish(image_msg(random_image(31), stamp=(1, 0)))
    h.wait_for(lambda: h.answered((1, 0), ("segments", "panoptic", "depth")), 60, "frame 1")
    _send_camera_info(h)
    sent = image_msg(random_image(32), stamp=(2, 0), frame_id="cam_optical")
    h.image_pub.publish(sent)
    h.wait_for(lambda: h.answered((2, 0)), 60, "every output of frame 2")
    # Outputs of one publisher arrive in order: frame 1 had no markers or points.
    assert [stamp_of(m) for m in h.messages("markers")] == [(2, 0)]
    assert [stamp_of(m) for m in h.messages("points")] == [(2, 0)]
    assert h.node.pipeline._said_no_camera_info  # told the user once

    _check_markers(h, (2, 0), sent.header)

    cloud = h.answer("points", (2, 0))
    assert cloud.header == sent.header
    points = _decode_points(cloud)
    panoptic = _image(h.answer("panoptic", (2, 0)))
    depth = _image(h.answer("depth", (2, 0))).astype(np.float64)
    s = PARAMS["points_stride"]
    v, u = np.mgrid[0:H:s, 0:W:s]
    z = depth[::s, ::s]
    valid = np.isfinite(z) & (z > 0)
    assert (cloud.height, cloud.width, cloud.is_dense) == (1, int(valid.sum()), True)
    p = points[0]
    np.testing.assert_allclose(p["x"], ((u - K[0, 2]) * z / K[0, 0])[valid], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p["y"], ((v - K[1, 2]) * z / K[1, 1])[valid], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p["z"], z[valid], rtol=1e-6)
    labels = panoptic[::s, ::s][valid]
    np.testing.assert_array_equal(p["label"], labels)
    colors = np.array(cityscapes_metadata().colors + ((128, 128, 128),), np.uint32)
    rgb = colors[np.where(labels < 0, len(colors) - 1, labels // 1000)]
    np.testing.assert_array_equal(p["rgb"], (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2])

    # The next frame: a fresh DELETEALL first again, markers of this frame only.
    sent = image_msg(random_image(33), stamp=(3, 0), frame_id="cam_optical")
    h.image_pub.publish(sent)
    h.wait_for(lambda: h.answered((3, 0)), 60, "every output of frame 3")
    _check_markers(h, (3, 0), sent.header)


@pytest.mark.parametrize("harness", [{"points_organized": True, "points_color": "instance"}], indirect=True)
def test_organized_cloud_with_instance_colours(harness) -> None:
    h = harness
    h.wait_connected()
    _send_camera_info(h)
    h.image_pub.publish(image_msg(random_image(34), stamp=(5, 0)))
    h.wait_for(lambda: h.answered((5, 0)), 60, "every output")
    msg = h.answer("points", (5, 0))
    s = PARAMS["points_stride"]
    assert (msg.height, msg.width) == (math.ceil(H / s), math.ceil(W / s))
    points = _decode_points(msg)
    panoptic = _image(h.answer("panoptic", (5, 0)))[::s, ::s]
    np.testing.assert_array_equal(points["label"], panoptic)  # the image grid, row by row
    assert msg.is_dense == bool(np.isfinite(points["z"]).all())
    thing = (panoptic >= 0) & (panoptic % 1000 > 0)
    assert thing.any()
    # Instances: one colour per id, and different ids (here) differ.
    ids = np.unique(panoptic[thing])
    per_id = {int(i): set(points["rgb"][panoptic == i].tolist()) for i in ids}
    assert all(len(c) == 1 for c in per_id.values())
    assert len({c.pop() for c in per_id.values()}) == len(ids)


def test_unsubscribed_3d_outputs_cost_nothing(ros_context, tiny_checkpoint, monkeypatch) -> None:
    """With camera_info but nobody on markers/points, neither is computed; once someone
    subscribes, both are."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import PointCloud2
    from visualization_msgs.msg import MarkerArray

    from panoptic_depthlab_ros import node_outputs

    calls = {"markers": 0, "points": 0}

    def counted(name, fn):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(node_outputs, "segment_markers", counted("markers", node_outputs.segment_markers))
    monkeypatch.setattr(node_outputs, "point_cloud", counted("points", node_outputs.point_cloud))
    h = NodeHarness(ros_context, tiny_checkpoint, params=PARAMS, outputs=("segments",))
    try:
        h.wait_connected()
        _send_camera_info(h)
        h.image_pub.publish(image_msg(random_image(35), stamp=(7, 0)))
        h.wait_for(lambda: h.answered((7, 0)), 60, "segments")
        assert calls == {"markers": 0, "points": 0}

        got = {"markers": [], "points": []}
        keep = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        h.probe.create_subscription(MarkerArray, "/panoptic_depthlab/markers", got["markers"].append, keep)
        h.probe.create_subscription(PointCloud2, "/panoptic_depthlab/points", got["points"].append, keep)
        pubs = h.node.pipeline.outputs.publishers
        h.wait_for(
            lambda: all(pubs[n].get_subscription_count() >= 1 for n in ("markers", "points")),
            15,
            "discovery",
        )
        h.image_pub.publish(image_msg(random_image(35), stamp=(8, 0)))
        h.wait_for(lambda: got["markers"] and got["points"], 60, "markers and points")
        assert calls == {"markers": 1, "points": 1}
    finally:
        h.close()
