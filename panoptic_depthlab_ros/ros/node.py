"""The ``panoptic_depthlab`` node: camera image in, panoptic + depth + segments out.

The rclpy side only: parameters, subscriptions, publishers, diagnostics and the
lifecycle.  The outputs are those of the output table (:mod:`..node_outputs`), each
stamped with the input image's header and computed only when someone subscribes to
it; the frames go through the rclpy-free :class:`~..pipeline.Pipeline`.

Threads (why the executor never blocks and no stale frame piles up):

* The executor thread runs only thin callbacks: the image callback hands the message
  to :meth:`Pipeline.accept <..pipeline.Pipeline.accept>`, which checks its header
  fields (O(1), no pixel is read) and drops it into a one-slot mailbox, replacing
  (and counting) a frame still waiting; camera_info stores the latest K; odometry
  (with ``odometry_topic``) keeps the recent twists for the tracker; a timer
  publishes ``/diagnostics``.  All of them share the node's default mutually
  exclusive callback group, so a ``SingleThreadedExecutor`` is enough and the
  callbacks need no locks between themselves.
* One worker thread of the pipeline takes the latest frame, converts it, runs the
  :class:`~panoptic_depthlab_ros.predictor.Predictor` and publishes.  It is a
  plain thread and not a reentrant callback group on a multi-threaded executor:
  inference must be single-consumer for latest-frame-only semantics, and an
  executor would queue callbacks instead of replacing frames.  torch releases
  the GIL in its kernels, so the executor stays responsive meanwhile.  The
  worker is the only thread that runs torch's parallel ops (configure loads the
  model in a passing thread): a second OpenMP pool makes every op slower
  (:mod:`..pipeline`).

Lifecycle (``rclpy.lifecycle``): the node is always driven by the lifecycle state
machine; ``managed`` only decides who drives it.

* configure: load the checkpoint, run one warm-up frame (``warmup_height`` x
  ``warmup_width``, or the size of the frames seen before a re-configure; its time is
  logged; a failure, e.g. out of GPU memory, fails the configure with the reason),
  create the (lifecycle) publishers;
* activate: enable the publishers, subscribe, start the worker and diagnostics;
* deactivate: disable the publishers (an in-flight frame publishes nothing),
  unsubscribe, stop the worker (waits for the frame being inferred), drop a
  waiting frame and forget the tracks;
* cleanup: destroy the publishers, wait for the worker, free the model (the tracker with
  it), its compiled graphs or onnxruntime session, and the cached GPU memory;
* shutdown (from any primary state, also when the node is destroyed): all of it.

``managed:=false`` (default) configures and activates at start-up, as a plain node
(no lifecycle services; a start-up failure raises).  ``managed:=true`` starts
unconfigured with the standard services (``~/change_state``, ``~/get_state``, ...);
a failed configure (e.g. a missing checkpoint) is logged and leaves it unconfigured.
Transitions run in the executor thread, like the other callbacks.
"""

from __future__ import annotations

import functools
import gc
import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import SetParametersResult
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.lifecycle import LifecycleNodeMixin, LifecyclePublisher, LifecycleState, TransitionCallbackReturn
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.publisher import Publisher
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from .. import native
from ..errors import CheckpointError, PanopticDepthLabError
from ..fusion import PostprocessConfig
from ..node_outputs import OUTPUTS, QOS_DEPTH, Output
from ..pipeline import (
    COUNTERS,
    INPUT_CAMERA_INFO,
    INPUT_COMPRESSED,
    INPUT_IMAGE,
    CameraStream,
    Pipeline,
    PipelineStats,
    in_passing_thread,
)
from ..predictor import Predictor, WarmUpError, resolve_device, untrained_depth_note
from .parameters import (
    NodeSettings,
    check_update,
    declare_settings,
    resolve_checkpoint,
)

NODE_NAME = "panoptic_depthlab"
# How long a cleanup waits for a worker still inferring a frame before it frees the model.
WORKER_JOIN_S = 60.0
# History depth of the odometry subscription: odometry comes at up to ~100 Hz, and the
# executor may be busy with an image callback meanwhile.
ODOMETRY_QOS_DEPTH = 50


