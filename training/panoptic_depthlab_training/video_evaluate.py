"""Evaluate a checkpoint and the tracker on video sequences: VPQ, DVPQ, ID switches, velocity, TTC.

    panoptic-depthlab-training evaluate --video --checkpoint CKPT --data ROOT --split val [--json OUT]

``ROOT/video_sequence/{split}`` holds sequences in the Cityscapes-DVPS layout with our
per-frame JSON (:mod:`.video_dataset`; ``synth --sequences`` writes them). Each sequence
goes through ``Predictor.predict`` frame by frame (with the frame's intrinsics) and a fresh
:class:`~panoptic_depthlab_ros.tracker.Tracker` (with the frame's stamp), into
:class:`~.video_metrics.VideoPanopticEvaluator` (definitions there); the untracked
per-frame results also go into :class:`~.metrics.PanopticDepthEvaluator`, so that the
per-frame PQ and DPQ stand beside the video metrics. One process (no ``torchrun`` sharding).

With ``--ego-motion`` the tracker is also given each frame's camera motion from its JSON, as
a vehicle's odometry would give it (``Tracker.update(..., ego=...)``); every frame must have one.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from panoptic_depthlab_ros.ego_motion import EgoMotion
from panoptic_depthlab_ros.errors import PanopticDepthLabError
from panoptic_depthlab_ros.fusion import PostprocessConfig
from panoptic_depthlab_ros.inference_options import inference_options
from panoptic_depthlab_ros.metadata import ClassMetadata, cityscapes_metadata
from panoptic_depthlab_ros.predictor import Predictor, resolve_device
from panoptic_depthlab_ros.result import PanopticDepthResult
from panoptic_depthlab_ros.segment_stats import segment_depth_statistics
from panoptic_depthlab_ros.tracker import TrackedFrame, Tracker, TrackerConfig, track_panoptic

from .cityscapes import DatasetError
from .evaluate import _json_safe, _training_iteration, depth_or_nan, flat_metrics, report_output, write_report
from .metrics import DISTANCE_BANDS_M, PanopticDepthEvaluator, format_table
from .video_dataset import VideoSample, VideoSequenceFiles, list_sequences, read_frame_json, read_sequence
from .video_metrics import VideoFrame, VideoPanopticEvaluator, format_video_table


@dataclass
class VideoEvaluation:
    """What :func:`evaluate_sequences` accumulated: the video metrics and the per-frame ones."""

    video: VideoPanopticEvaluator
    frames: PanopticDepthEvaluator


# A thing moving slower than this in the world counts as still (the at-rest report's truth).
STILL_MPS = 0.5


def video_frame(sample: VideoSample, result: PanopticDepthResult, tracked: TrackedFrame) -> VideoFrame:
    """One frame for the video evaluator: track ids as instance ids, each track's velocity and TTC."""
    velocity: dict[int, tuple[float, float, float]] = {}
    ttc: dict[int, float] = {}
    at_rest: set[int] = set()
    for segment, track in zip(result.segments, tracked.tracks, strict=True):
        if track.track_id:
            key = segment.category_id * result.label_divisor + track.track_id
            velocity[key] = track.velocity
            ttc[key] = track.time_to_contact
            if track.at_rest:
                at_rest.add(key)
    return VideoFrame(
        pred_panoptic=track_panoptic(result, tracked.tracks),
        pred_depth=depth_or_nan(result),
        gt_panoptic=sample.panoptic,
        gt_depth=sample.depth,
        gt_depth_valid=sample.depth_valid,
        gt_velocity=sample.velocity,
        pred_velocity=velocity,
        pred_ttc=ttc,
        pred_at_rest=frozenset(at_rest),
        gt_still=still_things(sample),
    )


def still_things(sample: VideoSample) -> frozenset[int] | None:
    """The things of ``sample`` still in the world: velocity within 0.5 m/s of the world's at their centre.

    None when the frame has no camera motion (nothing says what is still).
    """
    if sample.camera_motion is None:
        return None
    ids = [g for g in sample.velocity if g in sample.center]
    if not ids:
        return frozenset()
    world = sample.camera_motion.static_velocity(np.array([sample.center[g] for g in ids], np.float64))
    own = np.linalg.norm(np.array([sample.velocity[g] for g in ids], np.float64) - world, axis=1)
    return frozenset(g for g, speed in zip(ids, own.tolist(), strict=True) if speed <= STILL_MPS)


VideoPredictFn = Callable[[VideoSample], PanopticDepthResult]


def video_predictor_fn(predictor: Predictor) -> VideoPredictFn:
    """``Predictor.predict`` on the frame's image (RGB on disk -> BGR) with the frame's intrinsics."""

    def predict(sample: VideoSample) -> PanopticDepthResult:
        return predictor.predict(np.ascontiguousarray(sample.image[..., ::-1]), camera_k=sample.K)

    return predict


def _no_camera_motion(frame_json: os.PathLike[str] | str) -> DatasetError:
    return DatasetError(
        f'{frame_json}: no camera motion ("camera") for --ego-motion;'
        " re-render the sequences with synth --sequences or drop --ego-motion"
    )


def require_camera_motion(sequences: Sequence[VideoSequenceFiles]) -> None:
    """Check that every frame's JSON has the camera's motion (read before any model runs).

    Raises :class:`DatasetError` naming the first frame file without one (or unreadable).
    """
    for sequence in sequences:
        for files in sequence.frames:
            if read_frame_json(files.frame_json)[4] is None:
                raise _no_camera_motion(files.frame_json)


