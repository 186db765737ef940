"""Every parameter of the ``panoptic_depthlab`` node, defined once: the fields of :class:`NodeSettings`.

Each field of :class:`NodeSettings` is one parameter: its type, its default, and (in
the field's metadata, see :func:`parameter`) its description, range or choices and
whether it may change at run time.  :data:`PARAMETERS` reads that table; the node
declares it, reads it once into a :class:`NodeSettings`, and only the ``dynamic``
entries (fusion thresholds, overlay colours) change afterwards.  The ``publish_<name>``
switches come from the output table (:data:`~panoptic_depthlab_ros.node_outputs.OUTPUTS`).
``config/panoptic_depthlab.yaml`` and the parameter table of ``docs/node.md`` are
checked against it by the tests.

The fusion parameters default to :data:`FROM_CHECKPOINT` (-1): the checkpoint's own
post-processing settings (saved with the model, e.g. a small ``stuff_area`` for a
model trained on small images) stay in force unless a value is given explicitly.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException, InvalidTopicNameException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.validate_topic_name import validate_topic_name

from ..backends import BACKENDS
from ..checkpoint import bundled_checkpoint
from ..ego_motion import CameraMount
from ..errors import CheckpointError, PanopticDepthLabError
from ..fusion import PostprocessConfig
from ..geometry3d import COLOR_MODES
from ..model import SCALE_RANGE, SCALE_RANGE_TEXT
from ..node_outputs import BY_NAME, OutputSettings
from ..odometry import DEFAULT_MAX_AGE_S, OdometryBuffer, mount_numbers_fit, mounts_from_numbers
from ..pipeline import PipelineSettings, check_camera_names
from ..tracker import TrackerConfig

Value = bool | int | float | str | tuple[str, ...] | tuple[float, ...]

# A fusion parameter at this value (any negative value) uses the checkpoint's own setting.
FROM_CHECKPOINT = -1
# Parameters that map one to one onto PostprocessConfig fields of the same name.
FUSION = ("center_threshold", "nms_kernel", "top_k", "stuff_area", "thing_area", "depth_erosion_px")
# Parameters tracking_<name> that map one to one onto TrackerConfig fields <name>.
TRACKING_PREFIX = "tracking_"


class ParameterError(PanopticDepthLabError, ValueError):
    """A parameter value the node cannot start with (names the parameter and why)."""


_DESCRIBED = "parameter"  # the metadata key of a NodeSettings field: its ParameterSpec without name and default
_CKPT = " -1 = the checkpoint's own value (saved with the model)."
_TYPE_NAMES = {
    ParameterType.PARAMETER_BOOL: "bool",
    ParameterType.PARAMETER_INTEGER: "int",
    ParameterType.PARAMETER_DOUBLE: "double",
    ParameterType.PARAMETER_STRING: "string",
    ParameterType.PARAMETER_STRING_ARRAY: "string[]",
    ParameterType.PARAMETER_DOUBLE_ARRAY: "double[]",
}
# How declare_settings names the type a parameter must have, by its type name.
_TYPE_WORDS = {
    "bool": "a bool",
    "int": "an integer",
    "double": "a double (e.g. 5.0, not 5)",
    "string": "a string",
    "string[]": "a list of strings (e.g. [front, left])",
    "double[]": "a list of doubles (e.g. [0.0, 0.5, 1.2], not [0, 0.5, 1.2])",
}
# The camera mount parameters: 3 numbers (CameraMount's xyz and rpy) per camera.
MOUNT = ("camera_mount_xyz", "camera_mount_rpy")
# What each holds per camera, as a refusal names it.
_MOUNT_TRIPLE = {"camera_mount_xyz": "[x, y, z]", "camera_mount_rpy": "[roll, pitch, yaw]"}


def parameter(
    default: Value,
    description: str,
    *,
    bounds: tuple[float, float] | tuple[float, float, float] | None = None,
    choices: tuple[str, ...] = (),
    dynamic: bool = False,
) -> Any:
    """A :class:`NodeSettings` field that is a node parameter (see :class:`ParameterSpec`)."""
    return field(
        default=default,
        metadata={_DESCRIBED: {"description": description, "bounds": bounds, "choices": choices, "dynamic": dynamic}},
    )


def output_switch(name: str) -> Any:
    """The ``publish_<name>`` parameter of output ``name``, described by the output table."""
    output = BY_NAME[name]
    needs = " Needs camera_info." if output.needs_intrinsics else ""
    kind = output.msg_type.replace("/msg/", "/") + (f" {output.encoding}" if output.encoding else "")
    return parameter(
        True, f"Publish ~/{name} ({kind}: {output.description}).{needs} An output without subscribers costs nothing."
    )


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
        if isinstance(self.default, tuple):  # a list of numbers, or of strings (an empty list: strings)
            if self.default and all(isinstance(v, float) for v in self.default):
                return ParameterType.PARAMETER_DOUBLE_ARRAY
            return ParameterType.PARAMETER_STRING_ARRAY
        return ParameterType.PARAMETER_STRING

    @property
    def type_name(self) -> str:
        """``bool``, ``int``, ``double``, ``string``, ``string[]`` or ``double[]`` (as ``ros2 param describe``)."""
        return _TYPE_NAMES[self.type]

    def range_text(self) -> str:
        """The allowed values in words: ``0..256``, ``-1..31 step 2``, ``torch, onnxruntime``; "" if any."""
        if self.choices:
            return ", ".join(repr(c) if c == "" else c for c in self.choices)
        if self.bounds is None:
            return ""
        lo, hi, *rest = self.bounds
        step = f" step {rest[0]:g}" if rest and rest[0] else ""
        if self.type == ParameterType.PARAMETER_INTEGER:
            return f"{int(lo)}..{int(hi)}{step}"
        return f"{lo:g}..{hi:g}{step}"

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


@dataclass(frozen=True)
class NodeSettings:
    """The node's parameters, typed: one field per parameter, with its default and description (the table)."""

    # Model
    checkpoint: str = parameter(
        "",
        "Model file: our .safetensors checkpoint or an exported .onnx; "
        "empty = the demo checkpoint bundled in the package "
        "(panoptic_depthlab_ros/data/demo.safetensors).",
    )
    backend: str = parameter(
        "auto",
        "What runs the network: auto (a checkpoint in torch; an exported .onnx in openvino when installed and"
        " on the CPU, else onnxruntime), torch (checkpoint), onnxruntime or openvino (.onnx file, fp32 or"
        " export --int8).",
        choices=BACKENDS,
    )
    device: str = parameter(
        "auto",
        "auto (CUDA when available, else CPU), cpu or cuda; cuda without CUDA fails at start-up.",
        choices=("auto", "cpu", "cuda"),
    )
    fp16: bool = parameter(False, "Run the network in float16 autocast (CUDA only, ignored on CPU).")
    compile_mode: str = parameter(
        "",
        "torch.compile the network with this mode ('default', 'reduce-overhead' = CUDA graphs, 'max-autotune'); "
        "empty = no compilation. Compiling takes minutes on a CPU: meant for GPUs.",
        choices=("", "default", "reduce-overhead", "max-autotune"),
    )
    num_threads: int = parameter(
        0,
        "CPU intra-op threads of the network (torch.set_num_threads; onnxruntime and openvino use the same);"
        " 0 = the default (torch's: the physical cores).",
        bounds=(0, 256),
    )
    max_input_width: int = parameter(
        0,
        "Downscale images wider than this before the network (0 = never); all outputs stay at the input size.",
        bounds=(0, 16384),
    )
    input_scale: float = parameter(
        -1.0,
        f"Resize each frame by this ({SCALE_RANGE_TEXT}) before the network: larger finds smaller things, for more "
        "time per frame; a model runs best at the scale it was trained for (the demo model's: docs/model.md; "
        "what each scale costs and gains: docs/performance.md);" + _CKPT,
        bounds=(-1.0, SCALE_RANGE[1]),
    )
    flip_average: bool = parameter(
        False,
        "Also run each frame mirrored and average the two: slightly better segments and depth for twice the "
        "network time (docs/performance.md). Off by default (halves the frame rate on a CPU); for spare GPU time.",
    )
    strict_pool_size: bool = parameter(
        False,
        "Refuse frames whose size Detectron2's ASPP image pooling refuses (res5 not a multiple of its "
        "window, e.g. 720x1280 with the Cityscapes configs), as Detectron2 does: each is dropped with a "
        "warning. false: every size works, with exactly Detectron2's outputs wherever it accepts the size.",
    )
    untrained_depth: bool = parameter(
        False,
        "Publish depth and everything derived from it (~/depth, ~/markers, ~/points, segment depths, "
        "overlay distances) even from a checkpoint whose depth branch was never trained (e.g. converted "
        "from Detectron2): its depth is noise until trained. false: such a checkpoint publishes "
        "panoptic and semantic outputs only, and says so at start-up.",
    )
    warmup_height: int = parameter(
        512,
        "Height of the warm-up frame run at configure (set the camera's: an out-of-memory, a GPU the torch build"
        " has no kernels for, a compile or an engine build then fail the configure instead of every frame;"
        " after frames were seen, a re-configure uses their size); 0 = no warm-up.",
        bounds=(0, 16384),
    )
    warmup_width: int = parameter(
        1024, "Width of the warm-up frame (see warmup_height); 0 = no warm-up.", bounds=(0, 16384)
    )
    max_input_pixels: int = parameter(
        16777216,
        "Images with more pixels are dropped with a warning (0 = no limit).",
        bounds=(0, 1 << 30),
    )
    # Input
    cameras: tuple[str, ...] = parameter(
        (),
        "Camera names, e.g. [front, left, right]: camera C is read from C/image (C/image/compressed) and "
        "C/camera_info and answered on ~/C/<output>, all through one model, the cameras' latest frames "
        "batched (docs/multi-camera.md). Empty = one camera on image and camera_info, outputs ~/<output>.",
    )
    max_batch: int = parameter(
        0,
        "At most this many camera frames per network pass (0 = the latest waiting frame of every camera); "
        "cameras take turns, so none is starved.",
        bounds=(0, 64),
    )
    image_transport: str = parameter(
        "raw",
        "raw: sensor_msgs/Image on `image`; compressed: sensor_msgs/CompressedImage (JPEG/PNG) on `image/compressed`.",
        choices=("raw", "compressed"),
    )
    qos_reliability: str = parameter(
        "best_effort",
        "Reliability of the image and camera_info subscriptions (best_effort also matches reliable publishers).",
        choices=("best_effort", "reliable"),
    )
    qos_depth: int = parameter(
        1,
        "History depth of the image subscription; the node itself keeps only the latest frame.",
        bounds=(1, 100),
    )
    # Fusion
    center_threshold: float = parameter(
        -1.0,
        "Instance center heatmap values at or below this (0..1) are not centers;" + _CKPT,
        bounds=(-1.0, 1.0),
        dynamic=True,
    )
    nms_kernel: int = parameter(
        -1,
        "Max-pool window (odd) of the center non-maximum suppression;" + _CKPT,
        bounds=(-1, 31, 2),
        dynamic=True,
    )
    top_k: int = parameter(
        -1,
        "At most top_k - 1 instance centers per image (top_k >= 1);" + _CKPT,
        bounds=(-1, 1000),
        dynamic=True,
    )
    stuff_area: int = parameter(
        -1,
        "Stuff classes with fewer pixels become void (pixels at the input size);" + _CKPT,
        bounds=(-1, 1 << 30),
        dynamic=True,
    )
    thing_area: int = parameter(
        -1,
        "Thing segments with fewer pixels become void (pixels at the input size; 0 keeps "
        "every instance, as Detectron2);" + _CKPT,
        bounds=(-1, 1 << 30),
        dynamic=True,
    )
    depth_erosion_px: int = parameter(
        -1,
        "Erode each segment by this many pixels before its depth "
        "statistics (edges bleed depth from neighbours);" + _CKPT,
        bounds=(-1, 64),
        dynamic=True,
    )
    # Overlay
    overlay_near_m: float = parameter(
        OutputSettings.near,
        "Overlay colour scale: segments at or nearer than this are red (must stay below overlay_far_m).",
        bounds=(0.0, 1000.0),
        dynamic=True,
    )
    overlay_far_m: float = parameter(
        OutputSettings.far,
        "Overlay colour scale: segments at or farther than this are blue; green in the middle.",
        bounds=(0.0, 1000.0),
        dynamic=True,
    )
    # Tracking (docs/tracking.md); the other TrackerConfig settings keep their defaults. The
    # tracking_* settings may change at run time: each camera's tracks start afresh with them.
    tracking: bool = parameter(
        True,
        "Track thing segments over frames: stable track ids, velocity and time to contact in ~/segments, "
        "'car #12 14.3 m, 2.1 m/s closing' in the overlay, velocity arrows in ~/markers, ~/tracked_panoptic. "
        "Time comes from the image stamps: a stamp that goes back or repeats, or a pause over "
        "tracking_max_gap_s, drops every track (a warning says why).",
    )
    tracking_confirm_frames: int = parameter(
        TrackerConfig.confirm_frames,
        "Frames in a row a new track must be seen before it is confirmed; until then its "
        "track_age is below this and it may still vanish.",
        bounds=(1, 100),
        dynamic=True,
    )
    tracking_report_tentative: bool = parameter(
        TrackerConfig.report_tentative,
        "Give a thing its track_id from the first frame its track is seen. Off: track_id stays 0 until "
        "the track is confirmed (track_age shows the frames seen meanwhile), so an id once shown is one "
        "the tracker keeps following.",
        dynamic=True,
    )
    tracking_max_lost_frames: int = parameter(
        TrackerConfig.max_lost_frames,
        "Frames a confirmed track may go unseen (hidden, missed) and still get its id back.",
        bounds=(0, 1000),
        dynamic=True,
    )
    tracking_max_gap_s: float = parameter(
        TrackerConfig.max_gap_s,
        "A gap between image stamps over this (s) drops every track.",
        bounds=(0.001, 3600.0),
        dynamic=True,
    )
    tracking_min_area_px: int = parameter(
        TrackerConfig.min_area_px,
        "Thing segments smaller than this (pixels) stay untracked (track_id 0).",
        bounds=(1, 1 << 30),
        dynamic=True,
    )
    tracking_accel_noise_mps2: float = parameter(
        TrackerConfig.accel_noise_mps2,
        "Unmodelled acceleration of the motion filter (m/s^2): larger follows braking and turns sooner, "
        "smaller smooths the velocity more.",
        bounds=(0.0, 100.0),
        dynamic=True,
    )
    tracking_velocity_min_frames: int = parameter(
        TrackerConfig.velocity_min_frames,
        "Measurements a track needs before its velocity (and time to contact) is reported instead of NaN.",
        bounds=(2, 1000),
        dynamic=True,
    )
    tracking_velocity_max_std_mps: float = parameter(
        TrackerConfig.velocity_max_std_mps,
        "A velocity is reported only once the filter's standard deviation of it is at most this (m/s).",
        bounds=(0.01, 1000.0),
        dynamic=True,
    )
    tracking_min_closing_speed_mps: float = parameter(
        TrackerConfig.min_closing_speed_mps,
        "Closing slower than this (m/s) counts as not closing: time_to_contact +inf.",
        bounds=(0.0, 100.0),
        dynamic=True,
    )
    tracking_smooth_depth: bool = parameter(
        TrackerConfig.smooth_depth,
        "Report a tracked thing's filtered depth (in ~/segments depth_mean, the overlay and markers) "
        "instead of its segment's own: less flicker, some lag when it brakes.",
        dynamic=True,
    )
    tracking_size_noise_px: float = parameter(
        TrackerConfig.size_noise_px,
        "Standard deviation (px) of a box height, for looming (the growth of a thing's box, fused into "
        "its closing speed where it agrees with the depth's rate); 0 turns looming off.",
        bounds=(0.0, 100.0),
        dynamic=True,
    )
    tracking_size_weight: float = parameter(
        TrackerConfig.size_weight,
        "Weight of the area change in the association cost (a fragment or a merged mask changes its "
        "area far more than a thing does between frames); 0 turns it off.",
        bounds=(0.0, 10.0),
        dynamic=True,
    )
    tracking_appearance_weight: float = parameter(
        TrackerConfig.appearance_weight,
        "Weight of the colour difference (segment against track, 0 to 1) in the association cost: it "
        "tells apart two things of one class that cross or come back from behind something; 0 turns it off.",
        bounds=(0.0, 10.0),
        dynamic=True,
    )
    tracking_static_gate: float = parameter(
        TrackerConfig.static_gate,
        "With odometry (odometry_topic): a thing of the classes that may stand still ("
        + ", ".join(TrackerConfig.static_labels)
        + ") whose filtered velocity is that of the world seen from the moving camera (the camera's motion "
        "reversed), within this chi-square gate (3 degrees of freedom; 7.81: 95 %) and by at most "
        f"{TrackerConfig.static_max_speed_mps:g} m/s, is reported at rest, with exactly the world's velocity "
        "(monocular depth puts a parked car's approach a few per cent off); 0 turns it off.",
        bounds=(0.0, 1000.0),
        dynamic=True,
    )
    # Odometry: the camera's own motion, for the tracker (set at start-up).
    odometry_topic: str = parameter(
        "",
        "nav_msgs/Odometry topic of the vehicle (e.g. /odom); empty = no odometry. The twist whose stamp is "
        "nearest each image's stamp, moved to the camera by camera_mount_xyz and camera_mount_rpy, tells the "
        "tracker the camera's own motion (see tracking_static_gate). Needs tracking. With several cameras one "
        "subscription feeds them all, each moved by its own mount.",
    )
    odometry_max_age_s: float = parameter(
        DEFAULT_MAX_AGE_S,
        "The odometry message whose stamp is nearest the image's is used when at most this far from it (s), "
        "before or after; otherwise the frame is tracked without the camera's motion "
        "(tracked_without_odometry in /diagnostics, and a warning).",
        bounds=(0.0, 10.0),
    )
    camera_mount_xyz: tuple[float, ...] = parameter(
        CameraMount().xyz,
        "Position (m) of the camera's optical frame in the odometry's child_frame_id (the vehicle body, "
        "REP 103: x forward, y left, z up): [x, y, z]. With several cameras and odometry_topic, one triple per "
        "camera in the order of cameras: [x1, y1, z1, x2, y2, z2, ...].",
    )
    camera_mount_rpy: tuple[float, ...] = parameter(
        CameraMount().rpy,
        "Orientation of the camera's optical frame in the odometry's child_frame_id: [roll, pitch, yaw] rad, "
        "fixed axes as in URDF (what tf gives from that frame to the optical frame). The default "
        "[-pi/2, 0, -pi/2] is a camera looking along the body's x axis (optical z forward, x right, y down). "
        "With several cameras and odometry_topic, one triple per camera in the order of cameras.",
    )
    # Outputs: one switch per output of the table, in its order (a test checks that).
    publish_segments: bool = output_switch("segments")
    publish_markers: bool = output_switch("markers")
    publish_panoptic: bool = output_switch("panoptic")
    publish_tracked_panoptic: bool = output_switch("tracked_panoptic")
    publish_semantic: bool = output_switch("semantic")
    publish_depth: bool = output_switch("depth")
    publish_points: bool = output_switch("points")
    publish_overlay: bool = output_switch("overlay")
    points_stride: int = parameter(
        OutputSettings.points_stride,
        "~/points uses every n-th pixel in each direction (1 = every pixel).",
        bounds=(1, 64),
    )
    points_organized: bool = parameter(
        OutputSettings.points_organized,
        "true: ~/points keeps the (strided) image grid with NaN x/y/z where depth is invalid; "
        "false: only points with valid depth (height 1, is_dense).",
    )
    points_color: str = parameter(
        OutputSettings.points_color,
        "rgb of ~/points: class (the checkpoint's class colours) or instance (each thing a "
        "fixed colour derived from its panoptic id, stuff in its class colour).",
        choices=COLOR_MODES,
    )
    # Running
    managed: bool = parameter(
        False,
        "true: a lifecycle (managed) node that starts unconfigured and follows "
        "~/change_state (configure, activate, deactivate, cleanup, shutdown); false: "
        "configures and activates itself at start, without lifecycle services.",
    )
    diagnostics_period_s: float = parameter(
        1.0,
        "Period of the /diagnostics status (counts and latencies).",
        bounds=(0.1, 60.0),
    )

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

    def publishes(self, output: str) -> bool:
        """Whether output ``output``'s ``publish_<output>`` switch is on."""
        return bool(getattr(self, f"publish_{output}"))

    def outputs(self) -> OutputSettings:
        """How the outputs are drawn (overlay colour scale, point cloud)."""
        return OutputSettings(
            near=self.overlay_near_m,
            far=self.overlay_far_m,
            points_stride=self.points_stride,
            points_organized=self.points_organized,
            points_color=self.points_color,
        )

    def pipeline(self, base: PostprocessConfig) -> PipelineSettings:
        """What the pipeline processes frames with; ``base``: the checkpoint's fusion settings.

        Raises ``ValueError`` for a combination PostprocessConfig or OutputSettings refuses.
        """
        return PipelineSettings(
            max_pixels=self.max_input_pixels,
            postprocess=self.postprocess(base),
            outputs=self.outputs(),
            tracking=self.tracker_config(),
        )

    def tracker_config(self) -> TrackerConfig | None:
        """The tracker's settings (the ``tracking_*`` parameters on TrackerConfig's defaults); None: tracking off.

        Raises ``ValueError`` for a combination TrackerConfig refuses.
        """
        if not self.tracking:
            return None
        values = {
            name[len(TRACKING_PREFIX) :]: getattr(self, name) for name in SPECS if name.startswith(TRACKING_PREFIX)
        }
        return TrackerConfig(**values)

    def camera_mounts(self) -> tuple[CameraMount, ...]:
        """Where each camera sits in the odometry's body frame, in the order of ``cameras`` (one: the single camera).

        ``camera_mount_xyz`` and ``camera_mount_rpy`` hold one triple per camera.  Raises
        ``ValueError`` for a bad mount or a length that is not 3 per camera (see :func:`check_values`).
        """
        count = max(len(self.cameras), 1)
        problem = _mount_problem(self, needed=True)
        if problem:
            raise ValueError(problem)
        return mounts_from_numbers(self.camera_mount_xyz, self.camera_mount_rpy, count)

    def odometry(self) -> list[OdometryBuffer] | None:
        """An empty odometry buffer per camera (each with its mount), in the order of ``cameras``.

        None without ``odometry_topic`` or without tracking.
        """
        if not (self.odometry_topic and self.tracking):
            return None
        return [OdometryBuffer(mount, self.odometry_max_age_s) for mount in self.camera_mounts()]

    def postprocess(self, base: PostprocessConfig) -> PostprocessConfig:
        """Return ``base`` (the checkpoint's) with the fusion parameters that are set on top.

        A parameter at :data:`FROM_CHECKPOINT` (negative) keeps ``base``'s value.
        Raises ``ValueError`` for a combination PostprocessConfig refuses.
        """
        overrides = {name: getattr(self, name) for name in FUSION if getattr(self, name) >= 0}
        return dataclasses.replace(base, **overrides)


