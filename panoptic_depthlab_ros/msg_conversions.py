"""ROS messages <-> numpy, for the node and the ROS-free bag tools alike.

Duck-typed on purpose: nothing here imports rclpy or a message package.  Functions
read the standard field names (``height``, ``width``, ``encoding``, ``step``,
``data``, ``k``, ...) of whatever object they get, and build messages from the
classes they are given, always with every field as a keyword.  So the same code
serves rclpy's generated classes and ``rosbags``' message dataclasses.  A ``Marker``
has a dozen nested message fields, so :func:`markers_to_msg` takes a lookup from
type name to class (:data:`MessageClasses`) instead of one argument per class.

PyPI's ``cv-bridge`` is a ROS 1 shim that breaks under numpy 2; this module
replaces the few parts of it the package needs.
"""

from __future__ import annotations

import array
import dataclasses
import sys
from collections.abc import Callable, Sequence
from typing import Any, Literal

import cv2
import numpy as np

from .errors import InputError
from .geometry3d import MarkerSpec, PointCloud
from .image_io import decode_image
from .result import PanopticDepthResult, SegmentDepth

# Message type name ("sensor_msgs/msg/Image") -> its class: rclpy's generated classes in the
# node, a rosbags typestore's (``typestore.types.__getitem__``) in the bag tools.
MessageClasses = Callable[[str], type]

# 8-bit input encodings -> (channels, cv2 conversion to BGR or None when already BGR).
INPUT_ENCODINGS: dict[str, tuple[int, int | None]] = {
    "bgr8": (3, None),
    "rgb8": (3, cv2.COLOR_RGB2BGR),
    "bgra8": (4, cv2.COLOR_BGRA2BGR),
    "rgba8": (4, cv2.COLOR_RGBA2BGR),
    "mono8": (1, cv2.COLOR_GRAY2BGR),
}

# Output encodings -> (numpy dtype, channels).
OUTPUT_ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "32SC1": (np.dtype(np.int32), 1),
    "32FC1": (np.dtype(np.float32), 1),
    "mono8": (np.dtype(np.uint8), 1),
    "bgr8": (np.dtype(np.uint8), 3),
}

_NATIVE_BIG_ENDIAN = int(sys.byteorder == "big")


class ImageConversionError(InputError):
    """A message that cannot become an image (or intrinsics), with the reason.

    ``kind`` names the class of problem (``encoding``, ``layout``, ``data``,
    ``empty``, ``too_large``, ``decode``, ``camera_info``) so callers can
    count and throttle warnings per kind rather than per message.
    """

    def __init__(self, reason: str, *, kind: str) -> None:
        super().__init__(reason, kind=kind)


# ----------------------------------------------------------------- images in
def check_image_msg(msg: Any, *, max_pixels: int = 0, limit_name: str = "max_input_pixels") -> int:
    """Validate a ``sensor_msgs/Image``'s layout without touching its pixels.

    O(1): reads only the header fields and ``len(msg.data)``, so it is cheap
    enough for a subscription callback.  Returns the number of channels.
    ``max_pixels`` > 0 rejects larger images (the message names ``limit_name``, the
    setting that sets it).  Raises :class:`ImageConversionError`.
    """
    encoding = str(msg.encoding)
    if encoding not in INPUT_ENCODINGS:
        raise ImageConversionError(
            f"unsupported encoding {encoding!r} (supported: {', '.join(INPUT_ENCODINGS)})",
            kind="encoding",
        )
    channels = INPUT_ENCODINGS[encoding][0]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height == 0 or width == 0:
        raise ImageConversionError(f"zero-size image ({width}x{height})", kind="empty")
    if max_pixels > 0 and height * width > max_pixels:
        raise ImageConversionError(
            f"image {width}x{height} has {height * width} pixels, above the limit {limit_name}={max_pixels}",
            kind="too_large",
        )
    if int(msg.is_bigendian) not in (0, 1):
        raise ImageConversionError(f"is_bigendian must be 0 or 1, got {int(msg.is_bigendian)}", kind="layout")
    # 8-bit data: byte order does not matter, but the flag must still be a valid one.
    if step < width * channels:
        raise ImageConversionError(
            f"step {step} is smaller than width*channels = {width}*{channels} for {encoding}",
            kind="layout",
        )
    if len(msg.data) < step * height:
        raise ImageConversionError(
            f"data has {len(msg.data)} bytes, fewer than step*height = {step}*{height} = {step * height}",
            kind="data",
        )
    return channels


