"""The GPU check: everything only a machine with an NVIDIA GPU can confirm, in one run.

    .venv/bin/python bench/gpu_check.py [--device cuda:0] [--json FILE] [--keep DIR]

Meant to take under 5 minutes on a desktop or server GPU (a Jetson takes longer: the
compile modes and the TensorRT engine builds dominate). Every check prints one line,
PASS / FAIL / SKIP with what it measured; the exit code is 0 when nothing failed, 1 when
something did (each failure is listed again at the end), 2 on a machine without CUDA
(one line, nothing else runs). SKIP is only for what is not installed here (onnxruntime-gpu,
TensorRT, rclpy, a second GPU): what it leaves unconfirmed is listed at the end.

Checks, in order (tolerances: the constants below):

1. Environment: torch, CUDA, cuDNN versions; the GPU and its compute capability, which
   the wheel's ``torch.cuda.get_arch_list()`` must cover (else "no kernel image");
   onnxruntime's version and providers; one CUDA kernel actually runs.
2. The bundled demo model on two demo-bag frames, CUDA fp32 and fp16 against the CPU:
   semantic agreement, depth relative error and segment counts (TF32 and fp16 move
   values, and a moved center can renumber instances, so panoptic ids are not compared);
   then the fusion and segment statistics alone on the *same* CPU network outputs moved
   to CUDA: the panoptic map exactly equal, segment ids, areas and boxes exactly, depth
   statistics to 1e-6 relative.
3. Every ``compile_mode`` (default, reduce-overhead, max-autotune), with and without
   ``flip_average``, against eager CUDA on two different frames in a row (CUDA graphs
   reuse their output buffers: a second frame or a mirrored pass must not change the
   first's outputs); compile time.
4. The ONNX export on the CUDA provider and on TensorRT (fp32 engine, cached): the
   provider the session actually got, IO binding on, outputs against torch CUDA,
   first-frame time (session + engine build), a second session's first frame (engine
   from the cache), steady time.
5. The node (rclpy): configure with its warm-up frame, then cleanup: the CUDA memory
   allocated and reserved must drop back.
6. Training on the GPU: 20 iterations with float16 AMP on a small synthetic dataset,
   resumed to 30; a run with AMP off resumed with AMP on.
7. With 2+ GPUs: ``torchrun --nproc_per_node 2`` evaluate gives the single process's metrics.
8. Times at 512x1024 and 1024x2048 of the full-size R-52 network (random weights, outputs
   steered to a synthetic street scene as in bench_network.py): network, post-processing
   (fusion + segment depth) and end to end, for fp32, fp16, compiled (reduce-overhead,
   fp16) and TensorRT (fp16 engine); against the goal of >= 30 frames per second end to
   end at 1024x2048 on an H100-class GPU (a table, not a pass/fail: other GPUs differ).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "training"), str(REPO / "bench")]  # the checkout, not an install

# Tolerances of the GPU results against the CPU's on the bundled model (check 2).
SEMANTIC_AGREEMENT = {"fp32": 0.998, "fp16": 0.99}  # share of pixels with the CPU's class
DEPTH_RELATIVE_ERROR = {"fp32": 0.005, "fp16": 0.02}  # mean |d_gpu - d_cpu| / d_cpu
SEGMENT_COUNT_CHANGE = {"fp32": 0.05, "fp16": 0.15}  # |n_gpu - n_cpu| / n_cpu per frame (2 segments always pass)
FUSION_RELATIVE = 1e-6  # segment depth statistics of the same outputs, CUDA against CPU
SCORE_RELATIVE = 1e-5  # segment scores: CUDA sums the class probabilities in float32 chunks
# Compiled or exported against eager CUDA (checks 3 and 4): same precision, other kernels.
COMPILED_AGREEMENT = 0.999
COMPILED_RELATIVE = 0.01  # mean relative error of depth, and of the center heatmap's peak
# Node cleanup: what may stay allocated after it (bytes; the CUDA context is not counted).
NODE_LEFTOVER = 16 << 20
GOAL_FPS = 30.0  # end to end at 1024x2048 on an H100-class GPU
TIMING_SIZES = ((512, 1024), (1024, 2048))
TIMING_REPEAT = 20


class CheckFailedError(Exception):
    """A check's result is wrong: the message says what was measured and what was expected."""


