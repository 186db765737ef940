"""Several cameras through one real node (parameter ``cameras``): each camera answered on
its own topics with its own headers, batched through one model, none starved by a
flooded one, 2D outputs without camera_info, counters per camera in /diagnostics."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from node_utils import NodeHarness, camera_info_msg, image_msg, random_image, stamp_of

CAMERAS = ("front", "left", "right")


class RecordingPredictor:
    """The real predictor; records each batch's size and can hold the first batch until released."""

    def __init__(self, real, *, hold_first: bool = False) -> None:
        self.real = real
        self.batches: list[list[tuple[int, int]]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        if not hold_first:
            self.release.set()

    def __getattr__(self, name):
        return getattr(self.real, name)

    def predict_batch(self, images, camera_ks=None, postprocess=None):
        self.batches.append([im.shape[:2] for im in images])
        self.entered.set()
        assert self.release.wait(60), "the test never released the batch"
        return self.real.predict_batch(images, camera_ks, postprocess=postprocess)


def _wait_connected(h: NodeHarness, cameras: tuple[str, ...], outputs: tuple[str, ...]) -> None:
    sinks = [c.outputs.publishers for c in h.node.cameras]
    h.wait_for(
        lambda: (
            all(pub.get_subscription_count() >= 1 for c in cameras for pub in h.camera_pubs[c])
            and all(sink[name].get_subscription_count() >= 1 for sink in sinks for name in outputs)
        ),
        15,
        "discovery",
    )


def _counts(h: NodeHarness, camera: str) -> dict[str, int]:
    (stream,) = [c for c in h.node.cameras if c.name == camera]
    return stream.stats.snapshot().counts


@pytest.fixture
def three_cameras(ros_context, tiny_checkpoint):
    outputs = ("segments", "panoptic", "markers")
    h = NodeHarness(
        ros_context, tiny_checkpoint, cameras=CAMERAS, outputs=outputs, params={"diagnostics_period_s": 0.2}
    )
    try:
        _wait_connected(h, CAMERAS, outputs)
        yield h
    finally:
        h.close()


def test_three_cameras_answered_on_their_own_topics_with_their_own_headers(three_cameras) -> None:
    h = three_cameras
    subs = dict(h.node.get_subscriber_names_and_types_by_node("panoptic_depthlab", "/"))
    pubs = dict(h.node.get_publisher_names_and_types_by_node("panoptic_depthlab", "/"))
    for c in CAMERAS:
        assert subs[f"/{c}/image"] == ["sensor_msgs/msg/Image"] and f"/{c}/camera_info" in subs
        assert pubs[f"/panoptic_depthlab/{c}/segments"] == ["panoptic_depthlab_ros/msg/SegmentDepthArray"]
    assert "/image" not in subs and "/panoptic_depthlab/segments" not in pubs  # no single camera beside them
    # The start-up log lists the cameras with their resolved topics (rosout keeps it: transient local).
    from rcl_interfaces.msg import Log
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    logs: list = []
    rosout = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    h.probe.create_subscription(Log, "/rosout", logs.append, rosout)
    h.wait_for(lambda: any("camera(s), one model" in m.msg for m in list(logs)), 15, "the start-up log")
    (line,) = [m.msg for m in list(logs) if "camera(s), one model" in m.msg]
    assert line.startswith("3 camera(s), one model: front: /front/image + /front/camera_info -> ")
    assert "right: /right/image + /right/camera_info -> /panoptic_depthlab/right/<output>" in line

    # front and left have intrinsics (different ones), right has none; right's frames are larger.
    for c, f in (("front", 100.0), ("left", 140.0)):
        h.camera_pubs[c][1].publish(
            camera_info_msg(np.array([[f, 0, 64], [0, f, 32], [0, 0, 1]]), width=128, height=64, frame_id=c)
        )
    h.wait_for(lambda: all(_counts(h, c)["camera_info_received"] == 1 for c in ("front", "left")), 15, "camera_info")
    real = h.node.pipeline.predictor
    recorder = RecordingPredictor(real, hold_first=True)
    h.node.pipeline.predictor = recorder
    sizes = {"front": (64, 128), "left": (64, 128), "right": (96, 160)}
    h.camera_pubs["front"][0].publish(image_msg(random_image(1), stamp=(1, 0), frame_id="front"))
    assert recorder.entered.wait(30), "the first frame never reached the network"
    # While the worker is busy, every camera's next frame waits: they go through as one batch.
    for i, c in enumerate(CAMERAS):
        bgr = random_image(10 + i, *sizes[c])
        h.camera_pubs[c][0].publish(image_msg(bgr, stamp=(10 + i, 500 + i), frame_id=c))
    h.wait_for(lambda: all(h.node.pipeline._mailbox._frames), 15, "the three frames to wait")  # noqa: SLF001
    recorder.release.set()
    wanted = {"front": ("segments", "panoptic", "markers"), "left": ("segments", "panoptic", "markers")}
    wanted["right"] = ("segments", "panoptic")  # no camera_info: 2D outputs only
    for i, c in enumerate(CAMERAS):
        h.wait_for(lambda c=c, i=i: h.answered((10 + i, 500 + i), tuple(f"{c}/{n}" for n in wanted[c])), 60, c)
    h.node.pipeline.predictor = real
    # One batch of the three cameras, starting after the one served last (round-robin).
    assert recorder.batches == [[(64, 128)], [sizes[c] for c in ("left", "right", "front")]]

    for i, c in enumerate(CAMERAS):
        for name in wanted[c]:
            msg = h.answer(f"{c}/{name}", (10 + i, 500 + i))
            header = msg.header if hasattr(msg, "header") else msg.markers[0].header
            assert header.frame_id == c, (c, name)
        panoptic = h.answer(f"{c}/panoptic", (10 + i, 500 + i))
        assert (panoptic.height, panoptic.width) == sizes[c]
        # Only its own frames: the front camera's first frame (stamp 1 s) went to front alone.
        assert {stamp_of(m) for m in h.messages(f"{c}/segments")} == ({(1, 0)} if c == "front" else set()) | {
            (10 + i, 500 + i)
        }
    assert h.messages("right/markers") == []
    # Each camera its own tracker (tracking is on by default), fed only its own frames.
    assert len({id(c.tracker) for c in h.node.cameras}) == 3
    assert [c.last_tracked is not None for c in h.node.cameras] == [True] * 3
    # Per-camera K: the markers of front and left sit at depths scaled by their own focal lengths.
    assert h.answer("front/markers", (10, 500)).markers and h.answer("left/markers", (11, 501)).markers

    # /diagnostics: one status per camera with its own counters.
    def statuses() -> dict[str, dict[str, str]]:
        for array in reversed(h.messages("diagnostics")):
            found = {s.name.rsplit("camera ", 1)[-1]: {v.key: v.value for v in s.values} for s in array.status}
            if set(found) == set(CAMERAS) and all(found[c]["processed"] == str(1 + (c == "front")) for c in CAMERAS):
                return found
        return {}

    h.wait_for(lambda: statuses(), 15, "per-camera diagnostics")
    found = statuses()
    for c in CAMERAS:
        assert found[c]["received"] == str(1 + (c == "front")) and found[c]["dropped_overload"] == "0"
        assert float(found[c]["total_ms_last"]) > 0 and "tracks_confirmed" in found[c]
    assert found["right"]["camera_info_received"] == "0" and found["front"]["camera_info_received"] == "1"


def test_a_flooded_camera_does_not_starve_the_others(ros_context, tiny_checkpoint) -> None:
    """One frame per network pass (max_batch 1): the cameras take turns however fast one sends."""
    cams = ("a", "b", "c")
    h = NodeHarness(ros_context, tiny_checkpoint, cameras=cams, outputs=("segments",), params={"max_batch": 1})
    stop = threading.Event()
    try:
        _wait_connected(h, cams, ("segments",))
        flood_pub = h.camera_pubs["a"][0]
        flood_frames = [image_msg(random_image(s), stamp=(100 + s, 0), frame_id="a") for s in range(8)]

        def flood() -> None:
            n = 0
            while not stop.is_set():
                flood_pub.publish(flood_frames[n % len(flood_frames)])
                n += 1
                time.sleep(0.002)

        flooder = threading.Thread(target=flood, daemon=True)
        flooder.start()
        h.wait_for(lambda: _counts(h, "a")["dropped_overload"] >= 5, 30, "camera a to overload the node")
        for i, c in enumerate(("b", "c")):
            h.camera_pubs[c][0].publish(image_msg(random_image(20 + i), stamp=(20 + i, 0), frame_id=c))
        h.wait_for(lambda: h.answered((20, 0), ("b/segments",)) and h.answered((21, 0), ("c/segments",)), 30, "b, c")
        stop.set()
        flooder.join(5)
        a, b, c = (_counts(h, x) for x in cams)
        assert a["dropped_overload"] >= 5 and a["processed"] >= 1  # a's drops are a's own
        assert (b["processed"], b["dropped_overload"], c["processed"], c["dropped_overload"]) == (1, 0, 1, 0)
        assert h.answer("b/segments", (20, 0)).header.frame_id == "b"
    finally:
        stop.set()
        h.close()


@pytest.mark.parametrize("names", [["front", "front"], ["1st"], ["front", ""]])
def test_bad_camera_lists_are_refused_at_start(ros_context, tiny_checkpoint, names) -> None:
    from rclpy.parameter import Parameter

    from panoptic_depthlab_ros.ros.node import PanopticDepthLabNode
    from panoptic_depthlab_ros.ros.parameters import ParameterError

    overrides = [Parameter("checkpoint", value=str(tiny_checkpoint)), Parameter("cameras", value=names)]
    with pytest.raises(ParameterError, match="cameras: camera"):
        PanopticDepthLabNode(context=ros_context, parameter_overrides=overrides)
