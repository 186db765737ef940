"""evaluate --video: ground truth through the tracker, the CLI end to end with a tiny model, its refusals."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pytest

from panoptic_depthlab_ros.metadata import cityscapes_metadata
from panoptic_depthlab_ros.tracker import TrackerConfig
from panoptic_depthlab_training import cli
from panoptic_depthlab_training.cityscapes import DatasetError
from panoptic_depthlab_training.synth.sequences import generate_sequences
from panoptic_depthlab_training.video_dataset import list_sequences
from panoptic_depthlab_training.video_evaluate import evaluate_sequences, ground_truth_fn

SEQUENCES, FRAMES = 2, 6
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """Two drives of six frames, 96x192."""
    out = tmp_path_factory.mktemp("video")
    generate_sequences(out, sequences=SEQUENCES, frames=FRAMES, seed=4, height=96, width=192, progress=False)
    return out


def test_ground_truth_through_the_tracker(root):
    metadata = cityscapes_metadata()
    runs = {
        shown: evaluate_sequences(
            ground_truth_fn(metadata),
            list_sequences(root, "val"),
            metadata=metadata,
            tracker_config=TrackerConfig(report_tentative=shown),
            max_depth=None,
            progress=False,
        )
        for shown in (True, False)
    }
    # By default a thing has instance 0 in its track's first two frames (not confirmed yet):
    # those frames' things merge into one segment per class, so window 1 scores under the
    # per-frame PQ; fewer frames count as tracked, and no more switches.
    default, shown = runs[False].video.summary(), runs[True].video.summary()
    assert 80.0 < default["VPQ_k1"] < 100.0 and runs[False].frames.summary()["PQ"] == pytest.approx(100.0)
    assert default["tracked_frames"] < shown["tracked_frames"] and default["id_switches"] <= shown["id_switches"]
    # With every track's id shown, the tracked map is the true one up to instance ids.
    video, frames = shown, runs[True].frames.summary()
    assert (video["sequences"], video["frames"]) == (SEQUENCES, SEQUENCES * FRAMES)
    assert video["VPQ_k1"] == pytest.approx(100.0) and video["DVPQ_k1"] == pytest.approx(100.0)
    assert frames["PQ"] == pytest.approx(100.0) and frames["DPQ"] == pytest.approx(100.0)
    # Over windows the tracker keeps the true things' ids, but for things a few pixels big
    # that come back from behind others (at 96x192 a person 30 m away is 2 px wide): 5 ID
    # switches in 163 tracked frames, all of such fragments, cost under 1 point of VPQ.
    assert 99.0 <= video["VPQ_k2"] < 100.0 and 98.5 <= video["VPQ_k3"] <= video["VPQ_k2"]
    assert video["tracked_frames"] > 100 and video["id_switches"] <= 0.05 * video["tracked_frames"]
    near = video["velocity"][0]
    assert near["max_m"] == 20.0 and near["pairs"] - near["unknown"] >= 10
    # Exact depths: what error remains is the visible part's centroid sliding over its
    # thing (the thing's true velocity is its bounding box's).
    assert near["median_error"] < 0.3


def test_cli_evaluate_video_end_to_end(root, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "video.json"
    args = ["evaluate", "--video", "--checkpoint", str(tiny_checkpoint), "--data", str(root)]
    assert cli.main([*args, "--json", str(out), "--no-progress", "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert f"{SEQUENCES} sequences, {SEQUENCES * FRAMES} frames" in text
    assert "ID switches" in text and "per frame, untracked:" in text and f"wrote {out}" in text
    doc = json.loads(out.read_text())
    assert (doc["sequences"], doc["frames"]) == (SEQUENCES, SEQUENCES * FRAMES)
    for key in ("VPQ", "DVPQ", "VPQ_k1", "VPQ_k2", "VPQ_k3", "DVPQ_k1", "DVPQ_k2", "DVPQ_k3", "DVPQ_k2_0.1"):
        assert doc[key] is None or 0.0 <= doc[key] <= 100.0, key
    assert [row["min_m"] for row in doc["velocity"]] == [0.0, 20.0, 40.0, 80.0]
    assert doc["ttc"]["max_depth_m"] == 30.0 and "id_switches_per_100" in doc
    assert not math.isnan(doc["per_frame"]["AbsRel"])
    assert doc["info"]["tracker"]["border_px"] == 2 and doc["info"]["split"] == "val"
    assert doc["info"]["tracker"]["report_tentative"] is False and doc["info"]["ego_motion"] is False
    # With every track's id shown the tracked map differs from the per-frame one in instance
    # ids only: a window of one frame scores exactly the per-frame PQ and DPQ (the camera's
    # motion changes velocities, not ids).
    shown = ["--report-tentative", "--ego-motion", "--overwrite"]
    assert cli.main([*args, "--json", str(out), "--no-progress", "--device", "cpu", *shown]) == 0
    doc = json.loads(out.read_text())
    assert doc["info"]["tracker"]["report_tentative"] is True and doc["info"]["ego_motion"] is True
    assert doc["VPQ_k1"] == pytest.approx(doc["per_frame"]["PQ"])
    assert doc["DVPQ_k1"] == pytest.approx(doc["per_frame"]["DPQ"])


def test_cli_evaluate_video_refusals(root, tiny_checkpoint, tmp_path, capsys):
    base = ["evaluate", "--video", "--no-progress", "--device", "cpu"]
    ckpt = ["--checkpoint", str(tiny_checkpoint)]

    def refused(args: list[str], code: int, *names: str) -> None:
        assert cli.main(base + args) == code
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err  # one line
        for name in names:
            assert name in err, (name, err)

    refused([*ckpt, "--data", str(tmp_path / "nowhere")], 2, str(tmp_path / "nowhere" / "video_sequence" / "val"))
    data = tmp_path / "data"
    shutil.copytree(root, data)
    frame_json = data / "video_sequence" / "val" / "000001_000003_synthcity_000001_000003_frame.json"
    frame_json.unlink()
    refused([*ckpt, "--data", str(data)], 2, f"missing {frame_json}")
    frame_json.write_text("{not json")
    refused([*ckpt, "--data", str(data)], 2, str(frame_json), "not readable JSON")
    refused(["--checkpoint", str(tmp_path / "none.safetensors"), "--data", str(root)], 2, "none.safetensors")
    refused(["--data", str(root)], 2, "--checkpoint is required (or --ground-truth)")


def _without_camera_motion(root: Path, tmp_path: Path) -> Path:
    """A copy of ``root`` whose frame 3 of sequence 1 was written before frames had the camera's motion."""
    data = tmp_path / "old"
    shutil.copytree(root, data)
    frame_json = data / "video_sequence" / "val" / "000001_000003_synthcity_000001_000003_frame.json"
    record = json.loads(frame_json.read_text())
    del record["camera"]
    frame_json.write_text(json.dumps(record))
    return frame_json


