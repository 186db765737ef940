"""Run an exported ONNX network with OpenVINO behind the Predictor's network interface.

OpenVINO reads the export's ONNX file itself (fp32 or the QDQ INT8 of ``export --int8``)
and compiles it for this CPU: on CPUs with AMX or AVX512-VNNI the INT8 convolutions run
on those units, which is where the speed of the INT8 export comes from
(docs/performance.md). Fusion and segment depth stay in torch, as with every backend.

The compiled model is for one input size: a ``--dynamic`` export is compiled again for
each new size (the few most recent are kept), which is faster per frame than OpenVINO's
dynamic shapes.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .errors import CheckpointError
from .model import OUTPUT_NAMES
from .onnx_backend import ExportedNetwork

# How many compiled sizes a --dynamic export keeps (a camera has one size; a folder may have several).
COMPILED_SIZES = 4
PRECISIONS = ("f32", "bf16")


class OpenVinoNetwork(ExportedNetwork):
    """Callable ``[1,3,H,W] tensor -> {sem_seg, center, offset, depth}`` over an OpenVINO compiled model.

    ``threads``: inference threads (see :func:`.backends.intra_op_threads`); one stream
    with the latency hint, as frames come one at a time. ``precision``: what float layers
    compute in, ``f32`` or ``bf16`` (see :data:`.backends.OPENVINO_PRECISION`).
    """

    backend = "openvino"
    # Its outputs are the infer request's own buffers, not copies of them: copying the
    # logits alone costs a few % of a frame (docs/performance.md#cpu-backends-and-int8).
    reuses_outputs = True

    def __init__(
        self,
        path: str | Path,
        *,
        device: torch.device,
        threads: int,
        precision: str = "f32",
        fixed_size: tuple[int, int] | None = None,
        min_size: tuple[int, int] = (1, 1),
    ) -> None:
        super().__init__(path, device=device, fixed_size=fixed_size, min_size=min_size)
        import openvino as ov  # noqa: PLC0415 - optional dependency

        if precision not in PRECISIONS:
            raise ValueError(f"OpenVINO precision must be one of {PRECISIONS}, got {precision!r}")
        self.precision = precision
        self.core = ov.Core()
        self.config: dict[str, Any] = {
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
            "INFERENCE_NUM_THREADS": threads,
            "INFERENCE_PRECISION_HINT": precision,
        }
        try:
            self.model = self.core.read_model(str(path))
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses with long C++ traces
            raise CheckpointError(path, f"OpenVINO cannot read it: {_first_line(exc)}") from exc
        names = [o.get_any_name() for o in self.model.outputs]
        if names != list(OUTPUT_NAMES):
            raise CheckpointError(path, f"outputs are {names}, expected {list(OUTPUT_NAMES)}")
        self._compiled: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        if fixed_size is not None:
            self._request((1, 3, *fixed_size))  # compile now: a broken export fails at load, not on a frame

    def _request(self, shape: tuple[int, ...]) -> Any:
        """The infer request of the model compiled for ``shape`` (compiled on first use)."""
        if shape in self._compiled:
            self._compiled.move_to_end(shape)
            return self._compiled[shape]
        model = self.model if self.model.inputs[0].get_partial_shape().is_static else self.model.clone()
        if not model.inputs[0].get_partial_shape().is_static:
            model.reshape({0: list(shape)})
        try:
            compiled = self.core.compile_model(model, "CPU", self.config)
        except Exception as exc:  # noqa: BLE001 - see read_model
            raise CheckpointError(self.path, f"OpenVINO cannot compile it: {_first_line(exc)}") from exc
        self._compiled[shape] = compiled.create_infer_request()
        while len(self._compiled) > COMPILED_SIZES:
            self._compiled.popitem(last=False)
        return self._compiled[shape]

    def __call__(self, x: Tensor) -> dict[str, Tensor]:  # noqa: D102
        self.check_input(x)
        data = np.ascontiguousarray(x.detach().cpu().numpy())
        request = self._request(tuple(data.shape))
        request.infer({0: data})
        # Views of the request's output buffers, which its next call overwrites (reuses_outputs).
        return {
            n: torch.from_numpy(request.get_output_tensor(i).data).to(self.device) for i, n in enumerate(OUTPUT_NAMES)
        }


def _first_line(exc: BaseException) -> str:
    """OpenVINO's messages start with C++ source locations; the first line that is not one says why."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    reasons = [ln for ln in lines if not ln.startswith(("Exception from", "Check '"))]
    return (reasons or lines or [type(exc).__name__])[0]
