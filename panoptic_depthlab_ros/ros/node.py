"""The ``panoptic_depthlab`` node: camera image in, panoptic + depth + segments out.

Outputs: panoptic ids, semantic labels, metric depth, per-segment depth records
and an overlay picture, each stamped with the input image's header; with
camera_info also 3D ones: segment markers (labels at the 3D centroids, boxes around
things) and the back-projected, labelled point cloud (:mod:`.geometry`).  Every
output is computed only when someone subscribes to it.

Threads (why the executor never blocks and no stale frame piles up):

* The executor thread runs only thin callbacks: the image callback checks the
  message's header fields (O(1), no pixel is read) and drops it into a one-slot
  :class:`LatestFrameMailbox`, replacing (and counting) a frame still waiting;
  camera_info stores the latest K; a timer publishes ``/diagnostics``.  All of
  them share the node's default mutually exclusive callback group, so a
  ``SingleThreadedExecutor`` is enough and the callbacks need no locks between
  themselves.
* One worker thread of our own takes the latest frame, converts it, runs the
  :class:`~panoptic_depthlab_ros.predictor.Predictor` and publishes.  It is a
  plain thread and not a reentrant callback group on a multi-threaded executor:
  inference must be single-consumer for latest-frame-only semantics, and an
  executor would queue callbacks instead of replacing frames.  torch releases
  the GIL in its kernels, so the executor stays responsive meanwhile.

The processing core (:class:`Pipeline`) is separate from the rclpy node class.

Lifecycle (``rclpy.lifecycle``): the node is always driven by the lifecycle state
machine; ``managed`` only decides who drives it.

* configure: load the checkpoint, create the (lifecycle) publishers;
* activate: enable the publishers, subscribe, start the worker and diagnostics;
* deactivate: disable the publishers (an in-flight frame publishes nothing),
  unsubscribe, stop the worker (waits for the frame being inferred) and drop a
  waiting frame;
* cleanup: destroy the publishers and free the model (and cached GPU memory);
* shutdown (from any primary state, also when the node is destroyed): all of it.

``managed:=false`` (default) configures and activates at start-up, as a plain node
(no lifecycle services; a start-up failure raises).  ``managed:=true`` starts
unconfigured with the standard services (``~/change_state``, ``~/get_state``, ...);
a failed configure (e.g. a missing checkpoint) is logged and leaves it unconfigured.
Transitions run in the executor thread, like the other callbacks.
"""

from __future__ import annotations

import gc
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point
from rcl_interfaces.msg import SetParametersResult
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.lifecycle import LifecycleNodeMixin, LifecyclePublisher, LifecycleState, TransitionCallbackReturn
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.publisher import Publisher
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField
from std_msgs.msg import Header
from visualization_msgs.msg import Marker, MarkerArray

from ..errors import CheckpointError, InputError, PanopticDepthLabError
from ..msg import SegmentDepth, SegmentDepthArray
from ..postprocess import PostprocessConfig
from ..predictor import Predictor, resolve_device, untrained_depth_note
from ..visualize import overlay
from .conversions import (
    ImageConversionError,
    array_to_image,
    camera_k,
    check_compressed,
    check_image,
    compressed_to_bgr,
    depth_for_rep118,
    image_to_bgr,
    markers_to_msg,
    pointcloud_to_msg,
    segments_to_msg,
)
from .geometry import point_cloud, segment_markers
from .parameters import (
    PARAMETERS,
    NodeSettings,
    ParameterError,
    check_update,
    resolve_checkpoint,
)

NODE_NAME = "panoptic_depthlab"
# Relative input names (users remap them); private outputs (/<node>/<name>).
INPUT_IMAGE = "image"
INPUT_COMPRESSED = "image/compressed"
INPUT_CAMERA_INFO = "camera_info"
# Publish order: the segment records first (the smallest, most used output), the overlay last.
OUTPUTS = ("segments", "markers", "panoptic", "semantic", "depth", "points", "overlay")
# Outputs that need the camera intrinsics (not published before a camera_info arrived).
OUTPUTS_3D = frozenset({"markers", "points"})
# Outputs made of depth: none from a depth branch that was never trained (see untrained_depth).
OUTPUTS_DEPTH = frozenset({"depth", "markers", "points"})
# Frame sizes whose handling is logged (the first frame of each); a camera that keeps
# changing size cannot grow the set without end.
LOGGED_SIZES_MAX = 16
COUNTERS = (
    "received",
    "processed",
    "dropped_overload",
    "dropped_bad_input",
    "skipped_no_subscribers",
    "errors",
    "camera_info_received",
    "camera_info_dropped_bad_input",
)
# Once every frame is through: received = processed + dropped + errors (CameraInfo counted apart).
FRAME_OUTCOMES = ("processed", "dropped_overload", "dropped_bad_input", "skipped_no_subscribers", "errors")
# Per-frame latency stages: wait (callback -> worker), convert (message -> BGR), the predictor's
# own stages, publish (conversions, overlay drawing, publishing), total (callback -> published).
STAGES = ("wait", "convert", "preprocess", "network", "fusion", "segment_depth", "publish", "total")