def message_class(name: str) -> type:
    """The class rclpy generated for message type ``name`` (``sensor_msgs/msg/Image``)."""
    package, _, cls = name.split("/")
    return cast(type, getattr(importlib.import_module(f"{package}.msg"), cls))


# The input names (INPUT_*, users remap them) are the pipeline's camera topics, named here too.
__all__ = ["INPUT_CAMERA_INFO", "INPUT_COMPRESSED", "INPUT_IMAGE", "PanopticDepthLabNode", "main"]


# Keys of the /diagnostics status besides the counters (pipeline.COUNTERS) and the latencies
# (<stage>_ms_last, _mean, _p95 for each of pipeline.STAGES).
STATUS_KEYS = {
    "processed_hz": "frames processed per second since the previous report",
    "depth_scale": "the last frame's focal-length correction of the depth (1: none; see Predictor.depth_scale)",
    "outputs_subscribed": "the outputs this node sees subscribers for, comma-separated: only those are produced",
    "tracks_confirmed": "confirmed tracks after the last frame (0 with tracking off)",
}
LATENCY_KEYS = ("last", "mean", "p95")


class StartupError(PanopticDepthLabError):
    """The node cannot start (bad parameter, checkpoint or device); the message says why."""


@dataclass
class Outputs:
    """The enabled outputs' publishers (a disabled output has none): the pipeline's :class:`~..pipeline.OutputSink`."""

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

    def publish(self, name: str, message: Any) -> None:
        """Publish on output ``name`` (a lifecycle publisher drops it once deactivated)."""
        self.publishers[name].publish(message)


