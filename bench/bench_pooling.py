"""Issue 21 benchmark: how to run Detectron2 weights on frames whose size Detectron2 refuses.

    .venv/bin/python bench/bench_pooling.py [--part time|accuracy|both]
        [--sizes 480x640,720x1280,1080x1920,1200x1920] [--frames 60] [--data DIR] [--num-threads 2]

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
BatchNorm folded as the predictor runs it) on 1024x2048 and on each camera size, one timed
forward per strategy after a small warm-up; and the image-pooling step alone at each res5 size.

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
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "training"))

from panoptic_depthlab_ros.model import ModelConfig, PanopticDepthLab, build_model  # noqa: E402
from panoptic_depthlab_ros.model.fuse import fold_batchnorm  # noqa: E402

STRATEGIES = ("clip", "pad", "resize", "global")
R52_CONFIG = REPO / "test" / "fixtures" / "detectron2" / "full_config_R52_os16.yaml"
# Accuracy: input scales of the demo model and the full-size camera each one stands for.
DEMO_WINDOW = (14, 28)
DEMO_SCALES = ((7 / 3, "1024x2048 (accepted)"), (2.25, "1080x1920"), (1.5, "720x1280"), (1.0, "480x640"))


def feature_size(h: int, w: int, stride: int = 16) -> tuple[int, int]:
    """res5 size of an h x w input (each stride-2 stage rounds up)."""
    return math.ceil(h / stride), math.ceil(w / stride)


def accepted(h: int, w: int, window: tuple[int, int]) -> bool:
    """Whether Detectron2 runs this input size."""
    fh, fw = feature_size(h, w)
    return fh % window[0] == 0 and fw % window[1] == 0


class PadToWindow(nn.Module):
    """Pad the (normalised) input to the next size Detectron2 accepts; crop the outputs."""

    def __init__(self, model: nn.Module, window: tuple[int, int], stride: int = 16) -> None:
        super().__init__()
        self.model, self.window, self.stride = model, window, stride

    def target(self, h: int, w: int) -> tuple[int, int]:
        fh, fw = feature_size(h, w, self.stride)
        kh, kw = self.window
        return max(kh, math.ceil(fh / kh) * kh) * self.stride, max(kw, math.ceil(fw / kw) * kw) * self.stride

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        h, w = x.shape[-2:]
        th, tw = self.target(h, w)
        if (th, tw) == (h, w) or accepted(h, w, self.window):
            return self.model(x)
        out = self.model(F.pad(x, (0, tw - w, 0, th - h)))
        return {k: v[..., :h, :w] for k, v in out.items()}


class ResizeToWindow(nn.Module):
    """Resize the input to the nearest size Detectron2 accepts and the outputs back."""

    def __init__(self, model: nn.Module, window: tuple[int, int], stride: int = 16) -> None:
        super().__init__()
        self.model, self.window, self.stride = model, window, stride

    def target(self, h: int, w: int) -> tuple[int, int]:
        fh, fw = feature_size(h, w, self.stride)
        kh, kw = self.window
        return max(1, round(fh / kh)) * kh * self.stride, max(1, round(fw / kw)) * kw * self.stride

    def forward(self, x: Tensor) -> dict[str, Tensor]:
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
    if isinstance(net, (PadToWindow, ResizeToWindow)) and not accepted(h, w, net.window):
        return net.target(h, w)
    return h, w


# ----------------------------------------------------------------------------- time
def time_part(sizes: list[tuple[int, int]]) -> None:
    config = ModelConfig.from_detectron2(R52_CONFIG)
    window = config.aspp_pool_kernel_size
    assert window == (32, 64)
    torch.manual_seed(0)
    model = build_model(config).eval()
    nets = {k: fold_batchnorm(v) for k, v in strategy_networks(model, config).items()}
    with torch.inference_mode():
        nets["clip"](torch.zeros(1, 3, 256, 512))  # warm-up (allocator, kernels)
    cache: dict[tuple[str, int, int], float] = {}

    def forward_s(net: nn.Module, h: int, w: int) -> float:
        x = torch.randn(1, 3, h, w)
        with torch.inference_mode():
            t = time.perf_counter()
            net(x)
            return time.perf_counter() - t

    def timed(name: str, h: int, w: int) -> float:
        # clip, pad and resize run the same network once the input size is fixed: measure each size once.
        size = network_input(name, nets[name], h, w)
        key = ("global" if name == "global" else "window", *size)
        if key not in cache:
            cache[key] = forward_s(nets[name], h, w)
            print(f"    [{name}: network at {size[0]}x{size[1]}: {cache[key]:.1f} s]", flush=True)
        return cache[key]

    print(f"full-size R-52 + depth, random weights, BatchNorm folded, torch threads {torch.get_num_threads()}")
    ref = timed("clip", 1024, 2048)
    print(f"1024x2048 (Detectron2 accepts it; every strategy but global is exact): {ref:.1f} s")
    rows = []
    for h, w in sizes:
        fh, fw = feature_size(h, w)
        row = {name: timed(name, h, w) for name in STRATEGIES}
        rows.append((h, w, fh, fw, row))
    print(f"\nseconds per frame (ratio to clip); load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print("| frame | res5 | Detectron2 | " + " | ".join(STRATEGIES) + " |")
    print("|---|---|---|" + "---|" * len(STRATEGIES))
    for h, w, fh, fw, row in rows:
        verdict = "accepts" if accepted(h, w, window) else "refuses"
        cells = [
            f"{row[n]:.1f} s ({row[n] / row['clip']:.2f}x, {'x'.join(map(str, network_input(n, nets[n], h, w)))})"
            for n in STRATEGIES
        ]
        print(f"| {h}x{w} | {fh}x{fw} | {verdict} | " + " | ".join(cells) + " |")
    print("\nASPP image pooling alone (3 branches, 2048 channels), ms:")
    for h, w in [(1024, 2048), *sizes]:
        fh, fw = feature_size(h, w)
        x = torch.randn(1, 2048, fh, fw)
        t0 = time.perf_counter()
        for _ in range(3):
            F.avg_pool2d(x, (min(window[0], fh), min(window[1], fw)), stride=1)
        t1 = time.perf_counter()
        for _ in range(3):
            F.adaptive_avg_pool2d(x, 1)
        t2 = time.perf_counter()
        print(f"  {h}x{w} (res5 {fh}x{fw}): window {1e3 * (t1 - t0):.0f}, global {1e3 * (t2 - t1):.1f}")


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

    def score(name: str, scale: float) -> tuple[dict, float]:
        t = time.perf_counter()
        summary = evaluate_split(
            predictor(name, scale),
            data_root=data,
            split="val",
            max_depth=config.max_depth,
            limit=frames,
            progress=False,
            distance_bands=None,
        )
        return summary, (time.perf_counter() - t) / frames

    print(f"demo model with a {DEMO_WINDOW[0]}x{DEMO_WINDOW[1]} pooling window, {frames} held-out frames")
    print("| input scale (stands for) | res5 | Detectron2 | strategy | network input | PQ | mIoU | AbsRel | s/frame |")
    print("|---|---|---|---|---|---|---|---|---|")
    for scale, stands_for in DEMO_SCALES:
        h, w = round(192 * scale), round(384 * scale)
        hp, wp = math.ceil(h / 32) * 32, math.ceil(w / 32) * 32  # the demo model pads to 32
        fh, fw = feature_size(hp, wp)
        verdict = "accepts" if accepted(hp, wp, DEMO_WINDOW) else "refuses"
        for name in STRATEGIES:
            summary, sec = score(name, scale)
            size = "x".join(map(str, network_input(name, nets[name], hp, wp)))
            print(
                f"| {scale:.3g} ({stands_for}) | {fh}x{fw} | {verdict} | {name} | {size} | {summary['PQ']:.1f}"
                f" | {summary['mIoU']:.1f} | {summary['AbsRel']:.3f} | {sec:.2f} |",
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
        "time": lambda: time_part(args.sizes),
    }
    for part in ("accuracy", "time") if args.part == "both" else (args.part,):
        run[part]()
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
