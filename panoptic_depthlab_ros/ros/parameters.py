"""Every parameter of the ``panoptic_depthlab`` node, declared in one place.

:data:`PARAMETERS` is the single table (name, default, description, range or
choices, run-time changeable or not); ``config/panoptic_depthlab.yaml`` holds the
same keys with the same defaults (a test checks both ways).  The node declares
the table, reads it once into a typed :class:`NodeSettings`, and only the
``dynamic`` entries (fusion thresholds, overlay colours) change afterwards.

The fusion parameters default to :data:`FROM_CHECKPOINT` (-1): the checkpoint's own
post-processing settings (saved with the model, e.g. a small ``stuff_area`` for a
model trained on small images) stay in force unless a value is given explicitly.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType

from ..backends import BACKENDS
from ..checkpoint import bundled_checkpoint
from ..errors import CheckpointError, PanopticDepthLabError
from ..model import SCALE_RANGE, SCALE_RANGE_TEXT
from ..postprocess import PostprocessConfig

Value = bool | int | float | str

# A fusion parameter at this value (any negative value) uses the checkpoint's own setting.
FROM_CHECKPOINT = -1
# Parameters that map one to one onto PostprocessConfig fields of the same name.
FUSION = ("center_threshold", "nms_kernel", "top_k", "stuff_area", "thing_area", "depth_erosion_px")


class ParameterError(PanopticDepthLabError, ValueError):
    """A parameter value the node cannot start with (names the parameter and why)."""


@dataclass(frozen=True)
class ParameterSpec:
    """One node parameter.

    ``bounds`` = (from, to) or (from, to, step) for numbers (step 0 = continuous;
    an integer step s allows from + k*s); ``choices`` for strings.  ``dynamic``
    parameters may change while running, all others are read-only after start-up.
    """

    name: str
    default: Value
    description: str
    bounds: tuple[float, float] | tuple[float, float, float] | None = None
    choices: tuple[str, ...] = ()
    dynamic: bool = False

    @property
    def type(self) -> int:
        """``rcl_interfaces/ParameterType`` of ``default`` (the node's static type)."""
        if isinstance(self.default, bool):
            return ParameterType.PARAMETER_BOOL
        if isinstance(self.default, int):
            return ParameterType.PARAMETER_INTEGER
        if isinstance(self.default, float):
            return ParameterType.PARAMETER_DOUBLE
        return ParameterType.PARAMETER_STRING

    def descriptor(self) -> ParameterDescriptor:
        """Build the descriptor tools show (``ros2 param describe``) and rclpy enforces."""
        d = ParameterDescriptor(
            name=self.name, type=self.type, description=self.description, read_only=not self.dynamic
        )
        if self.choices:
            d.additional_constraints = "one of: " + ", ".join(self.choices)
        if self.bounds is not None:
            lo, hi, *rest = self.bounds
            step = rest[0] if rest else 0
            if self.type == ParameterType.PARAMETER_INTEGER:
                d.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=int(step))]
            else:
                d.floating_point_range = [
                    FloatingPointRange(from_value=float(lo), to_value=float(hi), step=float(step))
                ]
        return d


_OUTPUT = "Publish ~/{0} ({1}); an output without subscribers costs nothing."
_CKPT = " -1 = the checkpoint's own value (saved with the model)."

