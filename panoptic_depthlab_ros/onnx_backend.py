"""Run an exported ONNX network with onnxruntime behind the Predictor's network interface.

On the CPU: the CPU provider. On a CUDA device (:class:`ProviderSettings`): the CUDA
provider on that device, and TensorRT before it when the installed onnxruntime lists it
(its engines cached on disk, so the minutes-long build happens once per export and
GPU; fp16 when asked). The providers the session actually got are checked against
those asked and logged: a CPU-only ``onnxruntime`` package, or CUDA / cuDNN / TensorRT
libraries that do not load, would otherwise run on the CPU in silence. On CUDA the
input and outputs stay on the GPU (IO binding of torch tensors). Fusion and segment
depth stay in torch, exactly as with the torch backend.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .checkpoint import parse_description, require_file
from .errors import CheckpointError, InputError, PanopticDepthLabError
from .export import SIDECAR_FORMAT, sidecar_path
from .fields import check_bool, check_int
from .fusion import PostprocessConfig
from .metadata import ClassMetadata
from .model import OUTPUT_NAMES, ModelConfig

LOGGER = logging.getLogger(__name__)

CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"
TENSORRT_PROVIDER = "TensorrtExecutionProvider"
# Environment variables read by ProviderSettings.from_env (the runtime's settings until they
# are options of the tools and the node).
ENV_TENSORRT = "PANOPTIC_DEPTHLAB_TENSORRT"  # auto | on | off
ENV_TENSORRT_FP16 = "PANOPTIC_DEPTHLAB_TENSORRT_FP16"  # 1 | 0
ENV_ENGINE_CACHE = "PANOPTIC_DEPTHLAB_ENGINE_CACHE"  # a folder
ENV_MISSING_PROVIDER = "PANOPTIC_DEPTHLAB_MISSING_PROVIDER"  # error | warn


def default_engine_cache() -> Path:
    """Where TensorRT engines are kept by default: the user's cache folder (XDG)."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "panoptic_depthlab" / "tensorrt"


@dataclass(frozen=True)
class ProviderSettings:
    """How onnxruntime runs an export on a CUDA device.

    ``tensorrt``: ``auto`` (TensorRT first when this onnxruntime lists it; when it does
    not load, a warning and CUDA), ``on`` (required) or ``off``. ``tensorrt_fp16``: let
    TensorRT build float16 kernels (faster, moves results like the torch backend's fp16).
    ``engine_cache``: the folder of built engines (one sub-folder per export file;
    default :func:`default_engine_cache`). ``on_missing``: when a provider that was asked
    for (CUDA on a CUDA device; TensorRT when ``on``) is not what the session got,
    ``error`` refuses to load, ``warn`` logs a warning and runs on what it got.
    """

    tensorrt: str = "auto"
    tensorrt_fp16: bool = False
    engine_cache: Path | None = None
    on_missing: str = "error"

    def __post_init__(self) -> None:
        if self.tensorrt not in ("auto", "on", "off"):
            raise PanopticDepthLabError(f"{ENV_TENSORRT} / tensorrt must be auto, on or off, got {self.tensorrt!r}")
        if self.on_missing not in ("error", "warn"):
            raise PanopticDepthLabError(
                f"{ENV_MISSING_PROVIDER} / on_missing must be error or warn, got {self.on_missing!r}"
            )

    @classmethod
    def from_env(cls) -> ProviderSettings:
        """The settings the ``PANOPTIC_DEPTHLAB_*`` environment variables give (defaults for the others)."""
        fp16 = os.environ.get(ENV_TENSORRT_FP16, "0").strip().lower()
        if fp16 not in ("0", "1", "false", "true", ""):
            raise PanopticDepthLabError(f"{ENV_TENSORRT_FP16} must be 0 or 1, got {fp16!r}")
        cache = os.environ.get(ENV_ENGINE_CACHE, "").strip()
        return cls(
            tensorrt=os.environ.get(ENV_TENSORRT, "auto").strip().lower() or "auto",
            tensorrt_fp16=fp16 in ("1", "true"),
            engine_cache=Path(cache) if cache else None,
            on_missing=os.environ.get(ENV_MISSING_PROVIDER, "error").strip().lower() or "error",
        )