PARAMETERS: tuple[ParameterSpec, ...] = tuple(
    ParameterSpec(name=f.name, default=cast(Value, f.default), **f.metadata[_DESCRIBED])
    for f in dataclasses.fields(NodeSettings)
)
SPECS: dict[str, ParameterSpec] = {p.name: p for p in PARAMETERS}
DYNAMIC: frozenset[str] = frozenset(p.name for p in PARAMETERS if p.dynamic)


def declare_settings(node: Node) -> NodeSettings:
    """Declare every parameter of :data:`PARAMETERS` on ``node`` and read them once."""
    values: dict[str, Any] = {}
    for spec in PARAMETERS:
        try:
            if spec.type == ParameterType.PARAMETER_STRING_ARRAY:  # an empty list has no type of its own in rclpy
                value = node.declare_parameter(spec.name, Parameter.Type.STRING_ARRAY, spec.descriptor()).value
                values[spec.name] = tuple(value or ())
                continue
            if spec.type == ParameterType.PARAMETER_DOUBLE_ARRAY:
                value = node.declare_parameter(spec.name, list(cast(tuple, spec.default)), spec.descriptor()).value
                values[spec.name] = tuple(float(v) for v in value)
                continue
            values[spec.name] = node.declare_parameter(spec.name, spec.default, spec.descriptor()).value
        except InvalidParameterTypeException as exc:
            raise ParameterError(f"parameter {spec.name} must be {_TYPE_WORDS[spec.type_name]}: {exc}") from exc
        except InvalidParameterValueException as exc:
            raise ParameterError(f"parameter {spec.name}: value out of range {spec.bounds}: {exc}") from exc
    return NodeSettings.from_values(values)


