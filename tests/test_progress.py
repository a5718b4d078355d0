"""Training progress as its readers see it (trainer/progress.py): a bar on a terminal; into a log file, plain lines
(step, loss, tokens/s, ETA) and never a carriage return."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, tiny_tagger

from trainer.progress import StepProgress

LINE = re.compile(
    r"train: step (\d+)/6(?:, loss \d+\.\d{4}, [\d,]+ tokens/s)?(?:, ETA \d+:\d\d:\d\d)?, \d+:\d\d:\d\d elapsed"
)


@pytest.mark.trains
def test_training_into_a_log_file_prints_plain_progress_lines(data: dict[str, str], tmp_path: Path) -> None:
    log = tmp_path / "stderr.log"
    args = [*tiny_tagger(data["tagger"]), "--max_steps", "6", "--log_every", "2", "--progress_every", "0"]
    with log.open("w") as stderr:
        proc = subprocess.run(
            [sys.executable, "-m", "trainer", "train", *args, "--out", str(tmp_path / "run")],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            timeout=300,
        )
    text = log.read_text()
    assert proc.returncode == 0, text
    assert "\r" not in text
    matches = [LINE.fullmatch(line) for line in text.splitlines() if line.startswith("train: step ")]
    assert all(matches), text
    assert [int(m[1]) for m in matches] == [1, 2, 3, 4, 5, 6]  # --progress_every 0: a line every step
    assert "loss" not in matches[0][0] and "loss" in matches[1][0]  # the loss is known from the first logged step


def test_a_terminal_gets_a_redrawn_bar_and_a_log_a_line_every_interval() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    now = [0.0]
    tty, log = Terminal(), io.StringIO()
    bars = [StepProgress("train", 100, 20, every=10, quiet=False, stream=s, clock=lambda: now[0]) for s in (tty, log)]
    for step in range(21, 41):
        now[0] += 1.0
        for bar in bars:
            bar.step(step, 0.5 if step > 30 else None, 1000.0 if step > 30 else None)
    for bar in bars:
        bar.close()
    assert tty.getvalue().startswith("\rtrain [") and tty.getvalue().endswith("\n")
    # Off a terminal: one line each 10 s; a step a second, so the ETA is the steps left in seconds.
    assert log.getvalue().splitlines() == [
        "train: step 30/100, ETA 0:01:10, 0:00:10 elapsed",
        "train: step 40/100, loss 0.5000, 1,000 tokens/s, ETA 0:01:00, 0:00:20 elapsed",
    ]
    quiet = io.StringIO()
    StepProgress("train", 10, 0, every=0, quiet=True, stream=quiet).step(1, 1.0, 1.0)
    assert quiet.getvalue() == ""
