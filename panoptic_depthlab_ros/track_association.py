"""Which thing segment of this frame continues which track: detections, gates, cost, assignment.

Thing segments are associated to tracks of the same class by a cost that adds ``1 - IoU``
(mask IoU on a subsampled grid against the track's mask of the last frame, shifted by the
box motion its filter predicts; for a track unseen last frame the IoU of its
motion-predicted box), the centroid distance to the prediction (3D, or in the image when
either centroid is unknown or the segment is cut by the image border) and the depth
difference, each normalised by a gate that grows with depth and with the time the track
went unseen, the area ratio and, given the frame's image, the distance between colour
histograms (appearance). Pairs outside every gate are not allowed; the optimal
assignment is SciPy's ``linear_sum_assignment``, in two rounds: the tracks seen last frame
first, then the lost ones with what is left.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment

from panoptic_depthlab_ros.image_io import check_image
from panoptic_depthlab_ros.result import PanopticDepthResult, SegmentDepth, relabel_ids
from panoptic_depthlab_ros.track_config import TrackerConfig
from panoptic_depthlab_ros.track_motion import AXES, NAN, UV, S, U, V, Z
from panoptic_depthlab_ros.track_table import APPEARANCE_BITS, APPEARANCE_SIZE, TrackTable

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass
class Detections:
    """The frame's trackable thing segments as arrays, and their subsampled masks."""

    seg_index: IntArray  # [D] index into result.segments
    category: IntArray  # [D]
    box: FloatArray  # [D, 4] x_min, y_min, x_max, y_max (inclusive pixels)
    meas: FloatArray  # [D, 6] x, y, z, u, v, s (motion axes); NaN where unknown
    labels: npt.NDArray[np.int32]  # [h, w] detection index per grid sample, D elsewhere
    area: IntArray  # [D] grid samples per detection
    stride: int  # pixels between grid samples
    cut: BoolArray  # [D] cut by the image border: its box moves in the image, but measures no 3D motion
    px_area: FloatArray  # [D] pixels
    # [D, APPEARANCE_SIZE] colour histogram (sums to 1; zeros: no grid sample on the mask); None: no image
    appearance: FloatArray | None = None
    # [D] whether each detection has a colour histogram (an image, and grid samples on its mask)
    coloured: BoolArray = field(init=False)

    def __post_init__(self) -> None:
        """Which detections have colours, once per frame (the cost, the colour update and new tracks read it)."""
        if self.appearance is None:
            self.coloured = np.zeros(self.seg_index.size, bool)
        else:
            self.coloured = np.asarray(self.appearance.any(axis=1), bool)

    def motion(self, index: IntArray) -> FloatArray:
        """``[N, 6]`` measurements of detections ``index`` for the filters (3D and size axes NaN where cut)."""
        out = self.meas[index].copy()
        cut = self.cut[index]
        out[cut, :3] = NAN
        out[cut, S] = NAN
        return out


