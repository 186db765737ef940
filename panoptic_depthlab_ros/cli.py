"""Command line ``panoptic-depthlab``."""
from __future__ import annotations

import argparse


def get_args_parser() -> argparse.ArgumentParser:
    """Build the argument parser (subcommands are added as they land)."""
    parser = argparse.ArgumentParser(prog="panoptic-depthlab", description=__doc__)
    parser.add_subparsers(dest="command", required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    get_args_parser().parse_args(argv)
    return 0
