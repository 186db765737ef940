"""One dataclass that describes the whole network, including tiny test widths.

``from_detectron2`` reads a Detectron2 Panoptic-DeepLab config (a merged
``cfg.dump()`` or a project YAML with ``_BASE_``) so its checkpoints load as is.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from ..fields import check_bool, check_int, check_ints, check_number, check_numbers

# Strides of the backbone features a decoder can fuse.
FEATURE_STRIDES = {"stem": 2, "res2": 4, "res3": 8}
LOW_LEVEL_CHOICES = (("res2", "res3"), ("stem", "res2", "res3"))
# Factors a frame may be resized by before the network (input_scale, multi-scale inference).
SCALE_RANGE = (0.25, 4.0)
SCALE_RANGE_TEXT = f"{SCALE_RANGE[0]:g}..{SCALE_RANGE[1]:g}"
# Bounds a loaded config must keep: far beyond any real Panoptic-DeepLab, far below what
# would allocate absurd memory before the weights are even compared with the file.
RESNET_DEPTHS = (50, 101)
MAX_WIDTH = 4096  # channels of any layer
MAX_DILATION = 64
MAX_POOL_KERNEL = 1024  # ASPP pooling window, in stride-16 feature pixels
MAX_SIZE_DIVISIBILITY = 512
MAX_DEPTH_M = 10_000.0
MAX_CLASSES = 1000


@dataclass(frozen=True)
class BranchConfig:
    """Widths of one decoder branch (semantic, instance or depth).

    project_channels: 1x1 projection widths of the ``low_level`` features.
    aspp_channels: ASPP output width.  convs_dim: decoder fuse width.
    head_channels: width of the head's last conv before the 1x1 predictor.
    low_level: backbone features the decoder fuses, finest first (Detectron2: res2, res3).
        Starting at ``stem`` (stride 2) gives the branch a stride-2 output: at low input
        resolutions, instance centers a few pixels apart then get separate peaks.
    """

    project_channels: tuple[int, ...] = (32, 64)
    aspp_channels: int = 256
    convs_dim: int = 256
    head_channels: int = 256
    low_level: tuple[str, ...] = ("res2", "res3")

    def __post_init__(self) -> None:
        check_ints("project_channels", self.project_channels, 1, MAX_WIDTH)
        for name in ("aspp_channels", "convs_dim", "head_channels"):
            check_int(name, getattr(self, name), 1, MAX_WIDTH)
        if self.low_level not in LOW_LEVEL_CHOICES:
            choices = [list(c) for c in LOW_LEVEL_CHOICES]
            raise ValueError(f"low_level must be one of {choices}, got {list(self.low_level)}")
        if len(self.project_channels) != len(self.low_level):
            raise ValueError(
                f"project_channels needs one width per low_level feature {list(self.low_level)}, "
                f"got {list(self.project_channels)}"
            )

    @property
    def output_stride(self) -> int:
        """Stride of this branch's output (its finest fused feature)."""
        return FEATURE_STRIDES[self.low_level[0]]


