"""The full-size R-52 model's forward vs fusion vs segment depth, in one run.

    .venv/bin/python bench/bench_network.py [--sizes 512x1024,1024x2048] [--repeat N]
                                            [--device cpu|cuda]

Prints, per image size: the end-to-end ``Predictor.predict`` stage times with the
full network (random weights, outputs steered to a synthetic street scene), peak
memory, the fusion + segment-depth share of end to end; the same post-processing
with ~20 and ~200 centers (network replaced by its outputs); and a Detectron2-style
dense fusion (``detectron2_style_fusion`` below) on the ~200-center scene for the
speedup.  Each configuration runs in its own subprocess so memory peaks do not mask
each other.  See bench/README.md for the method and the latest figures.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, not an install

from panoptic_depthlab_ros.fusion import PostprocessConfig, find_instance_centers, panoptic_fusion  # noqa: E402
from panoptic_depthlab_ros.metadata import cityscapes_metadata  # noqa: E402
from panoptic_depthlab_ros.model import ModelConfig, build_model  # noqa: E402
from panoptic_depthlab_ros.predictor import Predictor  # noqa: E402
from panoptic_depthlab_ros.segment_stats import segment_depth_statistics  # noqa: E402

# Cityscapes trainIds used to paint the synthetic street scene.
ROAD, SIDEWALK, BUILDING, POLE, SIGN, VEGETATION, SKY = 0, 1, 2, 5, 7, 8, 10
PERSON, RIDER, CAR, TRUCK, BUS, BICYCLE = 11, 12, 13, 14, 15, 18
# (trainId, width m, height m, share of objects): what a street scene is made of.
OBJECT_KINDS = (
    (CAR, 1.8, 1.5, 0.45),
    (PERSON, 0.6, 1.7, 0.3),
    (RIDER, 0.7, 1.8, 0.05),
    (BICYCLE, 0.6, 1.1, 0.1),
    (TRUCK, 2.5, 3.0, 0.05),
    (BUS, 2.6, 3.2, 0.05),
)
FOCAL = 1.1  # focal length / image width (Cityscapes: 2262 px for 2048 px)
CENTER_SIGMA = 8.0  # px, Panoptic-DeepLab's center target Gaussian
# make_scene arguments: ~20 objects (a busy Cityscapes frame; things ~25% of the
# pixels), and a crowd seen from higher up that fills the top-k: ~200 centers.
SCENES: dict[str, dict[str, Any]] = {
    "typical": {"num_objects": 20, "nearest": 10.0},
    "crowd": {"num_objects": 300, "nearest": 20.0, "camera_height": 8.0},
}
GOAL_SHARE, GOAL_SECONDS, GOAL_SIZE = 0.05, 0.5, (1024, 2048)


def _smooth_noise(shape: tuple[int, ...], height: int, width: int, gen: torch.Generator) -> Tensor:
    """[*shape, H, W] unit noise drawn at stride 4 and upsampled, like a decoder output."""
    coarse = torch.randn(*shape, math.ceil(height / 4), math.ceil(width / 4), generator=gen)
    up = F.interpolate(coarse.reshape(1, -1, *coarse.shape[-2:]), scale_factor=4, mode="bilinear", align_corners=False)
    return up[0, :, :height, :width].reshape(*shape, height, width)


def make_scene(
    height: int,
    width: int,
    *,
    num_objects: int,
    nearest: float = 8.0,
    camera_height: float = 1.2,
    seed: int = 0,
    num_classes: int = 19,
) -> dict[str, Tensor]:
    """Synthetic network outputs of a street scene, as a trained model would give them.

    Stuff bands (sky, buildings, vegetation, poles, signs, sidewalk, road) and
    ``num_objects`` things (cars, people, ...) standing on the road, sized by a
    pinhole camera, nearer ones occluding farther ones.  Returns, at [H, W]:
    ``sem_seg`` [C, H, W] logits (the painted class + 6, plus smooth noise),
    ``center`` [1, H, W] (a sigma-8 Gaussian per visible object, peak 0.5..0.95),
    ``offset`` [2, H, W] (dy, dx) from each thing pixel to its object's center
    (plus ~1.5 px of smooth noise) and ``depth`` [1, H, W] meters.
    """
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    h, w = height, width
    yy = torch.arange(h, dtype=torch.float32)[:, None].expand(h, w)
    xx = torch.arange(w, dtype=torch.float32)[None, :].expand(h, w)
    horizon = 0.42 * h
    focal = FOCAL * w
    label = torch.full((h, w), ROAD, dtype=torch.int64)
    label[yy < 0.62 * h] = SIDEWALK
    label[yy < horizon + 0.02 * h] = BUILDING
    label[(yy < horizon + 0.02 * h) & ((xx < 0.14 * w) | (xx > 0.82 * w))] = VEGETATION
    label[yy < 0.2 * h + 0.05 * h * torch.sin(xx / w * 6.0)] = SKY
    for x0 in rng.uniform(0.05, 0.95, 6):  # poles with a sign on top: small stuff regions
        x0 = int(x0 * w)
        label[int(0.25 * h) : int(0.62 * h), x0 : x0 + max(2, w // 300)] = POLE
        label[int(0.25 * h) : int(0.3 * h), x0 - w // 100 : x0 + w // 100] = SIGN
    ground = torch.clamp(focal * camera_height / (yy - horizon).clamp(min=1e-3), 1.0, 80.0)
    depth = torch.where(yy > horizon + 0.02 * h, ground, torch.full_like(ground, 80.0))
    depth[label == BUILDING] = 40.0
    depth[label == VEGETATION] = 20.0
    instance = torch.zeros((h, w), dtype=torch.int64)

    kinds = np.array([k[0] for k in OBJECT_KINDS])
    size_m = np.array([(k[1], k[2]) for k in OBJECT_KINDS])
    share = np.array([k[3] for k in OBJECT_KINDS])
    # Distance with density ~ z (ground area grows with distance).  Placed nearest first, each
    # object covers only still-free pixels and is re-drawn elsewhere (up to 50 tries) while
    # nearer ones would hide more than half of it, so about num_objects stay visible.
    z = np.sort(np.sqrt(rng.uniform(nearest**2, 70.0**2, num_objects)))
    pick = rng.choice(len(kinds), size=num_objects, p=share / share.sum())
    placed = 0
    for k, zi in zip(pick, z, strict=True):
        bottom = horizon + focal * camera_height / zi
        ow, oh = focal * size_m[k] / zi
        y0, y1 = max(0, int(bottom - oh)), min(h, int(bottom))
        for _ in range(50):
            mid = rng.uniform(0.03, 0.97) * w
            x0, x1 = max(0, int(mid - ow / 2)), min(w, int(mid + ow / 2) + 1)
            wy, wx = yy[y0:y1, x0:x1], xx[y0:y1, x0:x1]
            inside = ((wy - (bottom - oh / 2)) / (oh / 2)) ** 2 + ((wx - mid) / (ow / 2)) ** 2 <= 1.0
            free = inside & (instance[y0:y1, x0:x1] == 0)
            if inside.any() and 2 * int(free.sum()) >= int(inside.sum()):
                placed += 1
                label[y0:y1, x0:x1][free] = int(kinds[k])
                instance[y0:y1, x0:x1][free] = placed
                depth[y0:y1, x0:x1][free] = float(zi)
                break

    # Centers: mass center of each object's visible pixels.
    flat = instance.flatten()
    area = torch.bincount(flat, minlength=placed + 1).double()
    cy = torch.zeros(placed + 1, dtype=torch.float64).index_add_(0, flat, yy.flatten().double()) / area
    cx = torch.zeros(placed + 1, dtype=torch.float64).index_add_(0, flat, xx.flatten().double()) / area
    center = torch.zeros((h, w))
    peak = rng.uniform(0.5, 0.95, placed + 1)
    r = int(3 * CENTER_SIGMA)
    for i in range(1, placed + 1):
        if area[i] < 16:
            continue
        y, x = int(cy[i].round()), int(cx[i].round())
        y0, y1, x0, x1 = max(0, y - r), min(h, y + r + 1), max(0, x - r), min(w, x + r + 1)
        g = peak[i] * torch.exp(-((yy[y0:y1, x0:x1] - y) ** 2 + (xx[y0:y1, x0:x1] - x) ** 2) / (2 * CENTER_SIGMA**2))
        center[y0:y1, x0:x1] = torch.maximum(center[y0:y1, x0:x1], g)
    center += 0.02 * _smooth_noise((), h, w, gen)

    target = torch.stack((cy.float()[instance] - yy, cx.float()[instance] - xx))  # [2, H, W]
    offset = torch.where(instance > 0, target, torch.zeros(())) + 1.5 * _smooth_noise((2,), h, w, gen)
    sem = _smooth_noise((num_classes,), h, w, gen)
    sem.scatter_add_(0, label[None], torch.full((1, h, w), 6.0))
    # The depth head's range; the sky saturates at its far end, as a trained head's does.
    depth = (depth * (1 + 0.02 * _smooth_noise((), h, w, gen))).clamp(0.5, 80.0)
    return {"sem_seg": sem, "center": center[None], "offset": offset, "depth": depth[None]}


def detectron2_style_fusion(
    sem_logits: Tensor,
    center: Tensor,
    offset: Tensor,
    *,
    thing_ids: tuple[int, ...],
    label_divisor: int,
    stuff_area: int,
    threshold: float,
    nms_kernel: int,
    top_k: int,
) -> tuple[Tensor, Tensor, list[tuple[int, float]]]:
    """Detectron2's Panoptic-DeepLab inference after the network, written out for timing.

    As ``get_panoptic_segmentation`` (post_processing.py) then the per-instance loop of
    ``PanopticDeepLab.forward``: a [K, H*W] distance tensor (torch.norm + argmin),
    a Python loop per instance (torch.mode) and per stuff class, then a full softmax
    and, per instance, its mask, mean probability, center score and box.
    Returns (panoptic [H, W], centers [K, 2], [(id, score)] per instance).
    """
    h, w = sem_logits.shape[-2:]
    semantic = sem_logits.argmax(0, keepdim=True)  # [1, H, W]
    heat = F.threshold(center, threshold, -1.0)
    pooled = F.max_pool2d(heat, kernel_size=nms_kernel, stride=1, padding=(nms_kernel - 1) // 2)
    heat[heat != pooled] = -1
    heat = heat.squeeze()
    kth = torch.topk(heat.flatten(), min(top_k, heat.numel()))[0][-1]
    centers = torch.nonzero(heat > torch.clamp(kth, min=0))  # [K, 2]
    thing_seg = torch.zeros_like(semantic)
    for t in thing_ids:
        thing_seg[semantic == t] = 1
    instance = torch.zeros_like(semantic)
    if centers.numel():
        yy, xx = torch.meshgrid(
            torch.arange(h, device=offset.device), torch.arange(w, device=offset.device), indexing="ij"
        )
        loc = (torch.stack((yy, xx)) + offset).flatten(1).T[None]  # [1, H*W, 2]
        distance = torch.norm(centers[:, None, :] - loc, dim=-1)  # [K, H*W]
        instance = (distance.argmin(0).reshape(1, h, w) + 1) * thing_seg
        del distance, loc
    panoptic = torch.full_like(semantic, -1)
    is_thing = (instance > 0) & (thing_seg > 0)
    tracker: Counter[int] = Counter()
    for ins_id in torch.unique(instance):
        if ins_id == 0:
            continue
        mask = (instance == ins_id) & is_thing
        if torch.nonzero(mask).size(0) == 0:
            continue
        class_id, _ = torch.mode(semantic[mask].view(-1))
        tracker[int(class_id)] += 1
        panoptic[mask] = class_id * label_divisor + tracker[int(class_id)]
    for class_id in torch.unique(semantic):
        if int(class_id) in thing_ids:
            continue
        mask = (semantic == class_id) & (instance == 0)
        if mask.sum() >= stuff_area:
            panoptic[mask] = class_id * label_divisor
    panoptic = panoptic[0]
    prob = F.softmax(sem_logits, dim=0)
    instances = []
    for label in np.unique(panoptic.cpu().numpy()):
        cls = int(label) // label_divisor
        if label == -1 or cls not in thing_ids:
            continue
        mask = panoptic == int(label)
        sem_score = prob[cls][mask].mean()
        where = torch.nonzero(mask).float()
        cy, cx = int(where[:, 0].mean()), int(where[:, 1].mean())
        x_any, y_any = mask.any(0), mask.any(1)
        _box = (torch.nonzero(x_any)[[0, -1]], torch.nonzero(y_any)[[0, -1]])
        instances.append((int(label), float(sem_score * center[0, cy, cx])))
    return panoptic, centers, instances


# --------------------------------------------------------------------------- memory
_LIBC = ctypes.CDLL("libc.so.6") if sys.platform.startswith("linux") else None


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    raise KeyError(field)


class PeakMemory:
    """Peak memory increase over a ``with`` block, in MB.

    CPU: the kernel's peak-RSS mark (VmHWM) is reset by writing 5 to
    /proc/self/clear_refs after ``gc.collect()`` and ``malloc_trim(0)`` (so memory
    freed earlier is not silently reused); peak = VmHWM after - VmRSS before.
    Without that (non-Linux), a ``ru_maxrss`` delta, which only sees new highs.
    CUDA: ``torch.cuda.max_memory_allocated`` over ``memory_allocated`` before.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_mb = math.nan
        self.method = ""
        self._base = 0.0

    def __enter__(self) -> PeakMemory:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = float(torch.cuda.memory_allocated(self.device))
            self.method = "cuda max_memory_allocated"
            return self
        if _LIBC is not None:
            _LIBC.malloc_trim(0)
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self._base = _status_mb("VmRSS")
            self.method = "VmHWM - VmRSS"
        except OSError:
            self._base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
            self.method = "ru_maxrss delta"
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mb = (torch.cuda.max_memory_allocated(self.device) - self._base) / 2**20
        elif self.method == "VmHWM - VmRSS":
            self.peak_mb = _status_mb("VmHWM") - self._base
        else:
            self.peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0 - self._base


