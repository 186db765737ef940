"""The fastest CPU inference, INT8 and the runtimes, with accuracy, in one run per part.

    .venv/bin/python bench/bench_cpu.py [--part speed,accuracy,choice] [--size 512x1024] [--repeat 3]
        [--demo-repeat 3] [--threads 0] [--calibration-frames 32] [--data DIR] [--select-data DIR]
        [--only NAME ...] [--baseline CHECKOUT]

``speed``: the full-size R-52 three-branch model (Detectron2's Cityscapes R-52 with the
depth branch, as bench_backends.py builds it; random weights: time does not depend on
them) at ``--size``, end to end (``Predictor.predict``: preprocessing, network, fusion,
segment depth) in every backend, each in its own process, interleaved round by round so that
load changes hit all alike: torch fp32 with the depth branch skipped (the two-branch work
Detectron2's Panoptic-DeepLab does), torch fp32, onnxruntime fp32 / INT8, OpenVINO fp32 /
INT8. Then the bundled model on the 30 frames of the demo bag (192x384; 288x576 at the
network), frames per second end to end in each backend, INT8 calibrated on the demo bag.

``--only NAME`` (repeatable) runs only those speed variants (names as printed); ``--baseline`` runs
each of them a second time from another checkout of this repository (its bench and its code,
e.g. ``git archive main | tar -x -C /tmp/base``), interleaved with the others: before / after
figures of a change from one run.

``accuracy``: the bundled model on the held-out synthetic split (60 frames, seed 1,
192x384, rendered into a temporary folder unless ``--data``), each backend in its own
process (peak memory its own): PQ, mIoU, AbsRel, DPQ, end-to-end time per frame, peak
RSS. The INT8 export is calibrated on 32 frames of the model's own training split (seed
1), never on held-out frames.

``choice``: how the INT8 settings were chosen (calibration method, parts kept float), on
the seed-2 split that README's choices were made on (``--select-data``), never the
held-out one: PQ and AbsRel of each variant in onnxruntime and OpenVINO. About 10 minutes.

Each part prints the machine's load average before and after: the figures are ratios of
one run, but absolute times on a shared machine are not.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the checkout, not an install
sys.path.insert(0, str(REPO / "training"))

from bench_backends import r52_checkpoint, street_image  # noqa: E402 - the same model and picture

from panoptic_depthlab_ros import backends, native  # noqa: E402
from panoptic_depthlab_ros.calibration import read_calibration_frames  # noqa: E402
from panoptic_depthlab_ros.checkpoint import bundled_checkpoint, load_checkpoint  # noqa: E402
from panoptic_depthlab_ros.export import export_model  # noqa: E402
from panoptic_depthlab_ros.predictor import Predictor  # noqa: E402
from panoptic_depthlab_ros.preprocess import network_size_for  # noqa: E402
from panoptic_depthlab_ros.quantize import KEEP_FLOAT, Int8Settings  # noqa: E402

DEMO_BAG = REPO / "data" / "demo_bag"
STAGES = ("preprocess", "network", "fusion", "segment_depth", "total")
SETTLE_S = 0.2  # pause after each timed run (see interleaved)
# (name, file kind, backend): "fp32" / "int8" pick the export, "two-branch" the torch model without depth.
VARIANTS = (
    ("torch fp32, two-branch", "two-branch", "torch"),
    ("torch fp32", "checkpoint", "torch"),
    ("onnxruntime fp32", "fp32", "onnxruntime"),
    ("onnxruntime INT8", "int8", "onnxruntime"),
    ("openvino fp32", "fp32", "openvino"),
    ("openvino fp32 as bf16", "fp32", "openvino-bf16"),  # OpenVINO's own default on AMX / AVX512-BF16 CPUs
    ("openvino INT8", "int8", "openvino"),
    ("openvino INT8, torch ops", "int8", "openvino"),  # without the compiled passes (native.py)
)
# Variants run with PANOPTIC_DEPTHLAB_NATIVE=0: the post-processing as torch ops.
TORCH_POSTPROCESSING = ("openvino INT8, torch ops",)


def load() -> str:
    """The 1, 5 and 15 minute load averages."""
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def exports(ckpt: Path, folder: Path, frame_size: tuple[int, int], settings: Int8Settings) -> dict[str, Path]:
    """The checkpoint exported at the network's size for frames of ``frame_size``: fp32 and INT8."""
    h, w = network_size_for(*frame_size, 0, load_checkpoint(ckpt).model_config.input_scale)
    h, w = -(-h // 32) * 32, -(-w // 32) * 32
    paths = {"fp32": folder / f"{ckpt.stem}.onnx", "int8": folder / f"{ckpt.stem}.int8.onnx"}
    export_model(ckpt, paths["fp32"], height=h, width=w)
    t0 = time.perf_counter()
    export_model(ckpt, paths["int8"], height=h, width=w, int8=settings)
    print(f"  INT8 export of {ckpt.name} at {h}x{w}: {time.perf_counter() - t0:.0f} s ({settings.frames} frames)")
    return paths


def build(variant: str, ckpt: Path, files: dict[str, Path]) -> Predictor:
    """The predictor of one of :data:`VARIANTS` for ``ckpt`` and its exports."""
    _, kind, backend = next(v for v in VARIANTS if v[0] == variant)
    if kind == "two-branch":  # Detectron2's work: our network skips an untrained depth branch
        c = load_checkpoint(ckpt)
        config = c.model_config.with_(depth_trained=False)
        return Predictor(c.build(), model_config=config, classes=c.classes, postprocess=c.postprocess)
    if backend == "openvino-bf16":
        backends.OPENVINO_PRECISION = "bf16"  # this child runs this one variant
        backend = "openvino"
    return Predictor.from_checkpoint(files.get(kind, ckpt), "cpu", backend=backend)


def peak_mb() -> float:
    """This process's peak resident memory in MB (VmHWM)."""
    status = Path("/proc/self/status").read_text().splitlines()
    return next((int(ln.split()[1]) / 1024 for ln in status if ln.startswith("VmHWM:")), float("nan"))


def serve(args: argparse.Namespace) -> None:
    """Child process: one variant; answers ``run I`` on stdin with the timings of frame I (JSON lines)."""
    images = frames_for(args.images)
    files = {"fp32": args.model, "int8": args.model}
    pred = build(args.variant, args.checkpoint, files)
    pred.predict(images[0])  # warm-up: first-run allocations, OpenVINO's and ORT's lazy set-up
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if not line.startswith("run"):
            break
        timings = pred.predict(images[int(line.split()[1])]).timings
        print(json.dumps({**timings, "mb": peak_mb()}), flush=True)


def frames_for(spec: str) -> list[np.ndarray]:
    """``street:HxW`` (one synthetic street picture) or ``bag:PATH`` (every frame of a bag)."""
    kind, _, what = spec.partition(":")
    if kind == "street":
        h, w = map(int, what.split("x"))
        return [street_image(h, w)]
    return read_calibration_frames(Path(what), 100_000).frames


BASELINE = " (baseline)"  # the name suffix of a variant run from the --baseline checkout


def interleaved(
    ckpt: Path, files: dict[str, Path], images: str, count: int, rounds: int, args: argparse.Namespace
) -> dict[str, dict[str, float]]:
    """Median stage times and peak memory per variant, each variant in its own process.

    Every round sends each frame to every variant in turn (load changes hit all alike),
    starting with another variant each round, with a pause after each run so that no
    thread pool still spinning from one run takes the cores from the next. ``args``:
    ``only`` (None: every variant), ``baseline`` (a checkout that runs each variant once more),
    ``threads``.
    """
    children = {}
    chosen = [v for v in VARIANTS if args.only is None or v[0] in args.only]
    runs_from = [(name, kind, Path(__file__)) for name, kind, _ in chosen]
    if args.baseline is not None:
        runs_from += [(name + BASELINE, kind, args.baseline / "bench" / "bench_cpu.py") for name, kind, _ in chosen]
    for label, kind, script in runs_from:
        name = label.removesuffix(BASELINE)
        cmd = [sys.executable, str(script), "--serve", "--variant", name, "--checkpoint", str(ckpt)]
        cmd += ["--model", str(files.get(kind, ckpt)), "--images", images, "--threads", str(args.threads)]
        env = {**os.environ, **({native.ENV_SWITCH: "0"} if name in TORCH_POSTPROCESSING else {})}
        child = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        assert child.stdout is not None
        json.loads(child.stdout.readline())  # ready: one at a time, so loading does not overlap
        children[label] = child
    runs: dict[str, list[dict[str, float]]] = {n: [] for n in children}
    names = list(children)
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]  # each round starts with another variant
        for i in range(count):
            for name in order:
                child = children[name]
                assert child.stdin is not None and child.stdout is not None
                child.stdin.write(f"run {i}\n")
                child.stdin.flush()
                runs[name].append(json.loads(child.stdout.readline()))
                time.sleep(SETTLE_S)
    for child in children.values():
        assert child.stdin is not None
        child.stdin.write("quit\n")
        child.stdin.close()
        child.wait()
    return {n: {**{s: statistics.median(t[s] for t in r) for s in STAGES}, "mb": r[-1]["mb"]} for n, r in runs.items()}


