"""The synthetic camera: determinism, label/instance/depth consistency, exact geometry."""

from __future__ import annotations

import math

import numpy as np
import pytest
from cityscapesscripts.helpers.labels import id2label

from panoptic_depthlab_training.cityscapes import depth_from_disparity
from panoptic_depthlab_training.synth import SKY_ID, SceneGenerator, encode_disparity

H, W = 96, 192
THING_LABEL_IDS = [lab.id for lab in id2label.values() if lab.hasInstances and lab.id >= 0]


@pytest.fixture(scope="module")
def gen() -> SceneGenerator:
    return SceneGenerator(H, W)


@pytest.fixture(scope="module")
def frames(gen: SceneGenerator):
    return [gen.render(gen.make_scene(np.random.default_rng(s))) for s in range(3)]


def test_same_seed_same_scene_and_frame(gen):
    a = gen.make_scene(np.random.default_rng(11))
    b = gen.make_scene(np.random.default_rng(11))
    c = gen.make_scene(np.random.default_rng(12))
    np.testing.assert_array_equal(a.prims.center, b.prims.center)
    assert a.seed == b.seed
    fa, fb, fc = gen.render(a), gen.render(b), gen.render(c)
    for key in ("image_rgb", "label_ids", "instance_ids", "depth", "disparity_png"):
        np.testing.assert_array_equal(getattr(fa, key), getattr(fb, key))
    assert not np.array_equal(fa.label_ids, fc.label_ids)
    assert not np.array_equal(fa.image_rgb, fc.image_rgb)


def test_frame_arrays_have_documented_types(frames):
    f = frames[0]
    assert f.image_rgb.shape == (H, W, 3) and f.image_rgb.dtype == np.uint8
    assert f.label_ids.shape == (H, W) and f.label_ids.dtype == np.uint8
    assert f.instance_ids.dtype == np.int32
    assert f.depth.dtype == np.float32 and np.isfinite(f.depth).all()
    assert f.disparity_png.dtype == np.uint16
    assert f.K.shape == (3, 3) and f.K[0, 0] == pytest.approx(2262.52 * W / 2048)
    assert set(f.camera) == {"extrinsic", "intrinsic"}
    assert set(f.camera["extrinsic"]) == {"baseline", "pitch", "roll", "x", "y", "yaw", "z"}
    assert set(f.camera["intrinsic"]) == {"fx", "fy", "u0", "v0"}


def test_labels_instances_and_depth_are_consistent(frames):
    seen_things: set[int] = set()
    for f in frames:
        thing = np.isin(f.label_ids, THING_LABEL_IDS)
        # every thing pixel has an instance of its own class; stuff holds its labelId
        assert (f.instance_ids[thing] >= 1000).all()
        np.testing.assert_array_equal(f.instance_ids[thing] // 1000, f.label_ids[thing])
        np.testing.assert_array_equal(f.instance_ids[~thing], f.label_ids[~thing])
        seen_things |= set(np.unique(f.label_ids[thing]).tolist())
        sky = f.label_ids == SKY_ID
        assert sky.any() and not f.depth_valid[sky].any()
        assert (f.depth[~f.depth_valid] == 0).all()
        assert (f.depth[f.depth_valid] > 0.4).all() and (f.depth[f.depth_valid] <= 150).all()
        # the street is mostly within range: most non-sky pixels carry depth
        assert f.depth_valid[~sky].mean() > 0.9
    assert {24, 26}.issubset(seen_things)  # persons and cars in three scenes


def test_road_depth_is_exact_ray_plane_depth(gen):
    scene = gen.make_scene(np.random.default_rng(3))
    f = gen.render(scene)
    v, u = np.mgrid[0:H, 0:W]
    yn = (v - gen.v0) / gen.fy
    # world ray of pixel row v: y component cos(pitch) * yn + sin(pitch); plane 0 below camera
    ray_y = math.cos(scene.pitch) * yn + math.sin(scene.pitch)
    expected = scene.mount_height / np.where(ray_y > 0, ray_y, np.nan)
    road = (f.label_ids == 7) & f.depth_valid
    assert road.sum() > 500
    np.testing.assert_allclose(f.depth[road], expected[road], rtol=1e-5)


def test_disparity_png_encodes_exact_depth_within_quantisation(frames, gen):
    for f in frames:
        depth, valid = depth_from_disparity(f.disparity_png, gen.baseline, gen.fx)
        np.testing.assert_array_equal(valid, f.depth_valid)
        d_exact = gen.baseline * gen.fx / f.depth[valid]
        d_png = (f.disparity_png[valid].astype(np.float64) - 1) / 256
        assert np.abs(d_png - d_exact).max() <= 0.5 / 256 + 1e-9
        # |Z_png - Z| = B f |d - d_png| / (d d_png) <= Z Z_png / (B f) / 512
        bound = f.depth[valid] * depth[valid] / (gen.baseline * gen.fx) / 512
        assert (np.abs(depth[valid] - f.depth[valid]) <= bound * 1.0001 + 1e-6).all()


def test_encode_disparity_hand_values():
    depth = np.array([[0.0, 10.0, 40.0]], np.float32)
    valid = np.array([[False, True, True]])
    # baseline * fx = 0.25 * 800 = 200: d = 20 px -> 5121; d = 5 px -> 1281
    np.testing.assert_array_equal(encode_disparity(depth, valid, baseline=0.25, fx=800.0), [[0, 5121, 1281]])


def test_sequence_moves_camera_towards_static_objects(gen):
    scene = gen.make_scene(np.random.default_rng(5), length_m=200.0)
    frames = list(gen.render_sequence(scene, 3, speed_mps=10.0, fps=10.0))  # 1 m per frame
    assert len(frames) == 3
    still = scene.prims.instance_id[(np.abs(scene.prims.velocity).sum(axis=1) == 0) & (scene.prims.instance_id >= 1000)]
    deltas = []
    for inst in np.unique(still):
        a, b = frames[0].instance_ids == inst, frames[2].instance_ids == inst
        if a.sum() < 20 or b.sum() < 20:
            continue
        if a[:, [0, -1]].any() or b[:, [0, -1]].any() or a[[0, -1]].any() or b[[0, -1]].any():
            continue  # cut by the image border
        deltas.append(frames[0].depth[a].min() - frames[2].depth[b].min())
    assert len(deltas) >= 2
    assert np.median(deltas) == pytest.approx(2.0, abs=0.15)
    # the ego lane's traffic is never approached: no thing nearer than 4 m straight ahead
    for f in frames:
        centre = f.depth[H // 3 : H // 2, W // 2 - 4 : W // 2 + 4]
        assert centre[centre > 0].min() > 4.0