# -------------------------------------------------------------------------- networks
class SceneNetwork(torch.nn.Module):
    """The full model, its outputs steered to a synthetic scene (a ``Predictor`` backend).

    The model's 1x1 predictors are zeroed, so with random weights it outputs 0
    logits, centers and offsets and a constant depth; the scene's outputs are
    added (depth: scaled) after the real forward.  The forward's cost is the real
    one, and fusion sees realistic outputs.  An ``nn.Module``, so ``Predictor``
    applies its default inference rewrites (BatchNorm folding) as deployed.
    """

    def __init__(self, model: torch.nn.Module | None, scene: dict[str, Tensor]) -> None:
        super().__init__()
        self.model = model
        for name, value in scene.items():
            self.register_buffer(name, value[None], persistent=False)  # [1, ...]
        self.flat_depth = math.sqrt(MODEL_CONFIG.min_depth * MODEL_CONFIG.max_depth)

    def forward(self, x: Tensor) -> dict[str, Tensor]:  # noqa: D102
        scene = {name: getattr(self, name) for name in ("sem_seg", "center", "offset", "depth")}
        if self.model is None:  # post-processing only: the outputs, precomputed
            return scene
        return self.steer(self.model(x))

    def steer(self, out: dict[str, Tensor]) -> dict[str, Tensor]:
        """The zeroed model's outputs ``out`` moved to the scene's (also for another runtime's outputs)."""
        scene = {name: getattr(self, name) for name in ("sem_seg", "center", "offset", "depth")}
        if out["sem_seg"].shape[-2:] != scene["sem_seg"].shape[-2:]:
            raise ValueError("the scene must have the network's output size (no padding)")
        return {
            "sem_seg": out["sem_seg"] + scene["sem_seg"],
            "center": out["center"] + scene["center"],
            "offset": out["offset"] + scene["offset"],
            "depth": out["depth"] * (scene["depth"] / self.flat_depth),
        }


