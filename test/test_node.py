"""The node over real rclpy (loopback, test-unique domain) with the tiny model:
outputs, latest-frame-only under overload, bad input, camera intrinsics, the
compressed transport, and the installed executable."""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest

from node_utils import (
    OUTPUT_NAMES,
    NodeHarness,
    camera_info_msg,
    child_env,
    image_msg,
    installed_executable,
    random_image,
    stamp_of,
)
from panoptic_depthlab_ros.pipeline import FRAME_OUTCOMES
from panoptic_depthlab_ros.tracker import Tracker
from panoptic_depthlab_ros.visualize import overlay
from pdl_testing import SEGMENT_EXACT_FIELDS

# The fusion parameters stay at -1: the tiny checkpoint's own settings apply (its
# stuff_area of 64 gives richer segments on small images than Detectron2's 2048).
PARAMS = {"qos_reliability": "reliable", "qos_depth": 100}


@pytest.fixture(scope="module")
def reference(tiny_checkpoint):
    """The bare Predictor with the node's fusion settings (the checkpoint's), spelled out."""
    from dataclasses import replace

    from panoptic_depthlab_ros.predictor import Predictor

    predictor = Predictor.from_checkpoint(tiny_checkpoint, "cpu")
    predictor.postprocess = replace(
        predictor.postprocess,
        center_threshold=0.1,
        nms_kernel=7,
        top_k=200,
        stuff_area=64,
        depth_erosion_px=0,
    )
    return predictor


@pytest.fixture
def harness(ros_context, tiny_checkpoint, request):
    """The node (PARAMS, plus ``request.param`` when parametrized indirectly) and a probe."""
    params = {**PARAMS, **getattr(request, "param", {})}
    h = NodeHarness(ros_context, tiny_checkpoint, params=params)
    try:
        yield h
    finally:
        h.close()


def _image(msg) -> np.ndarray:
    dtype = {"32SC1": np.int32, "32FC1": np.float32, "mono8": np.uint8, "bgr8": np.uint8}[msg.encoding]
    channels = 3 if msg.encoding == "bgr8" else 1
    itemsize = np.dtype(dtype).itemsize
    assert msg.step == msg.width * channels * itemsize
    assert msg.is_bigendian == (sys.byteorder == "big" and itemsize > 1)
    a = np.frombuffer(msg.data, dtype).reshape(msg.height, msg.width, channels)
    return a[..., 0] if channels == 1 else a


def _assert_segments_equal(msg, expected) -> None:
    assert len(msg.segments) == len(expected) > 0
    for m, s in zip(msg.segments, expected, strict=True):
        for name in SEGMENT_EXACT_FIELDS:
            assert getattr(m, name) == getattr(s, name), name
        got = [
            m.score,
            m.depth_mean,
            m.depth_median,
            m.depth_min,
            m.depth_std,
            m.depth_robust,
            m.centroid.x,
            m.centroid.y,
            m.centroid.z,
        ]
        want = [
            s.score,
            s.depth_mean,
            s.depth_median,
            s.depth_min,
            s.depth_std,
            s.depth_robust,
            *s.centroid,
        ]
        np.testing.assert_allclose(np.float32(got), np.float32(want), rtol=1e-5, atol=1e-6, equal_nan=True)


