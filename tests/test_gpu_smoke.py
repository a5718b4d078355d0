"""`python -m bench.gpu_smoke` is one command on any machine: on one without CUDA it says so and exits 0.
Its `main(argv)` runs in this process: the module does nothing more than `sys.exit(main())`."""

from __future__ import annotations

import pytest
import torch

from bench import gpu_smoke


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the smoke test trains for minutes: run it by hand")
def test_without_cuda_it_says_so_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert gpu_smoke.main(["--steps", "5"]) == 0
    assert capsys.readouterr().out.strip() == "gpu_smoke: no CUDA device on this machine; nothing to run"
