"""Joining a torchrun job: the device before the NCCL group, and torch builds without torch.distributed."""

from __future__ import annotations

import json

import pytest
import torch
import torch.distributed as dist
from train_testing import small_config

from panoptic_depthlab_training import cli, evaluate
from panoptic_depthlab_training.distributed import DistributedError, init_distributed
from panoptic_depthlab_training.train.loop import train
from panoptic_depthlab_training.train.state import FINAL_MODEL

pytestmark = pytest.mark.usefixtures("one_thread")

# What a torch build without distributed support (some Jetson wheels) lacks: torch.distributed
# imports, is_available() is False, and none of these exist.
MISSING_WITHOUT_DISTRIBUTED = (
    "is_initialized",
    "get_rank",
    "init_process_group",
    "destroy_process_group",
    "broadcast_object_list",
    "all_gather_object",
    "all_reduce",
)


@pytest.fixture
def no_distributed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dist, "is_available", lambda: False)
    for name in MISSING_WITHOUT_DISTRIBUTED:
        monkeypatch.delattr(dist, name)
    monkeypatch.delenv("WORLD_SIZE", raising=False)


@pytest.mark.usefixtures("no_distributed")
def test_training_and_evaluation_run_without_torch_distributed(synth_root, tmp_path, capsys):
    out = tmp_path / "run"
    # two steps with a checkpoint and the evaluation during training at the end
    config = small_config("solver.max_iter=2", "checkpoint.period=2", "eval.period=2", "eval.max_images=1")
    result = train(config, data_root=synth_root, out_dir=out, progress=False)
    assert result.iteration == 2 and (out / FINAL_MODEL).is_file()
    assert [json.loads(line)["iteration"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [2]
    args = ["evaluate", "--checkpoint", str(out / FINAL_MODEL), "--data", str(synth_root), "--no-progress"]
    assert cli.main([*args, "--limit", "1", "--json", str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["num_images"] == 1


@pytest.mark.usefixtures("no_distributed")
def test_a_torchrun_job_without_torch_distributed_is_refused(monkeypatch, synth_root, tmp_path, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(DistributedError, match="WORLD_SIZE=2 .* no torch.distributed"):
        init_distributed("cpu")
    args = ["train", "--config", "quick_cpu", "--data", str(synth_root), "--out", str(tmp_path / "run")]
    assert cli.main(args) == 2
    assert "no torch.distributed" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


class _StopError(Exception):
    pass


def test_each_rank_selects_its_gpu_before_the_nccl_group(monkeypatch, synth_root, tmp_path):
    """Rank 1 of 2 on a 2-GPU machine, for training and for evaluation: cuda:1 is made
    current first, then the NCCL group is created (else both ranks use cuda:0)."""
    calls: list[tuple[str, object]] = []
    group = {"up": False}

    def init_process_group(backend, **kwargs):
        calls.append(("init_process_group", backend))
        group["up"] = True

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(("set_device", device)))
    monkeypatch.setattr(dist, "is_initialized", lambda: group["up"])
    monkeypatch.setattr(dist, "init_process_group", init_process_group)
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    monkeypatch.setattr(dist, "destroy_process_group", lambda: calls.append(("destroy_process_group", None)))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")

    info = init_distributed("auto")  # training's join
    assert (info.rank, info.world_size, info.device, info.owns_group) == (1, 2, torch.device("cuda", 1), True)
    assert calls == [("set_device", torch.device("cuda", 1)), ("init_process_group", "nccl")]

    calls.clear()
    group["up"] = False

    def from_checkpoint(path, *, device, **kwargs):
        calls.append(("predictor", device))
        raise _StopError

    monkeypatch.setattr(evaluate.Predictor, "from_checkpoint", from_checkpoint)
    args = cli.get_args_parser().parse_args(
        ["evaluate", "--checkpoint", str(tmp_path / "model.safetensors"), "--data", str(synth_root), "--no-verify"]
    )
    with pytest.raises(_StopError):
        evaluate.main(args)
    assert calls == [
        ("set_device", torch.device("cuda", 1)),
        ("init_process_group", "nccl"),
        ("predictor", torch.device("cuda", 1)),
        ("destroy_process_group", None),
    ]
