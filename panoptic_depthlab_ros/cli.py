"""Command line ``panoptic-depthlab``: convert, export, infer, bag."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import PanopticDepthLabError


def _convert(args: argparse.Namespace) -> int:
    from .checkpoint import convert_detectron2

    report = convert_detectron2(args.weights, args.config, args.out)
    print(f"wrote {args.out}: loaded {len(report.loaded)} keys from {args.weights}, "
          f"initialized {len(report.initialized)} depth-branch keys (not in Detectron2 files)")
    return 0


def _export(args: argparse.Namespace) -> int:
    from .export import export_model

    side = export_model(args.checkpoint, args.out, fmt=args.format, height=args.height, width=args.width,
                        dynamic=args.dynamic)
    print(f"wrote {args.out} ({args.format}) and its description {side}")
    return 0


def get_args_parser() -> argparse.ArgumentParser:
    """The argument parser (one subparser per job)."""
    parser = argparse.ArgumentParser(prog="panoptic-depthlab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("convert", help="Detectron2 Panoptic-DeepLab weights -> our checkpoint (+ depth branch)")
    p.add_argument("weights", type=Path, help="Detectron2 .pkl (model zoo) or .pth")
    p.add_argument("--config", type=Path, required=True, help="the Detectron2 YAML config of those weights")
    p.add_argument("out", type=Path, help="output .safetensors")
    p.set_defaults(func=_convert)

    p = sub.add_parser("export", help="export the network to ONNX or TorchScript (+ a JSON description)")
    p.add_argument("checkpoint", type=Path, help="our .safetensors checkpoint")
    p.add_argument("out", type=Path, help="output file (.onnx or .pt)")
    p.add_argument("--format", choices=("onnx", "torchscript"), default="onnx")
    p.add_argument("--height", type=int, help="fixed input height (multiple of 32)")
    p.add_argument("--width", type=int, help="fixed input width (multiple of 32)")
    p.add_argument("--dynamic", action="store_true", help="free height/width (multiples of 32; ONNX only)")
    p.set_defaults(func=_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; domain errors print one clear line and exit 2."""
    args = get_args_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except PanopticDepthLabError as exc:
        print(f"panoptic-depthlab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"panoptic-depthlab {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
