"""Export the network to ONNX or TorchScript, with a JSON sidecar that describes it.

The exported graph is the network only: a normalised, padded image tensor
``image`` [1, 3, H, W] in; ``sem_seg`` [1, C, H, W], ``center`` [1, 1, H, W],
``offset`` [1, 2, H, W] (dy, dx) and ``depth`` [1, 1, H, W] meters out, at the
input resolution.  Preprocessing (channel order, mean, std, padding) and the
fusion stay outside, in :mod:`.preprocess` and :mod:`.fusion`, and the sidecar
``<out>.json`` (also embedded as ONNX metadata) records everything they need.
Both are written aside and moved into place at the end (:mod:`.output`): a failed
export keeps a previous one, and ``overwrite`` replaces only an export of ours.
"""

from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .calibration import read_calibration_frames
from .checkpoint import Checkpoint, load_checkpoint
from .errors import PanopticDepthLabError
from .model import OUTPUT_NAMES
from .output import StagedOutput
from .quantize import Int8Settings, quantize_export

EXPORT_FORMATS = ("onnx", "torchscript")
SIDECAR_FORMAT = "panoptic-depthlab-export"
# Opset 17: Resize with half_pixel coordinates and every op the network uses.
ONNX_OPSET = 17


class ExportError(PanopticDepthLabError):
    """The network cannot be exported as asked (the message says why)."""


class _TupleOutputs(nn.Module):
    """Wraps the model so the graph returns a fixed-order tuple (export formats need one)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:  # noqa: D102
        out = self.model(image)
        return out["sem_seg"], out["center"], out["offset"], out["depth"]


def sidecar_path(path: str | Path) -> Path:
    """``model.onnx`` -> ``model.onnx.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def export_says(path: Path) -> str | None:
    """None when ``path`` (an exported model or its ``.json`` sidecar) was written by ``export``; else why not."""
    if path.suffix == ".json":
        try:
            ours = json.loads(path.read_text()).get("format") == SIDECAR_FORMAT
        except (OSError, ValueError, AttributeError):
            ours = False
        return None if ours else f"it is not a {SIDECAR_FORMAT} description"
    if sidecar_path(path).is_file() and export_says(sidecar_path(path)) is None:
        return None
    try:
        if zipfile.is_zipfile(path):  # TorchScript: our description is an extra file of the archive
            with zipfile.ZipFile(path) as archive:
                if any(n.endswith("extra/panoptic_depthlab.json") for n in archive.namelist()):
                    return None
        elif path.suffix == ".onnx":
            import onnx  # noqa: PLC0415 - optional dependency

            if any(p.key == "panoptic_depthlab" for p in onnx.load(str(path), load_external_data=False).metadata_props):
                return None
    except Exception:  # noqa: BLE001 - unreadable means: not recognisably ours
        pass
    return f"no {SIDECAR_FORMAT} description in it or beside it"


def _describe(ckpt: Checkpoint, *, fmt: str, height: int, width: int, dynamic: bool) -> dict[str, Any]:
    cfg = ckpt.model_config
    stride = cfg.output_stride
    min_h = stride * (cfg.aspp_pool_kernel_size[0] if cfg.aspp_pool_kernel_size else 1)
    min_w = stride * (cfg.aspp_pool_kernel_size[1] if cfg.aspp_pool_kernel_size else 1)
    return {
        "format": SIDECAR_FORMAT,
        "version": 1,
        "export_format": fmt,
        "inputs": {"image": "[1, 3, H, W] float32, (x - pixel_mean) / pixel_std, zero-padded bottom/right"},
        "outputs": list(OUTPUT_NAMES),
        "preprocessing": {
            "input_format": cfg.input_format,
            "pixel_mean": list(cfg.pixel_mean),
            "pixel_std": list(cfg.pixel_std),
            "size_divisibility": max(cfg.size_divisibility, 32),
        },
        "shape": {
            "dynamic": dynamic,
            "height": None if dynamic else height,
            "width": None if dynamic else width,
            "multiple_of": 32,
            "min_height": min_h,
            "min_width": min_w,
        },
        "model_config": cfg.to_dict(),
        "classes": ckpt.classes.to_dict(),
        "postprocess": ckpt.postprocess.to_dict(),
    }


