"""``evaluate`` scores an exported network (fp32 or INT8) in the backend asked for."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from panoptic_depthlab_ros.export import export_model
from panoptic_depthlab_ros.quantize import Int8Settings
from panoptic_depthlab_training import cli

SCORES = ("PQ", "mIoU", "AbsRel", "DPQ")


def _evaluate(checkpoint: Path, data: Path, out: Path, *extra: str) -> dict:
    args = ["evaluate", "--checkpoint", str(checkpoint), "--data", str(data), "--json", str(out), "--no-progress"]
    assert cli.main([*args, *extra]) == 0
    return json.loads(out.read_text())


def test_evaluate_an_export_in_each_backend(tiny_checkpoint, synth_root, tmp_path, one_thread) -> None:
    fp32, int8 = tmp_path / "m.onnx", tmp_path / "m.int8.onnx"
    export_model(tiny_checkpoint, fp32, height=64, width=128)
    calibration = synth_root / "leftImg8bit" / "train"
    export_model(tiny_checkpoint, int8, height=64, width=128, int8=Int8Settings(calibration, 3, "minmax"))
    torch_doc = _evaluate(tiny_checkpoint, synth_root, tmp_path / "torch.json")
    assert torch_doc["info"]["backend"] == "torch"
    for backend in ("onnxruntime", "openvino"):
        doc = _evaluate(fp32, synth_root, tmp_path / f"{backend}.json", "--backend", backend)
        assert doc["info"]["backend"] == backend and doc["info"]["training_iteration"] is None
        for key in SCORES:  # the fp32 export is the same network: the same scores
            assert doc[key] == pytest.approx(torch_doc[key], abs=1e-3, nan_ok=True), (backend, key)
        q = _evaluate(int8, synth_root, tmp_path / f"{backend}_int8.json", "--backend", backend)
        assert q["info"]["backend"] == backend and q["num_images"] == torch_doc["num_images"]
        assert 0 <= q["PQ"] <= 100 and q["AbsRel"] > 0
        assert q["AbsRel"] != torch_doc["AbsRel"]  # the INT8 network was scored, not a float one
    auto = _evaluate(int8, synth_root, tmp_path / "auto.json")
    assert auto["info"]["backend"] == "openvino"
