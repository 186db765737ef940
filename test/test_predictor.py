"""The Predictor's public behaviour: shapes, dtypes, resizing, intrinsics, input errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from panoptic_depthlab_ros.checkpoint import load_checkpoint
from panoptic_depthlab_ros.errors import InputError, PanopticDepthLabError
from panoptic_depthlab_ros.metadata import cityscapes_metadata
from panoptic_depthlab_ros.model import ModelConfig
from panoptic_depthlab_ros.model.fuse import fold_batchnorm
from panoptic_depthlab_ros.predictor import Predictor, resolve_device
from panoptic_depthlab_ros.tta import average_with_mirrored, check_scales, zoomed_input


@pytest.fixture(scope="module")
def predictor(tiny_checkpoint: Path) -> Predictor:
    return Predictor.from_checkpoint(tiny_checkpoint, device="cpu")


def _image(h: int = 96, w: int = 160, seed: int = 0) -> np.ndarray:
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    img[: h // 3] = (200, 160, 120)
    return img


def test_result_layout(predictor: Predictor) -> None:
    img = _image(100, 170)  # not a multiple of 32: padded, then cropped back
    r = predictor.predict(img)
    assert r.panoptic.shape == r.semantic.shape == r.depth.shape == (100, 170)
    assert (r.panoptic.dtype, r.semantic.dtype, r.depth.dtype) == (np.int32, np.uint8, np.float32)
    assert r.label_divisor == 1000 and (r.height, r.width) == (100, 170)
    assert set(r.timings) == {"preprocess", "network", "fusion", "segment_depth", "total"}
    ids = sorted(set(np.unique(r.panoptic).tolist()) - {-1})
    assert [s.id for s in r.segments] == ids
    for s in r.segments:
        mask = r.panoptic == s.id
        assert s.area == int(mask.sum())
        assert s.depth_mean == pytest.approx(float(r.depth[mask].astype(np.float64).mean()), rel=1e-5)
        assert all(math.isnan(c) for c in s.centroid)
    raw = predictor.raw(img)
    assert {k: tuple(v.shape) for k, v in raw.items()} == {
        "sem_seg": (19, 100, 170),
        "center": (1, 100, 170),
        "offset": (2, 100, 170),
        "depth": (1, 100, 170),
    }
    np.testing.assert_array_equal(raw["sem_seg"].argmax(0).numpy(), r.semantic)


def test_bgr_order_matters(predictor: Predictor) -> None:
    img = _image()
    a = predictor.raw(img)["sem_seg"]
    b = predictor.raw(np.ascontiguousarray(img[:, :, ::-1]))["sem_seg"]
    assert float((a - b).abs().max()) > 1e-3  # the predictor really reads channel order


def test_centroids_follow_intrinsics(predictor: Predictor) -> None:
    img = _image()
    k = np.array([[120.0, 0, 80.0], [0, 125.0, 48.0], [0, 0, 1]])
    r = predictor.predict(img, camera_k=k)
    ys, xs = np.mgrid[0:96, 0:160]
    for s in r.segments:
        m = r.panoptic == s.id
        z = r.depth[m].astype(np.float64)
        expected = (((xs[m] - 80.0) * z / 120.0).mean(), ((ys[m] - 48.0) * z / 125.0).mean(), z.mean())
        assert s.centroid == pytest.approx(expected, rel=1e-5, abs=1e-5)


def test_max_input_width_resizes_and_scales_offsets(tiny_checkpoint: Path) -> None:
    img = _image(128, 256)
    full = Predictor.from_checkpoint(tiny_checkpoint, device="cpu")
    half = Predictor.from_checkpoint(tiny_checkpoint, device="cpu", max_input_width=128)
    r = half.predict(img)
    assert r.panoptic.shape == (128, 256)
    raw_half = half.raw(img)
    # Offsets are in input pixels: the network saw a half-size image, so they are doubled.
    with torch.no_grad():
        net = half.network(half._prepare(img).tensor)
    assert float(raw_half["offset"].abs().max()) == pytest.approx(2 * float(net["offset"].abs().max()), rel=0.05)
    assert full.raw(img)["offset"].shape == raw_half["offset"].shape


def test_average_with_mirrored_undoes_the_mirror() -> None:
    g = torch.Generator().manual_seed(0)
    channels = {"sem_seg": 3, "center": 1, "offset": 2, "depth": 1}
    out = {k: torch.randn(1, c, 4, 6, generator=g) for k, c in channels.items()}
    # What a perfectly mirror-consistent network says about the mirrored image: the same
    # maps flipped, with every offset's dx pointing the other way.
    mirrored = {k: v.flip(-1) for k, v in out.items()}
    mirrored["offset"] = torch.stack([mirrored["offset"][:, 0], -mirrored["offset"][:, 1]], dim=1)
    for k, v in average_with_mirrored(out, mirrored).items():
        torch.testing.assert_close(v, out[k])
    # Mirrored maps whose dx was left unflipped: dx cancels, dy stays.
    avg = average_with_mirrored(out, {k: v.flip(-1) for k, v in out.items()})
    torch.testing.assert_close(avg["offset"][:, 1], torch.zeros_like(avg["offset"][:, 1]))
    torch.testing.assert_close(avg["offset"][:, 0], out["offset"][:, 0])


def test_flip_average_runs_both_images(tiny_checkpoint: Path) -> None:
    img = _image(96, 160)  # multiples of 32: no padding, so the mirrored pass sees the mirrored image
    plain = Predictor.from_checkpoint(tiny_checkpoint, device="cpu")
    both = Predictor.from_checkpoint(tiny_checkpoint, device="cpu", flip_average=True)
    expected = average_with_mirrored(
        {k: v[None] for k, v in plain.raw(img).items()},
        {k: v[None] for k, v in plain.raw(np.ascontiguousarray(img[:, ::-1])).items()},
    )
    got = both.raw(img)
    for k, v in expected.items():
        torch.testing.assert_close(got[k], v[0], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got["sem_seg"], plain.raw(img)["sem_seg"])  # the random net is not symmetric
    r = both.predict(img)
    assert r.panoptic.shape == (96, 160) and r.segments


class SizeReportingNetwork(torch.nn.Module):
    """Outputs whose values say what input the network saw: logits = the input's mean
    colour per pixel plus its width, offsets a constant (2, -3) of its own pixels, depth
    its height. Exact answers for the multi-scale averaging."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        n, _, h, w = x.shape
        logits = x.mean(1, keepdim=True).repeat(1, 19, 1, 1) + w
        offset = torch.tensor([2.0, -3.0]).view(1, 2, 1, 1).expand(n, 2, h, w)
        depth = torch.full((n, 1, h, w), float(h))
        return {"sem_seg": logits, "center": torch.zeros(n, 1, h, w), "offset": offset, "depth": depth}