# ModelConfig() = the full-size Cityscapes R-52 os16 (+ depth).  Non-strict ASPP pooling
# only matters for sizes Detectron2 refuses (e.g. 256x512); at 512x1024 and 1024x2048
# it is the same network and cost.
MODEL_CONFIG = ModelConfig(aspp_strict_pool_size=False)


def build_full_model(device: torch.device) -> torch.nn.Module:
    """``MODEL_CONFIG`` with random weights and zeroed predictors (see SceneNetwork)."""
    torch.manual_seed(0)
    model = build_model(MODEL_CONFIG).eval()
    with torch.no_grad():
        for head in (
            model.sem_seg_head.predictor,
            model.ins_embed_head.center_predictor,
            model.ins_embed_head.offset_predictor,
            model.depth_head.predictor,
        ):
            head.weight.zero_()
            if head.bias is not None:
                head.bias.zero_()
    return model.to(device)


def camera_k(h: int, w: int) -> np.ndarray:
    """Cityscapes-like intrinsics for an [h, w] image."""
    return np.array([[FOCAL * w, 0, w / 2], [0, FOCAL * w, h / 2], [0, 0, 1]], dtype=np.float64)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------- workers
def run_predictor(spec: dict[str, Any]) -> dict[str, Any]:
    """Time ``Predictor.predict`` on one size and scene (full network, or outputs only)."""
    h, w = spec["size"]
    device = torch.device(spec["device"])
    classes = cityscapes_metadata()
    scene = {k: v.to(device) for k, v in make_scene(h, w, **SCENES[spec["scene"]]).items()}
    model = build_full_model(device) if spec["network"] else None
    network = SceneNetwork(model, scene).eval()
    predictor = Predictor(
        network, model_config=MODEL_CONFIG, classes=classes, postprocess=PostprocessConfig(), device=device
    )  # default: BN folded
    del network, model
    image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    k = camera_k(h, w)
    for _ in range(spec["warmup"]):
        predictor.predict(image, camera_k=k)
    runs, peaks, method = [], [], ""
    for _ in range(spec["repeat"]):
        with PeakMemory(device) as mem:
            result = predictor.predict(image, camera_k=k)
        runs.append(result.timings)
        peaks.append(mem.peak_mb)
        method = mem.method
    # CPU seconds of fusion + segment depth alone (a load-independent view of the work).
    cpu = []
    if not spec["network"]:
        with torch.inference_mode():
            for _ in range(spec["repeat"]):
                t0 = time.process_time()
                fused = panoptic_fusion(
                    scene["sem_seg"], scene["center"], scene["offset"], classes=classes, config=predictor.postprocess
                )
                segment_depth_statistics(
                    fused.panoptic,
                    scene["depth"][0],
                    classes=classes,
                    config=predictor.postprocess,
                    sem_logits=scene["sem_seg"],
                    center=scene["center"],
                    camera_k=k,
                    segments=fused.segments,
                    class_probability=fused.class_probability,
                )
                _sync(device)
                cpu.append(time.process_time() - t0)
    centers = find_instance_centers(scene["center"], threshold=0.1, nms_kernel=7, top_k=200)
    return {
        "timings": {name: statistics.median(r[name] for r in runs) for name in runs[0]},
        "cpu_post": statistics.median(cpu) if cpu else math.nan,
        "peak_mb": max(peaks),
        "memory_method": method,
        "centers": int(centers.shape[0]),
        "segments": len(result.segments),
        "things": sum(s.is_thing for s in result.segments),
    }