class StartupError(PanopticDepthLabError):
    """The node cannot start (bad parameter, checkpoint or device); the message says why."""


# ------------------------------------------------------------------ plumbing
@dataclass
class Frame:
    """An input message waiting for the worker; ``received`` is ``time.perf_counter()``."""

    message: Any
    compressed: bool
    received: float


class LatestFrameMailbox:
    """One slot between the callback and the worker (latest-frame-only).

    A newer frame replaces one still waiting, so the worker always gets the
    latest and nothing queues up.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: Frame | None = None

    def put(self, frame: Frame) -> bool:
        """Store ``frame``; True when it replaced an unprocessed one (a dropped frame)."""
        with self._cond:
            replaced = self._frame is not None
            self._frame = frame
            self._cond.notify()
        return replaced

    def take(self, timeout: float) -> Frame | None:
        """Return the waiting frame (emptying the slot), or None after ``timeout`` s."""
        with self._cond:
            if self._frame is None:
                self._cond.wait(timeout)
            frame, self._frame = self._frame, None
        return frame

    def clear(self) -> int:
        """Drop a waiting frame; returns how many were dropped (0 or 1)."""
        with self._cond:
            dropped = int(self._frame is not None)
            self._frame = None
        return dropped

    def wake(self) -> None:
        """Wake a waiting ``take`` (used to stop the worker promptly)."""
        with self._cond:
            self._cond.notify_all()


@dataclass(frozen=True)
class LatencySummary:
    """Seconds over the recent window of one stage."""

    last: float
    mean: float
    p95: float
    max: float


@dataclass(frozen=True)
class StatsSnapshot:
    """Counters since start and latency summaries of the recent frames."""

    counts: dict[str, int]
    latency: dict[str, LatencySummary]


class PipelineStats:
    """Thread-safe counters (both threads write) and per-stage latency windows."""

    def __init__(self, window: int = 200) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(COUNTERS, 0)
        self._latency: dict[str, deque[float]] = {s: deque(maxlen=window) for s in STAGES}

    def add(self, name: str, n: int = 1) -> None:
        """Increment counter ``name``."""
        with self._lock:
            self._counts[name] += n

    def record(self, seconds: dict[str, float]) -> None:
        """One processed frame's stage latencies."""
        with self._lock:
            for stage, value in seconds.items():
                self._latency[stage].append(value)

    def snapshot(self) -> StatsSnapshot:
        """Return a consistent copy (percentiles computed here, off the hot path)."""
        with self._lock:
            counts = dict(self._counts)
            windows = {s: np.array(v, dtype=np.float64) for s, v in self._latency.items() if v}
        latency = {
            s: LatencySummary(
                last=float(v[-1]),
                mean=float(v.mean()),
                p95=float(np.percentile(v, 95)),
                max=float(v.max()),
            )
            for s, v in windows.items()
        }
        return StatsSnapshot(counts=counts, latency=latency)


class LogThrottle:
    """At most one message per kind of problem per period; says how many were held back.

    It only decides: the caller logs the returned text at its own call site and severity
    (rclpy refuses one call site logging at two severities, so a shared logging call would
    lose whichever severity comes second).  A broken camera cannot flood the log, and one
    kind of problem does not hide another.
    """

    def __init__(self, period_s: float = 5.0) -> None:
        self._period = period_s
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def __call__(self, kind: str, message: str) -> str | None:
        """``message`` (with the count held back) to log now, or None when ``kind`` was logged within the period."""
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(kind, -float("inf")) < self._period:
                self._held[kind] = self._held.get(kind, 0) + 1
                return None
            held = self._held.pop(kind, 0)
            self._last[kind] = now
        return message + (f" ({held} more like it in the last {self._period:g} s)" if held else "")


@dataclass
class Outputs:
    """The enabled outputs' publishers (a disabled output has none)."""

    publishers: dict[str, Publisher] = field(default_factory=dict)

    def wanted(self, name: str) -> bool:
        """Tell whether ``name`` is enabled, active and subscribed (only then is it converted).

        A lifecycle publisher of an inactive node is never wanted.
        """
        pub = self.publishers.get(name)
        return pub is not None and getattr(pub, "is_activated", True) and pub.get_subscription_count() > 0

    def wanted_names(self) -> set[str]:
        """Names of the outputs to produce for the next frame (empty: skip inference)."""
        return {name for name in self.publishers if self.wanted(name)}