def export_model(
    checkpoint: str | Path,
    out: str | Path,
    *,
    fmt: str = "onnx",
    height: int | None = None,
    width: int | None = None,
    dynamic: bool = False,
    overwrite: bool = False,
    int8: Int8Settings | None = None,
) -> Path:
    """Export our checkpoint to ``out`` (+ ``out.json``); returns the sidecar path.

    Without ``dynamic`` the graph has the fixed ``height`` x ``width`` (both
    multiples of 32).  With ``dynamic`` (ONNX only) height and width are free
    multiples of 32, at least the ASPP pooling window times the output stride.
    ``int8``: quantize the ONNX graph to INT8 on these calibration settings (:mod:`.quantize`).
    """
    if fmt not in EXPORT_FORMATS:
        raise ExportError(f"unknown export format {fmt!r} (use one of {', '.join(EXPORT_FORMATS)})")
    if int8 is not None and fmt != "onnx":
        raise ExportError("--int8 is supported for ONNX only")
    out = Path(out)
    staged = StagedOutput(
        out.parent,
        [out.name, sidecar_path(out).name],
        what="panoptic-depthlab export",
        overwrite=overwrite,
        why_not_ours=export_says,
        inputs=[Path(checkpoint)],
    )
    ckpt = load_checkpoint(checkpoint)
    cfg = ckpt.model_config
    if dynamic and fmt != "onnx":
        raise ExportError("--dynamic is supported for ONNX only; TorchScript traces one fixed shape")
    if height is None or width is None:
        if not dynamic:
            raise ExportError("give --height and --width (multiples of 32), or --dynamic")
        kh, kw = cfg.aspp_pool_kernel_size or (1, 1)
        height, width = max(64, kh * cfg.output_stride), max(64, kw * cfg.output_stride)
    if height % 32 or width % 32 or height <= 0 or width <= 0:
        raise ExportError(f"export shape {height}x{width} is not a positive multiple of 32 (pad the input to one)")
    if cfg.aspp_pool_kernel_size:
        kh, kw = cfg.aspp_pool_kernel_size
        if height < kh * cfg.output_stride or width < kw * cfg.output_stride:
            raise ExportError(
                f"export shape {height}x{width} is smaller than the ASPP pooling window "
                f"({kh * cfg.output_stride}x{kw * cfg.output_stride} pixels at the input)"
            )
    # The exported graph must not carry the strict Detectron2 divisibility check
    # (a Python-side raise cannot be exported); the window itself is unchanged.
    model = ckpt.build() if not cfg.aspp_strict_pool_size else _build_lenient(ckpt)
    wrapper = _TupleOutputs(model).eval()  # eval: export restores the wrapper's mode afterwards
    example = torch.zeros(1, 3, height, width)
    description = _describe(ckpt, fmt=fmt, height=height, width=width, dynamic=dynamic)
    calibration = None
    if int8 is not None:  # read before the export's minutes, so a bad source fails at once
        int8.check()
        calibration = read_calibration_frames(int8.calibration, int8.frames, image_topic=int8.image_topic)
    with staged as staging:
        written = staging / out.name
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tracer chatter about Python ints in shapes
                if fmt == "onnx":
                    _export_onnx(wrapper, example, written, dynamic=dynamic, description=description)
                    if int8 is not None and calibration is not None:
                        quantize_export(written, description, calibration, int8)
                        embed_description(written, description)
                else:
                    with torch.no_grad():
                        traced = torch.jit.trace(wrapper, example, check_trace=False)
                    extra = {"panoptic_depthlab.json": json.dumps(description)}
                    torch.jit.save(traced, str(written), _extra_files=extra)
        except torch.onnx.errors.UnsupportedOperatorError as exc:
            raise ExportError(f"ONNX export failed: unsupported operator ({exc})") from exc
        except (RuntimeError, torch.onnx.errors.OnnxExporterError) as exc:
            raise ExportError(f"{fmt} export failed: {exc}") from exc
        sidecar_path(written).write_text(json.dumps(description, indent=2))
    return sidecar_path(out)


def _build_lenient(ckpt: Checkpoint) -> nn.Module:
    """The checkpoint's model with the ASPP divisibility check off (same weights, same window)."""
    lenient = Checkpoint(
        model_config=ckpt.model_config.with_(aspp_strict_pool_size=False),
        classes=ckpt.classes,
        postprocess=ckpt.postprocess,
        state_dict=ckpt.state_dict,
        info=ckpt.info,
    )
    return lenient.build()


def _export_onnx(wrapper: nn.Module, example: Tensor, out: Path, *, dynamic: bool, description: dict) -> None:
    axes = {"image": {2: "height", 3: "width"}} if dynamic else None
    if axes:
        axes.update({name: {2: "height", 3: "width"} for name in OUTPUT_NAMES})
    torch.onnx.export(
        wrapper,
        (example,),
        str(out),
        dynamo=False,
        input_names=["image"],
        output_names=list(OUTPUT_NAMES),
        dynamic_axes=axes,
        opset_version=ONNX_OPSET,
        do_constant_folding=True,
    )
    embed_description(out, description)


def embed_description(path: Path, description: dict) -> None:
    """Write ``description`` into the ONNX file's metadata (replacing what was there)."""
    import onnx  # noqa: PLC0415 - optional dependency, only for export

    graph = onnx.load(str(path))
    del graph.metadata_props[:]
    entry = graph.metadata_props.add()
    entry.key, entry.value = "panoptic_depthlab", json.dumps(description)
    onnx.save(graph, str(path))
