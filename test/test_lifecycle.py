"""The node as a managed lifecycle node, driven through the real ``lifecycle_msgs``
ChangeState / GetState services over rclpy (and, unmanaged, starting active)."""

from __future__ import annotations

import gc
import signal
import subprocess
import threading
import time
import weakref

import pytest

from node_utils import (
    NodeHarness,
    child_env,
    image_msg,
    installed_executable,
    random_image,
    stamp_of,
)

PARAMS = {"qos_reliability": "reliable", "qos_depth": 100, "managed": True}
OUTPUTS = ("segments", "panoptic")


def _topics(h: NodeHarness) -> tuple[dict, dict]:
    pubs = dict(h.node.get_publisher_names_and_types_by_node("panoptic_depthlab", "/"))
    subs = dict(h.node.get_subscriber_names_and_types_by_node("panoptic_depthlab", "/"))
    return pubs, subs


def _worker_alive() -> bool:
    return any(t.name == "panoptic_depthlab_worker" and t.is_alive() for t in threading.enumerate())


def _answer_frame(h: NodeHarness, sec: int) -> None:
    h.wait_connected()
    h.image_pub.publish(image_msg(random_image(sec), stamp=(sec, 0)))
    h.wait_for(lambda: h.answered((sec, 0)), 60, f"the answer to frame {sec}")


class GatedPredictor:
    """The real predictor behind a gate: ``predict_batch`` waits until the test opens it."""

    def __init__(self, real) -> None:
        self.real = real
        self.entered = threading.Event()
        self.gate = threading.Event()

    def __getattr__(self, name):
        return getattr(self.real, name)

    def predict_batch(self, images, camera_ks=None, postprocess=None):
        self.entered.set()
        assert self.gate.wait(60), "the test never opened the gate"
        return self.real.predict_batch(images, camera_ks, postprocess=postprocess)


def test_unmanaged_node_starts_active_without_lifecycle_services(ros_context, tiny_checkpoint):
    h = NodeHarness(ros_context, tiny_checkpoint, params={**PARAMS, "managed": False}, outputs=OUTPUTS)
    try:
        assert h.node.lifecycle_state == "active" and h.node.predictor is not None
        services = {n for n, _ in h.node.get_service_names_and_types_by_node("panoptic_depthlab", "/")}
        assert not {s for s in services if s.endswith(("change_state", "get_state"))}
        _answer_frame(h, 1)
    finally:
        h.close()
    assert h.node.lifecycle_state == "finalized" and not _worker_alive()


def test_managed_node_through_the_lifecycle_services(ros_context, tiny_checkpoint) -> None:
    h = NodeHarness(ros_context, tiny_checkpoint, params=PARAMS, outputs=OUTPUTS)
    try:
        lc = h.lifecycle()
        # Unconfigured: no model, no outputs, no inputs; activate is not a valid transition.
        assert lc.state() == "unconfigured"
        assert h.node.predictor is None and not _worker_alive()
        pubs, subs = _topics(h)
        assert "/panoptic_depthlab/segments" not in pubs and "/image" not in subs
        assert not lc.change("activate")
        assert lc.state() == "unconfigured"

        # configure: model loaded, publishers declared, still nothing subscribed or running.
        assert lc.change("configure")
        assert lc.state() == "inactive" and h.node.predictor is not None
        pubs, subs = _topics(h)
        assert pubs["/panoptic_depthlab/segments"] == ["panoptic_depthlab_ros/msg/SegmentDepthArray"]
        assert "/image" not in subs and not _worker_alive()
        h.image_pub.publish(image_msg(random_image(1), stamp=(1, 0)))  # nobody takes it

        # activate: answers frames.
        assert lc.change("activate")
        assert lc.state() == "active" and _worker_alive()
        _answer_frame(h, 2)

        # deactivate while one frame is being inferred and another waits: the first
        # publishes nothing, the second is dropped.
        pipeline = h.node.pipeline
        gated = GatedPredictor(pipeline.predictor)
        pipeline.predictor = gated
        h.image_pub.publish(image_msg(random_image(3), stamp=(3, 0)))
        assert gated.entered.wait(30), "frame 3 never reached the predictor"
        received = h.counts()["received"]
        h.image_pub.publish(image_msg(random_image(4), stamp=(4, 0)))
        h.wait_for(lambda: h.counts()["received"] == received + 1, 15, "frame 4 to wait")
        dropped = h.counts()["dropped_overload"]
        future = lc.change_async("deactivate")
        segments_pub = pipeline.outputs.publishers["segments"]
        h.wait_for(lambda: not segments_pub.is_activated, 15, "the publishers to switch off")
        gated.gate.set()  # frame 3 finishes its inference after the outputs went off
        h.wait_for(future.done, 60, "deactivate")
        assert future.result().success and lc.state() == "inactive"
        assert not _worker_alive()
        assert h.counts()["dropped_overload"] == dropped + 1  # frame 4
        pipeline.predictor = gated.real
        del gated, pipeline  # no strong reference to the model may stay here

        # activate again: the next frame is answered, and nothing came for frames 1, 3, 4
        # (one publisher's messages arrive in order).
        assert lc.change("activate")
        _answer_frame(h, 5)
        assert [stamp_of(m)[0] for m in h.messages("segments")] == [2, 5]

        # cleanup frees the model; configure + activate works again.
        model = weakref.ref(h.node.predictor.network)
        assert lc.change("deactivate") and lc.change("cleanup")
        assert lc.state() == "unconfigured"
        assert h.node.predictor is None and h.node.pipeline is None
        gc.collect()
        assert model() is None, gc.get_referrers(model())
        assert "/panoptic_depthlab/segments" not in _topics(h)[0]
        assert lc.change("configure") and lc.change("activate")
        _answer_frame(h, 6)

        # shutdown from active: finalized, worker gone, model released.
        assert lc.change("shutdown")
        assert lc.state() == "finalized"
        assert h.node.predictor is None and not _worker_alive()
        assert not lc.change("configure")  # finalized is final
    finally:
        h.close()


