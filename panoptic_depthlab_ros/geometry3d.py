"""3D from a result: the back-projected point cloud and the segment markers, in plain numpy.

No ROS and no torch: the node turns these arrays into ``sensor_msgs/PointCloud2`` and
``visualization_msgs/MarkerArray`` (:mod:`.msg_conversions`), and offline tools (bag replay)
can use them as they are.  Frames follow REP 103's camera optical convention: x right,
y down, z forward along the optical axis, meters; depth is the z coordinate (REP 118).

Pinhole back-projection of pixel (u, v) (column, row) with depth z::

    x = (u - cx) * z / fx        y = (v - cy) * z / fy

Every function is vectorized over pixels (no Python loop per pixel or per segment over
the image); the only per-segment Python loop builds the marker records themselves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .result import PanopticDepthResult, relabel_ids
from .visualize import depth_to_bgr, segment_label

# One point of ~/points: 20 bytes, little-endian on every platform the wheels exist for.
# ``rgb`` holds the bits of 0x00RRGGBB as a float32 (what rviz's RGB8 transformer reads).
POINT_DTYPE = np.dtype(
    {
        "names": ["x", "y", "z", "rgb", "label"],
        "formats": ["<f4", "<f4", "<f4", "<f4", "<i4"],
        "offsets": [0, 4, 8, 12, 16],
        "itemsize": 20,
    }
)
VOID_RGB = (128, 128, 128)  # colour of void pixels (panoptic id -1)
COLOR_MODES = ("class", "instance")
# Robust 3D extent of a thing: these quantiles of its valid pixels' x, y and z.
BOX_QUANTILES = (0.05, 0.95)
MIN_BOX_M = 0.05  # a box is never thinner than this (a one-pixel thing still shows)
ARROW_HORIZON_S = 1.0  # a velocity arrow spans the motion of this many seconds
# Opacity of the velocity arrow of a thing at rest (its arrow shows the world's motion).
AT_REST_ALPHA = 0.35


@dataclass(frozen=True)
class PointCloud:
    """A cloud ready for ``sensor_msgs/PointCloud2``.

    points: [height * width] records of :data:`POINT_DTYPE`, row-major.
    height, width: 1 x N for an unorganized cloud; the strided image grid when organized.
    dense: True when no point has NaN coordinates (``is_dense``).
    """

    points: np.ndarray
    height: int
    width: int
    dense: bool


@dataclass(frozen=True)
class MarkerSpec:
    """One marker, ROS-free.

    ``kind`` is ``"text"`` (view-facing), ``"box"`` (axis-aligned in the camera
    frame) or ``"arrow"``.  ``position`` is the text anchor or the box centre and
    ``scale`` the box size (x, y, z), for text (0, 0, text height), for an arrow (shaft
    diameter, head diameter, head length); meters.  An arrow runs from ``points[0]`` to
    ``points[1]`` (its position is the origin).  ``rgba`` in 0..1.
    """

    namespace: str
    id: int
    kind: str
    position: tuple[float, float, float]
    scale: tuple[float, float, float]
    rgba: tuple[float, float, float, float]
    text: str = ""
    points: tuple[tuple[float, float, float], ...] = ()


def _intrinsics(camera_k: np.ndarray) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) of a 3x3 (or 9-value) K; ValueError when unusable."""
    k = np.asarray(camera_k, dtype=np.float64).reshape(-1)
    if k.size != 9 or not np.all(np.isfinite(k)) or k[0] <= 0 or k[4] <= 0:
        raise ValueError(f"camera_k must be a finite 3x3 matrix with fx, fy > 0, got {k.tolist()}")
    return float(k[0]), float(k[4]), float(k[2]), float(k[5])


def _check_maps(depth: np.ndarray, panoptic: np.ndarray) -> None:
    if depth.ndim != 2 or depth.shape != panoptic.shape:
        raise ValueError(f"depth {depth.shape} and panoptic {panoptic.shape} must be [H, W] of the same size")


def valid_depth(depth: np.ndarray) -> np.ndarray:
    """[...] bool: finite and positive (the same rule as the segment depth statistics)."""
    with np.errstate(invalid="ignore"):
        return (depth > 0) & (depth < np.inf)  # False for NaN