def find_detections(result: PanopticDepthResult, config: TrackerConfig, image: np.ndarray | None = None) -> Detections:
    """The thing segments of ``result`` that can be tracked; ``ValueError`` for a malformed segment list or image.

    ``image``: the frame ``result`` was predicted from (BGR uint8 [H, W, 3]), for the
    segments' colour histograms; None: no appearance.
    """
    c = config
    if image is not None:
        check_image(image)  # InputError (a ValueError) naming what is wrong
        if image.shape[:2] != result.panoptic.shape:
            raise ValueError(
                f"image is {image.shape[1]}x{image.shape[0]} but the panoptic map is "
                f"{result.panoptic.shape[1]}x{result.panoptic.shape[0]}: pass the frame the result is of"
            )
    rows = []
    for i, s in enumerate(result.segments):
        if not isinstance(s, SegmentDepth):
            raise ValueError(f"result.segments[{i}] is a {type(s).__name__}, not a SegmentDepth")
        if s.is_thing and s.area >= c.min_area_px:
            x, y, z = s.centroid
            rows.append(
                (
                    i,
                    s.id,
                    s.category_id,
                    s.x_min,
                    s.y_min,
                    s.x_max,
                    s.y_max,
                    x,
                    y,
                    z,
                    s.depth_mean,
                    s.depth_median,
                    s.area,
                )
            )
    table = np.array(rows, np.float64).reshape(-1, 13)
    seg_index = table[:, 0].astype(np.int64)
    ids = table[:, 1].astype(np.int64)
    if ids.size and ids.min() < 0:
        bad = int(seg_index[np.argmin(ids)])
        raise ValueError(f"result.segments[{bad}] is a thing with the negative id {int(ids.min())}")
    box = table[:, 3:7]
    # The segment's median depth stands for its distance: pixels on its outline often
    # read the background behind it, which pulls the mean (and the centroid, the mean
    # of the back-projected pixels) away. The centroid slides along its ray to it.
    depth, median = table[:, 10], table[:, 11]
    usable = np.isfinite(median) & (median > 0)
    depth = np.where(usable, median, depth)
    with np.errstate(divide="ignore", invalid="ignore"):
        along = np.where(usable & (table[:, 10] > 0), median / table[:, 10], 1.0)
    centroid = table[:, 7:10] * np.where(np.isfinite(along), along, 1.0)[:, None]
    has_3d = np.isfinite(centroid).all(axis=1)
    meas = np.full((len(rows), AXES), NAN)
    meas[has_3d, :3] = centroid[has_3d]
    meas[:, Z] = np.where(has_3d, centroid[:, 2], np.where(np.isfinite(depth) & (depth > 0), depth, NAN))
    meas[:, U] = 0.5 * (box[:, 0] + box[:, 2])
    meas[:, V] = 0.5 * (box[:, 1] + box[:, 3])
    meas[:, S] = 1.0 / (box[:, 3] - box[:, 1] + 1) if c.size_noise_px > 0 else NAN
    h, w = result.panoptic.shape
    if c.border_px > 0:
        # A segment cut by the image border shows part of its thing: the part's centroid
        # moves with the border, not with the thing. It is associated as usual, and its
        # box centre still tells where the part goes in the image, but it measures no 3D
        # motion (the track's 3D filter coasts meanwhile).
        b = c.border_px
        cut = (box[:, 0] < b) | (box[:, 1] < b) | (box[:, 2] > w - 1 - b) | (box[:, 3] > h - 1 - b)
    else:
        cut = np.zeros(len(rows), bool)
    stride = max(1, math.isqrt(h * w // c.mask_samples))
    grid = result.panoptic[::stride, ::stride]
    n = ids.size
    labels = relabel_ids(grid, ids, np.arange(n), n)
    area = np.bincount(labels.ravel(), minlength=n + 1)[:n]
    return Detections(
        seg_index=seg_index,
        category=table[:, 2].astype(np.int64),
        box=box,
        meas=meas,
        labels=labels,
        area=area,
        stride=stride,
        cut=cut,
        px_area=table[:, 12],
        appearance=appearance(image[::stride, ::stride], labels, n)
        if image is not None and c.appearance_weight > 0
        else None,
    )


def appearance(samples: np.ndarray, labels: npt.NDArray[np.int32], n: int) -> FloatArray:
    """``[n, APPEARANCE_SIZE]`` colour histogram of each detection's grid samples, each summing to 1.

    ``samples``: the image on the mask grid ([h, w, 3] BGR uint8); ``labels``: the detection
    of each grid sample (``n``: none). Each channel in :data:`APPEARANCE_BINS` bins: coarse
    enough that a few dozen samples fill it, fine enough to tell a red car from a white one.
    A detection too small to hold a grid sample gets zeros: no colour known.
    """
    inside = labels < n
    q = samples[inside] >> (8 - APPEARANCE_BITS)  # [S, 3] uint8 bin per channel
    colour = (q[:, 0].astype(np.int64) << (2 * APPEARANCE_BITS)) | (q[:, 1] << APPEARANCE_BITS) | q[:, 2]
    key = labels[inside].astype(np.int64) * APPEARANCE_SIZE + colour
    hist = np.bincount(key, minlength=n * APPEARANCE_SIZE).reshape(n, APPEARANCE_SIZE).astype(np.float64)
    return hist / np.maximum(hist.sum(axis=1, keepdims=True), 1.0)


def appearance_distance(tracks: FloatArray, dets: FloatArray) -> FloatArray:
    """``[T, D]`` Hellinger distance (0: the same histogram, 1: no colour in common) of histograms that sum to 1."""
    overlap = np.sqrt(tracks) @ np.sqrt(dets).T  # Bhattacharyya coefficient
    return np.sqrt(np.clip(1.0 - overlap, 0.0, 1.0))


def associate(
    tracks: TrackTable, dets: Detections, previous: Detections | None, config: TrackerConfig
) -> tuple[IntArray, IntArray]:
    """Optimal track -> detection pairs (row indices, detection indices) inside the gates.

    ``previous``: the last frame's detections (their masks are the tracks' last masks).
    """
    t, c, m = tracks, config, tracks.motion
    n_t, n_d = len(t), dets.seg_index.size
    if n_t == 0 or n_d == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    same = t.category[:, None] == dets.category[None, :]  # [T, D]
    if not same.any():
        return np.zeros(0, np.int64), np.zeros(0, np.int64)

    overlap = box_iou(tracks, dets)
    masks = mask_iou(tracks, dets, previous)
    if masks is not None:
        seen = t.prev_det >= 0
        overlap[seen] = masks[seen]

    growth = c.gate_growth_mps * t.unseen_s  # [T]
    # Where a track's velocity was still too uncertain to report at its last match (a
    # two-point start on noisy depth can read 20 m/s), extrapolating by it throws the
    # prediction far off while the track goes unseen: such axes are predicted where they
    # were last matched. A velocity known then keeps carrying the prediction however long
    # the track goes unseen (the gates widen meanwhile).
    xyz_pred = np.where(t.vel_ok, m.pos[:, :3], t.match_xyz)  # [T, 3]
    z_pred = np.where(m.count[:, Z] > 0, xyz_pred[:, 2], NAN)  # [T]
    z_det = np.where(dets.cut, NAN, dets.meas[:, Z])  # [D] a cut part's depth is not its thing's
    # Depth: difference against a gate that grows with depth and unseen time.
    z_ref = np.fmax(z_pred[:, None], z_det[None, :])  # [T, D] the farther known depth
    with np.errstate(invalid="ignore"):
        depth_gate = c.gate_depth_rel * z_ref + growth[:, None]
        depth_term = np.abs(z_det[None, :] - z_pred[:, None]) / depth_gate
    depth_known = np.isfinite(depth_term)
    depth_term = np.where(depth_known, depth_term, 0.5)
    # Distance: 3D where both centroids exist, else box centres in the image.
    track_3d = np.all(m.count[:, :3] > 0, axis=1)
    det_3d = np.all(np.isfinite(dets.meas[:, :3]), axis=1) & ~dets.cut
    diff = xyz_pred[:, None, :] - dets.meas[None, :, :3]
    with np.errstate(invalid="ignore"):
        dist_3d = np.sqrt(np.einsum("tdk,tdk->td", diff, diff))
        gate_3d = c.gate_distance_m + c.gate_distance_rel * z_ref + growth[:, None]
    duv = m.pos[:, None, UV] - dets.meas[None, :, UV]
    dist_px = np.sqrt(np.einsum("tdk,tdk->td", duv, duv))
    half_diag_t = 0.5 * np.hypot(t.box[:, 2] - t.box[:, 0] + 1, t.box[:, 3] - t.box[:, 1] + 1)
    half_diag_d = 0.5 * np.hypot(dets.box[:, 2] - dets.box[:, 0] + 1, dets.box[:, 3] - dets.box[:, 1] + 1)
    # The box centre's predicted uncertainty widens the gate while a track goes unseen.
    spread_px = 3.0 * np.sqrt(m.p00[:, U] + m.p00[:, V])
    gate_px = c.gate_image * 0.5 * (half_diag_t[:, None] + half_diag_d[None, :]) + spread_px[:, None]
    use_3d = track_3d[:, None] & det_3d[None, :]
    distance_term = np.where(use_3d, dist_3d / gate_3d, dist_px / gate_px)

    allowed = same & (depth_term <= 1.0) & ((overlap >= c.min_iou) & (overlap > 0) | (distance_term <= 1.0))
    cost = (
        c.iou_weight * (1.0 - overlap)
        + c.distance_weight * np.minimum(distance_term, 1.0)
        + c.depth_weight * np.minimum(depth_term, 1.0)
    )
    if c.size_weight > 0:
        # A thing's area changes little from frame to frame; a mask that merged with a
        # neighbour or kept a fragment of its thing does not (a factor of 4 costs the most).
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.abs(np.log(np.maximum(dets.px_area[None, :], 1.0) / np.maximum(t.area[:, None], 1.0)))
        cost = cost + c.size_weight * np.minimum(ratio / math.log(4.0), 1.0)
    costliest = c.iou_weight + c.distance_weight + c.depth_weight + c.size_weight
    if c.appearance_weight > 0 and dets.appearance is not None and t.has_appearance.any():
        # Colour tells apart two things of one class that cross, or one that comes back from
        # behind something next to another. Where either colour is unknown (a track first seen
        # without an image, a segment too small for a grid sample) the pair counts as halfway (0.5).
        known = t.has_appearance[:, None] & dets.coloured[None, :]
        dist = np.where(known, appearance_distance(t.appearance, dets.appearance), 0.5)
        cost = cost + c.appearance_weight * dist
        costliest += c.appearance_weight
    # A forbidden pair costs what the costliest allowed pair can: assigning it means
    # "both unmatched". So the assignment never trades one good pair for two poor ones
    # just to match more (what a huge forbidden cost would do), yet takes every allowed
    # pair that does not compete.
    cost = np.where(allowed, cost, costliest)
    # Two rounds: the tracks seen last frame first, then the lost ones with what is left.
    # A lost track is compared by its predicted box, which overlaps more generously than
    # a mask; in one round it would take a thing from the track that follows it.
    active = t.prev_det >= 0
    r1, k1 = assign(cost, allowed & active[:, None])
    rest = np.ones(n_d, bool)
    rest[k1] = False
    r2, k2 = assign(cost, allowed & ~active[:, None] & rest[None, :])
    return np.concatenate((r1, r2)), np.concatenate((k1, k2))


def box_iou(tracks: TrackTable, dets: Detections) -> FloatArray:
    """``[T, D]`` IoU of each track's motion-predicted box with each detection's box."""
    t, m = tracks, tracks.motion
    shift = m.pos[:, UV] - t.box_uv  # [T, 2] predicted centre motion since the last match
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.where(m.count[:, Z] > 0, t.match_xyz[:, 2] / m.pos[:, Z], 1.0)  # nearer looks larger
    scale = np.clip(np.where(np.isfinite(scale), scale, 1.0), 0.5, 2.0)
    cu = 0.5 * (t.box[:, 0] + t.box[:, 2]) + shift[:, 0]
    cv = 0.5 * (t.box[:, 1] + t.box[:, 3]) + shift[:, 1]
    hw = 0.5 * (t.box[:, 2] - t.box[:, 0] + 1) * scale
    hh = 0.5 * (t.box[:, 3] - t.box[:, 1] + 1) * scale
    tb = np.stack((cu - hw, cv - hh, cu + hw, cv + hh), axis=1)  # [T, 4] continuous edges
    db = dets.box + np.array([0.0, 0.0, 1.0, 1.0])  # inclusive pixels -> continuous edges
    iw = np.clip(np.minimum(tb[:, None, 2], db[None, :, 2]) - np.maximum(tb[:, None, 0], db[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(tb[:, None, 3], db[None, :, 3]) - np.maximum(tb[:, None, 1], db[None, :, 1]), 0, None)
    inter = iw * ih
    area_t = (tb[:, 2] - tb[:, 0]) * (tb[:, 3] - tb[:, 1])
    area_d = (db[:, 2] - db[:, 0]) * (db[:, 3] - db[:, 1])
    union = area_t[:, None] + area_d[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def mask_iou(tracks: TrackTable, dets: Detections, previous: Detections | None) -> FloatArray | None:
    """``[T, D]`` mask IoU of each track's last mask, moved by its predicted image motion, with this frame's.

    On the subsampled grid; rows of tracks unseen last frame are 0; None without a
    previous frame of the same grid. Each track's mask of the last frame is shifted by the
    motion its box-centre filter predicts since then, so that a thing that moves more than
    its own width per frame (a pedestrian passing near, a sign as the camera drives by)
    overlaps itself and not its neighbour.
    """
    if previous is None or previous.labels.shape != dets.labels.shape:
        return None
    t = tracks
    prev = previous.labels
    n_prev, n, n_t = previous.area.size, dets.area.size, len(t)
    track_of = np.full(n_prev + 1, -1, np.int64)  # previous detection -> track row
    seen = np.flatnonzero(t.prev_det >= 0)
    track_of[t.prev_det[seen]] = seen
    flat = prev.ravel()
    sample = np.flatnonzero(track_of[flat] >= 0)  # grid samples of a tracked previous mask
    row = track_of[flat[sample]]
    h, w = prev.shape
    shift = (t.motion.pos[:, UV] - t.box_uv) / dets.stride  # [T, 2] predicted (du, dv) in grid cells
    shift = np.where(np.isfinite(shift), shift, 0.0)
    r = np.rint(sample // w + shift[row, 1]).astype(np.int64)
    c = np.rint(sample % w + shift[row, 0]).astype(np.int64)
    inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
    label = np.full(sample.size, n, np.int64)
    label[inside] = dets.labels[r[inside], c[inside]]
    inter = np.bincount(row * (n + 1) + label, minlength=n_t * (n + 1)).reshape(n_t, n + 1)[:, :n]
    prev_area = np.zeros(n_t, np.int64)
    prev_area[seen] = previous.area[t.prev_det[seen]]
    union = prev_area[:, None] + dets.area[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def assign(cost: FloatArray, allowed: BoolArray) -> tuple[IntArray, IntArray]:
    """Optimal (row, column) pairs of ``cost`` among the ``allowed`` ones."""
    # Only rows and columns with an allowed pair take part (usually far fewer).
    live_r, live_c = np.flatnonzero(allowed.any(axis=1)), np.flatnonzero(allowed.any(axis=0))
    if live_r.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    r, k = linear_sum_assignment(cost[np.ix_(live_r, live_c)])
    r, k = live_r[r], live_c[k]
    keep = allowed[r, k]
    return r[keep].astype(np.int64), k[keep].astype(np.int64)
