"""Offline inference on images, folders and videos: files in, files out.

    panoptic-depthlab infer INPUT... --out DIR [--checkpoint CKPT] [--device auto] [--fx PX]

Per frame ``<name>``: ``<name>_overlay.png``, ``<name>_depth.png`` (uint16
millimetres, 0 = invalid, as REP 118 allows), ``<name>_depth.npy`` (float32
meters), ``<name>_panoptic.png`` (Cityscapes panoptic format: RGB = id with
id = labelId * 1000 + k for things, labelId for stuff, 0 void) and
``<name>_segments.json`` (its ``segments_info`` plus every SegmentDepth field).
Videos also get ``<name>_overlay.mp4``, and their things are tracked over the frames
(unless ``--no-tracking``; time: frame index / the video's frame rate): the segments
carry ``track_id``, ``track_age``, ``velocity``, ``time_to_contact`` (JSON: null
unknown, "inf" not closing) and ``at_rest`` (false: no odometry), the overlay says
"car #12 14.3 m, 2.1 m/s closing", and ``<name>_tracked_panoptic.png`` is the panoptic
PNG with track ids as instance ids (the video panoptic convention: the same car has the
same id in every frame; things not tracked yet have instance 0, like stuff).
A checkpoint whose depth branch was never trained gives no depth files (and null
segment depths) unless ``--untrained-depth``.
Unreadable inputs, and images over ``max_pixels`` (read from their header before
decoding), are reported by path and skipped; the run goes on. ``--fx`` (the images'
focal length in pixels) puts
depth in that camera's metres and fills the segments' 3D centroids; without it depth
is what the training camera would see.

The folder is written aside and moved into place when the run ends (:mod:`.output`),
with ``panoptic_depthlab.json`` saying what wrote it and from what: a failed run keeps
the previous output, and ``--overwrite`` replaces only a folder ``infer`` wrote.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from .errors import InputError, NothingDoneError
from .image_io import DEFAULT_MAX_PIXELS, check_pixels, read_image
from .metadata import ClassMetadata
from .output import STAGING_SUFFIX, StagedOutput, check_output_dir, write_marker
from .predictor import Predictor
from .result import PanopticDepthResult
from .sources import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from .tracker import Tracker, TrackerConfig, track_panoptic
from .visualize import overlay, panoptic_to_rgb

WRITTEN_BY = "panoptic-depthlab infer"


@dataclass
class InferSummary:
    """What an ``infer`` run did: frames written and inputs skipped (path: reason)."""

    frames: int = 0
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    interrupted: bool = False  # a stop request ended the run early (the output holds what was done)


def cityscapes_panoptic(result: PanopticDepthResult, classes: ClassMetadata) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Our ids (trainId * divisor + k) -> Cityscapes panoptic ids and ``segments_info``."""
    ids = cityscapes_ids(result.panoptic, result.label_divisor, classes)
    lut = np.asarray(classes.dataset_ids, dtype=np.int64)
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


