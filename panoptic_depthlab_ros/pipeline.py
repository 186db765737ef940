"""The node's worker, without ROS: the latest frame of each camera -> predictor -> output messages.

One :class:`Pipeline` serves one or several cameras with one model and one worker
thread.  Each camera is a :class:`CameraStream`: its name and topics, its intrinsics,
its slot in the :class:`LatestFrameMailbox`, its counters and latencies
(:class:`PipelineStats`) and its publishers (:class:`OutputSink`).  The node
(``ros/node.py``) owns the rclpy side and feeds it through plain calls and callables, so
this module imports no rclpy:

* :meth:`Pipeline.accept` takes an image message from a subscription callback: the
  header fields are checked there (O(1), no pixel is read), so a bad frame never
  displaces a good one waiting, and the frame goes into its camera's mailbox slot,
  replacing (and counting, for that camera) a frame still waiting;
* :meth:`Pipeline.camera_info` takes a CameraInfo (each camera's latest valid K is used);
* :meth:`Pipeline.odometry` takes a ``nav_msgs/Odometry`` into every camera's
  :class:`~.odometry.OdometryBuffer`, each with that camera's mount (a camera without one
  has no odometry);
* the worker takes the latest waiting frame of every camera (round-robin from the camera
  after the last one served when ``max_batch`` limits the batch, so none starves),
  converts them, runs them through the predictor as one batch
  (:meth:`~.predictor.Predictor.predict_batch`) with the fusion settings of
  :meth:`Pipeline.update`, tracks each camera's things with that camera's own
  :class:`~.tracker.Tracker` (fed its image stamps, and the camera's motion at that stamp
  when the camera has odometry: :meth:`Pipeline.odometry`), and hands each camera's output
  messages, stamped with that frame's own header, to that camera's sink, only for outputs
  that have subscribers.

Problems are logged through the given callables, throttled per camera and kind
(:class:`LogThrottle`).

Only the worker thread runs torch's parallel ops: each thread that does keeps its own
OpenMP pool of helper threads for as long as it lives, and libgomp, once it manages more
threads than there are cores, stops spinning at its barriers and puts its helpers to
sleep between ops, about a third slower per frame on 2 cores (docs/performance.md).  So
whatever else runs torch for the worker (loading the model, the warm-up frame) runs in a
thread of its own that ends with its pool (:func:`in_passing_thread`).
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np

from .errors import InputError
from .fusion import PostprocessConfig
from .msg_conversions import (
    MessageClasses,
    camera_k,
    check_compressed,
    check_image_msg,
    compressed_to_bgr,
    image_to_bgr,
    stamp_ns,
)
from .node_outputs import OUTPUTS, OutputSettings, output_messages
from .odometry import OdometryBuffer, odometry_sample
from .predictor import Predictor
from .result import PanopticDepthResult
from .tracker import TrackedFrame, Tracker, TrackerConfig

T = TypeVar("T")

# Frame sizes whose handling is logged (the first frame of each); a camera that keeps
# changing size cannot grow the set without end.
LOGGED_SIZES_MAX = 16
# Counters of the pipeline (the node's /diagnostics report them as they are), since start.
COUNTERS = {
    "received": "image messages taken by the subscription",
    "processed": "frames whose outputs were published",
    "dropped_overload": "frames replaced by a newer one before the worker took them (latest-frame-only)",
    "dropped_bad_input": "image messages refused: unsupported encoding, short data, zero size, too many pixels, "
    "undecodable, or a size the network refuses",
    "skipped_no_subscribers": "frames not inferred because no output had a subscriber",
    "errors": "frames that failed for another reason than their input (logged as errors)",
    "camera_info_received": "CameraInfo messages taken",
    "camera_info_dropped_bad_input": "CameraInfo messages refused (malformed K); the previous K stays in use",
    "tracker_resets": "times the tracks were dropped because the image stamps jumped back, repeated or "
    "paused over tracking_max_gap_s (each logged as a warning with the reason)",
    "odometry_received": "Odometry messages taken (with odometry_topic)",
    "odometry_dropped_bad_input": "Odometry messages refused (a NaN or infinite twist), each ignored with a warning",
    "tracked_without_odometry": "frames tracked without the camera's motion because no odometry was within "
    "odometry_max_age_s of the image stamp (with odometry_topic; warned about, throttled)",
}
# Once every frame is through: received = processed + dropped + errors (CameraInfo counted apart).
FRAME_OUTCOMES = ("processed", "dropped_overload", "dropped_bad_input", "skipped_no_subscribers", "errors")
# Per-frame latency stages.
STAGES = {
    "wait": "from the subscription callback to the worker taking the frame",
    "convert": "message -> BGR image (decoding a compressed one)",
    "preprocess": "image -> network input (resize, normalisation, padding)",
    "network": "the network (the whole batch this frame went through with the other cameras' frames)",
    "fusion": "panoptic fusion",
    "segment_depth": "the segment depth statistics",
    "track": "tracking the things (association and motion filter; 0 with tracking off)",
    "publish": "building and publishing the outputs (overlay drawing included)",
    "total": "from the subscription callback to the last output published",
}
# Relative input names of the single camera (users remap them); camera C's are C/image, ...
INPUT_IMAGE = "image"
INPUT_COMPRESSED = "image/compressed"
INPUT_CAMERA_INFO = "camera_info"
# Outputs that need the camera intrinsics (not published before a camera_info arrived).
OUTPUTS_3D = frozenset(o.name for o in OUTPUTS if o.needs_intrinsics)


# ------------------------------------------------------------------ plumbing
@dataclass
class Frame:
    """An input message waiting for the worker; ``received`` is ``time.perf_counter()``.

    ``camera``: the index of its :class:`CameraStream` in the pipeline (0: the only one).
    """

    message: Any
    compressed: bool
    received: float
    camera: int = 0


class LatestFrameMailbox:
    """One slot per camera between the callbacks and the worker (latest-frame-only).

    A newer frame replaces one of the same camera still waiting, so the worker always
    gets each camera's latest and nothing queues up.  :meth:`take` hands over the
    waiting frames of several cameras at once, starting after the camera last served.
    """

    def __init__(self, slots: int = 1) -> None:
        self._cond = threading.Condition()
        self._frames: list[Frame | None] = [None] * slots
        self._next = 0  # the camera served first by the next take (round-robin)

    def put(self, frame: Frame) -> bool:
        """Store ``frame`` in its camera's slot; True when it replaced an unprocessed one (a dropped frame)."""
        with self._cond:
            replaced = self._frames[frame.camera] is not None
            self._frames[frame.camera] = frame
            self._cond.notify()
        return replaced

    def take(self, timeout: float, limit: int = 0) -> list[Frame]:
        """The waiting frames (at most ``limit``, 0: all), emptying their slots; [] after ``timeout`` s.

        In camera order starting after the last camera served, so with a ``limit`` every
        camera gets its turn however fast the others send.
        """
        with self._cond:
            if not any(f is not None for f in self._frames):
                self._cond.wait(timeout)
            n, start = len(self._frames), self._next
            taken: list[Frame] = []
            for i in ((start + j) % n for j in range(n)):
                frame = self._frames[i]
                if frame is None:
                    continue
                self._frames[i] = None
                taken.append(frame)
                self._next = (i + 1) % n
                if len(taken) == limit:
                    break
        return taken

    def clear(self) -> list[int]:
        """Drop the waiting frames; returns the cameras whose frame was dropped."""
        with self._cond:
            dropped = [i for i, f in enumerate(self._frames) if f is not None]
            self._frames = [None] * len(self._frames)
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

    def __init__(self, period_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._period = period_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def __call__(self, kind: str, message: str) -> str | None:
        """``message`` (with the count held back) to log now, or None when ``kind`` was logged within the period."""
        now = self._clock()
        with self._lock:
            if now - self._last.get(kind, -float("inf")) < self._period:
                self._held[kind] = self._held.get(kind, 0) + 1
                return None
            held = self._held.pop(kind, 0)
            self._last[kind] = now
        return message + (f" ({held} more like it in the last {self._period:g} s)" if held else "")


class OutputSink(Protocol):
    """Where the pipeline's messages go (the node's publishers)."""

    def wanted_names(self) -> set[str]:
        """Names of the outputs to produce for the next frame (enabled, active, subscribed)."""
        ...

    def publish(self, name: str, message: Any) -> None:
        """Publish ``message`` on output ``name``."""
        ...


# A camera name: ROS name tokens separated by "/" (``front``, ``rear/left``).
CAMERA_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*(/[A-Za-z][A-Za-z0-9_]*)*")


def check_camera_names(names: Sequence[str]) -> str | None:
    """Why ``names`` cannot be the node's cameras (bad or repeated name), or None."""
    for name in names:
        if not CAMERA_NAME.fullmatch(name):
            return (
                f"camera name {name!r} is not a ROS name: letters, digits and underscores, starting with a "
                "letter (several joined by '/' for a nested namespace)"
            )
    repeated = sorted({n for n in names if list(names).count(n) > 1})
    if repeated:
        return f"camera {', '.join(repeated)} is listed more than once"
    return None


def camera_topic(camera: str, relative: str) -> str:
    """Topic ``relative`` of camera ``camera`` (``front/image``); the unnamed single camera's is ``relative``."""
    return f"{camera}/{relative}" if camera else relative


@dataclass
class CameraStream:
    """Everything one camera has of its own: name, topics, intrinsics, counters, publishers.

    ``name`` "" is the node's single camera of old (inputs ``image`` / ``camera_info``,
    outputs ``~/<output>``); a camera ``C`` has ``C/image`` / ``C/camera_info`` and
    ``~/C/<output>``.  Per-camera state of the frames (intrinsics, the tracker and its
    tracks) lives here, so cameras never mix.
    """

    name: str = ""
    outputs: OutputSink | None = None
    stats: PipelineStats = field(default_factory=PipelineStats)
    camera_k: np.ndarray | None = None  # replaced whole by each valid camera_info
    depth_scale: float = 1.0  # the last frame's focal-length correction (diagnostics)
    said_no_camera_info: bool = False
    tracker: Tracker | None = None  # made by the camera's first tracked frame; worker thread only
    last_tracked: TrackedFrame | None = None  # what tracking did to its last frame (diagnostics)
    odometry: OdometryBuffer | None = None  # the camera's odometry (None: the camera has none)
    odometry_missed: str | None = None  # why its last tracked frame had no odometry (None: it had)

    def _topic(self, relative: str) -> str:
        return camera_topic(self.name, relative)

    def image_topic(self, compressed: bool) -> str:
        """The (relative) image topic this camera subscribes."""
        return self._topic(INPUT_COMPRESSED if compressed else INPUT_IMAGE)

    @property
    def camera_info_topic(self) -> str:
        """The (relative) CameraInfo topic this camera subscribes."""
        return self._topic(INPUT_CAMERA_INFO)

    def output_topic(self, output: str) -> str:
        """The (private) topic of output ``output`` for this camera: ``~/<output>`` or ``~/<name>/<output>``."""
        return "~/" + self._topic(output)

    @property
    def label(self) -> str:
        """How logs name the camera ("" for the single unnamed one)."""
        return f"camera {self.name}: " if self.name else ""


@dataclass(frozen=True)
class PipelineSettings:
    """What one frame is processed with; replaced whole between frames (:meth:`Pipeline.update`).

    max_pixels: larger images are dropped (0: no limit); postprocess: the fusion settings;
    outputs: how the outputs are drawn; tracking: the tracker's settings (None: no tracking).
    """

    max_pixels: int
    postprocess: PostprocessConfig
    outputs: OutputSettings
    tracking: TrackerConfig | None = None


def in_passing_thread(fn: Callable[[], T]) -> T:
    """``fn()`` run in a thread that ends when it returns; its result, or its exception re-raised.

    Keeps torch's OpenMP pool of the calling thread (the node's executor) from being made:
    the worker's pool then is the only one (see the module docstring).
    """
    box: dict[str, Any] = {}

    def call() -> None:
        try:
            box["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller as it is
            box["error"] = exc

    thread = threading.Thread(target=call, name="panoptic_depthlab_load", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["result"]


# ------------------------------------------------------------------ the worker
@dataclass
class _Job:
    """One camera's frame in a batch, between conversion and publishing."""

    camera: CameraStream
    frame: Frame
    camera_k: np.ndarray | None
    wanted: set[str]
    image: np.ndarray
    start: float
    converted: float


class Pipeline:
    """Check -> convert -> predict -> publish, the cameras' latest frames as one batch in a worker thread.

    Knows nothing about subscriptions or parameters: the node feeds it frames
    (:meth:`accept`), intrinsics (:meth:`camera_info`) and settings (:meth:`update`);
    messages are built from ``message_classes`` and go to each camera's sink.
    ``cameras``: one :class:`CameraStream` per camera; without it, one unnamed camera
    publishing to ``outputs`` and counting in ``stats``.  ``max_batch``: at most this
    many frames per network pass (0: every camera's waiting frame).
    """

    def __init__(
        self,
        predictor: Predictor,
        *,
        settings: PipelineSettings,
        message_classes: MessageClasses,
        outputs: OutputSink | None = None,
        stats: PipelineStats | None = None,
        cameras: Sequence[CameraStream] = (),
        max_batch: int = 0,
        log_warning: Callable[[str], Any] = print,
        log_error: Callable[[str], Any] = print,
        log_info: Callable[[str], Any] = print,
        throttle_s: float = 5.0,
    ) -> None:
        self.predictor = predictor
        self.cameras = list(cameras) or [CameraStream(outputs=outputs, stats=stats or PipelineStats())]
        self.message_classes = message_classes
        self.settings = settings
        self.max_batch = max_batch
        # One logging call site per severity (see LogThrottle), each throttled per camera and kind.
        self._log_warning = log_warning
        self._log_error = log_error
        self._log_info = log_info
        self._bad_input_throttle = LogThrottle(throttle_s)
        self._error_throttle = LogThrottle(throttle_s)
        self._reset_throttle = LogThrottle(throttle_s)
        self._odometry_throttle = LogThrottle(throttle_s)
        self._sizes_logged: set[tuple[int, int]] = set()
        self.last_frame_size: tuple[int, int] | None = None  # (height, width) of the last converted frame
        self._mailbox = LatestFrameMailbox(len(self.cameras))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopped: threading.Thread | None = None  # the last stopped worker, for `running`

    # The single camera's state, as callers of one camera know it.
    @property
    def stats(self) -> PipelineStats:
        """The first (without ``cameras``: the only) camera's counters."""
        return self.cameras[0].stats

    @property
    def outputs(self) -> OutputSink | None:
        """The first (without ``cameras``: the only) camera's sink."""
        return self.cameras[0].outputs

    @property
    def camera_k(self) -> np.ndarray | None:
        """The first (without ``cameras``: the only) camera's K."""
        return self.cameras[0].camera_k

    @property
    def tracker(self) -> Tracker | None:
        """The first (without ``cameras``: the only) camera's tracker."""
        return self.cameras[0].tracker

    @property
    def last_tracked(self) -> TrackedFrame | None:
        """The first (without ``cameras``: the only) camera's last tracking step."""
        return self.cameras[0].last_tracked

    @property
    def depth_scale(self) -> float:
        """The first (without ``cameras``: the only) camera's last depth correction."""
        return self.cameras[0].depth_scale

    # Settings are swapped as one reference and read once per batch by the worker,
    # so a frame never mixes old and new thresholds.
    def update(self, settings: PipelineSettings) -> None:
        """Use ``settings`` (thresholds, colours, limits) from the next frame on."""
        self.settings = settings

    @property
    def postprocess(self) -> PostprocessConfig:
        """The fusion settings in force."""
        return self.settings.postprocess

    # -------------------------------------------------------------- inputs (callback thread)
    def accept(self, message: Any, *, compressed: bool, received: float, camera: int = 0) -> None:
        """An image message of camera ``camera``: count, check its header fields (O(1)), hand over."""
        self.cameras[camera].stats.add("received")
        try:
            if compressed:
                check_compressed(message)
            else:
                check_image_msg(message, max_pixels=self.settings.max_pixels)
        except InputError as exc:
            self.reject(exc, camera=camera)
            return
        self.submit(Frame(message=message, compressed=compressed, received=received, camera=camera))

    def camera_info(self, message: Any, camera: int = 0) -> None:
        """A CameraInfo of camera ``camera``: its K is used from the next frame on; a bad one keeps the previous K."""
        stream = self.cameras[camera]
        stream.stats.add("camera_info_received")
        try:
            stream.camera_k = camera_k(message)
        except InputError as exc:
            self.reject(exc, "camera_info_dropped_bad_input", camera=camera)

    def odometry(self, message: Any) -> None:
        """A ``nav_msgs/Odometry`` of the vehicle, for the tracker of every camera with odometry.

        Each camera's buffer turns the twist into that camera's motion by its own mount; each
        camera counts the message.  A NaN twist is ignored, counted by each, with one warning.
        """
        streams = [stream for stream in self.cameras if stream.odometry is not None]
        if not streams:
            return
        for stream in streams:
            stream.stats.add("odometry_received")
        try:
            sample = odometry_sample(message)
        except InputError as exc:
            for stream in streams:
                stream.stats.add("odometry_dropped_bad_input")
            text = self._bad_input_throttle(f":{exc.kind}", f"dropped bad input: {exc}")
            if text is not None:
                self._log_warning(text)
            return
        for stream in streams:
            assert stream.odometry is not None
            stream.odometry.add(sample)

    def submit(self, frame: Frame) -> None:
        """Hand a frame to the worker (latest-frame-only per camera; a replaced frame is counted)."""
        if self._mailbox.put(frame):
            self.cameras[frame.camera].stats.add("dropped_overload")

    def reject(self, exc: InputError, counter: str = "dropped_bad_input", *, camera: int = 0) -> None:
        """Count a bad input of camera ``camera`` in ``counter`` and warn (throttled per camera and kind)."""
        stream = self.cameras[camera]
        stream.stats.add(counter)
        text = self._bad_input_throttle(f"{stream.name}:{exc.kind}", f"{stream.label}dropped bad input: {exc}")
        if text is not None:
            self._log_warning(text)

    def fail(self, exc: Exception, *, camera: int = 0) -> None:
        """Count a frame that failed for another reason than its input, and log an error (throttled)."""
        stream = self.cameras[camera]
        stream.stats.add("errors")
        kind = f"{stream.name}:{type(exc).__name__}"
        text = self._error_throttle(kind, f"{stream.label}frame failed: {type(exc).__name__}: {exc}")
        if text is not None:
            self._log_error(text)

    # -------------------------------------------------------------- thread
    # Each worker has its own stop event: one that overran stop()'s timeout still ends
    # after its batch even when a new worker starts (re-activation).
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
        """Stop the worker (after its current batch), forget the tracks, drop the waiting frames; returns drops."""
        self._stop.set()
        self._mailbox.wake()
        if self._thread is not None:
            self._thread.join(timeout)
            self._stopped, self._thread = self._thread, None
        if not self.running:  # a worker that overran the timeout still owns the tracker
            self.reset_tracks()
        dropped = self._mailbox.clear()
        for camera in dropped:
            self.cameras[camera].stats.add("dropped_overload")
        return len(dropped)

    def join(self, timeout: float | None = None) -> bool:
        """After :meth:`stop`: wait for every worker (also one that overran the stop timeout); whether all ended."""
        for thread in (self._thread, self._stopped):
            if thread is not None:
                thread.join(timeout)
        return not self.running

    def _run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            frames = self._mailbox.take(timeout=0.25, limit=self.max_batch)
            if not frames:
                continue
            if stop.is_set():  # taken while stopping: dropped like frames still waiting
                for frame in frames:
                    self.cameras[frame.camera].stats.add("dropped_overload")
                break
            try:
                self.process_batch(frames)
            except Exception as exc:  # noqa: BLE001 - the worker must survive anything a batch does
                for frame in frames:
                    try:
                        self.fail(exc, camera=frame.camera)
                    except Exception:  # noqa: BLE001 - logging gone at shutdown: the count is kept
                        pass

    # -------------------------------------------------------------- frames
    def process(self, frame: Frame) -> None:
        """Convert, predict and publish one frame (in the worker thread)."""
        self.process_batch([frame])

    def process_batch(self, frames: Sequence[Frame]) -> None:
        """Convert, predict (one batch) and publish the frames of several cameras (in the worker thread).

        A frame whose input is bad is dropped and counted for its camera; the others go on.
        """
        settings = self.settings
        jobs = [job for frame in frames if (job := self._convert(frame, settings)) is not None]
        results = []
        while jobs:
            try:
                results = self.predictor.predict_batch(
                    [j.image for j in jobs], [j.camera_k for j in jobs], postprocess=settings.postprocess
                )
                break
            except InputError as exc:
                if exc.index is None:
                    raise
                bad = jobs.pop(exc.index)
                cause = exc.__cause__ if isinstance(exc.__cause__, InputError) else exc
                self.reject(cause, camera=bad.frame.camera)
        for job, result in zip(jobs, results, strict=True):
            try:
                self._publish(job, result, settings)
            except Exception as exc:  # noqa: BLE001 - one camera's outputs failing does not cost the others theirs
                self.fail(exc, camera=job.frame.camera)

    def _convert(self, frame: Frame, settings: PipelineSettings) -> _Job | None:
        """One frame as an image for the batch, or None (no subscriber, or a bad input: counted)."""
        start = time.perf_counter()
        camera = self.cameras[frame.camera]
        k = camera.camera_k  # one K for the depth, centroids, markers and points of this frame
        wanted = self._wanted(camera, k)
        if not wanted:
            camera.stats.add("skipped_no_subscribers")
            return None
        try:
            convert = compressed_to_bgr if frame.compressed else image_to_bgr
            image = convert(frame.message, max_pixels=settings.max_pixels)
        except InputError as exc:
            self.reject(exc, camera=frame.camera)
            return None
        self.last_frame_size = (image.shape[0], image.shape[1])
        self._log_frame_size(image.shape[0], image.shape[1])
        return _Job(camera, frame, k, wanted, image, start, time.perf_counter())

    def _publish(self, job: _Job, result: Any, settings: PipelineSettings) -> None:
        """One camera's frame tracked (with that camera's tracker), its outputs published, its latencies."""
        begin = time.perf_counter()
        camera = job.camera
        if settings.tracking is not None:
            result = self._track(camera, result, job.image, settings.tracking, stamp_ns(job.frame.message.header))
        tracked = time.perf_counter()
        camera.depth_scale = result.depth_scale
        messages = output_messages(
            result,
            job.image,
            wanted=job.wanted,
            header=job.frame.message.header,
            camera_k=job.camera_k,
            settings=settings.outputs,
            classes=self.message_classes,
            class_colors=self.predictor.classes.colors,
        )
        assert camera.outputs is not None
        for name, message in messages.items():
            camera.outputs.publish(name, message)
        done = time.perf_counter()
        t = result.timings
        camera.stats.record(
            {
                "wait": job.start - job.frame.received,
                "convert": job.converted - job.start,
                "preprocess": t["preprocess"],
                "network": t["network"],
                "fusion": t["fusion"],
                "segment_depth": t["segment_depth"],
                "track": tracked - begin,
                "publish": done - tracked,
                "total": done - job.frame.received,
            }
        )
        camera.stats.add("processed")

    def reset_tracks(self) -> None:
        """Forget every camera's tracks (deactivation, cleanup): the next frames start afresh."""
        for camera in self.cameras:
            camera.tracker = None
            camera.last_tracked = None

    def _track(
        self, camera: CameraStream, result: PanopticDepthResult, image: np.ndarray, config: TrackerConfig, stamp: int
    ) -> PanopticDepthResult:
        """``result`` with its things tracked over ``camera``'s frames; a reset of the tracks is logged, why."""
        if camera.tracker is None or camera.tracker.config != config:  # new settings start new tracks
            camera.tracker = Tracker(config)
        ego = None
        if camera.odometry is not None:
            ego = camera.odometry.ego_at(stamp)
            camera.odometry_missed = None if ego is not None else camera.odometry.why_none(stamp)
            if camera.odometry_missed is not None:
                camera.stats.add("tracked_without_odometry")
                text = self._odometry_throttle(
                    f"{camera.name}:no_odometry",
                    f"{camera.label}frame stamped {stamp / 1e9:.3f} s tracked without the camera's motion: "
                    f"{camera.odometry_missed}",
                )
                if text is not None:
                    self._log_warning(text)
        tracked = camera.tracker.update(result, stamp_ns=stamp, image=image, ego=ego)
        if tracked.reset_reason is not None:
            camera.stats.add("tracker_resets")
            text = self._reset_throttle(
                f"{camera.name}:tracker_reset", f"{camera.label}tracks reset: {tracked.reset_reason}"
            )
            if text is not None:
                self._log_warning(text)
        camera.last_tracked = tracked
        return result.with_tracks(tracked.tracks)

    def _wanted(self, camera: CameraStream, camera_k: np.ndarray | None) -> set[str]:
        """The outputs to produce for this frame: subscribed, and 3D ones only with intrinsics."""
        assert camera.outputs is not None
        wanted = camera.outputs.wanted_names()
        if camera_k is None and wanted & OUTPUTS_3D:
            wanted -= OUTPUTS_3D
            if not camera.said_no_camera_info:
                camera.said_no_camera_info = True
                self._log_info(
                    f"{camera.label}markers and points are subscribed but no valid camera_info has arrived "
                    "yet: they are published once it has (logged once)"
                )
        return wanted

    def _log_frame_size(self, height: int, width: int) -> None:
        """Say once per frame size how such frames go through the network (resize, padding, pooling)."""
        size = (height, width)
        if size in self._sizes_logged or len(self._sizes_logged) >= LOGGED_SIZES_MAX:
            return
        self._sizes_logged.add(size)
        self._log_info(self.predictor.frame_handling(height, width))