def image_to_bgr(msg: Any, *, max_pixels: int = 0, limit_name: str = "max_input_pixels") -> np.ndarray:
    """``sensor_msgs/Image`` -> [H, W, 3] uint8 BGR.

    ``bgr8`` comes back as a read-only-by-contract view of ``msg.data`` (no copy,
    even with padded rows: the view has a row stride of ``step``); the other
    encodings take one OpenCV conversion pass.  Do not modify the result in place.
    """
    channels = check_image_msg(msg, max_pixels=max_pixels, limit_name=limit_name)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    buf = np.frombuffer(msg.data, dtype=np.uint8, count=step * height)  # zero copy
    rows = buf.reshape(height, step)[:, : width * channels]  # drop row padding (still a view)
    code = INPUT_ENCODINGS[str(msg.encoding)][1]
    pixels = rows if channels == 1 else rows.reshape(height, width, channels)
    return pixels if code is None else cv2.cvtColor(pixels, code)


def check_compressed(msg: Any) -> None:
    """O(1) validation of a ``sensor_msgs/CompressedImage`` (before decoding)."""
    fmt = str(msg.format).lower()
    if "compresseddepth" in fmt:
        raise ImageConversionError(
            f"compressed depth images are not camera images (format {msg.format!r})",
            kind="encoding",
        )
    if len(msg.data) == 0:
        raise ImageConversionError("compressed image has no data", kind="empty")


def compressed_to_bgr(msg: Any, *, max_pixels: int = 0, limit_name: str = "max_input_pixels") -> np.ndarray:
    """``sensor_msgs/CompressedImage`` (JPEG or PNG) -> [H, W, 3] uint8 BGR.

    The size the data declares is checked against ``max_pixels`` (> 0) before anything
    is decoded: a small message can declare a huge image.
    """
    check_compressed(msg)
    what = f"compressed image (format {msg.format!r}, {len(msg.data)} bytes)"
    try:
        return decode_image(msg.data, max_pixels=max_pixels, what=what, limit_name=limit_name)
    except InputError as exc:
        raise ImageConversionError(str(exc), kind=exc.kind) from exc


# ---------------------------------------------------------------- images out
def _byte_buffer(image_cls: type, contiguous: np.ndarray) -> Any:
    """Build the ``data`` value ``image_cls`` wants, with one copy.

    rclpy's generated classes store ``array.array('B')`` (anything else goes
    through a slow per-element check); rosbags' dataclasses store a uint8 ndarray.
    """
    raw = contiguous.reshape(-1).view(np.uint8)
    if hasattr(image_cls, "get_fields_and_field_types"):  # rclpy message class
        out = array.array("B")
        out.frombytes(raw.data)
        return out
    return raw.copy()


def array_to_image(image_cls: type, data: np.ndarray, *, encoding: str, header: Any) -> Any:
    """[H, W] or [H, W, C] array -> ``image_cls`` message (``sensor_msgs/Image``).

    ``encoding`` is one of ``32SC1`` (int32), ``32FC1`` (float32), ``mono8``,
    ``bgr8`` (uint8); the array's dtype and channels must match it.  Rows are
    unpadded (``step = width * channels * itemsize``), native byte order.
    """
    if encoding not in OUTPUT_ENCODINGS:
        raise ValueError(f"output encoding must be one of {', '.join(OUTPUT_ENCODINGS)}, got {encoding!r}")
    dtype, channels = OUTPUT_ENCODINGS[encoding]
    expected_ndim = 2 if channels == 1 else 3
    if data.dtype != dtype or data.ndim != expected_ndim or (channels > 1 and data.shape[2] != channels):
        raise ValueError(
            f"{encoding} needs a {dtype} array with {channels} channel(s), "
            f"got {data.dtype} of shape {tuple(data.shape)}"
        )
    height, width = data.shape[:2]
    contiguous = np.ascontiguousarray(data)
    return image_cls(
        header=header,
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=_NATIVE_BIG_ENDIAN if dtype.itemsize > 1 else 0,
        step=width * channels * dtype.itemsize,
        data=_byte_buffer(image_cls, contiguous),
    )


