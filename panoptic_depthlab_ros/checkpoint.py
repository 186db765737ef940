"""Checkpoints: Detectron2 weights in, our self-describing format in and out.

* Detectron2 model-zoo ``.pkl`` (a pickled dict whose ``"model"`` maps state-dict
  names to numpy arrays) is read with a restricted unpickler that can rebuild
  numpy arrays and plain containers and nothing else: a pickle that would import
  or call anything more is refused.  Detectron2 ``.pth`` files go through
  ``torch.load(weights_only=True)``.
* Our format is one ``.safetensors`` file: the weights, plus in its metadata the
  model config, the class metadata (names, trainIds, colours, thing ids, label
  divisor) and the post-processing defaults, so the file alone rebuilds the model.

Every failure is a :class:`CheckpointError` naming the file (and the offending keys);
weights are checked completely before anything is copied into a model.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from .errors import CheckpointError
from .fusion import PostprocessConfig
from .metadata import ClassMetadata, cityscapes_metadata
from .model import ModelConfig, PanopticDepthLab, build_model
from .model.aspp import pooling_policy
from .model.config import load_detectron2_yaml
from .output import StagedOutput

BUNDLED_CHECKPOINT = Path(__file__).resolve().parent / "data" / "demo.safetensors"
FORMAT_NAME = "panoptic-depthlab"
FORMAT_VERSION = "1"
DEPTH_PREFIX = "depth_head."

# (module, name) pairs a numpy-array pickle legitimately needs: array and dtype
# reconstruction (numpy 1.x and 2.x module paths), and latin-1 bytes from
# protocol-2 pickles.  Nothing here can run arbitrary code.
_SAFE_GLOBALS = {
    ("collections", "OrderedDict"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}


# Weights are booleans, integers or floats: object, string, bytes, complex or datetime arrays are not.
_NUMERIC_KINDS = "biuf"


class _UnsafePickleError(pickle.UnpicklingError):
    """The pickle asks for something beyond numpy array data."""


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals needed to rebuild numpy arrays."""

    def find_class(self, module: str, name: str) -> Any:  # noqa: D102
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        if module.startswith("numpy") and name.endswith("DType"):  # numpy 2 dtype classes
            return super().find_class(module, name)
        raise _UnsafePickleError(f"refusing to load global {module}.{name} (not numpy array data)")

    def persistent_load(self, pid: Any) -> Any:  # noqa: D102
        raise _UnsafePickleError("refusing persistent ids (not a numpy-array pickle)")


@dataclass
class LoadReport:
    """What loading weights into a model did.

    initialized: keys not in the file, freshly initialised (the depth branch
    when starting from Detectron2).  loaded: keys copied from the file.
    """

    loaded: list[str] = field(default_factory=list)
    initialized: list[str] = field(default_factory=list)


@dataclass
class Checkpoint:
    """Our checkpoint: everything needed to rebuild and run the model."""

    model_config: ModelConfig
    classes: ClassMetadata
    postprocess: PostprocessConfig
    state_dict: dict[str, Tensor]
    info: dict[str, Any] = field(default_factory=dict)

    def build(self) -> PanopticDepthLab:
        """The model with these weights, in eval mode."""
        model = build_model(self.model_config)
        load_state_dict_checked(model, self.state_dict, source="checkpoint", allow_missing_prefix=None)
        return model.eval()


def require_file(path: Path) -> None:
    """:class:`CheckpointError` unless ``path`` is a file (missing, or a folder)."""
    if not path.is_file():
        raise CheckpointError(path, "is a folder, not a model file" if path.is_dir() else "file not found")


def bundled_checkpoint() -> Path:
    """The demo model shipped in the package (trained on our synthetic scenes)."""
    if not BUNDLED_CHECKPOINT.is_file():
        raise CheckpointError(BUNDLED_CHECKPOINT, "the bundled demo checkpoint is missing from this install")
    return BUNDLED_CHECKPOINT


