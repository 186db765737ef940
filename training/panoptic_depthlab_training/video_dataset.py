"""Video sequences on disk in the Cityscapes-DVPS layout: listing and loading, frames in order.

Layout (ViP-DeepLab's ``cityscapes-dvps``; ``panoptic-depthlab-training synth --sequences``
writes it)::

    video_sequence/{split}/{seq:06d}_{frame:06d}_{city}_{seq:06d}_{frame:06d}_leftImg8bit.png
        RGB image
    ..._gtFine_instanceTrainIds.png   uint16 panoptic: trainId * 1000 + instance, instance
                                      ids consistent over the sequence (0 for stuff); class
                                      32 (32000) is void
    ..._depth.png                     uint16 z-depth * 256 (metres), 0 invalid
    ..._frame.json                    ours, what a tracker needs besides the pixels:
        {"stamp_ns": int, "K": [[fx, 0, u0], [0, fy, v0], [0, 0, 1]],
         "camera": {"velocity": [vx, vy, vz] m/s, "angular_velocity": [wx, wy, wz] rad/s},
         "things": [{"id": panoptic id, "label": name,
                     "center": [x, y, z] m, "velocity": [vx, vy, vz] m/s}, ...]}

The first two fields of a file name are the sequence and the frame within it (what
ViP-DeepLab's ``eval_dvpq.py`` groups and sorts by). ``center`` and ``velocity`` are in
the camera's optical frame (x right, y down, z forward) and relative to the camera:
``center`` is the centre of the thing's 3D bounding box, ``velocity`` its rate of change.
``camera`` (optional: folders written before it have none) is the camera's own motion
relative to the world, in the same frame, as odometry would give it: a thing standing still
has ``velocity == -camera.velocity - camera.angular_velocity x center``.
Loaded panoptic maps follow :mod:`.cityscapes`' convention (``-1`` void, a thing with
instance 0 is crowd).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from panoptic_depthlab_ros.ego_motion import EgoMotion
from panoptic_depthlab_ros.metadata import cityscapes_metadata

from .cityscapes import IGNORE_LABEL, LABEL_DIVISOR, VOID, DatasetError, _read_json, _read_png, read_image

VIDEO_DIR = "video_sequence"
DVPS_VOID_CLASS = 32  # the class of void pixels in Cityscapes-DVPS panoptic PNGs (eval_dvpq.py's ign_id)
DEPTH_PNG_SCALE = 256.0  # depth PNG value per metre
SUFFIXES = {
    "image": "_leftImg8bit.png",
    "panoptic": "_gtFine_instanceTrainIds.png",
    "depth": "_depth.png",
    "frame": "_frame.json",
}
_STEM = re.compile(r"^(\d{6})_(\d{6})_")

Vector = tuple[float, float, float]


def video_stem(city: str, sequence: int, frame: int) -> str:
    """``{sequence:06d}_{frame:06d}_{city}_{sequence:06d}_{frame:06d}``: the file name before the suffix."""
    return f"{sequence:06d}_{frame:06d}_{city}_{sequence:06d}_{frame:06d}"


@dataclass(frozen=True)
class VideoFrameFiles:
    """Paths of one frame (they need not exist until loaded)."""

    sequence: int
    frame: int
    stem: str
    image: Path
    panoptic: Path
    depth: Path
    frame_json: Path


@dataclass(frozen=True)
class VideoSequenceFiles:
    """One sequence's frames, in frame order."""

    split: str
    sequence: int
    frames: tuple[VideoFrameFiles, ...]


@dataclass(frozen=True)
class VideoSample:
    """One loaded frame; arrays in pixel (row, col) order.

    ``image`` [H, W, 3] uint8 RGB; ``panoptic`` [H, W] int32 (``-1`` void);
    ``semantic`` [H, W] uint8 trainIds (255 void); ``depth`` [H, W] float32 metres, 0
    where ``depth_valid`` is false; ``K`` [3, 3]; ``stamp_ns`` the frame's time;
    ``velocity`` and ``center``: panoptic id -> camera-frame m/s and m of each thing;
    ``camera_motion`` the camera's own motion (``None`` when the frame's JSON has none).
    """

    stem: str
    sequence: int
    frame: int
    image: np.ndarray
    panoptic: np.ndarray
    semantic: np.ndarray
    depth: np.ndarray
    depth_valid: np.ndarray
    K: np.ndarray
    stamp_ns: int
    velocity: dict[int, Vector]
    center: dict[int, Vector]
    camera_motion: EgoMotion | None = None


