"""`python -m bench.gpu_smoke` is one command on any machine: on one without CUDA it says so and exits 0."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from helpers import REPO


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the smoke test trains for minutes: run it by hand")
def test_without_cuda_it_says_so_and_exits_0() -> None:
    proc = subprocess.run([sys.executable, "-m", "bench.gpu_smoke", "--steps", "5"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "gpu_smoke: no CUDA device on this machine; nothing to run"
