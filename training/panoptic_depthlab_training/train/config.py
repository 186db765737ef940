"""The trainer's configuration: typed sections, bound once from YAML and overrides.

:func:`load_config` is the edge: defaults <- a YAML file <- ``section.key=value``
overrides, as nested dicts, then :func:`bind` turns them into a :class:`TrainConfig`.
Every value is checked there, and an error names the key and the value (a typo is an
error, not a no-op); below the edge the trainer reads typed fields only.
:meth:`TrainConfig.to_dict` gives the same nested dict back, which ``config.yaml``, the
resume state and the checkpoints' header record.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from panoptic_depthlab_ros.errors import PanopticDepthLabError
from panoptic_depthlab_ros.fusion import PostprocessConfig

from ..losses import LossConfig

MODES = ("joint", "depth-only")
INIT_TYPES = ("none", "detectron2", "checkpoint")
MODEL_PRESETS = ("r52", "tiny")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("poly", "constant")
PACKAGE = Path(__file__).resolve().parents[1]
CONFIG_DIRS = (PACKAGE / "configs", PACKAGE.parent / "configs")

C = TypeVar("C")


class TrainingError(PanopticDepthLabError):
    """A training run that cannot start or continue (bad config, clobbered output, ...)."""


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise TrainingError(message)


@dataclass(frozen=True)
class ModelSection:
    """``model``: a preset (for ``init.type=none``) and ``ModelConfig`` fields that override it.

    With ``init.type`` detectron2 or checkpoint, ``overrides`` change the file's
    architecture (e.g. ``max_depth``); the weights must still fit. ``ModelConfig``
    checks them when the model is built.
    """

    preset: str = "r52"
    overrides: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _require(self.preset in MODEL_PRESETS, f"model.preset must be one of {MODEL_PRESETS}, got {self.preset!r}")

    def to_dict(self) -> dict[str, Any]:
        """The YAML section: ``preset`` beside the overrides."""
        return {"preset": self.preset, **copy.deepcopy(dict(self.overrides))}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelSection:
        """Inverse of :meth:`to_dict`."""
        rest = {k: v for k, v in d.items() if k != "preset"}
        return cls(preset=_coerce(d.get("preset", "r52"), str, "model.preset"), overrides=rest)


@dataclass(frozen=True)
class InitConfig:
    """``init``: where the weights come from (``none`` = fresh)."""

    type: str = "none"  # none | detectron2 (weights + config) | checkpoint (path)
    weights: str | None = None  # Detectron2 .pkl / .pth
    config: str | None = None  # its Detectron2 YAML
    path: str | None = None  # one of our .safetensors files

    def __post_init__(self) -> None:
        _require(self.type in INIT_TYPES, f"init.type must be one of {INIT_TYPES}, got {self.type!r}")
        if self.type == "detectron2":
            _require(
                bool(self.weights and self.config),
                "init.type=detectron2 needs init.weights (.pkl/.pth) and init.config (its YAML)",
            )
        if self.type == "checkpoint":
            _require(bool(self.path), "init.type=checkpoint needs init.path (one of our .safetensors files)")


@dataclass(frozen=True)
class DataConfig:
    """``data``: splits, augmentation and loading."""

    train_split: str = "train"
    val_split: str = "val"
    crop_size: tuple[int, int] = (512, 1024)  # [H, W]
    scale_range: tuple[float, float] = (0.5, 2.0)  # relative to the model's input_scale
    flip_prob: float = 0.5
    batch_per_device: int = 8
    workers: int = 4
    verify: bool = True  # check every file of the splits before training

    def __post_init__(self) -> None:
        _require(
            all(c > 0 and c % 32 == 0 for c in self.crop_size),
            f"data.crop_size must be two positive multiples of 32, got {list(self.crop_size)}",
        )
        low, high = self.scale_range
        _require(0 < low <= high, f"data.scale_range must be [low, high] with 0 < low <= high, got {[low, high]}")
        _require(0 <= self.flip_prob <= 1, f"data.flip_prob must be in [0, 1], got {self.flip_prob}")
        _require(self.batch_per_device >= 1, f"data.batch_per_device must be >= 1, got {self.batch_per_device}")
        _require(self.workers >= 0, f"data.workers must be >= 0, got {self.workers}")


@dataclass(frozen=True)
class TargetConfig:
    """``targets``: how ground truth becomes center/offset targets (``PanopticTargetGenerator``)."""

    sigma: int = 10
    small_instance_area: int = 4096
    small_instance_weight: float = 3.0
    ignore_stuff_in_offset: bool = True
    ignore_crowd_in_semantic: bool = False


@dataclass(frozen=True)
class SolverConfig:
    """``solver``: optimizer, LR schedule (Detectron2's WarmupPolyLR), batch and precision."""

    optimizer: str = "adam"  # adam | adamw | sgd
    lr: float = 0.001
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd
    betas: tuple[float, float] = (0.9, 0.999)  # adam, adamw
    schedule: str = "poly"  # poly | constant (with the same warmup)
    warmup_iters: int = 1000
    warmup_factor: float = 0.001
    poly_power: float = 0.9
    poly_constant_ending: float = 0.0
    max_iter: int = 90000
    ims_per_batch: int = 32  # images per optimizer step, over all devices and accumulation
    clip_grad_norm: float = 0.0  # 0 = off
    amp: bool = True  # float16 autocast + GradScaler, CUDA only
    cpu_bf16: bool = False  # bfloat16 autocast on CPU: pays on AVX512-BF16 / AMX CPUs (bench_training.py)
    channels_last: bool = False  # NHWC weights and inputs (tensor cores)
    sync_bn: bool = True  # joint mode under multi-GPU DDP

    def __post_init__(self) -> None:
        _require(
            self.optimizer.lower() in OPTIMIZERS,
            f"solver.optimizer must be adam, adamw or sgd, got {self.optimizer!r}",
        )
        _require(self.schedule in SCHEDULES, f"solver.schedule must be poly or constant, got {self.schedule!r}")
        _require(
            self.max_iter >= 1 and self.ims_per_batch >= 1,
            f"solver.max_iter and solver.ims_per_batch must be >= 1, got {self.max_iter} and {self.ims_per_batch}",
        )
        _require(self.warmup_iters >= 0, f"solver.warmup_iters must be >= 0, got {self.warmup_iters}")


@dataclass(frozen=True)
class CheckpointConfig:
    """``checkpoint``: how often the model and the resume state are written."""

    period: int = 1000

    def __post_init__(self) -> None:
        _require(self.period >= 1, f"checkpoint.period must be >= 1, got {self.period}")


@dataclass(frozen=True)
class LogConfig:
    """``log``: scalars every ``period`` iterations, a sample panel every ``image_period`` (0: never)."""

    period: int = 20
    image_period: int = 500

    def __post_init__(self) -> None:
        _require(self.period >= 1, f"log.period must be >= 1, got {self.period}")
        _require(self.image_period >= 0, f"log.image_period must be >= 0, got {self.image_period}")


@dataclass(frozen=True)
class EvalConfig:
    """``eval``: validation every ``period`` iterations (0: never) on ``max_images`` frames (0: all)."""

    period: int = 0
    max_images: int = 0
    max_depth: float | None = None  # ground truth beyond is invalid (None: the model's max_depth; 0: keep all)

    def __post_init__(self) -> None:
        _require(self.period >= 0, f"eval.period must be >= 0, got {self.period}")
        _require(self.max_images >= 0, f"eval.max_images must be >= 0, got {self.max_images}")
        _require(self.max_depth is None or self.max_depth >= 0, f"eval.max_depth must be >= 0, got {self.max_depth}")


@dataclass(frozen=True)
class TrainConfig:
    """One training run: the sections of a training YAML file.

    ``postprocess`` holds ``PostprocessConfig`` fields stored in the exported checkpoints.
    """

    mode: str = "joint"  # joint | depth-only
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda[:N] (under torchrun: cuda:LOCAL_RANK)
    model: ModelSection = field(default_factory=ModelSection)
    init: InitConfig = field(default_factory=InitConfig)
    postprocess: Mapping[str, Any] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    targets: TargetConfig = field(default_factory=TargetConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        _require(self.mode in MODES, f"mode must be one of {MODES}, got {self.mode!r}")
        known = {f.name for f in dataclasses.fields(PostprocessConfig)}
        unknown = sorted(set(self.postprocess) - known)
        _require(not unknown, f"unknown postprocess keys: {unknown}")

    def to_dict(self) -> dict[str, Any]:
        """The nested dict of the YAML file (lists, not tuples)."""
        return _plain(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        """Bind a nested dict (missing keys: defaults); see :func:`bind`."""
        return bind(cls, d)


def _plain(value: Any) -> Any:
    """Dataclasses, mappings and tuples -> dicts and lists (YAML- and JSON-able)."""
    if isinstance(value, ModelSection | LossConfig):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


# ----------------------------------------------------------------------------- binding
def bind(cls: type[C], data: Any, where: str = "") -> C:
    """Build the dataclass ``cls`` from a mapping, checking keys, types and values.

    Missing keys keep their defaults; a key that is not a field, a value of the wrong
    type or a value the section refuses raises :class:`TrainingError` naming the key.
    """
    if not isinstance(data, Mapping):
        raise TrainingError(f"{where or 'the config'} must be a mapping of keys, got {data!r}")
    if cls is ModelSection:
        return ModelSection.from_dict(data)  # type: ignore[return-value]
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    for key in data:
        if key not in names:
            raise TrainingError(f"unknown config key {_dotted(where, key)!r}")
    kwargs = {key: _coerce(value, hints[key], _dotted(where, key)) for key, value in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:  # LossConfig's checks
        raise TrainingError(str(exc)) from exc


def _dotted(where: str, key: str) -> str:
    return f"{where}.{key}" if where else str(key)


def _coerce(value: Any, tp: Any, name: str) -> Any:
    """``value`` as the field type ``tp`` (ints where floats go, 2.0 where ints go), or an error."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(value, inner, name)
    if dataclasses.is_dataclass(tp):
        return bind(tp, value, name)  # type: ignore[arg-type]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise TrainingError(f"{name} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise TrainingError(f"{name} must be a whole number, got {value!r}")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise TrainingError(f"{name} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise TrainingError(f"{name} must be a string, got {value!r}")
    if origin is tuple:
        if not isinstance(value, list | tuple) or len(value) != len(args):
            raise TrainingError(f"{name} must be a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, f"{name}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if origin in (Mapping, dict):
        if isinstance(value, Mapping):
            return copy.deepcopy(dict(value))
        raise TrainingError(f"{name} must be a mapping of keys, got {value!r}")
    raise AssertionError(f"no binding for {name}: {tp}")  # a field type this module does not handle


# ----------------------------------------------------------------------------- YAML + overrides
class _ConfigLoader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` as a float (YAML 1.1 wants ``1.0e-3``)."""


_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 - a SafeLoader subclass


def resolve_config_path(name: str | Path) -> Path:
    """Return a config file path, or the path of a bundled config (``quick_cpu``, ...)."""
    path = Path(name)
    if path.is_file():
        return path
    stem = path.name.removesuffix(".yaml")
    for folder in CONFIG_DIRS:
        candidate = folder / f"{stem}.yaml"
        if candidate.is_file():
            return candidate
    bundled = sorted({p.stem for folder in CONFIG_DIRS if folder.is_dir() for p in folder.glob("*.yaml")})
    raise TrainingError(f"config {str(name)!r} is neither a file nor a bundled config {bundled}")


def deep_update(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with ``update`` merged in: mappings key by key, anything else replaced."""
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_update(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_overrides(config: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides to a config dict (value parsed as YAML: numbers, lists, null, ...)."""
    out = dict(config)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise TrainingError(f"override {item!r} is not of the form section.key=value")
        nested: Any = _yaml_load(raw) if raw else None
        for part in reversed(key.split(".")):
            nested = {part: nested}
        out = deep_update(out, nested)
    return out


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
    """Defaults <- YAML file <- command-line overrides, bound and checked."""
    file = resolve_config_path(path)
    try:
        loaded = _yaml_load(file.read_text()) or {}
    except yaml.YAMLError as exc:
        raise TrainingError(f"{file}: not valid YAML: {exc}") from exc
    if not isinstance(loaded, dict):
        raise TrainingError(f"{file}: top level must be a mapping")
    return TrainConfig.from_dict(apply_overrides(loaded, overrides))


def config_differences(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """``key: old -> new`` for every leaf that differs between two config dicts."""
    diffs = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        name = f"{prefix}{key}"
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            diffs += config_differences(a, b, name + ".")
        elif a != b:
            diffs.append(f"{name}: {a!r} -> {b!r}")
    return diffs
