"""Parity with the real Detectron2 Panoptic-DeepLab (fixtures made by running it).

Tolerances are the fixture README's; panoptic ids must match exactly outside
the near-tie pixels it marks.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from panoptic_depthlab_ros.checkpoint import DEPTH_PREFIX, load_detectron2
from panoptic_depthlab_ros.fusion import panoptic_fusion
from panoptic_depthlab_ros.metadata import cityscapes_metadata
from panoptic_depthlab_ros.model import ModelConfig, build_model
from panoptic_depthlab_ros.predictor import Predictor
from panoptic_depthlab_ros.preprocess import prepare_image
from pdl_testing import FIXTURES


@pytest.fixture(scope="module")
def case():
    return dict(np.load(FIXTURES / "tiny_case.npz"))


@pytest.fixture(scope="module")
def loaded():
    return load_detectron2(FIXTURES / "tiny_model.pkl", FIXTURES / "tiny_config.yaml")


@pytest.fixture(scope="module")
def predictor(loaded):
    model, config, post, _ = loaded
    return Predictor(model, model_config=config, classes=cityscapes_metadata(), postprocess=post)


def _bgr(case):
    assert str(case["image_format"]) == "RGB"
    return np.ascontiguousarray(case["image"][:, :, ::-1])


@pytest.mark.parametrize("name,dsconv", [("keys_R52_os16.json", False), ("keys_R52_os16_dsconv.json", True)])
def test_state_dict_keys_equal_detectron2(name: str, dsconv: bool) -> None:
    ref = json.loads((FIXTURES / name).read_text())
    config = ModelConfig.from_detectron2(
        {
            "MODEL": {
                "PANOPTIC_DEEPLAB": {"USE_DEPTHWISE_SEPARABLE_CONV": dsconv},
                "SEM_SEG_HEAD": {"USE_DEPTHWISE_SEPARABLE_CONV": dsconv},
            }
        }
    )
    sd = build_model(config).state_dict()
    ours = [
        [k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in sd.items() if not k.startswith(DEPTH_PREFIX)
    ]
    assert ours == ref["state_dict"]  # names, order, shapes and dtypes
    n_params = sum(p.numel() for k, p in build_model(config).named_parameters() if not k.startswith(DEPTH_PREFIX))
    assert n_params == ref["num_parameters"]
    # The depth branch exists and mirrors the semantic decoder's structure.
    depth_keys = [k[len(DEPTH_PREFIX) :] for k in sd if k.startswith(DEPTH_PREFIX)]
    sem_keys = [k[len("sem_seg_head.") :] for k in sd if k.startswith("sem_seg_head.")]
    assert [k for k in depth_keys if not k.startswith("predictor")] == [
        k for k in sem_keys if not k.startswith("predictor")
    ]


def test_full_config_files_build_the_listed_models() -> None:
    for yaml_name, keys_name in (
        ("full_config_R52_os16.yaml", "keys_R52_os16.json"),
        ("full_config_R52_os16_dsconv.yaml", "keys_R52_os16_dsconv.json"),
    ):
        config = ModelConfig.from_detectron2(FIXTURES / yaml_name)
        ref = json.loads((FIXTURES / keys_name).read_text())
        shapes = {k: list(v.shape) for k, v in build_model(config).state_dict().items()}
        assert all(shapes[n] == s for n, s, _ in ref["state_dict"])
        assert config.aspp_pool_kernel_size == (32, 64)


def test_load_reports_initialized_depth_keys(loaded) -> None:
    model, config, post, report = loaded
    assert report.initialized and all(k.startswith(DEPTH_PREFIX) for k in report.initialized)
    assert set(report.initialized) == {k for k in model.state_dict() if k.startswith(DEPTH_PREFIX)}
    assert len(report.loaded) == 508
    assert config.aspp_pool_kernel_size == (4, 8) and config.size_divisibility == 0
    assert (post.center_threshold, post.nms_kernel, post.top_k, post.stuff_area) == (0.1, 7, 200, 2048)


def test_features_and_raw_outputs(loaded, case) -> None:
    model, config, _, _ = loaded
    prep = prepare_image(_bgr(case), config)
    np.testing.assert_allclose(prep.tensor[0].numpy(), case["normalized_padded_input"], atol=1e-5, rtol=0)
    with torch.no_grad():
        feats = model.backbone(prep.tensor)
        s4 = model.forward_heads(prep.tensor)
        out = model(prep.tensor)
    for name, tol in (("res2", 2e-4), ("res3", 2e-4), ("res5", 2e-3)):
        np.testing.assert_allclose(feats[name][0].numpy(), case[f"feat_{name}"], atol=tol, rtol=0)
    pairs = [
        (s4["sem_seg"], "raw_sem_logits_stride4", 5e-3),
        (s4["center"], "raw_center_stride4", 3e-4),
        (s4["offset"], "raw_offsets_stride4_unscaled", 5e-3),
        (out["sem_seg"], "raw_sem_logits", 5e-3),
        (out["center"], "raw_center_heatmap", 3e-4),
        (out["offset"], "raw_offsets", 5e-3),
    ]
    for ours, key, tol in pairs:
        np.testing.assert_allclose(ours[0].numpy(), case[key], atol=tol, rtol=0, err_msg=key)


def test_predictor_raw_is_sem_seg_output(predictor, case) -> None:
    raw = predictor.raw(_bgr(case))
    np.testing.assert_allclose(raw["sem_seg"].numpy(), case["sem_seg"], atol=5e-3, rtol=0)
    assert raw["depth"].shape == (1, 128, 256) and bool((raw["depth"] > 0).all())


def test_centers_and_panoptic_exact(predictor, case) -> None:
    raw = predictor.raw(_bgr(case))
    fused = panoptic_fusion(
        raw["sem_seg"], raw["center"], raw["offset"], classes=predictor.classes, config=predictor.postprocess
    )
    np.testing.assert_array_equal(fused.centers.numpy(), case["center_points_yx"])
    result = predictor.predict(_bgr(case))
    outside = ~case["near_tie_mask"]
    np.testing.assert_array_equal(result.panoptic[outside], case["panoptic_seg"][outside])
    assert result.panoptic.dtype == np.int32 and result.semantic.dtype == np.uint8
    expected = json.loads(str(case["segments_info_json"]))
    assert [s.id for s in result.segments] == [e["id"] for e in expected if e["id"] != -1]


def test_instances_scores_classes_boxes_masks(predictor, case) -> None:
    result = predictor.predict(_bgr(case))
    things = [s for s in result.segments if s.is_thing]
    assert [s.category_id for s in things] == case["instances_pred_classes"].tolist()
    np.testing.assert_allclose([s.score for s in things], case["instances_scores"], atol=1e-4, rtol=0)
    shape = tuple(case["instances_pred_masks_shape"])
    masks = np.unpackbits(case["instances_pred_masks_packed"])[: np.prod(shape)].reshape(shape).astype(bool)
    outside = ~case["near_tie_mask"]
    for seg, mask, box in zip(things, masks, case["instances_pred_boxes_xyxy"], strict=True):
        np.testing.assert_array_equal((result.panoptic == seg.id)[outside], mask[outside])
        # Detectron2 boxes are exclusive at x2/y2; ours are inclusive pixel bounds.
        assert (seg.x_min, seg.y_min, seg.x_max + 1, seg.y_max + 1) == tuple(int(v) for v in box)
        assert seg.area == int(mask.sum())


def test_strict_aspp_pool_size_raises_like_detectron2(loaded) -> None:
    model, config, _, _ = loaded
    bad = np.zeros((136, 256, 3), np.uint8)  # res5 = 9 x 16: not divisible by the (4, 8) pool
    with pytest.raises(ValueError, match="not divisible by the pooling kernel"):
        with torch.no_grad():
            model(prepare_image(bad, config).tensor)
