"""How to run Detectron2 weights on frames whose size Detectron2 refuses.

    .venv/bin/python bench/bench_pooling.py [--part time|accuracy|both]
        [--sizes 480x640,720x1280,1080x1920,1200x1920] [--rounds 3] [--frames 60] [--data DIR]
        [--num-threads 2]

Detectron2's ASPP image pooling averages res5 over a window of training crop / 16 (32x64 for
the Cityscapes configs) and refuses frames whose stride-16 feature is not a multiple of it.
Four ways to take any frame, each identical to Detectron2 wherever it accepts the size except
``global``:

* ``clip``: Detectron2's own pooling without the refusal (the window clipped to the feature
  when the feature is smaller): the product's default.
* ``pad``: pad the frame (bottom/right, mean colour) up to the next accepted size, crop the outputs.
* ``resize``: resize the frame to the nearest accepted size and the outputs back.
* ``global``: one average over the whole feature (DeepLabV3's original image pooling).

**Time** (``--part time``): the full-size R-52 network (Detectron2's
``panoptic_deeplab_R_52_os16_mg124_poly_90k_bs32_crop_512_1024``, from
test/fixtures/detectron2/full_config_R52_os16.yaml, plus the depth branch; random weights,
BatchNorm folded as the predictor runs it) on 1024x2048 and on each camera size: every network
input size a strategy needs gets one untimed pass (oneDNN prepares kernels per shape), then
``--rounds`` timed passes alternating over the sizes; the fastest counts, in CPU seconds of the
process (wall time moves with other jobs on a shared machine; idle OpenMP threads sleep).
Also the image-pooling step alone at each res5 size.

**Accuracy** (``--part accuracy``): there are no Detectron2 Cityscapes weights here, so the
bundled demo model (trained on synthetic scenes) stands in, in Detectron2's pooling regime: a
window of its last training crop / 16 (224x448 -> 14x28; at its training crops that window is
the global pool it was trained with, as Detectron2's 32x64 window is at its 512x1024 crops).
Held-out synthetic frames (seed 1, 192x384, as the demo model's evaluation) run at input
scales whose stride-16 feature relates to the window as each camera's does to 32x64 at full
size: 7/3 (448x896 network input, 2x the window: accepted, like 1024x2048), 2.25 (feature
28x54, like 1080x1920's 68x120), 1.5 (18x36, like 720x1280's 45x80) and 1 (12x24, smaller
than the window, like 480x640's 30x40). Each strategy is scored against the ground truth (PQ,
mIoU, depth AbsRel); at the accepted scale ``global`` is also compared with the exact output.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning: the CPU time measured is then the work done.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor, nn  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "training"))

from panoptic_depthlab_ros.model import ModelConfig, PanopticDepthLab, aspp, build_model  # noqa: E402
from panoptic_depthlab_ros.model.fuse import fold_batchnorm  # noqa: E402

STRATEGIES = ("clip", "pad", "resize", "global")
R52_CONFIG = REPO / "test" / "fixtures" / "detectron2" / "full_config_R52_os16.yaml"
# Accuracy: input scales of the demo model and the full-size camera each one stands for.
DEMO_WINDOW = (14, 28)
DEMO_SCALES = ((7 / 3, "1024x2048 (accepted)"), (2.25, "1080x1920"), (1.5, "720x1280"), (1.0, "480x640"))


def feature_size(h: int, w: int) -> tuple[int, int]:
    """res5 size of an h x w input (stride 16)."""
    return aspp.feature_size(h, w, 16)


def accepted(h: int, w: int, window: tuple[int, int]) -> bool:
    """Whether Detectron2 runs this input size."""
    return aspp.detectron2_accepts(feature_size(h, w), window)


class ToAcceptedSize(nn.Module):
    """Run ``model`` on an input size Detectron2 accepts: ``target`` says which."""

    def __init__(self, model: nn.Module, window: tuple[int, int]) -> None:
        super().__init__()
        self.model, self.window = model, window

    def cells(self, n: int, k: int) -> int:
        """res5 cells of the accepted size for a res5 of ``n`` and a window of ``k``."""
        raise NotImplementedError

    def target(self, h: int, w: int) -> tuple[int, int]:
        (fh, fw), (kh, kw) = feature_size(h, w), self.window
        return self.cells(fh, kh) * 16, self.cells(fw, kw) * 16


class PadToWindow(ToAcceptedSize):
    """Pad the (normalised) input to the next size Detectron2 accepts; crop the outputs."""

    def cells(self, n: int, k: int) -> int:  # noqa: D102
        return max(1, math.ceil(n / k)) * k

    def forward(self, x: Tensor) -> dict[str, Tensor]:  # noqa: D102
        h, w = x.shape[-2:]
        if accepted(h, w, self.window):
            return self.model(x)
        th, tw = self.target(h, w)
        out = self.model(F.pad(x, (0, tw - w, 0, th - h)))
        return {k: v[..., :h, :w] for k, v in out.items()}


class ResizeToWindow(ToAcceptedSize):
    """Resize the input to the nearest size Detectron2 accepts and the outputs back."""

    def cells(self, n: int, k: int) -> int:  # noqa: D102
        return max(1, round(n / k)) * k

    def forward(self, x: Tensor) -> dict[str, Tensor]:  # noqa: D102
        h, w = x.shape[-2:]
        if accepted(h, w, self.window):
            return self.model(x)
        th, tw = self.target(h, w)
        out = self.model(F.interpolate(x, size=(th, tw), mode="bilinear", align_corners=False))
        back = {k: F.interpolate(v, size=(h, w), mode="bilinear", align_corners=False) for k, v in out.items()}
        back["offset"] = back["offset"] * torch.tensor([h / th, w / tw]).view(1, 2, 1, 1)
        # A frame enlarged by s looks s times nearer (see Predictor.depth_scale): undo it for the width.
        back["depth"] = back["depth"] * (tw / w)
        return back


def strategy_networks(model: PanopticDepthLab, config: ModelConfig) -> dict[str, nn.Module]:
    """The four strategies around one set of weights (``model`` built with ``config``)."""
    window = config.aspp_pool_kernel_size
    assert window is not None
    clip = build_model(config.with_(aspp_strict_pool_size=False))
    clip.load_state_dict(model.state_dict())
    glob = build_model(config.with_(aspp_pool_kernel_size=None, aspp_strict_pool_size=False))
    glob.load_state_dict(model.state_dict())
    clip, glob = clip.eval(), glob.eval()
    return {
        "clip": clip,
        "pad": PadToWindow(clip, window).eval(),
        "resize": ResizeToWindow(clip, window).eval(),
        "global": glob,
    }


def network_input(name: str, net: nn.Module, h: int, w: int) -> tuple[int, int]:
    """The size the network itself runs at under a strategy."""
    if isinstance(net, ToAcceptedSize) and not accepted(h, w, net.window):
        return net.target(h, w)
    return h, w


# ----------------------------------------------------------------------------- time
def time_part(sizes: list[tuple[int, int]], rounds: int) -> None:
    config = ModelConfig.from_detectron2(R52_CONFIG)
    window = config.aspp_pool_kernel_size
    assert window == (32, 64)
    torch.manual_seed(0)
    model = build_model(config).eval()
    nets = {k: fold_batchnorm(v) for k, v in strategy_networks(model, config).items()}
    # clip, pad and resize run the same network once the input size is fixed: each network
    # input size is timed once for the windowed pooling and once for global pooling.
    jobs: dict[tuple[str, int, int], nn.Module] = {("window", 1024, 2048): nets["clip"]}
    for h, w in sizes:
        for name in STRATEGIES:
            size = network_input(name, nets[name], h, w)
            kind = "global" if name == "global" else "window"
            jobs[(kind, *size)] = nets["global" if kind == "global" else "clip"]
    # Wall time moves with the other jobs on a shared machine; the CPU time the process spends
    # (both threads; idle OpenMP threads sleep, see OMP_WAIT_POLICY above) is the work itself.
    seconds: dict[tuple[str, int, int], list[float]] = {key: [] for key in jobs}
    cpu: dict[tuple[str, int, int], list[float]] = {key: [] for key in jobs}
    print(f"full-size R-52 + depth, random weights, BatchNorm folded, torch threads {torch.get_num_threads()}")
    with torch.inference_mode():
        for key, net in jobs.items():  # oneDNN prepares its kernels per input shape on the first pass
            net(torch.randn(1, 3, key[1], key[2]))
        for r in range(rounds):  # rounds alternate the sizes, so load changes hit all of them
            for key, net in jobs.items():
                x = torch.randn(1, 3, key[1], key[2])
                t, c = time.perf_counter(), time.process_time()
                net(x)
                seconds[key].append(time.perf_counter() - t)
                cpu[key].append(time.process_time() - c)
            print(f"  round {r + 1}/{rounds} done, load average {os.getloadavg()[0]:.2f}", flush=True)

    def best(name: str, h: int, w: int, of: dict[tuple[str, int, int], list[float]]) -> float:
        size = network_input(name, nets[name], h, w)
        return min(of[("global" if name == "global" else "window", *size)])

    print(f"\nfastest of {rounds} passes each; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print(
        f"1024x2048 (Detectron2 accepts it; clip, pad and resize are its exact outputs):"
        f" {best('clip', 1024, 2048, cpu):.1f} CPU s, {best('clip', 1024, 2048, seconds):.1f} s wall"
    )
    print("CPU seconds per frame (ratio to clip; network input size):")
    print("| frame | res5 | Detectron2 | " + " | ".join(STRATEGIES) + " | clip wall |")
    print("|---|---|---|" + "---|" * len(STRATEGIES) + "---|")
    for h, w in sizes:
        fh, fw = feature_size(h, w)
        verdict = "accepts" if accepted(h, w, window) else "refuses"
        clip = best("clip", h, w, cpu)
        cells = []
        for name in STRATEGIES:
            size = "x".join(map(str, network_input(name, nets[name], h, w)))
            cells.append(f"{best(name, h, w, cpu):.1f} ({best(name, h, w, cpu) / clip:.2f}x, {size})")
        wall = best("clip", h, w, seconds)
        print(f"| {h}x{w} | {fh}x{fw} | {verdict} | " + " | ".join(cells) + f" | {wall:.1f} s |")
    print("\nASPP image pooling alone (3 branches, 2048 channels, fastest of 3), CPU ms:")
    print("| frame | res5 | Detectron2's AvgPool2d | ours (two 1-D averages) | global |")
    print("|---|---|---|---|---|")
    for h, w in [(1024, 2048), *sizes]:
        fh, fw = feature_size(h, w)
        x = torch.randn(1, 2048, fh, fw)
        kh, kw = min(window[0], fh), min(window[1], fw)
        ops: dict[str, Callable[[], Tensor]] = {
            "direct": partial(F.avg_pool2d, x, (kh, kw), stride=1),
            "ours": partial(aspp.box_average, x, kh, kw),
            "global": partial(F.adaptive_avg_pool2d, x, 1),
        }
        ms = {}
        for name, op in ops.items():
            times = []
            for _ in range(3):
                t = time.process_time()
                for _ in range(3):  # the three branches
                    op()
                times.append(time.process_time() - t)
            ms[name] = 1e3 * min(times)
        print(f"| {h}x{w} | {fh}x{fw} | {ms['direct']:.0f} | {ms['ours']:.0f} | {ms['global']:.0f} |")


# ----------------------------------------------------------------------------- accuracy
def accuracy_part(frames: int, data: Path | None) -> None:
    from panoptic_depthlab_ros.checkpoint import bundled_checkpoint, load_checkpoint
    from panoptic_depthlab_ros.predictor import Predictor
    from panoptic_depthlab_training.evaluate import evaluate_split
    from panoptic_depthlab_training.synth import generate_dataset

    tmp = None
    if data is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_pooling_")
        data = Path(tmp.name)
        print(f"rendering {frames} held-out synthetic frames (seed 1, 192x384) into {data} ...", flush=True)
        generate_dataset(data, train=0, val=frames, seed=1, height=192, width=384, progress=False)
    ckpt = load_checkpoint(bundled_checkpoint())
    config = ckpt.model_config.with_(aspp_pool_kernel_size=DEMO_WINDOW, aspp_strict_pool_size=True)
    model = build_model(config)
    model.load_state_dict(ckpt.state_dict)
    nets = strategy_networks(model.eval(), config)

    def predictor(name: str, scale: float) -> Predictor:
        return Predictor(
            nets[name],
            model_config=config.with_(aspp_strict_pool_size=False),
            classes=ckpt.classes,
            postprocess=ckpt.postprocess,
            input_scale=scale,
        )

    def score(name: str, scale: float) -> dict:
        return evaluate_split(
            predictor(name, scale),
            data_root=data,
            split="val",
            max_depth=config.max_depth,
            limit=frames,
            progress=False,
            distance_bands=None,
        )

    print(f"demo model with a {DEMO_WINDOW[0]}x{DEMO_WINDOW[1]} pooling window, {frames} held-out frames")
    print("| input scale (stands for) | res5 | Detectron2 | strategy | network input | PQ | mIoU | AbsRel |")
    print("|---|---|---|---|---|---|---|---|")
    for scale, stands_for in DEMO_SCALES:
        h, w = round(192 * scale), round(384 * scale)
        hp, wp = math.ceil(h / 32) * 32, math.ceil(w / 32) * 32  # the demo model pads to 32
        fh, fw = feature_size(hp, wp)
        verdict = "accepts" if accepted(hp, wp, DEMO_WINDOW) else "refuses"
        for name in STRATEGIES:
            summary = score(name, scale)
            size = "x".join(map(str, network_input(name, nets[name], hp, wp)))
            print(
                f"| {scale:.3g} ({stands_for}) | {fh}x{fw} | {verdict} | {name} | {size} | {summary['PQ']:.1f}"
                f" | {summary['mIoU']:.1f} | {summary['AbsRel']:.3f} |",
                flush=True,
            )
    # At the accepted size the exact output exists: how far is global pooling from it?
    scale = DEMO_SCALES[0][0]
    exact, glob = predictor("clip", scale), predictor("global", scale)
    strict = Predictor(
        model, model_config=config, classes=ckpt.classes, postprocess=ckpt.postprocess, input_scale=scale
    )
    from panoptic_depthlab_training.cityscapes import list_samples, load_sample

    same_pan, same_sem, rel = [], [], []
    for files in list_samples(data, "val")[:frames]:
        image = np.ascontiguousarray(load_sample(files).image[..., ::-1])
        a, b, s = exact.predict(image), glob.predict(image), strict.predict(image)
        assert np.array_equal(a.panoptic, s.panoptic), "clip differs from Detectron2's strict pooling where it accepts"
        same_pan.append(float((a.panoptic == b.panoptic).mean()))
        same_sem.append(float((a.semantic == b.semantic).mean()))
        rel.append(float(np.nanmean(np.abs(b.depth - a.depth) / a.depth)))
    print(
        f"\nat input scale {scale:.3g} (accepted): clip == pad == resize == Detectron2 (panoptic maps identical);"
        f" global pooling against them: panoptic ids equal on {100 * np.mean(same_pan):.1f} % of pixels, semantic"
        f" on {100 * np.mean(same_sem):.1f} %, depth differs by {100 * np.mean(rel):.2f} % (mean relative)"
    )
    if tmp is not None:
        tmp.cleanup()


def _sizes(text: str) -> list[tuple[int, int]]:
    return [(int(h), int(w)) for h, w in (s.split("x") for s in text.split(","))]


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=("time", "accuracy", "both"), default="both")
    p.add_argument("--sizes", type=_sizes, default=_sizes("480x640,720x1280,1080x1920,1200x1920"))
    p.add_argument("--rounds", type=int, default=3, help="timed passes per network input size (the fastest counts)")
    p.add_argument("--frames", type=int, default=60, help="held-out synthetic frames for the accuracy part")
    p.add_argument("--data", type=Path, help="a synthetic tree with a val split (default: rendered into a temp dir)")
    p.add_argument("--num-threads", type=int, default=2, help="torch threads (0 = torch default)")
    return p


def main(args: argparse.Namespace) -> int:
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores at start", flush=True)
    run: dict[str, Callable[[], None]] = {
        "accuracy": lambda: accuracy_part(args.frames, args.data),
        "time": lambda: time_part(args.sizes, args.rounds),
    }
    for part in ("accuracy", "time") if args.part == "both" else (args.part,):
        run[part]()
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
