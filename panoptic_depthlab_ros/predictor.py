"""The public entry point: one BGR image in, panoptic + depth + segment records out.

    predictor = Predictor.from_checkpoint("model.safetensors")        # or from_detectron2(...)
    result = predictor.predict(image_bgr, camera_k=K)                 # PanopticDepthResult
    for result in predictor.track(frames, camera_k=K): ...            # (stamp_s, image) pairs, tracked

Stages (each timed): preprocess -> network -> fusion -> segment depth.  What the
test-time options (input scale, flip averaging, several scales) cost and gain on the
demo model: docs/performance.md and docs/model.md.
"""

from __future__ import annotations

import gc
import itertools
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from .backends import choose_backend, load_exported_network
from .checkpoint import load_checkpoint, load_detectron2
from .ego_motion import EgoMotion
from .errors import InputError, PanopticDepthLabError
from .fusion import PostprocessConfig, panoptic_fusion
from .image_io import DEFAULT_MAX_PIXELS, check_pixels
from .metadata import ClassMetadata, cityscapes_metadata
from .model import ModelConfig, PanopticDepthLab
from .model.aspp import detectron2_accepts, feature_size, pooling_policy
from .model.fuse import fold_batchnorm
from .parallel import cpu_lanes, lanes_for, run_parallel
from .preprocess import Prepared, crop_and_resize, network_size_for, prepare_image
from .result import PanopticDepthResult
from .segment_stats import segment_depth_statistics
from .tracker import Tracker
from .tta import average_over_scales, average_with_mirrored, check_scales, zoomed_input

