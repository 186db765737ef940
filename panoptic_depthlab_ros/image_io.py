"""Decoding the images a user gives us, with a pixel limit checked before decoding.

A compressed image is small and can declare any size: a PNG of a few hundred KB can
declare 12000 x 12000 pixels (432 MB decoded), and OpenCV refuses headers over 2^30
pixels with an exception.  So the header is read first (Pillow reads it without
decoding the pixels) and an image over ``max_pixels`` is refused as bad input, named
with its size and the limit; nothing is allocated for it.  ``max_pixels`` 0 means no
limit of our own (OpenCV's 2^30 still holds and is reported the same way).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import InputError

# 4096 x 4096: a 16-megapixel camera frame passes; the node's max_input_pixels default too.
DEFAULT_MAX_PIXELS = 4096 * 4096
MAX_PIXELS_HELP = (
    f"refuse (skip and report) images with more pixels than this, read from the header before decoding "
    f"(default {DEFAULT_MAX_PIXELS} = 4096x4096; 0: no limit)"
)


def check_image(image: np.ndarray) -> None:
    """Raise :class:`InputError` unless ``image`` is a non-empty [H, W, 3] uint8 array."""
    if not isinstance(image, np.ndarray):
        raise InputError(f"image must be a numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"image must be [H, W, 3] (BGR), got shape {tuple(image.shape)}")
    if image.dtype != np.uint8:
        raise InputError(f"image must be uint8, got {image.dtype}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InputError(f"image is empty: shape {tuple(image.shape)}")


def check_pixels(width: int, height: int, max_pixels: int, what: str, limit_name: str = "max_pixels") -> None:
    """Raise :class:`InputError` (kind ``too_large``) when ``width * height`` exceeds ``max_pixels`` (> 0).

    ``limit_name`` is what the user sets the limit with (a flag or parameter name).
    """
    if max_pixels > 0 and width * height > max_pixels:
        raise InputError(
            f"{what}: image {width}x{height} has {width * height} pixels, above the limit {limit_name}={max_pixels}",
            kind="too_large",
        )


def declared_size(source: Path | bytes, what: str) -> tuple[int, int]:
    """(width, height) an image file or buffer declares in its header; nothing is decoded."""
    stream = source.open("rb") if isinstance(source, Path) else io.BytesIO(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # we apply our own limit
            with Image.open(stream) as im:
                return int(im.size[0]), int(im.size[1])
    except Image.DecompressionBombError as exc:  # over 2 x Pillow's own limit: far over any of ours
        raise InputError(f"{what}: declares an image of absurd size ({exc})", kind="too_large") from exc
    except UnidentifiedImageError:
        raise InputError(f"{what}: unreadable image (cannot decode it: not a format we read)", kind="decode") from None
    except Exception as exc:  # noqa: BLE001 - Pillow's plugins raise their own types for bad headers
        raise InputError(f"{what}: unreadable image (cannot decode its header: {exc})", kind="decode") from exc
    finally:
        stream.close()


def _decoded(image: np.ndarray | None, what: str, max_pixels: int, limit_name: str) -> np.ndarray:
    if image is None or image.size == 0:
        raise InputError(f"{what}: unreadable image (cannot decode it)", kind="decode")
    check_pixels(image.shape[1], image.shape[0], max_pixels, what, limit_name)
    return image


def read_image(
    path: str | Path,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    flags: int = cv2.IMREAD_COLOR,
    limit_name: str = "--max-pixels",
) -> np.ndarray:
    """Decode an image file with OpenCV (``flags``) after checking its header against ``max_pixels``.

    Raises :class:`InputError` naming the file: missing, unreadable or too large.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file", kind="missing")
    if max_pixels > 0:
        check_pixels(*declared_size(path, str(path)), max_pixels, str(path), limit_name)
    try:
        return _decoded(cv2.imread(str(path), flags), str(path), max_pixels, limit_name)
    except cv2.error as exc:
        raise InputError(f"{path}: unreadable image (cannot decode it: {exc.err})", kind="decode") from exc


def decode_image(
    data: bytes | np.ndarray,
    *,
    what: str,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    flags: int = cv2.IMREAD_COLOR,
    limit_name: str = "--max-pixels",
) -> np.ndarray:
    """Decode an encoded image held in memory (a ``CompressedImage``'s data), as :func:`read_image`."""
    buffer = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.view(np.uint8).ravel()
    if buffer.size == 0:
        raise InputError(f"{what}: no data", kind="empty")
    if max_pixels > 0:
        check_pixels(*declared_size(buffer.tobytes(), what), max_pixels, what, limit_name)
    try:
        return _decoded(cv2.imdecode(buffer, flags), what, max_pixels, limit_name)
    except cv2.error as exc:
        raise InputError(f"{what}: unreadable image (cannot decode it: {exc.err})", kind="decode") from exc
