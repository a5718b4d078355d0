"""Elastic resume: a checkpoint written by N processes resumes with M (trainer/resume.py `relayout`).

Same epoch, same sample position: the examples the epoch had not trained on yet are cut into batches of
the new layout, so over the epoch every training example is trained on exactly once. The end-to-end tests
record what each process trains on (loss_sum wrapped by the test, not the product) and compare the
sessions' union with the training split as a multiset.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO, events, tiny_tagger, trainer

from trainer.batching import BucketBatchSampler

# `python RECORD PREFIX ARGS`: `python -m trainer ARGS`, with every training batch's examples (word ids and
# tags) appended to PREFIX.seen-RANK, and the whole training split written to PREFIX.all.
RECORD = """
import json, os, sys
import trainer.tasks as tasks, trainer.runner as runner
prefix, rank = sys.argv.pop(1), os.environ.get("RANK", "0")
real_loss, real_build = tasks.TokenTagging.loss_sum, runner.build
def key(words, tags):
    return " ".join(map(str, words)) + "|" + " ".join(map(str, tags))
def recording_loss(side, logits, batch):
    rows = [key(w[:n].tolist(), t[:n].tolist())
            for w, t, n in zip(batch["words"], batch["targets"], batch["lengths"].tolist())]
    with open(f"{prefix}.seen-{rank}", "a") as f:
        f.write(json.dumps(rows) + "\\n")
    return real_loss(side, logits, batch)
def recording_build(accelerator, job, splits):
    parts = real_build(accelerator, job, splits)
    train = parts.data["train"]
    with open(f"{prefix}.all", "w") as f:
        json.dump([key(item.words.tolist(), list(tags)) for item, tags in zip(train.items, train.targets)], f)
    return parts
tasks.TokenTagging.loss_sum, runner.build = recording_loss, recording_build
from trainer.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