def read_detectron2_weights(path: str | Path) -> dict[str, Tensor]:
    """State dict of a Detectron2 ``.pkl`` (model zoo) or ``.pth`` checkpoint, as tensors."""
    path = Path(path)
    require_file(path)
    raw: Any
    if path.suffix == ".pkl":
        if path.stat().st_size == 0:
            raise CheckpointError(path, "empty file (0 bytes)")
        try:
            with path.open("rb") as f:
                raw = _NumpyOnlyUnpickler(f, encoding="latin1").load()
        except _UnsafePickleError as exc:
            raise CheckpointError(path, f"unsafe pickle: {exc}") from exc
        except pickle.UnpicklingError as exc:
            raise CheckpointError(path, f"truncated or corrupt pickle: {exc}") from exc
        except (EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
            raise CheckpointError(path, f"truncated or corrupt pickle ({type(exc).__name__}: {exc})") from exc
    else:
        if path.stat().st_size == 0:
            raise CheckpointError(path, "empty file (0 bytes)")
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError, AttributeError) as exc:
            raise CheckpointError(path, f"cannot read as a weights-only torch file: {exc}") from exc
    if isinstance(raw, dict) and "model" in raw and isinstance(raw["model"], dict):
        raw = raw["model"]
    if not isinstance(raw, dict) or not raw:
        raise CheckpointError(path, "no state dict found (expected a dict with a 'model' mapping)")
    weights: dict[str, Tensor] = {}
    bad: list[str] = []
    keys = [k for k in raw if not isinstance(k, str)]
    if keys:
        raise CheckpointError(path, "state-dict keys that are not strings", [repr(k) for k in keys])
    for key, value in raw.items():
        name = key[len("module.") :] if key.startswith("module.") else key
        if isinstance(value, np.ndarray) and value.dtype.kind in _NUMERIC_KINDS:
            weights[name] = torch.from_numpy(value.copy(order="C"))  # ascontiguousarray would make 0-d 1-d
        elif isinstance(value, Tensor) and not value.is_complex():
            weights[name] = value
        elif isinstance(value, (int, np.integer)) and name.endswith("num_batches_tracked"):
            weights[name] = torch.tensor(int(value))
        else:
            kind = f"{value.dtype} array" if isinstance(value, np.ndarray) else type(value).__name__
            bad.append(f"{key} ({kind})")
    if bad:
        raise CheckpointError(path, "entries that are not numeric arrays", bad)
    return weights