def share(t: dict[str, float]) -> float:
    """Fusion + segment depth as a share of end to end (medians of the stages)."""
    return (t["fusion"] + t["segment_depth"]) / t["total"]


def speed_part(args: argparse.Namespace, tmp: Path) -> None:
    h, w = map(int, args.size.split("x"))
    print(f"== speed: R-52 three-branch at {h}x{w}, {args.repeat} interleaved rounds; load before: {load()}")
    calib = tmp / "street"
    calib.mkdir()
    import cv2

    for i in range(args.r52_calibration_frames):
        cv2.imwrite(str(calib / f"{i}.png"), street_image(h, w, seed=i + 1))
    ckpt = r52_checkpoint(tmp)
    files = exports(ckpt, tmp, (h, w), Int8Settings(calib, frames=args.r52_calibration_frames))
    med = interleaved(ckpt, files, f"street:{h}x{w}", 1, args.repeat, args)
    two, three = med.get("torch fp32, two-branch", {}).get("total"), med.get("torch fp32", {}).get("total")
    columns = f"{'vs torch':>10}{'vs 2-branch':>12}{'share':>8}{'peak MB':>9}"
    print(f"\n{'variant':32}" + "".join(f"{s:>14}" for s in STAGES) + columns)
    for name, t in med.items():
        row = f"{name:32}" + "".join(f"{t[s]:14.4f}" for s in STAGES)
        row += f"{t['total'] / three:9.2f}x" if three else f"{'':>10}"
        row += f"{t['total'] / two:11.2f}x" if two else f"{'':>12}"
        print(row + f"{100 * share(t):7.1f}%{t['mb']:9.0f}")
    candidates = [
        n for n in med if n != "torch fp32, two-branch" and BASELINE not in n and n not in TORCH_POSTPROCESSING
    ]
    best = min(candidates, key=lambda n: med[n]["total"])
    b = med[best]
    print(f"\nfastest: {best}, {b['total']:.3f} s end to end ({1 / b['total']:.2f} FPS); load after: {load()}")
    if two and three:
        met = "met" if b["total"] / two <= 0.6 else "NOT met"
        ratio = f"{b['total'] / two:.2f}x ({met}); {b['total'] / three:.2f}x torch three-branch"
        print(f"  goal <= 0.6x torch two-branch: {ratio}")
    verdict = "met" if share(b) < 0.05 else "NOT met"
    print(f"  goal fusion + segment depth < 5 % of end to end: {100 * share(b):.1f} % ({verdict})")

    print(
        f"\n== speed: the bundled model on the demo bag, {args.demo_repeat} interleaved rounds; load before: {load()}"
    )
    count = len(frames_for(f"bag:{DEMO_BAG}"))
    ckpt = bundled_checkpoint()
    files = exports(ckpt, tmp, (192, 384), Int8Settings(DEMO_BAG, frames=args.calibration_frames))
    med = interleaved(ckpt, files, f"bag:{DEMO_BAG}", count, args.demo_repeat, args)
    base = med.get("torch fp32", {}).get("total")
    columns = f"{'FPS':>8}{'speed-up':>10}{'share':>8}{'peak MB':>9}"
    print(f"\n{'variant':32}" + "".join(f"{s:>14}" for s in STAGES) + columns)
    for name, t in med.items():
        row = f"{name:32}" + "".join(f"{t[s]:14.4f}" for s in STAGES) + f"{1 / t['total']:8.1f}"
        row += f"{base / t['total']:9.2f}x" if base else f"{'':>10}"
        print(row + f"{100 * share(t):7.1f}%{t['mb']:9.0f}")
    print(f"load after: {load()}")


