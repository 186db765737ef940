"""Training-step speed of the demo recipe on CPU, float32 vs bfloat16 and NCHW vs NHWC.

    .venv/bin/python bench/bench_training.py [--iters 30] [--skip 5] [--threads 0]

Each variant trains ``training/configs/demo.yaml`` (batch 6, 160x320 crops) for
``--iters`` real steps on the same small synthetic set, in its own subprocess: the
trainer's own step (data, forward, losses, backward, Adam), timed by the trainer. The
first ``--skip`` steps (allocator and oneDNN warm-up) are left out; the median of the
rest is printed with its ratio to the old recipe (float32, NCHW, stride-4 instance
branch). bfloat16 only pays on CPUs with native bf16 (AVX512-BF16 or AMX); the script
prints whether this one has it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OLD_INSTANCE = (  # the instance branch of the recipe before this benchmark
    "model.instance={project_channels: [16, 32], aspp_channels: 64, convs_dim: 48, head_channels: 24,"
    " low_level: [res2, res3]}"
)
VARIANTS: dict[str, list[str]] = {
    "old recipe: fp32, NCHW, stride-4 instance": ["solver.cpu_bf16=false", "solver.channels_last=false", OLD_INSTANCE],
    "bf16, NCHW, stride-4 instance": ["solver.cpu_bf16=true", "solver.channels_last=false", OLD_INSTANCE],
    "bf16, NHWC, stride-4 instance": ["solver.cpu_bf16=true", "solver.channels_last=true", OLD_INSTANCE],
    "fp32, NHWC, stride-2 instance": ["solver.cpu_bf16=false", "solver.channels_last=true"],
    "demo.yaml: bf16, NHWC, stride-2 instance": [],
}

CHILD = """
import json, sys
import torch
from panoptic_depthlab_training.train import load_config, train
threads, data, out, iters, *overrides = sys.argv[1:]
if int(threads):
    torch.set_num_threads(int(threads))
config = load_config("demo", [f"solver.max_iter={iters}", "eval.period=0", "log.image_period=0",
                                "checkpoint.period=100000", *overrides])
steps = []
train(config, data_root=data, out_dir=out, progress=False,
        callback=lambda it, v: steps.append((v["time_step"], v["time_data"])))
print(json.dumps(steps))
"""


def cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags for f in ("avx512_bf16", "amx_bf16"))


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--skip", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.iters <= args.skip:
        parser.error("--iters must be larger than --skip")
    print(f"CPU native bfloat16: {cpu_has_native_bf16()}; load average before: {load()}")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "synth"
        synth = [sys.executable, "-m", "panoptic_depthlab_training.cli", "synth", str(data)]
        synth += ["--train", "24", "--val", "2", "--seed", "3", "--height", "192", "--width", "384"]
        subprocess.run(synth, check=True, capture_output=True)
        rows = []
        for name, overrides in VARIANTS.items():
            out = Path(tmp) / f"run{len(rows)}"
            cmd = [sys.executable, "-c", CHILD, str(args.threads), str(data), str(out), str(args.iters), *overrides]
            proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
            steps = json.loads(proc.stdout.strip().splitlines()[-1])[args.skip :]
            step = statistics.median(s for s, _ in steps)
            data_time = statistics.median(d for _, d in steps)
            rows.append((name, step, data_time))
            print(f"  done: {name} ({load()})", flush=True)
    base = rows[0][1]
    print(f"\n{'variant':44s} {'s/step':>7s} {'data s':>7s} {'speed-up':>9s} {'1000 it.':>9s}")
    for name, step, data_time in rows:
        print(f"{name:44s} {step:7.3f} {data_time:7.3f} {base / step:8.2f}x {step * 1000 / 60:6.1f} min")
    print(f"load average after: {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