def session(script: Path, prefix: Path, processes: int, *args: str) -> subprocess.CompletedProcess:
    """One session of RECORD, on 1 process or under torchrun; this checkout's packages first on the path
    (a script's own folder, not the working directory, heads sys.path)."""
    path = {"PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if processes == 1:
        return trainer(str(script), str(prefix), "train", *args, module=None, env=path)
    return trainer(
        "--standalone",
        "--nproc-per-node",
        str(processes),
        str(script),
        str(prefix),
        "train",
        *args,
        module="torch.distributed.run",
        env=path,
    )


def seen(prefix: Path) -> Counter:
    """Every example trained on by every process of one session, as a multiset."""
    return Counter(
        row
        for path in prefix.parent.glob(f"{prefix.name}.seen-*")
        for line in path.read_text().splitlines()
        for row in json.loads(line)
    )


@pytest.mark.trains  # ~50 s each on 2 busy cores: under the minute that `slow` marks
@pytest.mark.parametrize(
    "before, after, grad_accum, stop, steps",
    [
        # 2 x 4 per step, x2 accumulated: 6 steps = 12 batches of 8 = 96 examples; the other 304 in batches of 4
        # (76 batches, 38 steps): 44 steps in all.
        pytest.param(2, 1, 2, 6, 44, id="2-to-1", marks=pytest.mark.slow),  # two 2-process runs: CI's --slow
        # 1 x 4: 25 steps = 100 examples; the other 300 in global batches of 8 (37, and a tail of 4 split over the
        # two processes): 63 steps in all.
        pytest.param(1, 2, 1, 25, 63, id="1-to-2"),
    ],
)
def test_a_checkpoint_resumes_with_another_world_size(
    small_data: dict[str, str], tmp_path: Path, before: int, after: int, grad_accum: int, stop: int, steps: int
) -> None:
    script, run = tmp_path / "record.py", tmp_path / "run"
    script.write_text(RECORD)
    args = [
        *tiny_tagger(small_data["tagger"]),
        "--dropout",
        "0.3",
        "--batch_size",
        "4",
        "--grad_accum",
        str(grad_accum),
        "--epochs",
        "1",
        "--warmup_steps",
        "2",
        "--log_every",
        "1",
        "--save_every",
        "10",
        "--out",
        str(run),
    ]
    session(script, tmp_path / "first", before, *args, "--session_steps", str(stop))
    proc = session(script, tmp_path / "second", after, *args, "--resume", "auto")

    # No example of the epoch skipped or repeated: the two sessions together train on the split exactly once.
    everything = Counter(json.loads((tmp_path / "first.all").read_text()))
    first, second = seen(tmp_path / "first"), seen(tmp_path / "second")
    assert sum(everything.values()) == 400 and sum(first.values()) == stop * grad_accum * 4 * before
    assert first + second == everything

    [line] = [line for line in proc.stderr.splitlines() if line.startswith("train: resuming")]
    assert line == (
        f"train: resuming a {before}-process checkpoint (batch 4) with {after} process"
        f"{'es' if after > 1 else ''} (batch 4): same epoch and sample position, data re-sharded; "
        "results are not bit-identical to an uninterrupted run (exact only at the same world size "
        "and batch size)"
    )
    [relayout] = events(run, "relayout")
    assert (relayout["step"], relayout["epoch"], relayout["examples_left_in_epoch"]) == (
        stop,
        0,
        400 - sum(first.values()),
    )
    assert f"{steps} steps, resuming at step {stop}" in proc.stdout  # the plan covers the data left
    trained = events(run, "train")
    assert [e["step"] for e in trained] == list(range(1, steps + 1))  # the step count goes on from the checkpoint
    assert trained[-1]["lr"] == 0.0 and trained[stop]["lr"] > 0  # the LR decays to 0 where the run ends
    metrics = json.loads((run / "model" / "metrics.json").read_text())
    assert (metrics["steps"], metrics["epochs_completed"], metrics["world_size"]) == (steps, 1, after)
    state = json.loads((run / "checkpoints" / f"step-{steps}" / "trainer_state.json").read_text())
    assert state["world_size"] == after and state["trainer"]["global_batch"] == 4 * after
    assert state["trainer"]["earlier_layouts"] == []  # the epoch ended: the next one is cut afresh


@pytest.mark.parametrize(
    "n, layouts",
    [
        (403, [(8, 2, 10), (4, 1, 7), (12, 3, 0)]),  # 2 processes, then 1, then 3
        (1000, [(4, 1, 130), (16, 2, 3), (8, 2, 0)]),  # the batch size changes too (more than one pool)
        (37, [(10, 2, 3), (4, 4, 0)]),  # what is left cut for 4 processes: a tail smaller than 4 is dropped
    ],
)
def test_the_sampler_resumes_another_layout_at_the_same_sample_position(n: int, layouts: list) -> None:
    """Each layout trains on its first `done` global batches; the last trains on all it has left. Together
    they cover the epoch's examples once each; only a tail smaller than the last world size may be left out."""
    lengths = np.random.default_rng(0).integers(1, 60, n)
    trained: list[int] = []
    for i, (size, world, done) in enumerate(layouts):
        sampler = BucketBatchSampler(lengths, size // world, world, seed=7)
        sampler.start_epoch(3, layouts[:i] if i else ())
        batches = list(sampler)
        assert len(batches) == len(sampler) and len(batches) % world == 0
        assert all(0 < len(b) <= size // world for b in batches)
        take = done * world if i < len(layouts) - 1 else len(batches)
        trained += [index for batch in batches[:take] for index in batch]
        sampler.start_epoch(3, layouts[:i] if i else ())
        assert list(sampler) == batches  # deterministic: every process cuts the same batches
    assert len(trained) == len(set(trained))
    assert 0 <= n - len(trained) < layouts[-1][1]


def test_a_crafted_layout_is_refused() -> None:
    from trainer.core.errors import ArtifactError
    from trainer.loop import TrainState
    from trainer.resume import check_layouts

    check_layouts(TrainState(global_batch=8, earlier_layouts=[[4, 1, 7]]), 2, 100, "x")
    for state, message in (
        (TrainState(global_batch=8, earlier_layouts=[[0, 1, 3]]), "bad sampler layout"),
        (TrainState(global_batch=8, earlier_layouts=[["8", 1, 3]]), "bad sampler layout"),
        (TrainState(global_batch=8, earlier_layouts=[[4, 1]]), "bad sampler layout"),
        (TrainState(global_batch=8, earlier_layouts=[[4, 1, 0]]), "bad sampler layout"),
        (TrainState(global_batch=1), "bad sampler layout"),
        (
            TrainState(global_batch=8, earlier_layouts=[[4, 1, 1]] * 101),
            "the sampler layouts account for more than the 100 training examples",
        ),
    ):
        with pytest.raises(ArtifactError, match=f"^x: {message}"):
            check_layouts(state, 2, 100, "x")
