"""The node's end-to-end latency against the bare predictor, at each thread setting, in one run.

    .venv/bin/python bench/bench_node.py [--checkpoint model.safetensors | --arch bundled|tiny|r52]
        [--size 192x384] [--frames 20] [--warmup 3] [--num-threads 1,0] [--rounds 1] [--inprocess]

Node latency = publishing a sensor_msgs/Image (bgr8) -> receiving its SegmentDepthArray,
one frame in flight at a time (so nothing is dropped).  Bare = ``Predictor.predict`` on
the same image in this process, with the node's fusion settings.  Bare and node frames
are interleaved so load changes on a shared machine hit both alike.  Two node phases:
only ``~/segments`` subscribed, then all five outputs (the overlay drawn every frame;
``~/segments`` still goes out first).  The node's network stage (its diagnostics) is
compared with the bare predictor's.

Each ``--num-threads`` setting (0: torch's default, the physical cores; the node's
default) runs both sides with that many intra-op threads, a fresh node each time;
``--rounds`` repeats them all, so the spread on a shared machine shows.

By default the node is the installed executable (``panoptic_depthlab_node``) in its own
process, as deployed, importing this checkout (PYTHONPATH) so that node and bare predictor
run the same code; ``--inprocess`` runs it in this process on a background executor.
Default model: the bundled one; ``--arch tiny|r52`` writes a random-weight checkpoint.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
OUTPUTS = ("segments", "panoptic", "semantic", "depth", "overlay")
BARE_STAGES: dict[str, list[float]] = {}  # the bare predictor's own stage timings, all phases
DEFAULT_THREADS = 0  # torch's default intra-op threads, read in main before any change


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, help="model to use (default: random weights of --arch)")
    p.add_argument("--arch", choices=("bundled", "tiny", "r52"), default="bundled")
    p.add_argument("--size", default="192x384", help="HxW of the test images")
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument(
        "--num-threads",
        type=thread_settings,
        default=[1, 0],
        help="comma-separated intra-op thread counts, each run for both (0 = torch's default)",
    )
    p.add_argument("--rounds", type=int, default=1, help="repeat every thread setting this often")
    p.add_argument(
        "--node-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="environment of the node's process only (e.g. OMP_WAIT_POLICY=PASSIVE); repeatable",
    )
    p.add_argument("--inprocess", action="store_true", help="run the node in this process")
    p.add_argument("--domain", type=int, default=1 + os.getpid() % 100, help="ROS domain id")
    return p


def make_checkpoint(arch: str, directory: Path) -> Path:
    import torch

    from panoptic_depthlab_ros.checkpoint import save_checkpoint
    from panoptic_depthlab_ros.fusion import PostprocessConfig
    from panoptic_depthlab_ros.metadata import cityscapes_metadata
    from panoptic_depthlab_ros.model import ModelConfig, build_model

    torch.manual_seed(0)
    config = (
        ModelConfig.tiny(aspp_strict_pool_size=False, size_divisibility=32)
        if arch == "tiny"
        else ModelConfig(aspp_strict_pool_size=False)
    )
    model = build_model(config).eval()
    with torch.no_grad():  # spread the random predictors so fusion has real work (several segments)
        model.sem_seg_head.predictor.weight.normal_(0, 0.5)
        model.ins_embed_head.center_predictor.weight.normal_(0, 0.3)
        model.ins_embed_head.center_predictor.bias.fill_(0.05)
        model.depth_head.predictor.weight.normal_(0, 0.5)
    path = directory / f"{arch}.safetensors"
    save_checkpoint(
        path,
        model,
        model_config=config,
        classes=cityscapes_metadata(),
        postprocess=PostprocessConfig(),
        info={"purpose": "bench"},
    )
    return path


def make_images(n: int, height: int, width: int, seed: int = 0) -> list[np.ndarray]:
    """Blocky random BGR images (structure for the model to segment), all different."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        small = rng.integers(0, 256, size=(-(-height // 16), -(-width // 16), 3), dtype=np.uint8)
        out.append(np.ascontiguousarray(np.kron(small, np.ones((16, 16, 1), np.uint8))[:height, :width]))
    return out


class Probe:
    """Publishes images, records when each output arrives (by stamp) and /diagnostics."""

    def __init__(self, context, outputs: tuple[str, ...]) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        from panoptic_depthlab_ros.msg import SegmentDepthArray

        self.node = Node("bench_probe", context=context)
        self.arrivals: dict[tuple[str, int], float] = {}
        self.diagnostics = None
        self.cond = threading.Condition()
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.subs = []
        for name in outputs:
            msg_type = SegmentDepthArray if name == "segments" else Image
            self.subs.append(
                self.node.create_subscription(msg_type, f"/panoptic_depthlab/{name}", self._arrived(name), qos)
            )
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._diag, 10)
        self.pub = self.node.create_publisher(Image, "image", qos)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            self.executor.spin()
        except ExternalShutdownException:
            pass

    def _arrived(self, name: str):
        def callback(msg) -> None:
            now = time.perf_counter()
            with self.cond:
                self.arrivals[(name, msg.header.stamp.sec)] = now
                self.cond.notify_all()

        return callback

    def _diag(self, msg) -> None:
        for status in msg.status:
            if status.name.endswith("panoptic_depthlab: pipeline"):
                self.diagnostics = {kv.key: kv.value for kv in status.values}

    def wait(self, keys: list[tuple[str, int]], timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: all(k in self.arrivals for k in keys), timeout)

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=5)
        self.node.destroy_node()