def run_reference(spec: dict[str, Any]) -> dict[str, Any]:
    """Time :func:`detectron2_style_fusion` once on the crowd scene, and check it against ours."""
    h, w = spec["size"]
    device = torch.device(spec["device"])
    classes = cityscapes_metadata()
    config = PostprocessConfig()
    scene = {k: v.to(device) for k, v in make_scene(h, w, **SCENES["crowd"]).items()}
    with torch.inference_mode():
        with PeakMemory(device) as mem:
            t0 = time.perf_counter()
            panoptic, centers, _ = detectron2_style_fusion(
                scene["sem_seg"],
                scene["center"],
                scene["offset"],
                thing_ids=classes.thing_ids,
                label_divisor=classes.label_divisor,
                stuff_area=config.stuff_area,
                threshold=config.center_threshold,
                nms_kernel=config.nms_kernel,
                top_k=config.top_k,
            )
            _sync(device)
            seconds = time.perf_counter() - t0
        ours = panoptic_fusion(scene["sem_seg"], scene["center"], scene["offset"], classes=classes, config=config)
    same = float((ours.panoptic == panoptic).double().mean())
    return {"seconds": seconds, "peak_mb": mem.peak_mb, "centers": int(centers.shape[0]), "same_panoptic": same}


WORKERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "predictor": run_predictor,
    "reference": run_reference,
}


