"""A short ROS 2 bag of a synthetic drive: the demo input (no ROS install needed).

``panoptic-depthlab-training demo-bag OUT [--frames 30] [--fps 10] [--seed 7]``
writes ``sensor_msgs/Image`` (rgb8) on ``/camera/image_raw`` and the matching
``sensor_msgs/CameraInfo`` on ``/camera/camera_info`` (same stamp and
``camera_optical_frame``) of one synthetic drive (:mod:`.synth.drive`: the camera
driving forward among crossing, oncoming and overtaking things), as an MCAP bag with
zstd chunks (what ``ros2 bag play`` reads).  The bag is written aside and moved into
place when complete (``panoptic_depthlab_ros.output``); ``--overwrite`` replaces only a
bag this command wrote (its ``metadata.yaml`` says so).

The vehicle's odometry goes on ``/odom`` (``nav_msgs/Odometry`` at 50 Hz from the first
image's stamp to the last's; ``header.frame_id`` ``odom``, ``child_frame_id`` ``base_link``):
the pose integrates the drive along ``base_link``'s x from the origin, the twist is the
drive's speed along x and nothing else (the camera drives straight, ``--speed`` m/s).  The
camera sits ``scene.mount_height`` m above ``base_link``'s origin, looking along its x and
pitched down by ``scene.pitch`` (:func:`.synth.render.camera_pose`), so the camera optical
frame's pose in ``base_link`` (the node's ``camera_mount_xyz`` and ``camera_mount_rpy``) is
xyz ``(0, 0, mount_height)``, rpy ``(-pi/2 - pitch, 0, -pi/2)``.  The bag's
``metadata.yaml`` records it in ``custom_data`` as those parameters' values, beside the
seed, frames, fps, size and speed it was made with::

    panoptic_depthlab.odometry_topic: /odom
    panoptic_depthlab.camera_mount_xyz: '[0.0, 0.0, 1.272094483276242]'
    panoptic_depthlab.camera_mount_rpy: '[-1.5883878391926254, 0.0, -1.5707963267948966]'
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.rosbag2.enums import CompressionFormat, CompressionMode
from rosbags.typesys import Stores, get_typestore
from rosbags.typesys.store import Typestore
from tqdm import tqdm

from panoptic_depthlab_ros.bag import bag_marker_says, mark_bag
from panoptic_depthlab_ros.odometry import ODOMETRY_TYPE
from panoptic_depthlab_ros.output import StagedOutput

from .synth import SceneGenerator
from .synth.drive import Drive, make_drive, render_drive
from .synth.sequences import frame_stamp_ns

IMAGE_TOPIC = "/camera/image_raw"
CAMERA_INFO_TOPIC = "/camera/camera_info"
ODOMETRY_TOPIC = "/odom"
FRAME_ID = "camera_optical_frame"
ODOM_FRAME_ID, BASE_FRAME_ID = "odom", "base_link"
ODOMETRY_HZ = 50
WRITTEN_BY = "panoptic-depthlab-training demo-bag"
Triple = tuple[float, float, float]


def camera_mount(drive: Drive) -> tuple[Triple, Triple]:
    """The camera optical frame's pose in ``base_link``: xyz (m) and fixed-axis rpy (rad).

    ``base_link`` is on the ground under the camera (x forward, z up); the camera looks
    along x, pitched down by the scene's pitch (:func:`.synth.render.camera_pose`).
    """
    return (0.0, 0.0, float(drive.scene.mount_height)), (-math.pi / 2 - float(drive.scene.pitch), 0.0, -math.pi / 2)


def odometry_stamps_ns(frames: int, fps: float) -> list[int]:
    """The odometry's stamps: every 1 / :data:`ODOMETRY_HZ` s from the first frame's stamp to the last's."""
    first, last = frame_stamp_ns(0, fps), frame_stamp_ns(frames - 1, fps)
    step = 1_000_000_000 // ODOMETRY_HZ
    return list(range(first, last + 1, step))


def _triple_text(values: Triple) -> str:
    """``[a, b, c]``: YAML, and a ROS parameter value (``-p camera_mount_xyz:=[a, b, c]``)."""
    return "[" + ", ".join(repr(float(v)) for v in values) + "]"