class NotInstalledError(Exception):
    """What the check needs is not installed here: the message says what and what it leaves unconfirmed."""


@dataclass
class Report:
    """Every check's outcome, printed as it comes."""

    results: list[dict[str, str]] = field(default_factory=list)
    timings: list[dict[str, Any]] = field(default_factory=list)

    def run(self, name: str, check: Callable[[], str]) -> None:
        """Run one check; PASS with its detail, SKIP, or FAIL with the reason (a traceback for a crash)."""
        start = time.perf_counter()
        try:
            status, detail = "PASS", check()
        except NotInstalledError as exc:
            status, detail = "SKIP", str(exc)
        except CheckFailedError as exc:
            status, detail = "FAIL", str(exc)
        except Exception as exc:  # noqa: BLE001 - a crash is a failure of that check, the others still run
            status, detail = "FAIL", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
        seconds = time.perf_counter() - start
        self.results.append({"check": name, "status": status, "detail": detail, "seconds": f"{seconds:.1f}"})
        print(f"{status:4}  {name} ({seconds:.1f} s): {detail}", flush=True)
        gc.collect()
        torch.cuda.empty_cache()

    @property
    def failed(self) -> list[dict[str, str]]:
        return [r for r in self.results if r["status"] == "FAIL"]


def expect(condition: bool, message: str) -> None:
    """A :class:`CheckFailedError` with ``message`` unless ``condition``."""
    if not condition:
        raise CheckFailedError(message)


def arch_supported(capability: tuple[int, int], arch_list: list[str]) -> bool:
    """Whether a wheel built for ``arch_list`` (``sm_86``, ``compute_90``...) has kernels for ``capability``.

    A cubin runs on its own major architecture at an equal or higher minor version; PTX
    (``compute_XY``) is compiled at load time for any architecture at or above it.
    """
    major, minor = capability
    for arch in arch_list:
        kind, _, number = arch.partition("_")
        digits = "".join(ch for ch in number if ch.isdigit())
        if len(digits) < 2:
            continue
        a_major, a_minor = int(digits[:-1]), int(digits[-1])
        if kind == "sm" and a_major == major and a_minor <= minor:
            return True
        if kind == "compute" and (a_major, a_minor) <= (major, minor):
            return True
    return False


def synchronize_timer(device: torch.device) -> Callable[[], float]:
    """``perf_counter`` after waiting for ``device`` (its own stream, not the current device's)."""

    def now() -> float:
        torch.cuda.synchronize(device)
        return time.perf_counter()

    return now


