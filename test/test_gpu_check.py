"""bench/gpu_check.py where there is no GPU: one line, exit code 2; and its pure parts."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
import torch

from pdl_testing import REPO

SCRIPT = REPO / "bench" / "gpu_check.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: run the check itself")
def test_without_cuda_it_says_so_in_one_line_and_exits_2() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == (
        f"gpu_check: no CUDA GPU here (torch {torch.__version__}, CUDA build none): nothing to check\n"
    )
    assert proc.stderr == ""


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_wheels_architectures_cover_a_gpu_as_cuda_loads_kernels() -> None:
    supported = _module().arch_supported
    wheel = ["sm_80", "sm_86", "sm_90"]
    assert supported((8, 6), wheel) and supported((8, 9), wheel)  # sm_89 runs sm_86 cubins
    assert supported((9, 0), wheel) and not supported((7, 5), wheel)  # a Turing card: no kernel image
    assert not supported((10, 0), wheel)  # a newer major needs its cubin or PTX
    assert supported((10, 0), [*wheel, "compute_90"]) and not supported((8, 7), ["sm_90", "compute_90"])
    assert supported((8, 7), ["sm_87"])  # a Jetson Orin wheel


def test_the_table_states_the_goal_for_this_gpu() -> None:
    module = _module()
    rows = [
        {"size": "512x1024", "variant": "fp16", "network": 0.010, "post": 0.004, "total": 0.016, "fps": 62.5},
        {"size": "1024x2048", "variant": "fp16", "network": 0.030, "post": 0.010, "total": 0.045, "fps": 22.2},
        {"size": "1024x2048", "variant": "tensorrt", "skipped": "this onnxruntime has no TensorRT provider"},
    ]
    table = module.format_table(rows, "Some GPU").splitlines()
    assert table[2].split() == ["512x1024", "fp16", "10.0", "4.0", "16.0", "62.5"]
    assert table[4].split()[:3] == ["1024x2048", "tensorrt", "skipped:"]
    assert table[-1].endswith("best here 22.2 fps: not met on this GPU")
