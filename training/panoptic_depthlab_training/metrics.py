"""Evaluation metrics: panoptic quality, mIoU, depth errors, DPQ and per-segment depth.

Pure numpy; never imports ROS. Every map is ``[H, W]`` in ``(y, x)`` order:

* panoptic: integer, ``category * label_divisor + instance`` with category = train id
  (0..18 on Cityscapes), instance >= 1 for things and 0 for stuff; ``-1`` is void.
  On the ground-truth side a thing class with instance 0 is a crowd region (Cityscapes
  ``instanceIds`` below 1000 of a thing class) unless ``gt_segments``/``gt_crowd_ids``
  say otherwise;
* semantic: integer train ids; ``ignore_label`` (255) is void;
* depth: float metres; the ground truth comes with a bool validity mask.

References:
* PQ/SQ/RQ: Kirillov et al., "Panoptic Segmentation", CVPR 2019. Counting and averaging
  reproduce cityscapesscripts 2.x ``evaluation/evalPanopticSemanticLabeling.py``
  (``pq_compute_single_core``, ``PQStat.pq_average``) exactly; see :func:`match_panoptic`.
* mIoU: cityscapesscripts ``evaluation/evalPixelLevelSemanticLabeling.py``
  (``getIouScoreForLabel``, ``getScoreAverage``).
* Depth errors: Eigen et al., NeurIPS 2014. Computed per image and then averaged over
  images, as monodepth2 ``evaluate_depth.py`` and DeepLab2 ``evaluation/depth_metrics.py`` do.
* DPQ: Qiao et al., "ViP-DeepLab", CVPR 2021 (DVPQ with a one-frame window). The
  prediction is voided where the depth is wrong as in ViP-DeepLab's
  ``cityscapes-dvps/eval_dvpq.py``; see :func:`dpq_void_mask`.

"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from panoptic_depthlab_ros.metadata import ClassMetadata, cityscapes_metadata

VOID = -1
DPQ_THRESHOLDS: tuple[float, ...] = (0.1, 0.25, 0.5)
_MATCH_IOU = 0.5  # contract: IoU > 0.5 makes a match unique (Kirillov et al., Thm. 1)
_IGNORE_FRACTION = 0.5  # unmatched prediction mostly on void/crowd is not a false positive

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


# --------------------------------------------------------------------------- validation
def _check_map(name: str, array: np.ndarray, shape: tuple[int, ...] | None, kind: str) -> None:
    """Raise ``ValueError`` unless ``array`` is 2-D, of dtype kind ``kind``, and of ``shape``."""
    if not isinstance(array, np.ndarray) or array.ndim != 2:
        got = getattr(array, "shape", type(array).__name__)
        raise ValueError(f"{name} must be an [H, W] numpy array, got {got}")
    if shape is not None and array.shape != shape:
        raise ValueError(f"{name} has shape {array.shape}, expected {shape}")
    if array.dtype.kind not in kind:
        raise ValueError(f"{name} has dtype {array.dtype}, expected kind {kind!r}")


# --------------------------------------------------------------------------- indexing
@dataclass(frozen=True)
class _Indexed:
    """A panoptic map re-indexed densely; segment 0 is always void (possibly empty)."""

    ids: IntArray  # [S] panoptic id of each segment, sorted; ids[0] == VOID
    pixels: IntArray  # [H*W] segment index of each pixel
    category: IntArray  # [S] train id of each segment; -1 for the void segment


def _index_panoptic(panoptic: np.ndarray, metadata: ClassMetadata, name: str) -> _Indexed:
    """Map panoptic ids to dense indices with one bincount (ids are bounded by C * divisor)."""
    top = metadata.num_classes * metadata.label_divisor
    shifted = panoptic.reshape(-1).astype(np.int64) + 1  # [H*W]; void -1 -> 0
    if shifted.size and (shifted.min() < 0 or shifted.max() > top):
        bad = panoptic[(panoptic < VOID) | (panoptic >= top)].reshape(-1)[0]
        raise ValueError(
            f"{name}: id {int(bad)} is neither void ({VOID}) nor category * "
            f"{metadata.label_divisor} + instance with category < {metadata.num_classes}"
        )
    present = np.bincount(shifted, minlength=top + 1) > 0
    present[0] = True
    keys = np.flatnonzero(present)  # [S], sorted
    lut = np.zeros(top + 1, dtype=np.int64)
    lut[keys] = np.arange(keys.size)
    ids = keys - 1
    category = np.where(ids >= 0, ids // metadata.label_divisor, -1)
    return _Indexed(ids=ids, pixels=lut[shifted], category=category)


@dataclass(frozen=True)
class _GtInfo:
    category: IntArray  # [S] category of each GT segment (-1 void)
    crowd: BoolArray  # [S]
    crowd_of_category: IntArray  # [C] GT segment index consulted for crowd overlap, or -1


def _gt_info(
    gt: _Indexed,
    metadata: ClassMetadata,
    gt_segments: Sequence[Mapping[str, Any]] | None,
    gt_crowd_ids: Iterable[int] | None,
) -> _GtInfo:
    """Category and crowd flag of each GT segment; the crowd region used per category.

    As in cityscapesscripts, when a category has several crowd segments only the last
    one listed (``gt_segments`` order, else increasing id) counts for the FP test.
    """
    num_classes = metadata.num_classes
    category = gt.category.copy()
    crowd = np.zeros(gt.ids.size, dtype=bool)
    last_crowd: dict[int, int] = {}  # category -> crowd segment id
    if gt_segments is not None and gt_crowd_ids is not None:
        raise ValueError("pass either gt_segments or gt_crowd_ids, not both")
    if gt_segments is not None:
        table: dict[int, tuple[int, bool]] = {}
        for seg in gt_segments:
            try:
                sid, cat, iscrowd = int(seg["id"]), int(seg["category_id"]), bool(seg["iscrowd"])
            except KeyError as exc:
                raise ValueError(f"gt_segments entry {seg!r} lacks {exc.args[0]!r}") from exc
            if sid == VOID or not 0 <= cat < num_classes:
                raise ValueError(f"gt_segments entry {seg!r}: bad id or category_id")
            table[sid] = (cat, iscrowd)
            if iscrowd:
                last_crowd[cat] = sid
        for i in range(1, gt.ids.size):
            try:
                category[i], crowd[i] = table[int(gt.ids[i])]
            except KeyError:
                raise ValueError(f"gt_panoptic id {int(gt.ids[i])} is not in gt_segments") from None
    else:
        if gt_crowd_ids is None:
            is_thing = np.zeros(num_classes + 1, dtype=bool)  # [C + 1]; index -1 is void
            is_thing[list(metadata.thing_ids)] = True
            crowd = is_thing[category] & (gt.ids % metadata.label_divisor == 0)
        else:
            crowd = np.isin(gt.ids, np.fromiter(gt_crowd_ids, dtype=np.int64))
        crowd[0] = False
        for i in np.flatnonzero(crowd).tolist():  # increasing id: the last one wins
            last_crowd[int(category[i])] = int(gt.ids[i])
    crowd_of_category = np.full(num_classes, -1, dtype=np.int64)
    for cat, sid in last_crowd.items():
        pos = int(np.searchsorted(gt.ids, sid))
        if pos < gt.ids.size and gt.ids[pos] == sid:
            crowd_of_category[cat] = pos
    return _GtInfo(category=category, crowd=crowd, crowd_of_category=crowd_of_category)


# --------------------------------------------------------------------------- PQ
@dataclass(frozen=True)
class PanopticMatch:
    """PQ counts of one image and its matched (true positive) segment pairs.

    ``tp``, ``fp``, ``fn`` are ``[C]`` int64 and ``iou`` the ``[C]`` float64 sum of the
    matched IoUs per category. ``pred_ids``, ``gt_ids``, ``category``, ``pair_iou`` are
    ``[M]`` arrays, one entry per matched pair; ``fn_ids`` and ``fp_ids`` are the ids of
    the GT segments counted in ``fn`` and of the predictions counted in ``fp``.
    """

    tp: IntArray
    fp: IntArray
    fn: IntArray
    iou: FloatArray
    pred_ids: IntArray
    gt_ids: IntArray
    category: IntArray
    pair_iou: FloatArray
    fn_ids: IntArray
    fp_ids: IntArray


def _match(gt: _Indexed, info: _GtInfo, pred: _Indexed, pred_pixels: IntArray, num_classes: int) -> PanopticMatch:
    """Cityscapes PQ counting for one image (``pq_compute_single_core``), vectorised.

    ``pred_pixels`` is ``pred.pixels`` possibly with some pixels set to 0 (void).
    """
    n_gt, n_pred = gt.ids.size, pred.ids.size
    inter = np.bincount(gt.pixels * n_pred + pred_pixels, minlength=n_gt * n_pred)
    inter = inter.reshape(n_gt, n_pred)  # [S_gt, S_pred] pixel counts
    gt_area = inter.sum(axis=1)  # [S_gt]
    pred_area = inter.sum(axis=0)  # [S_pred]
    void_overlap = inter[0]  # [S_pred] pixels of each prediction on GT void

    g, p = np.nonzero(inter[1:, 1:])
    g, p = g + 1, p + 1
    keep = ~info.crowd[g] & (info.category[g] == pred.category[p])
    g, p = g[keep], p[keep]
    overlap = inter[g, p]
    union = pred_area[p] + gt_area[g] - overlap - void_overlap[p]
    iou = overlap / union  # float64, the same division cityscapesscripts does
    hit = iou > _MATCH_IOU
    g, p, iou = g[hit], p[hit], iou[hit]
    assert np.unique(g).size == g.size and np.unique(p).size == p.size
    cat = info.category[g]
    tp = np.bincount(cat, minlength=num_classes)
    iou_sum = np.bincount(cat, weights=iou, minlength=num_classes)

    unmatched_gt = ~info.crowd
    unmatched_gt[0] = False
    unmatched_gt[g] = False
    fn = np.bincount(info.category[unmatched_gt], minlength=num_classes)

    unmatched_pred = pred_area > 0  # a prediction voided away entirely no longer exists
    unmatched_pred[0] = False
    unmatched_pred[p] = False
    q = np.flatnonzero(unmatched_pred)
    crowd_seg = info.crowd_of_category[pred.category[q]]  # [Q], -1 if none
    crowd_overlap = np.where(crowd_seg >= 0, inter[np.maximum(crowd_seg, 0), q], 0)
    ignored = (void_overlap[q] + crowd_overlap) / pred_area[q] > _IGNORE_FRACTION
    fp = np.bincount(pred.category[q[~ignored]], minlength=num_classes)
    return PanopticMatch(
        tp=tp.astype(np.int64),
        fp=fp.astype(np.int64),
        fn=fn.astype(np.int64),
        iou=iou_sum.astype(np.float64),
        pred_ids=pred.ids[p],
        gt_ids=gt.ids[g],
        category=cat,
        pair_iou=iou,
        fn_ids=gt.ids[unmatched_gt],
        fp_ids=pred.ids[q[~ignored]],
    )


def match_panoptic(
    pred_panoptic: np.ndarray,
    gt_panoptic: np.ndarray,
    *,
    metadata: ClassMetadata | None = None,
    gt_segments: Sequence[Mapping[str, Any]] | None = None,
    gt_crowd_ids: Iterable[int] | None = None,
    pred_void: np.ndarray | None = None,
) -> PanopticMatch:
    """Match one predicted panoptic map to its ground truth, Cityscapes style.

    Reproduces ``pq_compute_single_core`` of cityscapesscripts 2.x:

    * a GT segment and a prediction of the same category match if
      ``IoU = |P & G| / (|P| + |G| - |P & G| - |P & GT void|) > 0.5``; crowd GT never matches;
    * unmatched non-crowd GT segments are false negatives;
    * an unmatched prediction is a false positive unless more than half of it lies on GT
      void plus the (last listed) crowd region of its own category.

    Args:
        pred_panoptic: ``[H, W]`` int predicted panoptic ids, ``-1`` void.
        gt_panoptic: ``[H, W]`` int ground-truth panoptic ids, ``-1`` void.
        metadata: classes and ``label_divisor``; Cityscapes by default.
        gt_segments: ``[{"id", "category_id", "iscrowd"}, ...]`` describing every id of
            ``gt_panoptic`` (``category_id`` is a train id); entries absent from the map
            are ignored. Default: category from the id, crowd = thing class with instance 0.
        gt_crowd_ids: alternatively, just the set of crowd ids of ``gt_panoptic``.
        pred_void: optional ``[H, W]`` bool, pixels to treat as void in the prediction.

    Returns:
        The per-category counts of this image and its matched pairs.

    """
    metadata = metadata or cityscapes_metadata()
    _check_map("gt_panoptic", gt_panoptic, None, "iu")
    _check_map("pred_panoptic", pred_panoptic, gt_panoptic.shape, "iu")
    gt = _index_panoptic(gt_panoptic, metadata, "gt_panoptic")
    pred = _index_panoptic(pred_panoptic, metadata, "pred_panoptic")
    info = _gt_info(gt, metadata, gt_segments, gt_crowd_ids)
    pred_pixels = pred.pixels
    if pred_void is not None:
        _check_map("pred_void", pred_void, gt_panoptic.shape, "b")
        pred_pixels = np.where(pred_void.reshape(-1), 0, pred_pixels)
    return _match(gt, info, pred, pred_pixels, metadata.num_classes)


def _pq_average(
    tp: IntArray, fp: IntArray, fn: IntArray, iou: FloatArray, select: BoolArray
) -> tuple[float, float, float, int]:
    """``PQStat.pq_average``: mean over selected categories with tp + fp + fn > 0.

    Returns fractions (not percent) and the number of categories averaged; the means
    are NaN when that number is 0 (cityscapesscripts divides by zero there).
    """
    used = select & (tp + fp + fn > 0)
    n = int(used.sum())
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    pq, sq, rq = _pq_per_class(tp[used], fp[used], fn[used], iou[used])
    return float(pq.sum() / n), float(sq.sum() / n), float(rq.sum() / n), n


def _pq_per_class(
    tp: IntArray, fp: IntArray, fn: IntArray, iou: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Per-category PQ, SQ, RQ fractions; NaN where tp + fp + fn == 0, SQ 0 where tp == 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        denom = tp + 0.5 * fp + 0.5 * fn
        pq = np.where(denom > 0, iou / denom, np.nan)
        rq = np.where(denom > 0, tp / denom, np.nan)
        sq = np.where(denom > 0, np.where(tp > 0, iou / np.maximum(tp, 1), 0.0), np.nan)
    return pq, sq, rq


class PanopticQuality:
    """Streaming PQ/SQ/RQ over a split, identical to cityscapesscripts' evaluation.

    Accumulates per-category tp, fp, fn and summed IoU; :meth:`result` averages over
    the categories with at least one tp, fp or fn ("All", things, stuff).
    """

    def __init__(self, *, metadata: ClassMetadata | None = None) -> None:
        self.metadata = metadata or cityscapes_metadata()
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated."""
        num_classes = self.metadata.num_classes
        self.tp = np.zeros(num_classes, dtype=np.int64)
        self.fp = np.zeros(num_classes, dtype=np.int64)
        self.fn = np.zeros(num_classes, dtype=np.int64)
        self.iou = np.zeros(num_classes, dtype=np.float64)

    def add(
        self,
        pred_panoptic: np.ndarray,
        gt_panoptic: np.ndarray,
        *,
        gt_segments: Sequence[Mapping[str, Any]] | None = None,
        gt_crowd_ids: Iterable[int] | None = None,
        pred_void: np.ndarray | None = None,
    ) -> PanopticMatch:
        """Match one image (see :func:`match_panoptic`), accumulate and return the match."""
        match = match_panoptic(
            pred_panoptic,
            gt_panoptic,
            metadata=self.metadata,
            gt_segments=gt_segments,
            gt_crowd_ids=gt_crowd_ids,
            pred_void=pred_void,
        )
        self.update(match)
        return match

    def update(self, match: PanopticMatch) -> None:
        """Accumulate the counts of an already matched image."""
        self.tp += match.tp
        self.fp += match.fp
        self.fn += match.fn
        self.iou += match.iou

    def result(self) -> dict[str, Any]:
        """PQ, SQ, RQ in percent for all categories, things (``_th``) and stuff (``_st``).

        Also ``n``, ``n_th``, ``n_st`` (categories averaged) and ``per_class``:
        name -> {PQ, SQ, RQ (percent, NaN if the category never occurred), TP, FP, FN}.
        """
        is_thing = np.zeros(self.metadata.num_classes, dtype=bool)
        is_thing[list(self.metadata.thing_ids)] = True
        out: dict[str, Any] = {}
        for suffix, select in (("", np.ones_like(is_thing)), ("_th", is_thing), ("_st", ~is_thing)):
            pq, sq, rq, n = _pq_average(self.tp, self.fp, self.fn, self.iou, select)
            out.update({f"PQ{suffix}": 100 * pq, f"SQ{suffix}": 100 * sq, f"RQ{suffix}": 100 * rq})
            out[f"n{suffix}"] = n
        pq_c, sq_c, rq_c = _pq_per_class(self.tp, self.fp, self.fn, self.iou)
        out["per_class"] = {
            name: {
                "PQ": 100 * float(pq_c[c]),
                "SQ": 100 * float(sq_c[c]),
                "RQ": 100 * float(rq_c[c]),
                "TP": int(self.tp[c]),
                "FP": int(self.fp[c]),
                "FN": int(self.fn[c]),
            }
            for c, name in enumerate(self.metadata.names)
        }
        return out