# A network backend: normalised padded [1, 3, Hp, Wp] -> dict of [1, ...] outputs at [Hp, Wp]
# (sem_seg, center, offset, depth), as PanopticDepthLab.forward returns them.
Network = Callable[[Tensor], dict[str, Tensor]]


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; an unavailable CUDA is an error."""
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PanopticDepthLabError(f"device {name!r} requested but CUDA is not available on this machine")
    if not (name == "cpu" or name.startswith("cuda")):
        raise PanopticDepthLabError(f"device must be auto, cpu or cuda[:N], got {name!r}")
    return torch.device(name)


# The warm-up frame's size when the camera's is not known: half a Cityscapes frame.
DEFAULT_WARMUP_SIZE = (512, 1024)
# What a failed warm-up most likely means, by words in its error (torch, CUDA, Triton, onnxruntime).
_WARMUP_HINTS = (
    (
        "out of memory",
        "the GPU has too little free memory for this frame size: use fp16, max_input_width or a smaller"
        " input_scale, or free the GPU",
    ),
    (
        "no kernel image",
        "this torch build has no kernels for this GPU's architecture: install a wheel whose"
        " torch.cuda.get_arch_list() includes it",
    ),
    ("triton", "torch.compile needs Triton for this GPU: install it, or run without compile_mode"),
    ("backendcompilerfailed", "torch.compile failed: run without compile_mode"),
)


def _released(x: Tensor) -> dict[str, Tensor]:
    """The network of a released predictor (see :meth:`Predictor.release`)."""
    raise PanopticDepthLabError("this predictor was released (its network is freed)")


class WarmUpError(PanopticDepthLabError):
    """The warm-up frame failed: the first real frame would fail the same way."""


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (timing code); nothing for the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def untrained_depth_note(how: str) -> str:
    """Why a tool gives no depth for a checkpoint whose depth branch was never trained.

    ``how``: the switch that asks for it anyway (``--untrained-depth``, ``untrained_depth:=true``).
    """
    return (
        "the checkpoint's depth branch was never trained (a Detectron2 conversion starts it fresh): its depth"
        " would be noise, so there is no depth image, segment depths are NaN, there are no 3D outputs"
        f" (centroids, markers, points) and the overlay shows no distances; {how} gives them anyway"
    )


def checked_camera_k(camera_k: np.ndarray | None) -> np.ndarray | None:
    """``camera_k`` as a 3x3 float64 matrix (None stays None); :class:`InputError` unless finite with fx, fy > 0."""
    if camera_k is None:
        return None
    k = np.asarray(camera_k, dtype=np.float64)
    if k.shape not in ((3, 3), (9,)) or not np.all(np.isfinite(k)):
        raise InputError(f"camera_k must be a finite 3x3 matrix, got shape {k.shape}")
    k = k.reshape(3, 3)
    if k[0, 0] <= 0 or k[1, 1] <= 0:
        raise InputError(f"camera_k focal lengths must be > 0, got fx={k[0, 0]}, fy={k[1, 1]}")
    return k


class Predictor:
    """Runs the network and the fusion for single images.

    Args:
        network: the model (an ``nn.Module`` in eval mode) or another backend
            with the same call signature (see ``Network``).
        model_config: input format, normalisation and padding of the network.
        classes: what the semantic channels mean.
        postprocess: fusion / segment-depth settings used when :meth:`predict` is given none.
        device: where tensors live.
        fp16: autocast the network to float16 (CUDA only).
        max_input_width: downscale wider images before the network (0 = never);
            outputs are returned at the input size.
        optimize: inference rewrites of a torch network: BatchNorm folded into the
            convolutions, plus channels-last memory on CUDA (docs/performance.md).
        compile_mode: ``torch.compile`` the network with this mode (``"default"``,
            ``"reduce-overhead"`` = CUDA graphs, ``"max-autotune"``); None = eager.
            Compiling takes minutes on a CPU; meant for GPUs. Outputs are copied after each
            call (CUDA graphs overwrite them at the next), so averaging and kept results are safe.
        compile_backend: the ``torch.compile`` backend (``"inductor"``; ``"eager"``
            checks the wiring without code generation).
        flip_average: also run the mirrored image and average the two (see
            :func:`.tta.average_with_mirrored`): a little more accurate for twice the
            network time, so off by default; meant for offline runs or spare GPU time.
        scales: input scales whose segmentation outputs are averaged (see
            :func:`.tta.average_over_scales`; must include 1.0). Multi-scale inference as in
            the Panoptic-DeepLab paper: better segments for several network passes per frame
            (docs/performance.md); offline, or an exported ONNX with ``--dynamic``.
            Scales are relative to the input scale.
        input_scale: resize every image by this before the network, replacing the
            checkpoint's ``model_config.input_scale`` (None: keep it). An enlarged pass
            finds smaller things for more time per frame; a model should be trained at the
            scale it runs at (the demo model's: docs/model.md).
        max_pixels: images with more pixels are refused with an :class:`InputError` (0: no
            limit): the network's memory grows with the pixels, and a frame of a wrong
            camera mode or a corrupt header must not take the machine's memory.
        source: where the network came from (a checkpoint path), for provenance records.
        untrained_depth: give depth (and everything derived from it) even when
            ``model_config.depth_trained`` is false. Otherwise such a checkpoint's depth
            branch is not run: ``result.depth`` is None, segment depths and centroids NaN.

    ``from_checkpoint`` and ``from_detectron2`` also take ``strict_pool_size``: refuse
    frames Detectron2's ASPP image pooling refuses (default: any size; see
    :meth:`frame_handling` and docs/detectron2.md).
    """

    def __init__(
        self,
        network: Network,
        *,
        model_config: ModelConfig,
        classes: ClassMetadata,
        postprocess: PostprocessConfig | None = None,
        device: torch.device | str = "cpu",
        fp16: bool = False,
        max_input_width: int = 0,
        optimize: bool = True,
        compile_mode: str | None = None,
        compile_backend: str = "inductor",
        flip_average: bool = False,
        scales: tuple[float, ...] = (1.0,),
        input_scale: float | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        source: str = "",
        untrained_depth: bool = False,
    ) -> None:
        if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 0:
            raise PanopticDepthLabError(f"max_pixels must be an integer >= 0 (0: no limit), got {max_pixels!r}")
        self.max_pixels = max_pixels
        self.source = str(source)
        # What runs the network: torch, or the runtime of an exported one (its ``backend`` attribute).
        self.backend = "torch" if isinstance(network, nn.Module) else str(getattr(network, "backend", "custom"))
        if input_scale is not None:
            try:
                model_config = model_config.with_(input_scale=float(input_scale))
            except ValueError as exc:
                raise PanopticDepthLabError(str(exc)) from None
        # Depth-derived outputs only from a trained depth branch, unless asked for explicitly.
        self.depth_enabled = model_config.depth_trained or bool(untrained_depth)
        # Our own network can skip its depth branch; another backend computes depth and it is dropped.
        self._can_skip_depth = isinstance(network, PanopticDepthLab)
        self.device = torch.device(device)
        self.channels_last = False
        if optimize and isinstance(network, nn.Module):
            network = fold_batchnorm(network)
            self.channels_last = self.device.type == "cuda"
            if self.channels_last:
                network = network.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        # A compiled network may hand out buffers its next call overwrites (CUDA graphs in
        # reduce-overhead / max-autotune): _run_network then copies its outputs.
        self.compiled = bool(compile_mode) and isinstance(network, nn.Module)
        if self.compiled:
            network = cast(nn.Module, torch.compile(network, mode=compile_mode, backend=compile_backend, dynamic=True))
        self.network = network
        self.model_config = model_config
        self.classes = classes
        self.postprocess = postprocess or PostprocessConfig()
        self.fp16 = bool(fp16) and self.device.type == "cuda"
        self.max_input_width = int(max_input_width)
        self.flip_average = bool(flip_average)
        try:
            self.scales = check_scales(scales)
        except ValueError as exc:
            raise PanopticDepthLabError(str(exc)) from None
        if len(self.scales) > 1 and getattr(network, "fixed_size", None) is not None:
            raise PanopticDepthLabError(
                f"multi-scale inference needs an input of any size; {getattr(network, 'path', 'this network')}"
                " was exported for one size (export it with --dynamic)"
            )
        if model_config.num_classes != classes.num_classes:
            raise PanopticDepthLabError(
                f"{classes.num_classes} class names for a {model_config.num_classes}-class network"
            )

    # ----------------------------------------------------------------- building
    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str | torch.device = "auto",
        *,
        backend: str = "auto",
        strict_pool_size: bool = False,
        **kwargs: Any,
    ) -> Predictor:
        """Load our checkpoint or an exported ``.onnx`` in ``backend`` (see :mod:`.backends`).

        ``backend``: ``torch`` (a checkpoint), ``onnxruntime`` or ``openvino`` (an export),
        or ``auto`` (:func:`~.backends.choose_backend`: a checkpoint in torch, an export in
        OpenVINO when installed and on the CPU, else in onnxruntime).
        ``strict_pool_size`` overrides what the checkpoint stores: Detectron2's size check is a
        run-time choice (an export refuses sizes other than its own, or below its pooling window).
        """
        dev = resolve_device(device)
        chosen = choose_backend(path, backend, device=dev)
        if chosen != "torch":
            network, model_config, classes, post = load_exported_network(path, chosen, device=dev)
            model_config = model_config.with_(aspp_strict_pool_size=bool(strict_pool_size))
            return cls(
                network,
                model_config=model_config,
                classes=classes,
                postprocess=post,
                device=dev,
                source=str(path),
                **kwargs,
            )
        ckpt = load_checkpoint(path)
        ckpt.model_config = ckpt.model_config.with_(aspp_strict_pool_size=bool(strict_pool_size))
        model = ckpt.build().to(dev)
        return cls(
            model,
            model_config=ckpt.model_config,
            classes=ckpt.classes,
            postprocess=ckpt.postprocess,
            device=dev,
            source=str(path),
            **kwargs,
        )

    @classmethod
    def from_detectron2(
        cls,
        weights_path: str | Path,
        config_yaml_path: str | Path,
        device: str | torch.device = "auto",
        *,
        strict_pool_size: bool = False,
        **kwargs: Any,
    ) -> Predictor:
        """Detectron2 Panoptic-DeepLab weights + config (depth branch untrained)."""
        dev = resolve_device(device)
        model, model_config, post, _report = load_detectron2(
            weights_path, config_yaml_path, strict_pool_size=bool(strict_pool_size)
        )
        return cls(
            model.to(dev),
            model_config=model_config,
            classes=cityscapes_metadata(),
            postprocess=post,
            device=dev,
            source=str(weights_path),
            **kwargs,
        )

    # ---------------------------------------------------------------- frame sizes
    def pooling_policy(self) -> str:
        """How the ASPP image pooling treats frame sizes (for start-up logs)."""
        cfg = self.model_config
        return "ASPP image pooling: " + pooling_policy(
            cfg.aspp_pool_kernel_size, cfg.output_stride, strict=cfg.aspp_strict_pool_size
        )

    def frame_handling(self, height: int, width: int) -> str:
        """One line saying how frames of ``height`` x ``width`` go through the network.

        The resize before the network, the padding, and what the ASPP image pooling does
        with the res5 size: Detectron2's window where Detectron2 accepts the size (exactly
        its outputs), the same window clipped to the feature where it refuses (or refused
        here too, with ``strict_pool_size``).
        """
        cfg = self.model_config
        h, w = network_size_for(height, width, self.max_input_width, cfg.input_scale)
        hp, wp = self.padded_size(height, width)
        parts = [f"frames of {height}x{width}"]
        if (h, w) != (height, width):
            parts.append(f"resized to {h}x{w}")
        if (hp, wp) != (h, w):
            parts.append(f"padded to {hp}x{wp}")
        window = cfg.aspp_pool_kernel_size
        feature = feature_size(hp, wp, cfg.output_stride)
        where = f"res5 {feature[0]}x{feature[1]}"
        if window is None:
            pooling = f"{where}, global image pooling (any size)"
        elif detectron2_accepts(feature, window):
            pooling = f"{where}: a multiple of the {window[0]}x{window[1]} pooling window, exactly Detectron2's outputs"
        elif cfg.aspp_strict_pool_size:
            pooling = (
                f"{where}: not a multiple of the {window[0]}x{window[1]} pooling window, so refused as Detectron2"
                " refuses it (strict_pool_size)"
            )
        else:
            clipped = (min(window[0], feature[0]), min(window[1], feature[1]))
            pooling = (
                f"{where}: Detectron2 refuses this size (not a multiple of its {window[0]}x{window[1]} pooling window);"
                f" pooled with that window{'' if clipped == window else f' clipped to {clipped[0]}x{clipped[1]}'}"
                " as Detectron2 would without the check"
            )
        return ", ".join(parts) + "; " + pooling

    def padded_size(self, height: int, width: int) -> tuple[int, int]:
        """The network input size (resized, padded) of a ``height`` x ``width`` frame."""
        cfg = self.model_config
        h, w = network_size_for(height, width, self.max_input_width, cfg.input_scale)
        d = max(cfg.size_divisibility, 1)
        return -(-h // d) * d, -(-w // d) * d

    def warmup_frame_size(self, height: int, width: int) -> tuple[int, int]:
        """The frame size to warm up at instead of ``height`` x ``width``.

        Itself, unless the network takes one fixed input size (an export without ``--dynamic``)
        that such frames do not fit: then the nearest frame size that does (or itself when none
        is near, and the warm-up will say why); or unless it has more than ``max_pixels``: then
        the largest size of its shape within them (such frames would be refused anyway).
        """
        fixed = getattr(self.network, "fixed_size", None)
        if fixed is None or self.padded_size(height, width) == tuple(fixed):
            if self.max_pixels and height * width > self.max_pixels:
                shrink = math.sqrt(self.max_pixels / (height * width))
                return max(1, math.floor(height * shrink)), max(1, math.floor(width * shrink))
            return height, width
        scale = self.model_config.input_scale
        base_h, base_w = round(fixed[0] / scale), round(fixed[1] / scale)
        for dh, dw in sorted(itertools.product(range(-2, 3), repeat=2), key=lambda d: abs(d[0]) + abs(d[1])):
            if base_h + dh > 0 and base_w + dw > 0 and self.padded_size(base_h + dh, base_w + dw) == tuple(fixed):
                return base_h + dh, base_w + dw
        return height, width

    def _check_frame_size(self, prep: Prepared) -> None:
        """With ``strict_pool_size``: an :class:`InputError` for a size Detectron2 refuses."""
        cfg = self.model_config
        window = cfg.aspp_pool_kernel_size
        if window is None or not cfg.aspp_strict_pool_size:
            return
        feature = feature_size(prep.tensor.shape[-2], prep.tensor.shape[-1], cfg.output_stride)
        if not detectron2_accepts(feature, window):
            h, w = prep.input_size
            raise InputError(
                f"{self.frame_handling(h, w)}; without strict_pool_size every size works (docs/detectron2.md)"
            )

    # ---------------------------------------------------------------- running
    def _prepare(self, image: np.ndarray) -> Prepared:
        if isinstance(image, np.ndarray) and image.ndim >= 2:
            check_pixels(image.shape[1], image.shape[0], self.max_pixels, "image", "max_pixels")
        prep = prepare_image(
            image,
            self.model_config,
            device=self.device,
            max_input_width=self.max_input_width,
            pin_memory=self.device.type == "cuda",
        )
        self._check_frame_size(prep)
        return prep

    def _network(self, x: Tensor, *, depth: bool) -> dict[str, Tensor]:
        out = self._network_at(x, depth=depth)
        zoomed = []
        for scale in self.scales:
            if scale != 1.0:
                out = self._owned(out)  # the next pass may overwrite a borrowed one
                xs, (h, w) = zoomed_input(x, scale, self.model_config.size_divisibility)
                at_scale = self._owned(self._network_at(xs, depth=depth))
                zoomed.append((scale, {k: v[..., :h, :w] for k, v in at_scale.items()}))
        return average_over_scales(out, zoomed) if zoomed else out

    def _network_at(self, x: Tensor, *, depth: bool) -> dict[str, Tensor]:
        out = self._run_network(x, depth=depth)
        if self.flip_average:
            out = average_with_mirrored(self._owned(out), self._run_network(x.flip(-1), depth=depth))
        return out

    def _owned(self, out: dict[str, Tensor]) -> dict[str, Tensor]:
        """``out`` where the network lends its outputs (valid until its next call): copies the caller keeps.

        An OpenVINO network's outputs are views of its infer request's buffers
        (:attr:`.onnx_backend.ExportedNetwork.reuses_outputs`): one pass uses them in place,
        without a copy of the logits; what outlives the next call (a flip or multi-scale
        pass, a batch's next image, :meth:`raw`, the result's depth) is copied here first.
        """
        return {k: v.clone() for k, v in out.items()} if self._lends_outputs else out

    @property
    def _lends_outputs(self) -> bool:
        """Whether the network's outputs are views of buffers its next call overwrites (see :meth:`_owned`)."""
        return bool(getattr(self.network, "reuses_outputs", False))

    def _run_network(self, x: Tensor, *, depth: bool) -> dict[str, Tensor]:
        """One forward pass; without ``depth`` our own network skips its depth branch.

        A compiled network's outputs are copied before anything else runs, because CUDA
        graphs (``reduce-overhead``, ``max-autotune``) write every call's outputs into the
        same buffers, and a flip or multi-scale pass calls the network again before the first
        outputs are used (an exported network that lends its outputs is copied only where
        that happens: :meth:`_owned`; ``.float().contiguous()`` is no
        copy for float32 NCHW outputs such as ``[1, 1, H, W]``).
        """
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.compiled:
            torch.compiler.cudagraph_mark_step_begin()  # a new inference step: the last outputs are copied
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=self.fp16):
            if not depth and self._can_skip_depth:
                out = self.network(x, with_depth=False)  # type: ignore[call-arg]
            else:
                out = self.network(x)
        # NCHW for what follows: channels-last outputs (CUDA, or weights a trainer left NHWC) break flat views.
        if self.compiled:
            return {
                k: v.to(torch.float32).clone(memory_format=torch.contiguous_format)
                for k, v in out.items()
                if depth or k != "depth"
            }
        return {k: v.float().contiguous() for k, v in out.items() if depth or k != "depth"}

    def synchronize(self) -> None:
        """Wait for this predictor's GPU (``cuda:N``, not the current device); nothing on the CPU."""
        synchronize(self.device)

    def _to_input_size(self, out: dict[str, Tensor], prep: Prepared) -> dict[str, Tensor]:
        """Crop the padding and resize back to the caller's image size.

        Detectron2's ``sem_seg_postprocess``; offsets are also rescaled when the image was resized.
        """
        resized: dict[str, Tensor] = {}

        def resize(name: str) -> None:
            resized[name] = crop_and_resize(out[name][0], prep.network_size, prep.input_size)

        # On CPU each output is resized on one thread, the outputs side by side (parallel.py): torch's
        # threads waiting for each other at every op cost more than the resize (same values either way).
        with cpu_lanes(self.device) as lanes:
            pixels = prep.input_size[0] * prep.input_size[1]
            run_parallel([partial(resize, name) for name in out], lanes_for(pixels, lanes) if prep.resized else 1)
            res = {name: resized[name] for name in out}
            if prep.resized:
                sy = prep.input_size[0] / prep.network_size[0]
                sx = prep.input_size[1] / prep.network_size[1]
                # Resized, so a new tensor: scaled in place per channel by the float32 scalars a [sy, sx]
                # float32 tensor holds (the same products), without copying such a tensor to a GPU.
                res["offset"][0].mul_(float(np.float32(sy)))
                res["offset"][1].mul_(float(np.float32(sx)))
        return res

    def raw(self, image: np.ndarray) -> dict[str, Tensor]:
        """Network outputs at the input resolution.

        ``sem_seg`` [C,H,W] logits, ``center`` [1,H,W], ``offset`` [2,H,W] (dy, dx) pixels,
        ``depth`` [1,H,W] meters: all the network computes, whatever ``untrained_depth`` says.
        """
        prep = self._prepare(image)
        with torch.inference_mode():
            out = self._to_input_size(self._network(prep.tensor, depth=True), prep)
        return out if prep.resized else self._owned(out)  # a resize made new tensors; a crop is a view

    def warm_up(self, height: int, width: int) -> float:
        """Run one mid-grey ``height`` x ``width`` frame end to end; the seconds it took.

        What otherwise surfaces at the first real frame surfaces here, where a start-up
        can still refuse: out of GPU memory, a GPU architecture the wheel has no kernels
        for, a missing Triton, a ``torch.compile`` or a TensorRT engine build (the
        compile and the build also happen here, not on a live frame). Any failure is a
        :class:`WarmUpError` naming the size, the device, the error and what it likely means.
        """
        image = np.full((height, width, 3), 128, dtype=np.uint8)
        start = time.perf_counter()
        try:
            self.predict(image)
            self.synchronize()
        except Exception as exc:  # noqa: BLE001 - whatever it is, the node must not go active with it
            text = f"{type(exc).__name__}: {exc}"
            hints = [hint for words, hint in _WARMUP_HINTS if words in text.lower()]
            raise WarmUpError(
                f"warm-up frame {height}x{width} on {self.device} (backend {self.backend}) failed: {text.strip()}"
                + (f" ({hints[0]})" if hints else "")
            ) from exc
        return time.perf_counter() - start

    def release(self) -> None:
        """Free the network and what it holds; the predictor cannot run afterwards.

        The weights, an onnxruntime session (and its TensorRT engines), the compiled
        graphs (``torch._dynamo.reset()``: dynamo's caches keep the compiled network alive)
        and, on CUDA, the memory torch's allocator kept cached.
        """
        self.network = _released
        gc.collect()
        if self.compiled:
            torch._dynamo.reset()
            self.compiled = False
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()

    def depth_scale(self, camera_k: np.ndarray | None, prep: Prepared) -> float:
        """Factor taking the network's metres (its training camera) to this camera's.

        The network judges distance by apparent size, so a camera whose focal length, in
        the pixels the network sees, is ``s`` times the training one makes everything look
        ``s`` times nearer; the depth it outputs is then ``true / s``. Without a K the
        image is taken to come from the training camera, so only a resize before the
        network (``input_scale``, ``max_input_width``) counts. 1.0 when the checkpoint
        does not record its training camera (``depth_focal_px``).
        """
        f_train = self.model_config.depth_focal_px
        if f_train is None:
            return 1.0
        fx_image = f_train if camera_k is None else float(camera_k[0, 0])
        return fx_image * prep.network_size[1] / prep.input_size[1] / f_train

    def predict(
        self,
        image: np.ndarray,
        *,
        camera_k: np.ndarray | None = None,
        postprocess: PostprocessConfig | None = None,
    ) -> PanopticDepthResult:
        """Segment one image and measure each segment's depth.

        Args:
            image: [H, W, 3] uint8 in **BGR** order (as OpenCV reads it).
            camera_k: optional 3x3 pinhole intrinsics of ``image``: 3D segment centroids,
                and depth rescaled to this camera's focal length (see :meth:`depth_scale`).
            postprocess: fusion / segment-depth settings for this image (default:
                :attr:`postprocess`); a caller with settings of its own passes them here
                rather than changing the predictor's.
        """
        try:
            return self.predict_batch([image], [camera_k], postprocess=postprocess)[0]
        except InputError as exc:
            exc.index = None  # one image: no batch to point into
            raise

    def predict_batch(
        self,
        images: Sequence[np.ndarray],
        camera_ks: Sequence[np.ndarray | None] | None = None,
        *,
        postprocess: PostprocessConfig | None = None,
    ) -> list[PanopticDepthResult]:
        """:meth:`predict` for several images (e.g. one per camera), the network run once per input size.

        Images whose network inputs have the same size go through the network as one
        batch; other sizes form batches of their own (grouped, not padded to a common
        size: padding would change the outputs near the border and the ASPP image pooling,
        and measured slower on a CPU, see docs/multi-camera.md).  Each result is what
        :meth:`predict` gives for that image and its K (within float tolerance), with the
        batch's network time as its ``network`` timing.  A bad image or K raises an
        :class:`InputError` whose ``index`` names it; nothing is run then.
        """
        config = self.postprocess if postprocess is None else postprocess
        ks: list[np.ndarray | None] = [None] * len(images) if camera_ks is None else list(camera_ks)
        if len(ks) != len(images):
            raise ValueError(f"{len(images)} images but {len(ks)} camera matrices")
        sync = self.synchronize
        preps: list[Prepared] = []
        prep_s: list[float] = []
        for i, (image, k) in enumerate(zip(images, ks, strict=True)):
            t0 = time.perf_counter()
            try:
                ks[i] = checked_camera_k(k)
                preps.append(self._prepare(image))
            except InputError as exc:
                where = f"image {i} of {len(images)}: " if len(images) > 1 else ""
                raise InputError(f"{where}{exc}", kind=exc.kind, index=i) from exc
            sync()
            prep_s.append(time.perf_counter() - t0)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, prep in enumerate(preps):
            groups.setdefault(tuple(prep.tensor.shape), []).append(i)
        results: list[PanopticDepthResult | None] = [None] * len(images)
        with torch.inference_mode():
            for members in groups.values():
                t1 = time.perf_counter()
                out = self._network_batch([preps[i].tensor for i in members])
                sync()
                network_s = time.perf_counter() - t1
                for j, i in enumerate(members):
                    one = {name: v[j : j + 1] for name, v in out.items()}
                    results[i] = self._finish(one, preps[i], ks[i], config, prep_s[i], network_s)
        return [r for r in results if r is not None]

    def _network_batch(self, tensors: list[Tensor]) -> dict[str, Tensor]:
        """One network pass over same-size inputs ([1, 3, Hp, Wp] each) -> outputs [N, ...].

        A backend that takes one image at a time (an ONNX export with a fixed batch of 1)
        runs them in turn.
        """
        if len(tensors) == 1:
            return self._network(tensors[0], depth=self.depth_enabled)
        if getattr(self.network, "batchable", True):
            return self._network(torch.cat(tensors), depth=self.depth_enabled)
        outs = [self._owned(self._network(t, depth=self.depth_enabled)) for t in tensors[:-1]]
        outs.append(self._network(tensors[-1], depth=self.depth_enabled))  # the cat below copies it
        return {name: torch.cat([o[name] for o in outs]) for name in outs[0]}

    def _finish(
        self,
        out: dict[str, Tensor],
        prep: Prepared,
        camera_k: np.ndarray | None,
        config: PostprocessConfig,
        preprocess_s: float,
        network_s: float,
    ) -> PanopticDepthResult:
        """One image's network outputs ([1, ...]) -> fused, measured result at its input size."""
        sync = self.synchronize
        t2 = time.perf_counter()
        # One thread per op from here on (parallel.py): on a busy CPU, torch's threads waiting for
        # each other at every op cost more than the ops (a 73k-pixel multiply took 5 ms with two).
        with cpu_lanes(self.device):
            out = self._to_input_size(out, prep)
            depth_scale = self.depth_scale(camera_k, prep) if self.depth_enabled else 1.0
            if depth_scale != 1.0:
                out["depth"] = out["depth"] * depth_scale
            fused = panoptic_fusion(out["sem_seg"], out["center"], out["offset"], classes=self.classes, config=config)
            sync()
            t3 = time.perf_counter()
            segments = segment_depth_statistics(
                fused.panoptic,
                out["depth"][0] if self.depth_enabled else None,
                classes=self.classes,
                config=config,
                sem_logits=out["sem_seg"],
                center=out["center"],
                camera_k=camera_k if self.depth_enabled else None,
                segments=fused.segments,
                class_probability=fused.class_probability,
            )
            panoptic = fused.panoptic.cpu().numpy()
            semantic = fused.semantic.to(torch.uint8).cpu().numpy()
            depth = None
            if self.depth_enabled:  # the result's own: a lending network's buffer changes with the next frame
                depth_map = out["depth"][0].clone() if self._lends_outputs else out["depth"][0]
                depth = depth_map.cpu().numpy().astype(np.float32, copy=False)
        t4 = time.perf_counter()
        return PanopticDepthResult(
            panoptic=panoptic,
            semantic=semantic,
            depth=depth,
            segments=segments,
            label_divisor=self.classes.label_divisor,
            depth_scale=depth_scale,
            timings={
                "preprocess": preprocess_s,
                "network": network_s,
                "fusion": t3 - t2,
                "segment_depth": t4 - t3,
                "total": preprocess_s + network_s + (t4 - t2),
            },
        )

    def track(
        self,
        frames: Iterable[tuple[float, np.ndarray] | tuple[float, np.ndarray, EgoMotion | None]],
        *,
        camera_k: np.ndarray | None = None,
        tracker: Tracker | None = None,
    ) -> Iterator[PanopticDepthResult]:
        """Predict a sequence of ``(stamp_s, image)`` and track its things: one tracked result per frame.

        ``stamp_s``: the frame's time in seconds (the camera's, never the wall clock;
        a dropped frame just widens the step, a jump back resets the tracks). An item
        ``(stamp_s, image, ego)`` also gives the camera's own motion at that frame
        (:class:`~.ego_motion.EgoMotion`, from odometry; None: unknown), with which parked
        things get the world's velocity exactly. ``camera_k`` as in :meth:`predict`
        (without it vx, vy stay unknown). ``tracker``: one to continue (e.g. with a
        :class:`~.tracker.TrackerConfig` of your own); default a fresh one; it is given each
        image too, for the segments' colours.  Each result's segments carry their track id,
        age, velocity and time to contact (:meth:`PanopticDepthResult.with_tracks`).
        """
        tracker = Tracker() if tracker is None else tracker
        for item in frames:
            stamp_s, image = item[0], item[1]
            ego = item[2] if len(item) > 2 else None
            result = self.predict(image, camera_k=camera_k)
            yield result.with_tracks(tracker.update(result, stamp_s=stamp_s, image=image, ego=ego).tracks)