@dataclass(frozen=True)
class ModelConfig:
    """Panoptic-DeepLab (Detectron2 layout) + a depth branch.

    Defaults = Detectron2's ``panoptic_deeplab_R_52_os16_mg124_poly_90k_bs32_crop_512_1024``
    (ResNet-50 body with the DeepLab stem, res5 dilation 2 with multi-grid 1,2,4,
    output stride 16) with a depth branch shaped like the semantic one.
    """

    # Backbone
    resnet_depth: int = 50
    stem_channels: int = 128
    res2_channels: int = 256
    bottleneck_channels: int = 64
    res4_dilation: int = 1
    res5_dilation: int = 2
    res5_multi_grid: tuple[int, ...] = (1, 2, 4)
    # Branches
    num_classes: int = 19
    semantic: BranchConfig = field(default_factory=BranchConfig)
    instance: BranchConfig = field(default_factory=lambda: BranchConfig(convs_dim=128, head_channels=32))
    depth: BranchConfig = field(default_factory=BranchConfig)
    aspp_dilations: tuple[int, ...] = (6, 12, 18)
    aspp_dropout: float = 0.1
    # Detectron2 pools ASPP features with a window of train crop / 16, also at test time, and
    # refuses frames whose stride-16 feature is not a multiple of it (strict: what a Detectron2
    # config describes). Otherwise any size works (docs/detectron2.md); the predictor's
    # factories choose it at run time whatever a checkpoint stores.
    aspp_pool_kernel_size: tuple[int, int] | None = (32, 64)
    aspp_strict_pool_size: bool = False
    depthwise_separable: bool = False
    common_stride: int = 4
    # Depth head range in meters (see DepthHead for the parameterisation).
    min_depth: float = 0.5
    max_depth: float = 80.0
    # Focal length (pixels, at the network's input scale) of the camera the depth branch
    # learnt: a monocular network reads distance from apparent size, so its metres hold
    # for that camera only. Given another camera's K, the predictor rescales depth by
    # fx / depth_focal_px. None: unknown (no rescaling).
    depth_focal_px: float | None = None
    # Whether the depth branch's weights were ever trained (a Detectron2 conversion has a
    # freshly initialised one; the trainer sets it once a depth loss has been trained). The
    # predictor publishes no depth-derived values from an untrained branch unless asked.
    depth_trained: bool = True
    # Input: channel order the network expects, normalisation and padding.
    input_format: str = "RGB"
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    size_divisibility: int = 0
    # The network runs on the image resized by this factor: the scale its weights were
    # trained for (the trainer multiplies ``data.scale_range`` by it). A small model at a
    # low resolution finds few-pixel things only when they are enlarged (the demo: 1.5).
    input_scale: float = 1.0

    def __post_init__(self) -> None:
        """Every field checked (type, range, finite, consistency); ``ValueError`` names the field and value."""
        if self.resnet_depth not in RESNET_DEPTHS or isinstance(self.resnet_depth, bool):
            raise ValueError(f"resnet_depth must be one of {list(RESNET_DEPTHS)}, got {self.resnet_depth!r}")
        for name in ("stem_channels", "res2_channels", "bottleneck_channels"):
            check_int(name, getattr(self, name), 1, MAX_WIDTH)
        check_int("res4_dilation", self.res4_dilation, 1, MAX_DILATION)
        check_int("res5_dilation", self.res5_dilation, 1, MAX_DILATION)
        check_ints("res5_multi_grid", self.res5_multi_grid, 1, MAX_DILATION, length=3)  # res5 has 3 blocks
        check_int("num_classes", self.num_classes, 1, MAX_CLASSES)
        for name in ("semantic", "instance", "depth"):
            if not isinstance(getattr(self, name), BranchConfig):
                raise ValueError(f"{name} must be a branch config, got {getattr(self, name)!r}")
        check_ints("aspp_dilations", self.aspp_dilations, 1, MAX_DILATION)
        check_number("aspp_dropout", self.aspp_dropout, 0.0, 1.0)
        if self.aspp_dropout >= 1.0:
            raise ValueError(f"aspp_dropout must be below 1, got {self.aspp_dropout!r}")
        if self.aspp_pool_kernel_size is not None:
            check_ints("aspp_pool_kernel_size", self.aspp_pool_kernel_size, 1, MAX_POOL_KERNEL, length=2)
        check_bool("aspp_strict_pool_size", self.aspp_strict_pool_size)
        check_bool("depthwise_separable", self.depthwise_separable)
        if self.common_stride != FEATURE_STRIDES["res2"] or isinstance(self.common_stride, bool):
            raise ValueError(f"common_stride must be 4 (the stride of res2), got {self.common_stride!r}")
        check_number("min_depth", self.min_depth, 0.0, MAX_DEPTH_M, low_open=True)
        check_number("max_depth", self.max_depth, 0.0, MAX_DEPTH_M, low_open=True)
        if not self.min_depth < self.max_depth:
            raise ValueError(f"min_depth {self.min_depth!r} must be below max_depth {self.max_depth!r}")
        if self.depth_focal_px is not None:
            check_number("depth_focal_px", self.depth_focal_px, 0.0, 1e6, low_open=True)
        if self.input_format not in ("RGB", "BGR"):
            raise ValueError(f"input_format must be RGB or BGR, got {self.input_format!r}")
        check_numbers("pixel_mean", self.pixel_mean, 3)
        check_numbers("pixel_std", self.pixel_std, 3, positive=True)
        check_bool("depth_trained", self.depth_trained)
        check_int("size_divisibility", self.size_divisibility, 0, MAX_SIZE_DIVISIBILITY)
        if not (
            isinstance(self.input_scale, (int, float))
            and not isinstance(self.input_scale, bool)
            and math.isfinite(self.input_scale)
            and SCALE_RANGE[0] <= self.input_scale <= SCALE_RANGE[1]
        ):
            raise ValueError(f"input_scale must lie in {SCALE_RANGE_TEXT}, got {self.input_scale!r}")

    @property
    def output_stride(self) -> int:
        """Stride of res5 (16 with a dilated res5)."""
        return 16 if self.res5_dilation > 1 else 32

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON/YAML-able)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError`` naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"model config has unknown keys: {unknown}")
        kw: dict[str, Any] = {}
        for key, value in d.items():
            if key in ("semantic", "instance", "depth"):
                if not isinstance(value, dict):
                    raise ValueError(f"{key} must be a mapping of branch widths, got {value!r}")
                unknown = sorted(set(value) - {f.name for f in fields(BranchConfig)})
                if unknown:
                    raise ValueError(f"{key} has unknown keys: {unknown}")
                branch: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
                try:
                    value = BranchConfig(**branch)
                except ValueError as exc:
                    raise ValueError(f"{key}.{exc}") from None
            elif isinstance(value, list):
                value = tuple(value)
            kw[key] = value
        return cls(**kw)

    def with_(self, **changes: Any) -> ModelConfig:
        """A copy with fields replaced."""
        return replace(self, **changes)

    @classmethod
    def tiny(cls, **changes: Any) -> ModelConfig:
        """The tiny width of Detectron2's test fixture (~1M parameters), for tests."""
        tiny = cls(
            stem_channels=16,
            res2_channels=32,
            bottleneck_channels=8,
            semantic=BranchConfig(project_channels=(8, 16), aspp_channels=32, convs_dim=24, head_channels=16),
            instance=BranchConfig(project_channels=(8, 16), aspp_channels=32, convs_dim=16, head_channels=8),
            depth=BranchConfig(project_channels=(8, 16), aspp_channels=32, convs_dim=16, head_channels=16),
            aspp_pool_kernel_size=(4, 8),
        )
        return replace(tiny, **changes)

    @classmethod
    def from_detectron2(cls, cfg: dict[str, Any] | str | Path, **changes: Any) -> ModelConfig:
        """Build from a Detectron2 config (dict or YAML path; ``_BASE_`` files are merged).

        Keys absent from the file take Detectron2's Panoptic-DeepLab Cityscapes
        values; the depth branch (not in Detectron2) mirrors the semantic widths.
        """
        d = load_detectron2_yaml(cfg) if isinstance(cfg, (str, Path)) else cfg
        model = d.get("MODEL", {})
        res = model.get("RESNETS", {})
        sem = model.get("SEM_SEG_HEAD", {})
        ins = model.get("INS_EMBED_HEAD", {})
        pdl = model.get("PANOPTIC_DEEPLAB", {})
        crop = d.get("INPUT", {}).get("CROP", {})
        base = cls()
        if res.get("STEM_TYPE", "deeplab") != "deeplab":
            raise ValueError(f"Detectron2 config: RESNETS.STEM_TYPE {res.get('STEM_TYPE')!r} is not 'deeplab'")
        if res.get("STRIDE_IN_1X1", False):
            raise ValueError("Detectron2 config: RESNETS.STRIDE_IN_1X1=True is not supported")
        if int(res.get("NUM_GROUPS", 1)) != 1:
            raise ValueError("Detectron2 config: RESNETS.NUM_GROUPS != 1 is not supported")
        if any(res.get("DEFORM_ON_PER_STAGE", [False])):
            raise ValueError("Detectron2 config: deformable convolutions are not supported")
        dsconv = bool(pdl.get("USE_DEPTHWISE_SEPARABLE_CONV", False))
        if bool(sem.get("USE_DEPTHWISE_SEPARABLE_CONV", dsconv)) != dsconv:
            raise ValueError(
                "Detectron2 config: SEM_SEG_HEAD and PANOPTIC_DEEPLAB disagree on USE_DEPTHWISE_SEPARABLE_CONV"
            )
        output_stride = 16 if int(res.get("RES5_DILATION", 2)) > 1 else 32
        pool: tuple[int, int] | None = None
        if crop.get("ENABLED", True):
            size = crop.get("SIZE", [512, 1024])
            if size[0] % output_stride or size[1] % output_stride:
                raise ValueError(f"Detectron2 config: INPUT.CROP.SIZE {size} not divisible by {output_stride}")
            pool = (int(size[0]) // output_stride, int(size[1]) // output_stride)
        semantic = BranchConfig(
            project_channels=tuple(sem.get("PROJECT_CHANNELS", [32, 64])),
            aspp_channels=int(sem.get("ASPP_CHANNELS", 256)),
            convs_dim=int(sem.get("CONVS_DIM", 256)),
            head_channels=int(sem.get("HEAD_CHANNELS", 256)),
        )
        instance = BranchConfig(
            project_channels=tuple(ins.get("PROJECT_CHANNELS", [32, 64])),
            aspp_channels=int(ins.get("ASPP_CHANNELS", 256)),
            convs_dim=int(ins.get("CONVS_DIM", 128)),
            head_channels=int(ins.get("HEAD_CHANNELS", 32)),
        )
        divisibility = int(pdl.get("SIZE_DIVISIBILITY", -1))
        config = cls(
            resnet_depth=int(res.get("DEPTH", 50)),
            stem_channels=int(res.get("STEM_OUT_CHANNELS", 128)),
            res2_channels=int(res.get("RES2_OUT_CHANNELS", 256)),
            bottleneck_channels=int(res.get("WIDTH_PER_GROUP", 64)) * int(res.get("NUM_GROUPS", 1)),
            res4_dilation=int(res.get("RES4_DILATION", 1)),
            res5_dilation=int(res.get("RES5_DILATION", 2)),
            res5_multi_grid=tuple(int(g) for g in res.get("RES5_MULTI_GRID", [1, 2, 4])),
            num_classes=int(sem.get("NUM_CLASSES", 19)),
            semantic=semantic,
            instance=instance,
            depth=semantic,
            aspp_dilations=tuple(int(r) for r in sem.get("ASPP_DILATIONS", [6, 12, 18])),
            aspp_dropout=float(sem.get("ASPP_DROPOUT", 0.1)),
            aspp_pool_kernel_size=pool,
            aspp_strict_pool_size=True,
            depthwise_separable=dsconv,
            common_stride=int(sem.get("COMMON_STRIDE", 4)),
            input_format=str(d.get("INPUT", {}).get("FORMAT", "RGB")),
            pixel_mean=_three(model.get("PIXEL_MEAN", base.pixel_mean)),
            pixel_std=_three(model.get("PIXEL_STD", base.pixel_std)),
            # -1 means "the backbone's", which is 0 (no padding) for this ResNet.
            size_divisibility=max(divisibility, 0),
            depth_trained=False,  # Detectron2 has no depth branch: ours starts from its initialisation
        )
        return replace(config, **changes)


def _three(values: Any) -> tuple[float, float, float]:
    """Three floats (per-channel pixel statistics)."""
    a, b, c = (float(v) for v in values)
    return a, b, c


def load_detectron2_yaml(path: str | Path) -> dict[str, Any]:
    """Read a Detectron2 YAML config, merging ``_BASE_`` files (relative paths) first."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"Detectron2 config not found: {path}") from exc
    except yaml.YAMLError as exc:
        raise ValueError(f"Detectron2 config {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"Detectron2 config {path} does not hold a mapping")
    base = data.pop("_BASE_", None)
    if base is None:
        return data
    merged = load_detectron2_yaml(path.parent / base)
    _overlay_config(merged, data)
    return merged


def _overlay_config(into: dict[str, Any], update: dict[str, Any]) -> None:
    """A Detectron2 config on top of its ``_BASE_``: nested sections merged key by key, in place."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _overlay_config(into[key], value)
        else:
            into[key] = value
