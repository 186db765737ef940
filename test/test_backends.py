"""Backends of an export: OpenVINO's parity with torch, the auto rule, threads, and missing runtimes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from panoptic_depthlab_ros.backends import choose_backend
from panoptic_depthlab_ros.cli import main
from panoptic_depthlab_ros.errors import InputError, PanopticDepthLabError
from panoptic_depthlab_ros.export import export_model
from panoptic_depthlab_ros.predictor import Predictor
from pdl_testing import REPO, assert_result_parity


@pytest.fixture(scope="module")
def exports(tmp_path_factory, tiny_checkpoint) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("exports")
    out = {"dynamic": folder / "dyn.onnx", "fixed": folder / "fixed.onnx"}
    export_model(tiny_checkpoint, out["dynamic"], dynamic=True)
    export_model(tiny_checkpoint, out["fixed"], height=64, width=128)
    return out


def test_openvino_gives_torchs_results(exports, tiny_checkpoint) -> None:
    pt = Predictor.from_checkpoint(tiny_checkpoint, device="cpu")
    ov = Predictor.from_checkpoint(exports["dynamic"], device="cpu", backend="openvino")
    assert ov.backend == "openvino" and ov.classes == pt.classes and ov.postprocess == pt.postprocess
    rng = np.random.default_rng(0)
    for shape in ((96, 160, 3), (100, 170, 3), (64, 128, 3), (96, 160, 3)):  # a new size compiles anew
        img = rng.integers(0, 256, shape, dtype=np.uint8)
        a, b = pt.raw(img), ov.raw(img)
        for key in a:
            assert float((a[key] - b[key]).abs().max()) < 1e-3, (shape, key)
        assert_result_parity(pt, ov, img)
    assert len(ov.network._compiled) == 3  # one compiled model per padded size: 96x160, 128x192, 64x128


def test_openvino_lends_its_outputs_and_nothing_kept_changes_with_the_next_frame(exports, tiny_checkpoint) -> None:
    # OpenVINO's outputs are views of buffers its next call overwrites: every pass that runs
    # the network again (flip, scales, a batch's next image) and everything kept must hold copies.
    ov = Predictor.from_checkpoint(exports["dynamic"], device="cpu", backend="openvino")
    assert ov.network.reuses_outputs
    rng = np.random.default_rng(1)
    first, second = (rng.integers(0, 256, (64, 128, 3), dtype=np.uint8) for _ in range(2))
    alone = ov.predict(first)
    depth, panoptic = alone.depth.copy(), alone.panoptic.copy()
    raw = ov.raw(first)
    raw_depth = raw["depth"].clone()
    ov.predict(second)
    np.testing.assert_array_equal(alone.depth, depth)  # the result's depth is its own
    assert torch.equal(raw["depth"], raw_depth)
    batch = ov.predict_batch([first, second])  # one image at a time through the export
    np.testing.assert_array_equal(batch[0].panoptic, panoptic)
    np.testing.assert_allclose(batch[0].depth, depth, rtol=1e-6)
    np.testing.assert_array_equal(batch[1].panoptic, ov.predict(second).panoptic)
    for options in ({"flip_average": True}, {"scales": (1.0, 1.5)}):
        pt = Predictor.from_checkpoint(tiny_checkpoint, device="cpu", **options)
        tta = Predictor.from_checkpoint(exports["dynamic"], device="cpu", backend="openvino", **options)
        a, b = pt.raw(first), tta.raw(first)
        for key in a:
            assert float((a[key] - b[key]).abs().max()) < 1e-3, (options, key)


def test_openvino_refuses_sizes_the_export_does_not_take(exports) -> None:
    ov = Predictor.from_checkpoint(exports["fixed"], device="cpu", backend="openvino")
    assert ov.predict(np.zeros((64, 128, 3), np.uint8)).panoptic.shape == (64, 128)
    with pytest.raises(InputError, match=r"fixed.onnx was exported for 64x128 inputs, this frame needs 96x160"):
        ov.predict(np.zeros((90, 150, 3), np.uint8))


def test_every_backend_follows_the_torch_thread_setting(exports) -> None:
    before = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)  # what the node's num_threads parameter does
            ov = Predictor.from_checkpoint(exports["fixed"], device="cpu", backend="openvino")
            compiled = next(iter(ov.network._compiled.values())).get_compiled_model()
            assert compiled.get_property("INFERENCE_NUM_THREADS") == n
            assert "LATENCY" in str(compiled.get_property("PERFORMANCE_HINT"))
            assert int(compiled.get_property("NUM_STREAMS")) == 1
            assert "f32" in str(compiled.get_property("INFERENCE_PRECISION_HINT")).replace("float32", "f32")
            ort = Predictor.from_checkpoint(exports["fixed"], device="cpu", backend="onnxruntime")
            options = ort.network.session.get_session_options()
            assert options.intra_op_num_threads == n
            assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    finally:
        torch.set_num_threads(before)


def test_auto_picks_by_the_documented_rule(exports, tiny_checkpoint) -> None:
    cpu = torch.device("cpu")
    assert choose_backend(tiny_checkpoint, "auto", device=cpu) == "torch"
    assert choose_backend(exports["fixed"], "auto", device=cpu) == "openvino"
    assert choose_backend(exports["fixed"], "auto", device=torch.device("cuda")) == "onnxruntime"
    assert Predictor.from_checkpoint(exports["fixed"], "cpu").backend == "openvino"  # auto is the default
    assert Predictor.from_checkpoint(tiny_checkpoint, "cpu").backend == "torch"
    with pytest.raises(PanopticDepthLabError, match="fixed.onnx is an exported ONNX network: run it with backend"):
        Predictor.from_checkpoint(exports["fixed"], "cpu", backend="torch")
    with pytest.raises(PanopticDepthLabError, match=r"backend openvino runs an exported .onnx network; .*tiny"):
        Predictor.from_checkpoint(tiny_checkpoint, "cpu", backend="openvino")
    with pytest.raises(PanopticDepthLabError, match="backend must be one of auto, torch, onnxruntime, openvino"):
        Predictor.from_checkpoint(tiny_checkpoint, "cpu", backend="tensorrt")
    with pytest.raises(PanopticDepthLabError, match="backend openvino runs on the CPU, not on cuda"):
        choose_backend(exports["fixed"], "openvino", device=torch.device("cuda"))


def test_infer_and_bag_take_a_backend(exports, tmp_path, capsys) -> None:
    images = tmp_path / "in"
    images.mkdir()
    import cv2

    frame = np.random.default_rng(2).integers(0, 256, (64, 128, 3), dtype=np.uint8)
    cv2.imwrite(str(images / "a.png"), frame)
    for backend in ("openvino", "onnxruntime", "auto"):
        out = tmp_path / f"out_{backend}"
        assert (
            main(
                ["infer", str(images), "--out", str(out), "--checkpoint", str(exports["fixed"])]
                + ["--backend", backend]
            )
            == 0
        )
        assert (out / "a_panoptic.png").is_file()
    pans = [cv2.imread(str(tmp_path / f"out_{b}" / "a_panoptic.png")) for b in ("openvino", "onnxruntime")]
    np.testing.assert_array_equal(pans[0], pans[1])
    from pdl_testing import write_image_bag

    bag = write_image_bag(tmp_path / "bag", [frame, frame])
    assert (
        main(
            ["bag", str(bag), str(tmp_path / "bag_out"), "--checkpoint", str(exports["fixed"]), "--backend", "openvino"]
        )
        == 0
    )
    assert "2 frames" in capsys.readouterr().out
    assert (
        main(
            [
                "infer",
                str(images),
                "--out",
                str(tmp_path / "x"),
                "--checkpoint",
                str(exports["fixed"]),
                "--backend",
                "torch",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is an exported ONNX network: run it with backend onnxruntime, openvino or auto" in err[0]


def test_without_openvino_auto_falls_back_and_openvino_is_a_clear_error(exports, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if it were not installed
    assert choose_backend(exports["fixed"], "auto", device=torch.device("cpu")) == "onnxruntime"
    assert Predictor.from_checkpoint(exports["fixed"], "cpu").backend == "onnxruntime"
    with pytest.raises(
        PanopticDepthLabError,
        match=r"backend openvino needs the openvino package, which is not installed:"
        r" pip install 'panoptic-depthlab-ros\[openvino\]'",
    ):
        Predictor.from_checkpoint(exports["fixed"], "cpu", backend="openvino")
    images = tmp_path / "in"
    images.mkdir()
    (images / "a.png").write_bytes(b"")  # never read: the model fails first
    code = main(
        [
            "infer",
            str(images),
            "--out",
            str(tmp_path / "o"),
            "--checkpoint",
            str(exports["fixed"]),
            "--backend",
            "openvino",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "needs the openvino package" in err[0]


def test_the_runtime_imports_and_runs_without_openvino(exports) -> None:
    code = (
        "import sys; sys.modules['openvino'] = None\n"
        "import numpy as np\n"
        "import panoptic_depthlab_ros.cli, panoptic_depthlab_ros.backends, panoptic_depthlab_ros.quantize\n"
        "from panoptic_depthlab_ros.predictor import Predictor\n"
        f"p = Predictor.from_checkpoint({str(exports['fixed'])!r}, 'cpu')\n"
        "p.predict(np.zeros((64, 128, 3), np.uint8))\n"
        "print(p.backend)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "onnxruntime"
