"""A rank's death survived at any moment (trainer/distributed.py): under `torchrun --max-restarts`, rank 1 is
SIGKILLed during a checkpoint write, right after one, mid-epoch and during the dev evaluation, then stalls in a
step and at the start until rank 0's --dist_timeout ends each; each restarted round's rank 1 starts late, so that
rank 0 reaches the store first (the race that made restarts read a killed round's gloo addresses). The job
finishes, and its weights equal an uninterrupted run's exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import REPO, events, tiny_tagger, trainer
from safetensors.numpy import load_file

# `python DIE ARGS`: `python -m trainer ARGS` whose rank 1 dies (SIGKILL, by its own hand: the same death as
# from outside, at an exact moment) in round r at MOMENTS[r]; in the stall round it sleeps instead.
DIE = """
import os, signal, sys, time
import trainer.checkpoint as checkpoint, trainer.loop as loop
round_, rank = int(os.environ["TORCHELASTIC_RESTART_COUNT"]), os.environ["RANK"]
MOMENTS = [
    ("checkpoint-write", 20),
    ("after-checkpoint", 20),
    ("mid-epoch", 25),
    ("evaluation", 30),
    ("stall", 35),
    ("start-stall", 0),
]
moment, at = MOMENTS[round_] if round_ < len(MOMENTS) else (None, 0)
def die():
    print(f"rank 1 dies: {moment} at step {at}", file=sys.stderr, flush=True)
    if moment in ("stall", "start-stall"):
        time.sleep(300)
    os.kill(os.getpid(), signal.SIGKILL)
def hook(cls, name, before=None, after=None):
    real = getattr(cls, name)
    def wrapped(*args, **kwargs):
        if before and before(*args):
            die()
        result = real(*args, **kwargs)
        if after and after(*args):
            die()
        return result
    setattr(cls, name, wrapped)
if rank == "1":
    if moment == "start-stall":  # before the process group: rank 0 waits for it at the start
        die()
    if round_ > 0:
        time.sleep(3)
    if moment == "checkpoint-write":  # its own RNG file is in the hidden folder; rank 0 is still writing
        hook(checkpoint, "write_rng", after=lambda folder, rank: folder.name == f".tmp-step-{at}")
    elif moment == "after-checkpoint":
        hook(loop.Trainer, "save_checkpoint", after=lambda self: self.state.step == at)
    elif moment in ("mid-epoch", "stall"):
        hook(loop.Trainer, "train_batch", before=lambda self, batch: self.state.step == at)
    elif moment == "evaluation":
        hook(loop, "score", before=lambda *args: True)  # rank 0 scores the dev split, then gathers
if moment in ("stall", "start-stall"):
    sys.argv += ["--dist_timeout", "10"]
from trainer.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
@pytest.mark.trains
def test_rank_1_killed_at_any_moment_the_job_finishes_with_an_uninterrupted_runs_weights(
    data: dict[str, str], tmp_path: Path
) -> None:
    script = tmp_path / "die.py"
    script.write_text(DIE)
    args = [
        "train",
        *tiny_tagger(data["tagger"]),
        "--batch_size",
        "4",
        "--max_steps",
        "50",
        "--save_every",
        "10",
        "--eval_every",
        "10",
        "--warmup_steps",
        "2",
        "--resume",
        "auto",
    ]
    launch = ["--standalone", "--nproc-per-node", "2"]
    env = {"PYTHONPATH": str(REPO)}
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    trainer(*launch, "-m", "trainer", *args, "--out", str(straight), module="torch.distributed.run")
    proc = trainer(
        *launch,
        "--max-restarts",
        "6",
        str(script),
        *args,
        "--out",
        str(killed),
        module="torch.distributed.run",
        env=env,
    )

    deaths = [line for line in proc.stderr.splitlines() if line.startswith("rank 1 dies:")]
    assert len(deaths) == 6, proc.stderr[-4000:]
    # The two stalls end in one line each from rank 0, naming what it waited for.
    failed = [line for line in proc.stderr.splitlines() if line.startswith("error: rank ")]
    [step] = [line for line in failed if "Timed out" in line]
    assert step.startswith("error: rank 0 of 2: waiting for the other ranks at training step 36 failed (Timed out")
    [start] = [line for line in failed if "timeout after 10000ms" in line]
    assert start.startswith("error: rank 0 of 2: waiting for the other ranks at the start of the process group")
    assert "connectFullMesh" not in proc.stderr
    # Each round that trained resumed from the newest whole checkpoint: none yet, step-10 (step-20 was being
    # written), then step-20 three times, step-30 (the start-stall round never started training).
    resumed = [e["resumed_from"] for e in events(killed, "start")]
    assert [Path(p).name if p else None for p in resumed] == [
        None,
        "step-10",
        "step-20",
        "step-20",
        "step-20",
        "step-30",
    ]
    assert len(events(killed, "end")) == 1
    for name in ("model/model.safetensors", "checkpoints/step-50/model.safetensors"):
        a, b = load_file(straight / name), load_file(killed / name)
        assert a.keys() == b.keys() and max(float(abs(a[k] - b[k]).max()) for k in a) == 0.0
    metrics = json.loads((killed / "model" / "metrics.json").read_text())
    assert (
        metrics["steps"] == 50
        and metrics["dev"] == json.loads((straight / "model" / "metrics.json").read_text())["dev"]
    )
    assert not list(killed.rglob(".tmp-*")) and not (killed / ".lock").exists()