# ------------------------------------------------------------------ the core
class Pipeline:
    """Convert -> predict -> publish, one frame at a time in its own worker thread.

    Knows nothing about subscriptions or parameters: the node feeds it frames
    (:meth:`submit`), intrinsics (:attr:`camera_k`) and settings (:meth:`update`).
    """

    def __init__(
        self,
        predictor: Predictor,
        *,
        outputs: Outputs,
        settings: NodeSettings,
        stats: PipelineStats,
        log_warning: Callable[[str], Any] = print,
        log_error: Callable[[str], Any] = print,
        log_info: Callable[[str], Any] = print,
        throttle_s: float = 5.0,
    ) -> None:
        self.predictor = predictor
        self.outputs = outputs
        self.stats = stats
        self.camera_k: np.ndarray | None = None  # replaced whole by the camera_info callback
        self.depth_scale = 1.0  # the last frame's focal-length correction (diagnostics)
        # The checkpoint's own fusion settings: what parameters at -1 stand for.
        self.base_postprocess: PostprocessConfig = predictor.postprocess
        # One logging call site per severity (see LogThrottle), each throttled per kind.
        self._log_warning = log_warning
        self._log_error = log_error
        self._log_info = log_info
        self._bad_input_throttle = LogThrottle(throttle_s)
        self._error_throttle = LogThrottle(throttle_s)
        self._said_no_camera_info = False
        self._sizes_logged: set[tuple[int, int]] = set()
        self._mailbox = LatestFrameMailbox()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopped: threading.Thread | None = None  # the last stopped worker, for `running`
        self.update(settings)

    # Settings are swapped as one reference and applied by the worker between frames,
    # so a frame never mixes old and new thresholds.
    def update(self, settings: NodeSettings) -> None:
        """Use ``settings`` (thresholds, colours, limits) from the next frame on."""
        self._config = (settings, settings.postprocess(self.base_postprocess))

    @property
    def postprocess(self) -> PostprocessConfig:
        """The fusion settings in force: the checkpoint's, with the parameters set on top."""
        return self._config[1]

    def submit(self, frame: Frame) -> None:
        """Hand a frame to the worker (latest-frame-only; a replaced frame is counted)."""
        if self._mailbox.put(frame):
            self.stats.add("dropped_overload")

    def reject(self, exc: InputError, counter: str = "dropped_bad_input") -> None:
        """Count a bad input in ``counter`` and warn (throttled per kind of problem)."""
        self.stats.add(counter)
        text = self._bad_input_throttle(exc.kind, f"dropped bad input: {exc}")
        if text is not None:
            self._log_warning(text)

    def fail(self, exc: Exception) -> None:
        """Count a frame that failed for another reason than its input, and log an error (throttled)."""
        self.stats.add("errors")
        text = self._error_throttle(type(exc).__name__, f"frame failed: {type(exc).__name__}: {exc}")
        if text is not None:
            self._log_error(text)

    # -------------------------------------------------------------- thread
    # Each worker has its own stop event: one that overran stop()'s timeout still ends
    # after its frame even when a new worker starts (re-activation).
    def start(self) -> None:
        """Start the worker thread."""
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(self._stop,), name="panoptic_depthlab_worker", daemon=True
        )
        self._thread.start()

    @property
    def running(self) -> bool:
        """Whether a worker thread of this pipeline (even a stopped one) is still alive."""
        return any(t is not None and t.is_alive() for t in (self._thread, self._stopped))

    def stop(self, timeout: float = 30.0) -> int:
        """Stop the worker (after its current frame) and drop a waiting frame; returns drops."""
        self._stop.set()
        self._mailbox.wake()
        if self._thread is not None:
            self._thread.join(timeout)
            self._stopped, self._thread = self._thread, None
        dropped = self._mailbox.clear()
        if dropped:
            self.stats.add("dropped_overload", dropped)
        return dropped

    def _run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            frame = self._mailbox.take(timeout=0.25)
            if frame is None:
                continue
            if stop.is_set():  # taken while stopping: dropped like a frame still waiting
                self.stats.add("dropped_overload")
                break
            try:
                self.process(frame)
            except Exception as exc:  # noqa: BLE001 - the worker must survive anything one frame does
                try:
                    self.fail(exc)
                except Exception:  # noqa: BLE001 - logging gone at shutdown: the count is kept
                    pass

    # -------------------------------------------------------------- one frame
    def process(self, frame: Frame) -> None:
        """Convert, predict and publish one frame (in the worker thread)."""
        start = time.perf_counter()
        settings, postprocess = self._config
        camera_k = self.camera_k  # one K for the centroids, markers and points of this frame
        wanted = self.outputs.wanted_names()
        if camera_k is None and wanted & OUTPUTS_3D:
            wanted -= OUTPUTS_3D
            if not self._said_no_camera_info:
                self._said_no_camera_info = True
                self._log_info(
                    "markers and points are subscribed but no valid camera_info has arrived "
                    "yet: they are published once it has (logged once)"
                )
        if not wanted:
            self.stats.add("skipped_no_subscribers")
            return
        try:
            if frame.compressed:
                image = compressed_to_bgr(frame.message, max_pixels=settings.max_input_pixels)
            else:
                image = image_to_bgr(frame.message, max_pixels=settings.max_input_pixels)
        except InputError as exc:
            self.reject(exc)
            return
        converted = time.perf_counter()
        self._log_frame_size(image.shape[0], image.shape[1])
        self.predictor.postprocess = postprocess  # only this thread touches the predictor
        try:
            result = self.predictor.predict(image, camera_k=camera_k)
        except InputError as exc:
            self.reject(exc)
            return
        predicted = time.perf_counter()
        self.depth_scale = result.depth_scale
        self._publish(frame.message.header, image, result, settings, wanted, camera_k)
        done = time.perf_counter()
        t = result.timings
        self.stats.record(
            {
                "wait": start - frame.received,
                "convert": converted - start,
                "preprocess": t["preprocess"],
                "network": t["network"],
                "fusion": t["fusion"],
                "segment_depth": t["segment_depth"],
                "publish": done - predicted,
                "total": done - frame.received,
            }
        )
        self.stats.add("processed")

    def _log_frame_size(self, height: int, width: int) -> None:
        """Say once per frame size how such frames go through the network (resize, padding, pooling)."""
        size = (height, width)
        if size in self._sizes_logged or len(self._sizes_logged) >= LOGGED_SIZES_MAX:
            return
        self._sizes_logged.add(size)
        self._log_info(self.predictor.frame_handling(height, width))

    def _publish(
        self,
        header: Header,
        image: np.ndarray,
        result: Any,
        settings: NodeSettings,
        wanted: set[str],
        camera_k: np.ndarray | None,
    ) -> None:
        """The ``wanted`` outputs, each stamped with the input's header (frame and stamp).

        Lifecycle publishers drop what a frame still in flight publishes after deactivate.
        """
        pubs = self.outputs.publishers
        if "segments" in wanted:
            pubs["segments"].publish(
                segments_to_msg(
                    result,
                    header=header,
                    array_cls=SegmentDepthArray,
                    segment_cls=SegmentDepth,
                    point_cls=Point,
                )
            )
        if "markers" in wanted and camera_k is not None:
            specs = segment_markers(result, camera_k, near=settings.overlay_near_m, far=settings.overlay_far_m)
            pubs["markers"].publish(markers_to_msg(specs, header=header, array_cls=MarkerArray, marker_cls=Marker))
        if "panoptic" in wanted:
            pubs["panoptic"].publish(array_to_image(Image, result.panoptic, encoding="32SC1", header=header))
        if "semantic" in wanted:
            pubs["semantic"].publish(array_to_image(Image, result.semantic, encoding="mono8", header=header))
        if "depth" in wanted:
            pubs["depth"].publish(
                array_to_image(Image, depth_for_rep118(result.depth), encoding="32FC1", header=header)
            )
        if "points" in wanted and camera_k is not None:
            cloud = point_cloud(
                result.depth,
                result.panoptic,
                camera_k,
                class_colors=self.predictor.classes.colors,
                label_divisor=result.label_divisor,
                stride=settings.points_stride,
                organized=settings.points_organized,
                color_mode=settings.points_color,
            )
            pubs["points"].publish(pointcloud_to_msg(cloud, header=header, cloud_cls=PointCloud2, field_cls=PointField))
        if "overlay" in wanted:
            picture = overlay(
                image,
                result,
                near=settings.overlay_near_m,
                far=settings.overlay_far_m,
                class_colors=self.predictor.classes.colors,
            )
            pubs["overlay"].publish(array_to_image(Image, picture, encoding="bgr8", header=header))