# ------------------------------------------------------------------ building
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
    try:  # in a thread of its own: the worker's is then the only OpenMP pool (pipeline.py)
        predictor = in_passing_thread(
            lambda: Predictor.from_checkpoint(
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
    providers = getattr(predictor.network, "providers", None)  # onnxruntime: what the session got
    runtime = f"backend {predictor.backend}" + (f", providers {', '.join(providers)}" if providers else "")
    log_info(f"loaded {path} on {predictor.device} ({runtime})")
    if predictor.device.type == "cpu":
        log_info(native.describe())
    log_info(predictor.pooling_policy() + "; the first frame of each size logs how it is handled")
    return predictor


def warm_up(predictor: Predictor, size: tuple[int, int], log_info: Callable[[str], Any]) -> None:
    """One warm-up frame of ``size`` (height, width; 0 skips it), its time logged; :class:`WarmUpError` if it fails."""
    height, width = size
    if height <= 0 or width <= 0:
        log_info("no warm-up frame (warmup_height or warmup_width is 0): the first frame pays the set-up")
        return
    fitted = predictor.warmup_frame_size(height, width)
    seconds = in_passing_thread(lambda: predictor.warm_up(*fitted))  # like the loading: no pool in the executor
    why = "" if fitted == (height, width) else f" (not {height}x{width}: the export or max_input_pixels refuses it)"
    log_info(f"warm-up frame {fitted[0]}x{fitted[1]} on {predictor.device}{why}: {seconds * 1e3:.0f} ms")


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


def odometry_qos(settings: NodeSettings) -> QoSProfile:
    """The odometry subscription's QoS: the inputs' reliability, keep the last :data:`ODOMETRY_QOS_DEPTH`."""
    qos = input_qos(settings)
    qos.depth = ODOMETRY_QOS_DEPTH
    return qos


def output_qos(output: Output) -> QoSProfile:
    """The publisher QoS of ``output``: reliable, keep last (see :data:`~..node_outputs.QOS_DEPTH`)."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=QOS_DEPTH[output.qos], reliability=ReliabilityPolicy.RELIABLE
    )


class PanopticDepthLabNode(LifecycleNodeMixin, Node):
    """The ROS side: parameters, subscriptions, publishers, diagnostics, lifecycle.

    Keyword arguments go to ``rclpy.node.Node`` (``context``, ``parameter_overrides``,
    ``cli_args``, ``namespace``, ...).  Raises :class:`~.parameters.ParameterError` for
    bad parameters, and, unless ``managed``, :class:`StartupError` when it cannot start.
    """

    def __init__(self, **kwargs: Any) -> None:
        Node.__init__(self, NODE_NAME, **kwargs)
        self.stats = PipelineStats()  # the first (without `cameras`: the only) camera's
        self.pipeline: Pipeline | None = None
        self.outputs = Outputs()  # the first camera's publishers, while configured
        self._checkpoint_postprocess = PostprocessConfig()  # the loaded checkpoint's, once configured
        self._inputs: list[Any] = []
        self._destroyed = False
        self._diagnostics_pub: Publisher | None = None
        self._diagnostics_timer: Any = None
        self._transition_error: Exception | None = None
        self._raise_transition_errors = False  # True while an unmanaged node starts itself
        self._frame_size: tuple[int, int] | None = None  # of the frames seen before a cleanup: the next warm-up's
        self._last_report = time.monotonic()
        try:
            self.settings = declare_settings(self)
        except Exception:
            Node.destroy_node(self)
            raise
        # One stream per camera (its topics, K, counters, publishers); the first one's are `stats` and `outputs`.
        self.cameras = [
            CameraStream(
                name=self.settings.cameras[0] if self.settings.cameras else "", outputs=self.outputs, stats=self.stats
            )
        ]
        self.cameras += [CameraStream(name=name, outputs=Outputs()) for name in self.settings.cameras[1:]]
        self._last_counts = [dict.fromkeys(COUNTERS, 0) for _ in self.cameras]
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
        try:
            warm_up(
                predictor, self._frame_size or (self.settings.warmup_height, self.settings.warmup_width), logger.info
            )
        except WarmUpError:
            predictor.release()
            raise
        # The fusion settings saved with the model: what parameters at -1 stand for.
        self._checkpoint_postprocess = predictor.postprocess
        enabled = [
            o for o in OUTPUTS if self.settings.publishes(o.name) and (self.settings.tracking or not o.needs_tracks)
        ]
        if not predictor.depth_enabled:
            enabled = [o for o in enabled if not o.needs_depth]
            *others, last = sorted(f"~/{o.name}" for o in OUTPUTS if o.needs_depth)
            topics = f"{', '.join(others)} or {last}"
            logger.warning(f"no {topics}: {untrained_depth_note('the parameter untrained_depth:=true')}")
        # Each camera's odometry buffer (its own mount), empty at each configure; None: no odometry.
        buffers = self.settings.odometry()
        for i, camera in enumerate(self.cameras):
            camera.odometry = buffers[i] if buffers is not None else None
        if self.settings.odometry_topic and not self.settings.tracking:
            logger.info(f"odometry_topic {self.settings.odometry_topic} is not subscribed: tracking is off")
        self.pipeline = Pipeline(
            predictor,
            cameras=self.cameras,
            max_batch=self.settings.max_batch,
            settings=self.settings.pipeline(self._checkpoint_postprocess),
            message_classes=message_class,
            log_warning=logger.warning,
            log_error=logger.error,
            log_info=logger.info,
        )
        for camera in self.cameras:
            sink = cast(Outputs, camera.outputs)
            for o in enabled:
                sink.publishers[o.name] = self.create_lifecycle_publisher(
                    message_class(o.msg_type), camera.output_topic(o.name), output_qos(o)
                )
        self._diagnostics_pub = self.create_lifecycle_publisher(DiagnosticArray, "/diagnostics", 10)

    def _activate(self) -> None:
        """Subscribe, start the worker and the diagnostics timer."""
        assert self.pipeline is not None
        qos = input_qos(self.settings)
        compressed = self.settings.image_transport == "compressed"
        lines = []
        for i, camera in enumerate(self.cameras):
            image_sub = self.create_subscription(
                CompressedImage if compressed else Image,
                camera.image_topic(compressed),
                functools.partial(self._on_compressed if compressed else self._on_image, camera=i),
                qos,
            )
            info_sub = self.create_subscription(
                CameraInfo, camera.camera_info_topic, functools.partial(self._on_camera_info, camera=i), qos
            )
            self._inputs += [image_sub, info_sub]
            outputs = self.resolve_topic_name(camera.output_topic("segments")).rsplit("/", 1)[0] + "/<output>"
            lines.append(f"{camera.name or 'camera'}: {image_sub.topic_name} + {info_sub.topic_name} -> {outputs}")
        if self.cameras[0].odometry is not None:
            odometry_sub = self.create_subscription(
                Odometry, self.settings.odometry_topic, self._on_odometry, odometry_qos(self.settings)
            )
            self._inputs.append(odometry_sub)
            mounts = [
                f"{camera.name + ' ' if camera.name else ''}camera mount xyz {list(buffer.mount.xyz)}, "
                f"rpy {list(buffer.mount.rpy)}"
                for camera in self.cameras
                if (buffer := camera.odometry) is not None
            ]
            lines.append(
                f"odometry: {odometry_sub.topic_name} (nearest within {self.settings.odometry_max_age_s:g} s of each "
                f"image stamp; {'; '.join(mounts)})"
            )
        self.get_logger().info(f"{len(self.cameras)} camera(s), one model: " + "; ".join(lines))
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
        for camera in self.cameras:
            sink = cast(Outputs, camera.outputs)
            for pub in sink.publishers.values():
                self.destroy_lifecycle_publisher(cast(LifecyclePublisher, pub))
            sink.publishers.clear()
        if pipeline is not None:
            pipeline.stop()
            if not pipeline.join(WORKER_JOIN_S):
                self.get_logger().warning(
                    f"the worker is still inferring a frame {WORKER_JOIN_S:.0f} s after the stop; the model is freed"
                    " once that frame ends"
                )
            else:
                self._frame_size = pipeline.last_frame_size or self._frame_size
                pipeline.predictor.release()  # compiled graphs, sessions, cached GPU memory
            del pipeline
            gc.collect()  # the model's tensors go now, not at some later collection
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
    # The pipeline checks each message's header fields (O(1)) before it queues it.
    def _on_image(self, msg: Image, camera: int = 0) -> None:
        received = time.perf_counter()
        if (pipeline := self.pipeline) is not None:
            pipeline.accept(msg, compressed=False, received=received, camera=camera)

    def _on_compressed(self, msg: CompressedImage, camera: int = 0) -> None:
        received = time.perf_counter()
        if (pipeline := self.pipeline) is not None:
            pipeline.accept(msg, compressed=True, received=received, camera=camera)

    def _on_camera_info(self, msg: CameraInfo, camera: int = 0) -> None:
        if (pipeline := self.pipeline) is not None:
            pipeline.camera_info(msg, camera=camera)

    def _on_odometry(self, msg: Odometry) -> None:
        if (pipeline := self.pipeline) is not None:
            pipeline.odometry(msg)  # every camera's buffer, each with its own mount

    # ------------------------------------------------------------ parameters
    def _check_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Run-time changes: only thresholds and colours, consistent with each other."""
        changes = {p.name: p.value for p in params}
        reason = check_update(self.settings, changes)
        if reason is None:
            try:
                self.settings.replace(changes).pipeline(self._checkpoint_postprocess)
            except ValueError as exc:
                reason = str(exc)
        return SetParametersResult(successful=reason is None, reason=reason or "")

    def _apply_parameters(self, params: list[Parameter]) -> None:
        self.settings = self.settings.replace({p.name: p.value for p in params})
        if self.pipeline is not None:
            self.pipeline.update(self.settings.pipeline(self._checkpoint_postprocess))
        self.get_logger().info("parameters changed: " + ", ".join(f"{p.name}={p.value}" for p in params))

    # ------------------------------------------------------------ diagnostics
    def _publish_diagnostics(self) -> None:
        """One status per camera (the single camera's is the node's ``pipeline`` status)."""
        now = time.monotonic()
        period = max(now - self._last_report, 1e-9)
        self._last_report = now
        reports = [self._camera_status(i, camera, period) for i, camera in enumerate(self.cameras)]
        if self._diagnostics_pub is None:
            return
        self._diagnostics_pub.publish(
            DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()), status=[r[0] for r in reports])
        )
        self.get_logger().info(" | ".join(r[1] for r in reports), throttle_duration_sec=10.0)

    def _camera_status(self, index: int, camera: CameraStream, period: float) -> tuple[DiagnosticStatus, str]:
        """One camera's status (counters, rate, latencies) and its summary for the log."""
        snap = camera.stats.snapshot()
        counts = snap.counts
        delta = {k: counts[k] - self._last_counts[index][k] for k in counts}
        self._last_counts[index] = counts
        rate = delta["processed"] / period
        problems = []
        if delta["dropped_bad_input"]:
            problems.append(f"{delta['dropped_bad_input']} bad inputs dropped")
        if delta["camera_info_dropped_bad_input"]:
            problems.append(f"{delta['camera_info_dropped_bad_input']} bad camera_info dropped")
        if delta["errors"]:
            problems.append(f"{delta['errors']} frames failed")
        if delta["odometry_dropped_bad_input"]:
            problems.append(f"{delta['odometry_dropped_bad_input']} bad odometry dropped")
        if missed := delta["tracked_without_odometry"]:
            why = f" (the last: {camera.odometry_missed})" if camera.odometry_missed else ""
            problems.append(f"{missed} frames tracked without odometry{why}")
        if camera.camera_k is None:
            info = "no camera_info (depth for the training camera, centroids NaN, no markers or points)"
        else:
            info = "camera_info ok"
        if camera.odometry is not None:
            if camera.odometry_missed is not None:
                info += ", no odometry in time"
            else:
                info += ", odometry ok" if len(camera.odometry) else ", no odometry received"
        message = f"{rate:.1f} Hz processed, {info}" + (f"; {', '.join(problems)}" if problems else "")
        values = [KeyValue(key=k, value=str(v)) for k, v in counts.items()]
        values.append(KeyValue(key="processed_hz", value=f"{rate:.3f}"))
        if self.pipeline is not None:
            values.append(KeyValue(key="depth_scale", value=f"{camera.depth_scale:.4f}"))
            # Which outputs this node sees subscribers for (only those are produced): answers
            # "why is nothing on ~/markers" from the outside, and lets a player wait for its match.
            subscribed = ",".join(sorted(cast(Outputs, camera.outputs).wanted_names()))
            values.append(KeyValue(key="outputs_subscribed", value=subscribed))
            tracked = camera.last_tracked
            values.append(KeyValue(key="tracks_confirmed", value=str(tracked.num_confirmed if tracked else 0)))
        for stage, lat in snap.latency.items():
            values += [KeyValue(key=f"{stage}_ms_{k}", value=f"{getattr(lat, k) * 1e3:.2f}") for k in LATENCY_KEYS]
        total = snap.latency.get("total")
        summary = (
            f"{camera.label}{message}; received {counts['received']}, processed {counts['processed']}, dropped "
            f"{counts['dropped_overload']} overload + {counts['dropped_bad_input']} bad input + "
            f"{counts['skipped_no_subscribers']} unsubscribed, {counts['errors']} failed"
            + (f"; latency mean {total.mean * 1e3:.0f} ms, p95 {total.p95 * 1e3:.0f} ms" if total else "")
        )
        status = DiagnosticStatus(
            level=DiagnosticStatus.WARN if problems else DiagnosticStatus.OK,
            name=f"{self.get_fully_qualified_name()}: " + (f"camera {camera.name}" if camera.name else "pipeline"),
            message=message,
            hardware_id=str(self.pipeline.predictor.device) if self.pipeline else "",
            values=values,
        )
        return status, summary


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
