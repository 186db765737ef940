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
so the test split works without ground truth. An unreadable image (or one over
``--max-pixels``) is reported by path and skipped; the run goes on and exits with 1.

The split's three entries are written aside and moved into ``DIR`` at the end (see
``panoptic_depthlab_ros.output``): a failed run keeps earlier predictions, other files in
``DIR`` are never touched, and ``--overwrite`` replaces only predictions this command wrote
(its JSON says so).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from cityscapesscripts.helpers.labels import labels as cityscapes_labels
from tqdm import tqdm

from panoptic_depthlab_ros.errors import InputError, NothingDoneError
from panoptic_depthlab_ros.exit_codes import outcome
from panoptic_depthlab_ros.infer import cityscapes_panoptic, depth_to_png_mm, write_image
from panoptic_depthlab_ros.inference_options import add_inference_args, inference_options, int_at_least
from panoptic_depthlab_ros.interrupt import stop_on_signals
from panoptic_depthlab_ros.output import StagedOutput, written_by_says
from panoptic_depthlab_ros.predictor import Predictor, resolve_device
from panoptic_depthlab_ros.visualize import panoptic_to_rgb

from .cityscapes import SPLITS, DatasetError, SampleFiles, camera_matrix, list_samples, read_camera, read_image


@dataclass
class PredictSummary:
    """What :func:`write_predictions` wrote: the JSON, frame count and skipped frames."""

    json_path: Path
    frames: int = 0
    skipped: list[str] = field(default_factory=list)  # "<path>: <reason>"
    interrupted: bool = False  # a stop request ended the run early (the files hold what was done)


WRITTEN_BY = "panoptic-depthlab-training predict"


def _entries(split: str) -> list[str]:
    return [f"cityscapes_panoptic_{split}", f"depth_{split}", f"cityscapes_panoptic_{split}.json"]


def predictions_say(path: Path) -> str | None:
    """None when entry ``path`` belongs to predictions this command wrote (its JSON says so); else why not."""
    split = path.name.removesuffix(".json").rsplit("_", 1)[-1]
    return written_by_says(path.parent / f"cityscapes_panoptic_{split}.json", WRITTEN_BY)


def predictions_output(out_dir: Path, split: str, *, overwrite: bool, inputs: Sequence[Path]) -> StagedOutput:
    """The rules for a split's predictions in ``out_dir`` (checked before the model loads)."""
    return StagedOutput(
        out_dir, _entries(split), what=WRITTEN_BY, overwrite=overwrite, why_not_ours=predictions_say, inputs=inputs
    )


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
    overwrite: bool = False,
    stop: Callable[[], bool] = lambda: False,
) -> PredictSummary:
    """Predict every frame of ``samples`` and write the files listed in the module docstring.

    ``stop()`` is asked before each frame (True: end as at the end of the split). Raises
    :class:`NothingDoneError`, keeping earlier predictions, when no frame could be used.
    """
    out_dir = Path(out_dir)
    staged = predictions_output(out_dir, split, overwrite=overwrite, inputs=[])
    summary = PredictSummary(json_path=out_dir / f"cityscapes_panoptic_{split}.json")
    annotations = []
    with staged as staging, torch.no_grad():
        pan_dir, depth_dir, json_name = (staging / name for name in _entries(split))
        pan_dir.mkdir()
        depth_dir.mkdir()
        for files in tqdm(samples, desc="predict", unit="img", disable=not progress, dynamic_ncols=True):
            if stop():
                summary.interrupted = True
                break
            try:
                bgr = read_image(files.image, max_pixels=predictor.max_pixels)
                camera = read_camera(files.camera) if files.camera.is_file() else None
                result = predictor.predict(bgr, camera_k=None if camera is None else camera_matrix(camera))
            except (DatasetError, InputError) as exc:
                summary.skipped.append(str(exc) if str(files.image) in str(exc) else f"{files.image}: {exc}")
                continue
            ids, segments_info = cityscapes_panoptic(result, predictor.classes)
            name = f"{files.stem}_panoptic.png"
            write_image(pan_dir / name, panoptic_to_rgb(ids)[:, :, ::-1])
            if result.depth is not None:  # None only for a predictor built without untrained_depth
                write_image(depth_dir / f"{files.stem}_depth.png", depth_to_png_mm(result.depth))
            annotations.append({"image_id": files.stem, "file_name": name, "segments_info": segments_info})
            summary.frames += 1
        if not summary.frames and not summary.interrupted:
            raise NothingDoneError(f"no frame of the {split} split could be predicted", summary.skipped)
        doc = {"annotations": annotations, "categories": panoptic_categories(), "written_by": WRITTEN_BY}
        json_name.write_text(json.dumps(doc) + "\n")
    return summary


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    """Arguments of ``predict`` (reused by the ``panoptic-depthlab-training`` CLI)."""
    parser = argparse.ArgumentParser(description="Predict a Cityscapes split into files", add_help=add_help)
    parser.add_argument("--checkpoint", required=True, type=Path, help="our .safetensors checkpoint")
    parser.add_argument("--data", required=True, type=Path, help="Cityscapes root (or a synthetic tree)")
    parser.add_argument("--split", default="test", choices=SPLITS)
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.add_argument("--limit", type=int_at_least(0), default=0, help="only the first N frames (0: all)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--overwrite", action="store_true", help="replace this split's earlier predictions in OUT")
    add_inference_args(parser)
    return parser


def main(args: argparse.Namespace) -> int:
    """Run ``predict``; 0, 1 when frames were skipped, 128 + N when signal N ended it."""
    samples = list_samples(args.data, args.split)
    if args.limit:
        samples = samples[: args.limit]
    if not samples:
        raise DatasetError(f"no images in {args.data / 'leftImg8bit' / args.split}")
    predictions_output(args.out, args.split, overwrite=args.overwrite, inputs=[args.data, args.checkpoint])
    device = resolve_device(args.device)
    predictor = Predictor.from_checkpoint(
        args.checkpoint, device=device, untrained_depth=True, **inference_options(args)
    )
    with stop_on_signals() as stop:
        summary = write_predictions(
            predictor,
            samples,
            args.out,
            split=args.split,
            progress=not args.no_progress,
            overwrite=args.overwrite,
            stop=stop,
        )
    print(f"wrote {summary.frames} frames: {summary.json_path} with {summary.json_path.with_suffix('')}/")
    return outcome(
        "panoptic-depthlab-training predict",
        skipped=summary.skipped,
        partial=False,
        interrupted_by=stop.signum if summary.interrupted else None,
        ended=f"ended after {summary.frames} frames; they are written",
    )