def video_dir(root: Path | str, split: str) -> Path:
    """``root/video_sequence/split``."""
    return Path(root) / VIDEO_DIR / split


def frame_files(directory: Path, stem: str) -> VideoFrameFiles:
    """The paths of frame ``stem`` in ``directory``."""
    match = _STEM.match(stem)
    if match is None:
        raise DatasetError(
            f"{directory / (stem + SUFFIXES['image'])}: the name does not start with SEQUENCE_FRAME_ (6 digits each)"
        )
    paths = {key: directory / f"{stem}{suffix}" for key, suffix in SUFFIXES.items()}
    return VideoFrameFiles(
        sequence=int(match.group(1)),
        frame=int(match.group(2)),
        stem=stem,
        image=paths["image"],
        panoptic=paths["panoptic"],
        depth=paths["depth"],
        frame_json=paths["frame"],
    )


def list_sequences(root: Path | str, split: str) -> list[VideoSequenceFiles]:
    """Sequences of ``root/video_sequence/{split}``, found from the images, each in frame order.

    Raises :class:`DatasetError` naming the directory or file when the layout is wrong.
    """
    directory = video_dir(root, split)
    if not directory.is_dir():
        raise DatasetError(f"no directory {directory} (video sequences live in {VIDEO_DIR}/{{split}}/)")
    suffix = SUFFIXES["image"]
    images = sorted(directory.glob(f"*{suffix}"))
    if not images:
        raise DatasetError(f"{directory}: no *{suffix} frames")
    by_sequence: dict[int, list[VideoFrameFiles]] = {}
    for path in images:
        files = frame_files(directory, path.name[: -len(suffix)])
        by_sequence.setdefault(files.sequence, []).append(files)
    out = []
    for sequence, frames in sorted(by_sequence.items()):
        frames.sort(key=lambda f: f.frame)
        for a, b in zip(frames, frames[1:], strict=False):
            if a.frame == b.frame:
                raise DatasetError(f"{b.image}: frame {b.frame} of sequence {sequence} also in {a.image.name}")
        out.append(VideoSequenceFiles(split=split, sequence=sequence, frames=tuple(frames)))
    return out