def engine_folder(path: str | Path, cache: Path | None) -> Path:
    """The engine cache folder of export ``path``: its name plus a digest of its size and time.

    A re-exported file gets a new folder, so a stale engine is never loaded for it.
    """
    path = Path(path)
    stat = path.stat()
    digest = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return (cache or default_engine_cache()) / f"{path.stem}-{digest}"


def provider_request(
    device: torch.device, available: list[str], settings: ProviderSettings, engine_dir: Path | None
) -> tuple[list[tuple[str, dict[str, str]]], list[str]]:
    """The providers to ask for, with their options, and those that must be obtained.

    CPU device: the CPU provider only. CUDA device ``cuda:N``: TensorRT (``settings``;
    ``device_id`` N, engine and timing caches in ``engine_dir``, fp16 when asked), then
    CUDA (``device_id`` N), then the CPU for what neither runs.
    """
    cpu: tuple[str, dict[str, str]] = (CPU_PROVIDER, {})
    if device.type != "cuda":
        return [cpu], []
    device_id = str(device.index or 0)
    request: list[tuple[str, dict[str, str]]] = []
    required = [CUDA_PROVIDER]
    if settings.tensorrt == "on" or (settings.tensorrt == "auto" and TENSORRT_PROVIDER in available):
        trt = {"device_id": device_id, "trt_fp16_enable": str(settings.tensorrt_fp16)}
        if engine_dir is not None:
            trt |= {
                "trt_engine_cache_enable": "True",
                "trt_engine_cache_path": str(engine_dir),
                "trt_timing_cache_enable": "True",
                "trt_timing_cache_path": str(engine_dir),
            }
        request.append((TENSORRT_PROVIDER, trt))
        if settings.tensorrt == "on":
            required.insert(0, TENSORRT_PROVIDER)
    request += [(CUDA_PROVIDER, {"device_id": device_id}), cpu]
    return request, required


def missing_providers(
    path: str | Path,
    device: torch.device,
    request: list[tuple[str, dict[str, str]]],
    required: list[str],
    obtained: list[str],
    available: list[str],
) -> tuple[str | None, str | None]:
    """(the error for a required provider not obtained, the warning for an optional one), or None each."""

    def why(name: str) -> str:
        if name not in available:
            return (
                f"this onnxruntime has no {name} (the CPU-only 'onnxruntime' package? install 'onnxruntime-gpu'"
                " built for this CUDA)"
            )
        return (
            f"{name} did not load (CUDA, cuDNN or TensorRT libraries missing or of another version: see the log above)"
        )

    asked = [name for name, _ in request]
    lost = [name for name in asked if name not in obtained and name != CPU_PROVIDER]
    error = [name for name in lost if name in required]
    where = f"{path} on {device}: onnxruntime was asked for {', '.join(asked)} and got {', '.join(obtained)}"
    return (
        f"{where}; {'; '.join(why(n) for n in lost)}" if error else None,
        f"{where}; {'; '.join(why(n) for n in lost)}" if lost and not error else None,
    )


def read_export_description(path: str | Path) -> dict[str, Any]:
    """The export description: the ONNX file's own metadata, else its ``.json`` sidecar."""
    import onnx  # noqa: PLC0415 - optional dependency

    path = Path(path)
    require_file(path)
    try:
        graph = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, ValueError, ... for garbage
        raise CheckpointError(path, f"not a valid ONNX model ({type(exc).__name__}: {exc})") from exc
    meta = {p.key: p.value for p in graph.metadata_props}
    try:
        if "panoptic_depthlab" in meta:
            desc = json.loads(meta["panoptic_depthlab"])
        elif sidecar_path(path).is_file():
            desc = json.loads(sidecar_path(path).read_text())
        else:
            raise CheckpointError(path, "no panoptic-depthlab export description (metadata or .json sidecar)")
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise CheckpointError(path, f"export description is not JSON: {exc}") from exc
    if not isinstance(desc, dict) or desc.get("format") != SIDECAR_FORMAT:
        found = desc.get("format") if isinstance(desc, dict) else type(desc).__name__
        raise CheckpointError(path, f"export description has format {found!r}")
    parse_export_description(path, desc)  # every field checked now, not on the first frame
    return desc


