"""``predict``: a split's predictions in the Cityscapes benchmark's files, checked with
cityscapesscripts' own ground-truth conversion and panoptic evaluation."""

from __future__ import annotations

import json
import math
import shutil

import cv2
import numpy as np
import pytest
from cityscapesscripts.evaluation.evalPanopticSemanticLabeling import evaluatePanoptic
from cityscapesscripts.preparation.createPanopticImgs import convert2panoptic

from panoptic_depthlab_ros.checkpoint import bundled_checkpoint
from panoptic_depthlab_ros.infer import depth_to_png_mm
from panoptic_depthlab_ros.predictor import Predictor
from panoptic_depthlab_training import cli
from panoptic_depthlab_training.cityscapes import camera_matrix, list_samples, read_camera, read_image
from panoptic_depthlab_training.evaluate import evaluate_split

pytestmark = pytest.mark.usefixtures("one_thread")


def test_predictions_score_the_same_in_cityscapesscripts(synth_root, tmp_path, capsys):
    out = tmp_path / "pred"
    args = ["predict", "--checkpoint", str(bundled_checkpoint()), "--data", str(synth_root)]
    assert cli.main([*args, "--split", "val", "--out", str(out), "--no-progress"]) == 0
    assert "wrote 2 frames" in capsys.readouterr().out
    pred_json = out / "cityscapes_panoptic_val.json"
    doc = json.loads(pred_json.read_text())
    samples = list_samples(synth_root, "val")
    assert [a["image_id"] for a in doc["annotations"]] == [s.stem for s in samples]
    assert {c["id"] for c in doc["categories"]} >= {7, 26}  # road, car (labelIds)

    # depth files: the predictor's depth for the frame's camera, in millimetres
    predictor = Predictor.from_checkpoint(bundled_checkpoint(), device="cpu")
    first = samples[0]
    result = predictor.predict(read_image(first.image), camera_k=camera_matrix(read_camera(first.camera)))
    written = cv2.imread(str(out / "depth_val" / f"{first.stem}_depth.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(written, depth_to_png_mm(result.depth))

    # the official tools: ground truth from instanceIds, then their evaluation of our files
    (tmp_path / "gt").mkdir()
    convert2panoptic(str(synth_root / "gtFine"), str(tmp_path / "gt"), setNames=["val"])
    theirs = evaluatePanoptic(
        str(tmp_path / "gt" / "cityscapes_panoptic_val.json"),
        str(tmp_path / "gt" / "cityscapes_panoptic_val"),
        str(pred_json),
        str(out / "cityscapes_panoptic_val"),
        str(tmp_path / "result.json"),
    )
    ours = evaluate_split(predictor, data_root=synth_root, split="val", max_depth=None, progress=False)
    assert theirs["All"]["pq"] > 0.1  # the demo model finds road, sky, buildings here
    for group, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
        for metric in ("pq", "sq", "rq"):
            mine = ours[metric.upper() + suffix]
            if math.isnan(mine):
                assert theirs[group]["n"] == 0
            else:
                assert mine / 100 == pytest.approx(theirs[group][metric], abs=1e-9), (group, metric)


def test_predict_without_ground_truth_skips_a_broken_image(synth_root, tmp_path, capsys):
    root = tmp_path / "cityscapes"
    shutil.copytree(synth_root, root, ignore=shutil.ignore_patterns("gtFine", "disparity"))
    broken, kept = list_samples(root, "val")
    broken.image.write_bytes(b"not a png")
    kept.camera.unlink()  # no camera: depth as the training camera sees it
    out = tmp_path / "pred"
    args = ["predict", "--checkpoint", str(bundled_checkpoint()), "--data", str(root), "--split", "val"]
    assert cli.main([*args, "--out", str(out), "--no-progress"]) == 1
    printed = capsys.readouterr()
    assert f"skipped: {broken.image}" in printed.err and "wrote 1 frames" in printed.out
    doc = json.loads((out / "cityscapes_panoptic_val.json").read_text())
    assert [a["image_id"] for a in doc["annotations"]] == [kept.stem]
    png = cv2.imread(str(out / "cityscapes_panoptic_val" / doc["annotations"][0]["file_name"]), cv2.IMREAD_COLOR)
    png = png.astype(np.int64)
    ids = png[..., 2] + 256 * png[..., 1] + 65536 * png[..., 0]  # BGR on disk
    listed = {s["id"] for s in doc["annotations"][0]["segments_info"]}
    assert set(np.unique(ids).tolist()) - {0} == listed  # every id in the PNG is described
    assert (
        cli.main(
            ["predict", "--checkpoint", str(bundled_checkpoint()), "--data", str(tmp_path / "none")]
            + ["--out", str(out)]
        )
        == 2  # nothing done
    )
    assert "no image directory" in capsys.readouterr().err