def panoptic_from_dvps(png: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Our panoptic map (``-1`` void) and trainIds (255 void) from a Cityscapes-DVPS panoptic PNG."""
    metadata = cityscapes_metadata()
    category = png.astype(np.int64) // LABEL_DIVISOR
    instance = png.astype(np.int64) % LABEL_DIVISOR
    known = category < metadata.num_classes
    thing = np.zeros(metadata.num_classes + 1, bool)
    thing[list(metadata.thing_ids)] = True
    is_thing = thing[np.where(known, category, metadata.num_classes)]
    panoptic = np.where(known, category * LABEL_DIVISOR + np.where(is_thing, instance, 0), VOID).astype(np.int32)
    semantic = np.where(known, category, IGNORE_LABEL).astype(np.uint8)
    return panoptic, semantic


def dvps_panoptic_png(panoptic: np.ndarray) -> np.ndarray:
    """The Cityscapes-DVPS uint16 PNG of our panoptic map (void ``-1`` -> class 32)."""
    return np.where(panoptic < 0, DVPS_VOID_CLASS * LABEL_DIVISOR, panoptic).astype(np.uint16)


def encode_depth(depth: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """uint16 depth PNG: ``round(depth * 256)`` where valid, else 0."""
    value = np.where(valid, np.round(depth.astype(np.float64) * DEPTH_PNG_SCALE), 0.0)
    return np.clip(value, 0, 65535).astype(np.uint16)


def _vector(path: Path, where: str, value: Any) -> Vector:
    if not (isinstance(value, list) and len(value) == 3 and all(isinstance(v, (int, float)) for v in value)):
        raise DatasetError(f"{path}: {where} must be a list of 3 numbers, got {value!r}")
    return (float(value[0]), float(value[1]), float(value[2]))


def _camera_motion(path: Path, value: Any) -> EgoMotion:
    if not isinstance(value, dict):
        raise DatasetError(f"{path}: camera must be an object with velocity and angular_velocity, got {value!r}")
    vectors = {key: _vector(path, f"camera.{key}", value.get(key)) for key in ("velocity", "angular_velocity")}
    for key, vector in vectors.items():
        if not all(math.isfinite(v) for v in vector):
            raise DatasetError(f"{path}: camera.{key} must be finite, got {list(vector)!r}")
    return EgoMotion(linear=vectors["velocity"], angular=vectors["angular_velocity"])


def read_frame_json(
    path: Path,
) -> tuple[int, np.ndarray, dict[int, Vector], dict[int, Vector], EgoMotion | None]:
    """``(stamp_ns, K, velocity by id, center by id, camera motion)`` from a ``_frame.json``.

    The camera motion is ``None`` when the file has no ``camera``. Raises DatasetError naming it.
    """
    if not path.is_file():
        raise DatasetError(f"missing {path}")
    data = _read_json(path, ("stamp_ns", "K", "things"))
    stamp = data["stamp_ns"]
    if isinstance(stamp, bool) or not isinstance(stamp, int):
        raise DatasetError(f"{path}: stamp_ns must be an integer (nanoseconds), got {stamp!r}")
    try:
        k = np.asarray(data["K"], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"{path}: K is not a 3x3 matrix of numbers ({exc})") from None
    if k.shape != (3, 3) or not np.isfinite(k).all() or k[0, 0] <= 0 or k[1, 1] <= 0:
        raise DatasetError(f"{path}: K must be a finite 3x3 matrix with fx, fy > 0, got {data['K']!r}")
    things = data["things"]
    if not isinstance(things, list):
        raise DatasetError(f"{path}: things must be a list")
    velocity: dict[int, Vector] = {}
    center: dict[int, Vector] = {}
    for i, thing in enumerate(things):
        if not isinstance(thing, dict) or not isinstance(thing.get("id"), int):
            raise DatasetError(f"{path}: things[{i}] needs an integer id")
        velocity[thing["id"]] = _vector(path, f"things[{i}].velocity", thing.get("velocity"))
        center[thing["id"]] = _vector(path, f"things[{i}].center", thing.get("center"))
    camera = _camera_motion(path, data["camera"]) if "camera" in data else None
    return stamp, k, velocity, center, camera


def load_video_frame(files: VideoFrameFiles, *, max_depth: float | None = None) -> VideoSample:
    """Read one frame; ground truth farther than ``max_depth`` is invalid (``None``: keep all).

    Raises :class:`DatasetError` naming the path of a missing or unreadable file.
    """
    for path in (files.image, files.panoptic, files.depth):
        if not path.is_file():
            raise DatasetError(f"missing {path}")
    bgr = read_image(files.image)
    size = bgr.shape[:2]
    panoptic, semantic = panoptic_from_dvps(_read_png(files.panoptic, dtype=np.uint16, channels=1, size=size))
    depth_png = _read_png(files.depth, dtype=np.uint16, channels=1, size=size)
    stamp, k, velocity, center, camera = read_frame_json(files.frame_json)
    depth = depth_png.astype(np.float32) / np.float32(DEPTH_PNG_SCALE)
    valid = depth_png > 0
    if max_depth is not None:
        valid &= depth <= max_depth
    return VideoSample(
        stem=files.stem,
        sequence=files.sequence,
        frame=files.frame,
        image=np.ascontiguousarray(bgr[..., ::-1]),
        panoptic=panoptic,
        semantic=semantic,
        depth=np.where(valid, depth, np.float32(0.0)),
        depth_valid=valid,
        K=k,
        stamp_ns=stamp,
        velocity=velocity,
        center=center,
        camera_motion=camera,
    )


def read_sequence(sequence: VideoSequenceFiles, *, max_depth: float | None = None) -> Iterator[VideoSample]:
    """The frames of ``sequence`` in order; their stamps must increase (DatasetError naming the frame)."""
    last: VideoSample | None = None
    for files in sequence.frames:
        sample = load_video_frame(files, max_depth=max_depth)
        if last is not None:
            if sample.stamp_ns <= last.stamp_ns:
                raise DatasetError(
                    f"{files.frame_json}: stamp_ns {sample.stamp_ns} does not follow the previous frame's"
                    f" {last.stamp_ns}"
                )
            if sample.image.shape != last.image.shape:
                raise DatasetError(f"{files.image}: size {sample.image.shape[:2]} differs from the sequence's")
        last = sample
        yield sample
