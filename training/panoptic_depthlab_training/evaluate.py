"""Evaluate a checkpoint on a Cityscapes split: PQ/SQ/RQ, mIoU, depth errors, DPQ, segment depth.

    panoptic-depthlab-training evaluate --checkpoint CKPT --data ROOT --split val [--json OUT]

Each frame goes through ``Predictor.predict`` (the product's own path: preprocessing,
network, panoptic fusion) and into :class:`~.metrics.PanopticDepthEvaluator`, whose PQ
matches cityscapesscripts' panoptic evaluation. Ground-truth depth beyond the model's
``max_depth`` (what the depth head can output) is treated as invalid unless
``--max-depth`` says otherwise (``0``: keep all). Under ``torchrun`` the frames are
sharded over the processes and the statistics merged.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from panoptic_depthlab_ros.checkpoint import read_checkpoint_header
from panoptic_depthlab_ros.errors import PanopticDepthLabError
from panoptic_depthlab_ros.inference_options import add_inference_args, inference_options, int_at_least, number_above
from panoptic_depthlab_ros.output import StagedOutput, written_by_says
from panoptic_depthlab_ros.predictor import Predictor
from panoptic_depthlab_ros.result import PanopticDepthResult

from .cityscapes import (
    CityscapesSample,
    DatasetError,
    SampleFiles,
    camera_matrix,
    list_samples,
    load_sample,
    require_valid,
)
from .distributed import decided_on_rank0, distributed_job, gather_objects
from .metrics import (
    DEPTH_METRICS,
    DISTANCE_BANDS_M,
    DPQ_THRESHOLDS,
    PanopticDepthEvaluator,
    distance_band_edges,
    format_table,
)

SCALAR_METRICS: tuple[str, ...] = (
    "PQ",
    "SQ",
    "RQ",
    "PQ_th",
    "SQ_th",
    "RQ_th",
    "PQ_st",
    "SQ_st",
    "RQ_st",
    "mIoU",
    *DEPTH_METRICS,
    "DPQ",
    *(f"DPQ_{t:g}" for t in DPQ_THRESHOLDS),
    "DPQ_th",
    "DPQ_st",
    "segment_depth_mae",
    "segment_depth_absrel",
    "segment_depth_mae_th",
    "segment_depth_absrel_th",
    "segment_depth_mae_st",
    "segment_depth_absrel_st",
)


@dataclass
class Prediction:
    """What is scored for one frame: [H, W] panoptic ids (-1 void), train ids, metres."""

    panoptic: np.ndarray
    semantic: np.ndarray
    depth: np.ndarray


PredictFn = Callable[[CityscapesSample], Prediction]


def depth_or_nan(result: PanopticDepthResult) -> np.ndarray:
    """The result's depth; all NaN (depth metrics NaN) when the predictor gave none (untrained branch)."""
    return result.depth if result.depth is not None else np.full(result.panoptic.shape, np.nan, np.float32)


def predictor_fn(predictor: Predictor) -> PredictFn:
    """Score ``Predictor.predict`` on the frame's image (RGB on disk -> BGR for the predictor).

    The frame's camera goes along, as a calibrated vehicle camera would: depth is
    then in that camera's metres (see ``Predictor.depth_scale``).
    """

    def predict(sample: CityscapesSample) -> Prediction:
        camera_k = camera_matrix(sample.camera)
        result = predictor.predict(np.ascontiguousarray(sample.image[..., ::-1]), camera_k=camera_k)
        return Prediction(panoptic=result.panoptic, semantic=result.semantic, depth=depth_or_nan(result))

    return predict


def evaluate(
    predict: PredictFn,
    samples: Sequence[SampleFiles],
    *,
    evaluator: PanopticDepthEvaluator,
    max_depth: float | None,
    progress: bool = True,
) -> PanopticDepthEvaluator:
    """Predict and score every frame of ``samples`` into ``evaluator`` (returned).

    ``max_depth``: ground truth farther than this is invalid (``None``: keep all).
    """
    with torch.no_grad():
        for files in tqdm(samples, desc="evaluate", unit="img", disable=not progress, dynamic_ncols=True):
            sample = load_sample(files, max_depth=max_depth)
            pred = predict(sample)
            evaluator.add(
                pred.panoptic,
                pred.semantic,
                pred.depth,
                sample.panoptic,
                sample.semantic,
                sample.depth,
                sample.depth_valid,
                sample.segments,
            )
    return evaluator


def merge_evaluators(evaluators: Sequence[PanopticDepthEvaluator]) -> PanopticDepthEvaluator:
    """One evaluator holding the sums of several (e.g. one per process)."""
    out = PanopticDepthEvaluator(metadata=evaluators[0].metadata, distance_bands=evaluators[0].distance_bands)
    for ev in evaluators:
        out.merge(ev)
    return out