PARAMETERS: tuple[ParameterSpec, ...] = (
    # Model
    ParameterSpec(
        "checkpoint",
        "",
        "Model file: our .safetensors checkpoint or an exported .onnx; "
        "empty = the demo checkpoint bundled in the package "
        "(panoptic_depthlab_ros/data/demo.safetensors).",
    ),
    ParameterSpec(
        "backend",
        "auto",
        "What runs the network: auto (a checkpoint in torch; an exported .onnx in openvino when installed and"
        " on the CPU, else onnxruntime), torch (checkpoint), onnxruntime or openvino (.onnx file, fp32 or"
        " export --int8).",
        choices=BACKENDS,
    ),
    ParameterSpec(
        "device",
        "auto",
        "auto (CUDA when available, else CPU), cpu or cuda; cuda without CUDA fails at start-up.",
        choices=("auto", "cpu", "cuda"),
    ),
    ParameterSpec("fp16", False, "Run the network in float16 autocast (CUDA only, ignored on CPU)."),
    ParameterSpec(
        "compile_mode",
        "",
        "torch.compile the network with this mode ('default', 'reduce-overhead' = CUDA graphs, 'max-autotune'); "
        "empty = no compilation. Compiling takes minutes on a CPU: meant for GPUs.",
        choices=("", "default", "reduce-overhead", "max-autotune"),
    ),
    ParameterSpec(
        "num_threads",
        0,
        "CPU intra-op threads of the network (torch.set_num_threads; onnxruntime and openvino use the same);"
        " 0 = the default (torch's: the physical cores).",
        bounds=(0, 256),
    ),
    ParameterSpec(
        "max_input_width",
        0,
        "Downscale images wider than this before the network (0 = never); all outputs stay at the input size.",
        bounds=(0, 16384),
    ),
    ParameterSpec(
        "input_scale",
        -1.0,
        f"Resize each frame by this ({SCALE_RANGE_TEXT}) before the network: larger finds smaller things, for more "
        "time per frame. The demo model is trained for and saved with 1.5 (PQ 50.7; at 1: 43.7, 1.8x "
        "faster);" + _CKPT,
        bounds=(-1.0, SCALE_RANGE[1]),
    ),
    ParameterSpec(
        "flip_average",
        False,
        "Also run each frame mirrored and average the two: on the demo model +1.1 PQ and +1.0 DPQ, "
        "for twice the network time. Off by default (halves the frame rate on a CPU); for spare GPU time.",
    ),
    ParameterSpec(
        "strict_pool_size",
        False,
        "Refuse frames whose size Detectron2's ASPP image pooling refuses (res5 not a multiple of its "
        "window, e.g. 720x1280 with the Cityscapes configs), as Detectron2 does: each is dropped with a "
        "warning. false: every size works, with exactly Detectron2's outputs wherever it accepts the size.",
    ),
    ParameterSpec(
        "untrained_depth",
        False,
        "Publish depth and everything derived from it (~/depth, ~/markers, ~/points, segment depths, "
        "overlay distances) even from a checkpoint whose depth branch was never trained (e.g. converted "
        "from Detectron2): its depth is noise until trained. false: such a checkpoint publishes "
        "panoptic and semantic outputs only, and says so at start-up.",
    ),
    ParameterSpec(
        "max_input_pixels",
        16777216,
        "Images with more pixels are dropped with a warning (0 = no limit).",
        bounds=(0, 1 << 30),
    ),
    # Input
    ParameterSpec(
        "image_transport",
        "raw",
        "raw: sensor_msgs/Image on `image`; compressed: sensor_msgs/CompressedImage (JPEG/PNG) on `image/compressed`.",
        choices=("raw", "compressed"),
    ),
    ParameterSpec(
        "qos_reliability",
        "best_effort",
        "Reliability of the image and camera_info subscriptions (best_effort also matches reliable publishers).",
        choices=("best_effort", "reliable"),
    ),
    ParameterSpec(
        "qos_depth",
        1,
        "History depth of the image subscription; the node itself keeps only the latest frame.",
        bounds=(1, 100),
    ),
    # Fusion
    ParameterSpec(
        "center_threshold",
        -1.0,
        "Instance center heatmap values at or below this (0..1) are not centers;" + _CKPT,
        bounds=(-1.0, 1.0),
        dynamic=True,
    ),
    ParameterSpec(
        "nms_kernel",
        -1,
        "Max-pool window (odd) of the center non-maximum suppression;" + _CKPT,
        bounds=(-1, 31, 2),
        dynamic=True,
    ),
    ParameterSpec(
        "top_k",
        -1,
        "At most top_k - 1 instance centers per image (top_k >= 1);" + _CKPT,
        bounds=(-1, 1000),
        dynamic=True,
    ),
    ParameterSpec(
        "stuff_area",
        -1,
        "Stuff classes with fewer pixels become void (pixels at the input size);" + _CKPT,
        bounds=(-1, 1 << 30),
        dynamic=True,
    ),
    ParameterSpec(
        "thing_area",
        -1,
        "Thing segments with fewer pixels become void (pixels at the input size; 0 keeps "
        "every instance, as Detectron2);" + _CKPT,
        bounds=(-1, 1 << 30),
        dynamic=True,
    ),
    ParameterSpec(
        "depth_erosion_px",
        -1,
        "Erode each segment by this many pixels before its depth "
        "statistics (edges bleed depth from neighbours);" + _CKPT,
        bounds=(-1, 64),
        dynamic=True,
    ),
    # Overlay
    ParameterSpec(
        "overlay_near_m",
        5.0,
        "Overlay colour scale: segments at or nearer than this are red (must stay below overlay_far_m).",
        bounds=(0.0, 1000.0),
        dynamic=True,
    ),
    ParameterSpec(
        "overlay_far_m",
        60.0,
        "Overlay colour scale: segments at or farther than this are blue; green in the middle.",
        bounds=(0.0, 1000.0),
        dynamic=True,
    ),
    # Outputs
    ParameterSpec("publish_panoptic", True, _OUTPUT.format("panoptic", "32SC1 panoptic ids, void -1")),
    ParameterSpec("publish_semantic", True, _OUTPUT.format("semantic", "mono8 Cityscapes trainIds, 255 void")),
    ParameterSpec("publish_depth", True, _OUTPUT.format("depth", "32FC1 meters, NaN where invalid")),
    ParameterSpec("publish_segments", True, _OUTPUT.format("segments", "SegmentDepthArray")),
    ParameterSpec("publish_overlay", True, _OUTPUT.format("overlay", "bgr8 depth-tinted labelled picture")),
    ParameterSpec(
        "publish_markers",
        True,
        _OUTPUT.format(
            "markers",
            "visualization_msgs/MarkerArray in the image's frame: per segment a text "
            "'label 12.3 m' at its 3D centroid coloured on the overlay's near/far scale, "
            "per thing a translucent box over its 5th-95th percentile 3D extent; a DELETEALL "
            "first; only with camera_info",
        ),
    ),
    ParameterSpec(
        "publish_points",
        True,
        _OUTPUT.format(
            "points",
            "sensor_msgs/PointCloud2: the depth map back-projected through camera_info's K "
            "(REP 103 optical frame), fields x y z float32, rgb packed float32, label int32 "
            "panoptic id; only with camera_info",
        ),
    ),
    ParameterSpec(
        "points_stride",
        4,
        "~/points uses every n-th pixel in each direction (1 = every pixel).",
        bounds=(1, 64),
    ),
    ParameterSpec(
        "points_organized",
        False,
        "true: ~/points keeps the (strided) image grid with NaN x/y/z where depth is invalid; "
        "false: only points with valid depth (height 1, is_dense).",
    ),
    ParameterSpec(
        "points_color",
        "class",
        "rgb of ~/points: class (the checkpoint's class colours) or instance (each thing a "
        "fixed colour derived from its panoptic id, stuff in its class colour).",
        choices=("class", "instance"),
    ),
    # Running
    ParameterSpec(
        "managed",
        False,
        "true: a lifecycle (managed) node that starts unconfigured and follows "
        "~/change_state (configure, activate, deactivate, cleanup, shutdown); false: "
        "configures and activates itself at start, without lifecycle services.",
    ),
    ParameterSpec(
        "diagnostics_period_s",
        1.0,
        "Period of the /diagnostics status (counts and latencies).",
        bounds=(0.1, 60.0),
    ),
)

