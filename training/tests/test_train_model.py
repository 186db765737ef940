"""The network being trained: its training camera, and which parts learn in depth-only mode."""

from __future__ import annotations

import pytest
import torch
from train_testing import small_config

from panoptic_depthlab_training.cityscapes import list_samples, read_camera
from panoptic_depthlab_training.distributed import DistInfo
from panoptic_depthlab_training.train.config import TrainingError
from panoptic_depthlab_training.train.model import (
    build_initialized_model,
    configure_trainable,
    record_depth_camera,
    set_training_mode,
)

pytestmark = pytest.mark.usefixtures("one_thread")

CPU = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), owns_group=False)


def test_depth_camera_comes_from_the_data_unless_configured(synth_root, synth_copy):
    config = small_config()
    init = build_initialized_model(config)
    record_depth_camera(init, config, synth_root, CPU)
    fx = read_camera(list_samples(synth_root, "train")[0].camera)["fx"]
    assert init.model_config.depth_focal_px == pytest.approx(fx)
    config = small_config("model.depth_focal_px=500.0")
    init = build_initialized_model(config)
    record_depth_camera(init, config, synth_root, CPU)
    assert init.model_config.depth_focal_px == 500.0
    for camera in (synth_copy / "camera" / "train").rglob("*.json"):
        camera.unlink()
    with pytest.raises(TrainingError, match="training cameras: .*camera"):
        record_depth_camera(build_initialized_model(small_config()), small_config(), synth_copy, CPU)


def test_depth_only_freezing_helpers():
    init = build_initialized_model(small_config("model.preset=tiny"))
    model = init.model
    params = configure_trainable(model, "depth-only")
    assert {id(p) for p in params} == {id(p) for p in model.depth_head.parameters()}
    assert not any(p.requires_grad for p in model.backbone.parameters())
    set_training_mode(model, "depth-only")
    assert model.depth_head.training and not model.backbone.training
    assert not model.sem_seg_head.training and not model.ins_embed_head.training
    set_training_mode(model, "joint")
    assert all(m.training for m in model.modules())
