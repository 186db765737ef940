"""The trainer's data: resumable sharded sampling, crops at the model's input scale, bad samples replaced."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest
import torch
from train_testing import small_config

from panoptic_depthlab_training.cityscapes import CityscapesPanopticDepth, DatasetError, list_samples
from panoptic_depthlab_training.distributed import DistInfo
from panoptic_depthlab_training.train.data import RobustTrainSet, TrainSampler, build_train_loader
from panoptic_depthlab_training.train.model import build_initialized_model

pytestmark = pytest.mark.usefixtures("one_thread")

CPU = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), owns_group=False)


def test_sampler_shards_epochs_and_resumes_mid_stream():
    def take(sampler, n):
        it = iter(sampler)
        return [next(it) for _ in range(n)]

    ranks = [take(TrainSampler(7, rank=r, world_size=2, seed=3), 6) for r in (0, 1)]
    # 7 samples over 2 ranks: 3 per rank per epoch, disjoint within an epoch
    for epoch in (0, 1):
        seen = [i for r in ranks for (e, i) in r if e == epoch]
        assert len(seen) == 6 and len(set(seen)) == 6
    full = take(TrainSampler(7, rank=1, world_size=2, seed=3), 8)
    resumed = take(TrainSampler(7, rank=1, world_size=2, seed=3, start=4), 4)
    assert resumed == full[4:]


def test_scale_range_is_relative_to_the_input_scale(synth_root):
    """A model that will see frames enlarged 1.5x (``input_scale``) trains on crops drawn
    around 1.5x: with ``scale_range`` [1, 1] every crop is the whole frame at 1.5x, depth
    divided by 1.5 (the enlarged camera)."""
    config = small_config("data.crop_size=[96,192]", "data.scale_range=[1.0,1.0]", "data.flip_prob=0.0")
    init = build_initialized_model(config)
    loader = build_train_loader(config, synth_root, init.classes, CPU, start=0, input_scale=1.5)
    batch = next(iter(loader))
    plain = CityscapesPanopticDepth(synth_root, "train")
    raw = plain[[s.stem for s in plain.samples].index(batch["stem"][0])]
    assert tuple(raw["image"].shape[-2:]) == (64, 128)
    image = raw["image"].permute(1, 2, 0).numpy().astype(np.uint8)
    expected = cv2.resize(image, (192, 96), interpolation=cv2.INTER_LINEAR).transpose(2, 0, 1)
    np.testing.assert_array_equal(batch["image"][0].numpy(), expected.astype(np.float32))
    valid = batch["depth_valid"][0]
    assert bool(valid.any())
    depth = batch["depth"][0][valid]
    assert float(depth.max()) == pytest.approx(float(raw["depth"][raw["depth_valid"]].max()) / 1.5, rel=1e-5)


def test_a_bad_sample_is_logged_and_replaced(synth_copy, caplog):
    samples = list_samples(synth_copy, "train")
    samples[1].image.write_bytes(b"not a png")
    robust = RobustTrainSet(CityscapesPanopticDepth(synth_copy, "train"))
    with caplog.at_level(logging.WARNING, logger="panoptic_depthlab_training"):
        item = robust[(0, 1)]
    assert item["stem"] == samples[2].stem  # the next frame stands in
    assert str(samples[1].image) in caplog.text
    for sample in samples:
        sample.image.write_bytes(b"broken")
    with pytest.raises(DatasetError, match="in a row"):
        robust[(0, 0)]