def test_multi_scale_averages_segmentation_and_keeps_scale_one_depth() -> None:
    config = ModelConfig.tiny(size_divisibility=32)
    net = SizeReportingNetwork()
    kwargs = {"model_config": config, "classes": cityscapes_metadata(), "optimize": False}
    one = Predictor(net, **kwargs)
    three = Predictor(net, scales=(1.5, 1.0, 2.0), **kwargs)
    assert three.scales == (1.0, 1.5, 2.0)
    y, x = np.mgrid[0:64, 0:96]
    img = np.stack([(y * 3) % 256, (x * 2) % 256, (x + y) % 256], -1).astype(np.uint8)  # smooth ramps
    base, avg = one.raw(img), three.raw(img)
    # offsets in each scale's pixels, divided back: (2, -3) * (1 + 1/1.5 + 1/2) / 3
    factor = (1 + 1 / 1.5 + 1 / 2) / 3
    torch.testing.assert_close(avg["offset"][:, 10, 10], torch.tensor([2.0, -3.0]) * factor)
    assert torch.equal(avg["depth"], base["depth"]) and float(base["depth"].max()) == 64.0  # scale 1's depth
    # width term: the network saw 96, 160 (1.5 x 96 = 144, padded to 32) and 192 columns
    colour = base["sem_seg"] - 96
    expected = colour + (96 + 160 + 192) / 3
    torch.testing.assert_close(avg["sem_seg"][:, 8:-8, 8:-8], expected[:, 8:-8, 8:-8], atol=0.05, rtol=0)
    # a zoomed canvas keeps the image where it was: 1.5x of 64x96 is 96x144, padded to 96x160
    x1 = torch.zeros(1, 3, 64, 96)
    zoomed, size = zoomed_input(x1, 1.5, 32)
    assert size == (96, 144) and zoomed.shape[-2:] == (96, 160)
    with pytest.raises(ValueError, match="include 1.0"):
        check_scales([1.5, 2.0])
    with pytest.raises(PanopticDepthLabError, match="0.25..4"):
        Predictor(net, scales=(1.0, 8.0), **kwargs)


