"""`python -m trainer train` driven by subprocess on small real data (Brown and Rotten Tomatoes slices).

Every run uses a tiny model and a few dozen steps. Subprocesses run with OMP_NUM_THREADS=1: tiny
models gain nothing from threads, and on a busy 2-core machine two OpenMP threads per process are
many times slower than one.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, TINY_SENTIMENT, events, run_main, tiny_tagger, trainer
from safetensors.torch import load_file


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def max_diff(a: Path, b: Path) -> float:
    x, y = load_file(str(a)), load_file(str(b))
    assert x.keys() == y.keys()
    return max((x[k] - y[k]).abs().max().item() for k in x)


def test_two_processes_agree_with_one_process_on_the_global_batch(data: dict[str, str], tmp_path: Path) -> None:
    """2 processes x batch 4 vs 1 process x batch 8: the same examples per step and the loss normalised
    over the global batch, so only float summation order differs. Tolerance: 1e-5 on every weight
    after 20 Adam steps at lr 2e-3 (observed ~2e-7), while the weights themselves move by > 1e-3."""
    common = [
        "train",
        *tiny_tagger(data["tagger"]),
        "--dropout",
        "0",
        "--word_dropout",  # the tagger's schedule has it on: random, so off here like dropout
        "0",
        "--max_steps",
        "20",
        "--save_every",
        "10",
        "--eval_every",
        "10",
        "--log_every",
        "5",
        "--warmup_steps",
        "5",
    ]
    two, one = tmp_path / "two", tmp_path / "one"
    trainer(
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "trainer",
        *common,
        "--batch_size",
        "4",
        "--out",
        str(two),
        module="torch.distributed.run",
    )
    trainer(*common, "--batch_size", "8", "--out", str(one))

    metrics = json.loads((two / "model" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["steps"] == 20 and metrics["train_tokens_per_s"] > 0
    assert events(two, "start")[0]["world_size"] == 2
    checksums = events(two, "end")[-1]["weights_sha256_per_process"]
    assert len(checksums) == 2 and checksums[0] == checksums[1]  # DDP kept both ranks identical

    final, halfway = "checkpoints/step-20/model.safetensors", "checkpoints/step-10/model.safetensors"
    assert max_diff(one / final, two / final) <= 1e-5
    assert max_diff(one / final, one / halfway) > 1e-3
    for a, b in zip(events(one, "train"), events(two, "train"), strict=True):
        assert a["step"] == b["step"] and abs(a["loss"] - b["loss"]) <= 1e-5

    assert sorted(os.listdir(two / "checkpoints/step-20")) == [
        "best.safetensors",
        "model.safetensors",
        "optimizer.json",
        "optimizer.safetensors",
        "rng-0.json",
        "rng-1.json",
        "scheduler.json",
        "trainer_state.json",
    ]  # no pickles: safetensors and JSON
    manifest = json.loads((two / "checkpoints/step-20/trainer_state.json").read_text())
    assert (
        manifest["world_size"] == 2
        and sorted(manifest["files"]) == sorted(os.listdir(two / "checkpoints/step-20"))[:-1]
    )
    assert (two / "plots" / "curves.png").stat().st_size > 0
    assert list((two / "logs").rglob("events.out.tfevents.*"))


def test_two_processes_fit_the_same_ngram_head_as_one(data: dict[str, str], tmp_path: Path) -> None:
    """Under DDP every process fits sentiment's n-gram head on the whole training split (it scores its shard of
    dev and test with it): the released head is the one a single process fits, and metrics.json's dev
    accuracy is the released model's, as `evaluate --split dev` computes it in one process."""
    common = ["train", "--task", "sentiment", "--data", data["sentiment"], *TINY_SENTIMENT]
    common += ["--max_steps", "6", "--eval_every", "6", "--warmup_steps", "2", "--ngram_buckets", "4096"]
    two, one = tmp_path / "two", tmp_path / "one"
    trainer("--standalone", "--nproc-per-node", "2", "-m", "trainer", *common, "--batch_size", "4", "--out", str(two),
            module="torch.distributed.run")  # fmt: skip
    trainer(*common, "--batch_size", "8", "--out", str(one))

    heads = [load_file(str(run / "model" / "model.safetensors"))["ngram.weight"] for run in (two, one)]
    assert heads[0].abs().max() > 0 and (heads[0] == heads[1]).all()
    metrics = json.loads((two / "model" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["ngram"]["reviews"] == metrics["examples"]["train"]
    proc = run_main("trainer", "evaluate", "--model", two / "model", "--data", data["sentiment"], "--split", "dev")
    assert json.loads(proc.stdout)["accuracy"] == metrics["dev"]["accuracy"] == metrics["ngram"]["dev_accuracy"]


@pytest.mark.slow  # ~90 s; exact resume at 1 process stays in the default tier (test_checkpoint.py)
def test_resume_mid_epoch_gives_the_same_weights(data: dict[str, str], tmp_path: Path) -> None:
    """40 steps straight vs 20 + stop + resume to 40, with dropout (random state matters), evaluation
    and best-model tracking on the way, and an epoch boundary (400 examples / 16 = 25 steps) after the stop."""
    args = [
        "train",
        *tiny_tagger(data["tagger"]),
        "--dropout",
        "0.3",
        "--batch_size",
        "16",
        "--max_steps",
        "40",
        "--eval_every",
        "10",
        "--save_every",
        "20",
        "--warmup_steps",
        "5",
    ]
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    trainer(*args, "--out", str(straight))
    trainer(*args, "--out", str(stopped), "--session_steps", "20")
    state = json.loads((stopped / "checkpoints/step-20/trainer_state.json").read_text())["trainer"]
    assert state["step"] == 20 and state["epoch"] == 0 and state["batches_in_epoch"] == 20
    assert not (stopped / "model").exists()

    again = trainer(*args, "--out", str(stopped), check=False)
    assert again.returncode == 2 and "--resume auto" in again.stderr  # existing checkpoints need --resume
    trainer(*args, "--out", str(stopped), "--resume", "auto")

    assert (
        max_diff(straight / "checkpoints/step-40/model.safetensors", stopped / "checkpoints/step-40/model.safetensors")
        <= 1e-6
    )
    assert max_diff(straight / "model/model.safetensors", stopped / "model/model.safetensors") <= 1e-6
    a, b = (json.loads((run / "model/metrics.json").read_text()) for run in (straight, stopped))
    assert (a["best_step"], a["dev"], a["test"]) == (b["best_step"], b["dev"], b["test"])

    changed = trainer(*args, "--out", str(stopped), "--resume", "auto", "--word_hidden", "12", check=False)
    assert changed.returncode == 2 and "word_hidden" in changed.stderr


# `python -m trainer` with the bf16 LSTM probe forced to say "this CPU has none".
NO_BF16_LSTM = (
    "import sys; from trainer import precision; precision.cpu_bf16_lstm_works = lambda: False; "
    "from trainer.__main__ import main; sys.exit(main(sys.argv[1:]))"
)


@pytest.mark.parametrize("probe", ["this CPU", "forced: no bf16 LSTM"])
def test_bf16_on_cpu_trains_with_gradient_accumulation(data: dict[str, str], tmp_path: Path, probe: str) -> None:
    """bf16 trains on every CPU: with oneDNN's bf16 LSTM where the CPU has one (AVX-512), else with
    float32 LSTM kernels inside the bf16 region. The forced case covers the fallback on AVX-512 machines;
    on a CPU without a bf16 LSTM the real probe already takes it."""
    from trainer.precision import cpu_bf16_lstm_works

    has_bf16_lstm = cpu_bf16_lstm_works()
    forced = probe.startswith("forced")
    if forced and not has_bf16_lstm:
        pytest.skip("this CPU has no bf16 LSTM: the 'this CPU' case already runs the float32-LSTM fallback")
    run = tmp_path / "run"
    args = [
        "train",
        *tiny_tagger(data["tagger"]),
        "--lr",
        "5e-3",
        "--warmup-steps",
        "5",
        "--batch-size",
        "8",
        "--grad-accum",
        "2",
        "--max-steps",
        "30",
        "--log-every",
        "5",
        "--eval-every",
        "15",
        "--mixed-precision",
        "bf16",
        "--out",
        str(run),
    ]
    proc = trainer("-c", NO_BF16_LSTM, *args, module=None) if forced else trainer(*args)
    fallback = forced or not has_bf16_lstm
    assert ("LSTM kernels run in float32" in proc.stdout) == fallback, proc.stdout
    metrics = json.loads((run / "model" / "metrics.json").read_text())
    assert metrics["mixed_precision"] == "bf16" and metrics["skipped_steps"] == 0 and metrics["steps"] == 30
    assert metrics["lstm_precision"] == ("fp32" if fallback else "bf16")
    assert metrics["train_tokens"] > 30 * 16 * 15  # 30 steps of 2 x 8 sentences (Brown averages ~20 tokens)
    losses = [e["loss"] for e in events(run, "train")]
    assert len(losses) == 6 and all(0 < loss < 10 for loss in losses)
    assert losses[-1] < losses[0] - 0.1
    assert metrics["test"]["accuracy"] > 0.2


def test_two_nodes_of_one_process_each(data: dict[str, str], tmp_path: Path) -> None:
    run, port = tmp_path / "run", free_port()
    args = [
        *tiny_tagger(data["tagger"]),
        "--batch_size",
        "8",
        "--max_steps",
        "10",
        "--out",
        str(run),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes",
                "2",
                "--node-rank",
                str(rank),
                "--nproc-per-node",
                "1",
                "--master-addr",
                "127.0.0.1",
                "--master-port",
                str(port),
                "-m",
                "trainer",
                "train",
                *args,
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    results = [node.communicate(timeout=300) for node in nodes]
    errors = [
        f"node {rank}: rc {node.returncode}: {err[-2000:]}" for rank, (node, (_, err)) in enumerate(zip(nodes, results))
    ]
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(errors)
    assert json.loads((run / "model" / "metrics.json").read_text())["world_size"] == 2
    checksums = events(run, "end")[-1]["weights_sha256_per_process"]
    assert len(checksums) == 2 and checksums[0] == checksums[1]


# `python -m trainer` whose loss is NaN from the 8th training batch on (the fault injected here, not in the product).
NAN_FROM_STEP_8 = """
import sys
import trainer.tasks as tasks
real, batches = tasks.TokenTagging.loss_sum, [0]
def nan_from_step_8(*args):
    batches[0] += 1
    total, count = real(*args)
    return (total * float("nan") if batches[0] >= 8 else total), count
tasks.TokenTagging.loss_sum = nan_from_step_8
from trainer.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


def test_non_finite_losses_stop_training_and_keep_the_last_checkpoint(data: dict[str, str], tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = [
        "train",
        *tiny_tagger(data["tagger"]),
        "--batch_size",
        "8",
        "--max_steps",
        "20",
        "--save_every",
        "5",
        "--out",
        str(run),
    ]
    failed = trainer("-c", NAN_FROM_STEP_8, *args, "--max_bad_steps", "3", module=None, check=False)
    assert failed.returncode == 2
    assert failed.stderr.strip().splitlines()[-1].startswith("error: 3 steps in a row had a non-finite loss")
    assert [e["step"] for e in events(run, "skipped_step")] == [8, 9, 10]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-5"] and not (run / "model").exists()
    trainer(*args, "--resume", "auto")  # the checkpoint before the failure is whole and resumable
    metrics = json.loads((run / "model" / "metrics.json").read_text())
    assert metrics["steps"] == 20 and metrics["skipped_steps"] == 0


@pytest.mark.slow
def test_launch_sh_trains_with_two_processes(data: dict[str, str], tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = subprocess.run(
        [
            str(REPO / "launch.sh"),
            "train",
            "--nproc",
            "2",
            "--",
            *tiny_tagger(data["tagger"]),
            "--max_steps",
            "10",
            "--out",
            str(run),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((run / "model" / "metrics.json").read_text())["world_size"] == 2


def test_early_stopping_after_patience_evaluations_without_improvement(data: dict[str, str], tmp_path: Path) -> None:
    """With a learning rate too small to move the weights, dev accuracy never improves on its first
    value, so patience 2 stops the run at the third evaluation, long before the 60-step budget."""
    run = tmp_path / "run"
    trainer(
        "train",
        "--task",
        "sentiment",
        "--data",
        data["sentiment"],
        "--out",
        str(run),
        *TINY_SENTIMENT,
        "--lr",
        "1e-12",
        "--warmup_steps",
        "0",
        "--eval_every",
        "2",
        "--patience",
        "2",
        "--max_steps",
        "60",
    )
    metrics = json.loads((run / "model" / "metrics.json").read_text())
    assert metrics["stopped"] == "early_stopping"
    assert metrics["steps"] == 6 and metrics["best_step"] == 2
    assert [e["improved"] for e in events(run, "eval") if e.get("split") == "dev"] == [True, False, False]