# ------------------------------------------------------------------ colours
def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """[..., 3] uint8-range RGB -> [...] uint32 0x00RRGGBB."""
    c = np.asarray(rgb).astype(np.uint32)
    return (c[..., 0] << 16) | (c[..., 1] << 8) | c[..., 2]


def instance_rgb(panoptic_ids: np.ndarray) -> np.ndarray:
    """[...] int panoptic ids -> [...] uint32 0x00RRGGBB, a fixed colour per id.

    Knuth's multiplicative hash of the id, each channel kept >= 64 so that no
    instance is near-black; the same id gets the same colour in every frame and run.
    """
    h = np.asarray(panoptic_ids).astype(np.uint32) * np.uint32(2654435761)  # wraps mod 2**32
    return ((h >> np.uint32(8)) & np.uint32(0xFFFFFF)) | np.uint32(0x404040)


def point_colors(
    labels: np.ndarray,
    *,
    class_colors: Sequence[Sequence[int]],
    label_divisor: int,
    mode: str = "class",
) -> np.ndarray:
    """[N] int32 panoptic ids -> [N] uint32 0x00RRGGBB.

    ``class``: the class colour (``class_colors[train_id]``, RGB).  ``instance``: things
    (instance number > 0) get :func:`instance_rgb` of their id, stuff keeps its class
    colour.  Void (-1) is :data:`VOID_RGB` in both modes.
    """
    if mode not in COLOR_MODES:
        raise ValueError(f"color mode must be one of {', '.join(COLOR_MODES)}, got {mode!r}")
    lut = pack_rgb(np.array([*class_colors, VOID_RGB], dtype=np.int64).reshape(-1, 3))
    void = labels < 0
    category = np.where(void, len(lut) - 1, labels // label_divisor)
    rgb = lut[np.minimum(category, len(lut) - 1)]
    if mode == "instance":
        thing = ~void & (labels % label_divisor > 0)
        rgb = np.where(thing, instance_rgb(labels), rgb)
    return rgb


# ------------------------------------------------------------------ point cloud
def point_cloud(
    depth: np.ndarray,
    panoptic: np.ndarray,
    camera_k: np.ndarray,
    *,
    class_colors: Sequence[Sequence[int]],
    label_divisor: int,
    stride: int = 1,
    organized: bool = False,
    color_mode: str = "class",
) -> PointCloud:
    """Back-project ``depth`` through ``camera_k`` at every ``stride``-th row and column.

    depth: [H, W] float meters (invalid: NaN, inf or <= 0); panoptic: [H, W] int ids.
    The pixels used are rows 0, s, 2s, ... and columns 0, s, 2s, ... (s = ``stride``).
    Unorganized (default): only pixels with valid depth, in raster order, height 1.
    Organized: the whole strided grid (ceil(H/s) x ceil(W/s)), NaN x/y/z where the
    depth is invalid (their ``label`` and ``rgb`` are still those of the pixel).
    """
    _check_maps(depth, panoptic)
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    fx, fy, cx, cy = _intrinsics(camera_k)
    z = depth[::stride, ::stride]  # [h, w] views
    pan = panoptic[::stride, ::stride]
    h, w = z.shape
    # Per-column and per-row factors: x = z * ax[u], y = z * ay[v].
    ax = ((np.arange(w, dtype=np.float32) * stride - np.float32(cx)) / np.float32(fx)).astype(np.float32)
    ay = ((np.arange(h, dtype=np.float32) * stride - np.float32(cy)) / np.float32(fy)).astype(np.float32)
    valid = valid_depth(z)
    if organized:
        zz = np.where(valid, z, np.float32(np.nan)).astype(np.float32, copy=False)
        n = h * w
        buf = np.empty((n, 5), np.float32)
        buf[:, 0] = (zz * ax[None, :]).reshape(-1)
        buf[:, 1] = (zz * ay[:, None]).reshape(-1)
        buf[:, 2] = zz.reshape(-1)
        labels = pan.reshape(-1)
        dense = bool(valid.all())
    else:
        flat = np.flatnonzero(valid)  # raster order
        n = flat.size
        rows, cols = np.divmod(flat, w)
        zv = z.reshape(-1)[flat].astype(np.float32, copy=False)  # reshape copies a strided view
        buf = np.empty((n, 5), np.float32)
        buf[:, 0] = zv * ax[cols]
        buf[:, 1] = zv * ay[rows]
        buf[:, 2] = zv
        labels = pan.reshape(-1)[flat]
        h, w, dense = 1, n, True
    bits = buf.view(np.uint32)  # rgb and label are stored bit for bit, not converted
    bits[:, 3] = point_colors(labels, class_colors=class_colors, label_divisor=label_divisor, mode=color_mode)
    bits[:, 4] = labels.astype(np.int32).view(np.uint32)
    return PointCloud(points=buf.view(POINT_DTYPE).reshape(-1), height=h, width=w, dense=dense)


# ------------------------------------------------------------------ extents
def _grouped_quantiles(
    group: np.ndarray, values: np.ndarray, counts: np.ndarray, quantiles: Sequence[float]
) -> np.ndarray:
    """[n, len(quantiles)] per-group quantiles (numpy's default linear rule); NaN if empty.

    One sort for all groups: the key ``group * span + (value - min)`` orders by group,
    then value (``span`` exceeds the value range by >= 1, so groups never interleave;
    float64 keeps the values to ~1e-11 m at a few hundred groups).
    """
    n = counts.size
    out = np.full((n, len(quantiles)), np.nan)
    if values.size == 0:
        return out
    vmin = float(values.min())
    span = float(values.max()) - vmin + 1.0
    key = group.astype(np.float64) * span + (values.astype(np.float64) - vmin)
    key.sort()
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    # Back to values: subtract each sorted element's group offset.
    offset = np.repeat(np.arange(n, dtype=np.float64) * span, counts)
    ordered = key - offset + vmin
    has = counts > 0
    last = np.maximum(counts - 1, 0)
    for j, q in enumerate(quantiles):
        pos = q * last
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, last)
        frac = pos - lo
        a = ordered[np.where(has, starts + lo, 0)]
        b = ordered[np.where(has, starts + hi, 0)]
        out[:, j] = np.where(has, a + frac * (b - a), np.nan)
    return out