# --------------------------------------------------------------------------- mIoU
class SemanticIoU:
    """Confusion-matrix IoU over train ids, as cityscapesscripts' pixel-level evaluation.

    GT pixels equal to ``ignore_label`` are skipped. A prediction outside
    ``0..num_classes-1`` (e.g. 255) counts as a miss of the GT class and as nobody's
    false positive. A class's IoU is NaN while it has no tp, fp or fn; the mean skips it.
    """

    def __init__(self, *, num_classes: int, ignore_label: int = 255) -> None:
        self.num_classes = num_classes
        self.ignore_label = ignore_label
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated."""
        # rows: GT class; columns: predicted class, last column = invalid prediction
        self.confusion = np.zeros((self.num_classes, self.num_classes + 1), dtype=np.int64)

    def add(self, pred_semantic: np.ndarray, gt_semantic: np.ndarray) -> None:
        """Accumulate one ``[H, W]`` pair of train-id maps."""
        _check_map("gt_semantic", gt_semantic, None, "iu")
        _check_map("pred_semantic", pred_semantic, gt_semantic.shape, "iu")
        gt = gt_semantic.reshape(-1).astype(np.int64)
        keep = gt != self.ignore_label
        gt = gt[keep]
        if gt.size and (gt.min() < 0 or gt.max() >= self.num_classes):
            bad = int(gt[(gt < 0) | (gt >= self.num_classes)][0])
            raise ValueError(
                f"gt_semantic holds {bad}, neither a train id < {self.num_classes} nor ignore_label {self.ignore_label}"
            )
        pred = pred_semantic.reshape(-1)[keep].astype(np.int64)
        pred = np.where((pred >= 0) & (pred < self.num_classes), pred, self.num_classes)
        n_cols = self.num_classes + 1
        counts = np.bincount(gt * n_cols + pred, minlength=self.num_classes * n_cols)
        self.confusion += counts.reshape(self.num_classes, n_cols)

    def iou(self) -> FloatArray:
        """``[C]`` per-class IoU as a fraction; NaN where tp + fp + fn == 0."""
        tp = np.diag(self.confusion[:, : self.num_classes])
        fn = self.confusion.sum(axis=1) - tp
        fp = self.confusion[:, : self.num_classes].sum(axis=0) - tp
        denom = tp + fp + fn
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(denom > 0, tp / denom, np.nan)

    def miou(self) -> float:
        """Mean IoU in percent over classes with a defined IoU (NaN if none)."""
        iou = self.iou()
        return 100 * float(np.nanmean(iou)) if np.isfinite(iou).any() else math.nan


# --------------------------------------------------------------------------- depth
DEPTH_METRICS: tuple[str, ...] = (
    "AbsRel",
    "SqRel",
    "RMSE",
    "RMSElog",
    "delta1",
    "delta2",
    "delta3",
)


def depth_valid_mask(pred_depth: np.ndarray, gt_depth: np.ndarray, gt_depth_valid: np.ndarray) -> BoolArray:
    """``[H, W]`` pixels that score depth: GT valid, finite and > 0, prediction finite and > 0."""
    return gt_depth_valid & np.isfinite(gt_depth) & (gt_depth > 0) & np.isfinite(pred_depth) & (pred_depth > 0)


def depth_errors(pred_depth: np.ndarray, gt_depth: np.ndarray, gt_depth_valid: np.ndarray) -> dict[str, float] | None:
    """Eigen et al. depth errors of one image over :func:`depth_valid_mask` pixels.

    Returns ``AbsRel = mean(|d - d*| / d*)``, ``SqRel = mean((d - d*)^2 / d*)``,
    ``RMSE = sqrt(mean((d - d*)^2))`` [m], ``RMSElog = sqrt(mean((ln d - ln d*)^2))``, and
    ``delta_k`` = fraction with ``max(d / d*, d* / d) < 1.25^k``; ``None`` if no pixel scores.
    """
    mask = depth_valid_mask(pred_depth, gt_depth, gt_depth_valid)
    if not mask.any():
        return None
    d = pred_depth[mask].astype(np.float64)
    g = gt_depth[mask].astype(np.float64)
    diff = d - g
    ratio = np.maximum(d / g, g / d)
    return {
        "AbsRel": float(np.mean(np.abs(diff) / g)),
        "SqRel": float(np.mean(diff**2 / g)),
        "RMSE": float(np.sqrt(np.mean(diff**2))),
        "RMSElog": float(np.sqrt(np.mean((np.log(d) - np.log(g)) ** 2))),
        "delta1": float(np.mean(ratio < 1.25)),
        "delta2": float(np.mean(ratio < 1.25**2)),
        "delta3": float(np.mean(ratio < 1.25**3)),
    }


class DepthErrors:
    """Mean over images of the per-image :func:`depth_errors` (monodepth2 convention).

    Images without a single scoring pixel are left out of the mean.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated."""
        self.sums = dict.fromkeys(DEPTH_METRICS, 0.0)
        self.num_images = 0

    def add(self, pred_depth: np.ndarray, gt_depth: np.ndarray, gt_depth_valid: np.ndarray) -> dict[str, float] | None:
        """Score one image, accumulate and return its errors (``None`` if nothing scored)."""
        _check_map("gt_depth", gt_depth, None, "f")
        _check_map("pred_depth", pred_depth, gt_depth.shape, "f")
        _check_map("gt_depth_valid", gt_depth_valid, gt_depth.shape, "b")
        errors = depth_errors(pred_depth, gt_depth, gt_depth_valid)
        if errors is not None:
            self.num_images += 1
            for key, value in errors.items():
                self.sums[key] += value
        return errors

    def result(self) -> dict[str, float]:
        """Metric name -> mean over images (NaN before any image scored)."""
        n = self.num_images
        return {key: (s / n if n else math.nan) for key, s in self.sums.items()}


# --------------------------------------------------------------------------- DPQ
def dpq_void_mask(
    pred_depth: np.ndarray, gt_depth: np.ndarray, gt_depth_valid: np.ndarray, threshold: float
) -> BoolArray:
    """``[H, W]`` prediction pixels DPQ turns void: valid GT depth and ``|d - d*| / d* > λ``.

    Follows ViP-DeepLab ``cityscapes-dvps/eval_dvpq.py``: only pixels with valid GT
    depth (there ``depth_gt > 0``; here also ``gt_depth_valid`` and finite) are tested;
    pixels without valid GT depth keep their predicted label. A non-finite predicted
    depth on a valid GT pixel counts as wrong (the reference's PNG depth cannot be NaN).
    """
    valid, rel = _relative_depth_error(pred_depth, gt_depth, gt_depth_valid)
    return valid & ~(rel <= threshold)  # NaN compares False -> void


def _relative_depth_error(
    pred_depth: np.ndarray, gt_depth: np.ndarray, gt_depth_valid: np.ndarray
) -> tuple[BoolArray, FloatArray]:
    """``[H, W]`` usable-GT mask and ``|d - d*| / d*`` (meaningless where the mask is off)."""
    valid = gt_depth_valid & np.isfinite(gt_depth) & (gt_depth > 0)
    g = np.where(valid, gt_depth, 1.0).astype(np.float64)
    return valid, np.abs(pred_depth.astype(np.float64) - g) / g


# --------------------------------------------------------------------------- segment depth
def _segment_mean(pixels: IntArray, num_segments: int, depth: np.ndarray, valid: np.ndarray) -> FloatArray:
    """``[S]`` mean of ``depth`` over each segment's ``valid`` pixels; NaN if none."""
    v = valid.reshape(-1)
    idx = pixels[v]
    weights = depth.reshape(-1)[v].astype(np.float64)
    total = np.bincount(idx, weights=weights, minlength=num_segments)
    count = np.bincount(idx, minlength=num_segments)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(count > 0, total / count, np.nan)


# --------------------------------------------------------------------------- by distance
DISTANCE_BANDS_M: tuple[float, ...] = (0.0, 20.0, 40.0, 80.0)


def distance_band_edges(edges: Iterable[float]) -> tuple[float, ...]:
    """``edges`` as floats; ``ValueError`` unless finite metres >= 0, strictly increasing."""
    e = tuple(float(x) for x in edges)
    if not e or not all(math.isfinite(x) and x >= 0 for x in e) or any(b <= a for a, b in zip(e, e[1:], strict=False)):
        raise ValueError(f"distance band edges must be finite metres >= 0, increasing; got {list(e)}")
    return e


class ThingsByDistance:
    """Things PQ and depth errors per distance band.

    One PQ over a split mixes the car at 15 m, which the vehicle must see, with the one
    at 90 m a few pixels wide. ``edges`` (metres, increasing) bound the bands
    ``[e_i, e_i+1)``; the last band is open-ended. A ground-truth thing falls in the band
    of its mean valid GT depth, and its TP or FN is counted there; an unmatched prediction
    (FP) falls in the band of its own mean predicted depth, the distance the model reports
    for it. A segment without any valid depth (GT beyond ``--max-depth``, say) falls in
    no band.

    Per band: PQ/SQ/RQ averaged over the thing classes present in that band (as ``PQ_th``),
    TP/FP/FN summed over those classes, the AbsRel of the matched things' segment depth,
    and the pixel AbsRel of every valid GT pixel in the band (all classes), pooled over
    the split's pixels.
    """

    def __init__(self, edges: Sequence[float], *, num_classes: int, thing_ids: Iterable[int]) -> None:
        self.edges = np.asarray(distance_band_edges(edges), dtype=np.float64)
        self.is_thing = np.zeros(num_classes, dtype=bool)
        self.is_thing[list(thing_ids)] = True
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated."""
        shape = (self.edges.size, self.is_thing.size)
        self.tp = np.zeros(shape, dtype=np.int64)  # [B, C]
        self.fp = np.zeros(shape, dtype=np.int64)
        self.fn = np.zeros(shape, dtype=np.int64)
        self.iou = np.zeros(shape, dtype=np.float64)
        self.seg_rel_err = np.zeros(self.edges.size, dtype=np.float64)  # [B] matched things
        self.seg_count = np.zeros(self.edges.size, dtype=np.int64)
        self.pixel_rel_err = np.zeros(self.edges.size, dtype=np.float64)  # [B] valid pixels
        self.pixel_count = np.zeros(self.edges.size, dtype=np.int64)

    def band_of(self, depth: np.ndarray) -> IntArray:
        """Band index of each depth [m]; -1 below the first edge or not finite."""
        band = np.searchsorted(self.edges, depth, side="right") - 1
        return np.where(np.isfinite(depth), band, -1).astype(np.int64)

    def _things_in_bands(self, depth: FloatArray, category: IntArray) -> tuple[IntArray, IntArray, BoolArray]:
        band = self.band_of(depth)
        keep = (band >= 0) & self.is_thing[category]
        return band[keep], category[keep], keep

    def add_segments(self, counts: IntArray, depth: FloatArray, category: IntArray) -> None:
        """Count segments (``counts`` is ``self.fn`` or ``self.fp``) in their depth's band."""
        band, cat, _ = self._things_in_bands(depth, category)
        np.add.at(counts, (band, cat), 1)

    def add_matches(self, gt_depth: FloatArray, category: IntArray, iou: FloatArray) -> None:
        """Count matched pairs in the bands of their GT depth, with their IoU."""
        band, cat, keep = self._things_in_bands(gt_depth, category)
        np.add.at(self.tp, (band, cat), 1)
        np.add.at(self.iou, (band, cat), iou[keep])

    def add_segment_depth(self, gt_depth: FloatArray, rel_err: FloatArray, category: IntArray) -> None:
        """Matched things' segment-depth relative errors, in the bands of their GT depth."""
        band, _, keep = self._things_in_bands(gt_depth, category)
        self.seg_rel_err += np.bincount(band, weights=rel_err[keep], minlength=self.edges.size)
        self.seg_count += np.bincount(band, minlength=self.edges.size)

    def add_pixels(self, gt_depth: FloatArray, rel_err: FloatArray) -> None:
        """Valid pixels' relative depth errors, in the bands of their GT depth."""
        band = self.band_of(gt_depth)
        inside = band >= 0
        self.pixel_rel_err += np.bincount(band[inside], weights=rel_err[inside], minlength=self.edges.size)
        self.pixel_count += np.bincount(band[inside], minlength=self.edges.size)

    def merge(self, other: ThingsByDistance) -> None:
        """Add another accumulator's sums (same edges and classes)."""
        if not np.array_equal(self.edges, other.edges) or not np.array_equal(self.is_thing, other.is_thing):
            raise ValueError("cannot merge distance bands with different edges or classes")
        for name in ("tp", "fp", "fn", "iou", "seg_rel_err", "seg_count", "pixel_rel_err", "pixel_count"):
            getattr(self, name)[...] += getattr(other, name)

    def result(self) -> list[dict[str, Any]]:
        """One row per band.

        Keys: ``min_m``, ``max_m`` (inf for the last), ``PQ_th``, ``SQ_th``, ``RQ_th``
        (percent, NaN if no thing in the band), ``TP``, ``FP``, ``FN``,
        ``segment_depth_absrel_th``, ``segment_count_th``, ``AbsRel``, ``pixels``.
        """
        rows = []
        for i, low in enumerate(self.edges.tolist()):
            high = float(self.edges[i + 1]) if i + 1 < self.edges.size else math.inf
            pq, sq, rq, _ = _pq_average(self.tp[i], self.fp[i], self.fn[i], self.iou[i], self.is_thing)
            n_seg, n_pix = int(self.seg_count[i]), int(self.pixel_count[i])
            rows.append(
                {
                    "min_m": low,
                    "max_m": high,
                    "PQ_th": 100 * pq,
                    "SQ_th": 100 * sq,
                    "RQ_th": 100 * rq,
                    "TP": int(self.tp[i].sum()),
                    "FP": int(self.fp[i].sum()),
                    "FN": int(self.fn[i].sum()),
                    "segment_depth_absrel_th": float(self.seg_rel_err[i] / n_seg) if n_seg else math.nan,
                    "segment_count_th": n_seg,
                    "AbsRel": float(self.pixel_rel_err[i] / n_pix) if n_pix else math.nan,
                    "pixels": n_pix,
                }
            )
        return rows


# --------------------------------------------------------------------------- evaluator
class PanopticDepthEvaluator:
    """Accumulates PQ, mIoU, depth errors, DPQ and matched-segment depth errors over a split.

    * PQ family: :class:`PanopticQuality` (cityscapesscripts-identical), percent.
    * mIoU: :class:`SemanticIoU`, percent.
    * AbsRel, SqRel, RMSE [m], RMSElog, delta1..3 (fractions): per-image, then mean over
      images (:class:`DepthErrors`).
    * DPQ_λ for λ in 0.1, 0.25, 0.5: PQ ("All") after :func:`dpq_void_mask`; DPQ is
      their mean, ``DPQ_th``/``DPQ_st`` the same over things/stuff; percent.
    * segment depth: for every matched (IoU > 0.5) pair, the segment depth as the model
      reports it -- mean predicted depth over the predicted segment's pixels with a finite,
      positive prediction (GT validity not consulted) -- against the mean GT depth over
      the GT segment's valid pixels. Pairs without either are skipped.
      ``segment_depth_mae`` [m] and ``segment_depth_absrel`` (fraction) average over
      pairs of the whole split; ``_th``/``_st`` over thing/stuff pairs.
    * by distance: things PQ and depth errors per band of ``distance_bands`` (edges in
      metres; see :class:`ThingsByDistance`); ``None`` or empty leaves them out.

    Cost: about 0.3 s per :meth:`add` of a 1024x2048 image on one CPU core, spread
    over the four panoptic matchings (one plain, three DPQ), depth errors and indexing.
    """

    def __init__(
        self,
        *,
        metadata: ClassMetadata | None = None,
        distance_bands: Sequence[float] | None = DISTANCE_BANDS_M,
    ) -> None:
        self.metadata = metadata or cityscapes_metadata()
        self.distance_bands = tuple(distance_bands or ())
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated."""
        num_classes = self.metadata.num_classes
        self.by_distance = (
            ThingsByDistance(self.distance_bands, num_classes=num_classes, thing_ids=self.metadata.thing_ids)
            if self.distance_bands
            else None
        )
        self.pq = PanopticQuality(metadata=self.metadata)
        self.dpq = {t: PanopticQuality(metadata=self.metadata) for t in DPQ_THRESHOLDS}
        self.semantic = SemanticIoU(num_classes=num_classes, ignore_label=self.metadata.ignore_label)
        self.depth = DepthErrors()
        self.seg_abs_err = np.zeros(num_classes, dtype=np.float64)  # [C] sum of |d - d*| [m]
        self.seg_rel_err = np.zeros(num_classes, dtype=np.float64)  # [C] sum of |d - d*| / d*
        self.seg_count = np.zeros(num_classes, dtype=np.int64)  # [C] scored pairs

    def _semantic_from_panoptic(self, panoptic: np.ndarray) -> np.ndarray:
        return np.where(panoptic == VOID, self.metadata.ignore_label, panoptic // self.metadata.label_divisor)

    def add(
        self,
        pred_panoptic: np.ndarray,
        pred_semantic: np.ndarray | None,
        pred_depth: np.ndarray,
        gt_panoptic: np.ndarray,
        gt_semantic: np.ndarray | None,
        gt_depth: np.ndarray,
        gt_depth_valid: np.ndarray,
        gt_segments: Sequence[Mapping[str, Any]] | None = None,
        *,
        gt_crowd_ids: Iterable[int] | None = None,
    ) -> None:
        """Accumulate one image; every map ``[H, W]`` of the same size.

        Args:
            pred_panoptic: int panoptic ids, ``-1`` void.
            pred_semantic: int train ids, or ``None`` to take the panoptic categories.
            pred_depth: float metres.
            gt_panoptic: int panoptic ids, ``-1`` void.
            gt_semantic: int train ids with ``ignore_label``, or ``None`` (from panoptic).
            gt_depth: float metres.
            gt_depth_valid: bool, where ``gt_depth`` is meaningful.
            gt_segments: ``[{"id", "category_id", "iscrowd"}, ...]`` for the GT ids
                (see :func:`match_panoptic`); default derives crowd from instance 0.
            gt_crowd_ids: alternatively, the crowd ids of ``gt_panoptic``.

        """
        _check_map("gt_panoptic", gt_panoptic, None, "iu")
        shape = gt_panoptic.shape
        _check_map("pred_panoptic", pred_panoptic, shape, "iu")
        _check_map("pred_depth", pred_depth, shape, "f")
        _check_map("gt_depth", gt_depth, shape, "f")
        _check_map("gt_depth_valid", gt_depth_valid, shape, "b")
        if pred_semantic is None:
            pred_semantic = self._semantic_from_panoptic(pred_panoptic)
        if gt_semantic is None:
            gt_semantic = self._semantic_from_panoptic(gt_panoptic)
        _check_map("pred_semantic", pred_semantic, shape, "iu")
        _check_map("gt_semantic", gt_semantic, shape, "iu")

        num_classes = self.metadata.num_classes
        gt = _index_panoptic(gt_panoptic, self.metadata, "gt_panoptic")
        pred = _index_panoptic(pred_panoptic, self.metadata, "pred_panoptic")
        info = _gt_info(gt, self.metadata, gt_segments, gt_crowd_ids)
        match = _match(gt, info, pred, pred.pixels, num_classes)
        self.pq.update(match)
        depth_ok, rel = _relative_depth_error(pred_depth, gt_depth, gt_depth_valid)
        for threshold, accumulator in self.dpq.items():
            void = (depth_ok & ~(rel <= threshold)).reshape(-1)  # as dpq_void_mask
            accumulator.update(_match(gt, info, pred, np.where(void, 0, pred.pixels), num_classes))
        self.semantic.add(pred_semantic, gt_semantic)
        self.depth.add(pred_depth, gt_depth, gt_depth_valid)

        pred_ok = np.isfinite(pred_depth) & (pred_depth > 0)
        pred_seg_depth = _segment_mean(pred.pixels, pred.ids.size, pred_depth, pred_ok)  # [S_pred]
        gt_seg_depth = _segment_mean(gt.pixels, gt.ids.size, gt_depth, depth_ok)  # [S_gt]
        g_index = np.searchsorted(gt.ids, match.gt_ids)  # ids are sorted
        d = pred_seg_depth[np.searchsorted(pred.ids, match.pred_ids)]
        g = gt_seg_depth[g_index]
        ok = np.isfinite(d) & np.isfinite(g)
        cat = match.category[ok]
        err = np.abs(d[ok] - g[ok])
        self.seg_abs_err += np.bincount(cat, weights=err, minlength=num_classes)
        self.seg_rel_err += np.bincount(cat, weights=err / g[ok], minlength=num_classes)
        self.seg_count += np.bincount(cat, minlength=num_classes)

        bands = self.by_distance
        if bands is not None:
            bands.add_matches(g, match.category, match.pair_iou)
            bands.add_segment_depth(g[ok], err / g[ok], cat)
            fn_index = np.searchsorted(gt.ids, match.fn_ids)
            bands.add_segments(bands.fn, gt_seg_depth[fn_index], info.category[fn_index])
            fp_index = np.searchsorted(pred.ids, match.fp_ids)
            bands.add_segments(bands.fp, pred_seg_depth[fp_index], pred.category[fp_index])
            scored = depth_ok & pred_ok  # depth_valid_mask, from the masks at hand
            bands.add_pixels(gt_depth[scored].astype(np.float64), rel[scored])

    def merge(self, other: PanopticDepthEvaluator) -> None:
        """Add the sums of another evaluator (e.g. another process's share of the split)."""
        for mine, theirs in ((self.pq, other.pq), *((self.dpq[t], other.dpq[t]) for t in DPQ_THRESHOLDS)):
            mine.tp += theirs.tp
            mine.fp += theirs.fp
            mine.fn += theirs.fn
            mine.iou += theirs.iou
        self.semantic.confusion += other.semantic.confusion
        self.depth.num_images += other.depth.num_images
        for key, value in other.depth.sums.items():
            self.depth.sums[key] += value
        self.seg_abs_err += other.seg_abs_err
        self.seg_rel_err += other.seg_rel_err
        self.seg_count += other.seg_count
        if (self.by_distance is None) != (other.by_distance is None):
            raise ValueError("cannot merge an evaluator with distance bands into one without")
        if self.by_distance is not None and other.by_distance is not None:
            self.by_distance.merge(other.by_distance)

    def summary(self) -> dict[str, Any]:
        """All metrics of the images so far (see the class docstring for units).

        Keys: PQ, SQ, RQ, PQ_th, SQ_th, RQ_th, PQ_st, SQ_st, RQ_st, mIoU, AbsRel, SqRel,
        RMSE, RMSElog, delta1, delta2, delta3, DPQ, DPQ_0.1, DPQ_0.25, DPQ_0.5, DPQ_th,
        DPQ_st, segment_depth_mae, segment_depth_absrel, segment_depth_mae_th,
        segment_depth_absrel_th, segment_depth_mae_st, segment_depth_absrel_st, and
        ``per_class``: name -> {PQ, SQ, RQ, TP, FP, FN, IoU, DPQ, segment_depth_mae,
        segment_depth_absrel, segment_count, is_thing}; ``by_distance`` (with distance
        bands): :meth:`ThingsByDistance.result`. Undefined values are NaN.
        """
        pq = self.pq.result()
        out: dict[str, Any] = {
            key: pq[key] for key in ("PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st")
        }
        out["mIoU"] = self.semantic.miou()
        out.update(self.depth.result())

        dpq = {t: acc.result() for t, acc in self.dpq.items()}
        for t in DPQ_THRESHOLDS:
            out[f"DPQ_{t:g}"] = dpq[t]["PQ"]
        for suffix in ("", "_th", "_st"):
            out[f"DPQ{suffix}"] = float(np.mean([dpq[t][f"PQ{suffix}"] for t in DPQ_THRESHOLDS]))

        is_thing = np.zeros(self.metadata.num_classes, dtype=bool)
        is_thing[list(self.metadata.thing_ids)] = True
        for suffix, select in (("", np.ones_like(is_thing)), ("_th", is_thing), ("_st", ~is_thing)):
            n = int(self.seg_count[select].sum())
            mae = float(self.seg_abs_err[select].sum() / n) if n else math.nan
            rel = float(self.seg_rel_err[select].sum() / n) if n else math.nan
            out[f"segment_depth_mae{suffix}"] = mae
            out[f"segment_depth_absrel{suffix}"] = rel

        iou = self.semantic.iou()
        per_class: dict[str, dict[str, Any]] = {}
        for c, name in enumerate(self.metadata.names):
            n = int(self.seg_count[c])
            row = dict(pq["per_class"][name])
            row["IoU"] = 100 * float(iou[c])
            row["DPQ"] = float(np.mean([dpq[t]["per_class"][name]["PQ"] for t in DPQ_THRESHOLDS]))
            row["segment_depth_mae"] = float(self.seg_abs_err[c] / n) if n else math.nan
            row["segment_depth_absrel"] = float(self.seg_rel_err[c] / n) if n else math.nan
            row["segment_count"] = n
            row["is_thing"] = bool(is_thing[c])
            per_class[name] = row
        out["per_class"] = per_class
        if self.by_distance is not None:
            out["by_distance"] = self.by_distance.result()
        return out


def format_table(summary: Mapping[str, Any]) -> str:
    """Render :meth:`PanopticDepthEvaluator.summary` as a plain-text table."""
    lines = [
        f"{'class':14s}| {'PQ':>5s} {'SQ':>5s} {'RQ':>5s} {'IoU':>5s} {'DPQ':>5s}"
        f" {'segMAE':>7s} {'segRel':>6s} {'TP':>5s} {'FP':>5s} {'FN':>5s}"
    ]
    for name, row in summary.get("per_class", {}).items():
        lines.append(
            f"{name:14s}| {row['PQ']:5.1f} {row['SQ']:5.1f} {row['RQ']:5.1f} {row['IoU']:5.1f}"
            f" {row['DPQ']:5.1f} {row['segment_depth_mae']:7.2f}"
            f" {row['segment_depth_absrel']:6.3f} {row['TP']:5d} {row['FP']:5d} {row['FN']:5d}"
        )
    lines.append("-" * len(lines[0]))
    lines.append(f"{'':14s}| {'PQ':>5s} {'SQ':>5s} {'RQ':>5s} {'DPQ':>5s} {'segMAE':>7s} {'segRel':>6s}")
    for label, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
        lines.append(
            f"{label:14s}| {summary['PQ' + suffix]:5.1f} {summary['SQ' + suffix]:5.1f}"
            f" {summary['RQ' + suffix]:5.1f} {summary['DPQ' + suffix]:5.1f}"
            f" {summary['segment_depth_mae' + suffix]:7.2f}"
            f" {summary['segment_depth_absrel' + suffix]:6.3f}"
        )
    lines.append(
        f"mIoU {summary['mIoU']:.1f} | DPQ {summary['DPQ']:.1f} (0.1: {summary['DPQ_0.1']:.1f},"
        f" 0.25: {summary['DPQ_0.25']:.1f}, 0.5: {summary['DPQ_0.5']:.1f})"
    )
    lines.append("depth | " + " ".join(f"{key} {summary[key]:.4f}" for key in DEPTH_METRICS))
    bands = summary.get("by_distance")
    if bands:
        heads = ("PQ", "SQ", "RQ", "TP", "FP", "FN", "segRel", "AbsRel")
        lines.append(f"{'things at':14s}| " + " ".join(f"{h:>{6 if h.endswith('Rel') else 5}s}" for h in heads))
        for row in bands:
            high = row["max_m"]
            bounded = high is not None and math.isfinite(high)  # JSON has null for inf
            span = f"{row['min_m']:g}-{high:g} m" if bounded else f">= {row['min_m']:g} m"
            lines.append(
                f"{span:14s}| {row['PQ_th']:5.1f} {row['SQ_th']:5.1f} {row['RQ_th']:5.1f} {row['TP']:5d}"
                f" {row['FP']:5d} {row['FN']:5d} {row['segment_depth_absrel_th']:6.3f} {row['AbsRel']:6.3f}"
            )
    return "\n".join(lines)