def cityscapes_ids(panoptic: np.ndarray, label_divisor: int, classes: ClassMetadata) -> np.ndarray:
    """A map of our ids (trainId * divisor + k, -1 void) -> Cityscapes ids (labelId * 1000 + k, labelId, 0 void)."""
    if not classes.dataset_ids:
        raise ValueError("class metadata has no dataset ids (Cityscapes labelIds) to encode with")
    lut = np.asarray(classes.dataset_ids, dtype=np.int64)
    pan = panoptic.astype(np.int64)
    valid = pan >= 0
    inst = pan % label_divisor
    label_ids = lut[np.where(valid, pan // label_divisor, 0)]
    return np.where(valid, np.where(inst > 0, label_ids * 1000 + inst, label_ids), 0)


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
    """NaN (unknown) -> null, +-inf (e.g. a time to contact when not closing) -> "inf" / "-inf"."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
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
    source: str,
) -> tuple[list[Path], np.ndarray]:
    """All per-frame files for one frame; returns the paths and the overlay image.

    ``source`` (the input file, and the frame of a video) goes into the segments JSON:
    the way back from an output name to its input. Without depth (``result.depth``
    None) the two depth files are not written; the tracked panoptic PNG only for a
    tracked result.
    """
    ov = overlay(image, result, near=near, far=far, class_colors=classes.colors)
    ids, info = cityscapes_panoptic(result, classes)
    paths = {
        "overlay": out_dir / f"{name}_overlay.png",
        "depth_png": out_dir / f"{name}_depth.png",
        "depth_npy": out_dir / f"{name}_depth.npy",
        "panoptic": out_dir / f"{name}_panoptic.png",
        "tracked_panoptic": out_dir / f"{name}_tracked_panoptic.png",
        "segments": out_dir / f"{name}_segments.json",
    }
    write_image(paths["overlay"], ov)
    write_image(paths["panoptic"], panoptic_to_rgb(ids)[:, :, ::-1])
    if result.tracked:
        video = track_panoptic(result)
        write_image(
            paths["tracked_panoptic"], panoptic_to_rgb(cityscapes_ids(video, result.label_divisor, classes))[:, :, ::-1]
        )
    else:
        del paths["tracked_panoptic"]
    if result.depth is None:
        del paths["depth_png"], paths["depth_npy"]
    else:
        write_image(paths["depth_png"], depth_to_png_mm(result.depth))
        np.save(paths["depth_npy"], result.depth)
    doc = {
        "image": name,
        "source": source,
        "height": result.height,
        "width": result.width,
        "label_divisor": result.label_divisor,
        "tracked": result.tracked,
        "panoptic_png": paths["panoptic"].name,
        "tracked_panoptic_png": paths["tracked_panoptic"].name if result.tracked else None,
        "segments_info": info,
        "segments": [{k: _json_safe(v) for k, v in asdict(s).items()} for s in result.segments],
        "timings": result.timings,
    }
    paths["segments"].write_text(json.dumps(doc, indent=1))
    return list(paths.values()), ov


def _expand(inputs: Sequence[str | Path], summary: InferSummary, out: Path) -> Iterator[Path]:
    """Input files in order; a folder's images and videos, leaving out this run's output and stagings."""
    out = out.resolve()

    def ours(path: Path) -> bool:
        real = path.resolve()
        return out in real.parents or any(
            p.name.startswith(f".{out.name}.") and p.name.endswith(STAGING_SUFFIX) for p in real.parents
        )

    for item in map(Path, inputs):
        if item.is_dir():
            files = sorted(
                p for p in item.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES and not ours(p)
            )
            if not files:
                summary.skipped.append(f"{item}: folder has no images or videos")
            yield from files
        elif item.is_file():
            yield item
        else:
            summary.skipped.append(f"{item}: no such file or folder")


class OutputNames:
    """A distinct name for each input's outputs, so that no input's files replace another's.

    A file's outputs are named by its stem; where several inputs share a stem
    (``cam0/000001.png`` and ``cam1/000001.png``, ``a.png`` and ``a.jpg``) each gets its
    folder's name in front (``cam0_000001``), and a name still taken gets ``-2``, ``-3``, ...
    """

    def __init__(self, paths: Sequence[Path]) -> None:
        self._stems = Counter(p.stem for p in paths)
        self._taken: set[str] = set()

    def of(self, path: Path) -> str:
        """The name of input ``path``'s outputs (given out now)."""
        return self.claim(path.stem if self._stems[path.stem] == 1 else f"{path.parent.name}_{path.stem}")

    def claim(self, name: str) -> str:
        """``name``, or the first of ``name-2``, ``name-3``, ... not yet given out; given out now."""
        candidate, k = name, 2
        while candidate in self._taken:
            candidate, k = f"{name}-{k}", k + 1
        self._taken.add(candidate)
        return candidate


def infer_output(out_dir: str | Path, inputs: Sequence[str | Path], *, overwrite: bool) -> StagedOutput:
    """Check the output rules for ``infer`` (before any model is loaded); see :mod:`.output`."""
    return check_output_dir(Path(out_dir), what=WRITTEN_BY, overwrite=overwrite, inputs=[Path(p) for p in inputs])


def check_fx(fx: float | None) -> None:
    """``--fx`` must be a positive, finite focal length in pixels (or absent)."""
    if fx is not None and not (math.isfinite(fx) and fx > 0):
        raise InputError(f"--fx must be a positive focal length in pixels, got {fx}")


@dataclass
class _FrameFiles:
    """Where a run's frames go: each frame's files under a distinct name, counted in the summary."""

    folder: Path
    names: OutputNames
    classes: ClassMetadata
    near: float
    far: float
    summary: InferSummary

    def write(self, name: str, image: np.ndarray, result: PanopticDepthResult, *, source: str) -> np.ndarray:
        """Write one frame's files; returns its overlay (a video's next frame)."""
        written, ov = write_frame_outputs(
            self.folder, name, image, result, self.classes, near=self.near, far=self.far, source=source
        )
        self.summary.frames += 1
        self.summary.written += [str(p) for p in written]
        return ov


def run_infer(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    predictor: Predictor,
    near: float = 5.0,
    far: float = 60.0,
    fx: float | None = None,
    progress: bool = True,
    overwrite: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    stop: Callable[[], bool] = lambda: False,
    tracking: bool | TrackerConfig = True,
) -> InferSummary:
    """Predict every image and video frame under ``inputs``; write files to ``out_dir``.

    ``fx``: focal length (pixels) of the camera that took them (see module doc).
    ``tracking``: track the things of each video (a fresh tracker per video) with the
    default :class:`TrackerConfig` (True), this one, or not at all (False).
    ``stop()`` is asked before each frame; once True the run ends as at the end of the
    inputs.  Raises :class:`NothingDoneError` (keeping any previous ``out_dir``) when no
    frame could be used.
    """
    check_fx(fx)
    out = Path(out_dir)
    staged = infer_output(out, inputs, overwrite=overwrite)
    summary = InferSummary()

    def predict(image: np.ndarray) -> PanopticDepthResult:
        return predictor.predict(image, camera_k=None if fx is None else pinhole_k(fx, image.shape[:2]))

    paths = list(_expand(inputs, summary, out))
    with staged as staging:
        work = staging / out.name
        work.mkdir()
        files = _FrameFiles(work, OutputNames(paths), predictor.classes, near, far, summary)
        for path in tqdm(paths, desc="infer", unit="file", disable=not progress):
            if stop():
                summary.interrupted = True
                break
            if path.suffix.lower() in VIDEO_SUFFIXES:
                tracker = Tracker(None if tracking is True else tracking) if tracking else None
                _video(path, files, predict, tracker, progress=progress, max_pixels=max_pixels, stop=stop)
                continue
            try:
                image = read_image(path, max_pixels=max_pixels)
                result = predict(image)
            except InputError as exc:
                summary.skipped.append(str(exc) if str(path) in str(exc) else f"{path}: {exc}")
                continue
            files.write(files.names.of(path), image, result, source=str(path))
        if summary.frames == 0 and not summary.interrupted:
            what = f"no frame of {len(paths)} input file(s) could be used" if paths else "no input could be used"
            raise NothingDoneError(what, summary.skipped)
        summary.written = [str(out / Path(p).name) for p in summary.written]  # where they are once moved
        write_marker(
            work,
            WRITTEN_BY,
            inputs=[str(Path(p).resolve()) for p in inputs],
            checkpoint=predictor.source,
            frames=summary.frames,
            skipped=summary.skipped,
            interrupted=summary.interrupted,
        )
    return summary


def pinhole_k(fx: float, size: tuple[int, int]) -> np.ndarray:
    """3x3 K with square pixels and the principal point at the image centre."""
    h, w = size
    return np.array([[fx, 0.0, (w - 1) / 2], [0.0, fx, (h - 1) / 2], [0.0, 0.0, 1.0]])


def _video(
    path: Path,
    files: _FrameFiles,
    predict: Callable[[np.ndarray], PanopticDepthResult],
    tracker: Tracker | None,
    *,
    progress: bool,
    max_pixels: int,
    stop: Callable[[], bool],
) -> None:
    """Every frame of video ``path`` (tracked when ``tracker``), and its overlay as an MP4."""
    summary = files.summary
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        summary.skipped.append(f"{path}: unreadable video")
        return
    try:
        check_pixels(
            int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), max_pixels, str(path)
        )
    except InputError as exc:
        cap.release()
        summary.skipped.append(str(exc))
        return
    fps = cap.get(cv2.CAP_PROP_FPS) or 10.0
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    video_name = files.names.of(path)
    video_path = files.folder / f"{video_name}_overlay.mp4"
    writer: cv2.VideoWriter | None = None
    index = 0
    try:
        with tqdm(total=total, desc=path.name, unit="frame", disable=not progress, leave=False) as bar:
            while not stop():
                ok, frame = cap.read()
                if not ok:
                    break
                name = files.names.claim(f"{video_name}_{index:06d}")
                index += 1
                bar.update(1)
                try:
                    result = predict(frame)
                except InputError as exc:
                    summary.skipped.append(f"{path} frame {index - 1}: {exc}")
                    continue
                if tracker is not None:  # the video's own time: a skipped frame widens dt
                    tracked = tracker.update(result, stamp_s=(index - 1) / fps, image=frame)
                    result = result.with_tracks(tracked.tracks)
                ov = files.write(name, frame, result, source=f"{path} frame {index - 1}")
                if writer is None:
                    writer = cv2.VideoWriter(
                        str(video_path), cv2.VideoWriter.fourcc(*"mp4v"), fps, (ov.shape[1], ov.shape[0])
                    )
                writer.write(ov)
    finally:
        cap.release()
        if writer is not None:
            writer.release()
            summary.written.append(str(video_path))
    if stop():
        summary.interrupted = True
    elif index == 0:
        summary.skipped.append(f"{path}: video has no readable frames")
