"""Cityscapes on disk: listing, verification, loading (semantic, panoptic, metric depth).

Layout (https://www.cityscapes-dataset.com, ``cityscapesscripts``)::

    leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png      RGB image
    gtFine/{split}/{city}/{stem}_gtFine_labelIds.png       uint8 labelIds
    gtFine/{split}/{city}/{stem}_gtFine_instanceIds.png    uint16 labelId * 1000 + k (things)
    gtFine/{split}/{city}/{stem}_gtFine_polygons.json
    disparity/{split}/{city}/{stem}_disparity.png          uint16, p = d * 256 + 1, 0 invalid
    camera/{split}/{city}/{stem}_camera.json               baseline, fx, fy, u0, v0

Label tables come from ``cityscapesscripts.helpers.labels``. Panoptic ids follow our
convention (``ClassMetadata``): ``trainId * 1000 + j`` for the ``j``-th instance (from 1)
of a thing class, ``trainId * 1000`` for stuff and for crowd regions of thing classes
(``iscrowd=1``, the instanceIds value < 1000, as ``createPanopticImgs`` treats them), and
``-1`` for void (labels ignored in evaluation). Invalid depth is ``0.0`` with
``depth_valid`` false; depth is never NaN or inf.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from cityscapesscripts.helpers.labels import id2label, labels
from torch.utils.data import Dataset

from panoptic_depthlab_ros.errors import InputError
from panoptic_depthlab_ros.image_io import DEFAULT_MAX_PIXELS
from panoptic_depthlab_ros.image_io import read_image as read_image_file
from panoptic_depthlab_ros.metadata import cityscapes_metadata

from .targets import PanopticTargetGenerator, unique_inverse

SPLITS = ("train", "val", "test")
LABEL_DIVISOR = 1000
IGNORE_LABEL = 255
VOID = -1
GT_SPLITS = ("train", "val")  # test has no public ground truth

_SUFFIX = {
    "image": ("leftImg8bit", "_leftImg8bit.png"),
    "label_ids": ("gtFine", "_gtFine_labelIds.png"),
    "instance_ids": ("gtFine", "_gtFine_instanceIds.png"),
    "polygons": ("gtFine", "_gtFine_polygons.json"),
    "disparity": ("disparity", "_disparity.png"),
    "camera": ("camera", "_camera.json"),
}


class DatasetError(ValueError):
    """A dataset file is missing, unreadable or inconsistent (the message names it)."""


def _train_id_lut() -> np.ndarray:
    lut = np.full(256, IGNORE_LABEL, np.uint8)
    for lab in labels:
        if 0 <= lab.id < 256 and 0 <= lab.trainId < IGNORE_LABEL:
            lut[lab.id] = lab.trainId
    return lut


LABEL_TO_TRAIN_ID = _train_id_lut()  # [256] uint8: labelId -> trainId, 255 ignore


@dataclass(frozen=True)
class SampleFiles:
    """Paths of one Cityscapes frame (they need not exist: see :func:`verify_cityscapes`)."""

    split: str
    city: str
    stem: str
    image: Path
    label_ids: Path
    instance_ids: Path
    polygons: Path
    disparity: Path
    camera: Path


def sample_files(root: Path | str, split: str, city: str, stem: str) -> SampleFiles:
    """Return the paths of frame ``stem`` (e.g. ``aachen_000000_000019``)."""
    root = Path(root)
    paths = {key: root / folder / split / city / f"{stem}{suffix}" for key, (folder, suffix) in _SUFFIX.items()}
    return SampleFiles(split=split, city=city, stem=stem, **paths)


def list_samples(root: Path | str, split: str) -> list[SampleFiles]:
    """Frames of ``split``, found from ``leftImg8bit/{split}/*/*_leftImg8bit.png``, sorted.

    Raises :class:`DatasetError` for an unknown split or a missing image directory.
    """
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; expected one of {SPLITS}")
    image_dir = Path(root) / "leftImg8bit" / split
    if not image_dir.is_dir():
        raise DatasetError(f"no image directory {image_dir}")
    suffix = _SUFFIX["image"][1]
    found = sorted(image_dir.glob(f"*/*{suffix}"))
    return [sample_files(root, split, p.parent.name, p.name[: -len(suffix)]) for p in found]


