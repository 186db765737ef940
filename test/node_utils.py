"""Helpers for the node tests: build input messages, and run the real node next
to a probe node (inputs out, every output in) on one executor in a thread."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

# The image-derived outputs (published for every frame); markers and points also need
# camera_info, so a test asks for them explicitly.
OUTPUT_NAMES = ("segments", "panoptic", "semantic", "depth", "overlay")


def output_type(name: str):
    """Message class of output ``name``."""
    from sensor_msgs.msg import Image, PointCloud2
    from visualization_msgs.msg import MarkerArray

    from panoptic_depthlab_ros.msg import SegmentDepthArray

    return {"segments": SegmentDepthArray, "markers": MarkerArray, "points": PointCloud2}.get(name, Image)


def image_msg(
    bgr: np.ndarray,
    encoding: str = "bgr8",
    *,
    stamp: tuple[int, int] = (0, 0),
    frame_id: str = "cam",
    pad: int = 0,
):
    """sensor_msgs/Image of ``bgr`` ([H, W, 3] uint8) in ``encoding``, rows padded by ``pad``."""
    import cv2
    from sensor_msgs.msg import Image

    codes = {
        "bgr8": None,
        "rgb8": cv2.COLOR_BGR2RGB,
        "bgra8": cv2.COLOR_BGR2BGRA,
        "rgba8": cv2.COLOR_BGR2RGBA,
        "mono8": cv2.COLOR_BGR2GRAY,
    }
    pixels = bgr if codes[encoding] is None else cv2.cvtColor(bgr, codes[encoding])
    h, w = pixels.shape[:2]
    row = pixels.reshape(h, -1)
    if pad:
        row = np.concatenate([row, np.full((h, pad), 0xAB, np.uint8)], axis=1)
    msg = Image(height=h, width=w, encoding=encoding, is_bigendian=0, step=row.shape[1])
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp
    msg.header.frame_id = frame_id
    msg.data = np.ascontiguousarray(row).tobytes()
    return msg


def camera_info_msg(k: np.ndarray, *, width: int, height: int, frame_id: str = "cam"):
    """sensor_msgs/CameraInfo with intrinsics ``k`` (3x3)."""
    from sensor_msgs.msg import CameraInfo

    msg = CameraInfo(width=width, height=height)
    msg.header.frame_id = frame_id
    msg.k = np.asarray(k, dtype=np.float64).reshape(9)
    return msg


def random_image(seed: int, height: int = 64, width: int = 128) -> np.ndarray:
    """A smooth-ish random BGR image (blocks), so the tiny model sees structure."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(-(-height // 16), -(-width // 16), 3), dtype=np.uint8)
    big = np.kron(small, np.ones((16, 16, 1), np.uint8))[:height, :width]
    noise = rng.integers(0, 24, size=big.shape, dtype=np.uint8)
    return np.ascontiguousarray(np.clip(big.astype(np.int16) + noise, 0, 255).astype(np.uint8))


def installed_executable() -> Path:
    """The node's installed executable (``make setup`` installs it; its absence is a failure)."""
    exe = Path(sys.prefix) / "bin" / "panoptic_depthlab_node"
    assert exe.is_file(), f"{exe} is not installed (run make setup)"
    return exe


def child_env(ros_context) -> dict[str, str]:
    """Environment for a child process on the test's ROS domain."""
    return dict(
        os.environ,
        ROS_DOMAIN_ID=str(ros_context.get_domain_id()),
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        PYTHONUNBUFFERED="1",
    )


def stamp_of(msg) -> tuple[int, int]:
    """Stamp of an output (a MarkerArray's is its markers' one; it always has the DELETEALL)."""
    header = msg.header if hasattr(msg, "header") else msg.markers[0].header
    return (header.stamp.sec, header.stamp.nanosec)


