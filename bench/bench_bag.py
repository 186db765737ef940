"""Bag-to-bag replay against the bare predictor on the same frames, in one run.

    .venv/bin/python bench/bench_bag.py [--checkpoint model.safetensors] [--bag data/demo_bag]
        [--storage mcap|sqlite3] [--repeat 3] [--num-threads 1]

Replay = ``replay_bag`` on the bag (every frame decoded from its message, predicted, every
output the node publishes converted, serialized and written with the input topics, in the
input's storage).
Bare = ``Predictor.predict`` on the same decoded frames, with the same camera.  The two
alternate ``--repeat`` times so load changes on a shared machine hit both alike; the
medians and their ratio are printed: what a replay costs beyond the network and fusion.
Defaults: the bundled demo model on the bundled demo bag (30 frames at 192x384).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, help="model (default: the bundled demo model)")
    p.add_argument("--bag", type=Path, default=REPO / "data" / "demo_bag", help="input bag")
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="storage of the replayed copy")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--num-threads", type=int, default=1, help="torch threads (0 = torch default)")
    return p


def main(args: argparse.Namespace) -> int:
    import torch
    from rosbags.rosbag2 import Reader, StoragePlugin, Writer

    from panoptic_depthlab_ros import msg_conversions
    from panoptic_depthlab_ros.bag import CAMERA_INFO_TYPE, replay_bag
    from panoptic_depthlab_ros.bag_reading import typestore_with_our_messages
    from panoptic_depthlab_ros.checkpoint import bundled_checkpoint
    from panoptic_depthlab_ros.predictor import Predictor

    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    predictor = Predictor.from_checkpoint(args.checkpoint or bundled_checkpoint(), device="cpu")
    ts = typestore_with_our_messages()
    with tempfile.TemporaryDirectory(prefix="bench_bag_") as tmp:
        # The input in the storage asked for (the replay writes the same storage).
        src = Path(tmp) / "in"
        storage = StoragePlugin.MCAP if args.storage == "mcap" else StoragePlugin.SQLITE3
        frames: list[np.ndarray] = []
        camera_k = None
        with Reader(args.bag) as reader, Writer(src, version=9, storage_plugin=storage) as writer:
            conns = {c.id: writer.add_connection(c.topic, c.msgtype, typestore=ts) for c in reader.connections}
            for conn, stamp, raw in reader.messages():
                writer.write(conns[conn.id], stamp, raw)
                msg = ts.deserialize_cdr(raw, conn.msgtype)
                if conn.msgtype == CAMERA_INFO_TYPE and camera_k is None:
                    camera_k = msg_conversions.camera_k(msg)
                elif conn.msgtype == "sensor_msgs/msg/Image":
                    frames.append(msg_conversions.image_to_bgr(msg).copy())
        predictor.predict(frames[0], camera_k=camera_k)  # warm-up
        replay_s, bare_s = [], []
        for i in range(args.repeat):
            t = time.perf_counter()
            summary = replay_bag(src, Path(tmp) / f"out{i}", predictor=predictor, progress=False)
            replay_s.append(time.perf_counter() - t)
            assert summary.frames == len(frames) and summary.damage is None
            t = time.perf_counter()
            for frame in frames:
                predictor.predict(frame, camera_k=camera_k)
            bare_s.append(time.perf_counter() - t)
        out_mb = sum(f.stat().st_size for f in (Path(tmp) / "out0").iterdir()) / 1e6
    n = len(frames)
    replay, bare = statistics.median(replay_s), statistics.median(bare_s)
    h, w = frames[0].shape[:2]
    print(f"bag {args.bag} ({n} frames {h}x{w}), replayed as {args.storage}; load {os.getloadavg()[0]:.1f}")
    print(f"replay   {replay / n * 1e3:7.1f} ms/frame  ({n / replay:.1f} FPS; output bag {out_mb:.1f} MB)")
    print(f"bare     {bare / n * 1e3:7.1f} ms/frame  ({n / bare:.1f} FPS)")
    outputs = len(summary.output_topics)
    print(f"replay / bare = {replay / bare:.2f}x  (decode, {outputs} outputs converted and written, the input copied)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(get_args_parser().parse_args()))
