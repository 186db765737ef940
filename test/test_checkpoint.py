"""Checkpoints: our format round-trips; Detectron2 pickles load without running code;
broken files fail with a named error and nothing half-loaded."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from panoptic_depthlab_ros.checkpoint import (
    convert_detectron2,
    describe_checkpoint,
    load_checkpoint,
    load_state_dict_checked,
    read_detectron2_weights,
    save_checkpoint,
)
from panoptic_depthlab_ros.errors import CheckpointError
from panoptic_depthlab_ros.fusion import PostprocessConfig
from panoptic_depthlab_ros.metadata import cityscapes_metadata
from panoptic_depthlab_ros.model import BranchConfig, ModelConfig, build_model
from panoptic_depthlab_ros.predictor import Predictor
from pdl_testing import FIXTURES, stride2_instance_branch


class _RunsCode:
    """Unpickling this would call os.system."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    bad = tmp_path / "model_final.pkl"
    bad.write_bytes(pickle.dumps({"model": {"w": _RunsCode(marker)}, "__author__": "x"}))
    with pytest.raises(CheckpointError, match=r"refusing to load global (posix|os)\.system"):
        read_detectron2_weights(bad)
    assert not marker.exists()
    # The same file with the plain unpickler would have run the command (the test is real).
    pickle.loads(bad.read_bytes())
    assert marker.exists()


def test_detectron2_pkl_reads_numpy_arrays() -> None:
    weights = read_detectron2_weights(FIXTURES / "tiny_model.pkl")
    assert len(weights) == 508
    assert weights["backbone.stem.conv1.norm.num_batches_tracked"].shape == ()
    assert weights["sem_seg_head.predictor.weight"].shape == (19, 16, 1, 1)


def test_detectron2_pth_weights_only(tmp_path: Path) -> None:
    weights = read_detectron2_weights(FIXTURES / "tiny_model.pkl")
    pth = tmp_path / "model.pth"
    torch.save({"model": {f"module.{k}": v for k, v in weights.items()}}, pth)
    again = read_detectron2_weights(pth)
    assert again.keys() == weights.keys()
    assert all(torch.equal(again[k], weights[k]) for k in weights)


def test_truncated_pickle(tmp_path: Path) -> None:
    data = (FIXTURES / "tiny_model.pkl").read_bytes()
    cut = tmp_path / "cut.pkl"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pkl: truncated or corrupt"):
        read_detectron2_weights(cut)


