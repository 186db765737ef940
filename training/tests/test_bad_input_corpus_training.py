"""The bad-input corpus through ``panoptic-depthlab-training``: Cityscapes trees, outputs, checkpoints.

As the core's corpus: in-process ``main``, no traceback, the named error, the exit code,
and every file there before byte-identical after (generators: ``test/bad_inputs.py``).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from bad_inputs import assert_unchanged, bad_checkpoints, bad_image_files, png_declaring, run_main, snapshot

from panoptic_depthlab_ros.checkpoint import bundled_checkpoint
from panoptic_depthlab_training import cli
from panoptic_depthlab_training.cityscapes import list_samples

IMAGE_CASES = sorted(bad_image_files().items())


def _main(argv: list[str]):
    return run_main(cli.main, argv)


def _predict(root: Path, out: Path, *extra: str):
    args = ["predict", "--checkpoint", str(bundled_checkpoint()), "--data", str(root), "--split", "val"]
    return _main([*args, "--out", str(out), "--no-progress", *extra])


@pytest.mark.parametrize(("name", "case"), IMAGE_CASES, ids=[n for n, _ in IMAGE_CASES])
def test_image_in_a_cityscapes_tree(synth_copy: Path, tmp_path: Path, name: str, case) -> None:
    data, _, words = case
    victim, kept = list_samples(synth_copy, "val")
    victim.image.write_bytes(data)
    before = snapshot(tmp_path)
    verify = _main(["verify-cityscapes", str(synth_copy)])
    assert verify.code == 1 and f"unreadable: {victim.image}: " in verify.out, verify.out
    assert words in verify.out or "unreadable image" in verify.out
    predict = _predict(synth_copy, tmp_path / "pred")
    assert predict.code == 1 and f"skipped: {victim.image}" in predict.err and "wrote 1 frames" in predict.out
    train = _main(
        ["train", "--config", "quick_cpu", "--data", str(synth_copy), "--out", str(tmp_path / "run"), "--iters", "1"]
    )
    assert train.code == 2 and str(victim.image) in train.err and "refusing to train on a broken dataset" in train.err
    assert_unchanged(before)
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["log.txt"]  # the refusal, logged; a new run may start


GT_CASES = {
    "label_ids_bomb": (lambda f: f.label_ids.write_bytes(png_declaring(40000, 40000)), "label_ids", "absurd size"),
    "instance_ids_8bit": (
        lambda f: cv2.imwrite(str(f.instance_ids), np.zeros((64, 128), np.uint8)),
        "instance_ids",
        "expected 1-channel uint16",
    ),
    "camera_nan": (
        lambda f: f.camera.write_text(
            json.dumps(
                {"intrinsic": dict.fromkeys(("fx", "fy", "u0", "v0"), float("nan")), "extrinsic": {"baseline": 0.2}}
            )
        ),
        "camera",
        "finite",
    ),
    "camera_nested": (lambda f: f.camera.write_text("[" * 100_000 + "]" * 100_000), "camera", "not readable JSON"),
    "polygons_empty": (lambda f: f.polygons.write_bytes(b""), "polygons", "not readable JSON"),
    "disparity_missing": (lambda f: f.disparity.unlink(), "disparity", "missing"),
}


@pytest.mark.parametrize("name", sorted(GT_CASES))
def test_ground_truth_files(synth_copy: Path, tmp_path: Path, name: str) -> None:
    damage, field, words = GT_CASES[name]
    victim = list_samples(synth_copy, "val")[0]
    damage(victim)
    path = getattr(victim, field)
    before = snapshot(synth_copy)
    verify = _main(["verify-cityscapes", str(synth_copy)])
    assert verify.code == 1 and str(path) in verify.out and words in verify.out, verify.out
    evaluate = _main(
        ["evaluate", "--checkpoint", str(bundled_checkpoint()), "--data", str(synth_copy), "--no-progress"]
    )
    assert evaluate.code == 2 and str(path) in evaluate.err
    assert_unchanged(before)


def test_verify_pixel_limit(synth_copy: Path) -> None:
    run = _main(["verify-cityscapes", str(synth_copy), "--max-pixels", "1000"])
    assert run.code == 1 and "image 128x64 has 8192 pixels, above the limit --max-pixels=1000" in run.out


def test_predict_output_rules(synth_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _predict(synth_root, out).code == 0
    doc = json.loads((out / "cityscapes_panoptic_val.json").read_text())
    assert doc["written_by"] == "panoptic-depthlab-training predict"
    (out / "notes.txt").write_text("mine\n")  # other files in OUT are never touched
    gt = tmp_path / "gt"  # what createPanopticImgs writes: same names, not ours
    (gt / "cityscapes_panoptic_val").mkdir(parents=True)
    (gt / "cityscapes_panoptic_val.json").write_text('{"annotations": []}')
    before = snapshot(tmp_path)
    exists = _predict(synth_root, out)
    assert exists.code == 2 and "exists; pass --overwrite" in exists.err
    refused = _predict(synth_root, gt, "--overwrite")
    assert refused.code == 2 and "was not written by panoptic-depthlab-training predict" in refused.err
    broken = tmp_path / "broken"
    (broken / "leftImg8bit" / "val" / "x").mkdir(parents=True)
    (broken / "leftImg8bit" / "val" / "x" / "x_000000_000000_leftImg8bit.png").write_bytes(b"")
    failed = _predict(broken, out, "--overwrite")  # nothing usable: the earlier predictions stay
    assert failed.code == 2 and "no frame of the val split could be predicted" in failed.err
    assert "skipped: " in failed.err
    assert_unchanged(before)
    assert _predict(synth_root, out, "--overwrite", "--limit", "1").code == 0
    assert len(json.loads((out / "cityscapes_panoptic_val.json").read_text())["annotations"]) == 1
    assert (out / "notes.txt").read_text() == "mine\n"


def test_train_output_rules(synth_root: Path, tmp_path: Path) -> None:
    base = ["train", "--config", "quick_cpu", "--data", str(synth_root), "--iters", "1", "--no-progress"]
    user = tmp_path / "user"
    user.mkdir()
    (user / "config.yaml").write_text("mine: true\n")
    (tmp_path / "a_file").write_text("x\n")
    before = snapshot(tmp_path)
    for out, extra, words in (
        (user, [], "is not empty (config.yaml)"),
        (user, ["--resume"], "holds no run to resume"),
        (tmp_path / "a_file", [], "is a file, not a folder"),
    ):
        run = _main([*base, "--out", str(out), *extra])
        assert run.code == 2 and words in run.err, run.err
    assert_unchanged(before)


def test_demo_bag_output_rules(tmp_path: Path) -> None:
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("mine\n")
    args = ["--frames", "1", "--height", "32", "--width", "64"]
    before = snapshot(tmp_path)
    run = _main(["demo-bag", str(user), "--overwrite", *args])
    assert run.code == 2 and "was not written by panoptic-depthlab-training demo-bag" in run.err
    assert_unchanged(before)
    assert _main(["demo-bag", str(tmp_path / "bag"), *args]).code == 0
    assert _main(["demo-bag", str(tmp_path / "bag"), *args]).code == 2  # exists
    assert _main(["demo-bag", str(tmp_path / "bag"), "--overwrite", *args]).code == 0


@pytest.mark.parametrize("name", ["stem_channels", "pixel_std_zero", "truncated_weights"])
def test_checkpoints_through_predict_and_evaluate(synth_root: Path, tmp_path: Path, name: str) -> None:
    write, words = bad_checkpoints()[name]
    ckpt = write(tmp_path / f"{name}.safetensors", bundled_checkpoint())
    for argv in (
        [
            "predict",
            "--checkpoint",
            str(ckpt),
            "--data",
            str(synth_root),
            "--split",
            "val",
            "--out",
            str(tmp_path / "o"),
        ],
        ["evaluate", "--checkpoint", str(ckpt), "--data", str(synth_root), "--no-progress"],
    ):
        run = _main(argv)
        assert run.code == 2 and words in run.err and str(ckpt) in run.err, run.err
    assert not (tmp_path / "o").exists()
