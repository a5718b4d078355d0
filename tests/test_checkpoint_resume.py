"""Resuming from checkpoints without the shared copied run of test_checkpoint.py: the metrics log's torn last
line (left by a kill mid-write) is skipped and ended, and two processes resume exactly (slow).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import tiny_tagger, trainer

from trainer.plots import end_torn_line, read_events


def test_a_torn_last_line_is_skipped_and_ended(tmp_path: Path) -> None:
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"event": "train", "step": 1, "loss": 2.0}\n{"event": "train", "st')
    events_, torn = read_events(log)
    assert [e["step"] for e in events_] == [1] and torn == 1
    assert end_torn_line(log) and not end_torn_line(log)
    assert log.read_text().endswith('"st\n')
    assert not end_torn_line(tmp_path / "absent.jsonl")


@pytest.mark.slow
def test_two_processes_resume_exactly(data: dict[str, str], tmp_path: Path) -> None:
    """World size 2 with dropout: each process gets its own random stream back from its own rng-<rank>.json,
    so step-8 after a resume at step 4 equals the uninterrupted run's byte for byte. Adversarial training
    (two backward passes a step, gradients exchanged after the second) is on."""
    common = [
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "trainer",
        "train",
        *tiny_tagger(data["tagger"]),
        "--dropout",
        "0.3",
        "--adversarial",
        "1.0",
        "--batch_size",
        "4",
        "--max_steps",
        "8",
        "--save_every",
        "4",
        "--eval_every",
        "4",
    ]
    straight = tmp_path / "straight"
    trainer(*common, "--out", str(straight), module="torch.distributed.run")
    resumed = Path(shutil.copytree(straight, tmp_path / "resumed"))
    shutil.rmtree(resumed / "checkpoints" / "step-8")
    shutil.rmtree(resumed / "model")
    trainer(*common, "--out", str(resumed), "--resume", "auto", module="torch.distributed.run")
    files = ["model.safetensors", "best.safetensors", "optimizer.safetensors"]
    for name in [*files, "rng-0.json", "rng-1.json"]:
        assert (resumed / "checkpoints/step-8" / name).read_bytes() == (
            straight / "checkpoints/step-8" / name
        ).read_bytes()
    assert (
        json.loads((resumed / "checkpoints/step-8/rng-0.json").read_text())["torch"]
        != json.loads((resumed / "checkpoints/step-8/rng-1.json").read_text())["torch"]
    )
