"""Geometric augmentations that keep image, labels and metric depth aligned.

They act on any dataclass with the fields ``image`` [H, W, 3] uint8 RGB, ``semantic``
[H, W] uint8 (255 ignore), ``panoptic`` [H, W] int32 (-1 void), ``depth`` [H, W] float32
metres (0 invalid) and ``depth_valid`` [H, W] bool (e.g.
:class:`~.cityscapes.CityscapesSample`), returning a copy via ``dataclasses.replace``.
Apply them BEFORE target generation: centers and offsets are then computed on the final
geometry, so nothing (e.g. the sign of x offsets under a flip) has to be patched. Other
fields (``segments``, ``camera``) are left as they are: segment ids stay valid, a
segment's ``area`` keeps the unaugmented value (the target generator recounts pixels),
and segments cropped away simply have no pixels.

Resampling: the image bilinearly; semantic, panoptic, depth and its mask with
nearest-neighbour on the same pixel-centre-aligned grid (``cv2.INTER_NEAREST_EXACT``), so
a depth value is always one measured value of the pixel it came from, never a blend
across an object boundary, and each pixel's label, depth and validity stay together.

Depth under scale augmentation (README paragraph)
    Zooming an image by ``s`` while the network assumes one fixed camera is the same as
    keeping the image and multiplying the focal length by ``s``: a point at depth ``Z``
    then projects exactly like a point at depth ``Z / s`` seen by the original camera
    (``u = s f X / Z = f X / (Z / s)``, and the road below a camera of the same height
    appears at the rows the original camera would see it at ``Z / s``). The network
    never sees intrinsics, so the only consistent target is ``depth / s``: apparent size,
    ground contact row and depth keep the relation the model must learn. Keeping the
    metric depth while zooming would teach it that a car twice as large on screen is as
    far away, which is false for the test camera. (The random crop moves the principal
    point, so the horizon row varies between crops; that is inherent to crop training.)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol, TypeVar

import cv2
import numpy as np

IGNORE_LABEL = 255
PANOPTIC_VOID = -1
IMAGE_PAD_RGB = (124, 116, 104)  # ImageNet mean: 0 after the model's normalisation


class DenseSample(Protocol):
    """The fields the transforms read and replace (all [H, W, ...] pixel-aligned)."""

    image: np.ndarray
    semantic: np.ndarray
    panoptic: np.ndarray
    depth: np.ndarray
    depth_valid: np.ndarray


S = TypeVar("S", bound=DenseSample)


def _replace(sample: S, **arrays: np.ndarray) -> S:
    return dataclasses.replace(sample, **arrays)  # type: ignore[type-var]


def _nearest(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    height, width = size
    return cv2.resize(array, (width, height), interpolation=cv2.INTER_NEAREST_EXACT)


def rescale(sample: S, scale: float) -> S:
    """Resize by ``scale`` (rounded size); depth is divided by the actual width ratio.

    See the module docstring for why depth scales by ``1 / scale``.
    """
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    height, width = sample.image.shape[:2]
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    factor = new_w / width
    image = cv2.resize(sample.image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    valid = _nearest(sample.depth_valid.astype(np.uint8), (new_h, new_w)).astype(bool)
    depth = np.where(valid, _nearest(sample.depth, (new_h, new_w)) / np.float32(factor), 0.0)
    return _replace(
        sample,
        image=image,
        semantic=_nearest(sample.semantic, (new_h, new_w)),
        panoptic=_nearest(sample.panoptic, (new_h, new_w)),
        depth=depth.astype(np.float32),
        depth_valid=valid,
    )


def crop(
    sample: S, top: int, left: int, height: int, width: int, *, image_pad: tuple[int, int, int] = IMAGE_PAD_RGB
) -> S:
    """Cut the window rows ``top:top+height``, cols ``left:left+width`` (may extend outside).

    Outside the image: image ``image_pad``, semantic 255, panoptic -1, depth 0 invalid.
    """
    src_h, src_w = sample.image.shape[:2]
    ys, ye = max(top, 0), min(top + height, src_h)
    xs, xe = max(left, 0), min(left + width, src_w)
    dy, dx = ys - top, xs - left

    def window(array: np.ndarray, fill: Any) -> np.ndarray:
        out = np.empty((height, width) + array.shape[2:], array.dtype)
        out[...] = fill
        if ye > ys and xe > xs:
            out[dy : dy + ye - ys, dx : dx + xe - xs] = array[ys:ye, xs:xe]
        return out

    return _replace(
        sample,
        image=window(sample.image, np.asarray(image_pad, np.uint8)),
        semantic=window(sample.semantic, IGNORE_LABEL),
        panoptic=window(sample.panoptic, PANOPTIC_VOID),
        depth=window(sample.depth, 0.0),
        depth_valid=window(sample.depth_valid, False),
    )


def hflip(sample: S) -> S:
    """Mirror left-right (depth is unchanged by a mirror about the principal point)."""
    return _replace(
        sample,
        image=np.ascontiguousarray(sample.image[:, ::-1]),
        semantic=np.ascontiguousarray(sample.semantic[:, ::-1]),
        panoptic=np.ascontiguousarray(sample.panoptic[:, ::-1]),
        depth=np.ascontiguousarray(sample.depth[:, ::-1]),
        depth_valid=np.ascontiguousarray(sample.depth_valid[:, ::-1]),
    )


@dataclasses.dataclass(frozen=True)
class TrainAugmentation:
    """Random scale, random crop (with ignore padding) and horizontal flip.

    Args:
        crop_size: (height, width) of the output.
        scale_range: ``scale ~ U(lo, hi)``.
        flip_prob: probability of a horizontal flip.
        image_pad: RGB fill of the image outside the scaled frame.

    ``__call__(sample, rng)`` draws everything from ``rng``: the same generator state
    gives the same output.

    """

    crop_size: tuple[int, int]
    scale_range: tuple[float, float] = (0.5, 2.0)
    flip_prob: float = 0.5
    image_pad: tuple[int, int, int] = IMAGE_PAD_RGB

    def __post_init__(self) -> None:
        lo, hi = self.scale_range
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range must satisfy 0 < lo <= hi, got {self.scale_range}")
        if min(self.crop_size) < 1:
            raise ValueError(f"crop_size must be positive, got {self.crop_size}")

    def __call__(self, sample: S, rng: np.random.Generator) -> S:
        """Augment ``sample`` with draws from ``rng`` (scale, flip, crop position)."""
        scale = float(rng.uniform(*self.scale_range))
        flip = bool(rng.random() < self.flip_prob)
        sample = rescale(sample, scale)
        height, width = sample.image.shape[:2]
        ch, cw = self.crop_size
        # crop inside a larger image, or place a smaller image randomly inside the crop
        top = int(rng.integers(min(0, height - ch), max(0, height - ch) + 1))
        left = int(rng.integers(min(0, width - cw), max(0, width - cw) + 1))
        sample = crop(sample, top, left, ch, cw, image_pad=self.image_pad)
        return hflip(sample) if flip else sample
