"""Which runtime runs the network, and with how many threads.

Backends (``Predictor.from_checkpoint(path, backend=...)``, ``--backend`` of ``infer``,
``bag`` and ``evaluate``, the node's ``backend`` parameter):

* ``torch``: our ``.safetensors`` checkpoint in PyTorch (any device; the only backend
  for a checkpoint).
* ``onnxruntime``: an exported ``.onnx`` (fp32 or ``export --int8``) in onnxruntime
  (CUDA / TensorRT providers when the device is CUDA).
* ``openvino``: the same ``.onnx`` in OpenVINO, CPU only: on this project's CPUs the
  fastest way to run an export, by far for the INT8 one (docs/performance.md).
* ``auto``: the rule :func:`choose_backend` states: a checkpoint runs in torch; an export
  in OpenVINO when it is installed and the device is the CPU, else in onnxruntime.

Threads (:func:`intra_op_threads`): every backend uses torch's intra-op thread count
(``torch.get_num_threads()``: the physical cores by default; the node's ``num_threads``
parameter sets it), so one setting governs the network and the fusion. OpenVINO runs one
stream under its latency hint, since frames come one at a time.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .errors import PanopticDepthLabError
from .fusion import PostprocessConfig
from .metadata import ClassMetadata
from .model import ModelConfig

if TYPE_CHECKING:
    from .onnx_backend import ExportedNetwork

BACKENDS = ("auto", "torch", "onnxruntime", "openvino")
BACKENDS_TEXT = (
    "auto (checkpoint: torch; .onnx export: openvino when installed and on the CPU, else onnxruntime),"
    " torch, onnxruntime or openvino"
)
EXPORT_SUFFIX = ".onnx"
# What OpenVINO's float layers compute in. f32: bfloat16 (OpenVINO's own default on CPUs with
# AMX / AVX512-BF16) measured 2.9x faster for the fp32 export but moved AbsRel and PQ
# (docs/performance.md), and a product must give the accuracy its export was measured at.
OPENVINO_PRECISION = "f32"
_PACKAGES = {"onnxruntime": "onnxruntime", "openvino": "openvino"}
_EXTRAS = {"onnxruntime": "onnx", "openvino": "openvino"}


def installed(backend: str) -> bool:
    """Whether ``backend``'s runtime can be imported here (torch always can)."""
    package = _PACKAGES.get(backend)
    return package is None or _importable(package)


def _importable(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):  # a module blocked (None in sys.modules) or broken
        return False


def choose_backend(path: str | Path, backend: str = "auto", *, device: torch.device | None = None) -> str:
    """The backend that runs ``path``: ``backend`` itself, or what ``auto`` picks.

    ``auto``: a checkpoint (anything but ``.onnx``) -> ``torch``; an ``.onnx`` export ->
    ``openvino`` when installed and ``device`` is the CPU (the fastest measured, fp32 and
    INT8), else ``onnxruntime``. A backend that cannot run ``path`` is an error naming both.
    """
    if backend not in BACKENDS:
        raise PanopticDepthLabError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    export = Path(path).suffix.lower() == EXPORT_SUFFIX
    cpu = device is None or device.type == "cpu"
    if backend == "auto":
        if not export:
            return "torch"
        return "openvino" if cpu and installed("openvino") else "onnxruntime"
    if export and backend == "torch":
        raise PanopticDepthLabError(
            f"{path} is an exported ONNX network: run it with backend onnxruntime, openvino or auto"
        )
    if not export and backend != "torch":
        raise PanopticDepthLabError(
            f"backend {backend} runs an exported .onnx network; {path} is not one"
            " (export it with panoptic-depthlab export, or use backend torch)"
        )
    if backend == "openvino" and not cpu:
        raise PanopticDepthLabError(f"backend openvino runs on the CPU, not on {device} (use --device cpu)")
    return backend


def intra_op_threads() -> int:
    """Threads one network run may use: torch's setting, shared by every backend (see module doc)."""
    return max(1, torch.get_num_threads())


def require_installed(backend: str) -> None:
    """A one-line error naming the missing package and how to install it."""
    if not installed(backend):
        raise PanopticDepthLabError(
            f"backend {backend} needs the {_PACKAGES[backend]} package, which is not installed:"
            f" pip install 'panoptic-depthlab-ros[{_EXTRAS[backend]}]' (or backend auto)"
        )


def load_exported_network(
    path: str | Path, backend: str, *, device: torch.device
) -> tuple[ExportedNetwork, ModelConfig, ClassMetadata, PostprocessConfig]:
    """An export's network in ``backend`` (onnxruntime or openvino) + what feeding and fusing it needs."""
    require_installed(backend)
    if not _importable("onnx"):
        raise PanopticDepthLabError(
            f"reading {path} needs the onnx package, which is not installed: pip install 'panoptic-depthlab-ros[onnx]'"
        )
    from .onnx_backend import OnnxNetwork, parse_export_description, read_export_description  # noqa: PLC0415

    config, classes, post, fixed, smallest = parse_export_description(path, read_export_description(path))
    network: ExportedNetwork
    if backend == "openvino":
        from .openvino_backend import OpenVinoNetwork  # noqa: PLC0415 - optional dependency

        network = OpenVinoNetwork(
            path,
            device=device,
            threads=intra_op_threads(),
            precision=OPENVINO_PRECISION,
            fixed_size=fixed,
            min_size=smallest,
        )
    else:
        network = OnnxNetwork(path, device=device, threads=intra_op_threads(), fixed_size=fixed, min_size=smallest)
    return network, config, classes, post