def spawn(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one worker in a fresh interpreter; its last stdout line is the JSON result."""
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"worker {spec} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------ main
def parse_sizes(text: str) -> list[tuple[int, int]]:
    """``"512x1024,1024x2048"`` -> [(512, 1024), (1024, 2048)] (height x width)."""
    sizes = []
    for item in text.split(","):
        h, _, w = item.strip().lower().partition("x")
        sizes.append((int(h), int(w)))
    return sizes


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="512x1024,1024x2048", help="HxW[,HxW...]")
    parser.add_argument(
        "--repeat", type=int, default=2, help="timed runs with the full network (median); post-only: max(5, N)"
    )
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first")
    parser.add_argument("--device", default="cpu", help="cpu | cuda[:N]")
    parser.add_argument(
        "--reference-sizes",
        default="largest",
        help="sizes for the Detectron2-style fusion: largest | none | HxW[,...] "
        "(~1.5 min at 1024x2048 on 2 CPU cores, ~5 GB)",
    )
    parser.add_argument("--skip-network", action="store_true", help="post-processing rows only (no full-size forward)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser


def _fmt(value: float, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else (f"{value:.{digits}f}")


def main() -> None:
    args = get_args_parser().parse_args()
    if args.worker:
        spec = json.loads(args.worker)
        print(json.dumps(WORKERS[spec["kind"]](spec)))
        return
    sizes = parse_sizes(args.sizes)
    device = str(torch.device(args.device))
    if device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("--device cuda: CUDA is not available here")
    if args.reference_sizes == "none":
        ref_sizes: list[tuple[int, int]] = []
    elif args.reference_sizes == "largest":
        ref_sizes = [max(sizes, key=lambda s: s[0] * s[1])]
    else:
        ref_sizes = parse_sizes(args.reference_sizes)
    load_start = os.getloadavg()[0]
    print(
        f"Panoptic-DepthLab network benchmark: torch {torch.__version__}, "
        f"device {device}, {torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs, "
        f"1-min load average {load_start:.2f} at start",
        flush=True,
    )
    base = {"device": device, "warmup": args.warmup}
    e2e: dict[tuple[int, int], dict[str, Any]] = {}
    if not args.skip_network:
        for size in sizes:
            print(f"  running the full network at {size[0]}x{size[1]} ...", flush=True)
            e2e[size] = spawn(
                {**base, "kind": "predictor", "size": size, "scene": "typical", "network": True, "repeat": args.repeat}
            )
    post: dict[tuple[tuple[int, int], str], dict[str, Any]] = {}
    for size in sizes:
        for scene in SCENES:
            print(f"  running post-processing only at {size[0]}x{size[1]}, {scene} ...", flush=True)
            post[size, scene] = spawn(
                {
                    **base,
                    "kind": "predictor",
                    "size": size,
                    "scene": scene,
                    "network": False,
                    "repeat": max(5, args.repeat),
                }
            )
    ref: dict[tuple[int, int], dict[str, Any]] = {}
    for size in ref_sizes:
        print(f"  running the Detectron2-style fusion at {size[0]}x{size[1]} ...", flush=True)
        ref[size] = spawn({**base, "kind": "reference", "size": size})
    load_end = os.getloadavg()[0]

    print(
        f"\n1-min load average: {load_start:.2f} at start, {load_end:.2f} at end "
        f"({os.cpu_count()} CPUs; other processes inflate wall times)"
    )
    print("Times in seconds (Predictor timings; median), peak = peak memory increase of one predict, in MB.")
    if e2e:
        print(f"\nEnd to end, full network, typical scene (median of {args.repeat} after {args.warmup} warm-up)")
        print(
            f"{'size':>10} {'centers':>7} {'segs':>5} {'preproc':>8} {'network':>8} "
            f"{'fusion':>7} {'seg.dep':>7} {'e2e':>8} {'fus+seg':>7} {'share':>6} {'peak MB':>8}"
        )
        for size, r in e2e.items():
            t = r["timings"]
            post_s = t["fusion"] + t["segment_depth"]
            print(
                f"{size[0]:>4}x{size[1]:<5} {r['centers']:>7} {r['segments']:>5} "
                f"{t['preprocess']:>8.3f} {t['network']:>8.2f} {t['fusion']:>7.3f} "
                f"{t['segment_depth']:>7.3f} {t['total']:>8.2f} {post_s:>7.3f} "
                f"{100 * post_s / t['total']:>5.2f}% {r['peak_mb']:>8.0f}"
            )
    print(
        f"\nPost-processing only: network replaced by its outputs (median of "
        f"{max(5, args.repeat)} after {args.warmup} warm-up); cpu = CPU seconds of fusion + "
        "segment depth; share* = of end to end with this post-processing"
    )
    print(
        f"{'size':>10} {'scene':>8} {'centers':>7} {'segs':>5} {'fusion':>7} {'seg.dep':>7} "
        f"{'fus+seg':>7} {'cpu':>6} {'share*':>7} {'peak MB':>8}"
    )
    for (size, scene), r in post.items():
        t = r["timings"]
        post_s = t["fusion"] + t["segment_depth"]
        share = math.nan
        if size in e2e:
            full = e2e[size]["timings"]
            rest = full["total"] - full["fusion"] - full["segment_depth"]
            share = 100 * post_s / (rest + post_s)
        print(
            f"{size[0]:>4}x{size[1]:<5} {scene:>8} {r['centers']:>7} {r['segments']:>5} "
            f"{t['fusion']:>7.3f} {t['segment_depth']:>7.3f} {post_s:>7.3f} "
            f"{_fmt(r['cpu_post']):>6} {_fmt(share, 2) + ('' if math.isnan(share) else '%'):>7} "
            f"{r['peak_mb']:>8.0f}"
        )
    if ref:
        print(
            "\nDetectron2-style dense fusion (detectron2_style_fusion: [K, H*W] torch.norm + "
            "argmin, Python loops per instance and class, softmax + per-instance scores), "
            "crowd scene, 1 run; ours = fusion + segment depth above"
        )
        print(
            f"{'size':>10} {'centers':>7} {'detectron2':>10} {'ours':>7} {'speedup':>8} "
            f"{'peak MB':>8} {'same panoptic':>13}"
        )
        for size, r in ref.items():
            ours = post.get((size, "crowd"))
            ours_s = (ours["timings"]["fusion"] + ours["timings"]["segment_depth"]) if ours else math.nan
            print(
                f"{size[0]:>4}x{size[1]:<5} {r['centers']:>7} {r['seconds']:>10.1f} "
                f"{_fmt(ours_s):>7} {r['seconds'] / ours_s:>7.0f}x {r['peak_mb']:>8.0f} "
                f"{100 * r['same_panoptic']:>12.3f}%"
            )
    method = next(iter(post.values()))["memory_method"]
    print(f"\nPeak memory: {method} per configuration, each in its own subprocess.")
    goal_size = GOAL_SIZE if GOAL_SIZE in sizes else None
    if goal_size is None:
        print(f"Goals are stated at {GOAL_SIZE[0]}x{GOAL_SIZE[1]}; not in --sizes.")
        return
    print(f"\nGoals at {goal_size[0]}x{goal_size[1]}:")
    if goal_size in e2e:
        t = e2e[goal_size]["timings"]
        share = (t["fusion"] + t["segment_depth"]) / t["total"]
        print(
            f"  fusion + segment depth <= {100 * GOAL_SHARE:.0f}% of end to end: "
            f"{100 * share:.2f}% -> {'met' if share <= GOAL_SHARE else 'NOT met'}"
        )
    crowd = post[goal_size, "crowd"]
    seconds = crowd["timings"]["fusion"] + crowd["timings"]["segment_depth"]
    print(
        f"  fusion + segment depth <= {GOAL_SECONDS} s with {crowd['centers']} centers: "
        f"{seconds:.3f} s wall ({crowd['cpu_post']:.3f} s CPU) -> "
        f"{'met' if seconds <= GOAL_SECONDS else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
