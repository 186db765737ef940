"""The node's worker, without ROS: latest camera frame -> predictor -> output messages.

One :class:`Pipeline` serves one camera stream: its own one-slot mailbox, its own
intrinsics, its own worker thread.  The node (``ros/node.py``) owns the rclpy side and
feeds it through plain calls and callables, so this module imports no rclpy:

* :meth:`Pipeline.accept` takes an image message from a subscription callback: the
  header fields are checked there (O(1), no pixel is read), so a bad frame never
  displaces a good one waiting, and the frame goes into the :class:`LatestFrameMailbox`,
  replacing (and counting) a frame still waiting;
* :meth:`Pipeline.camera_info` takes a CameraInfo (the latest valid K is used);
* the worker takes the latest frame, converts it, runs the predictor with the fusion
  settings of :meth:`Pipeline.update`, tracks the things (one :class:`~.tracker.Tracker`
  per stream, fed the image stamps) and hands each output message to the
  :class:`OutputSink` (the node's publishers), only for outputs that have subscribers.

Counters and per-stage latencies go to :class:`PipelineStats`; problems are logged
through the given callables, throttled per kind (:class:`LogThrottle`).

Only the worker thread runs torch's parallel ops: each thread that does keeps its own
OpenMP pool of helper threads for as long as it lives, and libgomp, once it manages more
threads than there are cores, stops spinning at its barriers and puts its helpers to
sleep between ops, about a third slower per frame on 2 cores (docs/performance.md).  So
whatever else runs torch for the worker (loading the model at configure) runs in a
thread of its own that ends with its pool (:func:`in_passing_thread`).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
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
}
# Once every frame is through: received = processed + dropped + errors (CameraInfo counted apart).
FRAME_OUTCOMES = ("processed", "dropped_overload", "dropped_bad_input", "skipped_no_subscribers", "errors")
# Per-frame latency stages.
STAGES = {
    "wait": "from the subscription callback to the worker taking the frame",
    "convert": "message -> BGR image (decoding a compressed one)",
    "preprocess": "image -> network input (resize, normalisation, padding)",
    "network": "the network",
    "fusion": "panoptic fusion",
    "segment_depth": "the segment depth statistics",
    "track": "tracking the things (association and motion filter; 0 with tracking off)",
    "publish": "building and publishing the outputs (overlay drawing included)",
    "total": "from the subscription callback to the last output published",
}
# Outputs that need the camera intrinsics (not published before a camera_info arrived).
OUTPUTS_3D = frozenset(o.name for o in OUTPUTS if o.needs_intrinsics)


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
class Pipeline:
    """Check -> convert -> predict -> publish, one frame at a time in its own worker thread.

    Knows nothing about subscriptions or parameters: the node feeds it frames
    (:meth:`accept`), intrinsics (:meth:`camera_info`) and settings (:meth:`update`);
    messages are built from ``message_classes`` and go to ``outputs``.
    """

    def __init__(
        self,
        predictor: Predictor,
        *,
        outputs: OutputSink,
        settings: PipelineSettings,
        stats: PipelineStats,
        message_classes: MessageClasses,
        log_warning: Callable[[str], Any] = print,
        log_error: Callable[[str], Any] = print,
        log_info: Callable[[str], Any] = print,
        throttle_s: float = 5.0,
    ) -> None:
        self.predictor = predictor
        self.outputs = outputs
        self.stats = stats
        self.message_classes = message_classes
        self.settings = settings
        self.camera_k: np.ndarray | None = None  # replaced whole by each valid camera_info
        self.depth_scale = 1.0  # the last frame's focal-length correction (diagnostics)
        # One logging call site per severity (see LogThrottle), each throttled per kind.
        self._log_warning = log_warning
        self._log_error = log_error
        self._log_info = log_info
        self._bad_input_throttle = LogThrottle(throttle_s)
        self._error_throttle = LogThrottle(throttle_s)
        self._said_no_camera_info = False
        self._reset_throttle = LogThrottle(throttle_s)
        self.tracker: Tracker | None = None  # made by the first tracked frame; worker thread only
        self.last_tracked: TrackedFrame | None = None  # what tracking did to the last frame (diagnostics)
        self._sizes_logged: set[tuple[int, int]] = set()
        self._mailbox = LatestFrameMailbox()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopped: threading.Thread | None = None  # the last stopped worker, for `running`

    # Settings are swapped as one reference and read once per frame by the worker,
    # so a frame never mixes old and new thresholds.
    def update(self, settings: PipelineSettings) -> None:
        """Use ``settings`` (thresholds, colours, limits) from the next frame on."""
        self.settings = settings

    @property
    def postprocess(self) -> PostprocessConfig:
        """The fusion settings in force."""
        return self.settings.postprocess

    # -------------------------------------------------------------- inputs (callback thread)
    def accept(self, message: Any, *, compressed: bool, received: float) -> None:
        """An image message from a subscription: count, check its header fields (O(1)), hand over."""
        self.stats.add("received")
        try:
            if compressed:
                check_compressed(message)
            else:
                check_image_msg(message, max_pixels=self.settings.max_pixels)
        except InputError as exc:
            self.reject(exc)
            return
        self.submit(Frame(message=message, compressed=compressed, received=received))

    def camera_info(self, message: Any) -> None:
        """A CameraInfo: its K is used from the next frame on; a bad one keeps the previous K."""
        self.stats.add("camera_info_received")
        try:
            self.camera_k = camera_k(message)
        except InputError as exc:
            self.reject(exc, "camera_info_dropped_bad_input")

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
        """Stop the worker (after its current frame), forget the tracks, drop a waiting frame; returns drops."""
        self._stop.set()
        self._mailbox.wake()
        if self._thread is not None:
            self._thread.join(timeout)
            self._stopped, self._thread = self._thread, None
        if not self.running:  # a worker that overran the timeout still owns the tracker
            self.reset_tracks()
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
        settings = self.settings
        camera_k = self.camera_k  # one K for the centroids, markers and points of this frame
        wanted = self._wanted(camera_k)
        if not wanted:
            self.stats.add("skipped_no_subscribers")
            return
        try:
            convert = compressed_to_bgr if frame.compressed else image_to_bgr
            image = convert(frame.message, max_pixels=settings.max_pixels)
            converted = time.perf_counter()
            self._log_frame_size(image.shape[0], image.shape[1])
            result = self.predictor.predict(image, camera_k=camera_k, postprocess=settings.postprocess)
        except InputError as exc:
            self.reject(exc)
            return
        predicted = time.perf_counter()
        if settings.tracking is not None:
            result = self._track(result, settings.tracking, stamp_ns(frame.message.header))
        tracked = time.perf_counter()
        self.depth_scale = result.depth_scale
        messages = output_messages(
            result,
            image,
            wanted=wanted,
            header=frame.message.header,
            camera_k=camera_k,
            settings=settings.outputs,
            classes=self.message_classes,
            class_colors=self.predictor.classes.colors,
        )
        for name, message in messages.items():
            self.outputs.publish(name, message)
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
                "track": tracked - predicted,
                "publish": done - tracked,
                "total": done - frame.received,
            }
        )
        self.stats.add("processed")

    def reset_tracks(self) -> None:
        """Forget every track (deactivation, cleanup): the next frame starts afresh."""
        self.tracker = None
        self.last_tracked = None

    def _track(self, result: PanopticDepthResult, config: TrackerConfig, stamp: int) -> PanopticDepthResult:
        """``result`` with its things tracked over this stream; a reset of the tracks is logged with its reason."""
        if self.tracker is None or self.tracker.config != config:  # new settings start new tracks
            self.tracker = Tracker(config)
        tracked = self.tracker.update(result, stamp_ns=stamp)
        if tracked.reset_reason is not None:
            self.stats.add("tracker_resets")
            text = self._reset_throttle("tracker_reset", f"tracks reset: {tracked.reset_reason}")
            if text is not None:
                self._log_warning(text)
        self.last_tracked = tracked
        return result.with_tracks(tracked.tracks)

    def _wanted(self, camera_k: np.ndarray | None) -> set[str]:
        """The outputs to produce for this frame: subscribed, and 3D ones only with intrinsics."""
        wanted = self.outputs.wanted_names()
        if camera_k is None and wanted & OUTPUTS_3D:
            wanted -= OUTPUTS_3D
            if not self._said_no_camera_info:
                self._said_no_camera_info = True
                self._log_info(
                    "markers and points are subscribed but no valid camera_info has arrived "
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