def depth_for_rep118(depth: np.ndarray) -> np.ndarray:
    """[H, W] float32 meters with every invalid value (non-finite or <= 0) as NaN (REP 118).

    Returns the input itself when nothing needs changing (the common case).
    """
    with np.errstate(invalid="ignore"):
        valid = depth > 0  # False for NaN too
    if valid.all():
        return depth
    return np.where(valid & np.isfinite(depth), depth, np.float32(np.nan)).astype(np.float32, copy=False)


def stamp_ns(header: Any) -> int:
    """A ``std_msgs/Header``'s stamp in integer nanoseconds (what the tracker counts time in)."""
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


# ---------------------------------------------------------------- camera info
def camera_k(msg: Any) -> np.ndarray:
    """``sensor_msgs/CameraInfo`` -> validated 3x3 float64 K of the published image.

    ``k`` describes the full-resolution sensor; a ``roi`` (in full-resolution pixels)
    shifts the principal point and ``binning_x/y`` (0 = 1) divide focal lengths and
    principal point, as the message definition says. Depth rescaling and 3D need the
    K of the pixels actually received. Rejects (:class:`ImageConversionError`, kind
    ``camera_info``) a K that is not 9 values, has non-finite entries, or non-positive
    focal lengths (an all-zero K is an uncalibrated camera).
    """
    try:
        k = np.asarray(msg.k, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise ImageConversionError(f"CameraInfo.k is not numeric: {exc}", kind="camera_info") from exc
    if k.size != 9:
        raise ImageConversionError(f"CameraInfo.k must have 9 values, got {k.size}", kind="camera_info")
    if not np.all(np.isfinite(k)):
        raise ImageConversionError(f"CameraInfo.k has non-finite values: {k.tolist()}", kind="camera_info")
    fx, fy = k[0], k[4]
    if fx <= 0 or fy <= 0:
        raise ImageConversionError(
            f"CameraInfo.k focal lengths must be > 0, got fx={fx:g}, fy={fy:g} (uncalibrated camera?)",
            kind="camera_info",
        )
    matrix = k.reshape(3, 3).copy()
    roi = getattr(msg, "roi", None)
    if roi is not None and (roi.width or roi.height or roi.x_offset or roi.y_offset):
        matrix[0, 2] -= float(roi.x_offset)
        matrix[1, 2] -= float(roi.y_offset)
    bx, by = int(getattr(msg, "binning_x", 0) or 1), int(getattr(msg, "binning_y", 0) or 1)
    matrix[0, :] /= bx
    matrix[1, :] /= by
    return matrix


# ---------------------------------------------------------------- segments
def segment_to_msg(seg: SegmentDepth, *, segment_cls: type, point_cls: type, vector_cls: type) -> Any:
    """One :class:`SegmentDepth` -> ``segment_cls`` (``SegmentDepth.msg``), field for field."""
    x, y, z = seg.centroid
    vx, vy, vz = seg.velocity
    return segment_cls(
        id=int(seg.id),
        category_id=int(seg.category_id),
        label=str(seg.label),
        is_thing=bool(seg.is_thing),
        score=float(seg.score),
        area=int(seg.area),
        x_min=int(seg.x_min),
        y_min=int(seg.y_min),
        x_max=int(seg.x_max),
        y_max=int(seg.y_max),
        depth_valid_pixels=int(seg.depth_valid_pixels),
        depth_mean=float(seg.depth_mean),
        depth_median=float(seg.depth_median),
        depth_min=float(seg.depth_min),
        depth_std=float(seg.depth_std),
        depth_robust=float(seg.depth_robust),
        centroid=point_cls(x=float(x), y=float(y), z=float(z)),
        track_id=int(seg.track_id),
        track_age=int(seg.track_age),
        velocity=vector_cls(x=float(vx), y=float(vy), z=float(vz)),
        time_to_contact=float(seg.time_to_contact),
        at_rest=bool(seg.at_rest),
    )


def segment_from_msg(msg: Any) -> SegmentDepth:
    """A ``SegmentDepth`` message -> :class:`SegmentDepth`, the inverse of :func:`segment_to_msg`.

    A field the message lacks (one of an older definition, e.g. the tracking fields of a
    bag recorded before they existed, or ``at_rest`` of one recorded before it) keeps the
    dataclass's "unknown" default (``at_rest``: False).
    """
    values: dict[str, Any] = {}
    for f in dataclasses.fields(SegmentDepth):
        if not hasattr(msg, f.name):
            continue
        value = getattr(msg, f.name)
        if f.name in ("centroid", "velocity"):  # geometry_msgs/Point, Vector3
            value = (float(value.x), float(value.y), float(value.z))
        elif f.name == "at_rest":
            value = bool(value)
        values[f.name] = value
    return SegmentDepth(**values)


def segments_to_msg(
    result: PanopticDepthResult | Sequence[SegmentDepth],
    *,
    header: Any,
    array_cls: type,
    segment_cls: type,
    point_cls: type,
    vector_cls: type,
    height: int | None = None,
    width: int | None = None,
    label_divisor: int | None = None,
) -> Any:
    """Segments -> ``array_cls`` (``SegmentDepthArray.msg``) with ``header``.

    ``point_cls`` and ``vector_cls``: ``geometry_msgs/Point`` and ``Vector3`` (centroid, velocity).

    Give a :class:`PanopticDepthResult` (size and label divisor come from it), or
    a plain list of segments plus ``height``, ``width`` and ``label_divisor``.
    """
    if isinstance(result, PanopticDepthResult):
        segments = result.segments
        height = result.height if height is None else height
        width = result.width if width is None else width
        label_divisor = result.label_divisor if label_divisor is None else label_divisor
    else:
        segments = list(result)
        if height is None or width is None or label_divisor is None:
            raise ValueError("a bare segment list needs height, width and label_divisor")
    return array_cls(
        header=header,
        height=int(height),
        width=int(width),
        label_divisor=int(label_divisor),
        segments=[
            segment_to_msg(s, segment_cls=segment_cls, point_cls=point_cls, vector_cls=vector_cls) for s in segments
        ],
    )


# ---------------------------------------------------------------- 3D
# numpy dtype -> sensor_msgs/PointField datatype constant (INT8 = 1 ... FLOAT64 = 8).
_POINT_FIELD_TYPES: dict[np.dtype, int] = {
    np.dtype(np.int8): 1,
    np.dtype(np.uint8): 2,
    np.dtype(np.int16): 3,
    np.dtype(np.uint16): 4,
    np.dtype(np.int32): 5,
    np.dtype(np.uint32): 6,
    np.dtype(np.float32): 7,
    np.dtype(np.float64): 8,
}
# visualization_msgs/Marker constants.
MARKER_ARROW = 0
MARKER_CUBE = 1
MARKER_TEXT_VIEW_FACING = 9
_MARKER_KINDS = {"arrow": MARKER_ARROW, "box": MARKER_CUBE, "text": MARKER_TEXT_VIEW_FACING}
MARKER_ADD = 0
MARKER_DELETEALL = 3
# Every message type a MarkerArray is made of (Jazzy's Marker has a texture and a mesh file).
_MARKER_TYPES = (
    "visualization_msgs/msg/MarkerArray",
    "visualization_msgs/msg/Marker",
    "visualization_msgs/msg/MeshFile",
    "geometry_msgs/msg/Pose",
    "geometry_msgs/msg/Point",
    "geometry_msgs/msg/Quaternion",
    "geometry_msgs/msg/Vector3",
    "std_msgs/msg/ColorRGBA",
    "builtin_interfaces/msg/Duration",
    "sensor_msgs/msg/CompressedImage",
)


def _is_big_endian(dtype: np.dtype) -> bool | None:
    """Byte order of a scalar dtype (None for single bytes, where it does not matter)."""
    if dtype.byteorder == "|":
        return None
    return dtype.byteorder == ">" or (dtype.byteorder == "=" and sys.byteorder == "big")


def pointcloud_to_msg(cloud: PointCloud, *, header: Any, cloud_cls: type, field_cls: type) -> Any:
    """:class:`~.geometry3d.PointCloud` -> ``cloud_cls`` (``sensor_msgs/PointCloud2``).

    One ``field_cls`` (``PointField``) per field of the records' structured dtype, in
    its byte order (little-endian); ``data`` is the records' bytes, one copy.
    """
    points = cloud.points
    dtype = points.dtype
    if dtype.names is None:
        raise ValueError(f"a point cloud needs a structured dtype, got {dtype}")
    fields = []
    layout = dtype.fields
    assert layout is not None  # structured, checked above
    for name in dtype.names:
        field_dtype, offset = layout[name][:2]
        fields.append(
            field_cls(
                name=name,
                offset=int(offset),
                datatype=_POINT_FIELD_TYPES[field_dtype.newbyteorder("=")],
                count=1,
            )
        )
    orders = {_is_big_endian(layout[n][0]) for n in dtype.names} - {None}
    if len(orders) > 1:
        raise ValueError(f"point fields mix byte orders: {dtype}")
    return cloud_cls(
        header=header,
        height=int(cloud.height),
        width=int(cloud.width),
        fields=fields,
        is_bigendian=bool(orders and orders.pop()),
        point_step=int(dtype.itemsize),
        row_step=int(dtype.itemsize) * int(cloud.width),
        data=_byte_buffer(cloud_cls, np.ascontiguousarray(points).view(np.uint8)),
        is_dense=bool(cloud.dense),
    )


def pointcloud_to_array(msg: Any) -> np.ndarray:
    """``sensor_msgs/PointCloud2`` -> [height, width] structured array (a view of ``data``).

    Supports the scalar field types of ``PointField`` (count 1); the inverse of
    :func:`pointcloud_to_msg` and enough to read the node's ``~/points``.
    """
    types: dict[int, np.dtype] = {v: k for k, v in _POINT_FIELD_TYPES.items()}
    order: Literal[">", "<"] = ">" if msg.is_bigendian else "<"
    dtype = np.dtype(
        {
            "names": [f.name for f in msg.fields],
            "formats": [types[int(f.datatype)].newbyteorder(order) for f in msg.fields],
            "offsets": [int(f.offset) for f in msg.fields],
            "itemsize": int(msg.point_step),
        }
    )
    height, width = int(msg.height), int(msg.width)
    rows = np.frombuffer(msg.data, np.uint8).reshape(height, int(msg.row_step))
    return rows[:, : width * dtype.itemsize].copy().view(dtype).reshape(height, width)


def markers_to_msg(markers: Sequence[MarkerSpec], *, header: Any, classes: MessageClasses) -> Any:
    """Markers -> ``visualization_msgs/MarkerArray``: a DELETEALL marker, then ``markers``.

    The DELETEALL first removes every marker of the previous frame, so rviz never shows
    a stale one; the markers themselves have no lifetime.  All carry ``header`` (the
    image's frame and stamp).  ``classes`` gives the message classes by type name.
    """
    cls = {name.rsplit("/", 1)[1]: classes(name) for name in _MARKER_TYPES}
    no_bytes = np.zeros(0, np.uint8)

    def marker(action: int, spec: MarkerSpec | None) -> Any:
        position, scale, rgba = (0.0,) * 3, (0.0,) * 3, (0.0,) * 4
        if spec is not None:
            position, scale, rgba = spec.position, spec.scale, spec.rgba
        return cls["Marker"](
            header=header,
            ns=spec.namespace if spec else "",
            id=int(spec.id) if spec else 0,
            type=_MARKER_KINDS[spec.kind] if spec else 0,
            action=action,
            pose=cls["Pose"](
                position=cls["Point"](x=float(position[0]), y=float(position[1]), z=float(position[2])),
                orientation=cls["Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0),
            ),
            scale=cls["Vector3"](x=float(scale[0]), y=float(scale[1]), z=float(scale[2])),
            color=cls["ColorRGBA"](r=float(rgba[0]), g=float(rgba[1]), b=float(rgba[2]), a=float(rgba[3])),
            lifetime=cls["Duration"](sec=0, nanosec=0),
            frame_locked=False,
            points=[cls["Point"](x=float(x), y=float(y), z=float(z)) for x, y, z in spec.points] if spec else [],
            colors=[],
            texture_resource="",
            texture=cls["CompressedImage"](
                header=header, format="", data=_byte_buffer(cls["CompressedImage"], no_bytes)
            ),
            uv_coordinates=[],
            text=spec.text if spec else "",
            mesh_resource="",
            mesh_file=cls["MeshFile"](filename="", data=_byte_buffer(cls["MeshFile"], no_bytes)),
            mesh_use_embedded_materials=False,
        )

    out = [marker(MARKER_DELETEALL, None)] + [marker(MARKER_ADD, spec) for spec in markers]
    return cls["MarkerArray"](markers=out)