def parse_export_description(
    path: str | Path, desc: dict[str, Any]
) -> tuple[ModelConfig, ClassMetadata, PostprocessConfig, tuple[int, int] | None, tuple[int, int]]:
    """Model config (with the export's padding), classes, fusion settings, fixed and smallest size, all checked."""
    config, classes, post, _ = parse_description(
        path, desc.get("model_config"), desc.get("classes"), desc.get("postprocess", {})
    )
    try:
        pre, shape = desc.get("preprocessing"), desc.get("shape")
        if not isinstance(pre, dict) or not isinstance(shape, dict):
            raise ValueError("needs the mappings preprocessing and shape")
        config = config.with_(size_divisibility=pre.get("size_divisibility"))
        check_bool("shape.dynamic", shape.get("dynamic"))
        fixed = None
        if not shape["dynamic"]:
            check_int("shape.height", shape.get("height"), 32, 1 << 16)
            check_int("shape.width", shape.get("width"), 32, 1 << 16)
            fixed = (shape["height"], shape["width"])
        smallest = (shape.get("min_height", 1), shape.get("min_width", 1))  # the ASPP window, traced
        check_int("shape.min_height", smallest[0], 1, 1 << 16)
        check_int("shape.min_width", smallest[1], 1, 1 << 16)
    except ValueError as exc:
        raise CheckpointError(path, f"invalid export description: {exc}") from exc
    return config, classes, post, fixed, smallest


def describe_export(path: str | Path) -> dict[str, Any]:
    """An export's description in :func:`~.checkpoint.describe_checkpoint`'s shape (for ``info``)."""
    desc = read_export_description(path)
    shape = desc["shape"]
    size = "any size" if shape["dynamic"] else f"{shape['height']}x{shape['width']}"
    precision = " INT8" if desc.get("precision") == "int8" else ""
    return {
        "file": str(path),
        "bytes": Path(path).stat().st_size,
        "kind": f"ONNX{precision} export ({size})",
        **{k: desc[k] for k in ("model_config", "classes", "postprocess", "calibration") if k in desc},
    }


class ExportedNetwork:
    """What every runtime of an export shares: its file and the input sizes its description allows.

    ``fixed_size``: the (padded) input size of an export without ``--dynamic``; other
    sizes are refused with an :class:`InputError` naming both. ``min_size``: the smallest
    input a ``--dynamic`` export takes (its ASPP pooling window was fixed when it was traced).
    :attr:`batchable`: whether one call takes several images (our exports fix the batch at 1,
    so the predictor runs a batch's images in turn). :attr:`reuses_outputs`: whether the
    outputs are views of buffers the next call overwrites (the predictor copies what it
    keeps longer, :meth:`.predictor.Predictor._owned`).
    """

    batchable = False
    reuses_outputs = False

    def __init__(
        self,
        path: str | Path,
        *,
        device: torch.device,
        fixed_size: tuple[int, int] | None = None,
        min_size: tuple[int, int] = (1, 1),
    ) -> None:
        self.path = Path(path)
        self.device = device
        self.fixed_size = fixed_size
        self.min_size = min_size

    def __call__(self, x: Tensor) -> dict[str, Tensor]:
        """``[1, 3, H, W]`` normalised, padded image -> the four outputs (see :mod:`.export`)."""
        raise NotImplementedError

    def check_input(self, x: Tensor) -> None:
        """An :class:`InputError` for an input size the export does not take."""
        if self.fixed_size is not None and tuple(x.shape[-2:]) != self.fixed_size:
            h, w = self.fixed_size
            raise InputError(
                f"{self.path} was exported for {h}x{w} inputs, this frame needs {x.shape[-2]}x{x.shape[-1]}"
                " (after padding): export it with --dynamic, or at this size"
            )
        if x.shape[-2] < self.min_size[0] or x.shape[-1] < self.min_size[1]:
            raise InputError(
                f"{self.path} takes inputs of at least {self.min_size[0]}x{self.min_size[1]} (its ASPP pooling window),"
                f" this frame is {x.shape[-2]}x{x.shape[-1]} after padding: run the checkpoint with the torch backend"
            )