# ------------------------------------------------------------------ building
def declare_settings(node: Node) -> NodeSettings:
    """Declare every parameter of :data:`PARAMETERS` on ``node`` and read them once."""
    values: dict[str, Any] = {}
    for spec in PARAMETERS:
        try:
            values[spec.name] = node.declare_parameter(spec.name, spec.default, spec.descriptor()).value
        except InvalidParameterTypeException as exc:
            kind = {
                bool: "a bool",
                int: "an integer",
                float: "a double (e.g. 5.0, not 5)",
                str: "a string",
            }
            raise ParameterError(f"parameter {spec.name} must be {kind[type(spec.default)]}: {exc}") from exc
        except InvalidParameterValueException as exc:
            raise ParameterError(f"parameter {spec.name}: value out of range {spec.bounds}: {exc}") from exc
    return NodeSettings.from_values(values)


def load_predictor(settings: NodeSettings, log_info: Callable[[str], Any]) -> Predictor:
    """Load the predictor ``settings`` ask for; :class:`StartupError` names path and reason."""
    path = resolve_checkpoint(settings.checkpoint)
    try:
        resolve_device(settings.device)
    except PanopticDepthLabError as exc:
        raise StartupError(str(exc)) from exc
    if settings.device == "auto" and not torch.cuda.is_available():
        log_info("device auto: CUDA is not available, running on the CPU")
    if settings.num_threads > 0:
        torch.set_num_threads(settings.num_threads)
    try:
        predictor = Predictor.from_checkpoint(
            path,
            settings.device,
            backend=settings.backend,
            fp16=settings.fp16,
            max_input_width=settings.max_input_width,
            input_scale=settings.input_scale if settings.input_scale >= 0 else None,
            compile_mode=settings.compile_mode or None,
            flip_average=settings.flip_average,
            max_pixels=settings.max_input_pixels,
            strict_pool_size=settings.strict_pool_size,
            untrained_depth=settings.untrained_depth,
        )
    except CheckpointError as exc:
        raise StartupError(
            f"cannot load checkpoint {exc.path!r}: {exc.reason}" + (f" ({', '.join(exc.keys[:5])})" if exc.keys else "")
        ) from exc
    except PanopticDepthLabError as exc:  # device / backend problems
        raise StartupError(f"cannot load checkpoint {str(path)!r}: {exc}") from exc
    except ImportError as exc:
        raise StartupError(f"backend {settings.backend!r} is not available in this installation: {exc}") from exc
    except (OSError, RuntimeError, ValueError) as exc:
        raise StartupError(f"cannot load checkpoint {str(path)!r}: {type(exc).__name__}: {exc}") from exc
    log_info(f"loaded {path} on {predictor.device} (backend {predictor.backend})")
    log_info(predictor.pooling_policy() + "; the first frame of each size logs how it is handled")
    return predictor


