"""Command-line options shared by ``panoptic-depthlab`` and ``panoptic-depthlab-training``.

How the network sees each frame (input scale, test-time averaging) and the pixel limit
of decoded images, and the argparse number types both command lines use. Each command
adds them with :func:`add_inference_args` and reads them back with
:func:`inference_options`, so a flag means the same in every command.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

from .image_io import DEFAULT_MAX_PIXELS, MAX_PIXELS_HELP


def int_at_least(low: int) -> Callable[[str], int]:
    """An argparse type: a whole number >= ``low`` (a bad one is argparse's one-line usage error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {low}, got {value}")
        return value

    return parse


def number_above(low: float, *, or_equal: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number > ``low`` (>= with ``or_equal``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (math.isfinite(value) and (value >= low if or_equal else value > low)):
            raise argparse.ArgumentTypeError(
                f"expected a finite number {'>=' if or_equal else '>'} {low:g}, got {text}"
            )
        return value

    return parse


def add_max_pixels_arg(p: argparse.ArgumentParser) -> None:
    """``--max-pixels N``: the pixel limit of decoded images (shared with the training package's commands)."""
    p.add_argument("--max-pixels", type=int_at_least(0), default=DEFAULT_MAX_PIXELS, metavar="N", help=MAX_PIXELS_HELP)


def inference_options(args: argparse.Namespace) -> dict[str, Any]:
    """``Predictor`` keyword arguments from :func:`add_inference_args`' options."""
    return {
        "flip_average": args.flip_average,
        "scales": args.scales,
        "input_scale": args.input_scale,
        "max_pixels": args.max_pixels,
        "strict_pool_size": args.strict_pool_size,
        "backend": args.backend,
    }


def scales_argument(text: str) -> tuple[float, ...]:
    """``--scales``: comma-separated input scales, including 1."""
    from .tta import check_scales

    try:
        return check_scales(float(part) for part in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected scales like 1,1.25,1.5,1.75 ({exc})") from None


def add_inference_args(p: argparse.ArgumentParser) -> None:
    """What runs the network and how it sees each frame: backend, input scale and test-time averaging.

    Shared with the training package's commands; :func:`inference_options` reads them back.
    """
    from .backends import BACKENDS, BACKENDS_TEXT

    p.add_argument("--backend", choices=BACKENDS, default="auto", help=f"what runs the network: {BACKENDS_TEXT}")
    p.add_argument(
        "--input-scale",
        type=float,
        metavar="S",
        help="resize each frame by S before the network (default: the checkpoint's; larger finds"
        " smaller things for more time per frame, with less exact depth; see docs/performance.md)",
    )
    p.add_argument(
        "--flip-average",
        action="store_true",
        help="also run each frame mirrored and average: slightly better segments and depth, twice the time",
    )
    p.add_argument(
        "--scales",
        type=scales_argument,
        default=(1.0,),
        metavar="S,S,...",
        help="multi-scale inference: average the segmentation over these input scales (with 1; e.g."
        " 1,1.25,1.5,1.75: better segments for a network pass per scale; depth stays scale 1's)",
    )
    add_max_pixels_arg(p)
    p.add_argument(
        "--strict-pool-size",
        action="store_true",
        help="refuse frames whose size Detectron2's ASPP image pooling refuses, as Detectron2 does (default:"
        " every size works, with exactly Detectron2's outputs wherever it accepts the size)",
    )
