"""SIGTERM / SIGINT in the middle of work: `python -m trainer train` (mid-checkpoint) and `python -m export`
end with the one-line `error: interrupted by ...`, exit 128 + signal, and leave no hidden temporary behind
(docs/RELIABILITY.md). They start from conftest's `workspace_template`, as tests/test_bad_inputs.py does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import REPO, default_sigint


def hidden_temporaries(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*") if ".tmp" in p.name or p.name.startswith(".del-")]


def interrupt_when(proc: subprocess.Popen, ready: Callable[[], bool], signum: int) -> tuple[int, str]:
    """Send `signum` once `ready()` holds (the command is mid-work), then wait; (exit status, stderr)."""
    try:
        deadline = time.monotonic() + 120
        while not ready():
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "the command never reached the point to interrupt"
            time.sleep(0.01)
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    return proc.returncode, stderr


@pytest.mark.trains
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_during_training_leaves_no_temporaries(signum: int, workspace_template: Path, tmp_path: Path) -> None:
    """Checkpoints every step, so the signal lands in or near a save; nothing hidden may stay behind."""
    run = tmp_path / "run"
    conllu = workspace_template / "tiny.conllu"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "trainer",
            "train",
            "--task",
            "tagger",
            "--data",
            f"conllu:{conllu},{conllu}",
            "--out",
            str(run),
            "--word_dim",
            "8",
            "--word_hidden",
            "8",
            "--char_dim",
            "4",
            "--char_hidden",
            "4",
            "--max_steps",
            "100000",
            "--save_every",
            "1",
            "--eval_every",
            "1",
            "--warmup_steps",
            "1",
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    status, stderr = interrupt_when(proc, lambda: len(list(run.glob("checkpoints/step-*"))) >= 2, signum)
    assert status == 128 + signum, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1:] == [f"error: interrupted by {signal.Signals(signum).name}"], stderr
    assert not hidden_temporaries(run), hidden_temporaries(run)
    assert not (run / "model").exists()


def test_a_signal_during_export_leaves_no_temporaries(workspace_template: Path, tmp_path: Path) -> None:
    out = tmp_path / "export"
    proc = subprocess.Popen(
        [sys.executable, "-m", "export", "--model", str(workspace_template / "run" / "model"), "--out", str(out)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    status, stderr = interrupt_when(proc, lambda: bool(hidden_temporaries(tmp_path)), signal.SIGTERM)
    assert status == 128 + signal.SIGTERM, stderr
    assert stderr.splitlines() == ["error: interrupted by SIGTERM"], stderr
    assert not hidden_temporaries(tmp_path) and not out.exists()