def segment_extents(
    depth: np.ndarray,
    panoptic: np.ndarray,
    camera_k: np.ndarray,
    ids: Sequence[int] | np.ndarray,
    *,
    quantiles: tuple[float, float] = BOX_QUANTILES,
) -> tuple[np.ndarray, np.ndarray]:
    """Robust 3D extent of each segment in ``ids``: (low [n, 3], high [n, 3]) float64 x, y, z.

    Over the segment's pixels with valid depth, back-projected through ``camera_k``:
    the ``quantiles`` (default 5th and 95th percentile) of x, y and z separately, so
    that stray edge pixels (depth bleeding from the background) do not stretch the
    box.  All segments at once: one id lookup per pixel and one sort per axis; no
    per-segment mask.  NaN rows for segments without a valid pixel.
    """
    _check_maps(depth, panoptic)
    fx, fy, cx, cy = _intrinsics(camera_k)
    order = np.argsort(np.asarray(ids, dtype=np.int64))
    sorted_ids = np.asarray(ids, dtype=np.int64)[order]
    n = sorted_ids.size
    index = relabel_ids(panoptic, sorted_ids, np.arange(n), -1).reshape(-1)  # position in sorted_ids, -1
    flat = np.flatnonzero((index >= 0) & valid_depth(depth).reshape(-1))
    group = index[flat]
    z = depth.reshape(-1)[flat].astype(np.float64)
    rows, cols = np.divmod(flat, depth.shape[1])
    x = (cols - cx) * z / fx
    y = (rows - cy) * z / fy
    counts = np.bincount(group, minlength=n)
    low = np.empty((n, 3))
    high = np.empty((n, 3))
    for axis, values in enumerate((x, y, z)):
        q = _grouped_quantiles(group, values, counts, quantiles)
        low[order, axis], high[order, axis] = q[:, 0], q[:, 1]
    return low, high