def test_ego_motion_needs_every_frames_camera_motion(root, tmp_path, capsys):
    frame_json = _without_camera_motion(root, tmp_path)
    data = frame_json.parents[2]
    message = f'{frame_json}: no camera motion ("camera") for --ego-motion; re-render the sequences with synth'
    base = ["evaluate", "--video", "--data", str(data), "--no-progress", "--ego-motion"]
    # Checked before the model: a checkpoint that is not there is not reached.
    for args in ([*base, "--checkpoint", str(tmp_path / "none.safetensors")], [*base, "--ground-truth"]):
        assert cli.main(args) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert message in err and err.rstrip().endswith("or drop --ego-motion"), err
    # Without the flag such a folder is evaluated as before.
    out = tmp_path / "old.json"
    assert cli.main([*base[:-1], "--ground-truth", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["frames"] == SEQUENCES * FRAMES and doc["info"]["ego_motion"] is False
    # The library refuses it too, naming the frame, when it gets there.
    metadata = cityscapes_metadata()
    with pytest.raises(DatasetError, match=re.escape(message)):
        evaluate_sequences(
            ground_truth_fn(metadata),
            list_sequences(data, "val"),
            metadata=metadata,
            max_depth=None,
            ego_motion=True,
            progress=False,
        )


def test_cli_evaluate_video_ground_truth(root, tmp_path, capsys):
    out = tmp_path / "truth.json"
    args = ["evaluate", "--video", "--ground-truth", "--data", str(root), "--json", str(out), "--no-progress"]
    args.append("--report-tentative")  # every thing with its id: the true map scores 100
    assert cli.main(args) == 0
    doc = json.loads(out.read_text())
    assert doc["VPQ_k1"] == pytest.approx(100.0) and doc["per_frame"]["DPQ"] == pytest.approx(100.0)
    assert doc["info"]["predictor"] == "ground truth" and "checkpoint" not in doc["info"]
    assert doc["info"]["ego_motion"] is False
    # Given the camera's motion, the tracker reports the still vehicles at rest once their
    # velocity is known: with the true segments and depth, only still ones. Ids, segments and
    # which velocities are known stay the same.
    ego = tmp_path / "ego.json"
    assert cli.main([*args[:-3], str(ego), "--no-progress", "--report-tentative", "--ego-motion"]) == 0
    with_ego = json.loads(ego.read_text())
    assert with_ego["info"]["ego_motion"] is True
    for key in ("VPQ_k1", "VPQ_k2", "VPQ_k3", "id_switches", "tracked_frames"):
        assert with_ego[key] == doc[key], key
    counts = [(row["pairs"], row["unknown"]) for row in doc["velocity"]]
    assert [(row["pairs"], row["unknown"]) for row in with_ego["velocity"]] == counts
    rest = with_ego["at_rest"]
    assert doc["at_rest"] == {**rest, "reported": 0, "found": 0} and rest["still"] > 0  # no odometry: none found
    # Six frames are too few for a still vehicle's velocity to be known by default: with any
    # velocity reported (no limit on its uncertainty), the true segments and depth make every
    # report right and find still vehicles.
    metadata = cityscapes_metadata()
    got = evaluate_sequences(
        ground_truth_fn(metadata),
        list_sequences(root, "val"),
        metadata=metadata,
        tracker_config=TrackerConfig(report_tentative=True, velocity_max_std_mps=math.inf),
        max_depth=None,
        ego_motion=True,
        progress=False,
    ).video.summary()["at_rest"]
    assert got["still"] == rest["still"] and got["found"] == got["reported"] > 0 and got["moving"] == 0, got
    assert cli.main(["evaluate", "--ground-truth", "--data", str(root)]) == 2
    assert "--ground-truth goes with --video" in capsys.readouterr().err
    assert cli.main(["evaluate", "--report-tentative", "--checkpoint", "x.safetensors", "--data", str(root)]) == 2
    assert "--report-tentative goes with --video" in capsys.readouterr().err
    assert cli.main(["evaluate", "--ego-motion", "--checkpoint", "x.safetensors", "--data", str(root)]) == 2
    assert "--ego-motion goes with --video" in capsys.readouterr().err


def test_the_json_report_is_checked_first_and_replaced_only_when_ours(root, tmp_path, capsys):
    out = tmp_path / "truth.json"
    base = ["evaluate", "--video", "--ground-truth", "--data", str(root), "--no-progress", "--json", str(out)]
    assert cli.main(base) == 0
    first = out.read_bytes()
    assert json.loads(first)["written_by"] == "panoptic-depthlab-training evaluate"
    capsys.readouterr()

    def refused(args: list[str], *words: str) -> None:
        assert cli.main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and all(w in err[0] for w in words), err

    refused(base, f"{out} exists; pass --overwrite")
    assert out.read_bytes() == first
    assert cli.main([*base, "--overwrite", "--report-tentative"]) == 0  # another run, another report
    assert json.loads(out.read_text())["VPQ_k1"] > json.loads(first)["VPQ_k1"]
    mine = tmp_path / "mine.json"
    mine.write_text('{"my": "notes"}\n')
    refused([*base[:-1], str(mine), "--overwrite"], f"{mine} exists and was not written by", "written_by")
    assert mine.read_text() == '{"my": "notes"}\n'
    # Checked before any work: the data folder is not even looked at.
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    nowhere = ["evaluate", "--video", "--ground-truth", "--data", str(tmp_path / "nowhere")]
    refused([*nowhere, "--json", str(blocker / "r.json")], "cannot be created", "is a file, not a folder")
    refused(
        ["evaluate", "--video", "--ground-truth", "--data", str(root), "--overwrite"], "--overwrite goes with --json"
    )
    assert not list(tmp_path.glob(".*.partial"))  # no staging folder left behind