def test_managed_configure_failure_is_reported_and_retryable(ros_context, tiny_checkpoint, tmp_path) -> None:
    missing = tmp_path / "later.safetensors"
    h = NodeHarness(ros_context, missing, params=PARAMS, outputs=OUTPUTS)
    try:
        lc = h.lifecycle()
        assert not lc.change("configure")  # the checkpoint is not there (yet)
        assert lc.state() == "unconfigured" and h.node.predictor is None
        assert "does not exist" in str(h.node._transition_error)
        missing.write_bytes(tiny_checkpoint.read_bytes())  # e.g. a download finished
        assert lc.change("configure") and lc.change("activate")
        _answer_frame(h, 1)
    finally:
        h.close()
    assert h.node.lifecycle_state == "finalized"


def test_installed_executable_managed_and_clean_shutdown(ros_context, tiny_checkpoint) -> None:
    """The real executable with managed:=true: configure and activate over the services,
    answer a frame, exit 0 on Ctrl-C."""
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState
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
            "-p",
            "managed:=true",
            "-p",
            "qos_reliability:=reliable",
        ],
        env=child_env(ros_context),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    probe = Node("lifecycle_probe", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(probe)
    got: list = []
    probe.create_subscription(
        SegmentDepthArray,
        "/panoptic_depthlab/segments",
        got.append,
        QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE),
    )
    pub = probe.create_publisher(Image, "/image", 10)
    client = probe.create_client(ChangeState, "/panoptic_depthlab/change_state")

    def change(transition_id: int) -> bool:
        request = ChangeState.Request()
        request.transition.id = transition_id
        future = client.call_async(request)
        deadline = time.monotonic() + 60
        while not future.done() and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
        return future.done() and future.result().success

    try:
        assert client.wait_for_service(timeout_sec=90), proc.poll()
        assert change(Transition.TRANSITION_CONFIGURE)
        assert change(Transition.TRANSITION_ACTIVATE)
        deadline = time.monotonic() + 60
        while not got and time.monotonic() < deadline and proc.poll() is None:
            if pub.get_subscription_count() and probe.count_subscribers("/panoptic_depthlab/segments"):
                pub.publish(image_msg(random_image(7), stamp=(7, 0)))
            executor.spin_once(timeout_sec=0.5)
        assert got and stamp_of(got[0]) == (7, 0)
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
    assert "Traceback" not in err, err[-3000:]


if __name__ == "__main__":
    pytest.main([__file__, "-q"])


def test_a_failing_warm_up_fails_configure_and_cleanup_releases_the_model(
    ros_context, tiny_checkpoint, monkeypatch, capfd
) -> None:
    """The first frame's failure (here out of GPU memory, raised by the predictor's network call)
    shows at configure: refused with the reason, nothing half-configured. Without it, the warm-up
    time is logged; cleanup releases the predictor; a re-configure warms up at the frames' size."""
    import torch

    from panoptic_depthlab_ros.predictor import Predictor, WarmUpError

    real_network = Predictor._run_network

    def out_of_memory(self, x, *, depth):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.00 GiB")

    monkeypatch.setattr(Predictor, "_run_network", out_of_memory)
    params = {**PARAMS, "warmup_height": 96, "warmup_width": 160}
    h = NodeHarness(ros_context, tiny_checkpoint, params=params, outputs=OUTPUTS)
    try:
        lc = h.lifecycle()
        assert not lc.change("configure")
        assert lc.state() == "unconfigured" and h.node.predictor is None
        assert "/panoptic_depthlab/segments" not in _topics(h)[0]
        assert isinstance(h.node._transition_error, WarmUpError)
        reason = "warm-up frame 96x160 on cpu (backend torch) failed: OutOfMemoryError: CUDA out of memory."
        assert str(h.node._transition_error).startswith(reason)
        assert f"configure failed: WarmUpError: {reason}" in capfd.readouterr().err

        monkeypatch.setattr(Predictor, "_run_network", real_network)
        assert lc.change("configure")
        err = capfd.readouterr().err
        assert "warm-up frame 96x160 on cpu: " in err
        assert "CPU post-processing: compiled passes (libpdl_postprocess.so)" in err  # which one runs is logged
        assert lc.change("activate")
        _answer_frame(h, 1)  # 64x128
        predictor = h.node.predictor
        assert lc.change("deactivate") and lc.change("cleanup")
        with pytest.raises(Exception, match="this predictor was released"):
            predictor.predict(random_image(2))
        del predictor
        assert lc.change("configure")
        assert "warm-up frame 64x128 on cpu: " in capfd.readouterr().err
    finally:
        h.close()

    monkeypatch.setattr(Predictor, "_run_network", out_of_memory)
    with pytest.raises(WarmUpError, match="warm-up frame 512x1024 on cpu"):  # unmanaged: the start-up fails
        NodeHarness(ros_context, tiny_checkpoint, params={**PARAMS, "managed": False}, outputs=OUTPUTS)