def evaluate_split(
    predictor: Predictor,
    *,
    data_root: str | Path,
    split: str,
    max_depth: float | None,
    limit: int | None = None,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
    distance_bands: Sequence[float] | None = DISTANCE_BANDS_M,
) -> dict[str, Any]:
    """Summary of ``predictor`` on ``split``; frames sharded over ``world_size`` ranks.

    ``distance_bands``: edges [m] for the things-by-distance rows (``None``: none).

    Every rank must call it; every rank returns the merged summary (see
    ``PanopticDepthEvaluator.summary``) plus ``num_images``.
    """
    samples = list_samples(data_root, split)
    if limit:
        samples = samples[:limit]
    evaluator = evaluate(
        predictor_fn(predictor),
        samples[rank::world_size],
        evaluator=PanopticDepthEvaluator(metadata=predictor.classes, distance_bands=distance_bands),
        max_depth=max_depth,
        progress=progress and rank == 0,
    )
    if world_size > 1:
        evaluator = merge_evaluators(gather_objects(evaluator, world_size))
    summary = evaluator.summary()
    summary["num_images"] = len(samples)
    return summary


def _json_safe(value: Any) -> Any:
    """NaN/inf -> None (JSON has no NaN), numpy scalars -> Python, recursively."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def flat_metrics(summary: Mapping[str, Any]) -> dict[str, float | None]:
    """Return the scalar metrics of a summary (``None`` where undefined)."""
    return {k: _json_safe(summary[k]) for k in SCALAR_METRICS if k in summary}


def band_metrics(summary: Mapping[str, Any]) -> dict[str, float | None]:
    """Things PQ and RQ of each distance band as flat scalars (``PQ_th_0-20m``, ``RQ_th_80m+``)."""
    out: dict[str, float | None] = {}
    for row in summary.get("by_distance", ()):
        low, high = row["min_m"], row["max_m"]
        span = f"{low:g}-{high:g}m" if math.isfinite(high) else f"{low:g}m+"
        out[f"PQ_th_{span}"] = _json_safe(row["PQ_th"])
        out[f"RQ_th_{span}"] = _json_safe(row["RQ_th"])
    return out


def summary_json(summary: Mapping[str, Any], **info: Any) -> dict[str, Any]:
    """JSON document: metric keys at the top level, ``per_class``, and an ``info`` block."""
    doc = dict(flat_metrics(summary))
    doc["num_images"] = summary.get("num_images")
    doc["per_class"] = _json_safe(summary.get("per_class", {}))
    if "by_distance" in summary:
        doc["by_distance"] = _json_safe(summary["by_distance"])
    doc["info"] = _json_safe(info)
    return doc


WRITTEN_BY = "panoptic-depthlab-training evaluate"


def report_output(path: Path | None, *, overwrite: bool, inputs: Sequence[Path]) -> StagedOutput | None:
    """The ``--json`` report, checked before the run rather than after hours of it.

    An existing report is replaced only with ``--overwrite`` and only when this command
    wrote it (its ``written_by``); the new one is moved into place whole, so a failed or
    interrupted run leaves the previous report as it was.
    """
    if path is None:
        return None
    return StagedOutput.at(
        path,
        what=WRITTEN_BY,
        overwrite=overwrite,
        why_not_ours=lambda existing: written_by_says(existing, WRITTEN_BY),
        inputs=inputs,
    )


def write_report(output: StagedOutput, path: Path, doc: Mapping[str, Any]) -> None:
    """Write ``doc`` as the ``--json`` report checked by :func:`report_output`."""
    with output as staging:
        (staging / path.name).write_text(json.dumps({"written_by": WRITTEN_BY, **doc}, indent=2) + "\n")
    print(f"wrote {path}")


def _training_iteration(path: Path) -> int | None:
    if path.suffix.lower() == ".onnx":
        return None  # an export records no training
    info = json.loads(read_checkpoint_header(path).get("info", "{}"))
    return info.get("training", {}).get("iteration")


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    """Arguments of ``evaluate`` (reused by the ``panoptic-depthlab-training`` CLI)."""
    parser = argparse.ArgumentParser(description="Evaluate a Panoptic-DepthLab checkpoint", add_help=add_help)
    parser.add_argument(
        "--checkpoint",
        type=Path,
        help="our .safetensors checkpoint or an exported .onnx (e.g. export --int8; see --backend);"
        " required but with --ground-truth",
    )
    parser.add_argument("--data", required=True, type=Path, help="Cityscapes root (or a synthetic tree)")
    parser.add_argument("--split", default="val", choices=("train", "val"))
    parser.add_argument(
        "--video",
        action="store_true",
        help="tracked video metrics (VPQ, DVPQ, ID switches, velocity, time to contact) on the sequences of"
        " DATA/video_sequence/SPLIT (synth --sequences); --limit counts sequences",
    )
    parser.add_argument(
        "--ground-truth",
        action="store_true",
        help="with --video: track the ground-truth segments instead of a model's (what the tracker alone does)",
    )
    parser.add_argument(
        "--report-tentative",
        action="store_true",
        help="with --video: give tracks their ids from their first frame, before they are confirmed (as VPQ"
        " benchmarks expect of every thing; the product shows an id once its track is confirmed)",
    )
    parser.add_argument(
        "--ego-motion",
        action="store_true",
        help="with --video: give the tracker each frame's camera motion (the frame JSON's camera, as a"
        " vehicle's odometry would), so that things at rest get the world's velocity",
    )
    parser.add_argument("--json", type=Path, help="write the metrics here")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing --json report (only one evaluate wrote)"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.add_argument(
        "--max-depth",
        type=number_above(0, or_equal=True),
        default=None,
        help="ground truth beyond this is invalid (default: the model's max_depth; 0: keep all)",
    )
    parser.add_argument("--limit", type=int_at_least(0), default=0, help="only the first N frames (0: all)")
    parser.add_argument("--no-verify", action="store_true", help="skip checking the split's files first")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_inference_args(parser)
    parser.add_argument(
        "--distance-bands",
        type=_distance_bands,
        default=DISTANCE_BANDS_M,
        metavar="M,M,...",
        help="band edges in metres for things PQ and depth errors by distance, the last band open"
        f" (default: {','.join(f'{e:g}' for e in DISTANCE_BANDS_M)}; 'none': no bands)",
    )
    return parser


def _distance_bands(text: str) -> tuple[float, ...]:
    """``--distance-bands``: increasing metres, comma-separated, or ``none``."""
    if text.strip().lower() == "none":
        return ()
    try:
        return distance_band_edges(float(part) for part in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected increasing metres like 0,20,40,80 or 'none' ({exc})") from None


def _dataset_problem(root: Path, split: str) -> str | None:
    try:
        require_valid(root, [split], require_depth=True)
    except DatasetError as exc:
        return str(exc)
    return None


def main(args: argparse.Namespace) -> int:
    """Run ``evaluate`` from parsed arguments; prints the table, returns the exit code."""
    video_flags = (
        ("--ground-truth", args.ground_truth),
        ("--report-tentative", args.report_tentative),
        ("--ego-motion", args.ego_motion),
    )
    for flag, given in video_flags:
        if given and not args.video:
            raise PanopticDepthLabError(f"{flag} goes with --video")
    if args.overwrite and args.json is None:
        raise PanopticDepthLabError("--overwrite goes with --json")
    if args.video:
        from . import video_evaluate  # imports this module: bound at call time

        return video_evaluate.main(args)
    if args.checkpoint is None:
        raise PanopticDepthLabError("--checkpoint is required")
    report = report_output(args.json, overwrite=args.overwrite, inputs=[args.data, args.checkpoint])
    with distributed_job(args.device) as info:
        if not args.no_verify:
            problem = decided_on_rank0(lambda: _dataset_problem(args.data, args.split), info)
            if problem is not None:
                raise DatasetError(problem)
        predictor = Predictor.from_checkpoint(
            args.checkpoint, device=info.device, untrained_depth=True, **inference_options(args)
        )
        if info.is_main and not predictor.model_config.depth_trained:
            print(f"note: {args.checkpoint}'s depth branch was never trained: its depth metrics measure noise")
        max_depth = predictor.model_config.max_depth if args.max_depth is None else args.max_depth
        summary = evaluate_split(
            predictor,
            data_root=args.data,
            split=args.split,
            max_depth=max_depth or None,
            limit=args.limit or None,
            rank=info.rank,
            world_size=info.world_size,
            progress=not args.no_progress,
            distance_bands=args.distance_bands,
        )
        if info.is_main:
            print(format_table(summary))
            if report is not None:
                doc = summary_json(
                    summary,
                    checkpoint=str(args.checkpoint),
                    backend=predictor.backend,
                    data=str(args.data),
                    split=args.split,
                    gt_max_depth=max_depth or None,
                    training_iteration=_training_iteration(args.checkpoint),
                    flip_average=args.flip_average,
                    scales=list(args.scales),
                    input_scale=predictor.model_config.input_scale,
                )
                write_report(report, args.json, doc)
    return 0