def write_demo_bag(
    out: str | Path,
    *,
    frames: int = 30,
    fps: float = 10.0,
    seed: int = 7,
    height: int = 192,
    width: int = 384,
    speed_mps: float = 8.0,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Render ``frames`` frames of one synthetic drive and write them as a bag directory ``out``."""
    out = Path(out)
    staged = StagedOutput.at(
        out,
        what=WRITTEN_BY,
        overwrite=overwrite,
        why_not_ours=lambda path: bag_marker_says(path, WRITTEN_BY),
    )
    with staged as staging:
        _write(staging / out.name, frames, fps, seed, height, width, speed_mps, progress)
    return out


def _write(
    out: Path, frames: int, fps: float, seed: int, height: int, width: int, speed_mps: float, progress: bool
) -> None:
    ts = get_typestore(Stores.ROS2_JAZZY)
    image_t, info_t = ts.types["sensor_msgs/msg/Image"], ts.types["sensor_msgs/msg/CameraInfo"]
    roi_t = ts.types["sensor_msgs/msg/RegionOfInterest"]

    gen = SceneGenerator(height, width, seed=seed)
    drive = make_drive(np.random.default_rng(seed), frames=frames, fps=fps, ego_speed_mps=speed_mps)
    k = np.asarray(gen.K, dtype=np.float64)
    p = np.array([[k[0, 0], 0, k[0, 2], 0], [0, k[1, 1], k[1, 2], 0], [0, 0, 1, 0]], dtype=np.float64)
    mount_xyz, mount_rpy = camera_mount(drive)
    odometry = _odometry_messages(ts, odometry_stamps_ns(frames, fps), drive.ego_speed_mps)

    writer = Writer(out, version=9, storage_plugin=StoragePlugin.MCAP)
    writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
    mark_bag(
        writer,
        WRITTEN_BY,
        seed=seed,
        frames=frames,
        fps=fps,
        size=f"{width}x{height}",
        speed_mps=drive.ego_speed_mps,
        odometry_topic=ODOMETRY_TOPIC,
        camera_mount_xyz=_triple_text(mount_xyz),
        camera_mount_rpy=_triple_text(mount_rpy),
    )
    with writer:
        img_conn = writer.add_connection(IMAGE_TOPIC, image_t.__msgtype__, typestore=ts)
        info_conn = writer.add_connection(CAMERA_INFO_TOPIC, info_t.__msgtype__, typestore=ts)
        odom_conn = writer.add_connection(ODOMETRY_TOPIC, ODOMETRY_TYPE, typestore=ts)
        drive_frames = render_drive(gen, drive)
        for i, drive_frame in enumerate(tqdm(drive_frames, total=frames, desc="demo bag", disable=not progress)):
            frame = drive_frame.frame
            t_ns = frame_stamp_ns(i, fps)
            while odometry and odometry[0][0] <= t_ns:  # the odometry up to this frame, before its image
                stamp, raw = odometry.pop(0)
                writer.write(odom_conn, stamp, raw)
            header = _header(ts, t_ns, FRAME_ID)
            img = np.ascontiguousarray(frame.image_rgb)
            msg = image_t(
                header=header,
                height=height,
                width=width,
                encoding="rgb8",
                is_bigendian=0,
                step=width * 3,
                data=img.reshape(-1),
            )
            info = info_t(
                header=header,
                height=height,
                width=width,
                distortion_model="plumb_bob",
                d=np.zeros(5),
                k=k.reshape(-1),
                r=np.eye(3).reshape(-1),
                p=p.reshape(-1),
                binning_x=0,
                binning_y=0,
                roi=roi_t(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
            )
            writer.write(info_conn, t_ns, ts.serialize_cdr(info, info_t.__msgtype__))
            writer.write(img_conn, t_ns, ts.serialize_cdr(msg, image_t.__msgtype__))


def _header(ts: Typestore, stamp_ns: int, frame_id: str) -> Any:
    """A ``std_msgs/Header`` of the bag's typestore stamped ``stamp_ns``."""
    time_t = ts.types["builtin_interfaces/msg/Time"]
    stamp = time_t(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)
    return ts.types["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)


def _odometry_messages(ts: Typestore, stamps_ns: list[int], speed_mps: float) -> list[tuple[int, bytes]]:
    """``(stamp, CDR)`` of each odometry message: driving along ``base_link``'s x at ``speed_mps`` from the origin."""
    t = ts.types
    odom_t = t[ODOMETRY_TYPE]
    pose_cov_t, pose_t = t["geometry_msgs/msg/PoseWithCovariance"], t["geometry_msgs/msg/Pose"]
    point_t, quat_t = t["geometry_msgs/msg/Point"], t["geometry_msgs/msg/Quaternion"]
    twist_cov_t, twist_t, vector_t = (
        t["geometry_msgs/msg/TwistWithCovariance"],
        t["geometry_msgs/msg/Twist"],
        t["geometry_msgs/msg/Vector3"],
    )
    out = []
    for stamp in stamps_ns:
        x = speed_mps * (stamp - stamps_ns[0]) / 1e9
        msg = odom_t(
            header=_header(ts, stamp, ODOM_FRAME_ID),
            child_frame_id=BASE_FRAME_ID,
            pose=pose_cov_t(
                pose=pose_t(position=point_t(x=x, y=0.0, z=0.0), orientation=quat_t(x=0.0, y=0.0, z=0.0, w=1.0)),
                covariance=np.zeros(36),
            ),
            twist=twist_cov_t(
                twist=twist_t(linear=vector_t(x=float(speed_mps), y=0.0, z=0.0), angular=vector_t(x=0.0, y=0.0, z=0.0)),
                covariance=np.zeros(36),
            ),
        )
        out.append((stamp, bytes(ts.serialize_cdr(msg, odom_t.__msgtype__))))
    return out
