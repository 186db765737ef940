"""INT8 exports: post-training static quantization of the exported network with onnxruntime's tools.

    panoptic-depthlab export CKPT OUT.onnx --int8 --calibration SOURCE [--calibration-frames N]

The fp32 ONNX that ``export`` writes is quantized in QDQ form (QuantizeLinear /
DequantizeLinear pairs around each quantized operator, a format onnxruntime and
OpenVINO both run as INT8): weights int8, symmetric, one scale per output channel;
activations uint8 with a zero point (u8s8, what x86 VNNI / AMX units multiply), their
ranges fixed by running the network on calibration frames (:mod:`.calibration`).

What stays float (:data:`KEEP_FLOAT`) and the calibration method (:data:`DEFAULT_METHOD`)
were chosen by measuring the bundled model on a synthetic split held apart for choices;
the figures are in docs/performance.md. The export's description records the calibration
(source, frames, method, what stayed float): ``panoptic-depthlab info`` shows it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .calibration import DEFAULT_FRAMES, CalibrationError, CalibrationFrames, network_inputs
from .model import ModelConfig

METHODS = ("minmax", "entropy", "percentile")
DEFAULT_METHOD = "entropy"
# Parts of the network left in float, as module paths. "outputs": the upsampling to the input
# size and the depth head's conversion to metres (always float: 8 bits over 0.5-150 m would be
# 2 % steps, and quantized full-size maps tie centers and classes). The rest: measured.
ALWAYS_FLOAT = ("outputs",)
KEEP_FLOAT: tuple[str, ...] = (
    "sem_seg_head.predictor",
    "ins_embed_head.center_predictor",
    "ins_embed_head.offset_predictor",
    "depth_head.predictor",
)
# Operators quantized (the rest stays float): the convolutions and what joins them, so that
# tensors flow in int8 from one convolution to the next.
QUANTIZED_OPS = ("Conv", "Add", "Concat", "Resize", "MaxPool", "AveragePool", "GlobalAveragePool")


@dataclass(frozen=True)
class Int8Settings:
    """How to quantize: calibration source and frames, method, parts kept float."""

    calibration: Path
    frames: int = DEFAULT_FRAMES
    method: str = DEFAULT_METHOD
    keep_float: tuple[str, ...] = KEEP_FLOAT
    image_topic: str | None = None  # a bag's image topic (default: its only one)

    def check(self) -> None:
        """A :class:`CalibrationError` for a setting that cannot work (before anything is exported)."""
        if self.method not in METHODS:
            raise CalibrationError(f"calibration method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.frames < 1:
            raise CalibrationError(f"--calibration-frames must be at least 1, got {self.frames}")
        for package in ("onnxruntime", "onnx"):
            if importlib.util.find_spec(package) is None:
                raise CalibrationError(
                    f"--int8 needs the {package} package, which is not installed:"
                    " pip install 'panoptic-depthlab-ros[onnx]'"
                )


def float_nodes(node_names: Iterable[str], parts: Iterable[str]) -> list[str]:
    """The ONNX nodes of ``parts`` (module paths like ``depth_head.predictor``, or ``outputs``).

    The exporter names each node after its module (``/model/depth_head/predictor/Conv``);
    ``outputs`` are the nodes of the top-level module (``/model/Resize``, ``/model/Exp``).
    """
    prefixes = ["/model/" + p.replace(".", "/") + "/" for p in parts if p != "outputs"]
    top_level = "outputs" in parts
    return [
        n
        for n in node_names
        if any(n.startswith(p) for p in prefixes) or (top_level and n.startswith("/model/") and n.count("/") == 2)
    ]


class _Frames:
    """onnxruntime's CalibrationDataReader protocol over our prepared inputs."""

    def __init__(self, inputs: Iterable[np.ndarray]) -> None:
        self._inputs = iter(inputs)

    def get_next(self) -> dict[str, np.ndarray] | None:  # noqa: D102
        x = next(self._inputs, None)
        return None if x is None else {"image": x}


def calibrate(model: Path, inputs: Iterable[np.ndarray], method: str, cache: Path, workdir: Path) -> None:
    """Activation ranges of ``model`` over ``inputs`` by ``method``, saved to ``cache`` (onnxruntime's JSON).

    Frames go through one at a time, so memory holds one frame's activations (onnxruntime's
    own loop keeps every frame's for the histogram methods).
    """
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data  # noqa: PLC0415

    calibrator = create_calibrator(
        model,
        list(QUANTIZED_OPS),
        augmented_model_path=str(workdir / "augmented.onnx"),
        calibrate_method=_method(method),
        extra_options={"symmetric": False},  # uint8 activations: ranges need not centre on 0
    )
    with contextlib.redirect_stdout(io.StringIO()):  # the histogram calibrators print their progress
        for x in inputs:
            calibrator.collect_data(_Frames([x]))
        ranges = calibrator.compute_data()
    save_tensors_data(ranges, cache)


def quantize_export(
    model: Path, description: dict[str, Any], frames: CalibrationFrames, settings: Int8Settings
) -> None:
    """Quantize the fp32 export ``model`` in place to QDQ INT8 and record how in ``description``.

    ``description`` (the export's, see :mod:`.export`) gains ``precision`` and
    ``calibration``; the caller writes it into the file's metadata and the sidecar.
    """
    import onnx  # noqa: PLC0415 - optional dependency
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static  # noqa: PLC0415
    from onnxruntime.quantization.shape_inference import quant_pre_process  # noqa: PLC0415

    config = ModelConfig.from_dict(description["model_config"]).with_(
        size_divisibility=description["preprocessing"]["size_divisibility"]
    )
    shape = description["shape"]
    fixed = None if shape["dynamic"] else (shape["height"], shape["width"])
    parts = tuple(dict.fromkeys((*ALWAYS_FLOAT, *settings.keep_float)))
    with tempfile.TemporaryDirectory(prefix="pdl_int8_") as tmp:
        work = Path(tmp)
        prepared, cache, quantized = work / "prepared.onnx", work / "ranges.json", work / "int8.onnx"
        quant_pre_process(str(model), str(prepared))  # shape inference + folding: what the quantizer expects
        calibrate(prepared, network_inputs(frames.frames, config, fixed), settings.method, cache, work)
        names = [n.name for n in onnx.load(str(prepared), load_external_data=False).graph.node]
        excluded = float_nodes(names, parts)
        quantize_static(
            str(prepared),
            str(quantized),
            None,
            calibration_cache_path=str(cache),
            calibrate_method=_method(settings.method),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=list(QUANTIZED_OPS),
            nodes_to_exclude=excluded,
        )
        quantized.replace(model)
    description["precision"] = "int8"
    description["calibration"] = {
        "source": str(frames.source.resolve()),
        "kind": frames.kind,
        "frames": len(frames.frames),
        "source_frames": frames.available,
        "method": settings.method,
        "kept_float": list(parts),
        "float_nodes": len(excluded),
        "weights": "int8, symmetric, per output channel",
        "activations": "uint8, asymmetric, per tensor",
        "format": "QDQ",
    }


def _method(name: str) -> Any:
    """The ``CalibrationMethod`` of onnxruntime for one of :data:`METHODS`."""
    from onnxruntime.quantization import CalibrationMethod  # noqa: PLC0415 - optional dependency

    return {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[name]