# ------------------------------------------------------------------------ verification
@dataclass
class VerifyReport:
    """Result of :func:`verify_cityscapes`: frame counts and every bad file by path."""

    root: Path
    counts: dict[str, int] = field(default_factory=dict)  # frames (images) per split
    missing: list[Path] = field(default_factory=list)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)  # (path, reason)

    @property
    def ok(self) -> bool:
        """True when every expected file exists and reads correctly."""
        return not self.missing and not self.unreadable

    def format(self) -> str:
        """Multi-line human-readable summary listing every problem."""
        head = "OK" if self.ok else (f"{len(self.missing)} missing, {len(self.unreadable)} unreadable file(s)")
        counts = ", ".join(f"{split}: {n}" for split, n in self.counts.items())
        lines = [f"Cityscapes at {self.root}: {head} ({counts or 'no splits'})"]
        lines += [f"  missing: {p}" for p in sorted(self.missing)]
        lines += [f"  unreadable: {p}: {why}" for p, why in sorted(self.unreadable)]
        return "\n".join(lines)


def _read_png(
    path: Path, *, dtype: type, channels: int, size: tuple[int, int] | None, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Decode a PNG (header checked against ``max_pixels`` first); check dtype, channels and (H, W).

    Raises DatasetError naming the file.
    """
    try:
        array = read_image_file(path, max_pixels=max_pixels, flags=cv2.IMREAD_UNCHANGED)
    except InputError as exc:
        raise DatasetError(str(exc)) from exc
    got_channels = 1 if array.ndim == 2 else array.shape[2]
    if array.dtype != dtype or got_channels != channels:
        raise DatasetError(
            f"{path}: expected {channels}-channel {np.dtype(dtype).name}, got {got_channels}-channel {array.dtype.name}"
        )
    if size is not None and array.shape[:2] != size:
        raise DatasetError(f"{path}: size {array.shape[:2]} differs from the image's {size}")
    return array


def _read_json(path: Path, required: Sequence[str]) -> dict[str, Any]:
    """Parse JSON and check dotted keys (``"intrinsic.fx"``); raises DatasetError."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise DatasetError(f"{path}: not readable JSON ({exc})") from exc
    for key in required:
        node: Any = data
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                raise DatasetError(f"{path}: lacks the key {key!r}")
            node = node[part]
    return data


def read_camera(path: Path) -> dict[str, float]:
    """``{"fx", "fy", "u0", "v0", "baseline"}`` from a Cityscapes camera JSON."""
    keys = ("intrinsic.fx", "intrinsic.fy", "intrinsic.u0", "intrinsic.v0", "extrinsic.baseline")
    data = _read_json(path, keys)
    try:
        cam = {k: float(data["intrinsic"][k]) for k in ("fx", "fy", "u0", "v0")}
        cam["baseline"] = float(data["extrinsic"]["baseline"])
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"{path}: non-numeric camera value ({exc})") from exc
    if not all(np.isfinite(v) for v in cam.values()):
        raise DatasetError(f"{path}: camera values must be finite, got {cam}")
    if cam["fx"] <= 0 or cam["fy"] <= 0 or cam["baseline"] <= 0:
        raise DatasetError(f"{path}: fx, fy and baseline must be positive, got {cam}")
    return cam


def camera_matrix(camera: Mapping[str, float]) -> np.ndarray:
    """[3, 3] intrinsics K from :func:`read_camera`'s dict."""
    return np.array([[camera["fx"], 0.0, camera["u0"]], [0.0, camera["fy"], camera["v0"]], [0.0, 0.0, 1.0]])