def test_depth_follows_the_cameras_focal_length(tiny_checkpoint: Path) -> None:
    """A camera with twice the training focal length sees things twice as large:
    the network's metres are doubled, and so is every segment's depth; no recorded
    training camera, or no K and no resize, leaves depth as the network gave it."""
    img = _image(128, 256)
    unknown = Predictor.from_checkpoint(tiny_checkpoint, device="cpu")
    assert unknown.model_config.depth_focal_px is None
    k = np.array([[200.0, 0, 128.0], [0, 200.0, 64.0], [0, 0, 1]])
    plain = unknown.predict(img)
    assert plain.depth_scale == 1.0
    assert unknown.predict(img, camera_k=k).depth_scale == 1.0

    known = Predictor.from_checkpoint(tiny_checkpoint, device="cpu")
    known.model_config = known.model_config.with_(depth_focal_px=100.0)
    assert known.predict(img).depth_scale == 1.0  # no K: the training camera is assumed
    r = known.predict(img, camera_k=k)
    assert r.depth_scale == pytest.approx(2.0)
    np.testing.assert_allclose(r.depth, 2.0 * plain.depth, rtol=1e-6)
    np.testing.assert_array_equal(r.panoptic, plain.panoptic)
    assert [s.depth_median for s in r.segments] == pytest.approx([2.0 * s.depth_median for s in plain.segments])

    # A downscaled input has a proportionally shorter focal length in network pixels.
    half = Predictor.from_checkpoint(tiny_checkpoint, device="cpu", max_input_width=128)
    half.model_config = half.model_config.with_(depth_focal_px=100.0)
    assert half.predict(img, camera_k=k).depth_scale == pytest.approx(1.0)
    assert half.predict(img).depth_scale == pytest.approx(0.5)  # the training camera, halved


def test_input_scale_runs_the_network_on_the_enlarged_image(tiny_checkpoint: Path) -> None:
    """A model trained at ``input_scale`` 1.5 sees every frame enlarged 1.5x; results
    come back at the frame's size, offsets in frame pixels, depth for the enlarged
    focal length (training camera assumed without a K)."""
    img = _image(128, 256)
    ckpt = load_checkpoint(tiny_checkpoint)
    net = ckpt.build()
    zoom = ckpt.model_config.with_(input_scale=1.5, depth_focal_px=100.0)
    pred = Predictor(net, model_config=zoom, classes=ckpt.classes, postprocess=ckpt.postprocess)
    prep = pred._prepare(img)
    assert prep.network_size == (192, 384)
    assert tuple(prep.tensor.shape[-2:]) == (192, 384)
    r = pred.predict(img)
    assert r.panoptic.shape == r.depth.shape == (128, 256)
    assert r.depth_scale == pytest.approx(1.5)
    k = np.array([[50.0, 0, 128.0], [0, 50.0, 64.0], [0, 0, 1]])
    assert pred.predict(img, camera_k=k).depth_scale == pytest.approx(0.75)
    # Offsets: the network's (enlarged) pixels divided by 1.5.
    with torch.no_grad():
        net_offset = pred.network(prep.tensor)["offset"]
    raw_offset = pred.raw(img)["offset"]
    assert float(raw_offset.abs().max()) == pytest.approx(float(net_offset.abs().max()) / 1.5, rel=0.05)
    # The width limit applies after the scale.
    capped = Predictor(net, model_config=zoom, classes=ckpt.classes, max_input_width=320)
    assert capped._prepare(img).network_size == (160, 320)
    assert capped.predict(img).depth_scale == pytest.approx(1.25)


@pytest.mark.parametrize("scale", [0.0, 0.2, 5.0, float("nan")])
def test_input_scale_out_of_range_is_refused(scale: float) -> None:
    with pytest.raises(ValueError, match="input_scale must lie in 0.25..4"):
        ModelConfig.tiny(input_scale=scale)


@pytest.mark.parametrize(
    "bad,match",
    [
        (np.zeros((10, 10), np.uint8), r"\[H, W, 3\]"),
        (np.zeros((10, 10, 4), np.uint8), r"\[H, W, 3\]"),
        (np.zeros((10, 10, 3), np.float32), "uint8"),
        (np.zeros((0, 10, 3), np.uint8), "empty"),
    ],
)
def test_bad_images_are_named(predictor: Predictor, bad: np.ndarray, match: str) -> None:
    with pytest.raises(InputError, match=match):
        predictor.predict(bad)


