"""A short ROS 2 bag of a synthetic drive: the demo input (no ROS install needed).

``panoptic-depthlab-training demo-bag OUT [--frames 30] [--fps 10] [--seed 7]``
writes ``sensor_msgs/Image`` (rgb8) on ``/camera/image_raw`` and the matching
``sensor_msgs/CameraInfo`` on ``/camera/camera_info`` (same stamp and
``camera_optical_frame``) of one synthetic drive (:mod:`.synth.drive`: the camera
driving forward among crossing, oncoming and overtaking things), as an MCAP bag with
zstd chunks (what ``ros2 bag play`` reads).  The bag is written aside and moved into
place when complete (``panoptic_depthlab_ros.output``); ``--overwrite`` replaces only a
bag this command wrote (its ``metadata.yaml`` says so).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.rosbag2.enums import CompressionFormat, CompressionMode
from rosbags.typesys import Stores, get_typestore
from tqdm import tqdm

from panoptic_depthlab_ros.bag import bag_marker_says, mark_bag
from panoptic_depthlab_ros.output import StagedOutput

from .synth import SceneGenerator
from .synth.drive import make_drive, render_drive
from .synth.sequences import frame_stamp_ns

IMAGE_TOPIC = "/camera/image_raw"
CAMERA_INFO_TOPIC = "/camera/camera_info"
FRAME_ID = "camera_optical_frame"
WRITTEN_BY = "panoptic-depthlab-training demo-bag"


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
    header_t, time_t = ts.types["std_msgs/msg/Header"], ts.types["builtin_interfaces/msg/Time"]
    roi_t = ts.types["sensor_msgs/msg/RegionOfInterest"]

    gen = SceneGenerator(height, width, seed=seed)
    drive = make_drive(np.random.default_rng(seed), frames=frames, fps=fps, ego_speed_mps=speed_mps)
    k = np.asarray(gen.K, dtype=np.float64)
    p = np.array([[k[0, 0], 0, k[0, 2], 0], [0, k[1, 1], k[1, 2], 0], [0, 0, 1, 0]], dtype=np.float64)

    writer = Writer(out, version=9, storage_plugin=StoragePlugin.MCAP)
    writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
    mark_bag(writer, WRITTEN_BY, seed=seed, frames=frames, fps=fps, size=f"{width}x{height}")
    with writer:
        img_conn = writer.add_connection(IMAGE_TOPIC, image_t.__msgtype__, typestore=ts)
        info_conn = writer.add_connection(CAMERA_INFO_TOPIC, info_t.__msgtype__, typestore=ts)
        drive_frames = render_drive(gen, drive)
        for i, drive_frame in enumerate(tqdm(drive_frames, total=frames, desc="demo bag", disable=not progress)):
            frame = drive_frame.frame
            t_ns = frame_stamp_ns(i, fps)
            header = header_t(stamp=time_t(sec=t_ns // 1_000_000_000, nanosec=t_ns % 1_000_000_000), frame_id=FRAME_ID)
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
