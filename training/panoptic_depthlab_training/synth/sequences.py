"""Drives written as video sequences in the Cityscapes-DVPS layout, and datasets of them.

``generate_sequences`` renders ``sequences`` drives (:mod:`.drive`) of ``frames`` frames each
into ``video_sequence/{split}/`` (layout: :mod:`..video_dataset`): image, panoptic ground
truth with instance ids consistent over the sequence, depth, and a ``_frame.json`` with the
frame's stamp, intrinsics, the camera's own motion and each visible thing's true 3D centre and
velocity.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from cityscapesscripts.helpers.labels import id2label
from tqdm import tqdm

from ..cityscapes import LABEL_DIVISOR, LABEL_TO_TRAIN_ID, VOID
from ..video_dataset import SUFFIXES, dvps_panoptic_png, encode_depth, video_dir, video_stem
from .drive import Drive, DriveFrame, make_drive, render_drive
from .output import mark, sequences_output
from .render import cached_generator
from .scene import THING_ID_BASE
from .writer import SPLIT_KEYS, run_jobs, write_png

# 2026-01-01T00:00:00Z: the first frame's stamp, so that files are byte-identical for a seed.
START_NS = 1_767_225_600_000_000_000
_SEQUENCE_STREAM = 1  # keeps a drive's random stream apart from the single frames of the same seed


def frame_stamp_ns(index: int, fps: float) -> int:
    """Stamp of frame ``index`` of a drive at ``fps``: :data:`START_NS` plus its time."""
    return START_NS + round(index * 1e9 / fps)


def sequence_drive(seed: int, split: str, index: int, *, frames: int, fps: float) -> Drive:
    """Drive ``index`` of ``split`` exactly as :func:`generate_sequences` renders it."""
    if split not in SPLIT_KEYS:
        raise ValueError(f"unknown split {split!r}; expected one of {tuple(SPLIT_KEYS)}")
    rng = np.random.default_rng([seed, SPLIT_KEYS[split], index, _SEQUENCE_STREAM])
    return make_drive(rng, frames=frames, fps=fps)


def panoptic_ids(instance_ids: np.ndarray) -> np.ndarray:
    """[H, W] int32 panoptic ids (``-1`` void) from Cityscapes instanceIds, stable over a drive.

    A thing ``labelId * 1000 + k`` becomes ``trainId * 1000 + k + 1`` (instance 0 would read
    as crowd); stuff ``trainId * 1000``; labels without a trainId void.
    """
    ids = instance_ids.astype(np.int64)
    thing = ids >= THING_ID_BASE
    label = np.where(thing, ids // THING_ID_BASE, ids)
    train = LABEL_TO_TRAIN_ID[np.clip(label, 0, 255)].astype(np.int64)
    instance = np.where(thing, ids % THING_ID_BASE + 1, 0)
    if (instance >= LABEL_DIVISOR).any():
        raise ValueError(f"a thing numbered {LABEL_DIVISOR - 1} or more has no panoptic id")
    return np.where(train < 255, train * LABEL_DIVISOR + instance, VOID).astype(np.int32)


def frame_record(drive_frame: DriveFrame, stamp_ns: int) -> dict[str, Any]:
    """The ``_frame.json`` content of one frame."""
    things = []
    for thing in drive_frame.things:
        pan = int(panoptic_ids(np.array([thing.instance_id]))[0])
        things.append(
            {
                "id": pan,
                "label": id2label[thing.instance_id // THING_ID_BASE].name,
                "center": list(thing.center),
                "velocity": list(thing.velocity),
            }
        )
    camera = {
        "velocity": list(drive_frame.camera_velocity),
        "angular_velocity": list(drive_frame.camera_angular_velocity),
    }
    return {"stamp_ns": stamp_ns, "K": drive_frame.frame.K.tolist(), "camera": camera, "things": things}


def write_drive_frame(directory: Path, stem: str, drive_frame: DriveFrame, stamp_ns: int) -> None:
    """Write one frame's image, panoptic and depth PNGs and its ``_frame.json`` into ``directory``."""
    frame = drive_frame.frame
    write_png(directory / f"{stem}{SUFFIXES['image']}", frame.image_rgb[..., ::-1])
    write_png(directory / f"{stem}{SUFFIXES['panoptic']}", dvps_panoptic_png(panoptic_ids(frame.instance_ids)))
    write_png(directory / f"{stem}{SUFFIXES['depth']}", encode_depth(frame.depth, frame.depth_valid))
    (directory / f"{stem}{SUFFIXES['frame']}").write_text(json.dumps(frame_record(drive_frame, stamp_ns)) + "\n")


@dataclass(frozen=True)
class _Job:
    directory: Path  # where the drive's frames go
    split: str
    city: str
    index: int
    seed: int
    frames: int
    fps: float
    height: int
    width: int


def _render_job(job: _Job) -> int:
    drive = sequence_drive(job.seed, job.split, job.index, frames=job.frames, fps=job.fps)
    job.directory.mkdir(parents=True, exist_ok=True)
    for drive_frame in render_drive(cached_generator(job.height, job.width), drive):
        stem = video_stem(job.city, job.index, drive_frame.index)
        write_drive_frame(job.directory, stem, drive_frame, frame_stamp_ns(drive_frame.index, job.fps))
    return job.frames


def generate_sequences(
    out: Path,
    *,
    sequences: int,
    frames: int,
    seed: int,
    split: str = "val",
    fps: float = 10.0,
    height: int = 256,
    width: int = 512,
    city: str = "synthcity",
    workers: int = 1,
    progress: bool = True,
    directory: Path | None = None,
) -> int:
    """Render ``sequences`` drives of ``frames`` frames into ``out/video_sequence/{split}``.

    ``directory``, when given, receives the frames instead (``synth`` renders into staging).

    Drive ``i`` depends only on ``(seed, split, i, frames, fps)``: the same arguments give
    byte-identical files whatever ``workers`` is. Returns the number of frames written.
    """
    if sequences < 1 or frames < 1:
        raise ValueError(f"need at least 1 sequence of 1 frame, got {sequences} of {frames}")
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if split not in SPLIT_KEYS:
        raise ValueError(f"unknown split {split!r}; expected one of {tuple(SPLIT_KEYS)}")
    target = video_dir(out, split) if directory is None else Path(directory)
    jobs = [_Job(target, split, city, i, seed, frames, fps, height, width) for i in range(sequences)]
    with tqdm(total=sequences * frames, desc="synth sequences", unit="frame", disable=not progress) as bar:
        run_jobs(_render_job, jobs, workers=workers, done=bar.update)
    return sequences * frames


def sequences_main(
    out: Path,
    *,
    sequences: int,
    frames: int,
    seed: int,
    split: str,
    fps: float,
    height: int,
    width: int,
    city: str = "synthcity",
    workers: int = 1,
    overwrite: bool = False,
) -> int:
    """CLI body of ``panoptic-depthlab-training synth --sequences``; returns the exit code."""
    staged = sequences_output(out, split, overwrite=overwrite)
    with staged as staging:
        rendered = staging / split
        generate_sequences(
            out,
            sequences=sequences,
            frames=frames,
            seed=seed,
            split=split,
            fps=fps,
            height=height,
            width=width,
            city=city,
            workers=workers,
            directory=rendered,
        )
        mark(rendered, seed=seed, sequences=sequences, frames=frames, fps=fps, height=height, width=width, city=city)
    print(f"wrote {sequences} sequences x {frames} frames ({height}x{width}, {fps:g} Hz) to {video_dir(out, split)}")
    return 0