def check_values(settings: NodeSettings) -> str | None:
    """Check what rclpy's descriptors cannot (choices, cross-parameter rules): reason or None."""
    for spec in PARAMETERS:
        value = getattr(settings, spec.name)
        if spec.choices and value not in spec.choices:
            return f"{spec.name} must be one of {', '.join(spec.choices)}, got {value!r}"
    names = check_camera_names(settings.cameras)
    if names:
        return f"cameras: {names}"
    if settings.top_k == 0:
        return "top_k must be at least 1, or -1 for the checkpoint's value"
    if 0 <= settings.input_scale < SCALE_RANGE[0]:  # above: the descriptor's bound
        return (
            f"input_scale must be in {SCALE_RANGE_TEXT}, or -1 for the checkpoint's value, got {settings.input_scale:g}"
        )
    try:
        settings.tracker_config()
    except ValueError as exc:
        return f"tracking parameters: {exc}"
    problem = _check_odometry(settings)
    if problem:
        return problem
    if not (math.isfinite(settings.overlay_near_m) and settings.overlay_far_m > settings.overlay_near_m):
        return (
            f"overlay_far_m ({settings.overlay_far_m:g}) must be greater than overlay_near_m "
            f"({settings.overlay_near_m:g})"
        )
    return None


def _mount_problem(settings: NodeSettings, *, needed: bool) -> str | None:
    """Why ``camera_mount_xyz`` / ``camera_mount_rpy`` are not one mount per camera (naming the parameter), or None.

    ``needed``: the mounts are used (``odometry_topic``), so exactly 3 numbers per camera;
    otherwise 3 (the default) are fine too.
    """
    count = max(len(settings.cameras), 1)
    for name in MOUNT:
        value = getattr(settings, name)
        if not all(math.isfinite(v) for v in value):
            return f"{name} must be {'3 ' if count == 1 else ''}finite numbers, got {list(value)}"
        if mount_numbers_fit(len(value), count, used=needed):
            continue
        if count == 1:
            return f"{name} must be 3 finite numbers, got {list(value)}"
        triple, cameras = _MOUNT_TRIPLE[name], ", ".join(settings.cameras)
        if not needed:
            return (
                f"{name} must be 3 numbers or {3 * count}, one {triple} per camera in the order of cameras "
                f"({cameras}), got {len(value)}: {list(value)}"
            )
        shared = " (one mount shared by differently placed cameras is a mistake)" if len(value) == 3 else ""
        return (
            f"{name} has {len(value)} numbers, but odometry_topic with {count} cameras ({cameras}) needs "
            f"{3 * count}: one {triple} per camera, in the order of cameras{shared}"
        )
    return None


def _check_odometry(settings: NodeSettings) -> str | None:
    """Why the odometry parameters cannot be used (naming the parameter), or None."""
    if not settings.odometry_topic:
        return _mount_problem(settings, needed=False)
    try:
        validate_topic_name(settings.odometry_topic)
    except InvalidTopicNameException as exc:
        why = str(exc).splitlines()[0].removeprefix("Invalid topic name: ").rstrip(":")
        return f"odometry_topic {settings.odometry_topic!r} is not a valid topic name: {why}"
    return _mount_problem(settings, needed=True)


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