def image_msg(bgr: np.ndarray, stamp: int):
    from sensor_msgs.msg import Image

    h, w = bgr.shape[:2]
    msg = Image(height=h, width=w, encoding="bgr8", is_bigendian=0, step=w * 3)
    msg.header.stamp.sec = stamp
    msg.header.frame_id = "camera"
    msg.data = bgr.tobytes()
    return msg


def run_phase(
    probe: Probe,
    predictor,
    images: list[np.ndarray],
    outputs: tuple[str, ...],
    warmup: int,
    first_stamp: int,
) -> tuple[list[float], list[float], list[float]]:
    """Interleaved: bare predict, then one node round trip, per image. Returns seconds
    (bare, node publish->segments, node publish->last output)."""
    bare, node_seg, node_all = [], [], []
    for i, bgr in enumerate(images):
        t0 = time.perf_counter()
        result = predictor.predict(bgr)
        t_bare = time.perf_counter() - t0
        if i >= warmup:
            for stage, seconds in result.timings.items():
                BARE_STAGES.setdefault(stage, []).append(seconds)
        stamp = first_stamp + i
        msg = image_msg(bgr, stamp)
        t0 = time.perf_counter()
        probe.pub.publish(msg)
        if not probe.wait([(name, stamp) for name in outputs], timeout=120):
            raise RuntimeError(f"no answer to frame {stamp} within 120 s")
        t_seg = probe.arrivals[("segments", stamp)] - t0
        t_all = max(probe.arrivals[(name, stamp)] for name in outputs) - t0
        if i >= warmup:
            bare.append(t_bare)
            node_seg.append(t_seg)
            node_all.append(t_all)
    return bare, node_seg, node_all


