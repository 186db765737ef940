from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from panoptic_depthlab_training.cityscapes import LABEL_TO_TRAIN_ID, panoptic_from_instance_ids
from panoptic_depthlab_training.synth import SceneGenerator
from panoptic_depthlab_training.targets import PanopticTargetGenerator
from panoptic_depthlab_training.transforms import (
    IMAGE_PAD_RGB,
    TrainAugmentation,
    crop,
    hflip,
    rescale,
)

H, W = 20, 30


@dataclass(frozen=True)
class Dense:
    image: np.ndarray
    semantic: np.ndarray
    panoptic: np.ndarray
    depth: np.ndarray
    depth_valid: np.ndarray


def coordinate_sample() -> Dense:
    """Every pixel says where it came from: panoptic = index, depth = 1 + index.

    The image is a pair of linear ramps (R = 8 x, G = 12 y) so its bilinear resampling
    stays predictable; pixels with x % 7 == 3 have invalid depth.
    """
    yy, xx = np.mgrid[0:H, 0:W]
    index = (yy * W + xx).astype(np.int32)
    valid = xx % 7 != 3
    image = np.stack([8 * xx, 12 * yy, np.full_like(xx, 50)], axis=-1).astype(np.uint8)
    return Dense(
        image=image,
        semantic=(index % 19).astype(np.uint8),
        panoptic=index,
        depth=np.where(valid, 1.0 + index, 0.0).astype(np.float32),
        depth_valid=valid,
    )


def check_alignment(out: Dense, factor: float) -> None:
    """Labels, depth, validity and image of ``out`` all come from the same source pixel."""
    inside = out.panoptic >= 0
    src = out.panoptic[inside]
    np.testing.assert_array_equal(out.semantic[inside], src % 19)
    src_valid = (src % W) % 7 != 3
    np.testing.assert_array_equal(out.depth_valid[inside], src_valid)
    # depth was divided by the scale factor: depth * factor recovers 1 + source index
    v = out.depth_valid
    np.testing.assert_allclose(out.depth[v] * factor, 1.0 + out.panoptic[v], rtol=1e-5)
    assert (out.depth[~v] == 0).all()
    # the bilinear image agrees with the nearest-neighbour source pixel (<= 1/2 px apart)
    xs, ys = src % W, src // W
    red = out.image[..., 0][inside].astype(float)
    green = out.image[..., 1][inside].astype(float)
    assert np.abs(red - 8 * xs).max() <= 8 * 0.5 / min(factor, 1) + 1.5
    assert np.abs(green - 12 * ys).max() <= 12 * 0.5 / min(factor, 1) + 1.5


@pytest.mark.parametrize("scale", [0.5, 0.77, 1.0, 1.6, 2.0])
def test_rescale_keeps_every_pixel_together(scale):
    s = coordinate_sample()
    out = rescale(s, scale)
    assert out.image.shape == (round(H * scale), round(W * scale), 3)
    assert out.panoptic.dtype == np.int32 and out.depth.dtype == np.float32
    check_alignment(out, out.image.shape[1] / W)


def test_crop_pads_with_ignore_values():
    s = coordinate_sample()
    out = crop(s, top=-3, left=5, height=10, width=40)
    assert out.image.shape == (10, 40, 3)
    # source rows 0..6 land at rows 3..9, source cols 5..29 at cols 0..24
    np.testing.assert_array_equal(out.panoptic[3:, :25], s.panoptic[0:7, 5:30])
    np.testing.assert_array_equal(out.depth[3:, :25], s.depth[0:7, 5:30])
    pad = np.ones((10, 40), bool)
    pad[3:, :25] = False
    assert (out.panoptic[pad] == -1).all() and (out.semantic[pad] == 255).all()
    assert (out.depth[pad] == 0).all() and not out.depth_valid[pad].any()
    assert (out.image[pad] == IMAGE_PAD_RGB).all()
    check_alignment(out, 1.0)


def test_hflip_is_a_mirror_and_an_involution():
    s = coordinate_sample()
    f = hflip(s)
    np.testing.assert_array_equal(f.panoptic[:, 0], s.panoptic[:, -1])
    np.testing.assert_array_equal(f.depth[:, 0], s.depth[:, -1])
    ff = hflip(f)
    for key in ("image", "semantic", "panoptic", "depth", "depth_valid"):
        np.testing.assert_array_equal(getattr(ff, key), getattr(s, key))
    check_alignment(f, 1.0)


