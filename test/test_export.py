"""Export round trips (ONNX through onnxruntime, TorchScript) with parity, and clear errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from panoptic_depthlab_ros.checkpoint import convert_detectron2, load_checkpoint, save_checkpoint
from panoptic_depthlab_ros.errors import CheckpointError, InputError, PanopticDepthLabError
from panoptic_depthlab_ros.export import ExportError, export_model
from panoptic_depthlab_ros.model import build_model
from panoptic_depthlab_ros.predictor import Predictor
from panoptic_depthlab_ros.preprocess import prepare_image
from pdl_testing import FIXTURES, REPO, assert_result_parity, stride2_instance_branch


@pytest.fixture(scope="module")
def fixture_ckpt(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("d2") / "tiny_d2.safetensors"
    convert_detectron2(FIXTURES / "tiny_model.pkl", FIXTURES / "tiny_config.yaml", out)
    return out


@pytest.fixture(scope="module")
def case():
    return dict(np.load(FIXTURES / "tiny_case.npz"))


def test_onnx_parity_on_detectron2_fixture(tmp_path: Path, fixture_ckpt: Path, case) -> None:
    onnx_path = tmp_path / "tiny.onnx"
    side = export_model(fixture_ckpt, onnx_path, fmt="onnx", dynamic=True)
    assert side == tmp_path / "tiny.onnx.json" and side.is_file()
    bgr = np.ascontiguousarray(case["image"][:, :, ::-1])
    # The conversion's depth branch is untrained (both say so); its depth is compared all the same.
    pt = Predictor.from_checkpoint(fixture_ckpt, device="cpu", untrained_depth=True)
    ox = Predictor.from_checkpoint(onnx_path, device="cpu", backend="onnxruntime", untrained_depth=True)
    assert not pt.model_config.depth_trained and not ox.model_config.depth_trained
    assert ox.classes == pt.classes and ox.postprocess == pt.postprocess
    a, b = pt.raw(bgr), ox.raw(bgr)
    # This fixture's logits reach +-45: float32 itself differs from float64 by 1.4e-3 there,
    # so compare at the fixture's own tolerances (absolute) and 1e-4 relative to the range.
    for key, tol in (("sem_seg", 5e-3), ("center", 3e-4), ("offset", 5e-3), ("depth", 1e-3)):
        diff = float((a[key] - b[key]).abs().max())
        assert diff <= tol, key
        assert diff <= 1e-4 * float(a[key].abs().max()) + 1e-5, key
    assert_result_parity(pt, ox, bgr, tie_mask=case["near_tie_mask"])
    # ...and both equal Detectron2's panoptic map outside the near-tie pixels.
    outside = ~case["near_tie_mask"]
    np.testing.assert_array_equal(ox.predict(bgr).panoptic[outside], case["panoptic_seg"][outside])


def test_onnx_dynamic_shape_and_tiny_model(tmp_path: Path, tiny_checkpoint: Path) -> None:
    onnx_path = tmp_path / "dyn.onnx"
    export_model(tiny_checkpoint, onnx_path, fmt="onnx", dynamic=True)
    pt = Predictor.from_checkpoint(tiny_checkpoint, device="cpu")
    ox = Predictor.from_checkpoint(onnx_path, device="cpu", backend="onnxruntime")
    rng = np.random.default_rng(0)
    for shape in ((96, 160, 3), (100, 170, 3), (128, 256, 3)):  # 100x170 is padded to 128x192
        img = rng.integers(0, 256, shape, dtype=np.uint8)
        a, b = pt.raw(img), ox.raw(img)
        for key in a:
            assert float((a[key] - b[key]).abs().max()) < 1e-3, (shape, key)
        assert_result_parity(pt, ox, img)


def test_onnx_export_of_a_stride2_instance_branch(tmp_path: Path, tiny_checkpoint: Path) -> None:
    # The demo model's instance branch fuses the stem and outputs at stride 2.
    ckpt = load_checkpoint(tiny_checkpoint)
    config = ckpt.model_config.with_(instance=stride2_instance_branch())
    torch.manual_seed(1)
    model = build_model(config).eval()
    ckpt_path = save_checkpoint(
        tmp_path / "s2.safetensors", model, model_config=config, classes=ckpt.classes, postprocess=ckpt.postprocess
    )
    onnx_path = tmp_path / "s2.onnx"
    export_model(ckpt_path, onnx_path, fmt="onnx", dynamic=True)
    pt = Predictor.from_checkpoint(ckpt_path, device="cpu")
    ox = Predictor.from_checkpoint(onnx_path, device="cpu", backend="onnxruntime")
    img = np.random.default_rng(3).integers(0, 256, (96, 160, 3), dtype=np.uint8)
    a, b = pt.raw(img), ox.raw(img)
    for key in a:
        assert float((a[key] - b[key]).abs().max()) < 1e-3, key


def test_onnxruntime_follows_the_torch_thread_setting(
    tmp_path: Path, tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    onnx_path = tmp_path / "m.onnx"
    export_model(tiny_checkpoint, onnx_path, fmt="onnx", height=64, width=128)
    from panoptic_depthlab_ros.cli import main

    assert main(["info", str(onnx_path)]) == 0  # an export describes itself too
    assert "m.onnx: ONNX export (64x128)" in capsys.readouterr().out
    # a fixed-size export refuses other sizes by name, not with onnxruntime's shape dump
    fixed = Predictor.from_checkpoint(onnx_path, device="cpu", backend="onnxruntime")
    assert fixed.predict(np.zeros((64, 128, 3), np.uint8)).panoptic.shape == (64, 128)
    with pytest.raises(InputError, match=r"m.onnx was exported for 64x128 inputs, this frame needs 96x160"):
        fixed.predict(np.zeros((90, 150, 3), np.uint8))
    with pytest.raises(PanopticDepthLabError, match="multi-scale inference needs an input of any size"):
        Predictor.from_checkpoint(onnx_path, device="cpu", backend="onnxruntime", scales=(1.0, 1.5))
    before = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)  # what the node's num_threads parameter does
            ox = Predictor.from_checkpoint(onnx_path, device="cpu", backend="onnxruntime")
            assert ox.network.session.get_session_options().intra_op_num_threads == n
    finally:
        torch.set_num_threads(before)


def test_torchscript_roundtrip(tmp_path: Path, tiny_checkpoint: Path) -> None:
    out = tmp_path / "tiny.pt"
    export_model(tiny_checkpoint, out, fmt="torchscript", height=128, width=256)
    traced = torch.jit.load(str(out))
    pt = Predictor.from_checkpoint(tiny_checkpoint, device="cpu")
    img = np.random.default_rng(1).integers(0, 256, (128, 256, 3), dtype=np.uint8)
    x = prepare_image(img, pt.model_config).tensor
    with torch.no_grad():
        sem, center, offset, depth = traced(x)
        ref = pt.network(x)
    for got, key in ((sem, "sem_seg"), (center, "center"), (offset, "offset"), (depth, "depth")):
        assert float((got - ref[key]).abs().max()) < 1e-4, key
    extra = {"panoptic_depthlab.json": ""}
    torch.jit.load(str(out), _extra_files=extra)
    assert b'"export_format": "torchscript"' in extra["panoptic_depthlab.json"]


def test_export_errors_name_the_cause(tmp_path: Path, tiny_checkpoint: Path) -> None:
    with pytest.raises(ExportError, match="100x256 is not a positive multiple of 32"):
        export_model(tiny_checkpoint, tmp_path / "x.onnx", height=100, width=256)
    with pytest.raises(ExportError, match="smaller than the ASPP pooling window"):
        export_model(tiny_checkpoint, tmp_path / "x.onnx", height=32, width=64)
    with pytest.raises(ExportError, match="supported for ONNX only"):
        export_model(tiny_checkpoint, tmp_path / "x.pt", fmt="torchscript", dynamic=True)
    with pytest.raises(ExportError, match="unknown export format 'tflite'"):
        export_model(tiny_checkpoint, tmp_path / "x.tflite", fmt="tflite", height=64, width=128)


def test_malformed_onnx_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"this is not a protobuf \x00\x01\x02" * 10)
    with pytest.raises(CheckpointError, match="broken.onnx: not a valid ONNX model"):
        Predictor.from_checkpoint(bad, device="cpu", backend="onnxruntime")
    with pytest.raises(CheckpointError, match="gone.onnx: file not found"):
        Predictor.from_checkpoint(tmp_path / "gone.onnx", device="cpu", backend="onnxruntime")


def test_export_cli(tmp_path: Path, tiny_checkpoint: Path) -> None:
    out = tmp_path / "cli.onnx"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "panoptic_depthlab_ros.cli",
            "export",
            str(tiny_checkpoint),
            str(out),
            "--format",
            "onnx",
            "--height",
            "128",
            "--width",
            "256",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.is_file() and (tmp_path / "cli.onnx.json").is_file()
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "panoptic_depthlab_ros.cli",
            "export",
            str(tiny_checkpoint),
            str(tmp_path / "b.onnx"),
            "--height",
            "130",
            "--width",
            "256",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert bad.returncode == 2 and "not a positive multiple of 32" in bad.stderr