# ------------------------------------------------------------------ markers
def _text_height(z: float) -> float:
    """Text height in meters growing with distance (about the same size on screen)."""
    return max(0.3, 0.04 * z)


def segment_markers(
    result: PanopticDepthResult,
    camera_k: np.ndarray,
    *,
    near: float,
    far: float,
    box_alpha: float = 0.35,
) -> list[MarkerSpec]:
    """Markers of one result: a label per segment, a box per thing, an arrow per moving tracked thing.

    Segment ``i`` of ``result.segments`` (with a finite 3D centroid, i.e. valid depth
    pixels and intrinsics) gets a ``text`` marker, namespace ``labels``, id ``2 * i``,
    at its centroid, reading what the overlay writes (``"<label> <depth_mean> m"``,
    ``"car #12 14.3 m, 2.1 m/s closing"`` when tracked:
    :func:`~panoptic_depthlab_ros.visualize.segment_label`); things also get a ``box``,
    namespace ``boxes``, id ``2 * i + 1``, spanning their :func:`segment_extents`, and
    tracked things whose velocity is known an ``arrow``, namespace ``velocities``, id
    ``i``, from the centroid to where the velocity takes it in :data:`ARROW_HORIZON_S`
    (faint, alpha :data:`AT_REST_ALPHA`, for a thing at rest: the motion is the world's
    seen from the camera, not the thing's own). All are coloured by ``depth_mean`` on the
    overlay's near red / mid green / far blue scale (:func:`~panoptic_depthlab_ros.visualize.depth_to_bgr`).
    """
    segments = result.segments
    if not segments:
        return []
    depth_mean = np.array([s.depth_mean for s in segments], np.float32)
    rgb = depth_to_bgr(depth_mean, near=near, far=far)[:, ::-1].astype(np.float64) / 255.0
    things = [s.id for s in segments if s.is_thing and s.depth_valid_pixels > 0]
    box_of: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    if things and result.depth is not None:
        low, high = segment_extents(result.depth, result.panoptic, camera_k, things)
        box_of = {sid: (low[j], high[j]) for j, sid in enumerate(things)}
    markers: list[MarkerSpec] = []
    for i, seg in enumerate(segments):
        position = tuple(float(c) for c in seg.centroid)
        if not all(math.isfinite(c) for c in position):
            continue  # no valid depth (or no intrinsics): nowhere to put it
        r, g, b = (float(c) for c in rgb[i])
        markers.append(
            MarkerSpec(
                namespace="labels",
                id=2 * i,
                kind="text",
                position=(position[0], position[1], position[2]),
                scale=(0.0, 0.0, _text_height(position[2])),
                rgba=(r, g, b, 1.0),
                text=segment_label(seg),
            )
        )
        velocity = seg.velocity
        if seg.track_id and all(math.isfinite(v) for v in velocity):
            end = tuple(p + v * ARROW_HORIZON_S for p, v in zip(position, velocity, strict=True))
            shaft = 0.1 + 0.005 * position[2]  # thicker farther away, like the text
            markers.append(
                MarkerSpec(
                    namespace="velocities",
                    id=i,
                    kind="arrow",
                    position=(0.0, 0.0, 0.0),
                    scale=(shaft, 2 * shaft, 3 * shaft),
                    rgba=(r, g, b, AT_REST_ALPHA if seg.at_rest else 1.0),
                    points=((position[0], position[1], position[2]), (end[0], end[1], end[2])),
                )
            )
        box = box_of.get(seg.id)
        if box is not None and np.all(np.isfinite(box[0])):
            lo, hi = box
            centre = (lo + hi) / 2
            size = np.maximum(hi - lo, MIN_BOX_M)
            markers.append(
                MarkerSpec(
                    namespace="boxes",
                    id=2 * i + 1,
                    kind="box",
                    position=(float(centre[0]), float(centre[1]), float(centre[2])),
                    scale=(float(size[0]), float(size[1]), float(size[2])),
                    rgba=(r, g, b, box_alpha),
                )
            )
    return markers