SPECS: dict[str, ParameterSpec] = {p.name: p for p in PARAMETERS}
DYNAMIC: frozenset[str] = frozenset(p.name for p in PARAMETERS if p.dynamic)


@dataclass(frozen=True)
class NodeSettings:
    """The parameters' values, typed; one field per :data:`PARAMETERS` entry."""

    checkpoint: str
    backend: str
    device: str
    fp16: bool
    compile_mode: str
    num_threads: int
    max_input_width: int
    input_scale: float
    flip_average: bool
    strict_pool_size: bool
    untrained_depth: bool
    max_input_pixels: int
    image_transport: str
    qos_reliability: str
    qos_depth: int
    center_threshold: float
    nms_kernel: int
    top_k: int
    stuff_area: int
    thing_area: int
    depth_erosion_px: int
    overlay_near_m: float
    overlay_far_m: float
    publish_panoptic: bool
    publish_semantic: bool
    publish_depth: bool
    publish_segments: bool
    publish_overlay: bool
    publish_markers: bool
    publish_points: bool
    points_stride: int
    points_organized: bool
    points_color: str
    managed: bool
    diagnostics_period_s: float

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> NodeSettings:
        """Build settings from ``{name: value}`` (all parameters), checked."""
        missing = set(SPECS) - set(values)
        if missing:
            raise ParameterError(f"missing parameters: {', '.join(sorted(missing))}")
        settings = cls(**{name: values[name] for name in SPECS})
        problem = check_values(settings)
        if problem:
            raise ParameterError(problem)
        return settings

    def replace(self, changes: dict[str, Any]) -> NodeSettings:
        """Return a copy with ``changes`` applied (no checks; see :func:`check_values`)."""
        return dataclasses.replace(self, **changes)

    def postprocess(self, base: PostprocessConfig) -> PostprocessConfig:
        """Return ``base`` (the checkpoint's) with the fusion parameters that are set on top.

        A parameter at :data:`FROM_CHECKPOINT` (negative) keeps ``base``'s value.
        Raises ``ValueError`` for a combination PostprocessConfig refuses.
        """
        overrides = {name: getattr(self, name) for name in FUSION if getattr(self, name) >= 0}
        return dataclasses.replace(base, **overrides)