def load_state_dict_checked(
    model: nn.Module,
    weights: dict[str, Tensor],
    *,
    source: str | Path,
    allow_missing_prefix: str | None,
) -> LoadReport:
    """Copy ``weights`` into ``model`` only if every key and shape fits.

    Keys starting with ``allow_missing_prefix`` may be absent (they keep their
    fresh initialisation and are reported); anything else missing, unexpected or
    of the wrong shape raises :class:`CheckpointError` listing the keys, before
    any parameter is touched.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in weights]
    tolerated = [k for k in missing if allow_missing_prefix and k.startswith(allow_missing_prefix)]
    missing = [k for k in missing if k not in tolerated]
    unexpected = [k for k in weights if k not in expected]
    mismatched = [
        f"{k} (file {tuple(weights[k].shape)}, model {tuple(v.shape)})"
        for k, v in expected.items()
        if k in weights and tuple(weights[k].shape) != tuple(v.shape)
    ]
    if missing:
        raise CheckpointError(source, "missing keys", missing)
    if unexpected:
        raise CheckpointError(source, "unexpected keys (not in this model)", unexpected)
    if mismatched:
        raise CheckpointError(source, "shape mismatch", mismatched)
    merged = {k: weights.get(k, v).to(v.dtype) for k, v in expected.items()}
    model.load_state_dict(merged, strict=True)
    return LoadReport(loaded=[k for k in expected if k in weights], initialized=tolerated)


def load_detectron2(
    weights_path: str | Path,
    config: str | Path | dict[str, Any] | ModelConfig,
    *,
    strict_pool_size: bool | None = None,
) -> tuple[PanopticDepthLab, ModelConfig, PostprocessConfig, LoadReport]:
    """Build our model from a Detectron2 config and load its Panoptic-DeepLab weights.

    The depth branch is not in Detectron2 files: it keeps its initialisation and
    its keys are listed in ``LoadReport.initialized``. ``strict_pool_size``: refuse
    frames Detectron2 refuses (None: the config's, which for a Detectron2 YAML is
    Detectron2's own strict behaviour).
    """
    if isinstance(config, ModelConfig):
        model_config, post = config, PostprocessConfig()
    else:
        try:
            d = load_detectron2_yaml(config) if isinstance(config, (str, Path)) else config
            model_config = ModelConfig.from_detectron2(d)
            post = postprocess_from_detectron2(d)
        except FileNotFoundError as exc:
            raise CheckpointError(config, "config file not found") from exc
        except (ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
            raise CheckpointError(
                config if isinstance(config, (str, Path)) else "config", f"invalid config: {exc}"
            ) from exc
    if strict_pool_size is not None:
        model_config = model_config.with_(aspp_strict_pool_size=strict_pool_size)
    weights = read_detectron2_weights(weights_path)  # before the model: a bad file costs no allocation
    model = build_model(model_config)
    report = load_state_dict_checked(model, weights, source=weights_path, allow_missing_prefix=DEPTH_PREFIX)
    return model.eval(), model_config, post, report


def postprocess_from_detectron2(cfg: dict[str, Any]) -> PostprocessConfig:
    """Fusion settings of a Detectron2 config (``MODEL.PANOPTIC_DEEPLAB``)."""
    pdl = cfg.get("MODEL", {}).get("PANOPTIC_DEEPLAB", {})
    return PostprocessConfig(
        center_threshold=float(pdl.get("CENTER_THRESHOLD", 0.1)),
        nms_kernel=int(pdl.get("NMS_KERNEL", 7)),
        top_k=int(pdl.get("TOP_K_INSTANCE", 200)),
        stuff_area=int(pdl.get("STUFF_AREA", 2048)),
    )


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    *,
    model_config: ModelConfig,
    classes: ClassMetadata,
    postprocess: PostprocessConfig,
    info: dict[str, Any] | None = None,
) -> Path:
    """Write our format atomically (temporary file in the same directory, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    metadata = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "model_config": json.dumps(model_config.to_dict()),
        "classes": json.dumps(classes.to_dict()),
        "postprocess": json.dumps(postprocess.to_dict()),
        "info": json.dumps(info or {}),
    }
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(state, tmp, metadata=metadata)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make a shared model unreadable to others
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _safetensors_header(path: Path) -> dict[str, Any]:
    """The whole JSON header of one of our files: tensor entries and ``__metadata__`` (all strings)."""
    require_file(path)
    try:
        with path.open("rb") as f:
            size = int.from_bytes(f.read(8), "little")
            if size <= 0 or size > 100_000_000 or size + 8 > path.stat().st_size:
                raise CheckpointError(path, "not a safetensors file (bad header length)")
            header = json.loads(f.read(size))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(path, f"corrupt safetensors header: {exc}") from exc
    if not isinstance(header, dict):
        raise CheckpointError(path, f"corrupt safetensors header: a {type(header).__name__}, not a mapping")
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise CheckpointError(path, "corrupt safetensors header: __metadata__ must map names to strings")
    if meta.get("format") != FORMAT_NAME:
        raise CheckpointError(path, f"not a {FORMAT_NAME} checkpoint (metadata format={meta.get('format')!r})")
    ends = [
        t["data_offsets"][1]
        for k, t in header.items()
        if k != "__metadata__" and isinstance(t, dict) and isinstance(t.get("data_offsets"), list) and t["data_offsets"]
    ]
    held = path.stat().st_size - 8 - size
    if ends and all(isinstance(e, int) for e in ends) and max(ends) > held:
        raise CheckpointError(path, f"corrupt or truncated weights: {max(ends)} bytes listed, the file holds {held}")
    header["__metadata__"] = meta
    return header


def checkpoint_says(path: Path) -> str | None:
    """None when ``path`` is one of our checkpoints (its header says so); else why it is not."""
    try:
        _safetensors_header(path)
    except CheckpointError as exc:
        return exc.reason
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def parse_description(
    path: str | Path, model_config: Any, classes: Any, postprocess: Any, info: Any = None
) -> tuple[ModelConfig, ClassMetadata, PostprocessConfig, dict[str, Any]]:
    """The decoded metadata parts of a checkpoint or export, each field checked.

    Raises :class:`CheckpointError` naming the file, the field and its value.
    """
    if isinstance(model_config, dict) and "depth_trained" not in model_config:  # written before the record
        model_config = {**model_config, "depth_trained": legacy_depth_trained(info if isinstance(info, dict) else {})}
    parts: list[Any] = []
    for section, parse, value in (
        ("model_config", ModelConfig.from_dict, model_config),
        ("classes", ClassMetadata.from_dict, classes),
        ("postprocess", PostprocessConfig.from_dict, postprocess),
    ):
        try:
            if not isinstance(value, dict):
                raise ValueError(f"must be a mapping, got {value!r}")
            parts.append(parse(value))
        except (ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
            reason = str(exc).removeprefix("metadata: ")
            raise CheckpointError(path, f"invalid metadata: {section}: {reason}") from exc
    if info is not None and not isinstance(info, dict):
        raise CheckpointError(path, f"invalid metadata: info must be a mapping, got {info!r}")
    config, class_meta, post = parts
    if class_meta.num_classes != config.num_classes:
        raise CheckpointError(path, f"{class_meta.num_classes} class names for a {config.num_classes}-class model")
    return config, class_meta, post, info or {}


def _decode_metadata(path: Path, meta: dict[str, str]) -> dict[str, Any]:
    """The JSON-encoded metadata entries of one of our files, decoded."""
    try:
        return {
            "model_config": json.loads(meta["model_config"]),
            "classes": json.loads(meta["classes"]),
            "postprocess": json.loads(meta.get("postprocess", "{}")),
            "info": json.loads(meta.get("info", "{}")),
        }
    except KeyError as exc:
        raise CheckpointError(path, f"invalid metadata: no {exc.args[0]!r} entry") from exc
    except ValueError as exc:
        raise CheckpointError(path, f"invalid metadata: not JSON: {exc}") from exc


def read_checkpoint_header(path: str | Path) -> dict[str, str]:
    """The metadata of one of our files without reading the weights."""
    return _safetensors_header(Path(path))["__metadata__"]


_BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


def legacy_depth_trained(info: dict[str, Any]) -> bool:
    """Whether the depth branch of a file written before checkpoints recorded it was trained.

    A conversion lists the depth-branch keys it initialised: untrained. A trainer's file
    trained depth when its depth loss weight was above zero (the bundled demo model: 5).
    Anything else is taken as trained, as every reader did before the record existed.
    """
    initialized = info.get("initialized_keys")
    if isinstance(initialized, list) and any(str(k).startswith(DEPTH_PREFIX) for k in initialized):
        return False
    training = info.get("training")
    config = training.get("config") if isinstance(training, dict) else None
    loss = config.get("loss") if isinstance(config, dict) else None
    weight = loss.get("depth_weight", 1.0) if isinstance(loss, dict) else 1.0
    return not (isinstance(weight, (int, float)) and weight <= 0)


def describe_checkpoint(path: str | Path) -> dict[str, Any]:
    """What one of our checkpoints says about itself, from its header (no weights are read).

    Keys: ``file``, ``bytes``, ``format_version``, ``parameters`` and their ``dtypes``
    (learnt values; BatchNorm statistics not counted), ``model_config``, ``classes``,
    ``postprocess``, ``info`` (how it was trained, notes).
    """
    path = Path(path)
    header = _safetensors_header(path)
    meta = header["__metadata__"]
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    parsed = _decode_metadata(path, meta)
    inferred = isinstance(parsed["model_config"], dict) and "depth_trained" not in parsed["model_config"]
    config = parse_description(path, **parsed)[0]  # every field checked: info shows only what would load
    parsed["model_config"] = {**parsed["model_config"], "depth_trained": config.depth_trained}
    try:
        shapes = {k: tuple(int(n) for n in t["shape"]) for k, t in tensors.items()}
        learnt = [t for k, t in tensors.items() if not k.endswith(_BUFFER_SUFFIXES)]
        parameters = sum(int(np.prod(t["shape"])) for t in learnt)
        dtypes = sorted({str(t["dtype"]) for t in learnt})
    except (ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(path, f"invalid tensor entries: {exc}") from exc
    _check_tensors(path, config, shapes)
    return {
        "file": str(path),
        "bytes": path.stat().st_size,
        "format_version": meta.get("format_version"),
        "parameters": parameters,
        "dtypes": dtypes,
        "depth_trained_inferred": inferred,
        **parsed,
    }


def format_description(desc: dict[str, Any]) -> str:
    """:func:`describe_checkpoint` (or an export description) as lines for a terminal."""
    cfg = ModelConfig.from_dict(desc["model_config"])
    classes = ClassMetadata.from_dict(desc["classes"])
    head = f"{desc['file']}: {desc.get('kind', FORMAT_NAME + ' checkpoint')}, {desc['bytes'] / 1e6:.1f} MB"
    if "parameters" in desc:
        head += f", {desc['parameters'] / 1e6:.2f} M parameters ({'/'.join(desc['dtypes'])})"
    fused = " / ".join(
        f"{name} [{', '.join(branch.low_level)}]"
        for name, branch in (("semantic", cfg.semantic), ("instance", cfg.instance), ("depth", cfg.depth))
    )
    focal = f", learnt for fx = {cfg.depth_focal_px:.1f} px" if cfg.depth_focal_px else " (no training camera recorded)"
    if cfg.depth_trained:
        depth = f"{cfg.min_depth:g}-{cfg.max_depth:g} m{focal}" + (
            " (trained: this older file does not record it; inferred from its training record)"
            if desc.get("depth_trained_inferred")
            else ""
        )
    else:
        depth = (
            "NOT TRAINED: the depth branch was never trained (a Detectron2 conversion starts it fresh), so"
            " infer, bag and the node give no depth, segment depths or 3D outputs unless asked to"
            " (--untrained-depth, node parameter untrained_depth)"
        )
    pooling = pooling_policy(cfg.aspp_pool_kernel_size, cfg.output_stride, strict=False)
    if cfg.aspp_pool_kernel_size is not None:
        pooling += " (--strict-pool-size: refuse those sizes as Detectron2 does)"
    things = ", ".join(classes.names[i] for i in classes.thing_ids)
    lines = [
        head,
        f"  network: ResNet-{cfg.resnet_depth} layout (stem {cfg.stem_channels}, res2 {cfg.res2_channels},"
        f" bottleneck {cfg.bottleneck_channels}), output stride {cfg.output_stride}",
        f"  decoders fuse: {fused}",
        f"  ASPP image pooling: {pooling}",
        f"  depth: {depth}",
        f"  input: {cfg.input_format}, "
        + (f"enlarged {cfg.input_scale:g}x, " if cfg.input_scale != 1.0 else "")
        + f"padded to multiples of {max(cfg.size_divisibility, 1)}",
        f"  classes: {classes.num_classes} (things: {things})",
        "  fusion: " + ", ".join(f"{k} {v}" for k, v in desc["postprocess"].items()),
    ]
    calibration = desc.get("calibration")
    if isinstance(calibration, dict):  # an INT8 export (see quantize.py)
        lines.append(
            f"  INT8: calibrated on {calibration.get('frames')} of {calibration.get('source_frames')} frames of"
            f" {calibration.get('source')} ({calibration.get('kind')}), method {calibration.get('method')};"
            f" kept float: {', '.join(calibration.get('kept_float', [])) or 'nothing'}"
        )
    training = desc.get("info", {}).get("training") or {}
    if training:
        lines.append(
            "  training: "
            + ", ".join(f"{k} {training[k]}" for k in ("iteration", "mode", "dataset", "init") if k in training)
        )
    for key, value in desc.get("info", {}).items():
        if key.endswith("note"):
            lines.append(f"  {key.replace('_', ' ')}: {value}")
    return "\n".join(lines)


def _check_tensors(path: Path, config: ModelConfig, shapes: dict[str, tuple[int, ...]]) -> None:
    """Keys and shapes against the architecture, so nothing half-loads later.

    The skeleton lives on the meta device: no memory, whatever widths the metadata declares.
    """
    with torch.device("meta"):
        skeleton = {k: tuple(v.shape) for k, v in build_model(config).state_dict().items()}
    missing = [k for k in skeleton if k not in shapes]
    unexpected = [k for k in shapes if k not in skeleton]
    mismatched = [f"{k} (file {shapes[k]}, model {s})" for k, s in skeleton.items() if k in shapes and shapes[k] != s]
    for reason, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatch", mismatched)):
        if keys:
            raise CheckpointError(path, reason, keys)


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read one of our checkpoints completely, validating every part."""
    path = Path(path)
    meta = read_checkpoint_header(path)
    model_config, classes, post, info = parse_description(path, **_decode_metadata(path, meta))
    try:
        state = load_file(path)
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise CheckpointError(path, f"corrupt or truncated weights: {exc}") from exc
    _check_tensors(path, model_config, {k: tuple(v.shape) for k, v in state.items()})
    return Checkpoint(model_config=model_config, classes=classes, postprocess=post, state_dict=state, info=info)


def checkpoint_output(out: str | Path, *, overwrite: bool, what: str, inputs: list[Path]) -> StagedOutput:
    """Rules for writing a checkpoint to ``out`` (see :mod:`.output`).

    A file already there is replaced only with ``overwrite``, and only when it is one of ours.
    """
    return StagedOutput.at(out, what=what, overwrite=overwrite, why_not_ours=checkpoint_says, inputs=inputs)


def convert_detectron2(
    weights_path: str | Path,
    config_yaml: str | Path,
    out_path: str | Path,
    *,
    classes: ClassMetadata | None = None,
    overwrite: bool = False,
) -> LoadReport:
    """Detectron2 weights + config -> our checkpoint (depth branch initialised, marked untrained).

    The file takes frames of any size (Detectron2's divisibility check is a run-time choice).
    An existing ``out_path`` is replaced only with ``overwrite`` and when it is one of our
    checkpoints; a failed conversion leaves it as it was.
    """
    out_path = Path(out_path)
    staged = checkpoint_output(
        out_path, overwrite=overwrite, what="panoptic-depthlab convert", inputs=[Path(weights_path), Path(config_yaml)]
    )
    model, model_config, post, report = load_detectron2(weights_path, config_yaml, strict_pool_size=False)
    with staged as staging:
        save_checkpoint(
            staging / out_path.name,
            model,
            model_config=model_config,
            classes=classes or cityscapes_metadata(),
            postprocess=post,
            info={"source": str(weights_path), "config": str(config_yaml), "initialized_keys": report.initialized},
        )
    return report