class GpuCheck:
    """The checks of the module docstring, sharing the device, the frames and a scratch folder."""

    def __init__(self, device: torch.device, scratch: Path, report: Report) -> None:
        from panoptic_depthlab_ros.bag_reading import read_bag_frames  # noqa: PLC0415 - after the CUDA test
        from panoptic_depthlab_ros.checkpoint import bundled_checkpoint  # noqa: PLC0415

        self.device = device
        self.scratch = scratch
        self.report = report
        self.now = synchronize_timer(device)
        self.checkpoint = bundled_checkpoint()
        self.frames, _, _ = read_bag_frames(REPO / "data" / "demo_bag", lambda total: [0, total // 2])
        expect(len(self.frames) == 2, "the demo bag gave no frames")

    # ------------------------------------------------------------------ 1
    def environment(self) -> str:
        capability = torch.cuda.get_device_capability(self.device)
        arch_list = torch.cuda.get_arch_list()
        name = torch.cuda.get_device_name(self.device)
        free, total = torch.cuda.mem_get_info(self.device)
        text = (
            f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()},"
            f" {name} sm_{capability[0]}{capability[1]}, {free / 2**30:.1f} of {total / 2**30:.1f} GiB free,"
            f" {torch.cuda.device_count()} GPU(s); wheel archs {' '.join(arch_list)}"
        )
        expect(
            arch_supported(capability, arch_list),
            f"{text}: this torch wheel has no kernels for sm_{capability[0]}{capability[1]} (install one built for it)",
        )
        x = torch.randn(256, 256, device=self.device)
        expect(bool(torch.isfinite(x @ x).all()), f"{text}: a matrix product on the GPU is not finite")
        try:
            import onnxruntime as ort  # noqa: PLC0415

            text += f"; onnxruntime {ort.__version__}: {', '.join(ort.get_available_providers())}"
        except ImportError:
            text += "; onnxruntime not installed"
        return text

    # ------------------------------------------------------------------ 2
    def against_cpu(self, precision: str) -> str:
        from panoptic_depthlab_ros.predictor import Predictor  # noqa: PLC0415

        cpu = Predictor.from_checkpoint(self.checkpoint, "cpu")
        gpu = Predictor.from_checkpoint(self.checkpoint, self.device, fp16=precision == "fp16")
        parts = []
        for i, frame in enumerate(self.frames):
            want, got = cpu.predict(frame), gpu.predict(frame)
            assert want.depth is not None and got.depth is not None  # the bundled model's depth is trained
            agreement = float((want.semantic == got.semantic).mean())
            valid = want.depth > 0
            depth_error = float((abs(got.depth - want.depth)[valid] / want.depth[valid]).mean())
            n_cpu, n_gpu = len(want.segments), len(got.segments)
            change = abs(n_gpu - n_cpu) / max(n_cpu, 1) if abs(n_gpu - n_cpu) > 2 else 0.0
            line = (
                f"frame {i}: semantics {agreement:.4%} agree, depth error {depth_error:.2e},"
                f" segments {n_gpu} vs {n_cpu}"
            )
            expect(agreement >= SEMANTIC_AGREEMENT[precision], f"{line} (needs >= {SEMANTIC_AGREEMENT[precision]:.1%})")
            expect(
                depth_error <= DEPTH_RELATIVE_ERROR[precision], f"{line} (needs <= {DEPTH_RELATIVE_ERROR[precision]})"
            )
            expect(
                change <= SEGMENT_COUNT_CHANGE[precision],
                f"{line} (needs within {SEGMENT_COUNT_CHANGE[precision]:.0%})",
            )
            parts.append(line)
        return "; ".join(parts)

    def fusion_exact(self) -> str:
        from panoptic_depthlab_ros.fusion import panoptic_fusion  # noqa: PLC0415
        from panoptic_depthlab_ros.predictor import Predictor  # noqa: PLC0415
        from panoptic_depthlab_ros.segment_stats import segment_depth_statistics  # noqa: PLC0415

        cpu = Predictor.from_checkpoint(self.checkpoint, "cpu")
        parts = []
        for i, frame in enumerate(self.frames):
            raw = cpu.raw(frame)
            results = {}
            for where, out in (("cpu", raw), ("cuda", {k: v.to(self.device) for k, v in raw.items()})):
                fused = panoptic_fusion(
                    out["sem_seg"], out["center"], out["offset"], classes=cpu.classes, config=cpu.postprocess
                )
                segments = segment_depth_statistics(
                    fused.panoptic,
                    out["depth"][0],
                    classes=cpu.classes,
                    config=cpu.postprocess,
                    sem_logits=out["sem_seg"],
                    center=out["center"],
                    segments=fused.segments,
                    class_probability=fused.class_probability,
                )
                results[where] = (fused.panoptic.cpu(), segments)
            (pan_cpu, seg_cpu), (pan_gpu, seg_gpu) = results["cpu"], results["cuda"]
            expect(torch.equal(pan_cpu, pan_gpu), f"frame {i}: {int((pan_cpu != pan_gpu).sum())} panoptic ids differ")
            exact = ("id", "category_id", "area", "x_min", "y_min", "x_max", "y_max", "depth_valid_pixels")
            close = {name: FUSION_RELATIVE for name in ("depth_mean", "depth_median", "depth_min", "depth_std")}
            close |= {"depth_robust": FUSION_RELATIVE, "score": SCORE_RELATIVE}
            expect(len(seg_cpu) == len(seg_gpu), f"frame {i}: {len(seg_gpu)} segments on CUDA, {len(seg_cpu)} on CPU")
            worst = dict.fromkeys(close, 0.0)
            for a, b in zip(seg_cpu, seg_gpu, strict=True):
                for name in exact:
                    expect(getattr(a, name) == getattr(b, name), f"frame {i} segment {a.id}: {name} differs")
                for name in close:
                    x, y = getattr(a, name), getattr(b, name)
                    if x == x or y == y:  # not both NaN
                        worst[name] = max(worst[name], abs(x - y) / max(abs(x), 1e-12))
            over = {name: f"{value:.1e}" for name, value in worst.items() if value > close[name]}
            expect(not over, f"frame {i}: segment statistics differ (relative): {over}")
            parts.append(f"frame {i}: {len(seg_cpu)} segments identical, statistics within {max(worst.values()):.1e}")
        return "; ".join(parts)

    # ------------------------------------------------------------------ 3
    def compiled(self, mode: str, flip: bool) -> str:
        from panoptic_depthlab_ros.predictor import Predictor  # noqa: PLC0415

        torch._dynamo.reset()
        eager = Predictor.from_checkpoint(self.checkpoint, self.device, flip_average=flip)
        compiled = Predictor.from_checkpoint(self.checkpoint, self.device, flip_average=flip, compile_mode=mode)
        start = self.now()
        first = compiled.raw(self.frames[0])  # compiles
        compile_s = self.now() - start
        kept = {k: v.clone() for k, v in first.items()}
        second = compiled.raw(self.frames[1])
        third = compiled.raw(self.frames[1])  # warm: a CUDA graph replays now
        expect(all(torch.equal(first[k], kept[k]) for k in first), "the next frames overwrote the first's outputs")
        parts = [f"compile + first frame {compile_s:.1f} s"]
        for i, (got, frame) in enumerate(((kept, self.frames[0]), (second, self.frames[1]), (third, self.frames[1]))):
            want = eager.raw(frame)
            agreement = float((got["sem_seg"].argmax(0) == want["sem_seg"].argmax(0)).float().mean())
            depth = float(((got["depth"] - want["depth"]).abs() / want["depth"].abs().clamp(min=1e-3)).mean())
            peak = float((got["center"].amax() - want["center"].amax()).abs() / want["center"].amax().clamp(min=1e-3))
            expect(
                agreement >= COMPILED_AGREEMENT and depth <= COMPILED_RELATIVE and peak <= COMPILED_RELATIVE,
                f"call {i}: semantics {agreement:.4%} agree, depth error {depth:.2e}, center peak error {peak:.2e}",
            )
            parts.append(f"call {i}: {agreement:.4%} / {depth:.1e} / {peak:.1e}")
        compiled.release()
        return "; ".join(parts)

    # ------------------------------------------------------------------ 4
    def onnx(self, provider: str) -> str:
        try:
            import onnxruntime as ort  # noqa: PLC0415
        except ImportError:
            raise NotInstalledError("onnxruntime is not installed: the ONNX GPU path is unconfirmed") from None
        from panoptic_depthlab_ros.export import export_model  # noqa: PLC0415
        from panoptic_depthlab_ros.onnx_backend import (  # noqa: PLC0415
            CUDA_PROVIDER,
            TENSORRT_PROVIDER,
            OnnxNetwork,
            ProviderSettings,
        )
        from panoptic_depthlab_ros.predictor import Predictor  # noqa: PLC0415

        wanted = TENSORRT_PROVIDER if provider == "tensorrt" else CUDA_PROVIDER
        if wanted not in ort.get_available_providers():
            raise NotInstalledError(
                f"this onnxruntime has no {wanted} (pip install onnxruntime-gpu): that path is unconfirmed"
            )
        eager = Predictor.from_checkpoint(self.checkpoint, self.device)
        h, w = self.frames[0].shape[:2]
        prep = eager._prepare(self.frames[0])  # the network input torch gets: resized, normalised, padded
        hp, wp = prep.tensor.shape[-2:]
        export = self.scratch / f"demo_{hp}x{wp}.onnx"
        if not export.exists():
            export_model(self.checkpoint, export, height=hp, width=wp)
        settings = ProviderSettings(
            tensorrt="on" if provider == "tensorrt" else "off", engine_cache=self.scratch / "engines"
        )
        timings = []
        for _ in range(2):  # the second session takes the TensorRT engine from the cache
            start = self.now()
            network = OnnxNetwork(export, device=self.device, threads=1, providers=settings, fixed_size=(hp, wp))
            out = network(prep.tensor)
            timings.append(self.now() - start)
        expect(network.providers[0] == wanted, f"the session got {network.providers}, asked {wanted} first")
        expect(network.io_binding, "IO binding is off on CUDA")
        want = eager._run_network(prep.tensor, depth=True)
        agreement = float((out["sem_seg"].argmax(1) == want["sem_seg"].argmax(1)).float().mean())
        depth = float(((out["depth"] - want["depth"]).abs() / want["depth"].abs().clamp(min=1e-3)).mean())
        expect(
            agreement >= COMPILED_AGREEMENT and depth <= COMPILED_RELATIVE,
            f"{wanted}: semantics {agreement:.4%} agree with torch, depth error {depth:.2e}",
        )
        steady = []
        for _ in range(10):
            start = self.now()
            network(prep.tensor)
            steady.append(self.now() - start)
        return (
            f"{', '.join(network.providers)}; {h}x{w} frame: first {timings[0]:.1f} s, again (new session)"
            f" {timings[1]:.1f} s, steady {statistics.median(steady) * 1e3:.1f} ms; semantics {agreement:.4%},"
            f" depth error {depth:.1e}"
        )

    # ------------------------------------------------------------------ 5
    def node_memory(self) -> str:
        try:
            import rclpy  # noqa: PLC0415
            from rclpy.parameter import Parameter  # noqa: PLC0415
        except ImportError:
            raise NotInstalledError(
                "rclpy is not installed: the node's configure / cleanup on the GPU is unconfirmed"
            ) from None
        from panoptic_depthlab_ros.ros.node import PanopticDepthLabNode  # noqa: PLC0415

        context = rclpy.Context()
        rclpy.init(context=context)
        node = None
        try:
            before = torch.cuda.memory_allocated(self.device), torch.cuda.memory_reserved(self.device)
            # "cuda" is the current device, which main() made self.device (the parameter takes no index).
            params = {"checkpoint": str(self.checkpoint), "device": "cuda", "managed": True}
            node = PanopticDepthLabNode(
                context=context, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()]
            )
            node.trigger_configure()
            expect(node.lifecycle_state == "inactive", f"configure failed: {node._transition_error}")
            loaded = torch.cuda.memory_allocated(self.device), torch.cuda.memory_reserved(self.device)
            node.trigger_cleanup()
            gc.collect()
            after = torch.cuda.memory_allocated(self.device), torch.cuda.memory_reserved(self.device)
        finally:
            if node is not None:
                node.destroy_node()
            rclpy.try_shutdown(context=context)
        mb = [f"{a / 2**20:.0f}/{r / 2**20:.0f}" for a, r in (before, loaded, after)]
        text = f"allocated/reserved MiB: before {mb[0]}, configured {mb[1]}, cleaned up {mb[2]}"
        expect(loaded[0] > before[0], f"{text}: the model took no GPU memory")
        expect(after[0] <= before[0] + NODE_LEFTOVER and after[1] <= before[1] + NODE_LEFTOVER, f"{text}: not freed")
        return text

    # ------------------------------------------------------------------ 6
    def training(self) -> str:
        from panoptic_depthlab_training.train.config import load_config  # noqa: PLC0415
        from panoptic_depthlab_training.train.loop import train  # noqa: PLC0415
        from panoptic_depthlab_training.train.state import load_training_state  # noqa: PLC0415

        data = self.dataset()
        small = [
            f"device={self.device}",
            "data.crop_size=[128,256]",
            "data.workers=0",
            "eval.period=0",
            "log.image_period=0",
            "checkpoint.period=10",
        ]
        amp_run = self.scratch / "train_amp"

        def run(out: Path, *, amp: bool, iters: int, resume: bool = False) -> int:
            """Train (or resume) in ``out`` to ``iters`` iterations; the iteration it ended at."""
            config = load_config("quick_cpu", [*small, f"solver.amp={str(amp).lower()}", f"solver.max_iter={iters}"])
            return train(config, data_root=data, out_dir=out, resume=resume, progress=False).iteration

        start = self.now()
        ended = run(amp_run, amp=True, iters=20)
        seconds = self.now() - start
        expect(ended == 20, f"the AMP run stopped at iteration {ended}")
        scale = load_training_state(amp_run / "last_state.pt")["scaler"].get("scale")
        expect(scale is not None, "the AMP run saved no loss scale (AMP did not run)")
        ended = run(amp_run, amp=True, iters=30, resume=True)
        expect(ended == 30, f"the resumed AMP run stopped at iteration {ended}")
        switched = self.scratch / "train_switch"
        run(switched, amp=False, iters=10)
        ended = run(switched, amp=True, iters=20, resume=True)
        expect(ended == 20, f"AMP off then on: stopped at iteration {ended}")
        return (
            f"20 AMP iterations in {seconds:.1f} s (loss scale {scale:g}), resumed to 30; AMP off for 10 then on to 20"
        )

    def dataset(self) -> Path:
        from panoptic_depthlab_training.synth.writer import generate_dataset  # noqa: PLC0415

        root = self.scratch / "synth"
        if not root.exists():
            generate_dataset(root, train=8, val=4, seed=0, height=128, width=256, progress=False)
        return root

    # ------------------------------------------------------------------ 7
    def torchrun_evaluate(self) -> str:
        if torch.cuda.device_count() < 2:
            raise NotInstalledError(f"{torch.cuda.device_count()} GPU: multi-GPU evaluate is unconfirmed")
        data = self.dataset()
        model = self.scratch / "train_amp" / "model_final.safetensors"
        expect(model.is_file(), f"{model} is missing (the training check failed)")
        base = ["evaluate", "--checkpoint", str(model), "--data", str(data), "--no-progress", "--device", "cuda"]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "training")]))
        single, multi = self.scratch / "eval_1.json", self.scratch / "eval_2.json"
        module = [sys.executable, "-m", "panoptic_depthlab_training.cli"]
        runs = (
            [*module, *base, "--json", str(single)],
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nproc_per_node",
                "2",
                "-m",
                "panoptic_depthlab_training.cli",
                *base,
                "--json",
                str(multi),
            ],
        )
        for command in runs:
            proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
            expect(proc.returncode == 0, f"{' '.join(command[:6])} ... exited {proc.returncode}: {proc.stderr[-2000:]}")
        one, two = json.loads(single.read_text()), json.loads(multi.read_text())
        expect(
            one["num_images"] == two["num_images"], f"{two['num_images']} images on 2 GPUs, {one['num_images']} on 1"
        )
        differ = [k for k, v in one.items() if isinstance(v, float) and abs(v - two.get(k, float("nan"))) > 1e-3]
        expect(not differ, f"metrics differ between 1 and 2 GPUs: {differ}")
        return f"2 ranks: {two['num_images']} images, metrics equal to one process's"

    # ------------------------------------------------------------------ 8
    def timing_table(self) -> str:
        from bench_network import MODEL_CONFIG, SceneNetwork, build_full_model, camera_k, make_scene  # noqa: PLC0415

        from panoptic_depthlab_ros.metadata import cityscapes_metadata  # noqa: PLC0415
        from panoptic_depthlab_ros.predictor import Predictor  # noqa: PLC0415

        model = build_full_model(self.device)
        rows: list[dict[str, Any]] = []
        for h, w in TIMING_SIZES:
            scene = {k: v.to(self.device) for k, v in make_scene(h, w, num_objects=20).items()}
            image = np.full((h, w, 3), 128, dtype=np.uint8)  # the network's cost does not depend on it
            for name in ("fp32", "fp16", "compiled", "tensorrt"):
                try:
                    network = (
                        self._tensorrt_network(model, scene, h, w) if name == "tensorrt" else SceneNetwork(model, scene)
                    )
                except NotInstalledError as exc:
                    rows.append({"size": f"{h}x{w}", "variant": name, "skipped": str(exc)})
                    continue
                torch._dynamo.reset()
                predictor = Predictor(
                    network,
                    model_config=MODEL_CONFIG,
                    classes=cityscapes_metadata(),
                    device=self.device,
                    fp16=name in ("fp16", "compiled"),
                    compile_mode="reduce-overhead" if name == "compiled" else None,
                    max_pixels=0,
                )
                predictor.warm_up(h, w)
                predictor.warm_up(h, w)
                times: dict[str, list[float]] = {"network": [], "post": [], "total": []}
                k = camera_k(h, w)
                for _ in range(TIMING_REPEAT):
                    t = predictor.predict(image, camera_k=k).timings
                    times["network"].append(t["network"])
                    times["post"].append(t["fusion"] + t["segment_depth"])
                    times["total"].append(t["total"])
                median = {key: statistics.median(v) for key, v in times.items()}
                rows.append({"size": f"{h}x{w}", "variant": name, **median, "fps": 1 / median["total"]})
                predictor.release()
        self.report.timings = rows
        print(format_table(rows, torch.cuda.get_device_name(self.device)), flush=True)
        return "table above (the goal is not a pass/fail)"

    def _tensorrt_network(self, model: torch.nn.Module, scene: dict[str, Any], h: int, w: int) -> Any:
        """The full model exported at ``h`` x ``w`` in TensorRT (fp16 engine), outputs steered as SceneNetwork's."""
        try:
            import onnxruntime as ort  # noqa: PLC0415
        except ImportError:
            raise NotInstalledError("onnxruntime is not installed") from None
        from bench_network import MODEL_CONFIG, SceneNetwork  # noqa: PLC0415

        from panoptic_depthlab_ros.checkpoint import save_checkpoint  # noqa: PLC0415
        from panoptic_depthlab_ros.export import export_model  # noqa: PLC0415
        from panoptic_depthlab_ros.fusion import PostprocessConfig  # noqa: PLC0415
        from panoptic_depthlab_ros.metadata import cityscapes_metadata  # noqa: PLC0415
        from panoptic_depthlab_ros.onnx_backend import TENSORRT_PROVIDER, OnnxNetwork, ProviderSettings  # noqa: PLC0415

        if TENSORRT_PROVIDER not in ort.get_available_providers():
            raise NotInstalledError("this onnxruntime has no TensorRT provider")
        checkpoint = self.scratch / "full.safetensors"
        if not checkpoint.exists():
            save_checkpoint(
                checkpoint,
                model,
                model_config=MODEL_CONFIG,
                classes=cityscapes_metadata(),
                postprocess=PostprocessConfig(),
            )
        export = self.scratch / f"full_{h}x{w}.onnx"
        if not export.exists():
            export_model(checkpoint, export, height=h, width=w)
        settings = ProviderSettings(tensorrt="on", tensorrt_fp16=True, engine_cache=self.scratch / "engines")
        onnx = OnnxNetwork(export, device=self.device, threads=1, providers=settings, fixed_size=(h, w))
        steer = SceneNetwork(None, scene)

        def network(x: torch.Tensor) -> dict[str, torch.Tensor]:
            return steer.steer(onnx(x))

        network.backend = "onnxruntime"  # type: ignore[attr-defined]
        return network


