"""The trainer's config: bundled files, overrides, typed binding and its refusals."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from panoptic_depthlab_training.train.config import (
    MODES,
    DataConfig,
    TrainConfig,
    TrainingError,
    apply_overrides,
    load_config,
    resolve_config_path,
)


def test_bundled_configs_load_and_overrides_apply():
    for name in ("quick_cpu", "joint", "writeup_depth_only", "demo"):
        config = load_config(name)
        assert config.mode in MODES
    writeup = load_config("writeup_depth_only")
    # the write-up: depth branch only, Adam, lr 1e-3, 10k iterations, batch 14, L1 depth
    assert writeup.mode == "depth-only" and writeup.init.type == "detectron2"
    assert writeup.solver.optimizer == "adam" and writeup.solver.lr == 0.001
    assert writeup.solver.max_iter == 10000 and writeup.solver.ims_per_batch == 14
    assert writeup.loss.depth_loss == "l1"
    config = load_config("quick_cpu", ["solver.lr=5e-4", "data.crop_size=[32, 64]", "init.path=null"])
    assert config.solver.lr == 5e-4 and config.data.crop_size == (32, 64)
    assert config.init.path is None
    assert load_config(resolve_config_path("joint")).solver.ims_per_batch == 32


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["solver.lrr=0.1"], "unknown config key 'solver.lrr'"),
        (["solver.lr"], "section.key=value"),
        (["mode=both"], "mode must be one of"),
        (["data.crop_size=[60,128]"], "multiples of 32"),
        (["init.type=detectron2"], "init.weights"),
        (["loss.depth_loss=l2"], "depth_loss"),
    ],
)
def test_bad_configs_are_refused(overrides, message):
    with pytest.raises(TrainingError, match=message):
        load_config("quick_cpu", overrides)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("solver.lr=fast", "solver.lr must be a number, got 'fast'"),
        ("solver.max_iter=10.5", "solver.max_iter must be a whole number, got 10.5"),
        ("solver.amp=maybe", "solver.amp must be true or false, got 'maybe'"),
        ("data.crop_size=[64]", r"data.crop_size must be a list of 2 values, got \[64\]"),
        ("data.crop_size=[64,x]", r"data.crop_size\[1\] must be a whole number, got 'x'"),
        ("data=5", "data must be a mapping of keys, got 5"),
        ("mode=7", "mode must be a string, got 7"),
        ("eval.max_depth=far", "eval.max_depth must be a number, got 'far'"),
        ("log.period=0", "log.period must be >= 1, got 0"),
        ("model.preset=huge", "model.preset must be one of"),
        ("postprocess.stuff_areaa=3", r"unknown postprocess keys: \['stuff_areaa'\]"),
        ("loss.depth_wieght=2", "unknown config key 'loss.depth_wieght'"),
    ],
)
def test_typed_binding_names_the_key_and_the_value(override, message):
    with pytest.raises(TrainingError, match=message):
        load_config("quick_cpu", [override])


def test_binding_converts_what_yaml_gives_to_the_field_types():
    config = load_config("quick_cpu", ["solver.lr=1", "solver.max_iter=2e3", "eval.max_depth=null", "seed=3"])
    assert config.solver.lr == 1.0 and isinstance(config.solver.lr, float)
    assert config.solver.max_iter == 2000 and isinstance(config.solver.max_iter, int)
    assert config.eval.max_depth is None and config.seed == 3
    assert config.solver.betas == (0.9, 0.999)  # a default, as a tuple
    # nested model overrides merge key by key (the preset stays)
    deep = load_config("demo", ["model.instance.head_channels=8"])
    assert deep.model.preset == "tiny"
    assert deep.model.overrides["instance"]["head_channels"] == 8
    assert deep.model.overrides["instance"]["low_level"] == ["stem", "res2", "res3"]
    # the typed sections refuse bad values when built in code too
    with pytest.raises(TrainingError, match="data.workers must be >= 0, got -1"):
        dataclasses.replace(DataConfig(), workers=-1)


def test_to_dict_round_trips_the_yaml_keys():
    config = load_config("quick_cpu", ["solver.lr=5e-4"])
    d = config.to_dict()
    text = yaml.safe_dump(d, sort_keys=False)  # config.yaml: plain YAML types only
    assert TrainConfig.from_dict(yaml.safe_load(text)) == config
    original = yaml.safe_load(resolve_config_path("quick_cpu").read_text())
    assert set(original) <= set(d)
    for section, values in original.items():
        if isinstance(values, dict):
            assert set(values) <= set(d[section]), section
    assert d["model"]["preset"] == "tiny" and d["model"]["max_depth"] == 80.0
    assert d["data"]["crop_size"] == [128, 256] and d["solver"]["lr"] == 5e-4
    assert d["loss"] == config.loss.to_dict()
    # overrides work on plain dicts too
    assert apply_overrides({"solver": {"lr": 1.0}}, ["solver.lr=2"]) == {"solver": {"lr": 2}}
