"""Run an exported ONNX network with onnxruntime behind the Predictor's network interface.

CUDA / TensorRT execution providers are used when the installed onnxruntime has
them (and the device is CUDA); otherwise the CPU provider.  Fusion and segment
depth stay in torch, exactly as with the torch backend.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .checkpoint import parse_description, require_file
from .errors import CheckpointError, InputError
from .export import SIDECAR_FORMAT, sidecar_path
from .fields import check_bool, check_int
from .fusion import PostprocessConfig
from .metadata import ClassMetadata
from .model import OUTPUT_NAMES, ModelConfig


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
    """

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
    fusion that follows each run (see docs/performance.md).
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
    ) -> None:
        super().__init__(path, device=device, fixed_size=fixed_size, min_size=min_size)
        import onnxruntime as ort  # noqa: PLC0415 - optional dependency

        available = ort.get_available_providers()
        wanted = ["CPUExecutionProvider"]
        if device.type == "cuda":
            wanted = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in available] + wanted
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=wanted)
        except Exception as exc:  # onnxruntime's own exception types are not importable portably
            raise CheckpointError(path, f"onnxruntime cannot load it: {exc}") from exc
        names = [o.name for o in self.session.get_outputs()]
        if names != list(OUTPUT_NAMES):
            raise CheckpointError(path, f"outputs are {names}, expected {list(OUTPUT_NAMES)}")
        self.input_name = self.session.get_inputs()[0].name
        self.providers = self.session.get_providers()

    def __call__(self, x: Tensor) -> dict[str, Tensor]:  # noqa: D102
        self.check_input(x)
        outs = self.session.run(None, {self.input_name: np.ascontiguousarray(x.detach().cpu().numpy())})
        return {n: torch.from_numpy(o).to(self.device) for n, o in zip(OUTPUT_NAMES, outs, strict=True)}