def check_values(settings: NodeSettings) -> str | None:
    """Check what rclpy's descriptors cannot (choices, cross-parameter rules): reason or None."""
    for spec in PARAMETERS:
        value = getattr(settings, spec.name)
        if spec.choices and value not in spec.choices:
            return f"{spec.name} must be one of {', '.join(spec.choices)}, got {value!r}"
    if settings.top_k == 0:
        return "top_k must be at least 1, or -1 for the checkpoint's value"
    if 0 <= settings.input_scale < SCALE_RANGE[0]:  # above: the descriptor's bound
        return (
            f"input_scale must be in {SCALE_RANGE_TEXT}, or -1 for the checkpoint's value, got {settings.input_scale:g}"
        )
    if not (math.isfinite(settings.overlay_near_m) and settings.overlay_far_m > settings.overlay_near_m):
        return (
            f"overlay_far_m ({settings.overlay_far_m:g}) must be greater than overlay_near_m "
            f"({settings.overlay_near_m:g})"
        )
    return None


def check_update(current: NodeSettings, changes: dict[str, Any]) -> str | None:
    """Why a run-time change of ``changes`` is refused, or None when it is fine.

    rclpy refuses read-only parameters and out-of-range values itself (with its
    own reason); this adds the rules that involve several parameters.
    """
    fixed = sorted(set(changes) - DYNAMIC)
    if fixed:
        return (
            f"{', '.join(fixed)} can only be set at start-up; at run time only {', '.join(sorted(DYNAMIC))} can change"
        )
    return check_values(current.replace(changes))


def resolve_checkpoint(value: str) -> Path:
    """Return the model file to load: ``value``, or the bundled demo checkpoint when empty.

    Fails fast (:class:`ParameterError` naming the path) when the file is missing,
    so the node never starts half-way.
    """
    if value:
        path = Path(value).expanduser()
        if not path.is_file():
            raise ParameterError(f"checkpoint {str(path)!r} does not exist or is not a file")
        return path
    try:
        return bundled_checkpoint()
    except CheckpointError as exc:
        raise ParameterError(
            f"checkpoint is empty, which selects the bundled demo checkpoint {str(exc.path)!r}, "
            "but that file does not exist in this installation; "
            "set checkpoint:=/path/to/model.safetensors"
        ) from exc
