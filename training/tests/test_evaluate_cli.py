"""Evaluation through the pipeline (load -> predict -> evaluator) and the CLI end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from panoptic_depthlab_ros.metadata import cityscapes_metadata
from panoptic_depthlab_ros.predictor import Predictor
from panoptic_depthlab_training import cli
from panoptic_depthlab_training.cityscapes import CityscapesSample, list_samples, load_sample
from panoptic_depthlab_training.evaluate import Prediction, band_metrics, evaluate, merge_evaluators, predictor_fn
from panoptic_depthlab_training.metrics import PanopticDepthEvaluator

pytestmark = pytest.mark.usefixtures("one_thread")

METRIC_KEYS = (
    "PQ",
    "SQ",
    "RQ",
    "PQ_th",
    "PQ_st",
    "mIoU",
    "AbsRel",
    "SqRel",
    "RMSE",
    "RMSElog",
    "delta1",
    "delta2",
    "delta3",
    "DPQ",
    "DPQ_0.1",
    "DPQ_0.25",
    "DPQ_0.5",
    "segment_depth_mae",
    "segment_depth_absrel",
)


def _ground_truth(sample: CityscapesSample) -> Prediction:
    return Prediction(panoptic=sample.panoptic, semantic=sample.semantic, depth=sample.depth)


def _evaluate(root: Path, predict, samples=None) -> dict:
    samples = list_samples(root, "val") if samples is None else samples
    ev = evaluate(predict, samples, evaluator=PanopticDepthEvaluator(), max_depth=None, progress=False)
    return ev.summary()


def test_ground_truth_as_prediction_scores_perfectly(synth_root):
    s = _evaluate(synth_root, _ground_truth)
    for key in ("PQ", "SQ", "RQ", "mIoU", "DPQ", "DPQ_0.1"):
        assert s[key] == pytest.approx(100.0), key
    for key in ("AbsRel", "SqRel", "RMSE", "RMSElog", "segment_depth_mae"):
        assert s[key] == pytest.approx(0.0, abs=1e-7), key
    assert s["delta1"] == s["delta2"] == s["delta3"] == 1.0
    bands = band_metrics(s)
    assert set(bands) == {f"{m}_th_{span}" for m in ("PQ", "RQ") for span in ("0-20m", "20-40m", "40-80m", "80m+")}
    present = [v for k, v in bands.items() if v is not None]  # a band without things has no PQ
    assert present and all(v == pytest.approx(100.0) for v in present)


def test_known_perturbation_gives_computed_metrics(synth_root):
    samples = list_samples(synth_root, "val")
    loaded = [load_sample(f) for f in samples]
    # the first non-crowd thing segment of the split vanishes from the prediction
    victim_image, victim = next(
        (i, seg) for i, s in enumerate(loaded) for seg in s.segments if seg["is_thing"] and not seg["iscrowd"]
    )
    stems = [s.stem for s in loaded]

    def predict(sample: CityscapesSample) -> Prediction:
        panoptic = sample.panoptic.copy()
        if sample.stem == stems[victim_image]:
            panoptic[panoptic == victim["id"]] = -1
        return Prediction(panoptic=panoptic, semantic=sample.semantic, depth=sample.depth * np.float32(1.2))

    s = _evaluate(synth_root, predict, samples)
    # depth x 1.2: |d - d*| / d* = 0.2 everywhere; SqRel = 0.04 mean(d*); RMSE = 0.2 rms(d*),
    # each per image then averaged over images; every ratio 1.2 < 1.25
    gts = [x.depth[x.depth_valid].astype(np.float64) for x in loaded]
    assert s["AbsRel"] == pytest.approx(0.2, rel=1e-5)
    assert s["SqRel"] == pytest.approx(np.mean([0.04 * g.mean() for g in gts]), rel=1e-5)
    assert s["RMSE"] == pytest.approx(np.mean([0.2 * np.sqrt(np.mean(g**2)) for g in gts]), rel=1e-5)
    assert s["RMSElog"] == pytest.approx(math.log(1.2), rel=1e-5)
    assert s["delta1"] == 1.0
    assert s["segment_depth_absrel"] == pytest.approx(0.2, rel=1e-5)
    # the victim's class: one false negative among its n ground-truth instances, the
    # others matched with IoU 1 -> PQ_c = (n - 1) / (n - 1 + 0.5); every other class 100
    cat = victim["category_id"]
    n = sum(1 for x in loaded for seg in x.segments if seg["category_id"] == cat and not seg["iscrowd"])
    name = cityscapes_metadata().names[cat]
    row = s["per_class"][name]
    assert (row["TP"], row["FN"], row["FP"]) == (n - 1, 1, 0)
    assert row["PQ"] == pytest.approx(100 * (n - 1) / (n - 0.5))
    present = [r for r in s["per_class"].values() if r["TP"] + r["FP"] + r["FN"] > 0]
    assert s["PQ"] == pytest.approx((100 * (len(present) - 1) + row["PQ"]) / len(present))
    # the 0.25 and 0.5 DPQ thresholds accept a 20 % depth error: they equal PQ
    assert s["DPQ_0.25"] == pytest.approx(s["PQ"]) and s["DPQ_0.5"] == pytest.approx(s["PQ"])
    assert s["DPQ_0.1"] < s["PQ"]
    # sharding the split and merging the accumulators gives the same numbers
    halves = [
        evaluate(predict, part, evaluator=PanopticDepthEvaluator(), max_depth=None, progress=False)
        for part in (samples[:1], samples[1:])
    ]
    merged = merge_evaluators(halves).summary()
    for key in METRIC_KEYS:
        assert merged[key] == pytest.approx(s[key], nan_ok=True), key


@pytest.fixture(scope="module")
def trained(synth_root, tmp_path_factory) -> Path:
    """Output folder of a 2-iteration quick_cpu run started from the CLI (image panels on)."""
    out = tmp_path_factory.mktemp("cli_train")
    args = ["train", "--config", "quick_cpu", "--data", str(synth_root), "--out", str(out), "--iters", "2"]
    args += ["--no-progress", "data.crop_size=[64,128]", "data.workers=0", "data.batch_per_device=2"]
    args += ["solver.ims_per_batch=2", "eval.period=0", "log.image_period=1", "log.period=1"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # module-scoped: set up before the per-test thread fixture
    try:
        assert cli.main(args) == 0
    finally:
        torch.set_num_threads(threads)
    return out


def test_cli_train_writes_checkpoints_logs_and_tensorboard(trained):
    names = {p.name for p in trained.iterdir()}
    assert {"model_final.safetensors", "last_state.pt", "config.yaml", "log.txt", "tensorboard"} <= names
    events = EventAccumulator(str(trained / "tensorboard"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"loss/loss_sem_seg", "loss/loss_center", "loss/loss_offset", "loss/loss_depth"} <= scalars
    assert {"loss/total_loss", "train/lr", "train/throughput"} <= scalars
    assert [e.step for e in events.Scalars("loss/loss_depth")] == [1, 2]
    assert "train/sample" in events.Tags()["images"]
    assert "iter 2/2" in (trained / "log.txt").read_text()


def test_cli_evaluate_checkpoint_end_to_end(trained, synth_root, tmp_path, capsys):
    out = tmp_path / "metrics.json"
    code = cli.main(
        [
            "evaluate",
            "--checkpoint",
            str(trained / "model_final.safetensors"),
            "--data",
            str(synth_root),
            "--split",
            "val",
            "--json",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0
    doc = json.loads(out.read_text())
    for key in METRIC_KEYS:
        assert key in doc, key
    assert doc["num_images"] == len(list_samples(synth_root, "val"))
    assert 0.0 <= doc["PQ"] <= 100.0 and 0.0 <= doc["mIoU"] <= 100.0
    assert doc["AbsRel"] > 0 and 0.0 <= doc["delta1"] <= 1.0 and doc["RMSE"] > 0
    assert set(doc["per_class"]) == set(cityscapes_metadata().names)
    assert doc["info"]["split"] == "val" and doc["info"]["gt_max_depth"] == 80.0
    printed = capsys.readouterr().out
    assert "Things" in printed and "AbsRel" in printed and "things at" in printed
    assert doc["info"]["flip_average"] is False
    bands = doc["by_distance"]
    assert [(r["min_m"], r["max_m"]) for r in bands] == [(0, 20), (20, 40), (40, 80), (80, None)]  # inf -> null
    things = [n for n in cityscapes_metadata().names if doc["per_class"][n]["is_thing"]]
    for key in ("TP", "FP", "FN"):  # GT things beyond gt_max_depth (80 m) have no depth, so no band
        assert sum(r[key] for r in bands) <= sum(doc["per_class"][n][key] for n in things)
    assert sum(r["FN"] for r in bands) > 0
    assert bands[-1]["TP"] == bands[-1]["FN"] == bands[-1]["pixels"] == 0
    assert sum(r["pixels"] for r in bands) > 0

    flipped = tmp_path / "flipped.json"
    args = ["evaluate", "--checkpoint", str(trained / "model_final.safetensors"), "--data", str(synth_root)]
    assert cli.main([*args, "--json", str(flipped), "--no-progress", "--limit", "1", "--flip-average"]) == 0
    one = tmp_path / "one.json"
    assert cli.main([*args, "--json", str(one), "--no-progress", "--limit", "1", "--distance-bands", "0,30"]) == 0
    with_flip, without = json.loads(flipped.read_text()), json.loads(one.read_text())
    assert [(r["min_m"], r["max_m"]) for r in without["by_distance"]] == [(0, 30), (30, None)]
    assert with_flip["info"]["flip_average"] is True
    assert with_flip["AbsRel"] != pytest.approx(without["AbsRel"], rel=1e-6)  # the mirrored pass was averaged in
    zoomed = tmp_path / "zoomed.json"
    assert cli.main([*args, "--json", str(zoomed), "--no-progress", "--limit", "1", "--scales", "1.5,1"]) == 0
    multi = json.loads(zoomed.read_text())
    assert multi["info"]["scales"] == [1.0, 1.5] and without["info"]["scales"] == [1.0]
    assert multi["AbsRel"] == without["AbsRel"]  # depth is read at scale 1 only
    assert multi["mIoU"] != without["mIoU"]  # the segmentation was averaged over both scales
    with pytest.raises(SystemExit):
        cli.main([*args, "--scales", "1.5,2"])
    assert "include 1.0 (depth is read at 1.0), got [1.5, 2.0]" in capsys.readouterr().err


def test_evaluation_gives_the_predictor_each_frames_camera(trained, synth_root):
    # The checkpoint records the training cameras (all one synthetic camera); telling the
    # predictor it learnt at half that focal length must double the depth it is scored on.
    predictor = Predictor.from_checkpoint(trained / "model_final.safetensors", device="cpu")
    sample = load_sample(list_samples(synth_root, "val")[0])
    assert predictor.model_config.depth_focal_px == pytest.approx(sample.camera["fx"])
    same = predictor_fn(predictor)(sample).depth
    bgr = np.ascontiguousarray(sample.image[..., ::-1])
    np.testing.assert_allclose(same, predictor.predict(bgr).depth, rtol=1e-6)
    predictor.model_config = predictor.model_config.with_(depth_focal_px=sample.camera["fx"] / 2)
    np.testing.assert_allclose(predictor_fn(predictor)(sample).depth, 2 * same, rtol=1e-5)


def test_cli_verify_and_refusals(synth_copy, trained, tmp_path, capsys):
    assert cli.main(["verify-cityscapes", str(synth_copy)]) == 0
    assert "OK" in capsys.readouterr().out
    victim = list_samples(synth_copy, "val")[0].camera
    victim.unlink()
    assert cli.main(["verify-cityscapes", str(synth_copy)]) == 1
    assert f"missing: {victim}" in capsys.readouterr().out
    assert (
        cli.main(
            [
                "evaluate",
                "--checkpoint",
                str(trained / "model_final.safetensors"),
                "--data",
                str(synth_copy),
                "--no-progress",
            ]
        )
        == 2  # nothing done: the dataset is broken
    )
    assert str(victim) in capsys.readouterr().err
    assert (
        cli.main(
            [
                "train",
                "--config",
                "quick_cpu",
                "--data",
                str(synth_copy),
                "--out",
                str(tmp_path / "run"),
                "--iters",
                "1",
                "data.crop_size=[64,128]",
            ]
        )
        == 2
    )
    assert str(victim) in capsys.readouterr().err
    assert (
        cli.main(
            [
                "train",
                "--config",
                "quick_cpu",
                "--data",
                str(synth_copy),
                "--out",
                str(tmp_path / "run"),
                "solver.lrr=1",
            ]
        )
        == 2
    )
    assert "solver.lrr" in capsys.readouterr().err
    evaluate = ["evaluate", "--checkpoint", str(trained / "model_final.safetensors"), "--data", str(synth_copy)]
    for bad in ("20,10", "0,near"):
        with pytest.raises(SystemExit) as exc:
            cli.main([*evaluate, "--distance-bands", bad])
        assert exc.value.code == 2 and "--distance-bands" in capsys.readouterr().err


def test_cli_synth(tmp_path, capsys):
    assert (
        cli.main(["synth", str(tmp_path / "s"), "--train", "1", "--val", "1", "--height", "64", "--width", "128"]) == 0
    )
    assert len(list_samples(tmp_path / "s", "train")) == 1
    assert cli.main(["verify-cityscapes", str(tmp_path / "s")]) == 0