def accuracy_child(args: argparse.Namespace) -> None:
    """Child process: one backend on the held-out split; prints a JSON line."""
    from panoptic_depthlab_training.evaluate import evaluate_split, flat_metrics

    pred = build(args.variant, args.checkpoint, {"fp32": args.model, "int8": args.model})
    totals: list[float] = []
    predict = pred.predict

    def timed(image: np.ndarray, **kw: object):  # noqa: ANN202 - Predictor.predict's signature
        result = predict(image, **kw)  # type: ignore[arg-type]
        totals.append(result.timings["total"])
        return result

    pred.predict = timed  # type: ignore[method-assign]
    summary = evaluate_split(
        pred, data_root=args.data, split="val", max_depth=pred.model_config.max_depth, progress=False
    )
    m = flat_metrics(summary)
    print(
        json.dumps(
            {**{k: m[k] for k in ("PQ", "mIoU", "AbsRel", "DPQ")}, "s": statistics.median(totals), "mb": peak_mb()}
        )
    )


def run_child(variant: str, ckpt: Path, model: Path, data: Path, threads: int) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", "--variant", variant, "--checkpoint", str(ckpt), "--model", str(model)]
    cmd += ["--data", str(data), "--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def synth(folder: Path, *, train: int, val: int, seed: int) -> Path:
    from panoptic_depthlab_training.synth import generate_dataset

    generate_dataset(folder, train=train, val=val, seed=seed, height=192, width=384, progress=False)
    return folder


def accuracy_part(args: argparse.Namespace, tmp: Path) -> None:
    print(f"== accuracy: the bundled model on the held-out synthetic split; load before: {load()}")
    data = args.data or synth(tmp / "heldout", train=0, val=60, seed=1)
    calib = synth(tmp / "own_train", train=args.calibration_frames, val=0, seed=1) / "leftImg8bit" / "train"
    ckpt = bundled_checkpoint()
    files = exports(ckpt, tmp, (192, 384), Int8Settings(calib, frames=args.calibration_frames))
    rows = {}
    for name, kind, _ in VARIANTS[1:]:
        rows[name] = run_child(name, ckpt, files.get(kind, ckpt), data, args.threads)
        print(f"  {name}: done ({load()})", flush=True)
    base = rows["torch fp32"]
    print("\n| backend | PQ | mIoU | AbsRel | DPQ | end to end per frame | vs torch | peak RSS |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, r in rows.items():
        print(
            f"| {name} | {r['PQ']:.1f} | {r['mIoU']:.1f} | {r['AbsRel']:.4f} | {r['DPQ']:.1f} | {1000 * r['s']:.0f} ms"
            f" | {base['s'] / r['s']:.2f}x | {r['mb']:.0f} MB |"
        )
    for name in ("onnxruntime INT8", "openvino INT8"):
        d_pq, d_rel = base["PQ"] - rows[name]["PQ"], rows[name]["AbsRel"] - base["AbsRel"]
        ok = d_pq <= 1.0 and d_rel <= 0.005
        print(f"{name}: PQ -{d_pq:.2f}, AbsRel +{d_rel:.4f} (goal <= 1.0 and <= 0.005: {'met' if ok else 'NOT met'})")
    print(f"load after: {load()}")


def choice_part(args: argparse.Namespace, tmp: Path) -> None:
    print(f"== choice: INT8 settings on the seed-2 split (not the held-out one); load before: {load()}")
    data = args.select_data or synth(tmp / "select", train=0, val=60, seed=2)
    calib = synth(tmp / "own_train_c", train=args.calibration_frames, val=0, seed=1) / "leftImg8bit" / "train"
    ckpt = bundled_checkpoint()
    variants: dict[str, Callable[[], Int8Settings]] = {
        f"{method}, predictors float": lambda m=method: Int8Settings(calib, args.calibration_frames, m)  # type: ignore[misc]
        for method in ("minmax", "entropy", "percentile")
    }
    variants["entropy, all quantized but the outputs"] = lambda: Int8Settings(
        calib, args.calibration_frames, "entropy", ()
    )
    variants["entropy, + depth head float"] = lambda: Int8Settings(
        calib, args.calibration_frames, "entropy", (*KEEP_FLOAT, "depth_head.head")
    )
    variants["entropy, + center head float"] = lambda: Int8Settings(
        calib, args.calibration_frames, "entropy", (*KEEP_FLOAT, "ins_embed_head.center_head")
    )
    fp32 = tmp / "choice.onnx"
    export_model(ckpt, fp32, height=288, width=576)
    base = run_child("onnxruntime fp32", ckpt, fp32, data, args.threads)
    print(f"\nfp32: PQ {base['PQ']:.2f}, AbsRel {base['AbsRel']:.4f}")
    print("| variant | PQ ORT | PQ OpenVINO | AbsRel ORT | AbsRel OpenVINO |")
    print("| --- | --- | --- | --- | --- |")
    for i, (name, settings) in enumerate(variants.items()):
        path = tmp / f"choice_{i}.onnx"
        export_model(ckpt, path, height=288, width=576, int8=settings())
        a = run_child("onnxruntime INT8", ckpt, path, data, args.threads)
        b = run_child("openvino INT8", ckpt, path, data, args.threads)
        print(f"| {name} | {a['PQ']:.2f} | {b['PQ']:.2f} | {a['AbsRel']:.4f} | {b['AbsRel']:.4f} |", flush=True)
    print(f"load after: {load()}")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", default="speed,accuracy", help="comma-separated: speed, accuracy, choice")
    p.add_argument("--size", default="512x1024", help="HxW of the R-52 frames")
    p.add_argument("--repeat", type=int, default=3, help="interleaved rounds of the R-52")
    p.add_argument("--demo-repeat", type=int, default=3, help="interleaved rounds over the demo bag's 30 frames")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads of every backend (0: torch's default)")
    p.add_argument("--calibration-frames", type=int, default=32, help="INT8 calibration frames (bundled model)")
    p.add_argument("--r52-calibration-frames", type=int, default=4, help="INT8 calibration frames (R-52: time only)")
    p.add_argument("--only", action="append", metavar="NAME", help="speed: run only this variant (repeatable)")
    p.add_argument("--baseline", type=Path, help="speed: a checkout that runs each variant once more, interleaved")
    p.add_argument("--data", type=Path, help="held-out split (default: rendered, seed 1)")
    p.add_argument("--select-data", type=Path, help="the split choices are made on (default: rendered, seed 2)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--checkpoint", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--variant", help=argparse.SUPPRESS)
    p.add_argument("--images", help=argparse.SUPPRESS)
    return p


def main(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        accuracy_child(args)
        return 0
    if args.serve:
        serve(args)
        return 0
    import onnxruntime
    import openvino

    print(
        f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, openvino {openvino.__version__};"
        f" {torch.get_num_threads()} intra-op threads; {os.cpu_count()} CPUs"
    )
    parts = args.part.split(",")
    with tempfile.TemporaryDirectory(prefix="bench_cpu_") as tmp:
        for part, run in (("speed", speed_part), ("accuracy", accuracy_part), ("choice", choice_part)):
            if part in parts:
                folder = Path(tmp) / part
                folder.mkdir()
                run(args, folder)
                print()
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