def input_qos(settings: NodeSettings) -> QoSProfile:
    """Sensor-data style QoS (keep last, volatile) with the configured reliability and depth."""
    reliability = (
        ReliabilityPolicy.RELIABLE if settings.qos_reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT
    )
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=settings.qos_depth,
        reliability=reliability,
        durability=DurabilityPolicy.VOLATILE,
    )


# Outputs are reliable: that matches best-effort subscribers (rviz) and reliable ones alike;
# keep-last never blocks the worker.
_IMAGE_OUT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE)
_SEGMENTS_OUT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.RELIABLE)
# Message type and QoS of every output (markers are small records like the segments).
OUTPUT_TYPES: dict[str, tuple[type, QoSProfile]] = {
    "segments": (SegmentDepthArray, _SEGMENTS_OUT_QOS),
    "markers": (MarkerArray, _SEGMENTS_OUT_QOS),
    "panoptic": (Image, _IMAGE_OUT_QOS),
    "semantic": (Image, _IMAGE_OUT_QOS),
    "depth": (Image, _IMAGE_OUT_QOS),
    "points": (PointCloud2, _IMAGE_OUT_QOS),
    "overlay": (Image, _IMAGE_OUT_QOS),
}


class PanopticDepthLabNode(LifecycleNodeMixin, Node):
    """The ROS side: parameters, subscriptions, publishers, diagnostics, lifecycle.

    Keyword arguments go to ``rclpy.node.Node`` (``context``, ``parameter_overrides``,
    ``cli_args``, ``namespace``, ...).  Raises :class:`~.parameters.ParameterError` for
    bad parameters, and, unless ``managed``, :class:`StartupError` when it cannot start.
    """

    def __init__(self, **kwargs: Any) -> None:
        Node.__init__(self, NODE_NAME, **kwargs)
        self.stats = PipelineStats()
        self.pipeline: Pipeline | None = None
        self._inputs: list[Any] = []
        self._destroyed = False
        self._diagnostics_pub: Publisher | None = None
        self._diagnostics_timer: Any = None
        self._transition_error: Exception | None = None
        self._raise_transition_errors = False  # True while an unmanaged node starts itself
        self._last_counts = dict.fromkeys(COUNTERS, 0)
        self._last_report = time.monotonic()
        try:
            self.settings = declare_settings(self)
        except Exception:
            Node.destroy_node(self)
            raise
        # The lifecycle state machine, with its services only when someone else drives it.
        LifecycleNodeMixin.__init__(self, enable_communication_interface=self.settings.managed)
        if self.settings.managed:
            self._refuse_invalid_transitions()
        self.add_on_set_parameters_callback(self._check_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        if not self.settings.managed:
            self._raise_transition_errors = True
            try:
                for transition in (self.trigger_configure, self.trigger_activate):
                    if transition() != TransitionCallbackReturn.SUCCESS:
                        raise self._transition_error or StartupError("cannot start")
            except Exception:
                self.destroy_node()
                raise
            finally:
                self._raise_transition_errors = False

    @property
    def predictor(self) -> Predictor | None:
        """The loaded model's predictor (None while unconfigured)."""
        return self.pipeline.predictor if self.pipeline is not None else None

    @property
    def lifecycle_state(self) -> str:
        """Label of the current lifecycle state (``unconfigured``, ``inactive``, ``active``...)."""
        return str(self._state_machine.current_state[1])

    # ------------------------------------------------------------ lifecycle transitions
    def _refuse_invalid_transitions(self) -> None:
        """Answer ``success: false`` to a transition the current state does not have.

        rclpy 7.1.6 (Jazzy) raises out of the ChangeState service callback instead, which
        ends the executor's spin and leaves the caller without an answer
        (ros2/rclpy#1209, fixed upstream by ros2/rclpy#1319); rclcpp answers false.
        """
        service = self._service_change_state
        handle = service.callback

        def change_state(request: Any, response: Any) -> Any:
            try:
                return handle(request, response)
            except _rclpy.RCLError as exc:
                self.get_logger().warning(
                    f"transition {request.transition.id} {request.transition.label!r} is not "
                    f"possible from state {self.lifecycle_state}: {exc}"
                )
                response.success = False
                return response

        service.callback = change_state

    def _transition(self, name: str, steps: Callable[[], None]) -> TransitionCallbackReturn:
        """Run one transition's ``steps``; SUCCESS, or why not.

        Our own errors (bad checkpoint, device) are a FAILURE: the transition is refused
        and the node stays where it was.  Anything else is an ERROR, after which rclpy
        calls :meth:`on_error`.  The reason is logged (managed) or raised by the
        constructor (unmanaged); rclpy itself would swallow it without a word.
        """
        try:
            steps()
        except Exception as exc:  # noqa: BLE001 - see above
            self._transition_error = exc
            if not self._raise_transition_errors:
                self.get_logger().error(f"{name} failed: {type(exc).__name__}: {exc}")
            if isinstance(exc, PanopticDepthLabError):
                return TransitionCallbackReturn.FAILURE
            return TransitionCallbackReturn.ERROR
        return TransitionCallbackReturn.SUCCESS

    def _managed_entities_do(self, name: str, state: LifecycleState) -> None:
        """The mixin's own transition: switches the lifecycle publishers on or off."""
        result = getattr(LifecycleNodeMixin, f"on_{name}")(self, state)
        if result != TransitionCallbackReturn.SUCCESS:
            raise RuntimeError(f"{name} of the lifecycle publishers returned {result}")

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load the checkpoint and create the publishers (inactive until activated)."""
        self._transition_error = None

        def steps() -> None:
            try:
                self._configure()
                self._managed_entities_do("configure", state)
            except Exception:
                self._cleanup()  # nothing half-configured stays behind
                raise

        return self._transition("configure", steps)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Enable the publishers, then subscribe and start the worker."""

        def steps() -> None:
            self._managed_entities_do("activate", state)
            try:
                self._activate()
            except Exception:
                self._deactivate()
                LifecycleNodeMixin.on_deactivate(self, state)
                raise

        return self._transition("activate", steps)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Disable the publishers first (an in-flight frame publishes nothing), then stop."""

        def steps() -> None:
            self._managed_entities_do("deactivate", state)
            self._deactivate()

        return self._transition("deactivate", steps)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Destroy the publishers and free the model."""

        def steps() -> None:
            self._cleanup()
            self._managed_entities_do("cleanup", state)

        return self._transition("cleanup", steps)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release everything, from whichever primary state."""

        def steps() -> None:
            self._release()
            self._managed_entities_do("shutdown", state)

        return self._transition("shutdown", steps)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """After an unexpected error: release everything and go back to unconfigured."""
        return self._transition("error recovery", self._release)

    # ------------------------------------------------------------ the steps
    def _configure(self) -> None:
        """Load the model and create the publishers."""
        logger = self.get_logger()
        predictor = load_predictor(self.settings, logger.info)
        s = self.settings
        enabled = {
            "segments": s.publish_segments,
            "markers": s.publish_markers,
            "panoptic": s.publish_panoptic,
            "semantic": s.publish_semantic,
            "depth": s.publish_depth,
            "points": s.publish_points,
            "overlay": s.publish_overlay,
        }
        if not predictor.depth_enabled:
            for name in OUTPUTS_DEPTH:
                enabled[name] = False
            logger.warning(
                f"no ~/depth, ~/markers or ~/points: {untrained_depth_note('the parameter untrained_depth:=true')}"
            )
        outputs = Outputs()
        self.pipeline = Pipeline(
            predictor,
            outputs=outputs,
            settings=self.settings,
            stats=self.stats,
            log_warning=logger.warning,
            log_error=logger.error,
            log_info=logger.info,
        )
        for name in OUTPUTS:
            if enabled[name]:
                msg_type, qos = OUTPUT_TYPES[name]
                outputs.publishers[name] = self.create_lifecycle_publisher(msg_type, f"~/{name}", qos)
        self._diagnostics_pub = self.create_lifecycle_publisher(DiagnosticArray, "/diagnostics", 10)

    def _activate(self) -> None:
        """Subscribe, start the worker and the diagnostics timer."""
        assert self.pipeline is not None
        qos = input_qos(self.settings)
        if self.settings.image_transport == "compressed":
            image_sub = self.create_subscription(CompressedImage, INPUT_COMPRESSED, self._on_compressed, qos)
        else:
            image_sub = self.create_subscription(Image, INPUT_IMAGE, self._on_image, qos)
        info_sub = self.create_subscription(CameraInfo, INPUT_CAMERA_INFO, self._on_camera_info, qos)
        self._inputs = [image_sub, info_sub]
        self.pipeline.start()
        self._diagnostics_timer = self.create_timer(self.settings.diagnostics_period_s, self._publish_diagnostics)

    def _deactivate(self) -> None:
        """Stop taking frames; a frame still waiting is dropped (and counted).

        Waits for the frame being inferred, if any (its outputs go nowhere).
        """
        for sub in self._inputs:
            self.destroy_subscription(sub)
        self._inputs = []
        if self._diagnostics_timer is not None:
            self.destroy_timer(self._diagnostics_timer)
            self._diagnostics_timer = None
        if self.pipeline is not None:
            self.pipeline.stop()
            if self.pipeline.running:
                self.get_logger().warning(
                    "the worker is still inferring a frame after the stop timeout; it ends "
                    "with that frame, whose outputs are dropped"
                )

    def _cleanup(self) -> None:
        """Destroy the publishers and free the model (and the GPU memory it cached)."""
        pipeline, self.pipeline = self.pipeline, None
        if pipeline is not None:
            for pub in pipeline.outputs.publishers.values():
                self.destroy_lifecycle_publisher(cast(LifecyclePublisher, pub))
            pipeline.outputs.publishers.clear()
            on_cuda = pipeline.predictor.device.type == "cuda"
            del pipeline
            gc.collect()  # the model's tensors go now, not at some later collection
            if on_cuda:
                torch.cuda.empty_cache()
        if self._diagnostics_pub is not None:
            self.destroy_lifecycle_publisher(cast(LifecyclePublisher, self._diagnostics_pub))
            self._diagnostics_pub = None

    def _release(self) -> None:
        """Deactivate and clean up, whatever the state (idempotent)."""
        self._deactivate()
        self._cleanup()

    def destroy_node(self) -> None:
        """Shut down (stopping the worker before its publishers go); safe to call twice."""
        if self._destroyed:
            return
        self._destroyed = True
        machine = getattr(self, "_state_machine", None)
        if machine is not None and machine.current_state[1] in ("unconfigured", "inactive", "active"):
            try:
                self.trigger_shutdown()
            except Exception:  # noqa: BLE001 - e.g. the context is gone: release directly below
                pass
        self._release()
        Node.destroy_node(self)

    # ------------------------------------------------------------ callbacks (thin)
    def _on_image(self, msg: Image) -> None:
        received = time.perf_counter()
        self._accept(msg, compressed=False, received=received)

    def _on_compressed(self, msg: CompressedImage) -> None:
        received = time.perf_counter()
        self._accept(msg, compressed=True, received=received)

    def _accept(self, msg: Any, *, compressed: bool, received: float) -> None:
        """Count, check the header fields (O(1)), hand over.

        Checking here means a bad frame never displaces a good one waiting.
        """
        pipeline = self.pipeline
        if pipeline is None:
            return
        self.stats.add("received")
        try:
            if compressed:
                check_compressed(msg)
            else:
                check_image(msg, max_pixels=self.settings.max_input_pixels)
        except ImageConversionError as exc:
            pipeline.reject(exc)
            return
        pipeline.submit(Frame(message=msg, compressed=compressed, received=received))

    def _on_camera_info(self, msg: CameraInfo) -> None:
        pipeline = self.pipeline
        if pipeline is None:
            return
        self.stats.add("camera_info_received")
        try:
            k = camera_k(msg)
        except ImageConversionError as exc:
            pipeline.reject(exc, "camera_info_dropped_bad_input")  # the previous good K stays in use
            return
        pipeline.camera_k = k

    # ------------------------------------------------------------ parameters
    def _check_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Run-time changes: only thresholds and colours, consistent with each other."""
        changes = {p.name: p.value for p in params}
        reason = check_update(self.settings, changes)
        if reason is None:
            pipeline = self.pipeline
            base = pipeline.base_postprocess if pipeline is not None else PostprocessConfig()
            try:
                self.settings.replace(changes).postprocess(base)
            except ValueError as exc:
                reason = str(exc)
        return SetParametersResult(successful=reason is None, reason=reason or "")

    def _apply_parameters(self, params: list[Parameter]) -> None:
        self.settings = self.settings.replace({p.name: p.value for p in params})
        if self.pipeline is not None:
            self.pipeline.update(self.settings)
        self.get_logger().info("parameters changed: " + ", ".join(f"{p.name}={p.value}" for p in params))

    # ------------------------------------------------------------ diagnostics
    def _publish_diagnostics(self) -> None:
        snap = self.stats.snapshot()
        counts = snap.counts
        now = time.monotonic()
        period = max(now - self._last_report, 1e-9)
        delta = {k: counts[k] - self._last_counts[k] for k in counts}
        self._last_counts, self._last_report = counts, now
        rate = delta["processed"] / period
        problems = []
        if delta["dropped_bad_input"]:
            problems.append(f"{delta['dropped_bad_input']} bad inputs dropped")
        if delta["camera_info_dropped_bad_input"]:
            problems.append(f"{delta['camera_info_dropped_bad_input']} bad camera_info dropped")
        if delta["errors"]:
            problems.append(f"{delta['errors']} frames failed")
        if self.pipeline is not None and self.pipeline.camera_k is None:
            camera = "no camera_info (depth for the training camera, centroids NaN, no markers or points)"
        else:
            camera = "camera_info ok"
        message = f"{rate:.1f} Hz processed, {camera}" + (f"; {', '.join(problems)}" if problems else "")
        values = [KeyValue(key=k, value=str(v)) for k, v in counts.items()]
        values.append(KeyValue(key="processed_hz", value=f"{rate:.3f}"))
        if self.pipeline is not None:
            values.append(KeyValue(key="depth_scale", value=f"{self.pipeline.depth_scale:.4f}"))
            # Which outputs this node sees subscribers for (only those are produced): answers
            # "why is nothing on ~/markers" from the outside, and lets a player wait for its match.
            subscribed = ",".join(sorted(self.pipeline.outputs.wanted_names()))
            values.append(KeyValue(key="outputs_subscribed", value=subscribed))
        for stage, lat in snap.latency.items():
            values += [
                KeyValue(key=f"{stage}_ms_last", value=f"{lat.last * 1e3:.2f}"),
                KeyValue(key=f"{stage}_ms_mean", value=f"{lat.mean * 1e3:.2f}"),
                KeyValue(key=f"{stage}_ms_p95", value=f"{lat.p95 * 1e3:.2f}"),
            ]
        status = DiagnosticStatus(
            level=DiagnosticStatus.WARN if problems else DiagnosticStatus.OK,
            name=f"{self.get_fully_qualified_name()}: pipeline",
            message=message,
            hardware_id=str(self.pipeline.predictor.device) if self.pipeline else "",
            values=values,
        )
        if self._diagnostics_pub is None:
            return
        self._diagnostics_pub.publish(
            DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()), status=[status])
        )
        total = snap.latency.get("total")
        self.get_logger().info(
            f"{message}; received {counts['received']}, processed {counts['processed']}, dropped "
            f"{counts['dropped_overload']} overload + {counts['dropped_bad_input']} bad input + "
            f"{counts['skipped_no_subscribers']} unsubscribed, {counts['errors']} failed"
            + (f"; latency mean {total.mean * 1e3:.0f} ms, p95 {total.p95 * 1e3:.0f} ms" if total else ""),
            throttle_duration_sec=10.0,
        )


def main(args: list[str] | None = None) -> int:
    """Run the node until Ctrl-C; exit code 1 when it cannot start."""
    # Jazzy's rclpy.init() is not yet a context manager: try/finally is its equivalent.
    rclpy.init(args=args)
    node = None
    try:
        node = PanopticDepthLabNode()
        executor = SingleThreadedExecutor()  # thin callbacks only; inference has its own thread
        executor.add_node(node)
        executor.spin()
    except PanopticDepthLabError as exc:
        rclpy.logging.get_logger(NODE_NAME).fatal(f"cannot start: {exc}")
        return 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
