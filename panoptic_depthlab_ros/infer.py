"""Offline inference on images, folders and videos: files in, files out.

    panoptic-depthlab infer INPUT... --out DIR [--checkpoint CKPT] [--device auto] [--fx PX]

Per frame ``<name>``: ``<name>_overlay.png``, ``<name>_depth.png`` (uint16
millimetres, 0 = invalid, as REP 118 allows), ``<name>_depth.npy`` (float32
meters), ``<name>_panoptic.png`` (Cityscapes panoptic format: RGB = id with
id = labelId * 1000 + k for things, labelId for stuff, 0 void) and
``<name>_segments.json`` (its ``segments_info`` plus every SegmentDepth field).
Videos also get ``<name>_overlay.mp4``.  A checkpoint whose depth branch was never
trained gives no depth files (and null segment depths) unless ``--untrained-depth``.
Unreadable inputs are reported by path and skipped; the run goes on. ``--fx`` (the images' focal length in pixels) puts
depth in that camera's metres and fills the segments' 3D centroids; without it depth
is what the training camera would see.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from .errors import InputError
from .metadata import ClassMetadata
from .predictor import Predictor
from .result import PanopticDepthResult
from .visualize import overlay, panoptic_to_rgb

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"}


@dataclass
class InferSummary:
    """What an ``infer`` run did: frames written and inputs skipped (path: reason)."""

    frames: int = 0
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def cityscapes_panoptic(result: PanopticDepthResult, classes: ClassMetadata) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Our ids (trainId * divisor + k) -> Cityscapes panoptic ids and ``segments_info``."""
    if not classes.dataset_ids:
        raise ValueError("class metadata has no dataset ids (Cityscapes labelIds) to encode with")
    lut = np.asarray(classes.dataset_ids, dtype=np.int64)
    pan = result.panoptic.astype(np.int64)
    cat = pan // result.label_divisor
    inst = pan % result.label_divisor
    valid = pan >= 0
    label_ids = lut[np.where(valid, cat, 0)]
    ids = np.where(valid, np.where(inst > 0, label_ids * 1000 + inst, label_ids), 0)
    info = []
    for s in result.segments:
        label_id = int(lut[s.category_id])
        sid = label_id * 1000 + s.id % result.label_divisor if s.is_thing else label_id
        info.append(
            {
                "id": int(sid),
                "category_id": label_id,
                "iscrowd": 0,
                "area": s.area,
                "bbox": [s.x_min, s.y_min, s.x_max - s.x_min + 1, s.y_max - s.y_min + 1],
            }
        )
    return ids, info


def write_image(path: Path, image: np.ndarray) -> None:
    """``cv2.imwrite`` that raises (OpenCV only returns False) naming the file."""
    if not cv2.imwrite(str(path), image):
        raise OSError(f"cannot write {path}")


def depth_to_png_mm(depth: np.ndarray) -> np.ndarray:
    """Meters -> uint16 millimetres; invalid or out of range (> 65.535 m) -> 0."""
    with np.errstate(invalid="ignore"):
        mm = np.round(depth * 1000.0)
        ok = np.isfinite(mm) & (mm > 0) & (mm <= 65535)
    return np.where(ok, mm, 0).astype(np.uint16)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_frame_outputs(
    out_dir: Path,
    name: str,
    image: np.ndarray,
    result: PanopticDepthResult,
    classes: ClassMetadata,
    *,
    near: float,
    far: float,
) -> tuple[list[Path], np.ndarray]:
    """All per-frame files for one frame; returns the paths and the overlay image.

    Without depth (``result.depth`` None) the two depth files are not written.
    """
    ov = overlay(image, result, near=near, far=far, class_colors=classes.colors)
    ids, info = cityscapes_panoptic(result, classes)
    paths = {
        "overlay": out_dir / f"{name}_overlay.png",
        "depth_png": out_dir / f"{name}_depth.png",
        "depth_npy": out_dir / f"{name}_depth.npy",
        "panoptic": out_dir / f"{name}_panoptic.png",
        "segments": out_dir / f"{name}_segments.json",
    }
    write_image(paths["overlay"], ov)
    write_image(paths["panoptic"], panoptic_to_rgb(ids)[:, :, ::-1])
    if result.depth is None:
        del paths["depth_png"], paths["depth_npy"]
    else:
        write_image(paths["depth_png"], depth_to_png_mm(result.depth))
        np.save(paths["depth_npy"], result.depth)
    doc = {
        "image": name,
        "height": result.height,
        "width": result.width,
        "label_divisor": result.label_divisor,
        "panoptic_png": paths["panoptic"].name,
        "segments_info": info,
        "segments": [{k: _json_safe(v) for k, v in asdict(s).items()} for s in result.segments],
        "timings": result.timings,
    }
    paths["segments"].write_text(json.dumps(doc, indent=1))
    return list(paths.values()), ov