class OnnxNetwork(ExportedNetwork):
    """Callable ``[1,3,H,W] tensor -> {sem_seg, center, offset, depth}`` over an ORT session.

    ``threads``: intra-op threads (see :func:`.backends.intra_op_threads`). The pool does
    not spin between runs: on a few cores its spinning threads took the CPU from the
    fusion that follows each run (see docs/performance.md). ``providers``: how it runs on
    a CUDA device (default: :meth:`ProviderSettings.from_env`); :attr:`providers` is what
    the session got.
    """

    backend = "onnxruntime"

    def __init__(
        self,
        path: str | Path,
        *,
        device: torch.device,
        threads: int,
        fixed_size: tuple[int, int] | None = None,
        min_size: tuple[int, int] = (1, 1),
        providers: ProviderSettings | None = None,
    ) -> None:
        super().__init__(path, device=device, fixed_size=fixed_size, min_size=min_size)
        import onnxruntime as ort  # noqa: PLC0415 - optional dependency

        settings = providers or ProviderSettings.from_env()
        available = ort.get_available_providers()
        engine_dir = engine_folder(path, settings.engine_cache) if device.type == "cuda" else None
        request, required = provider_request(device, available, settings, engine_dir)
        if engine_dir is not None and any(name == TENSORRT_PROVIDER for name, _ in request):
            try:
                engine_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise CheckpointError(path, f"cannot create the TensorRT engine cache {engine_dir}: {exc}") from exc
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(
                str(path),
                sess_options=options,
                providers=[name for name, _ in request],
                provider_options=[opts for _, opts in request],
            )
        except Exception as exc:  # onnxruntime's own exception types are not importable portably
            raise CheckpointError(path, f"onnxruntime cannot load it: {exc}") from exc
        self.providers: list[str] = self.session.get_providers()
        error, warning = missing_providers(path, device, request, required, self.providers, available)
        if error is not None and settings.on_missing == "error":
            raise CheckpointError(path, f"{error} ({ENV_MISSING_PROVIDER}=warn runs it on {self.providers[0]} anyway)")
        if error is not None or warning is not None:
            LOGGER.warning("%s: RUNNING ON %s", error or warning, self.providers[0])
        LOGGER.info("%s: onnxruntime providers %s on %s", path, ", ".join(self.providers), device)
        outputs = self.session.get_outputs()
        names = [o.name for o in outputs]
        if names != list(OUTPUT_NAMES):
            raise CheckpointError(path, f"outputs are {names}, expected {list(OUTPUT_NAMES)}")
        self.input_name = self.session.get_inputs()[0].name
        self.batchable = not isinstance(self.session.get_inputs()[0].shape[0], int)
        # Output channels, for output buffers bound before a run (None: not known from the graph).
        channels = [o.shape[1] if len(o.shape) == 4 and o.type == "tensor(float)" else None for o in outputs]
        self.output_channels = [c if isinstance(c, int) else None for c in channels]
        self.on_device = device.type == "cuda" and self.providers[0] != CPU_PROVIDER
        self.io_binding = self.on_device and None not in self.output_channels

    def __call__(self, x: Tensor) -> dict[str, Tensor]:  # noqa: D102
        self.check_input(x)
        if self.io_binding:
            return self.run_bound(x)
        outs = self.session.run(None, {self.input_name: np.ascontiguousarray(x.detach().cpu().numpy())})
        return {n: torch.from_numpy(o).to(self.device) for n, o in zip(OUTPUT_NAMES, outs, strict=True)}

    def run_bound(self, x: Tensor) -> dict[str, Tensor]:
        """Run with the input and fresh output tensors bound where they live (no copy through the host).

        On CUDA, torch's stream is synchronised first (the input is written) and
        onnxruntime synchronises its own at the end of the run (the outputs are written).
        """
        x = x.detach().to(torch.float32).contiguous()
        kind = "cuda" if x.is_cuda else "cpu"
        index = x.device.index or 0
        binding = self.session.io_binding()
        binding.bind_input(self.input_name, kind, index, np.float32, tuple(x.shape), x.data_ptr())
        outs: dict[str, Tensor] = {}
        for name, channels in zip(OUTPUT_NAMES, self.output_channels, strict=True):
            if channels is None:
                raise CheckpointError(self.path, f"output {name} has no fixed channel count to bind")
            out = torch.empty((x.shape[0], channels, x.shape[2], x.shape[3]), dtype=torch.float32, device=x.device)
            binding.bind_output(name, kind, index, np.float32, tuple(out.shape), out.data_ptr())
            outs[name] = out
        if x.is_cuda:
            torch.cuda.current_stream(x.device).synchronize()
        self.session.run_with_iobinding(binding)
        return outs
