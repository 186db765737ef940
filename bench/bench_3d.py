"""The node's 3D outputs against the end-to-end time, in one run.

    .venv/bin/python bench/bench_3d.py [--repeat 5] [--network-repeat 1] [--num-threads 0]

At 1024x2048 (Cityscapes' full size) on a synthetic street scene with ~50 segments
(10 stuff, 40 things on a ground plane, metric depth everywhere valid as the depth head
gives it), times what the node does per frame for ``~/points`` (back-projection, colours,
PointCloud2 message) at stride 1 and at the default stride 4, and for ``~/markers``
(robust 3D boxes, labels, MarkerArray message), each the median of ``--repeat`` runs.
The reference is ``Predictor.predict`` of the full-size R-52 model (``ModelConfig()``,
random weights: the same work as trained ones) on one 1024x2048 image in this process;
it is a lower bound of the node's end-to-end time (image conversion and the other
outputs come on top), so the printed ratios are upper bounds.  Goal: <= 5 %.
``--num-threads 1`` (the default, as in bench_node.py) keeps the network time stable on a
shared 2-core machine (two OpenMP threads competing with other processes vary ~10x);
the 3D steps are single-threaded numpy either way.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
H, W = 1024, 2048
# Cityscapes-like intrinsics (fx = fy = 2262 px, principal point near the centre).
K = np.array([[2262.0, 0.0, 1096.0], [0.0, 2262.0, 513.0], [0.0, 0.0, 1.0]])
CAMERA_HEIGHT_M = 1.2


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=5, help="runs of each 3D step (median)")
    p.add_argument("--network-repeat", type=int, default=1, help="predictor runs (median)")
    p.add_argument("--num-threads", type=int, default=1, help="torch threads (0 = torch default)")
    p.add_argument("--seed", type=int, default=0)
    return p


def street_scene(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """[H, W] int32 panoptic (Cityscapes trainIds * 1000 + instance) and float32 depth.

    Sky, buildings and vegetation above the horizon, road and sidewalks on a ground
    plane below it (depth from the camera height), and ~40 visible things (cars, people,
    riders, bicycles, trucks) standing on the ground, each at the depth of its foot row.
    """
    rng = np.random.default_rng(seed)
    fx, cy = K[0, 0], K[1, 2]
    v = np.arange(H, dtype=np.float64)[:, None] * np.ones((1, W))
    u = np.ones((H, 1)) * np.arange(W, dtype=np.float64)[None, :]
    horizon = int(cy)
    ground = v > horizon + 2
    depth = np.full((H, W), 80.0)
    depth[ground] = np.minimum(80.0, fx * CAMERA_HEIGHT_M / (v[ground] - cy))
    panoptic = np.full((H, W), 10 * 1000, np.int32)  # sky
    panoptic[ground] = 0  # road
    left, right = u < W * 0.2 + (v - cy) * 0.6, u > W * 0.8 - (v - cy) * 0.6
    panoptic[ground & (left | right)] = 1000  # sidewalk
    facade = (v > 150 + 80 * np.sin(u / 300.0)) & (v <= horizon + 2)
    panoptic[facade & (u < W * 0.45)] = 2000  # building, left
    panoptic[facade & (u >= W * 0.55)] = 2000  # building, right
    depth[facade & ((u < W * 0.45) | (u >= W * 0.55))] = (
        25.0 + np.abs(u - W / 2)[facade & ((u < W * 0.45) | (u >= W * 0.55))] / W * 20
    )
    panoptic[(v > horizon - 120) & (v <= horizon + 2) & (np.abs(u - W / 2) < W * 0.05)] = 8000
    for x0, cls in ((300, 5), (900, 5), (1500, 7), (1750, 6), (120, 4)):  # poles, signs, fence
        panoptic[horizon - 250 : horizon + 60, x0 : x0 + 12] = cls * 1000
        depth[horizon - 250 : horizon + 60, x0 : x0 + 12] = 12.0 + x0 / 200
    terrain = (v > horizon + 2) & (v < horizon + 40) & (np.abs(u - W / 2) > W * 0.35)
    panoptic[terrain] = 9000
    panoptic[horizon - 200 : horizon - 80, 1000:1040] = 3000  # wall
    panoptic[horizon + 10 : horizon + 30, 200:700] = 4000  # fence
    # Things, far to near so nearer ones occlude: (trainId, width m, height m).
    kinds = [
        (13, 1.8, 1.5),
        (11, 0.6, 1.75),
        (12, 0.7, 1.8),
        (18, 0.6, 1.1),
        (14, 2.5, 3.2),
        (13, 1.8, 1.5),
        (11, 0.6, 1.75),
        (17, 0.8, 1.2),
    ]
    distances = np.sort(rng.uniform(12.0, 75.0, 52))[::-1]
    counters: dict[int, int] = {}
    for i, d in enumerate(distances):
        cls, width_m, height_m = kinds[i % len(kinds)]
        counters[cls] = counters.get(cls, 0) + 1
        foot = int(min(H - 1, cy + fx * CAMERA_HEIGHT_M / d))
        hh, ww = int(fx * height_m / d), int(fx * width_m / d)
        x0 = int((i * 0.618034 % 1.0) * (W - ww))  # spread over the width (golden ratio)
        y0 = max(0, foot - hh)
        box = (slice(y0, foot), slice(x0, x0 + ww))
        panoptic[box] = cls * 1000 + counters[cls]
        depth[box] = d + rng.normal(0, 0.05 * d / 10, (foot - y0, ww))
    depth *= 1 + rng.normal(0, 0.01, depth.shape)  # the network's texture
    return panoptic, np.clip(depth, 0.5, 80.0).astype(np.float32)


def median_seconds(fn, repeat: int) -> float:
    fn()  # warm-up (allocator, imports)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    args = get_args_parser().parse_args()
    import torch
    from sensor_msgs.msg import PointCloud2, PointField
    from std_msgs.msg import Header

    from panoptic_depthlab_ros.fusion import PostprocessConfig
    from panoptic_depthlab_ros.geometry3d import point_cloud, segment_markers
    from panoptic_depthlab_ros.metadata import cityscapes_metadata
    from panoptic_depthlab_ros.model import ModelConfig, build_model
    from panoptic_depthlab_ros.msg_conversions import markers_to_msg, pointcloud_to_msg
    from panoptic_depthlab_ros.predictor import Predictor
    from panoptic_depthlab_ros.result import PanopticDepthResult
    from panoptic_depthlab_ros.ros.node import message_class
    from panoptic_depthlab_ros.segment_stats import segment_depth_statistics

    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    classes = cityscapes_metadata()
    panoptic, depth = street_scene(args.seed)
    segments = segment_depth_statistics(
        torch.from_numpy(panoptic),
        torch.from_numpy(depth),
        classes=classes,
        config=PostprocessConfig(),
        camera_k=K,
    )
    result = PanopticDepthResult(
        panoptic=panoptic,
        semantic=(panoptic // 1000).astype(np.uint8),
        depth=depth,
        segments=segments,
    )
    things = sum(s.is_thing for s in segments)
    header = Header(frame_id="camera_optical_frame")

    def points(stride: int):
        def run():
            cloud = point_cloud(depth, panoptic, K, class_colors=classes.colors, label_divisor=1000, stride=stride)
            return pointcloud_to_msg(cloud, header=header, cloud_cls=PointCloud2, field_cls=PointField)

        return run

    def markers():
        specs = segment_markers(result, K, near=5.0, far=60.0)
        return markers_to_msg(specs, header=header, classes=message_class)

    rows = {
        "points, stride 1": median_seconds(points(1), args.repeat),
        "points, stride 4 (default)": median_seconds(points(4), args.repeat),
        "markers": median_seconds(markers, args.repeat),
    }
    n1 = points(1)().width
    n4 = points(4)().width
    n_markers = len(markers().markers) - 1

    # End to end: the full-size R-52 network, random weights, one 1024x2048 BGR image.
    torch.manual_seed(args.seed)
    config = ModelConfig(aspp_strict_pool_size=False)
    model = build_model(config).eval()
    predictor = Predictor(model, model_config=config, classes=classes, device="cpu")
    image = np.random.default_rng(args.seed).integers(0, 256, (H, W, 3), dtype=np.uint8)
    e2e = []
    for _ in range(args.network_repeat):
        t = time.perf_counter()
        predictor.predict(image, camera_k=K)
        e2e.append(time.perf_counter() - t)
    e2e_s = statistics.median(e2e)

    print(
        f"scene {H}x{W}: {len(segments)} segments ({things} things), torch threads "
        f"{torch.get_num_threads()}, 3D steps median of {args.repeat}"
    )
    print(f"end to end (Predictor.predict, R-52, CPU, {args.network_repeat} run(s)): {e2e_s:8.2f} s")
    print(f"{'step':32s} {'ms':>9s} {'% of e2e':>9s}  output")
    outputs = {
        "points, stride 1": f"{n1} points",
        "points, stride 4 (default)": f"{n4} points",
        "markers": f"{n_markers} markers",
    }
    for name, sec in rows.items():
        print(f"{name:32s} {sec * 1e3:9.1f} {100 * sec / e2e_s:8.2f}%  {outputs[name]}")
    for stride in (1, 4):
        name = f"points, stride {stride}" + (" (default)" if stride == 4 else "")
        total = rows[name] + rows["markers"]
        verdict = "ok" if total <= 0.05 * e2e_s else "OVER the 5 % goal"
        print(
            f"markers + points at stride {stride}: {total * 1e3:.1f} ms = "
            f"{100 * total / e2e_s:.2f}% of end to end ({verdict})"
        )


if __name__ == "__main__":
    main()
