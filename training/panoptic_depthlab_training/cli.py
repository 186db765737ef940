"""Command line ``panoptic-depthlab-training``: synth, demo-bag, verify-cityscapes, train, evaluate, predict.

Exit codes (as ``panoptic-depthlab``'s, see ``panoptic_depthlab_ros.exit_codes``): 0 all done;
1 done with input skipped, or ``verify-cityscapes`` found problems (the report lists them);
2 nothing done: a bad config, checkpoint, dataset, argument or output path (one line says
why); 128 + N ended by signal N.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from panoptic_depthlab_ros.exit_codes import DONE, PARTIAL, run_command
from panoptic_depthlab_ros.inference_options import add_max_pixels_arg, int_at_least, number_above

from . import evaluate as evaluate_cmd
from . import predict as predict_cmd
from .cityscapes import GT_SPLITS, SPLITS, DatasetError, verify_cityscapes
from .demo_bag import CAMERA_INFO_TOPIC, IMAGE_TOPIC, ODOMETRY_TOPIC, write_demo_bag
from .synth import synth_main
from .synth.sequences import sequences_main
from .train import command as train_cmd


def _synth(args: argparse.Namespace) -> int:
    if args.sequences:
        return sequences_main(
            args.out,
            sequences=args.sequences,
            frames=args.frames,
            seed=args.seed,
            split=args.split,
            fps=args.fps,
            height=args.height,
            width=args.width,
            city=args.city,
            workers=args.workers,
            overwrite=args.overwrite,
        )
    return synth_main(
        args.out,
        args.train,
        args.val,
        args.seed,
        args.height,
        args.width,
        city=args.city,
        workers=args.workers,
        overwrite=args.overwrite,
    )


def _demo_bag(args: argparse.Namespace) -> int:
    out = write_demo_bag(
        args.out,
        frames=args.frames,
        fps=args.fps,
        seed=args.seed,
        height=args.height,
        width=args.width,
        speed_mps=args.speed,
        overwrite=args.overwrite,
    )
    print(
        f"wrote {out}: {args.frames} frames at {args.fps:g} Hz on {IMAGE_TOPIC} + {CAMERA_INFO_TOPIC}, "
        f"the odometry on {ODOMETRY_TOPIC}"
    )
    return DONE


def _verify(args: argparse.Namespace) -> int:
    report = verify_cityscapes(
        args.root, args.splits, require_depth=not args.no_depth, workers=args.workers, max_pixels=args.max_pixels
    )
    print(report.format())
    return DONE if report.ok else PARTIAL


def get_args_parser() -> argparse.ArgumentParser:
    """Build the argument parser: one subcommand per job."""
    parser = argparse.ArgumentParser(
        prog="panoptic-depthlab-training", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="render synthetic street scenes in the Cityscapes layout")
    p.add_argument(
        "out", type=Path, help="output root (gets leftImg8bit/, gtFine/, disparity/, camera/; or video_sequence/)"
    )
    p.add_argument("--train", type=int_at_least(0), default=100, help="train frames")
    p.add_argument("--val", type=int_at_least(0), default=20, help="val frames")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--height", type=int_at_least(8), default=256)
    p.add_argument("--width", type=int_at_least(8), default=512)
    p.add_argument("--city", default="synthcity")
    p.add_argument("--workers", type=int_at_least(1), default=1, help="rendering processes")
    p.add_argument(
        "--sequences",
        type=int_at_least(0),
        default=0,
        help="render N drives with moving things as video sequences (Cityscapes-DVPS layout) instead",
    )
    p.add_argument("--frames", type=int_at_least(1), default=30, help="frames per sequence")
    p.add_argument("--fps", type=number_above(0), default=10.0, help="frame rate of the sequences")
    p.add_argument("--split", default="val", choices=("train", "val"), help="split of the sequences")
    p.add_argument("--overwrite", action="store_true", help="replace a dataset synth wrote before at OUT")
    p.set_defaults(func=_synth)

    p = sub.add_parser(
        "demo-bag", help="a ROS 2 bag (MCAP) of a synthetic drive: Image + CameraInfo at 10 Hz, Odometry at 50 Hz"
    )
    p.add_argument("out", type=Path, help="output bag directory")
    p.add_argument("--frames", type=int_at_least(1), default=30)
    p.add_argument("--fps", type=number_above(0), default=10.0)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--height", type=int_at_least(8), default=192)
    p.add_argument("--width", type=int_at_least(8), default=384)
    p.add_argument("--speed", type=number_above(0), default=8.0, help="ego speed, m/s")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_demo_bag)

    p = sub.add_parser("verify-cityscapes", help="check that every file of a Cityscapes tree exists and reads")
    p.add_argument("root", type=Path)
    p.add_argument("--splits", nargs="+", default=list(GT_SPLITS), choices=SPLITS)
    p.add_argument("--no-depth", action="store_true", help="do not require disparity/ and camera/")
    p.add_argument("--workers", type=int_at_least(1), default=None, help="decoding threads")
    add_max_pixels_arg(p)
    p.set_defaults(func=_verify)

    p = sub.add_parser(
        "train",
        parents=[train_cmd.get_args_parser(add_help=False)],
        help="train (depth-only as the write-up, or joint); torchrun for DDP",
    )
    p.set_defaults(func=train_cmd.main)

    p = sub.add_parser(
        "evaluate",
        parents=[evaluate_cmd.get_args_parser(add_help=False)],
        help="PQ/SQ/RQ, mIoU, depth errors, DPQ and segment depth of a checkpoint",
    )
    p.set_defaults(func=evaluate_cmd.main)

    p = sub.add_parser(
        "predict",
        parents=[predict_cmd.get_args_parser(add_help=False)],
        help="panoptic + depth files of a split in the Cityscapes benchmark's format (test needs no ground truth)",
    )
    p.set_defaults(func=predict_cmd.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = get_args_parser().parse_args(argv)
    if not logging.getLogger().handlers:
        level = logging.INFO if int(os.environ.get("RANK", "0")) == 0 else logging.WARNING
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s")
    return run_command(f"panoptic-depthlab-training {args.command}", lambda: args.func(args), expected=(DatasetError,))


if __name__ == "__main__":
    sys.exit(main())
