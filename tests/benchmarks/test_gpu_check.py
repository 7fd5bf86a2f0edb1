"""``benchmarks/gpu_check.py --tiny``: the GPU check's code runs end to end on a CPU (figures not asserted)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_gpu_check_tiny_runs_on_cpu() -> None:
    root = Path(__file__).parents[2]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--tiny", "--repeats", "1",
                           "--kernel-n", "256"], cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    out = done.stdout
    for line in ("bf16-mixed: bare", "16-mixed: bare", "peak memory, one bf16 step", "LoRA r=16",
                 "kernel retrieval", "kernel alignment SAS", "kernel linear probe solver"):
        assert line in out, line
