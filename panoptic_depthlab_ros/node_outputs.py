"""What the node publishes and ``panoptic-depthlab bag`` writes: the output table, and result -> messages.

:data:`OUTPUTS` lists every output once (name, message type, encoding, what it needs,
QoS kind, description), in publish order: the segment records first (the smallest,
most used output), the overlay last.  The node makes its ``publish_<name>`` switches,
its publishers and its topic list from it; the bag tool its output topics; the docs
their topic table (``tools/node_reference.py``).

:func:`output_messages` turns one result into the messages of the outputs asked for.
Message classes are passed in (:data:`~.msg_conversions.MessageClasses`): rclpy's
generated classes in the node, a rosbags typestore's in the bag tool, so nothing here
imports ROS.  An output is only computed when asked for: a frame nobody subscribes
the overlay of never draws one.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .geometry3d import COLOR_MODES, point_cloud, segment_markers
from .msg_conversions import (
    MessageClasses,
    array_to_image,
    depth_for_rep118,
    markers_to_msg,
    pointcloud_to_msg,
    segments_to_msg,
)
from .result import PanopticDepthResult
from .tracker import track_panoptic
from .visualize import overlay

NAMESPACE = "/panoptic_depthlab"  # the node's name: its private topics ~/<name> are /panoptic_depthlab/<name>
SEGMENT_ARRAY_TYPE = "panoptic_depthlab_ros/msg/SegmentDepthArray"
IMAGE_TYPE = "sensor_msgs/msg/Image"
# Output QoS kinds -> history depth; every output is reliable, which matches best-effort
# subscribers (rviz) and reliable ones alike, and keep-last never blocks the worker.
QOS_DEPTH = {"records": 5, "images": 1}


@dataclass(frozen=True)
class OutputSettings:
    """How the outputs are drawn: the node's ``overlay_*`` and ``points_*`` parameters.

    near, far: the colour scale of the overlay and the markers (metres; near red, far blue).
    points_stride, points_organized, points_color: see :func:`~.geometry3d.point_cloud`.
    """

    near: float = 5.0
    far: float = 60.0
    points_stride: int = 4
    points_organized: bool = False
    points_color: str = "class"

    def __post_init__(self) -> None:
        if not (np.isfinite(self.near) and np.isfinite(self.far) and 0 <= self.near < self.far):
            raise ValueError(f"the colour scale needs 0 <= near < far, got near={self.near}, far={self.far}")
        if self.points_stride < 1:
            raise ValueError(f"points_stride must be >= 1, got {self.points_stride}")
        if self.points_color not in COLOR_MODES:
            raise ValueError(f"points_color must be one of {', '.join(COLOR_MODES)}, got {self.points_color!r}")


@dataclass(frozen=True)
class FrameOutputs:
    """One frame and what its messages need (what :func:`output_messages` hands each builder)."""

    result: PanopticDepthResult
    image: np.ndarray
    header: Any
    camera_k: np.ndarray | None
    settings: OutputSettings
    classes: MessageClasses
    class_colors: Sequence[tuple[int, int, int]]


@dataclass(frozen=True)
class Output:
    """One output: topic ``~/<name>`` of the node, ``/panoptic_depthlab/<name>`` in a replayed bag.

    msg_type: the message type (``sensor_msgs/msg/Image``); encoding: an image's encoding
    ("" for other messages).  needs_intrinsics: only once a camera_info has given K.
    needs_depth: only from a trained depth branch (or with ``untrained_depth``).
    qos: the publisher's QoS kind (:data:`QOS_DEPTH`).  build: the frame's message.
    needs_tracks: only from a tracked result (tracking on).
    """

    name: str
    msg_type: str
    encoding: str
    needs_intrinsics: bool
    needs_depth: bool
    qos: str
    description: str
    build: Callable[[FrameOutputs, Output], Any]
    needs_tracks: bool = False

    @property
    def topic(self) -> str:
        """The full topic name of the node named ``panoptic_depthlab`` (and of the bag tool)."""
        return f"{NAMESPACE}/{self.name}"

    def available(self, *, depth: bool, intrinsics: bool, tracks: bool = True) -> bool:
        """Whether this output can be made for a frame with (or without) depth, K and tracks."""
        return (
            (depth or not self.needs_depth)
            and (intrinsics or not self.needs_intrinsics)
            and (tracks or not self.needs_tracks)
        )


def _image(frame: FrameOutputs, output: Output, data: np.ndarray) -> Any:
    return array_to_image(frame.classes(IMAGE_TYPE), data, encoding=output.encoding, header=frame.header)


def _segments(frame: FrameOutputs, output: Output) -> Any:
    return segments_to_msg(
        frame.result,
        header=frame.header,
        array_cls=frame.classes(output.msg_type),
        segment_cls=frame.classes("panoptic_depthlab_ros/msg/SegmentDepth"),
        point_cls=frame.classes("geometry_msgs/msg/Point"),
        vector_cls=frame.classes("geometry_msgs/msg/Vector3"),
    )


def _markers(frame: FrameOutputs, output: Output) -> Any:
    assert frame.camera_k is not None  # needs_intrinsics
    s = frame.settings
    specs = segment_markers(frame.result, frame.camera_k, near=s.near, far=s.far)
    return markers_to_msg(specs, header=frame.header, classes=frame.classes)


def _points(frame: FrameOutputs, output: Output) -> Any:
    result, s = frame.result, frame.settings
    assert frame.camera_k is not None and result.depth is not None  # needs_intrinsics, needs_depth
    cloud = point_cloud(
        result.depth,
        result.panoptic,
        frame.camera_k,
        class_colors=frame.class_colors,
        label_divisor=result.label_divisor,
        stride=s.points_stride,
        organized=s.points_organized,
        color_mode=s.points_color,
    )
    return pointcloud_to_msg(
        cloud,
        header=frame.header,
        cloud_cls=frame.classes(output.msg_type),
        field_cls=frame.classes("sensor_msgs/msg/PointField"),
    )


def _depth(frame: FrameOutputs, output: Output) -> Any:
    assert frame.result.depth is not None  # needs_depth
    return _image(frame, output, depth_for_rep118(frame.result.depth))


def _tracked_panoptic(frame: FrameOutputs, output: Output) -> Any:
    return _image(frame, output, track_panoptic(frame.result))


def _overlay(frame: FrameOutputs, output: Output) -> Any:
    s = frame.settings
    picture = overlay(frame.image, frame.result, near=s.near, far=s.far, class_colors=frame.class_colors)
    return _image(frame, output, picture)


OUTPUTS: tuple[Output, ...] = (
    Output(
        "segments",
        SEGMENT_ARRAY_TYPE,
        "",
        needs_intrinsics=False,
        needs_depth=False,
        qos="records",
        description="one SegmentDepth per segment: id, class, score, area, box, depth statistics, the 3D "
        "centroid once camera_info has given K, and for tracked things the track id and age, the velocity, "
        "the time to contact and, with odometry, whether it is at rest (see msg/SegmentDepth.msg)",
        build=_segments,
    ),
    Output(
        "markers",
        "visualization_msgs/msg/MarkerArray",
        "",
        needs_intrinsics=True,
        needs_depth=True,
        qos="records",
        description="in the image's frame: per segment a text 'label 12.3 m' ('car #12 14.3 m, 2.1 m/s "
        "closing' when tracked) at its 3D centroid coloured on the overlay's near/far scale, per thing a "
        "translucent box over its 5th-95th percentile 3D extent, per tracked thing with a known velocity an "
        "arrow of its motion in 1 s; a DELETEALL first",
        build=_markers,
    ),
    Output(
        "panoptic",
        IMAGE_TYPE,
        "32SC1",
        needs_intrinsics=False,
        needs_depth=False,
        qos="images",
        description="panoptic ids: class * label_divisor + instance (things from 1, stuff 0), void -1",
        build=lambda frame, output: _image(frame, output, frame.result.panoptic),
    ),
    Output(
        "tracked_panoptic",
        IMAGE_TYPE,
        "32SC1",
        needs_intrinsics=False,
        needs_depth=False,
        qos="images",
        description="the panoptic image with track ids as instance ids (video panoptic): class * label_divisor "
        "+ track id for tracked things, class * label_divisor for stuff and untracked things, void -1; "
        "only with tracking on",
        build=_tracked_panoptic,
        needs_tracks=True,
    ),
    Output(
        "semantic",
        IMAGE_TYPE,
        "mono8",
        needs_intrinsics=False,
        needs_depth=False,
        qos="images",
        description="Cityscapes trainIds, 255 void",
        build=lambda frame, output: _image(frame, output, frame.result.semantic),
    ),
    Output(
        "depth",
        IMAGE_TYPE,
        "32FC1",
        needs_intrinsics=False,
        needs_depth=True,
        qos="images",
        description="metres along the optical axis (REP 118), NaN where invalid",
        build=_depth,
    ),
    Output(
        "points",
        "sensor_msgs/msg/PointCloud2",
        "",
        needs_intrinsics=True,
        needs_depth=True,
        qos="images",
        description="the depth map back-projected through camera_info's K (REP 103 optical frame): fields x y z "
        "float32, rgb packed float32, label int32 panoptic id; every points_stride-th pixel",
        build=_points,
    ),
    Output(
        "overlay",
        IMAGE_TYPE,
        "bgr8",
        needs_intrinsics=False,
        needs_depth=False,
        qos="images",
        description="the picture with each segment tinted by its distance (near red, mid green, far blue) and "
        "labelled 'car 12.3 m', tracked things 'car #12 14.3 m, 2.1 m/s closing' (', at rest' after a thing "
        "found still with odometry)",
        build=_overlay,
    ),
)
OUTPUT_NAMES: tuple[str, ...] = tuple(o.name for o in OUTPUTS)
BY_NAME: dict[str, Output] = {o.name: o for o in OUTPUTS}


def output_messages(
    result: PanopticDepthResult,
    image: np.ndarray,
    *,
    wanted: Collection[str],
    header: Any,
    camera_k: np.ndarray | None,
    settings: OutputSettings,
    classes: MessageClasses,
    class_colors: Sequence[tuple[int, int, int]],
) -> dict[str, Any]:
    """``{name: message}`` of the ``wanted`` outputs this frame can give, in table order.

    ``image``: the BGR image ``result`` was predicted from (the overlay draws on it);
    ``header``: the input's, stamped on every message; ``camera_k``: the intrinsics the
    result was predicted with (None: no markers or points); ``class_colors``: RGB per
    class (``predictor.classes.colors``) for the overlay and the point colours.
    Outputs that need depth are left out when ``result.depth`` is None, those that need
    tracks unless ``result.tracked``.
    """
    frame = FrameOutputs(result, image, header, camera_k, settings, classes, class_colors)
    depth, intrinsics = result.depth is not None, camera_k is not None
    return {
        o.name: o.build(frame, o)
        for o in OUTPUTS
        if o.name in wanted and o.available(depth=depth, intrinsics=intrinsics, tracks=result.tracked)
    }
