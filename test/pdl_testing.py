"""Helpers shared by the core's tests (importable: pytest's conftest is not, with two test trees)."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Outputs of the real Detectron2 Panoptic-DeepLab (how they were made: fixtures/detectron2/README.md).
FIXTURES = REPO / "test" / "fixtures" / "detectron2"
# SegmentDepth fields that a message carries exactly (the float ones are compared apart).
SEGMENT_EXACT_FIELDS = (
    "id",
    "category_id",
    "label",
    "is_thing",
    "area",
    "x_min",
    "y_min",
    "x_max",
    "y_max",
    "depth_valid_pixels",
)

_domain_counter = itertools.count()


def stride2_instance_branch():
    """A tiny instance branch whose decoder also fuses the stem (stride-2 output), as the demo model's."""
    from panoptic_depthlab_ros.model import BranchConfig  # noqa: PLC0415 - keep this module light

    return BranchConfig(
        project_channels=(4, 8, 16), aspp_channels=32, convs_dim=16, head_channels=8, low_level=("stem", "res2", "res3")
    )


def next_domain_id() -> int:
    """A ROS domain id (1..100) unlikely to be used by another test or run."""
    return 1 + (os.getpid() * 7 + next(_domain_counter)) % 100


def spin_until(executor, condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Spin ``executor`` until ``condition()`` holds or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        executor.spin_once(timeout_sec=0.02)
    return condition()


def write_image_bag(path: Path, frames: list, topic: str = "/cam/image") -> Path:
    """An MCAP bag with one bgr8 ``sensor_msgs/Image`` per frame ([H, W, 3] uint8), a second apart."""
    from rosbags.rosbag2 import StoragePlugin, Writer  # noqa: PLC0415 - keep this module light
    from rosbags.typesys import Stores, get_typestore  # noqa: PLC0415

    ts = get_typestore(Stores.ROS2_JAZZY)
    t = ts.types
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = writer.add_connection(topic, "sensor_msgs/msg/Image", typestore=ts)
        for i, frame in enumerate(frames):
            h, w = frame.shape[:2]
            stamp = t["builtin_interfaces/msg/Time"](sec=10 + i, nanosec=0)
            msg = t["sensor_msgs/msg/Image"](
                header=t["std_msgs/msg/Header"](stamp=stamp, frame_id="cam"),
                height=h,
                width=w,
                encoding="bgr8",
                is_bigendian=0,
                step=3 * w,
                data=frame.ravel(),
            )
            writer.write(conn, (10 + i) * 10**9, ts.serialize_cdr(msg, msg.__msgtype__))
    return path


def rosbags_camera_info(ts, header, k, *, height: int = 64, width: int = 128):
    """A rosbags ``sensor_msgs/CameraInfo`` of typestore ``ts`` with intrinsics ``k`` (9 values), no distortion."""
    import numpy as np  # noqa: PLC0415 - keep this module light

    t = ts.types
    return t["sensor_msgs/msg/CameraInfo"](
        header=header,
        height=height,
        width=width,
        distortion_model="plumb_bob",
        d=np.zeros(5),
        k=np.asarray(k, dtype=np.float64).reshape(9),
        r=np.eye(3).ravel(),
        p=np.zeros(12),
        binning_x=0,
        binning_y=0,
        roi=t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
    )


def rosbags_odometry(ts, stamp_ns: int, linear=(0.0, 0.0, 0.0), angular=(0.0, 0.0, 0.0)):
    """A rosbags ``nav_msgs/Odometry`` of ``ts`` stamped ``stamp_ns``, twist ``linear`` / ``angular`` (body frame)."""
    import numpy as np  # noqa: PLC0415 - keep this module light

    t = ts.types
    vector = t["geometry_msgs/msg/Vector3"]
    stamp = t["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
    return t["nav_msgs/msg/Odometry"](
        header=t["std_msgs/msg/Header"](stamp=stamp, frame_id="odom"),
        child_frame_id="base_link",
        pose=t["geometry_msgs/msg/PoseWithCovariance"](
            pose=t["geometry_msgs/msg/Pose"](
                position=t["geometry_msgs/msg/Point"](x=0.0, y=0.0, z=0.0),
                orientation=t["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0),
            ),
            covariance=np.zeros(36),
        ),
        twist=t["geometry_msgs/msg/TwistWithCovariance"](
            twist=t["geometry_msgs/msg/Twist"](linear=vector(*linear), angular=vector(*angular)),
            covariance=np.zeros(36),
        ),
    )


def imports_without_ros(*modules: str) -> str:
    """Import ``modules`` in a fresh interpreter where rclpy and the ROS message packages cannot load.

    Returns what went wrong ("" when every import worked).
    """
    import subprocess  # noqa: PLC0415 - keep this module light
    import sys  # noqa: PLC0415

    blocked = ("rclpy", "rcl_interfaces", "sensor_msgs", "std_msgs", "geometry_msgs", "visualization_msgs", "nav_msgs")
    code = f"import sys\nfor m in {blocked!r}:\n    sys.modules[m] = None\n" + "".join(f"import {m}\n" for m in modules)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    return "" if out.returncode == 0 else out.stderr


def write_tiny_checkpoint(path: Path) -> Path:
    """Write a tiny random-weight model in our checkpoint format to ``path`` (returned).

    Any input size works (padding to 32 and a non-strict ASPP pool). The predictors are
    scaled so that the random model gives several classes and centers, logits within +-10,
    offsets of a few pixels and depths of ~5-12 m (no saturated sigmoid).
    """
    import torch  # noqa: PLC0415 - keep this module light

    from panoptic_depthlab_ros.checkpoint import save_checkpoint  # noqa: PLC0415
    from panoptic_depthlab_ros.fusion import PostprocessConfig  # noqa: PLC0415
    from panoptic_depthlab_ros.metadata import cityscapes_metadata  # noqa: PLC0415
    from panoptic_depthlab_ros.model import ModelConfig, build_model  # noqa: PLC0415

    torch.manual_seed(0)
    config = ModelConfig.tiny(aspp_strict_pool_size=False, size_divisibility=32)
    model = build_model(config).eval()
    with torch.no_grad():
        model.sem_seg_head.predictor.weight.normal_(0, 0.005)
        model.ins_embed_head.center_predictor.weight.normal_(0, 0.002)
        model.ins_embed_head.center_predictor.bias.fill_(0.05)
        model.ins_embed_head.offset_predictor.weight.normal_(0, 0.003)
        model.depth_head.predictor.weight.normal_(0, 0.0003)
    save_checkpoint(
        path,
        model,
        model_config=config,
        classes=cityscapes_metadata(),
        postprocess=PostprocessConfig(stuff_area=64),
        info={"purpose": "tests"},
    )
    return path


def _center_set(pred, raw: dict) -> set[tuple[int, int]]:
    from panoptic_depthlab_ros.fusion import find_instance_centers  # noqa: PLC0415 - keep this module light

    post = pred.postprocess
    centers = find_instance_centers(
        raw["center"], threshold=post.center_threshold, nms_kernel=post.nms_kernel, top_k=post.top_k
    )
    return {(int(y), int(x)) for y, x in centers.tolist()}


def assert_result_parity(pa, pb, img, tie_mask=None) -> None:
    """Same panoptic ids and segment depths, except where the inputs to a decision tie exactly.

    Ties: a center on a heatmap plateau (bilinear upsampling makes equal border values;
    float noise in the other backend breaks the tie) or at the threshold, and pixels whose
    top-2 semantic logits are within 1e-3.
    """
    import pytest  # noqa: PLC0415
    import torch  # noqa: PLC0415

    raw_a, raw_b = pa.raw(img), pb.raw(img)
    ca, cb = _center_set(pa, raw_a), _center_set(pb, raw_b)
    heat = raw_a["center"][0]
    pooled = torch.nn.functional.max_pool2d(
        heat[None, None], pa.postprocess.nms_kernel, 1, pa.postprocess.nms_kernel // 2
    )[0, 0]
    for y, x in ca ^ cb:
        plateau = abs(float(pooled[y, x] - heat[y, x])) < 1e-4
        at_threshold = abs(float(heat[y, x]) - pa.postprocess.center_threshold) < 1e-4
        assert plateau or at_threshold, f"center ({y}, {x}) differs without a tie"
    a, b = pa.predict(img), pb.predict(img)
    if ca != cb:
        return  # a tied center renumbers instances legitimately; nothing more to compare
    top2 = raw_a["sem_seg"].topk(2, 0).values
    differ = (a.panoptic != b.panoptic) & ((top2[0] - top2[1]).numpy() >= 1e-3)
    if tie_mask is not None:
        differ &= ~tie_mask
    assert not differ.any()
    assert [s.id for s in a.segments] == [s.id for s in b.segments]
    for sa, sb in zip(a.segments, b.segments, strict=True):
        assert sa.depth_mean == pytest.approx(sb.depth_mean, abs=1e-3)
        assert sa.depth_median == pytest.approx(sb.depth_median, abs=1e-3)