def test_bad_camera_matrix(predictor: Predictor) -> None:
    with pytest.raises(InputError, match="3x3"):
        predictor.predict(_image(), camera_k=np.eye(2))
    with pytest.raises(InputError, match="focal"):
        predictor.predict(_image(), camera_k=np.diag([0.0, 1.0, 1.0]))


def test_devices() -> None:
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(PanopticDepthLabError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(PanopticDepthLabError, match="auto, cpu or cuda"):
        resolve_device("tpu")


def test_folded_batchnorm_matches(tiny_checkpoint: Path) -> None:
    predictor = Predictor.from_checkpoint(tiny_checkpoint, device="cpu", optimize=False)
    model = predictor.network
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    for m in model.modules():  # give BN non-trivial statistics first
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.fill_(1.7)
    folded = fold_batchnorm(model)
    x = predictor._prepare(_image()).tensor
    with torch.no_grad():
        a, b = model(x), folded(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    for k in a:
        assert float((a[k] - b[k]).abs().max()) < 1e-4 * max(1.0, float(a[k].abs().max())), k
    # The default predictor runs the folded network and gives the same result as the plain one.
    optimized = Predictor.from_checkpoint(tiny_checkpoint, device="cpu")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in optimized.network.modules())
    plain = Predictor.from_checkpoint(tiny_checkpoint, device="cpu", optimize=False)
    ra, rb = plain.predict(_image()), optimized.predict(_image())
    np.testing.assert_array_equal(ra.panoptic, rb.panoptic)
    np.testing.assert_allclose(ra.depth, rb.depth, rtol=1e-4)


def test_channels_last_network_gives_the_same_result(tiny_checkpoint: Path) -> None:
    # NHWC weights (CUDA's default here, or what a trainer with solver.channels_last leaves)
    # make NHWC outputs; fusion takes flat views of them and needs NCHW.
    plain = Predictor.from_checkpoint(tiny_checkpoint, device="cpu")
    nhwc = Predictor.from_checkpoint(tiny_checkpoint, device="cpu")
    nhwc.network = nhwc.network.to(memory_format=torch.channels_last)
    nhwc.channels_last = True
    a, b = plain.predict(_image()), nhwc.predict(_image())
    assert len(a.segments) > 1
    np.testing.assert_array_equal(a.panoptic, b.panoptic)
    np.testing.assert_allclose(a.depth, b.depth, rtol=1e-4)
    assert [s.score for s in a.segments] == pytest.approx([s.score for s in b.segments], rel=1e-4)


def test_compile_mode_wraps_the_network(tiny_checkpoint: Path) -> None:
    # Inductor code generation takes minutes on a CPU; the "eager" torch.compile backend
    # exercises the same wrapping (dynamo tracing, dynamic shapes) without it.
    compiled = Predictor.from_checkpoint(tiny_checkpoint, device="cpu", compile_mode="default", compile_backend="eager")
    plain = Predictor.from_checkpoint(tiny_checkpoint, device="cpu")
    assert type(compiled.network).__name__ == "OptimizedModule"
    for shape in ((96, 160), (128, 256)):  # dynamic: a second size without recompiling errors
        img = _image(*shape)
        a, b = plain.predict(img), compiled.predict(img)
        np.testing.assert_array_equal(a.panoptic, b.panoptic)
        np.testing.assert_allclose(a.depth, b.depth, rtol=1e-5)


def test_predict_batch_gives_each_image_what_predict_gives(tiny_checkpoint: Path) -> None:
    """Three cameras, two sizes, each its own K: one network pass per size, and every
    result equals that image's own predict() (the depth scaled by its own camera)."""
    p = Predictor.from_checkpoint(tiny_checkpoint, device="cpu")
    p.model_config = p.model_config.with_(depth_focal_px=100.0)
    images = [_image(64, 128, seed=1), _image(96, 160, seed=2), _image(64, 128, seed=3)]
    ks = [
        np.array([[200.0, 0, 64.0], [0, 200.0, 32.0], [0, 0, 1]]),
        None,
        np.array([[50.0, 0, 64.0], [0, 50.0, 32.0], [0, 0, 1]]),
    ]
    alone = [p.predict(im, camera_k=k) for im, k in zip(images, ks, strict=True)]
    network, passes = p.network, []

    def counting(x, **kwargs):
        passes.append(tuple(x.shape))
        return network(x, **kwargs)

    p.network = counting
    batch = p.predict_batch(images, ks)
    assert passes == [(2, 3, 64, 128), (1, 3, 96, 160)]  # same sizes together, in first-seen order
    assert [r.depth_scale for r in batch] == pytest.approx([2.0, 1.0, 0.5])
    for b, a in zip(batch, alone, strict=True):
        assert b.panoptic.shape == a.panoptic.shape
        assert (b.panoptic == a.panoptic).mean() > 0.999  # a logit tie may flip a pixel between batch sizes
        np.testing.assert_array_equal(b.semantic, a.semantic)
        np.testing.assert_allclose(b.depth, a.depth, rtol=1e-4, atol=1e-5)
        assert [s.id for s in b.segments] == [s.id for s in a.segments]
        assert [s.depth_median for s in b.segments] == pytest.approx([s.depth_median for s in a.segments], rel=1e-4)
        assert b.timings["network"] > 0
    assert p.predict_batch([]) == []


def test_predict_batch_names_the_bad_image(predictor: Predictor) -> None:
    good = _image(64, 128)
    with pytest.raises(InputError, match="image 1 of 3: image must be uint8") as info:
        predictor.predict_batch([good, good.astype(np.float32), good])
    assert info.value.index == 1
    with pytest.raises(InputError, match="image 2 of 3: camera_k focal lengths") as info:
        predictor.predict_batch([good, good, good], [None, None, np.diag([0.0, 1.0, 1.0])])
    assert info.value.index == 2
    with pytest.raises(ValueError, match="3 images but 1 camera"):
        predictor.predict_batch([good, good, good], [None])
    with pytest.raises(InputError) as single:
        predictor.predict(good.astype(np.float32))
    assert single.value.index is None and "of" not in str(single.value).split(":")[0]


def test_track_feeds_a_tracker_the_stamps(tiny_checkpoint) -> None:
    """``Predictor.track``: each frame predicted, then tracked with its stamp (as a Tracker fed by hand)."""
    from node_utils import random_image
    from panoptic_depthlab_ros.tracker import Tracker

    predictor = Predictor.from_checkpoint(tiny_checkpoint, "cpu")
    image = random_image(4)
    stamps = [0.0, 0.1, 0.4, 0.3]  # a dropped frame, then a jump back
    results = list(predictor.track((s, image) for s in stamps))
    by_hand = Tracker()
    for stamp, result in zip(stamps, results, strict=True):
        plain = predictor.predict(image)
        tracks = by_hand.update(plain, stamp_s=stamp, image=image).tracks
        assert result.tracked
        assert [(s.id, s.track_id, s.track_age) for s in result.segments] == [
            (s.id, t.track_id, t.track_age) for s, t in zip(plain.segments, tracks, strict=True)
        ]
    ages = [max(s.track_age for s in r.segments) for r in results]
    assert ages == [1, 2, 3, 1]  # the jump back started afresh


def test_track_passes_each_frames_camera_motion_to_the_tracker(tiny_checkpoint) -> None:
    """``(stamp_s, image, ego)`` items: the tracker gets each frame's motion, as when fed by hand."""
    from node_utils import random_image
    from panoptic_depthlab_ros.ego_motion import EgoMotion
    from panoptic_depthlab_ros.tracker import Tracker

    predictor = Predictor.from_checkpoint(tiny_checkpoint, "cpu")
    image = random_image(4)
    egos = [EgoMotion((0.0, 0.0, 8.0)), None, EgoMotion((0.0, 0.0, 8.0), (0.0, -0.1, 0.0)), EgoMotion((0.0, 0.0, 9.0))]
    results = list(predictor.track((0.1 * i, image, ego) for i, ego in enumerate(egos)))
    by_hand = Tracker()
    for i, (ego, result) in enumerate(zip(egos, results, strict=True)):
        tracks = by_hand.update(predictor.predict(image), stamp_s=0.1 * i, image=image, ego=ego).tracks
        np.testing.assert_array_equal([s.velocity for s in result.segments], [t.velocity for t in tracks])
    assert max(s.track_age for s in results[-1].segments) == 4
    with pytest.raises(ValueError, match="ego must be an EgoMotion or None, got str"):
        next(predictor.track([(0.0, image, "forward")]))  # type: ignore[list-item]
