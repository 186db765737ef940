"""``panoptic-depthlab-training train``: the trainer's command line."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from .config import load_config
from .loop import train


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    """Arguments of ``train`` (reused by the ``panoptic-depthlab-training`` CLI)."""
    parser = argparse.ArgumentParser(description="Train Panoptic-DepthLab", add_help=add_help)
    parser.add_argument(
        "--config", required=True, help="YAML file, or a bundled name: writeup_depth_only, joint, quick_cpu"
    )
    parser.add_argument("--data", required=True, type=Path, help="Cityscapes root (or a synthetic tree)")
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--iters", type=int, help="override solver.max_iter")
    parser.add_argument(
        "--resume", action="store_true", help="continue from OUT/last_state.pt (starts from init if there is none yet)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides with dotted keys, e.g. solver.lr=0.0005 data.workers=2",
    )
    return parser


def main(args: argparse.Namespace) -> int:
    """Run ``train`` from parsed arguments; returns the exit code."""
    overrides = list(args.overrides)
    if args.iters is not None:
        overrides.append(f"solver.max_iter={args.iters}")
    config = load_config(args.config, overrides)
    result = train(config, data_root=args.data, out_dir=args.out, resume=args.resume, progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"trained to iteration {result.iteration}: {result.final_model}")
    return 0
