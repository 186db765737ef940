"""Synthetic frames written in the exact Cityscapes layout, and whole datasets of them.

``generate_dataset`` renders independent streets (one frame each) into
``leftImg8bit/``, ``gtFine/`` (labelIds, instanceIds, color, polygons), ``disparity/``
and ``camera/``, as the Cityscapes tree a training run reads.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np
from cityscapesscripts.helpers.labels import id2label, labels
from tqdm import tqdm

from .output import FRAME_FOLDERS, dataset_output, mark
from .render import SynthFrame, cached_generator

J = TypeVar("J")
R = TypeVar("R")


def _color_lut() -> np.ndarray:
    lut = np.zeros((256, 3), np.uint8)
    for lab in labels:
        if 0 <= lab.id < 256:
            lut[lab.id] = lab.color
    return lut


_LABEL_COLORS = _color_lut()  # [256, 3] RGB by labelId


def frame_polygons(frame: SynthFrame) -> dict[str, Any]:
    """Cityscapes ``gtFine_polygons.json`` content from the rendered segments.

    One object per outer contour of every segment (stuff: per labelId; things: per
    instance), ordered far to near (sky first) so that drawing them in order, as
    ``json2labelImg`` does, lets nearer objects cover farther ones. The PNGs are exact;
    the polygons are their contours (``cv2.findContours``, CHAIN_APPROX_SIMPLE).
    """
    h, w = frame.label_ids.shape
    objects: list[tuple[float, dict[str, Any]]] = []
    ids, inverse = np.unique(frame.instance_ids, return_inverse=True)
    inverse = inverse.reshape(h, w)
    depth_sum = np.bincount(inverse.ravel(), weights=frame.depth.ravel(), minlength=len(ids))
    valid_n = np.bincount(inverse.ravel(), weights=frame.depth_valid.ravel(), minlength=len(ids))
    for k, seg_id in enumerate(ids):
        label_id = int(seg_id) // 1000 if seg_id >= 1000 else int(seg_id)
        name = id2label[label_id].name
        mean_depth = depth_sum[k] / valid_n[k] if valid_n[k] > 0 else math.inf
        mask = (inverse == k).astype(np.uint8)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        for contour in contours:
            pts = contour.reshape(-1, 2).tolist()
            while len(pts) < 3:  # single pixels / lines: keep a drawable polygon
                pts.append(pts[-1])
            objects.append((mean_depth, {"label": name, "polygon": pts}))
    objects.sort(key=lambda o: -o[0])
    return {"imgHeight": h, "imgWidth": w, "objects": [o for _, o in objects]}


def color_image(label_ids: np.ndarray) -> np.ndarray:
    """Cityscapes ``gtFine_color`` RGBA [H, W, 4] uint8 from labelIds [H, W]."""
    rgb = _LABEL_COLORS[label_ids]
    alpha = np.full(label_ids.shape + (1,), 255, np.uint8)
    return np.concatenate([rgb, alpha], axis=-1)


def cityscapes_stem(city: str, seq: int, frame: int) -> str:
    """``{city}_{seq:06d}_{frame:06d}``."""
    return f"{city}_{seq:06d}_{frame:06d}"


def write_png(target: Path, array: np.ndarray) -> None:
    """Write ``array`` as a PNG (BGR order for colour); ``OSError`` naming the file on failure."""
    if not cv2.imwrite(str(target), array):
        raise OSError(f"could not write {target}")


def write_frame(root: Path, split: str, city: str, stem: str, frame: SynthFrame) -> None:
    """Write ``frame`` as the Cityscapes files of ``stem`` under ``root``."""

    def path(folder: str, suffix: str) -> Path:
        d = root / folder / split / city
        d.mkdir(parents=True, exist_ok=True)
        return d / f"{stem}_{suffix}"

    write_png(path("leftImg8bit", "leftImg8bit.png"), frame.image_rgb[..., ::-1])
    write_png(path("gtFine", "gtFine_labelIds.png"), frame.label_ids)
    write_png(path("gtFine", "gtFine_instanceIds.png"), frame.instance_ids.astype(np.uint16))
    write_png(path("gtFine", "gtFine_color.png"), color_image(frame.label_ids)[..., [2, 1, 0, 3]])
    write_png(path("disparity", "disparity.png"), frame.disparity_png)
    path("gtFine", "gtFine_polygons.json").write_text(json.dumps(frame_polygons(frame)))
    path("camera", "camera.json").write_text(json.dumps(frame.camera, indent=4))


DATASET_FRAME_NUMBER = 19  # Cityscapes annotates the 20th frame of each snippet


@dataclass(frozen=True)
class _Job:
    out: Path
    split: str
    city: str
    index: int
    seed: int
    height: int
    width: int


SPLIT_KEYS = {"train": 0, "val": 1, "test": 2}  # seeds a split's random streams


def dataset_frame(seed: int, split: str, index: int, *, height: int = 256, width: int = 512) -> SynthFrame:
    """Frame ``index`` of ``split`` exactly as :func:`generate_dataset` renders it."""
    gen = cached_generator(height, width)
    rng = np.random.default_rng([seed, SPLIT_KEYS[split], index])
    return gen.render(gen.make_scene(rng))


def _render_job(job: _Job) -> str:
    frame = dataset_frame(job.seed, job.split, job.index, height=job.height, width=job.width)
    stem = cityscapes_stem(job.city, job.index, DATASET_FRAME_NUMBER)
    write_frame(job.out, job.split, job.city, stem, frame)
    return stem


def generate_dataset(
    out: Path,
    *,
    train: int,
    val: int,
    seed: int,
    height: int = 256,
    width: int = 512,
    city: str = "synthcity",
    workers: int = 1,
    progress: bool = True,
) -> dict[str, int]:
    """Render ``train`` + ``val`` independent scenes into a Cityscapes tree at ``out``.

    Frame ``i`` of a split depends only on ``(seed, split, i)``: the same arguments give
    byte-identical files whatever ``workers`` is. Returns the frame count per split.
    """
    if train < 0 or val < 0:
        raise ValueError(f"frame counts must be >= 0, got train={train} val={val}")
    jobs = [
        _Job(Path(out), split, city, i, seed, height, width)
        for split, n in (("train", train), ("val", val))
        for i in range(n)
    ]
    with tqdm(total=len(jobs), desc="synth", unit="frame", disable=not progress) as bar:
        run_jobs(_render_job, jobs, workers=workers, chunksize=4, done=lambda _: bar.update())
    return {"train": train, "val": val}


def run_jobs(
    fn: Callable[[J], R], jobs: Sequence[J], *, workers: int, chunksize: int = 1, done: Callable[[R], object]
) -> None:
    """``done(fn(job))`` for each job in order; in ``workers`` processes when more than one.

    Leaving early (an error, Ctrl-C, SIGTERM) cancels the jobs not started: each worker
    ends after the one in hand instead of rendering on into a folder about to be removed.
    """
    if workers <= 1:
        for job in jobs:
            done(fn(job))
        return
    pool = ProcessPoolExecutor(max_workers=workers)
    try:
        for result in pool.map(fn, jobs, chunksize=chunksize):
            done(result)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def synth_main(
    out: Path,
    train: int,
    val: int,
    seed: int,
    height: int = 256,
    width: int = 512,
    *,
    city: str = "synthcity",
    workers: int = 1,
    overwrite: bool = False,
) -> int:
    """CLI body of ``panoptic-depthlab-training synth``; returns the exit code."""
    staged = dataset_output(out, overwrite=overwrite)
    with staged as staging:
        counts = generate_dataset(
            staging, train=train, val=val, seed=seed, height=height, width=width, city=city, workers=workers
        )
        for name in FRAME_FOLDERS:
            mark(staging / name, seed=seed, train=train, val=val, height=height, width=width, city=city)
    print(f"wrote {counts['train']} train + {counts['val']} val frames ({height}x{width}) to {out}")
    return 0