def _wait_matched(probe: Probe, outputs: tuple[str, ...], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe.pub.get_subscription_count() > 0 and all(
            probe.node.count_publishers(f"/panoptic_depthlab/{n}") > 0 for n in outputs
        ):
            time.sleep(0.5)  # let the node's publishers see the probe's subscriptions too
            return
        time.sleep(0.05)
    raise RuntimeError("the node did not come up (see its output above)")


def ms(values: list[float]) -> str:
    stats = (statistics.median(values), statistics.mean(values), max(values))
    return " ".join(f"{v * 1e3:8.1f}" for v in stats)


def thread_settings(text: str) -> list[int]:
    """``--num-threads``: comma-separated counts, 0 = torch's default (the physical cores)."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected whole numbers >= 0, got {text!r}")
    return values


def start_node(node_params: dict, domain: int, context, inprocess: bool, extra_env: list[str]):
    """The node under test: the installed executable in its own process, or in this one."""
    if inprocess:
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.parameter import Parameter

        from panoptic_depthlab_ros.ros.node import PanopticDepthLabNode

        node = PanopticDepthLabNode(
            context=context, parameter_overrides=[Parameter(k, value=v) for k, v in node_params.items()]
        )
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        threading.Thread(target=executor.spin, daemon=True).start()

        def stop() -> None:
            executor.shutdown()
            node.destroy_node()

        return stop
    exe = Path(sys.prefix) / "bin" / "panoptic_depthlab_node"
    cmd = [str(exe), "--ros-args"] + [a for k, v in node_params.items() for a in ("-p", f"{k}:={v}")]
    # The source tree first, as for the bare predictor here: both run the same code even
    # when the installed copy is older than the checkout.
    env = dict(
        os.environ,
        ROS_DOMAIN_ID=str(domain),
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    )
    env.update(item.split("=", 1) for item in extra_env)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def stop_process() -> None:
        proc.terminate()
        proc.wait(timeout=30)

    return stop_process


def run_setting(args, context, checkpoint: Path, threads: int, images: list[np.ndarray], first: int) -> list:
    """Both phases with ``threads`` intra-op threads in the bare predictor and the node."""
    import torch

    from panoptic_depthlab_ros.predictor import Predictor
    from panoptic_depthlab_ros.ros.parameters import PARAMETERS, NodeSettings

    torch.set_num_threads(threads or DEFAULT_THREADS)
    node_params = {
        "checkpoint": str(checkpoint),
        "device": "cpu",
        "qos_reliability": "reliable",
        "num_threads": threads,
    }
    # The bare predictor with exactly the node's fusion settings (the YAML defaults).
    predictor = Predictor.from_checkpoint(checkpoint, "cpu")
    settings = NodeSettings.from_values({**{p.name: p.default for p in PARAMETERS}, **node_params})
    predictor.postprocess = settings.postprocess(predictor.postprocess)
    BARE_STAGES.clear()
    stop = start_node(node_params, args.domain, context, args.inprocess, args.node_env)
    rows = []
    try:
        for phase, outputs in (("segments only", ("segments",)), ("all 5 outputs", OUTPUTS)):
            probe = Probe(context, outputs)
            try:
                _wait_matched(probe, outputs)
                bare, seg, everything = run_phase(
                    probe, predictor, images, outputs, args.warmup, first_stamp=first + 1000 * len(rows)
                )
                diag = probe.diagnostics
            finally:
                probe.close()
            rows.append((phase, bare, seg, everything, diag))
    finally:
        stop()
    return rows


def report(rows: list, threads: int) -> dict[str, float]:
    """Print one thread setting's table; returns its ratios (node / bare)."""
    stages = ("wait", "convert", "preprocess", "network", "fusion", "segment_depth", "track", "publish", "total")
    print(f"[--num-threads {threads}: {threads or DEFAULT_THREADS} intra-op threads]")
    print(f"{'':36s} {'median':>8s} {'mean':>8s} {'max':>8s}  (ms)")
    ratios = {}
    for phase, bare, seg, everything, diag in rows:
        ratio = statistics.median(seg) / statistics.median(bare)
        ratios[phase] = ratio
        print(f"  [{phase}]")
        print(f"    {'bare Predictor.predict':32s} {ms(bare)}")
        print(f"    {'node publish -> segments':32s} {ms(seg)}   ratio {ratio:.3f} (goal <= 1.10)")
        if phase.startswith("all"):
            last = statistics.median(everything) / statistics.median(bare)
            print(f"    {'node publish -> last output':32s} {ms(everything)}   ratio {last:.3f}")
        if diag:
            print(
                "    node stages, mean ms: "
                + ", ".join(f"{s} {float(diag.get(s + '_ms_mean', 'nan')):.1f}" for s in stages)
            )
            network = float(diag.get("network_ms_mean", "nan")) / (1e3 * statistics.mean(BARE_STAGES["network"]))
            ratios[phase + ", network"] = network
            print(f"    network stage node / bare: {network:.3f}")
    print(
        "  bare stages (both phases), mean ms: "
        + ", ".join(f"{s} {statistics.mean(v) * 1e3:.1f}" for s, v in BARE_STAGES.items())
    )
    return ratios


def main() -> None:
    args = get_args_parser().parse_args()
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    import rclpy
    import torch

    from panoptic_depthlab_ros.checkpoint import bundled_checkpoint

    global DEFAULT_THREADS
    DEFAULT_THREADS = torch.get_num_threads()
    height, width = (int(v) for v in args.size.lower().split("x"))
    tmp = tempfile.TemporaryDirectory()
    checkpoint = args.checkpoint or (
        bundled_checkpoint() if args.arch == "bundled" else make_checkpoint(args.arch, Path(tmp.name))
    )
    images = make_images(args.frames + args.warmup, height, width)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=args.domain)
    summary = []
    try:
        for round_ in range(args.rounds):
            for k, threads in enumerate(args.num_threads):
                first = 10_000 * (1 + round_ * len(args.num_threads) + k)
                rows = run_setting(args, context, checkpoint, threads, images, first)
                if round_ == 0 and k == 0:
                    where = "in-process" if args.inprocess else "installed executable, own process"
                    print(
                        f"\nnode ({where}) vs bare Predictor.predict: {args.checkpoint or args.arch}, "
                        f"{height}x{width} bgr8, {args.frames} frames after {args.warmup} warm-up, "
                        f"{os.cpu_count()} CPUs, torch default threads {DEFAULT_THREADS}, "
                        f"load {' '.join(f'{v:.2f}' for v in os.getloadavg())}"
                        + (f"; node environment {' '.join(args.node_env)}" if args.node_env else "")
                    )
                print(f"\nround {round_ + 1}", end=" ")
                summary.append((threads, report(rows, threads)))
    finally:
        context.try_shutdown()
        tmp.cleanup()
    print(f"\nsummary, node / bare (median per round), load {' '.join(f'{v:.2f}' for v in os.getloadavg())}:")
    for threads in args.num_threads:
        got = [r for t, r in summary if t == threads]
        for key in got[0]:
            values = ", ".join(f"{r[key]:.2f}" for r in got)
            print(f"  --num-threads {threads} ({threads or DEFAULT_THREADS} threads), {key}: {values}")


if __name__ == "__main__":
    main()