def test_shape_mismatch_lists_keys_and_leaves_model_untouched() -> None:
    model = build_model(ModelConfig.tiny())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    weights = read_detectron2_weights(FIXTURES / "tiny_model.pkl")
    weights["sem_seg_head.predictor.weight"] = torch.zeros(7, 16, 1, 1)
    weights.pop("backbone.stem.conv1.weight")
    with pytest.raises(CheckpointError, match="missing keys: backbone.stem.conv1.weight"):
        load_state_dict_checked(model, weights, source="w.pkl", allow_missing_prefix="depth_head.")
    weights["backbone.stem.conv1.weight"] = before["backbone.stem.conv1.weight"]
    with pytest.raises(CheckpointError, match=r"shape mismatch: sem_seg_head.predictor.weight \(file \(7, 16, 1, 1\)"):
        load_state_dict_checked(model, weights, source="w.pkl", allow_missing_prefix="depth_head.")
    weights["sem_seg_head.predictor.weight"] = before["sem_seg_head.predictor.weight"]
    weights["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="unexpected keys .*extra.weight"):
        load_state_dict_checked(model, weights, source="w.pkl", allow_missing_prefix="depth_head.")
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_our_format_roundtrip_is_self_describing(tiny_checkpoint: Path) -> None:
    ckpt = load_checkpoint(tiny_checkpoint)
    assert ckpt.model_config == ModelConfig.tiny(aspp_strict_pool_size=False, size_divisibility=32)
    assert ckpt.classes == cityscapes_metadata()
    assert ckpt.postprocess.stuff_area == 64
    assert ckpt.info == {"purpose": "tests"}
    model = ckpt.build()
    assert all(torch.equal(v, ckpt.state_dict[k].to(v.dtype)) for k, v in model.state_dict().items())


def test_info_describes_a_checkpoint_from_its_header(
    tmp_path: Path, tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from panoptic_depthlab_ros.cli import main

    desc = describe_checkpoint(tiny_checkpoint)
    model = load_checkpoint(tiny_checkpoint).build()
    assert desc["parameters"] == sum(p.numel() for p in model.parameters())  # BatchNorm statistics not counted
    assert desc["dtypes"] == ["F32"] and desc["format_version"] == "1"
    assert desc["postprocess"]["stuff_area"] == 64 and desc["info"] == {"purpose": "tests"}
    assert main(["info", str(tiny_checkpoint), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == desc
    assert main(["info"]) == 0  # the bundled model
    text = capsys.readouterr().out
    assert "demo.safetensors" in text and "output stride 16" in text and "instance [stem, res2, res3]" in text
    assert "learnt for fx = 424.2 px" in text and "thing_area 16" in text and "iteration 700" in text
    assert (
        "input: RGB, enlarged 1.5x, padded to multiples of 32" in text and "input scale note: input_scale 1.5" in text
    )
    (tmp_path / "junk.safetensors").write_bytes(b"\x08" + b"\x00" * 7 + b"not json")
    assert main(["info", str(tmp_path / "junk.safetensors")]) == 2
    assert "junk.safetensors: corrupt safetensors header" in capsys.readouterr().err


def test_depth_camera_travels_with_the_checkpoint(tmp_path: Path, tiny_checkpoint: Path) -> None:
    ckpt = load_checkpoint(tiny_checkpoint)
    config = ckpt.model_config.with_(depth_focal_px=424.2)
    path = save_checkpoint(
        tmp_path / "cam.safetensors",
        ckpt.build(),
        model_config=config,
        classes=ckpt.classes,
        postprocess=ckpt.postprocess,
    )
    assert load_checkpoint(path).model_config.depth_focal_px == 424.2
    older = {k: v for k, v in config.to_dict().items() if k != "depth_focal_px"}  # files from before the field
    assert ModelConfig.from_dict(older).depth_focal_px is None
    with pytest.raises(ValueError, match="depth_focal_px"):
        ModelConfig.tiny(depth_focal_px=-1.0)


def test_stride2_instance_branch_travels_with_the_checkpoint(tmp_path: Path) -> None:
    config = ModelConfig.tiny(aspp_strict_pool_size=False, instance=stride2_instance_branch())
    model = build_model(config).eval()
    assert model.strides == {"semantic": 4, "instance": 2, "depth": 4}
    assert "ins_embed_head.decoder.stem.project_conv.weight" in dict(model.named_parameters())
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        heads, out = model.forward_heads(x), model(x)
    assert heads["center"].shape[-2:] == (32, 48) and heads["sem_seg"].shape[-2:] == (16, 24)
    assert {k: tuple(v.shape[-2:]) for k, v in out.items()} == {k: (64, 96) for k in out}
    path = save_checkpoint(
        tmp_path / "s2.safetensors",
        model,
        model_config=config,
        classes=cityscapes_metadata(),
        postprocess=PostprocessConfig(),
    )
    loaded = load_checkpoint(path)
    assert loaded.model_config == config
    with torch.no_grad():
        again = loaded.build().eval()(x)
    assert all(torch.equal(out[k], again[k]) for k in out)
    # Files from before the field describe Detectron2's decoders.
    older = config.to_dict()
    for branch in ("semantic", "instance", "depth"):
        older[branch] = {k: v for k, v in older[branch].items() if k != "low_level"}
    older["instance"]["project_channels"] = [4, 8]
    assert ModelConfig.from_dict(older).instance.low_level == ("res2", "res3")


@pytest.mark.parametrize(
    ("branch", "match"),
    [
        ({"low_level": ("res3", "res2")}, "low_level must be one of"),
        ({"low_level": ("stem", "res2", "res3")}, "one width per low_level feature"),
    ],
)
def test_bad_low_level_is_named(branch: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        BranchConfig(project_channels=(8, 16), **branch)


def test_corrupt_and_truncated_ours(tmp_path: Path, tiny_checkpoint: Path) -> None:
    data = tiny_checkpoint.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) - 1000])
    with pytest.raises(CheckpointError, match="cut.safetensors: corrupt or truncated weights"):
        load_checkpoint(cut)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="garbage.safetensors: not a safetensors file"):
        load_checkpoint(garbage)
    with pytest.raises(CheckpointError, match="missing.safetensors: file not found"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_wrong_shapes_in_our_format_named(tmp_path: Path, tiny_checkpoint: Path) -> None:
    # Same weights, but the header claims a wider depth decoder: its convs mismatch.
    with safe_open(str(tiny_checkpoint), "pt") as f:
        meta = dict(f.metadata())
    config = ModelConfig.from_dict(json.loads(meta["model_config"]))
    wider = config.with_(depth=BranchConfig(project_channels=(8, 16), aspp_channels=32, convs_dim=20, head_channels=16))
    meta["model_config"] = json.dumps(wider.to_dict())
    path = tmp_path / "wider.safetensors"
    save_file(load_file(tiny_checkpoint), path, metadata=meta)
    with pytest.raises(CheckpointError, match=r"wider.safetensors: shape mismatch: depth_head\.decoder\.res2"):
        load_checkpoint(path)


def test_convert_cli_writes_loadable_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "converted.safetensors"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "panoptic_depthlab_ros.cli",
            "convert",
            str(FIXTURES / "tiny_model.pkl"),
            "--config",
            str(FIXTURES / "tiny_config.yaml"),
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert proc.returncode == 0, proc.stderr
    assert "initialized 82 depth-branch keys" in proc.stdout
    ckpt = load_checkpoint(out)
    assert ckpt.info["initialized_keys"][0].startswith("depth_head.")
    case = np.load(FIXTURES / "tiny_case.npz")
    bgr = np.ascontiguousarray(case["image"][:, :, ::-1])
    ours = Predictor.from_checkpoint(out, device="cpu").predict(bgr)
    outside = ~case["near_tie_mask"]
    np.testing.assert_array_equal(ours.panoptic[outside], case["panoptic_seg"][outside])


def test_convert_direct_report(tmp_path: Path) -> None:
    report = convert_detectron2(FIXTURES / "tiny_model.pkl", FIXTURES / "tiny_config.yaml", tmp_path / "c.safetensors")
    assert len(report.loaded) == 508 and len(report.initialized) == 82
