"""Eager fp32 torch vs the optimized torch path vs onnxruntime, in one run.

    .venv/bin/python bench/bench_backends.py [--models r52,demo] [--sizes 512x1024,1024x2048]
                                             [--repeat N] [--demo-repeat N] [--threads N] [--device cpu|cuda]

For each model and image size, every backend runs in its own subprocess (so peak
memory is its own) on the same image: per-stage times (preprocess, network, fusion,
segment depth, message conversion) and end to end (median of ``--repeat`` timed runs
after one warm-up; ``--demo-repeat`` for the 0.2 s demo model, where one run is noise),
peak RSS, and the ratio of end-to-end time to eager fp32.  The panoptic map of every
backend is compared with eager's outside semantic near-ties, and the center near-ties
that can legitimately change instances are counted (``center_near_ties``); the largest
raw-output difference is printed.

Backends: ``eager`` = Predictor(optimize=False) fp32; ``optimized`` = the default
Predictor (BatchNorm folded into the convolutions; channels-last on CUDA; fp16
autocast too on CUDA); ``onnxruntime`` = the network exported to ONNX at that size.
The R-52 model has random weights (nothing is downloadable here); ``demo`` is the
bundled checkpoint.  On a CUDA machine add ``--device cuda`` for fp16 FPS.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the checkout, not an install

from panoptic_depthlab_ros.checkpoint import bundled_checkpoint, load_checkpoint, save_checkpoint  # noqa: E402
from panoptic_depthlab_ros.export import export_model  # noqa: E402
from panoptic_depthlab_ros.fusion import PostprocessConfig  # noqa: E402
from panoptic_depthlab_ros.metadata import cityscapes_metadata  # noqa: E402
from panoptic_depthlab_ros.model import ModelConfig, build_model  # noqa: E402
from panoptic_depthlab_ros.predictor import Predictor  # noqa: E402
from panoptic_depthlab_ros.preprocess import network_size_for  # noqa: E402

BACKENDS = ("eager", "optimized", "onnxruntime")
STAGES = ("preprocess", "network", "fusion", "segment_depth", "messages", "total")


def street_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A street-like BGR picture (sky, buildings, road, boxes) with texture."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.uint8)
    img[: h // 3] = (200, 170, 120)
    img[h // 3 : h // 2] = (90, 90, 100)
    img[h // 2 :] = (70, 70, 75)
    for _ in range(12):
        y, x = int(rng.integers(h // 3, h - h // 8)), int(rng.integers(0, w - w // 10))
        img[y : y + h // 10, x : x + w // 12] = rng.integers(0, 255, 3)
    noise = rng.integers(0, 20, (h, w, 3), dtype=np.uint8)
    return np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def r52_checkpoint(folder: Path) -> Path:
    """The full-size Cityscapes R-52 (+ depth) with random weights, BN statistics spread."""
    torch.manual_seed(0)
    config = ModelConfig(aspp_strict_pool_size=False, size_divisibility=32)
    model = build_model(config).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 2.0)
            m.running_mean.normal_(0, 0.1)
    path = folder / "r52.safetensors"
    save_checkpoint(path, model, model_config=config, classes=cityscapes_metadata(), postprocess=PostprocessConfig())
    return path


def message_stage(result, image_bgr: np.ndarray) -> float:
    """Seconds to turn a result into the node's messages (rclpy classes when available; no camera_info)."""
    from panoptic_depthlab_ros.node_outputs import OUTPUT_NAMES, OutputSettings, output_messages

    try:
        from panoptic_depthlab_ros.ros.node import message_class as classes
    except ImportError:  # pip install without ROS: rosbags' classes behave the same
        from panoptic_depthlab_ros.bag_reading import typestore_with_our_messages

        classes = typestore_with_our_messages().types.__getitem__
    stamp = classes("builtin_interfaces/msg/Time")(sec=0, nanosec=0)
    header = classes("std_msgs/msg/Header")(stamp=stamp, frame_id="camera")
    t0 = time.perf_counter()
    output_messages(
        result,
        image_bgr,
        wanted=OUTPUT_NAMES,
        header=header,
        camera_k=None,
        settings=OutputSettings(),
        classes=classes,
        class_colors=cityscapes_metadata().colors,
    )
    return time.perf_counter() - t0


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss it does not carry over exec)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(args: argparse.Namespace) -> None:
    """Child process: one backend, one model, one size; prints a JSON line."""
    if args.threads:
        torch.set_num_threads(args.threads)
    h, w = map(int, args.size.split("x"))
    image = street_image(h, w)
    if args.backend == "onnxruntime":
        pred = Predictor.from_checkpoint(args.onnx, device=args.device, backend="onnxruntime")
    else:
        pred = Predictor.from_checkpoint(
            args.checkpoint,
            device=args.device,
            optimize=args.backend == "optimized",
            fp16=args.backend == "optimized" and args.device == "cuda",
        )
    runs = []
    for i in range(args.repeat + 1):
        r = pred.predict(image)
        timings = dict(r.timings)
        timings["messages"] = message_stage(r, image)
        timings["total"] += timings["messages"]
        if i:
            runs.append(timings)
    raw = {k: v.cpu().numpy() for k, v in pred.raw(image).items()}
    np.save(args.dump, {"panoptic": r.panoptic, **raw}, allow_pickle=True)
    med = {s: statistics.median(t[s] for t in runs) for s in STAGES}
    peak_mb = peak_rss_mb()
    post = {"center_threshold": pred.postprocess.center_threshold, "nms_kernel": pred.postprocess.nms_kernel}
    print(json.dumps({"times": med, "peak_mb": peak_mb, "segments": len(r.segments), "postprocess": post}))