def _expand(inputs: Sequence[str | Path], summary: InferSummary) -> Iterator[Path]:
    for item in map(Path, inputs):
        if item.is_dir():
            files = sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES)
            if not files:
                summary.skipped.append(f"{item}: folder has no images or videos")
            yield from files
        elif item.is_file():
            yield item
        else:
            summary.skipped.append(f"{item}: no such file or folder")


def run_infer(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    predictor: Predictor,
    near: float = 5.0,
    far: float = 60.0,
    fx: float | None = None,
    progress: bool = True,
) -> InferSummary:
    """Predict every image and video frame under ``inputs``; write files to ``out_dir``.

    ``fx``: focal length (pixels) of the camera that took them (see module doc).
    """
    if fx is not None and not (math.isfinite(fx) and fx > 0):
        raise InputError(f"--fx must be a positive focal length in pixels, got {fx}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = InferSummary()

    def predict(image: np.ndarray) -> PanopticDepthResult:
        return predictor.predict(image, camera_k=None if fx is None else pinhole_k(fx, image.shape[:2]))

    for path in tqdm(list(_expand(inputs, summary)), desc="infer", unit="file", disable=not progress):
        if path.suffix.lower() in VIDEO_SUFFIXES:
            _video(path, out, predict, predictor.classes, near, far, summary, progress)
            continue
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            summary.skipped.append(f"{path}: unreadable image")
            continue
        written, _ = write_frame_outputs(out, path.stem, image, predict(image), predictor.classes, near=near, far=far)
        summary.frames += 1
        summary.written += [str(p) for p in written]
    return summary


def pinhole_k(fx: float, size: tuple[int, int]) -> np.ndarray:
    """3x3 K with square pixels and the principal point at the image centre."""
    h, w = size
    return np.array([[fx, 0.0, (w - 1) / 2], [0.0, fx, (h - 1) / 2], [0.0, 0.0, 1.0]])


def _video(
    path: Path,
    out: Path,
    predict: Callable[[np.ndarray], PanopticDepthResult],
    classes: ClassMetadata,
    near: float,
    far: float,
    summary: InferSummary,
    progress: bool,
) -> None:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        summary.skipped.append(f"{path}: unreadable video")
        return
    fps = cap.get(cv2.CAP_PROP_FPS) or 10.0
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    video_path = out / f"{path.stem}_overlay.mp4"
    writer: cv2.VideoWriter | None = None
    index = 0
    try:
        with tqdm(total=total, desc=path.name, unit="frame", disable=not progress, leave=False) as bar:
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                written, ov = write_frame_outputs(
                    out,
                    f"{path.stem}_{index:06d}",
                    frame,
                    predict(frame),
                    classes,
                    near=near,
                    far=far,
                )
                if writer is None:
                    writer = cv2.VideoWriter(
                        str(video_path), cv2.VideoWriter.fourcc(*"mp4v"), fps, (ov.shape[1], ov.shape[0])
                    )
                writer.write(ov)
                summary.frames += 1
                summary.written += [str(p) for p in written]
                index += 1
                bar.update(1)
    finally:
        cap.release()
        if writer is not None:
            writer.release()
            summary.written.append(str(video_path))
    if index == 0:
        summary.skipped.append(f"{path}: video has no readable frames")
