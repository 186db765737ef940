"""Several cameras through one node against one node per camera, in one run.

    .venv/bin/python bench/bench_multicam.py [--checkpoint model.safetensors] [--size 128x256]
        [--cameras 1,2,3,4] [--rate 10] [--seconds 40]

For each number of cameras N: N cameras publishing ``--rate`` Hz each (sensor_msgs/Image,
bgr8, different images per camera) into

* one node with ``cameras:=[c0, ..., cN-1]`` (one model, the cameras' latest frames batched), and
* N single-camera nodes, one process each (N models), on the same cores (with one camera:
  the node without ``cameras``, the baseline of the memory goal),

each node being the installed executable in its own process, as deployed, with its default
threads.  Measured over ``--seconds`` after every camera has had its first answer (the
model load and first frame are not counted): frames answered per second (all cameras; a
node drops what it cannot keep up with, latest-frame-only), latency from publishing a frame
to receiving its ``segments`` (p50, p90), and the peak resident memory (VmHWM) of the node
processes, summed for the separate nodes, and the frames answered per CPU-second the node
processes used (which a machine shared with other work skews less: more processes get more of
its time, not more done per core).  Goals (N = 4): one node answers >= 1.5x the
frames of the separate nodes, with <= 1.3x the memory of one single-camera node.  With one
camera both set-ups are the same: their difference is the run-to-run spread on this machine;
``--rounds`` repeats every set-up (in turn, so load changes hit all alike) and the table
gives the medians, the ratios each round's.

Then frames of two sizes in one ``predict_batch``: grouped by size (two network passes,
what the node does) against padded to the larger size (one pass).

Without ``--checkpoint`` the bundled demo model.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_node import make_images  # noqa: E402 - the benchmarks' shared test images


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, help="model to use (default: the bundled demo model)")
    p.add_argument("--size", default="128x256", help="HxW of the camera images")
    p.add_argument("--cameras", default="1,2,3,4", help="camera counts to measure")
    p.add_argument("--rate", type=float, default=10.0, help="frames per second of each camera")
    p.add_argument("--seconds", type=float, default=40.0, help="measuring window per set-up")
    p.add_argument(
        "--max-batch",
        default="0",
        help="the one node's max_batch, comma-separated for several set-ups (0: all cameras)",
    )
    p.add_argument("--rounds", type=int, default=2, help="rounds over all set-ups (the ratios' spread)")
    p.add_argument(
        "--mixed-repeats", type=int, default=5, help="repeats of the grouped / padded comparison (0: skip it)"
    )
    p.add_argument("--domain", type=int, default=101 + os.getpid() % 100, help="ROS domain id")
    return p


class Cameras:
    """Publishes each camera at ``rate`` Hz; records publish and answer times per (camera, frame)."""

    def __init__(self, context, cameras: list[str], answers: list[str], images: list[list[np.ndarray]], rate: float):
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        from panoptic_depthlab_ros.msg import SegmentDepthArray

        self.node = Node("bench_cameras", context=context)
        self.cameras, self.images, self.period = cameras, images, 1.0 / rate
        self.sent: dict[tuple[str, int], float] = {}
        self.answered: dict[tuple[str, int], float] = {}
        self.lock = threading.Lock()
        qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
        self.pubs = [self.node.create_publisher(Image, f"{c}/image", qos) for c in cameras]
        keep = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        for topic in answers:
            self.node.create_subscription(SegmentDepthArray, topic, self._answer, keep)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.stop = threading.Event()
        threading.Thread(target=self._spin, daemon=True).start()

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            self.executor.spin()
        except ExternalShutdownException:
            pass

    def _answer(self, msg) -> None:
        now = time.perf_counter()
        with self.lock:
            self.answered.setdefault((msg.header.frame_id, msg.header.stamp.nanosec), now)

    def connected(self, outputs: int) -> bool:
        return all(p.get_subscription_count() > 0 for p in self.pubs) and all(
            self.node.count_publishers(t) > 0 for t in self._answer_topics()
        )

    def _answer_topics(self) -> list[str]:
        return [s.topic_name for s in self.node.subscriptions]

    def publish_forever(self) -> None:
        """Every camera at the rate, evenly staggered, until ``stop``."""
        from sensor_msgs.msg import Image

        n = len(self.cameras)
        start, seq = time.perf_counter(), 0
        while not self.stop.is_set():
            for i, (camera, pub) in enumerate(zip(self.cameras, self.pubs, strict=True)):
                due = start + seq * self.period + i * self.period / n
                delay = due - time.perf_counter()
                if delay > 0 and self.stop.wait(delay):
                    return
                bgr = self.images[i][seq % len(self.images[i])]
                h, w = bgr.shape[:2]
                msg = Image(height=h, width=w, encoding="bgr8", is_bigendian=0, step=3 * w, data=bgr.tobytes())
                msg.header.frame_id = camera
                msg.header.stamp.sec, msg.header.stamp.nanosec = 1, seq
                with self.lock:
                    self.sent[(camera, seq)] = time.perf_counter()
                pub.publish(msg)
            seq += 1

    def close(self) -> None:
        self.stop.set()
        self.executor.shutdown(timeout_sec=5)
        self.node.destroy_node()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def node_command(checkpoint: Path, name: str, params: dict[str, str], remaps: dict[str, str]) -> list[str]:
    exe = Path(sys.prefix) / "bin" / "panoptic_depthlab_node"
    cmd = [str(exe), "--ros-args", "-r", f"__node:={name}"]
    cmd += [
        a for k, v in {"checkpoint": str(checkpoint), "device": "cpu", **params}.items() for a in ("-p", f"{k}:={v}")
    ]
    return cmd + [a for k, v in remaps.items() for a in ("-r", f"{k}:={v}")]


def run_setup(context, checkpoint: Path, n: int, separate: bool, max_batch: int, images, args, env) -> dict:
    """One set-up for ``n`` cameras: start its node process(es), measure, stop them."""
    cameras = [f"c{i}" for i in range(n)]
    if separate:  # camera ci -> node panoptic_depthlab_ci, single camera, its own model
        commands = [
            node_command(
                checkpoint, f"panoptic_depthlab_{c}", {}, {"image": f"{c}/image", "camera_info": f"{c}/camera_info"}
            )
            for c in cameras
        ]
        answers = [f"/panoptic_depthlab_{c}/segments" for c in cameras]
    else:
        params = {"cameras": f"[{','.join(cameras)}]", "max_batch": str(max_batch)}
        commands = [node_command(checkpoint, "panoptic_depthlab", params, {})]
        answers = [f"/panoptic_depthlab/{c}/segments" for c in cameras]
    procs = [
        subprocess.Popen(c, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for c in commands
    ]
    probe = Cameras(context, cameras, answers, images[:n], args.rate)
    try:
        deadline = time.monotonic() + 300
        while not probe.connected(len(answers)):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(
                    "the node(s) did not come up: " + " ".join(p.stderr.read() for p in procs if p.poll() is not None)
                )
            time.sleep(0.2)
        time.sleep(1.0)
        publisher = threading.Thread(target=probe.publish_forever, daemon=True)
        publisher.start()
        deadline = time.monotonic() + 600
        while not all(any(k[0] == c for k in list(probe.answered)) for c in cameras):  # warm: every camera answered
            if time.monotonic() > deadline:
                raise RuntimeError("no answer from every camera within 600 s")
            time.sleep(0.1)
        cpu0 = sum(cpu_seconds(p.pid) for p in procs)
        t0 = time.perf_counter()
        time.sleep(args.seconds)
        t1 = time.perf_counter()
        cpu = sum(cpu_seconds(p.pid) for p in procs) - cpu0
        rss = [peak_rss_mb(p.pid) for p in procs]
        probe.stop.set()
        publisher.join(5)
        with probe.lock:
            window = [(k, t) for k, t in probe.answered.items() if t0 <= t < t1]
            latency = [t - probe.sent[k] for k, t in window]
            per_camera = {c: sum(1 for k, _ in window if k[0] == c) for c in cameras}
    finally:
        probe.close()
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
    q = np.percentile(latency, [50, 90]) if latency else (float("nan"), float("nan"))
    return {
        "fps": len(window) / (t1 - t0),
        "per_cpu_s": len(window) / max(cpu, 1e-9),
        "p50": q[0],
        "p90": q[1],
        "rss": sum(rss),
        "rss_each": rss,
        "per_camera": per_camera,
    }


def grouped_or_padded(checkpoint: Path, height: int, width: int, repeats: int) -> tuple[float, float]:
    """Median seconds of one predict_batch of a frame and a smaller one: grouped by size, or padded to one size."""
    from panoptic_depthlab_ros.predictor import Predictor

    predictor = Predictor.from_checkpoint(checkpoint, "cpu")
    big = make_images(1, height, width, seed=7)[0]
    small = make_images(1, height * 3 // 4, width * 3 // 4, seed=8)[0]
    padded = np.zeros_like(big)
    padded[: small.shape[0], : small.shape[1]] = small
    predictor.predict_batch([big, small])  # warm: the first pass of each input shape sets up its kernels
    predictor.predict_batch([big, padded])
    grouped, pad = [], []
    for _ in range(repeats):  # interleaved: load changes hit both alike
        t = time.perf_counter()
        predictor.predict_batch([big, small])
        grouped.append(time.perf_counter() - t)
        t = time.perf_counter()
        predictor.predict_batch([big, padded])
        pad.append(time.perf_counter() - t)
    return statistics.median(grouped), statistics.median(pad)


SEPARATE = -1  # the set-up of one node per camera


def setup_name(n: int, setup: int) -> str:
    return f"{n} node(s)" if setup == SEPARATE else f"one node, max_batch {setup}"


def main() -> None:
    args = get_args_parser().parse_args()
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    import rclpy

    from panoptic_depthlab_ros.checkpoint import bundled_checkpoint

    checkpoint = args.checkpoint or bundled_checkpoint()
    height, width = (int(v) for v in args.size.lower().split("x"))
    counts = [int(c) for c in args.cameras.split(",")]
    images = [make_images(8, height, width, seed=i) for i in range(max(counts))]
    env = dict(
        os.environ,
        ROS_DOMAIN_ID=str(args.domain),
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    )
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=args.domain)
    batches = [int(b) for b in args.max_batch.split(",")]
    # (cameras, set-up): set-up SEPARATE = one node per camera, else the one node's max_batch.
    results: dict[tuple[int, int], list[dict]] = {}
    try:
        for round_ in range(args.rounds):
            for n in counts:
                for setup in [*(batches if n > 1 else batches[:1]), SEPARATE]:
                    r = run_setup(context, checkpoint, n, setup == SEPARATE, max(setup, 0), images, args, env)
                    results.setdefault((n, setup), []).append(r)
                    print(
                        f"  round {round_ + 1}, {n} camera(s), {setup_name(n, setup)}: {r['fps']:.2f} frames/s "
                        f"{r['per_camera']}, {r['per_cpu_s']:.2f} per CPU-second, p50 {r['p50']:.2f} s, "
                        f"p90 {r['p90']:.2f} s, peak RSS {r['rss']:.0f} MB",
                        flush=True,
                    )
    finally:
        context.try_shutdown()
    mixed = grouped_or_padded(checkpoint, height, width, args.mixed_repeats) if args.mixed_repeats > 0 else None

    def med(n: int, setup: int, key: str) -> float:
        return statistics.median(r[key] for r in results[(n, setup)])

    def per_round(a: tuple[int, int], b: tuple[int, int], key: str) -> str:
        ratios = [x[key] / y[key] for x, y in zip(results[a], results[b], strict=True)]
        return ", ".join(f"{v:.2f}x" for v in ratios)

    print(
        f"\nseveral cameras: {checkpoint.name}, {height}x{width} bgr8 at {args.rate:g} Hz per camera, "
        f"{args.seconds:g} s per set-up, {args.rounds} round(s), {os.cpu_count()} CPUs, default node threads, "
        f"one node's max_batch {args.max_batch}"
    )
    print(
        f"{'cameras':>7s} {'set-up':>22s} {'frames/s':>9s} {'per CPU-s':>9s} {'p50 s':>7s} {'p90 s':>7s} "
        f"{'peak RSS MB':>12s}  (medians)"
    )
    for n, setup in results:
        row = [med(n, setup, k) for k in ("fps", "per_cpu_s", "p50", "p90", "rss")]
        print(
            f"{n:7d} {setup_name(n, setup):>22s} {row[0]:9.2f} {row[1]:9.2f} {row[2]:7.2f} {row[3]:7.2f} {row[4]:12.0f}"
        )
    first = batches[0]
    if 1 in counts:
        print(
            f"spread (1 camera, the same node twice), per round: frames {per_round((1, first), (1, SEPARATE), 'fps')}; "
            f"per CPU-second {per_round((1, first), (1, SEPARATE), 'per_cpu_s')}"
        )
    top = max(counts)
    if 1 in counts and top > 1:
        for b in batches:
            print(
                f"{top} cameras, one node (max_batch {b}) / {top} nodes, per round: frames "
                f"{per_round((top, b), (top, SEPARATE), 'fps')} (goal >= 1.5); per CPU-second "
                f"{per_round((top, b), (top, SEPARATE), 'per_cpu_s')}"
            )
        print(
            f"{top} cameras, one node's memory / one single-camera node's, per round: "
            f"{per_round((top, first), (1, SEPARATE), 'rss')} (goal <= 1.3); {top} nodes: "
            f"{per_round((top, SEPARATE), (1, SEPARATE), 'rss')}"
        )
    if mixed is not None:
        grouped, padded = mixed
        print(
            f"two sizes in one batch ({height}x{width} + {height * 3 // 4}x{width * 3 // 4}): grouped {grouped:.2f} s,"
            f" padded to one size {padded:.2f} s: padding takes {padded / grouped:.2f}x"
        )


if __name__ == "__main__":
    main()
