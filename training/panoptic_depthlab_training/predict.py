"""Predictions for a whole Cityscapes split, in the files the benchmark and its scripts read.

    panoptic-depthlab-training predict --checkpoint CKPT --data ROOT --split test --out DIR

Writes, for split ``S``:

* ``DIR/cityscapes_panoptic_S/<frame>_panoptic.png``: the panoptic map in the Cityscapes /
  COCO panoptic encoding (RGB = id; id = labelId * 1000 + k for things, labelId for stuff,
  0 void), as ``createPanopticImgs`` writes the ground truth;
* ``DIR/cityscapes_panoptic_S.json``: COCO panoptic ``annotations`` (``image_id`` = frame
  name, ``file_name``, ``segments_info``) and ``categories``: with the folder above, what
  cityscapesscripts' ``evalPanopticSemanticLabeling`` takes as ``--prediction-json-file`` and
  ``--prediction-folder``, and what the benchmark server takes for the test split;
* ``DIR/depth_S/<frame>_depth.png``: depth as uint16 millimetres, 0 invalid (as ``infer``).

Only images (and cameras, when present, for metric depth in each frame's camera) are read,
so the test split works without ground truth. An unreadable image is reported by path and
skipped; the run goes on and exits with 1.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from cityscapesscripts.helpers.labels import labels as cityscapes_labels
from tqdm import tqdm

from panoptic_depthlab_ros.cli import add_inference_args, inference_options
from panoptic_depthlab_ros.infer import cityscapes_panoptic, depth_to_png_mm, write_image
from panoptic_depthlab_ros.predictor import Predictor, resolve_device
from panoptic_depthlab_ros.visualize import panoptic_to_rgb

from .cityscapes import SPLITS, DatasetError, SampleFiles, camera_matrix, list_samples, read_camera, read_image


@dataclass
class PredictSummary:
    """What :func:`write_predictions` wrote: the JSON, frame count and skipped frames."""

    json_path: Path
    frames: int = 0
    skipped: list[str] = field(default_factory=list)  # "<path>: <reason>"


def panoptic_categories() -> list[dict[str, Any]]:
    """COCO panoptic ``categories``: the evaluated Cityscapes classes, as createPanopticImgs lists them."""
    return [
        {
            "id": lab.id,
            "name": lab.name,
            "color": list(lab.color),
            "supercategory": lab.category,
            "isthing": int(lab.hasInstances),
        }
        for lab in cityscapes_labels
        if not lab.ignoreInEval
    ]


def write_predictions(
    predictor: Predictor,
    samples: Sequence[SampleFiles],
    out_dir: Path,
    *,
    split: str,
    progress: bool = True,
) -> PredictSummary:
    """Predict every frame of ``samples`` and write the files listed in the module docstring."""
    pan_dir = out_dir / f"cityscapes_panoptic_{split}"
    depth_dir = out_dir / f"depth_{split}"
    pan_dir.mkdir(parents=True, exist_ok=True)
    depth_dir.mkdir(parents=True, exist_ok=True)
    summary = PredictSummary(json_path=out_dir / f"cityscapes_panoptic_{split}.json")
    annotations = []
    with torch.no_grad():
        for files in tqdm(samples, desc="predict", unit="img", disable=not progress, dynamic_ncols=True):
            try:
                bgr = read_image(files.image)
                camera = read_camera(files.camera) if files.camera.is_file() else None
            except DatasetError as exc:
                summary.skipped.append(str(exc))
                continue
            result = predictor.predict(bgr, camera_k=None if camera is None else camera_matrix(camera))
            ids, segments_info = cityscapes_panoptic(result, predictor.classes)
            name = f"{files.stem}_panoptic.png"
            write_image(pan_dir / name, panoptic_to_rgb(ids)[:, :, ::-1])
            if result.depth is not None:  # None only for a predictor built without untrained_depth
                write_image(depth_dir / f"{files.stem}_depth.png", depth_to_png_mm(result.depth))
            annotations.append({"image_id": files.stem, "file_name": name, "segments_info": segments_info})
            summary.frames += 1
    doc = {"annotations": annotations, "categories": panoptic_categories()}
    summary.json_path.write_text(json.dumps(doc) + "\n")
    return summary


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    """Arguments of ``predict`` (reused by the ``panoptic-depthlab-training`` CLI)."""
    parser = argparse.ArgumentParser(description="Predict a Cityscapes split into files", add_help=add_help)
    parser.add_argument("--checkpoint", required=True, type=Path, help="our .safetensors checkpoint")
    parser.add_argument("--data", required=True, type=Path, help="Cityscapes root (or a synthetic tree)")
    parser.add_argument("--split", default="test", choices=SPLITS)
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.add_argument("--limit", type=int, default=0, help="only the first N frames (0: all)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_inference_args(parser)
    return parser


def main(args: argparse.Namespace) -> int:
    """Run ``predict``; returns 0, or 1 when frames were skipped."""
    samples = list_samples(args.data, args.split)
    if args.limit:
        samples = samples[: args.limit]
    if not samples:
        raise DatasetError(f"no images in {args.data / 'leftImg8bit' / args.split}")
    device = resolve_device(args.device)
    predictor = Predictor.from_checkpoint(
        args.checkpoint, device=device, untrained_depth=True, **inference_options(args)
    )
    summary = write_predictions(predictor, samples, args.out, split=args.split, progress=not args.no_progress)
    for problem in summary.skipped:
        print(f"skipped: {problem}")
    print(f"wrote {summary.frames} frames: {summary.json_path} with {summary.json_path.with_suffix('')}/")
    return 1 if summary.skipped else 0