# --------------------------------------------------------------------- outputs
def test_frames_in_all_five_outputs_out(harness, reference) -> None:
    harness.wait_connected()
    frames = [
        (random_image(1), "rgb8", 6, (10, 1)),
        (random_image(2), "mono8", 3, (11, 2)),
        (random_image(3), "bgra8", 0, (12, 3)),
    ]
    tracker = Tracker()  # the node tracks with the default settings, fed the image stamps
    for bgr, encoding, pad, stamp in frames:
        sent = image_msg(bgr, encoding, stamp=stamp, frame_id=f"cam_{encoding}", pad=pad)
        harness.image_pub.publish(sent)
        harness.wait_for(lambda s=stamp: harness.answered(s), 60, f"all outputs for {stamp}")

        seen = bgr if encoding != "mono8" else cv2.cvtColor(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
        want = reference.predict(seen)
        want = want.with_tracks(tracker.update(want, stamp_ns=stamp[0] * 10**9 + stamp[1], image=seen).tracks)
        outs = {name: harness.answer(name, stamp) for name in ("segments", "panoptic", "semantic", "depth", "overlay")}
        for msg in outs.values():
            assert msg.header == sent.header
        for name, encoding_out in (
            ("panoptic", "32SC1"),
            ("semantic", "mono8"),
            ("depth", "32FC1"),
            ("overlay", "bgr8"),
        ):
            assert (outs[name].encoding, outs[name].height, outs[name].width) == (
                encoding_out,
                64,
                128,
            ), name
        np.testing.assert_array_equal(_image(outs["panoptic"]), want.panoptic)
        np.testing.assert_array_equal(_image(outs["semantic"]), want.semantic)
        np.testing.assert_allclose(_image(outs["depth"]), want.depth, rtol=1e-5, equal_nan=True)
        picture = _image(outs["overlay"])
        assert picture.shape == (64, 128, 3)
        np.testing.assert_array_equal(picture, overlay(seen, want, near=5.0, far=60.0))
        seg = outs["segments"]
        assert (seg.height, seg.width, seg.label_divisor) == (64, 128, 1000)
        _assert_segments_equal(seg, want.segments)
        # Tracked as a Tracker fed the same stamps tracks (frames over max_gap_s apart: each starts anew).
        assert [(m.track_id, m.track_age) for m in seg.segments] == [(s.track_id, s.track_age) for s in want.segments]
        # Each a new tentative track: seen once, its id not shown until confirmed.
        things = [m for m in seg.segments if m.is_thing]
        assert things and all((m.track_id, m.track_age) == (0, 1) for m in things)
        # No camera_info: every centroid is unknown.
        assert all(math.isnan(v) for s in seg.segments for v in (s.centroid.x, s.centroid.y, s.centroid.z))
        assert set(np.unique(_image(outs["panoptic"]))) == {s.id for s in seg.segments} | (
            {-1} if (want.panoptic == -1).any() else set()
        )

    counts = harness.counts()
    assert counts["received"] == counts["processed"] == 3
    assert counts["dropped_overload"] == counts["dropped_bad_input"] == counts["errors"] == 0


def test_diagnostics_every_period(harness) -> None:
    harness.wait_connected()
    harness.image_pub.publish(image_msg(random_image(4), stamp=(20, 0)))
    harness.wait_for(lambda: harness.answered((20, 0)), 60, "answer")

    def reports_processed() -> bool:
        return any(
            dict((kv.key, kv.value) for kv in d.status[0].values).get("processed") == "1"
            for d in harness.messages("diagnostics")
        )

    harness.wait_for(reports_processed, 5.0, "a /diagnostics report with processed=1")
    status = harness.messages("diagnostics")[-1].status[0]
    values = {kv.key: kv.value for kv in status.values}
    assert status.name == "/panoptic_depthlab: pipeline"
    for key in (
        "received",
        "processed",
        "dropped_overload",
        "dropped_bad_input",
        "total_ms_mean",
        "total_ms_p95",
        "network_ms_last",
        "convert_ms_mean",
        "publish_ms_p95",
        "track_ms_mean",
        "wait_ms_last",
        "tracker_resets",
        "tracks_confirmed",
    ):
        assert key in values, key
    assert float(values["total_ms_last"]) >= float(values["network_ms_last"]) > 0
    # Every key is one docs/node.md describes (its table comes from these names).
    from panoptic_depthlab_ros.pipeline import COUNTERS, STAGES
    from panoptic_depthlab_ros.ros.node import LATENCY_KEYS, STATUS_KEYS

    documented = {*COUNTERS, *STATUS_KEYS} | {f"{s}_ms_{k}" for s in STAGES for k in LATENCY_KEYS}
    assert set(values) <= documented, set(values) - documented
    assert values["outputs_subscribed"] == ",".join(sorted(OUTPUT_NAMES))  # what the probe subscribes to
    # Reports keep coming, from a timer at the configured period (1 s).
    assert harness.node._diagnostics_timer.timer_period_ns == 10**9
    seen = len(harness.messages("diagnostics"))
    harness.wait_for(lambda: len(harness.messages("diagnostics")) >= seen + 2, 30, "two more reports")


# --------------------------------------------------------------------- overload
def test_overload_latest_frame_only(harness) -> None:
    harness.wait_connected()
    image = image_msg(random_image(5))
    n = 30
    for i in range(n):  # far faster than the model (~50+ ms a frame)
        image.header.stamp.sec = 100 + i
        harness.image_pub.publish(image)
        time.sleep(0.002)
    last = (100 + n - 1, 0)
    harness.wait_for(lambda: harness.answered(last), 60, "the last frame's answer")
    harness.wait_for(
        lambda: (lambda c: c["received"] == c["processed"] + c["dropped_overload"])(harness.counts()),
        10,
        "counts to settle",
    )
    counts = harness.counts()
    answered = [stamp_of(m)[0] for m in harness.messages("segments")]
    assert counts["received"] == n
    assert counts["dropped_overload"] > 0 and counts["processed"] < n
    assert counts["processed"] == len(answered)
    assert answered == sorted(answered) and answered[-1] == last[0]  # in order, ending with the latest
    for name in ("panoptic", "semantic", "depth", "overlay"):
        assert [stamp_of(m)[0] for m in harness.messages(name)] == answered
    # No queue: a frame waits at most for the one frame being processed when it arrived.
    lat = harness.node.stats.snapshot().latency
    assert lat["wait"].max <= lat["total"].max + 0.05


# --------------------------------------------------------------------- bad input
def _bad_frames(good: np.ndarray):
    """Every kind of bad input, cycled: (description, message, is_camera_info)."""
    big = random_image(6, 65, 128)  # over max_input_pixels = 64*128

    def img(**changes):
        msg = image_msg(good, "rgb8")
        for k, v in changes.items():
            setattr(msg, k, v)
        return msg

    kinds = [
        ("encoding", img(encoding="yuv422")),
        ("encoding", img(encoding="32FC1")),
        ("short data", img(data=bytes(64 * 128 * 3 - 10))),
        ("step", img(step=128 * 3 - 3)),
        ("zero height", img(height=0, data=b"")),
        ("zero width", img(width=0)),
        ("too large", image_msg(big, "bgr8")),
        ("bigendian", img(is_bigendian=7)),
        (
            "camera_info nan",
            camera_info_msg(np.array([100.0, 0, 64, 0, np.nan, 32, 0, 0, 1]), width=128, height=64),
        ),
        ("camera_info zero", camera_info_msg(np.zeros(9), width=128, height=64)),
        (
            "camera_info fx<0",
            camera_info_msg(np.array([-5.0, 0, 64, 0, 100, 32, 0, 0, 1]), width=128, height=64),
        ),
    ]
    return kinds


@pytest.mark.parametrize("harness", [{"max_input_pixels": 64 * 128}], indirect=True)
def test_thousand_bad_frames_interleaved(harness) -> None:
    harness.wait_connected()
    good = random_image(7)
    kinds = _bad_frames(good)
    n_bad, n_good = 1000, 10
    sent_images = sent_info = 0
    for g in range(n_good):
        for i in range(n_bad // n_good):
            _, msg = kinds[(g * 100 + i) % len(kinds)]
            if hasattr(msg, "k"):
                harness.info_pub.publish(msg)
                sent_info += 1
            else:
                harness.image_pub.publish(msg)
                sent_images += 1
            if i % 25 == 24:  # let the callbacks keep up: no frame may fall out of a DDS queue
                bad_so_far = g * (n_bad // n_good) + i + 1
                harness.wait_for(lambda n=bad_so_far: _bad_so_far(harness) == n, 20, "bad frames")
        stamp = (1000 + g, 0)
        frame = image_msg(good, "rgb8", stamp=stamp)
        harness.image_pub.publish(frame)
        sent_images += 1
        harness.wait_for(lambda s=stamp: harness.answered(s), 60, f"good frame {stamp}")
    harness.wait_for(lambda: _bad_so_far(harness) >= n_bad, 20, "every bad frame counted")
    counts = harness.counts()
    assert counts["dropped_bad_input"] == sent_images - n_good  # images only; camera_info counts apart
    assert counts["processed"] == n_good
    assert counts["received"] == sent_images
    assert counts["dropped_overload"] == 0 and counts["errors"] == 0
    assert counts["camera_info_received"] == counts["camera_info_dropped_bad_input"] == sent_info > 0  # all malformed
    assert harness.node.pipeline.camera_k is None
    assert [stamp_of(m)[0] for m in harness.messages("segments")] == list(range(1000, 1000 + n_good))


class Exploding:
    """A predictor whose network backend fails on every frame (a failure, not a mock of ROS)."""

    def __init__(self, real) -> None:
        self.postprocess = real.postprocess
        self.frame_handling = real.frame_handling

    def predict_batch(self, images, camera_ks=None, postprocess=None):
        raise RuntimeError("backend exploded")


def _bad_so_far(harness) -> int:
    counts = harness.counts()
    return counts["dropped_bad_input"] + counts["camera_info_dropped_bad_input"]


def test_predictor_failure_does_not_kill_the_worker(harness) -> None:
    """A frame that fails inside the predictor is counted as an error; the next one works."""
    harness.wait_connected()
    pipeline = harness.node.pipeline
    real = pipeline.predictor

    pipeline.predictor = Exploding(real)
    harness.image_pub.publish(image_msg(random_image(8), stamp=(30, 0)))
    harness.wait_for(lambda: harness.counts()["errors"] == 1, 30, "the error to be counted")
    pipeline.predictor = real
    harness.image_pub.publish(image_msg(random_image(8), stamp=(31, 0)))
    harness.wait_for(lambda: harness.answered((31, 0)), 60, "the next frame")
    assert not harness.answered((30, 0), ("segments",))


def test_every_failure_reaches_the_log_at_its_own_severity(harness) -> None:
    """Bad input warns, a failing frame logs an error, each throttled per kind; the counters add up.

    rclpy refuses one logging call site at two severities: a shared one lost the errors.
    """
    from rcl_interfaces.msg import Log
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    logs: list = []
    rosout = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    harness.probe.create_subscription(Log, "/rosout", logs.append, rosout)
    harness.wait_connected()
    pipeline = harness.node.pipeline
    real = pipeline.predictor

    bad = image_msg(random_image(8), "rgb8", stamp=(50, 0))
    bad.encoding = "yuv422"
    harness.image_pub.publish(bad)
    harness.wait_for(lambda: harness.counts()["dropped_bad_input"] == 1, 30, "the bad frame")
    pipeline.predictor = Exploding(real)
    for i in range(3):  # every frame fails: one error in the log, the others held back
        harness.image_pub.publish(image_msg(random_image(8), stamp=(51 + i, 0)))
        harness.wait_for(lambda n=i + 1: harness.counts()["errors"] == n, 30, "the failed frame")
    pipeline.predictor = real
    short = image_msg(random_image(8), "rgb8", stamp=(55, 0))
    short.data = bytes(10)
    harness.image_pub.publish(short)  # another kind of bad input: a warning of its own
    harness.wait_for(lambda: harness.counts()["dropped_bad_input"] == 2, 30, "the second bad frame")
    ours = lambda level: [m.msg for m in list(logs) if m.name == "panoptic_depthlab" and m.level == level]  # noqa: E731
    harness.wait_for(lambda: len(ours(Log.WARN)) >= 2 and ours(Log.ERROR), 15, "the warnings and the error")
    time.sleep(0.5)
    warnings, errors = ours(Log.WARN), ours(Log.ERROR)
    assert [w.split(":")[0] for w in warnings] == ["dropped bad input"] * 2
    assert "unsupported encoding 'yuv422'" in warnings[0] and "fewer than step*height" in warnings[1]
    assert errors == ["frame failed: RuntimeError: backend exploded"]  # throttled: 3 failures, one line
    counts = harness.counts()
    assert counts["received"] == 5 == sum(counts[k] for k in FRAME_OUTCOMES)
    assert (counts["processed"], counts["errors"], counts["dropped_bad_input"]) == (0, 3, 2)


def test_log_throttle_counts_what_it_held_back() -> None:
    from panoptic_depthlab_ros.pipeline import LogThrottle

    now = [100.0]
    throttle = LogThrottle(period_s=0.2, clock=lambda: now[0])
    assert throttle("decode", "bad frame") == "bad frame"
    now[0] += 0.1
    assert throttle("decode", "bad frame") is None and throttle("decode", "bad frame") is None
    assert throttle("layout", "other problem") == "other problem"  # one kind does not hide another
    now[0] += 0.15
    assert throttle("decode", "bad frame") == "bad frame (2 more like it in the last 0.2 s)"


# --------------------------------------------------------------------- camera info
def test_camera_info_gives_consistent_centroids(harness, reference) -> None:
    harness.wait_connected()
    k = np.array([[90.0, 0, 60.5], [0, 110.0, 30.25], [0, 0, 1]])
    harness.info_pub.publish(camera_info_msg(k, width=128, height=64))
    harness.wait_for(lambda: harness.counts()["camera_info_received"] == 1, 10, "camera_info")
    bgr = random_image(9)
    harness.image_pub.publish(image_msg(bgr, stamp=(40, 0)))
    harness.wait_for(lambda: harness.answered((40, 0)), 60, "answer")
    seg_msg = harness.answer("segments", (40, 0))
    _assert_segments_equal(seg_msg, reference.predict(bgr, camera_k=k).segments)

    # Independently of the predictor: back-project the published depth with K.
    panoptic = _image(harness.answer("panoptic", (40, 0)))
    depth = _image(harness.answer("depth", (40, 0))).astype(np.float64)
    v, u = np.mgrid[0:64, 0:128]
    checked = 0
    for s in seg_msg.segments:
        mask = (panoptic == s.id) & np.isfinite(depth) & (depth > 0)
        if s.depth_valid_pixels == 0:
            assert math.isnan(s.centroid.z)
            continue
        z = depth[mask]
        x = ((u[mask] - k[0, 2]) * z / k[0, 0]).mean()
        y = ((v[mask] - k[1, 2]) * z / k[1, 1]).mean()
        np.testing.assert_allclose([s.centroid.x, s.centroid.y, s.centroid.z], [x, y, z.mean()], rtol=1e-4, atol=1e-4)
        assert s.centroid.z == pytest.approx(s.depth_mean, rel=1e-6)
        checked += 1
    assert checked > 0


# --------------------------------------------------------------------- transport / switches
@pytest.mark.parametrize("harness", [{"image_transport": "compressed"}], indirect=True)
def test_compressed_transport(harness, reference) -> None:
    from sensor_msgs.msg import CompressedImage

    harness.wait_connected(compressed=True)
    bgr = random_image(10)
    msg = CompressedImage(format="png", data=cv2.imencode(".png", bgr)[1].tobytes())
    msg.header.stamp.sec = 50
    harness.compressed_pub.publish(msg)
    harness.wait_for(lambda: harness.answered((50, 0)), 60, "answer")
    _assert_segments_equal(harness.answer("segments", (50, 0)), reference.predict(bgr).segments)

    broken = CompressedImage(format="jpeg", data=b"\xff\xd8 definitely not a jpeg")
    broken.header.stamp.sec = 51
    harness.compressed_pub.publish(broken)
    harness.wait_for(lambda: harness.counts()["dropped_bad_input"] == 1, 30, "the corrupt frame to be dropped")
    msg.header.stamp.sec = 52
    harness.compressed_pub.publish(msg)
    harness.wait_for(lambda: harness.answered((52, 0)), 60, "answer after the corrupt frame")


def test_switched_off_and_unsubscribed_outputs(ros_context, tiny_checkpoint, monkeypatch) -> None:
    """Disabled outputs have no topic; with no subscriber at all nothing is inferred;
    with only ``segments`` subscribed no other output is made: the overlay is not drawn
    and no image message is built (the publish stage stays cheap)."""
    from panoptic_depthlab_ros import node_outputs

    calls = {"overlay": 0, "image messages": 0}

    def counted(name, fn):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(node_outputs, "overlay", counted("overlay", node_outputs.overlay))
    monkeypatch.setattr(node_outputs, "array_to_image", counted("image messages", node_outputs.array_to_image))
    params = {**PARAMS, "publish_depth": False, "publish_semantic": False}
    h = NodeHarness(ros_context, tiny_checkpoint, params=params, outputs=())
    try:
        topics = dict(h.node.get_publisher_names_and_types_by_node("panoptic_depthlab", "/"))
        assert "/panoptic_depthlab/panoptic" in topics and "/panoptic_depthlab/overlay" in topics
        assert "/panoptic_depthlab/depth" not in topics and "/panoptic_depthlab/semantic" not in topics
        h.wait_for(lambda: h.image_pub.get_subscription_count() == 1, 15, "discovery")
        h.image_pub.publish(image_msg(random_image(11, 128, 256), stamp=(60, 0)))
        h.wait_for(lambda: h.counts()["skipped_no_subscribers"] == 1, 30, "the frame to be skipped")
        assert h.counts()["processed"] == 0
    finally:
        h.close()

    def made(outputs: tuple[str, ...]) -> dict[str, int]:
        """What two frames with subscribers on ``outputs`` made besides the messages received."""
        before = dict(calls)
        h = NodeHarness(ros_context, tiny_checkpoint, params=PARAMS, outputs=outputs)
        try:
            h.wait_connected()
            for i in range(2):
                h.image_pub.publish(image_msg(random_image(12, 128, 256), stamp=(70 + i, 0)))
                h.wait_for(lambda i=i: h.answered((70 + i, 0)), 60, "answer")
            assert h.counts()["processed"] == 2
        finally:
            h.close()
        return {k: calls[k] - before[k] for k in calls}

    assert made(("segments",)) == {"overlay": 0, "image messages": 0}
    everything = ("segments", "panoptic", "semantic", "depth", "overlay")
    assert made(everything) == {"overlay": 2, "image messages": 2 * 4}  # panoptic, semantic, depth, overlay


def test_worker_stops_with_the_node(ros_context, tiny_checkpoint) -> None:
    h = NodeHarness(ros_context, tiny_checkpoint, params=PARAMS)
    assert any(t.name == "panoptic_depthlab_worker" for t in threading.enumerate())
    h.close()
    assert not any(t.name == "panoptic_depthlab_worker" and t.is_alive() for t in threading.enumerate())
    h.node.destroy_node()  # a second destroy is harmless


# --------------------------------------------------------------------- the installed executable


def test_installed_executable_answers_and_warns(ros_context, tiny_checkpoint) -> None:
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from panoptic_depthlab_ros.msg import SegmentDepthArray

    proc = subprocess.Popen(
        [
            str(installed_executable()),
            "--ros-args",
            "-p",
            f"checkpoint:={tiny_checkpoint}",
            "-p",
            "device:=cpu",
            "-r",
            "image:=/cam/image_raw",
        ],
        env=child_env(ros_context),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    probe = Node("exe_probe", context=ros_context)
    got: list = []
    probe.create_subscription(
        SegmentDepthArray,
        "/panoptic_depthlab/segments",
        got.append,
        QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE),
    )
    pub = probe.create_publisher(Image, "/cam/image_raw", 10)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(probe)
    try:
        good = image_msg(random_image(13), stamp=(80, 0))
        bad = image_msg(random_image(13), stamp=(81, 0))
        bad.encoding = "yuv422"
        deadline = time.monotonic() + 90
        while not got and time.monotonic() < deadline and proc.poll() is None:
            if pub.get_subscription_count() and probe.count_subscribers("/panoptic_depthlab/segments"):
                # Default QoS of the node: best effort, depth 1, so one message at a time.
                pub.publish(bad)
                executor.spin_once(timeout_sec=0.3)
                pub.publish(good)
            executor.spin_once(timeout_sec=0.5)
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert got, "no SegmentDepthArray from the executable"
        assert stamp_of(got[0]) == (80, 0) and len(got[0].segments) > 0
        # The node is spinning now; before its first answer, its depth-1 queue may have
        # replaced the bad image by the good one (seen once in CI).
        for _ in range(3):
            pub.publish(bad)
            executor.spin_once(timeout_sec=0.3)
    finally:
        executor.shutdown()
        probe.destroy_node()
        proc.send_signal(signal.SIGINT)
        try:
            _out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _out, err = proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    assert "unsupported encoding 'yuv422'" in err
    assert "running on the CPU" not in err  # device:=cpu, not auto


def test_installed_executable_missing_checkpoint_fails_fast(ros_context, tmp_path) -> None:
    missing = tmp_path / "no_such_model.safetensors"
    out = subprocess.run(
        [str(installed_executable()), "--ros-args", "-p", f"checkpoint:={missing}"],
        env=child_env(ros_context),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0
    assert str(missing) in out.stderr
    assert "does not exist" in out.stderr


def test_onnxruntime_backend(ros_context, tiny_checkpoint, tmp_path) -> None:
    """backend: onnxruntime with an exported .onnx answers like the ONNX predictor."""
    from panoptic_depthlab_ros.export import export_model
    from panoptic_depthlab_ros.predictor import Predictor

    onnx_path = tmp_path / "tiny.onnx"
    export_model(tiny_checkpoint, onnx_path, fmt="onnx", dynamic=True)
    h = NodeHarness(ros_context, onnx_path, params={**PARAMS, "backend": "onnxruntime"})
    try:
        assert type(h.node.pipeline.predictor.network).__name__ == "OnnxNetwork"
        h.wait_connected()
        bgr = random_image(7)
        h.image_pub.publish(image_msg(bgr, "bgr8", stamp=(40, 1)))
        h.wait_for(lambda: h.answered((40, 1)), 60, "the ONNX backend's answer")
        want = Predictor.from_checkpoint(onnx_path, "cpu", backend="onnxruntime").predict(bgr)
        np.testing.assert_array_equal(_image(h.answer("panoptic", (40, 1))), want.panoptic)
        _assert_segments_equal(h.answer("segments", (40, 1)), want.segments)
    finally:
        h.close()