def center_near_ties(center: np.ndarray, threshold: float, kernel: int, tol: float = 1e-4) -> int:
    """Center-map pixels within ``tol`` of one of fusion's center decisions.

    A candidate (value above threshold - tol) is fragile when it is within ``tol`` of the
    threshold, or when another candidate within ``tol`` of the window maximum shares its NMS
    window (a plateau or a near-peak: which of them becomes the center, or whether both do,
    is decided by float noise). Backends that differ by ~1e-5 may then pick different centers.
    """
    c = torch.from_numpy(np.asarray(center, np.float32)).reshape(1, 1, *center.shape[-2:])
    pad = kernel // 2
    pooled = torch.nn.functional.max_pool2d(c, kernel, stride=1, padding=pad)
    candidate = c > threshold - tol
    near_threshold = (c - threshold).abs() < tol
    near_max = (pooled - c < tol) & candidate
    rivals = torch.nn.functional.avg_pool2d(near_max.float(), kernel, stride=1, padding=pad) * kernel * kernel
    fragile = (near_threshold & candidate) | (near_max & (rivals > 1.5))
    return int(fragile.sum())


def main() -> int:
    """Parent: prepare models, run every configuration in a child, print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="r52,demo")
    parser.add_argument("--sizes", default="512x1024,1024x2048", help="sizes for r52 (demo: its own 192x384)")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--demo-repeat", type=int, default=20, help="timed runs of the (fast) demo model")
    parser.add_argument("--threads", type=int, default=0, help="torch/ORT threads (0 = library default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--backend", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    parser.add_argument("--onnx", help=argparse.SUPPRESS)
    parser.add_argument("--size", help=argparse.SUPPRESS)
    parser.add_argument("--dump", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_one(args)
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="bench_backends_"))
    plan = []
    for model in args.models.split(","):
        ckpt = r52_checkpoint(tmp) if model == "r52" else bundled_checkpoint()
        sizes = args.sizes.split(",") if model == "r52" else ["192x384"]
        plan += [(model, ckpt, size) for size in sizes]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}; "
        f"median of {args.repeat} runs (demo: {args.demo_repeat}) after 1 warm-up; seconds\n"
    )
    header = f"{'model':6} {'size':10} {'backend':12} " + " ".join(f"{s:>13}" for s in STAGES)
    header += f" {'peak MB':>8} {'vs eager':>8} {'max|raw diff|':>13} {'pan. diff px*':>13} {'ctr ties**':>10}"
    print(header)
    print("(* panoptic pixels that differ from eager, outside semantic near-ties: top-2 logit margin < 1e-3)")
    print("(** eager center-map pixels within 1e-4 of a center decision (threshold, NMS window max): center near-ties)")
    verdicts = []
    for model, ckpt, size in plan:
        # The export's size is what the network sees: the frame after the model's input_scale.
        fh, fw = map(int, size.split("x"))
        h, w = network_size_for(fh, fw, 0, load_checkpoint(ckpt).model_config.input_scale)
        onnx = tmp / f"{model}_{size}.onnx"
        export_model(ckpt, onnx, fmt="onnx", height=-(-h // 32) * 32, width=-(-w // 32) * 32)
        results = {}
        for backend in BACKENDS:
            dump = tmp / f"{model}_{size}_{backend}.npy"
            cmd = [
                sys.executable,
                __file__,
                "--child",
                "--backend",
                backend,
                "--checkpoint",
                str(ckpt),
                "--onnx",
                str(onnx),
                "--size",
                size,
                "--repeat",
                str(args.demo_repeat if model == "demo" else args.repeat),
                "--threads",
                str(args.threads),
                "--device",
                args.device,
                "--dump",
                str(dump),
            ]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            results[backend] = json.loads(out.stdout.strip().splitlines()[-1])
            results[backend]["dump"] = np.load(dump, allow_pickle=True).item()
        eager = results["eager"]
        post = eager["postprocess"]
        ties = center_near_ties(eager["dump"]["center"], post["center_threshold"], post["nms_kernel"])
        pans = {}
        for backend in BACKENDS:
            r = results[backend]
            ratio = eager["times"]["total"] / r["times"]["total"]
            diff = max(
                float(np.abs(r["dump"][k] - eager["dump"][k]).max()) for k in ("sem_seg", "center", "offset", "depth")
            )
            # Pixels whose top-2 semantic logits are within 1e-3 may flip between backends (ties).
            top2 = np.sort(eager["dump"]["sem_seg"], axis=0)[-2:]
            settled = (top2[1] - top2[0]) >= 1e-3
            pan = pans[backend] = int(((r["dump"]["panoptic"] != eager["dump"]["panoptic"]) & settled).sum())
            row = f"{model:6} {size:10} {backend:12} " + " ".join(f"{r['times'][s]:13.4f}" for s in STAGES)
            print(row + f" {r['peak_mb']:8.0f} {ratio:7.2f}x {diff:13.2e} {pan:13d} {ties:10d}")
        share = (eager["times"]["fusion"] + eager["times"]["segment_depth"]) / eager["times"]["total"]
        best = max(BACKENDS, key=lambda b: eager["times"]["total"] / results[b]["times"]["total"])
        print(
            f"   -> fusion + segment depth = {100 * share:.1f}% of eager end to end; best backend: {best}; "
            f"{1 / results[best]['times']['total']:.2f} FPS\n"
        )
        if model == "r52" and h * w >= 1024 * 2048:  # the goals are set at 1024x2048
            same = "identical" if pans[best] == 0 else f"{pans[best]} px differ"
            if pans[best] and ties:
                same += f" ({ties} center near-ties in this input)"
            speed = eager["times"]["total"] / results[best]["times"]["total"]
            verdicts.append(
                f"  {size}: best backend {best} {speed:.2f}x eager"
                f" (goal >= 1.5x: {'met' if speed >= 1.5 else 'NOT met'}),"
                f" panoptic {same}; fusion + segment depth {100 * share:.2f}% of end to end"
                f" (goal <= 5%: {'met' if share <= 0.05 else 'NOT met'})"
            )
    if verdicts:
        print("Goals (full-size model at 1024x2048):")
        print("\n".join(verdicts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