class NodeHarness:
    """The real ``panoptic_depthlab`` node and a probe node on ``context``.

    The probe publishes ``image`` / ``image/compressed`` / ``camera_info``
    (reliable, so a test controls exactly what reaches the node) and records
    every message on the requested outputs and ``/diagnostics``.  With ``cameras``
    the node serves those cameras: the probe publishes ``C/image`` and
    ``C/camera_info`` (``camera_pubs[C]``) and records ``C/<output>``.
    """

    def __init__(
        self,
        context,
        checkpoint: Path | str,
        *,
        params: dict[str, Any] | None = None,
        outputs: tuple[str, ...] = OUTPUT_NAMES,
        cli_args: list[str] | None = None,
        cameras: tuple[str, ...] = (),
    ) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.parameter import Parameter
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image

        from panoptic_depthlab_ros.ros.node import PanopticDepthLabNode

        values = {"checkpoint": str(checkpoint), "device": "cpu", **(params or {})}
        if cameras:
            values["cameras"] = list(cameras)
        self.node = PanopticDepthLabNode(
            context=context,
            cli_args=cli_args,
            parameter_overrides=[Parameter(k, value=v) for k, v in values.items()],
        )
        self.probe = Node("probe", context=context)
        self._lock = threading.Lock()
        topics = [f"{c}/{name}" for c in cameras for name in outputs] if cameras else list(outputs)
        self.received: dict[str, list] = {topic: [] for topic in (*topics, "diagnostics")}
        keep = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        for topic in topics:
            self.probe.create_subscription(
                output_type(topic.rsplit("/", 1)[-1]), f"/panoptic_depthlab/{topic}", self._recorder(topic), keep
            )
        self.probe.create_subscription(DiagnosticArray, "/diagnostics", self._recorder("diagnostics"), keep)
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.image_pub = self.probe.create_publisher(Image, "image", qos)
        self.compressed_pub = self.probe.create_publisher(CompressedImage, "image/compressed", qos)
        self.info_pub = self.probe.create_publisher(CameraInfo, "camera_info", qos)
        self.camera_pubs = {
            c: (
                self.probe.create_publisher(Image, f"{c}/image", qos),
                self.probe.create_publisher(CameraInfo, f"{c}/camera_info", qos),
            )
            for c in cameras
        }
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.probe)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            self.executor.spin()
        except ExternalShutdownException:
            pass

    def _recorder(self, name: str) -> Callable[[Any], None]:
        def record(msg) -> None:
            with self._lock:
                self.received[name].append(msg)

        return record

    def messages(self, name: str) -> list:
        with self._lock:
            return list(self.received[name])

    def counts(self) -> dict[str, int]:
        return self.node.stats.snapshot().counts

    def wait_for(self, condition: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.01)
        assert condition(), f"timed out after {timeout} s waiting for {what or condition}"

    def wait_connected(self, *, compressed: bool = False, timeout: float = 15.0) -> None:
        """Until the probe's input publisher and every output see each other."""
        pub = self.compressed_pub if compressed else self.image_pub
        outputs = self.node.pipeline.outputs.publishers
        names = [n for n in self.received if n != "diagnostics" and n in outputs]
        self.wait_for(
            lambda: (
                pub.get_subscription_count() >= 1
                and self.info_pub.get_subscription_count() >= 1
                and all(outputs[n].get_subscription_count() >= 1 for n in names)
            ),
            timeout,
            "discovery",
        )

    def answered(self, stamp: tuple[int, int], names: tuple[str, ...] | None = None) -> bool:
        names = names or tuple(n for n in self.received if n != "diagnostics")
        return all(any(stamp_of(m) == stamp for m in self.messages(n)) for n in names)

    def answer(self, name: str, stamp: tuple[int, int]):
        matches = [m for m in self.messages(name) if stamp_of(m) == stamp]
        assert len(matches) == 1, f"{len(matches)} {name} messages with stamp {stamp}"
        return matches[0]

    def lifecycle(self) -> LifecycleClient:
        """A client of the node's lifecycle services, on the probe."""
        return LifecycleClient(self, "/panoptic_depthlab")

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=5.0)
        self._thread.join(timeout=10.0)
        self.node.destroy_node()
        self.probe.destroy_node()


class LifecycleClient:
    """The real ``lifecycle_msgs`` ChangeState / GetState services of a node, called
    from the harness's probe (its executor thread answers them)."""

    def __init__(self, harness: NodeHarness, node: str) -> None:
        from lifecycle_msgs.srv import ChangeState, GetState

        self._harness = harness
        self._change = harness.probe.create_client(ChangeState, f"{node}/change_state")
        self._get = harness.probe.create_client(GetState, f"{node}/get_state")
        for client in (self._change, self._get):
            assert client.wait_for_service(timeout_sec=15.0), client.srv_name

    def _call(self, client, request, timeout: float):
        future = client.call_async(request)
        self._harness.wait_for(future.done, timeout, f"{client.srv_name} to answer")
        return future.result()

    def state(self) -> str:
        from lifecycle_msgs.srv import GetState

        return self._call(self._get, GetState.Request(), 15.0).current_state.label

    def change_async(self, transition: str):
        """Request ``transition`` (configure, activate, deactivate, cleanup, shutdown)."""
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        ids = {
            "configure": Transition.TRANSITION_CONFIGURE,
            "activate": Transition.TRANSITION_ACTIVATE,
            "deactivate": Transition.TRANSITION_DEACTIVATE,
            "cleanup": Transition.TRANSITION_CLEANUP,
        }
        if transition == "shutdown":
            shutdown = {
                "unconfigured": Transition.TRANSITION_UNCONFIGURED_SHUTDOWN,
                "inactive": Transition.TRANSITION_INACTIVE_SHUTDOWN,
                "active": Transition.TRANSITION_ACTIVE_SHUTDOWN,
            }
            ids["shutdown"] = shutdown[self.state()]
        request = ChangeState.Request()
        request.transition.id = ids[transition]
        return self._change.call_async(request)

    def change(self, transition: str, timeout: float = 60.0) -> bool:
        """Request ``transition`` and wait for the answer; True when it succeeded."""
        future = self.change_async(transition)
        self._harness.wait_for(future.done, timeout, f"the {transition} transition")
        return future.result().success
