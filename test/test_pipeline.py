"""The node's worker without ROS (panoptic_depthlab_ros/pipeline.py): rosbags' message
classes in, messages out to a plain collecting sink; the predictor's own settings untouched."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import numpy as np
import pytest

from node_utils import random_image
from panoptic_depthlab_ros.bag_reading import typestore_with_our_messages
from panoptic_depthlab_ros.node_outputs import OutputSettings
from panoptic_depthlab_ros.pipeline import Frame, Pipeline, PipelineSettings, PipelineStats, in_passing_thread
from panoptic_depthlab_ros.predictor import Predictor
from pdl_testing import imports_without_ros, rosbags_camera_info


class CollectingSink:
    """Outputs with subscribers on ``wanted``; keeps what is published."""

    def __init__(self, wanted: set[str]) -> None:
        self.wanted = wanted
        self.published: list[tuple[str, object]] = []

    def wanted_names(self) -> set[str]:
        return set(self.wanted)

    def publish(self, name: str, message: object) -> None:
        self.published.append((name, message))


@pytest.fixture(scope="module")
def typestore():
    return typestore_with_our_messages()


def _image_msg(ts, bgr: np.ndarray, sec: int):
    t = ts.types
    h, w = bgr.shape[:2]
    header = t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=sec, nanosec=0), frame_id="cam")
    return t["sensor_msgs/msg/Image"](
        header=header, height=h, width=w, encoding="bgr8", is_bigendian=0, step=3 * w, data=bgr.reshape(-1)
    )


def test_frames_through_the_pipeline_with_settings_passed_in(tiny_checkpoint, typestore) -> None:
    predictor = Predictor.from_checkpoint(tiny_checkpoint, "cpu")
    saved = predictor.postprocess
    sink = CollectingSink({"segments", "overlay", "markers"})
    stats = PipelineStats()
    settings = PipelineSettings(
        max_pixels=0, postprocess=replace(saved, center_threshold=0.3, depth_erosion_px=1), outputs=OutputSettings()
    )
    pipeline = Pipeline(
        predictor, outputs=sink, settings=settings, stats=stats, message_classes=typestore.types.__getitem__
    )
    bgr = random_image(3)
    pipeline.process(Frame(message=_image_msg(typestore, bgr, 5), compressed=False, received=time.perf_counter()))
    # No camera_info yet: no markers; the overlay and the segments, in publish order.
    assert [name for name, _ in sink.published] == ["segments", "overlay"]
    want = Predictor.from_checkpoint(tiny_checkpoint, "cpu").predict(bgr, postprocess=settings.postprocess)
    segments = sink.published[0][1]
    assert [s.id for s in segments.segments] == [s.id for s in want.segments]
    assert [s.depth_valid_pixels for s in segments.segments] == [s.depth_valid_pixels for s in want.segments]
    assert segments.header.stamp.sec == 5
    assert predictor.postprocess == saved  # the settings were passed in, not set on the predictor
    assert stats.snapshot().counts["processed"] == 1

    # A CameraInfo gives K: markers too from the next frame on.
    k = np.array([100.0, 0, 64, 0, 100.0, 32, 0, 0, 1])
    t = typestore.types
    header = t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=5, nanosec=0), frame_id="cam")
    pipeline.camera_info(rosbags_camera_info(typestore, header, k))
    np.testing.assert_array_equal(pipeline.camera_k, k.reshape(3, 3))
    sink.published.clear()
    pipeline.process(Frame(message=_image_msg(typestore, bgr, 6), compressed=False, received=time.perf_counter()))
    assert [name for name, _ in sink.published] == ["segments", "markers", "overlay"]


def test_bad_frames_are_counted_before_the_mailbox(tiny_checkpoint, typestore) -> None:
    predictor = Predictor.from_checkpoint(tiny_checkpoint, "cpu")
    warnings: list[str] = []
    stats = PipelineStats()
    settings = PipelineSettings(max_pixels=64 * 128, postprocess=predictor.postprocess, outputs=OutputSettings())
    pipeline = Pipeline(
        predictor,
        outputs=CollectingSink({"segments"}),
        settings=settings,
        stats=stats,
        message_classes=typestore.types.__getitem__,
        log_warning=warnings.append,
    )
    pipeline.accept(_image_msg(typestore, random_image(1, 65, 128), 1), compressed=False, received=0.0)
    counts = stats.snapshot().counts
    assert (counts["received"], counts["dropped_bad_input"]) == (1, 1)
    assert warnings and "above the limit max_input_pixels=8192" in warnings[0]


def test_the_pipeline_imports_without_ros() -> None:
    assert imports_without_ros("panoptic_depthlab_ros.pipeline", "panoptic_depthlab_ros.node_outputs") == ""


def test_the_mailbox_keeps_each_cameras_latest_and_serves_them_in_turn() -> None:
    from panoptic_depthlab_ros.pipeline import LatestFrameMailbox

    box = LatestFrameMailbox(3)
    frame = lambda camera, t: Frame(message=None, compressed=False, received=t, camera=camera)  # noqa: E731
    assert box.put(frame(0, 1.0)) is False and box.put(frame(0, 2.0)) is True  # replaced: a drop of camera 0
    box.put(frame(2, 3.0))
    assert [(f.camera, f.received) for f in box.take(0.0)] == [(0, 2.0), (2, 3.0)]  # every camera's latest
    assert box.take(0.0) == []
    # One per take (max_batch 1) while camera 0 always has a new frame: 1 and 2 still get their turn.
    box.put(frame(1, 4.0))
    box.put(frame(2, 5.0))
    served = []
    for t in range(6):
        box.put(frame(0, 10.0 + t))
        served += [f.camera for f in box.take(0.0, limit=1)]
    assert served[:3] == [0, 1, 2] and served[3:] == [0, 0, 0]
    box.put(frame(2, 20.0))
    box.put(frame(1, 21.0))
    assert box.clear() == [1, 2]  # what stopping drops, per camera


def test_in_passing_thread_returns_and_raises_in_the_caller() -> None:
    caller = threading.get_ident()
    assert in_passing_thread(lambda: threading.get_ident()) != caller
    with pytest.raises(KeyError, match="gone"):
        in_passing_thread(lambda: {}["gone"])
