"""What kind of input a path is: image files, videos and ROS 2 bags, told apart by name.

``infer``, ``bag`` and the INT8 export's calibration all take such paths; the suffixes
live here once so that the three agree on what an image, a video or a bag is.
"""

from __future__ import annotations

from pathlib import Path

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"})
BAG_FILE_SUFFIXES = (".mcap", ".db3")  # rosbag2's MCAP and sqlite3 storage files


def looks_like_bag(path: Path) -> bool:
    """A bag folder (``metadata.yaml`` or storage files in it) or a bare ``.mcap`` / ``.db3`` file."""
    if path.is_dir():
        return (path / "metadata.yaml").is_file() or any(p.suffix in BAG_FILE_SUFFIXES for p in path.iterdir())
    return path.suffix in BAG_FILE_SUFFIXES