def format_table(rows: list[dict[str, Any]], gpu: str) -> str:
    """The timing table, and the goal's verdict for this GPU."""
    lines = [
        f"times on {gpu} (median of {TIMING_REPEAT} frames, ms)",
        f"{'size':>10} {'variant':>9} {'network':>8} {'post':>7} {'end2end':>8} {'fps':>6}",
    ]
    for r in rows:
        if "skipped" in r:
            lines.append(f"{r['size']:>10} {r['variant']:>9}  skipped: {r['skipped']}")
            continue
        lines.append(
            f"{r['size']:>10} {r['variant']:>9} {r['network'] * 1e3:8.1f} {r['post'] * 1e3:7.1f}"
            f" {r['total'] * 1e3:8.1f} {r['fps']:6.1f}"
        )
    best = max((r["fps"] for r in rows if r.get("size") == "1024x2048" and "fps" in r), default=0.0)
    verdict = "met" if best >= GOAL_FPS else "not met"
    lines.append(
        f"goal: >= {GOAL_FPS:.0f} fps end to end at 1024x2048 on an H100-class GPU; best here {best:.1f} fps:"
        f" {verdict} on this GPU"
    )
    return "\n".join(lines)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="the GPU to check (cuda or cuda:N)")
    parser.add_argument("--json", type=Path, help="also write every result and the timing table here")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (exports, engines, training runs)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    if not torch.cuda.is_available():
        print(
            f"gpu_check: no CUDA GPU here (torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}):"
            " nothing to check"
        )
        return 2
    device = torch.device(args.device)
    if device.type != "cuda":
        print(f"gpu_check: --device must be cuda or cuda:N, got {args.device}")
        return 2
    device = torch.device("cuda", device.index or 0)
    torch.cuda.set_device(device)
    report = Report()
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        scratch = args.keep or Path(tmp)
        scratch.mkdir(parents=True, exist_ok=True)
        try:
            check = GpuCheck(device, scratch, report)
        except Exception as exc:  # noqa: BLE001 - nothing else can run: one line, exit 1
            print(f"FAIL  set-up (bundled model, demo bag frames): {type(exc).__name__}: {exc}")
            return 1
        report.run("environment", check.environment)
        for precision in ("fp32", "fp16"):
            report.run(f"bundled model, CUDA {precision} against the CPU", partial(check.against_cpu, precision))
        report.run("fusion and segment statistics, same outputs on CUDA and CPU", check.fusion_exact)
        for mode in ("default", "reduce-overhead", "max-autotune"):
            for flip in (False, True):
                name = f"compile_mode {mode}{' + flip_average' if flip else ''}"
                report.run(name, partial(check.compiled, mode, flip))
        report.run("ONNX export on the CUDA provider", partial(check.onnx, "cuda"))
        report.run("ONNX export on TensorRT", partial(check.onnx, "tensorrt"))
        report.run("node configure / cleanup GPU memory", check.node_memory)
        report.run("training: CUDA AMP, resume, AMP off then on", check.training)
        report.run("torchrun evaluate on 2 GPUs", check.torchrun_evaluate)
        report.run("times", check.timing_table)
    if args.json:
        args.json.write_text(json.dumps({"results": report.results, "timings": report.timings}, indent=2))
    skipped = [r for r in report.results if r["status"] == "SKIP"]
    if skipped:
        print("not confirmed here: " + "; ".join(f"{r['check']} ({r['detail']})" for r in skipped))
    if report.failed:
        print(f"{len(report.failed)} check(s) FAILED: " + "; ".join(r["check"] for r in report.failed))
        return 1
    print(f"all {len(report.results) - len(skipped)} checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