def read_image(path: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """[H, W, 3] uint8 **BGR** (OpenCV's order); raises DatasetError naming the file."""
    if not path.is_file():
        raise DatasetError(f"missing {path}")
    return _read_png(path, dtype=np.uint8, channels=3, size=None, max_pixels=max_pixels)


def focal_length(samples: Sequence[SampleFiles]) -> tuple[float, float]:
    """Median and relative spread ``(max - min) / median`` of the cameras' ``fx``.

    The depth a monocular network learns holds for the camera it saw: the trainer
    records this median in the checkpoint (``ModelConfig.depth_focal_px``).
    """
    if not samples:
        raise DatasetError("no frames to read camera focal lengths from")
    fx = np.array([read_camera(files.camera)["fx"] for files in samples])
    median = float(np.median(fx))
    return median, float((fx.max() - fx.min()) / median)


def _check_sample(
    files: SampleFiles, *, with_gt: bool, with_depth: bool, max_pixels: int
) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Read every file of one frame; returns (missing, unreadable)."""
    missing: list[Path] = []
    bad: list[tuple[Path, str]] = []

    def attempt(path: Path, read: Callable[[], Any]) -> Any:
        if not path.is_file():
            missing.append(path)
            return None
        try:
            return read()
        except DatasetError as exc:
            bad.append((path, str(exc).removeprefix(f"{path}: ")))
            return None

    def png(path: Path, dtype: type, channels: int, size: tuple[int, int] | None) -> Any:
        return attempt(path, lambda: _read_png(path, dtype=dtype, channels=channels, size=size, max_pixels=max_pixels))

    image = png(files.image, np.uint8, 3, None)
    size = None if image is None else image.shape[:2]
    if with_gt:
        label_ids = png(files.label_ids, np.uint8, 1, size)
        if label_ids is not None and int(label_ids.max()) > max(id2label):
            bad.append((files.label_ids, f"labelId {int(label_ids.max())} is not a Cityscapes id"))
        png(files.instance_ids, np.uint16, 1, size)
        poly = attempt(files.polygons, lambda: _read_json(files.polygons, ("imgHeight", "imgWidth", "objects")))
        if poly is not None and size is not None and (poly["imgHeight"], poly["imgWidth"]) != size:
            bad.append(
                (
                    files.polygons,
                    f"imgHeight/imgWidth {poly['imgHeight']}x"
                    f"{poly['imgWidth']} differ from the image's {size[0]}x{size[1]}",
                )
            )
    if with_depth:
        png(files.disparity, np.uint16, 1, size)
        attempt(files.camera, lambda: read_camera(files.camera))
    return missing, bad


def verify_cityscapes(
    root: Path | str,
    splits: Sequence[str] = GT_SPLITS,
    *,
    require_depth: bool = True,
    workers: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> VerifyReport:
    """Check that every frame of ``splits`` has all its files and that each one reads.

    Every PNG is decoded (dtype, channels and size checked against the frame's image),
    every JSON parsed (polygons: ``imgHeight``/``imgWidth``/``objects``; camera:
    ``intrinsic.fx/fy/u0/v0`` and ``extrinsic.baseline``). Ground truth is required for
    train/val only, disparity + camera when ``require_depth``. A split without images is
    reported as its missing image directory. Decoding runs on ``workers`` threads; a PNG
    whose header declares more than ``max_pixels`` is reported unreadable without decoding.
    """
    root = Path(root)
    report = VerifyReport(root=root)
    jobs: list[tuple[SampleFiles, bool]] = []
    for split in splits:
        try:
            samples = list_samples(root, split)
        except DatasetError:
            samples = []
        report.counts[split] = len(samples)
        if not samples:
            report.missing.append(root / "leftImg8bit" / split)
        jobs += [(s, split in GT_SPLITS) for s in samples]
    workers = workers or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(
            lambda job: _check_sample(job[0], with_gt=job[1], with_depth=require_depth, max_pixels=max_pixels), jobs
        )
        for missing, bad in results:
            report.missing += missing
            report.unreadable += bad
    return report


def require_valid(root: Path | str, splits: Sequence[str] = GT_SPLITS, *, require_depth: bool = True) -> VerifyReport:
    """:func:`verify_cityscapes`, raising :class:`DatasetError` (the report) if not ok."""
    report = verify_cityscapes(root, splits, require_depth=require_depth)
    if not report.ok:
        raise DatasetError(report.format())
    return report


# ----------------------------------------------------------------------------- loading
def depth_from_disparity(
    disparity_png: np.ndarray, baseline: float, fx: float, *, max_depth: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Metric z-depth from a Cityscapes disparity PNG.

    Args:
        disparity_png: [H, W] uint16, ``p = d * 256 + 1`` for disparity ``d`` px, ``0`` invalid.
        baseline: stereo baseline in metres.
        fx: focal length in pixels.
        max_depth: optionally also mark depths beyond it invalid.

    Returns:
        ``(depth, valid)``: [H, W] float32 metres ``baseline * fx / d`` and [H, W] bool.
        ``p == 0`` (no measurement) and ``p == 1`` (``d = 0``, infinitely far) are
        invalid; invalid pixels hold ``0.0`` (never inf or NaN).

    """
    if disparity_png.ndim != 2 or disparity_png.dtype != np.uint16:
        raise ValueError(f"disparity must be [H, W] uint16, got {disparity_png.shape} {disparity_png.dtype}")
    if baseline <= 0 or fx <= 0:
        raise ValueError(f"baseline and fx must be positive, got {baseline}, {fx}")
    p = disparity_png.astype(np.float64)
    valid = disparity_png > 1
    disparity = (p - 1.0) / 256.0
    depth = np.where(valid, baseline * fx / np.where(valid, disparity, 1.0), 0.0)
    if max_depth is not None:
        valid &= depth <= max_depth
        depth = np.where(valid, depth, 0.0)
    return depth.astype(np.float32), valid


def panoptic_from_instance_ids(instance_ids: np.ndarray) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Our panoptic map and segments from Cityscapes instanceIds, as ``createPanopticImgs``.

    Args:
        instance_ids: [H, W] integer Cityscapes instanceIds.

    Returns:
        ``panoptic`` [H, W] int32 (see the module docstring) and ``segments``: one dict
        per segment ``{"id", "category_id" (trainId), "iscrowd", "area", "is_thing"}``.
        Labels ignored in evaluation (trainId 255) become void ``-1`` with no segment.

    """
    ids, inverse = unique_inverse(instance_ids.astype(np.int64))
    areas = np.bincount(inverse.ravel(), minlength=len(ids))
    pan_of = np.full(len(ids), VOID, np.int64)
    segments: list[dict[str, Any]] = []
    next_instance: dict[int, int] = {}
    for k, seg_id in enumerate(ids.tolist()):
        label_id = seg_id // LABEL_DIVISOR if seg_id >= LABEL_DIVISOR else seg_id
        label = id2label.get(label_id)
        if label is None or label.ignoreInEval or not 0 <= label.trainId < IGNORE_LABEL:
            continue
        train_id = label.trainId
        is_thing = bool(label.hasInstances)
        iscrowd = int(is_thing and seg_id < LABEL_DIVISOR)
        if is_thing and not iscrowd:
            j = next_instance.get(train_id, 0) + 1
            if j >= LABEL_DIVISOR:
                raise DatasetError(f"more than {LABEL_DIVISOR - 1} instances of {label.name}")
            next_instance[train_id] = j
            pan_id = train_id * LABEL_DIVISOR + j
        else:
            pan_id = train_id * LABEL_DIVISOR
        pan_of[k] = pan_id
        segments.append(
            {"id": pan_id, "category_id": train_id, "iscrowd": iscrowd, "area": int(areas[k]), "is_thing": is_thing}
        )
    # contract: labelId -> trainId is one-to-one over evaluated labels, so stuff ids are unique
    panoptic = pan_of[inverse].reshape(instance_ids.shape).astype(np.int32)
    return panoptic, segments


@dataclass(frozen=True)
class CityscapesSample:
    """One loaded frame; arrays in pixel (row, col) order.

    ``image`` [H, W, 3] uint8 RGB; ``semantic`` [H, W] uint8 trainIds (255 ignore);
    ``panoptic`` [H, W] int32 (module docstring); ``segments`` list of segment dicts;
    ``depth`` [H, W] float32 metres (0 where invalid); ``depth_valid`` [H, W] bool;
    ``camera`` ``{"fx", "fy", "u0", "v0", "baseline"}``.
    """

    stem: str
    image: np.ndarray
    semantic: np.ndarray
    panoptic: np.ndarray
    segments: list[dict[str, Any]]
    depth: np.ndarray
    depth_valid: np.ndarray
    camera: dict[str, float]


def load_sample(files: SampleFiles, *, max_depth: float | None = None) -> CityscapesSample:
    """Read one frame (image, labelIds, instanceIds, disparity, camera).

    Raises :class:`DatasetError` naming the path of a missing or unreadable file.
    """
    for path in (files.image, files.label_ids, files.instance_ids, files.disparity, files.camera):
        if not path.is_file():
            raise DatasetError(f"missing {path}")
    bgr = read_image(files.image)
    size = bgr.shape[:2]
    label_ids = _read_png(files.label_ids, dtype=np.uint8, channels=1, size=size)
    instance_ids = _read_png(files.instance_ids, dtype=np.uint16, channels=1, size=size)
    disparity = _read_png(files.disparity, dtype=np.uint16, channels=1, size=size)
    camera = read_camera(files.camera)
    panoptic, segments = panoptic_from_instance_ids(instance_ids)
    depth, valid = depth_from_disparity(disparity, camera["baseline"], camera["fx"], max_depth=max_depth)
    return CityscapesSample(
        stem=files.stem,
        image=np.ascontiguousarray(bgr[..., ::-1]),
        semantic=LABEL_TO_TRAIN_ID[label_ids],
        panoptic=panoptic,
        segments=segments,
        depth=depth,
        depth_valid=valid,
        camera=camera,
    )


# ----------------------------------------------------------------------------- dataset
Transform = Callable[[CityscapesSample, np.random.Generator], CityscapesSample]


class CityscapesPanopticDepth(Dataset):
    """Cityscapes (or a synthetic tree in its layout) as Panoptic-DeepLab + depth targets.

    ``transform(sample, rng)`` (e.g. :class:`~.transforms.TrainAugmentation`) runs on the
    loaded sample BEFORE the targets are generated, so centers and offsets always match
    the augmented geometry. Its generator is ``default_rng([seed, epoch, index])``:
    deterministic whatever the DataLoader workers; call :meth:`set_epoch` each epoch
    (non-persistent workers pick it up when they are re-created).

    Items (``H, W`` after the transform):
        ``image`` [3, H, W] float32 RGB in 0..255 (not normalised); ``sem_seg`` [H, W]
        int64 trainIds (255 ignore); ``sem_seg_weights`` [H, W] float32; ``center``
        [1, H, W] float32; ``center_weights`` [1, H, W] float32; ``offset`` [2, H, W]
        float32 (offset_y, offset_x); ``offset_weights`` [1, H, W] float32; ``depth``
        [1, H, W] float32 metres (0 invalid); ``depth_valid`` [1, H, W] bool;
        ``panoptic`` [H, W] int64 (our convention, -1 void); ``stem`` str.
    """

    def __init__(
        self,
        root: Path | str,
        split: str,
        transform: Transform | None = None,
        target_generator: PanopticTargetGenerator | None = None,
        *,
        seed: int = 0,
        max_depth: float | None = None,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.samples = list_samples(self.root, split)
        if not self.samples:
            raise DatasetError(f"no frames in {self.root / 'leftImg8bit' / split}")
        self.transform = transform
        if target_generator is None:
            meta = cityscapes_metadata()
            target_generator = PanopticTargetGenerator(thing_ids=meta.thing_ids, ignore_label=meta.ignore_label)
        self.target_generator = target_generator
        self.seed = seed
        self.epoch = 0
        self.max_depth = max_depth

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of ``epoch``."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = load_sample(self.samples[index], max_depth=self.max_depth)
        if self.transform is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            sample = self.transform(sample, rng)
        targets = self.target_generator(sample.panoptic, sample.segments)
        item: dict[str, Any] = {
            "image": torch.from_numpy(np.ascontiguousarray(sample.image.transpose(2, 0, 1))).float(),
            "depth": torch.from_numpy(sample.depth[None].astype(np.float32)),
            "depth_valid": torch.from_numpy(sample.depth_valid[None].copy()),
            "panoptic": torch.from_numpy(sample.panoptic.astype(np.int64)),
            "stem": sample.stem,
        }
        for key in ("sem_seg", "sem_seg_weights", "center", "center_weights", "offset", "offset_weights"):
            item[key] = torch.from_numpy(targets[key])
        return item
