"""What an enlarged input and test-time averaging cost per frame, in one run.

    .venv/bin/python bench/bench_tta.py [--checkpoint model.safetensors] [--bag data/demo_bag]
        [--frames 10] [--repeat 3] [--num-threads 2]

Modes: one pass at the checkpoint's input scale (what the node runs), one pass at
``input_scale`` 1, 1.25 and 1.5 (the node's ``input_scale`` parameter), ``flip_average``,
``scales`` 1, 1.25, 1.5, 1.75 (multi-scale, relative to the input scale), and five scales to
2 with flip. Each mode runs
``Predictor.predict`` on the same frames of the bag (decoded once); the modes alternate
``--repeat`` times so load changes on a shared machine hit all alike. Prints the median
seconds per frame and the ratio to one pass. The accuracy of each mode is in the README
("The demo model"); this is only its price.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODES: dict[str, dict] = {
    "one pass": {},  # at the checkpoint's input_scale (the demo model: 1.5)
    "input_scale 1": {"input_scale": 1.0},
    "input_scale 1.25": {"input_scale": 1.25},
    "input_scale 1.5": {"input_scale": 1.5},
    "flip": {"flip_average": True},
    "scales 1-1.75": {"scales": (1.0, 1.25, 1.5, 1.75)},
    "scales 1-2 + flip": {"scales": (1.0, 1.25, 1.5, 1.75, 2.0), "flip_average": True},
}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, help="model (default: the bundled demo model)")
    p.add_argument("--bag", type=Path, default=REPO / "data" / "demo_bag", help="frames from this bag")
    p.add_argument("--frames", type=int, default=10)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--num-threads", type=int, default=2, help="torch threads (0 = torch default)")
    return p


def main(args: argparse.Namespace) -> int:
    import torch
    from rosbags.rosbag2 import Reader

    from panoptic_depthlab_ros import msg_conversions
    from panoptic_depthlab_ros.bag_reading import typestore_with_our_messages
    from panoptic_depthlab_ros.checkpoint import bundled_checkpoint
    from panoptic_depthlab_ros.predictor import Predictor

    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    ts = typestore_with_our_messages()
    frames: list[np.ndarray] = []
    with Reader(args.bag) as reader:
        for conn, _, raw in reader.messages():
            if conn.msgtype == "sensor_msgs/msg/Image" and len(frames) < args.frames:
                frames.append(msg_conversions.image_to_bgr(ts.deserialize_cdr(raw, conn.msgtype)).copy())
    path = args.checkpoint or bundled_checkpoint()
    predictors = {name: Predictor.from_checkpoint(path, device="cpu", **kw) for name, kw in MODES.items()}
    for p in predictors.values():
        p.predict(frames[0])  # warm-up
    per_frame: dict[str, list[float]] = {name: [] for name in MODES}
    for _ in range(args.repeat):
        for name, p in predictors.items():
            t = time.perf_counter()
            for frame in frames:
                p.predict(frame)
            per_frame[name].append((time.perf_counter() - t) / len(frames))
    h, w = frames[0].shape[:2]
    print(f"{len(frames)} frames of {h}x{w}, {args.repeat} alternating runs, torch threads {torch.get_num_threads()},")
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    base = statistics.median(per_frame["one pass"])
    for name, times in per_frame.items():
        med = statistics.median(times)
        print(f"  {name:18s} {med * 1000:7.0f} ms per frame  {med / base:5.1f}x one pass")
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
