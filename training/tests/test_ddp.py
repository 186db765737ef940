"""Two CPU processes under torchrun (gloo): DDP steps, checkpoints, sharded eval, resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from panoptic_depthlab_ros.predictor import Predictor
from panoptic_depthlab_training.train.state import FINAL_MODEL, STATE_FILE, load_training_state

REPO = Path(__file__).resolve().parents[2]
TORCHRUN = Path(sys.executable).with_name("torchrun")


def _torchrun(data: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "training")]), "OMP_NUM_THREADS": "1"}
    cmd = [
        str(TORCHRUN),
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "panoptic_depthlab_training.cli",
        "train",
        "--config",
        "quick_cpu",
        "--data",
        str(data),
        "--out",
        str(out),
        "--no-progress",
        "data.crop_size=[64,128]",
        "data.workers=0",
        "data.batch_per_device=1",
        "solver.ims_per_batch=2",
        "checkpoint.period=2",
        "eval.period=3",
        "eval.max_images=2",
        "log.period=1",
        "log.image_period=0",
        *extra,
    ]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=REPO)


def test_two_process_ddp_trains_saves_and_resumes(synth_root, tmp_path):
    out = tmp_path / "ddp"
    run = _torchrun(synth_root, out, "--iters", "3")
    assert run.returncode == 0, run.stdout + run.stderr
    state = load_training_state(out / STATE_FILE)
    assert state["iteration"] == 3 and state["world_size"] == 2 and len(state["rng"]) == 2
    # ranks drew different dropout masks, so their RNG streams differ
    assert not np.array_equal(state["rng"][0]["torch"].numpy(), state["rng"][1]["torch"].numpy())
    assert (out / "model_iter_0000002.safetensors").is_file()
    predictor = Predictor.from_checkpoint(out / FINAL_MODEL, device="cpu")
    assert predictor.predict(np.zeros((64, 128, 3), np.uint8)).panoptic.shape == (64, 128)
    # the evaluation at iteration 3 was sharded over both ranks and merged
    evals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [e["iteration"] for e in evals] == [3] and evals[0]["AbsRel"] > 0
    assert {"PQ_th_0-20m", "RQ_th_20-40m", "PQ_th_80m+"} <= set(evals[0])  # things by distance, merged too
    # a second launch continues the same run
    again = _torchrun(synth_root, out, "--iters", "4", "--resume")
    assert again.returncode == 0, again.stdout + again.stderr
    assert load_training_state(out / STATE_FILE)["iteration"] == 4
    assert "resumed" in (out / "log.txt").read_text()