def evaluate_sequences(
    predict: VideoPredictFn,
    sequences: Sequence[VideoSequenceFiles],
    *,
    metadata: ClassMetadata,
    tracker_config: TrackerConfig | None = None,
    max_depth: float | None,
    distance_bands: Sequence[float] = DISTANCE_BANDS_M,
    ego_motion: bool = False,
    progress: bool = True,
) -> VideoEvaluation:
    """Predict, track and score every frame of ``sequences`` (one fresh tracker per sequence).

    ``metadata``: the classes of ``predict``'s results.

    ``max_depth``: ground truth farther than this is invalid (``None``: keep all).

    ``ego_motion``: give the tracker each frame's camera motion (``VideoSample.camera_motion``);
    a frame without one raises :class:`DatasetError` naming its file.
    """
    bands = tuple(distance_bands) or DISTANCE_BANDS_M
    out = VideoEvaluation(
        video=VideoPanopticEvaluator(metadata=metadata, distance_bands=bands),
        frames=PanopticDepthEvaluator(metadata=metadata, distance_bands=bands),
    )
    total = sum(len(s.frames) for s in sequences)
    bar = tqdm(total=total, desc="evaluate --video", unit="img", disable=not progress, dynamic_ncols=True)
    with torch.no_grad():
        for sequence in sequences:
            tracker = Tracker(tracker_config)
            for files, sample in zip(sequence.frames, read_sequence(sequence, max_depth=max_depth), strict=True):
                ego: EgoMotion | None = None
                if ego_motion:
                    if sample.camera_motion is None:
                        raise _no_camera_motion(files.frame_json)
                    ego = sample.camera_motion
                result = predict(sample)
                image = sample.image[..., ::-1]  # BGR
                tracked = tracker.update(result, stamp_ns=sample.stamp_ns, image=image, ego=ego)
                out.video.add(video_frame(sample, result, tracked))
                out.frames.add(
                    result.panoptic,
                    result.semantic,
                    depth_or_nan(result),
                    sample.panoptic,
                    sample.semantic,
                    sample.depth,
                    sample.depth_valid,
                )
                bar.update()
            out.video.end_sequence()
    bar.close()
    return out


def video_summary_json(video: dict[str, Any], frames: dict[str, Any], **info: Any) -> dict[str, Any]:
    """JSON document: the video metrics at the top level, ``per_frame`` (untracked PQ, DPQ, ...) and ``info``."""
    doc = {key: _json_safe(value) for key, value in video.items()}
    doc["per_frame"] = flat_metrics(frames)
    doc["per_frame"]["by_distance"] = _json_safe(frames.get("by_distance", []))
    doc["info"] = _json_safe(info)
    return doc


def ground_truth_fn(metadata: ClassMetadata) -> VideoPredictFn:
    """A perfect predictor: the frame's true segments and depth, with the predictor's segment statistics.

    Tracked, it shows what the tracker alone does (its ID switches and velocity errors
    with no perception error).
    """

    def predict(sample: VideoSample) -> PanopticDepthResult:
        depth = np.where(sample.depth_valid, sample.depth, np.nan).astype(np.float32)
        segments = segment_depth_statistics(
            torch.from_numpy(sample.panoptic),
            torch.from_numpy(depth),
            classes=metadata,
            config=PostprocessConfig(),
            camera_k=sample.K,
        )
        return PanopticDepthResult(
            panoptic=sample.panoptic,
            semantic=sample.semantic,
            depth=depth,
            segments=segments,
            label_divisor=metadata.label_divisor,
        )

    return predict


def main(args: argparse.Namespace) -> int:
    """Run ``evaluate --video`` from parsed ``evaluate`` arguments; prints the tables, returns the exit code."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise PanopticDepthLabError("evaluate --video runs in one process; start it without torchrun")
    if args.checkpoint is None and not args.ground_truth:
        raise PanopticDepthLabError("--checkpoint is required (or --ground-truth)")
    inputs = [args.data] if args.checkpoint is None else [args.data, args.checkpoint]
    report = report_output(args.json, overwrite=args.overwrite, inputs=inputs)
    sequences = list_sequences(args.data, args.split)
    if args.limit:
        sequences = sequences[: args.limit]
    if args.ego_motion:
        require_camera_motion(sequences)
    info: dict[str, Any]
    if args.ground_truth:
        metadata = cityscapes_metadata()
        predict, max_depth = ground_truth_fn(metadata), args.max_depth
        info = {"predictor": "ground truth"}
    else:
        device = resolve_device(args.device)
        predictor = Predictor.from_checkpoint(
            args.checkpoint, device=device, untrained_depth=True, **inference_options(args)
        )
        metadata, predict = predictor.classes, video_predictor_fn(predictor)
        max_depth = predictor.model_config.max_depth if args.max_depth is None else args.max_depth
        info = {
            "checkpoint": str(args.checkpoint),
            "training_iteration": _training_iteration(args.checkpoint),
            "flip_average": args.flip_average,
            "scales": list(args.scales),
            "input_scale": predictor.model_config.input_scale,
        }
    tracker_config = TrackerConfig(report_tentative=args.report_tentative)
    evaluation = evaluate_sequences(
        predict,
        sequences,
        metadata=metadata,
        tracker_config=tracker_config,
        max_depth=max_depth or None,
        distance_bands=args.distance_bands,
        ego_motion=args.ego_motion,
        progress=not args.no_progress,
    )
    video, frames = evaluation.video.summary(), evaluation.frames.summary()
    print(format_video_table(video))
    print("per frame, untracked:")
    print(format_table(frames))
    if report is not None:
        info.update(data=str(args.data), split=args.split, gt_max_depth=max_depth or None)
        info["tracker"] = dataclasses.asdict(tracker_config)
        info["ego_motion"] = args.ego_motion  # the tracker was given each frame's camera motion
        doc = video_summary_json(video, frames, **info)
        write_report(report, args.json, doc)
    return 0
