"""Calibration frames for an INT8 export: frames spread evenly over a folder of images, a video or a bag.

Static quantization fixes each activation's range once, from what the network sees on
these frames, so they should look like what it will run on: the same camera, the same
kind of scene. Frames are taken evenly over the whole source (the start of a drive alone
would stand for all of it) and turned into network inputs exactly as the predictor
prepares its frames (:mod:`.preprocess`), so the ranges are those of real inputs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .errors import InputError, PanopticDepthLabError
from .image_io import DEFAULT_MAX_PIXELS, check_pixels, read_image
from .model import ModelConfig
from .preprocess import prepare_image
from .sources import BAG_FILE_SUFFIXES, IMAGE_SUFFIXES, VIDEO_SUFFIXES, looks_like_bag

DEFAULT_FRAMES = 32
SOURCE_KINDS = ("images", "video", "bag")
SOURCE_TEXT = (
    f"a folder of images, a video ({', '.join(sorted(VIDEO_SUFFIXES))})"
    f" or a bag (a bag folder, {' or '.join(BAG_FILE_SUFFIXES)})"
)


class CalibrationError(PanopticDepthLabError):
    """Calibration frames cannot be had from the source given (the message names it and why)."""


@dataclass
class CalibrationFrames:
    """What was read: BGR frames, where from, and what was left out (path or frame: reason)."""

    source: Path
    kind: str
    frames: list[np.ndarray]
    available: int  # frames (images, video frames, bag messages) the source holds
    skipped: list[str] = field(default_factory=list)


def source_kind(source: Path) -> str:
    """``images``, ``video`` or ``bag``; a :class:`CalibrationError` for anything else."""
    if not source.exists():
        raise CalibrationError(f"calibration source {source}: no such file or folder")
    if looks_like_bag(source):
        return "bag"
    if source.is_dir():
        return "images"
    if source.suffix.lower() in VIDEO_SUFFIXES:
        return "video"
    raise CalibrationError(f"calibration source {source}: not {SOURCE_TEXT}")


def spread(total: int, count: int) -> list[int]:
    """``count`` indices of ``range(total)`` spread evenly from the first to the last (all when fewer)."""
    if total <= count:
        return list(range(total))
    return sorted({round(i * (total - 1) / (count - 1)) for i in range(count)}) if count > 1 else [0]


def read_calibration_frames(
    source: str | Path,
    count: int = DEFAULT_FRAMES,
    *,
    image_topic: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> CalibrationFrames:
    """Up to ``count`` frames of ``source`` spread over all of it (see module doc).

    Unreadable images and frames over ``max_pixels`` are skipped and named; no frame at
    all is a :class:`CalibrationError` naming the source and the first reason.
    """
    if count < 1:
        raise CalibrationError(f"--calibration-frames must be at least 1, got {count}")
    path = Path(source)
    kind = source_kind(path)
    if kind == "images":
        result = _images(path, count, max_pixels)
    elif kind == "video":
        result = _video(path, count, max_pixels)
    else:
        from .bag_reading import read_bag_frames  # noqa: PLC0415 - rosbags only when a bag is given

        frames, available, skipped = read_bag_frames(
            path, lambda total: spread(total, count), image_topic=image_topic, max_pixels=max_pixels
        )
        result = CalibrationFrames(path, kind, frames, available, skipped)
    if not result.frames:
        why = result.skipped[0] if result.skipped else f"it holds no {'images' if kind == 'images' else 'frames'}"
        raise CalibrationError(f"calibration source {path}: no calibration frames ({why})")
    return result


def _images(folder: Path, count: int, max_pixels: int) -> CalibrationFrames:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    result = CalibrationFrames(folder, "images", [], len(files))
    for i in spread(len(files), count):
        try:
            result.frames.append(read_image(files[i], max_pixels=max_pixels))
        except InputError as exc:
            result.skipped.append(str(exc) if str(files[i]) in str(exc) else f"{files[i]}: {exc}")
    return result


def _video(path: Path, count: int, max_pixels: int) -> CalibrationFrames:
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise CalibrationError(f"calibration source {path}: unreadable video")
        try:
            check_pixels(
                int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), max_pixels, str(path)
            )
        except InputError as exc:
            raise CalibrationError(f"calibration source {exc}") from exc
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if total <= 0:  # a container without a frame count: count by decoding
            while cap.grab():
                total += 1
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        wanted = set(spread(total, count))
        result = CalibrationFrames(path, "video", [], total)
        for index in range(total):
            ok, frame = cap.read()
            if not ok:
                break
            if index in wanted:
                result.frames.append(frame)
        return result
    finally:
        cap.release()


def network_inputs(
    frames: list[np.ndarray], config: ModelConfig, fixed_size: tuple[int, int] | None
) -> Iterator[np.ndarray]:
    """Each frame as the network input ``[1, 3, H, W]`` float32 the predictor would give it.

    ``fixed_size``: the input size of an export without ``--dynamic``; frames are resized to
    it (so that the network sees frames of that size, whatever the source's size).
    """
    for frame in frames:
        cfg = config
        if fixed_size is not None:
            h, w = fixed_size
            frame = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA if w < frame.shape[1] else cv2.INTER_LINEAR)
            cfg = config.with_(input_scale=1.0)
        yield prepare_image(frame, cfg, device="cpu").tensor.numpy()