def synth_dense(seed: int = 4) -> tuple[Dense, list[dict]]:
    gen = SceneGenerator(64, 128)
    frame = gen.render(gen.make_scene(np.random.default_rng(seed)))
    pan, segments = panoptic_from_instance_ids(frame.instance_ids)
    return Dense(
        image=frame.image_rgb,
        semantic=LABEL_TO_TRAIN_ID[frame.label_ids],
        panoptic=pan,
        depth=frame.depth,
        depth_valid=frame.depth_valid,
    ), segments


def test_flip_before_targets_reverses_x_offsets():
    s, segments = synth_dense()
    gen = PanopticTargetGenerator(range(11, 19), sigma=2)
    t, tf = gen(s.panoptic, segments), gen(hflip(s).panoptic, segments)
    # mirrored center cx' = W-1-cx and pixel x' = W-1-x: cx' - x' = -(cx - x)
    np.testing.assert_allclose(tf["offset"][1], -t["offset"][1][:, ::-1], atol=1e-4)
    np.testing.assert_allclose(tf["offset"][0], t["offset"][0][:, ::-1], atol=1e-4)
    np.testing.assert_array_equal(tf["offset_weights"], t["offset_weights"][:, :, ::-1])
    assert (np.abs(t["offset"][1]) > 1).any()


def test_augmentation_keeps_objects_with_their_depth_and_colour():
    s, _ = synth_dense()
    scale = 1.5
    out = hflip(crop(rescale(s, scale), top=20, left=40, height=64, width=128))
    factor = round(128 * scale) / 128
    checked = 0
    for seg_id in np.unique(out.panoptic):
        if seg_id < 0:
            continue
        before, after = s.panoptic == seg_id, out.panoptic == seg_id
        valid_after = after & out.depth_valid
        # nearest resampling: every depth of the object is one of its own depths / factor
        own = np.unique(s.depth[before & s.depth_valid])
        got = out.depth[valid_after] * factor
        nearest = own[np.clip(np.searchsorted(own, got), 0, len(own) - 1)]
        below = own[np.clip(np.searchsorted(own, got) - 1, 0, len(own) - 1)]
        err = np.minimum(np.abs(nearest - got), np.abs(below - got))
        assert (err <= 1e-5 * got).all(), seg_id
        if after.sum() > 100 and seg_id >= 11000:
            # the image moved with the labels: same mean colour of the object
            diff = out.image[after].mean(axis=0) - s.image[before].mean(axis=0)
            assert np.abs(diff).max() < 20, seg_id
            checked += 1
    assert checked >= 1


def test_train_augmentation_is_deterministic_and_aligned():
    s = coordinate_sample()
    aug = TrainAugmentation(crop_size=(16, 24), scale_range=(0.5, 2.0))
    a = aug(s, np.random.default_rng(0))
    b = aug(s, np.random.default_rng(0))
    for key in ("image", "semantic", "panoptic", "depth", "depth_valid"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    outs = [aug(s, np.random.default_rng(k)) for k in range(12)]
    assert len({o.panoptic.tobytes() for o in outs}) > 6
    flipped = 0
    for o in outs:
        assert o.image.shape == (16, 24, 3)
        v = o.depth_valid
        factor = float(np.median((1.0 + o.panoptic[v]) / o.depth[v]))
        assert 0.5 - 0.05 <= factor <= 2.0 + 0.05
        unflipped = o if np.diff(o.panoptic[0][o.panoptic[0] >= 0]).min(initial=1) > 0 else hflip(o)
        flipped += unflipped is not o
        check_alignment(unflipped, factor)
    assert 0 < flipped < len(outs)


def test_train_augmentation_validates_arguments():
    with pytest.raises(ValueError, match="scale_range"):
        TrainAugmentation(crop_size=(8, 8), scale_range=(2.0, 1.0))
    with pytest.raises(ValueError, match="crop_size"):
        TrainAugmentation(crop_size=(0, 8))
