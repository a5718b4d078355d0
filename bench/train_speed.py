"""Tagger training throughput: our batched trainer beside the PyTorch tutorial's per-sentence loop,
and our trainer on 1 vs 2 CPU processes, all on the Brown train split in one run.

Ours is the product itself: `python -m trainer train --task tagger --data brown --max_steps N`,
whose metrics.json reports `train_tokens_per_s`. The baseline is the augmented exercise of the
PyTorch "Sequence Models and Long Short-Term Memory Networks" tutorial: a character LSTM's final
hidden state per word joined with the word embedding, a unidirectional word LSTM, log_softmax +
NLLLoss, Adam, one sentence per step, at the same sizes as our defaults (word 100/128, char 30/50).
Ours also runs with `--bidirectional false`, the tutorial's word-LSTM shape (our char encoder stays
bidirectional). Every row is set against the training FLOP floor: 3x the forward FLOPs per token
(backward ~ 2x forward; `bench.flops`) at the machine's best sgemm rate, measured in the same run.

The tutorial's index tensors are built before the clock starts, and it runs on 1 and on 2 torch threads with
the ratio taken against the faster; both choices only flatter it (one sentence's tiny matmuls gain
nothing from a second thread, and lose much when the cores are shared).

    python -m bench.train_speed --steps 200 --tutorial-sentences 1000 \
        --json bench/results/training-throughput/train-speed.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from bench.common import add_json_arg, publish, timed, torch_threads
from bench.flops import flops_per_token, lstm_step_flops, matmul_gflops
from trainer.core.config import PreprocessConfig, TaggerConfig
from trainer.core.data import TaggedSentence, open_dataset

TRAIN_OVER_FORWARD = 3  # forward + backward (two products per forward one: input and weight gradients)


class TutorialTagger(nn.Module):
    """The tutorial's exercise model: per-word char LSTM final state + word embedding -> LSTM -> tags."""

    def __init__(
        self,
        n_words: int,
        n_chars: int,
        n_tags: int,
        word_dim: int = 100,
        word_hidden: int = 128,
        char_dim: int = 30,
        char_hidden: int = 50,
    ) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(n_words, word_dim)
        self.char_embeddings = nn.Embedding(n_chars, char_dim)
        self.char_lstm = nn.LSTM(char_dim, char_hidden)
        self.lstm = nn.LSTM(word_dim + char_hidden, word_hidden)
        self.hidden2tag = nn.Linear(word_hidden, n_tags)

    def forward(self, words: torch.Tensor, chars: Sequence[torch.Tensor]) -> torch.Tensor:
        finals = []
        for word_chars in chars:  # one char LSTM call per word, as in the tutorial
            _, (h, _) = self.char_lstm(self.char_embeddings(word_chars).view(len(word_chars), 1, -1))
            finals.append(h.view(-1))  # (char_hidden,)
        x = torch.cat([self.word_embeddings(words), torch.stack(finals)], dim=1)  # (T, word_dim + char_hidden)
        out, _ = self.lstm(x.view(len(words), 1, -1))  # (T, 1, word_hidden)
        return F.log_softmax(self.hidden2tag(out.view(len(words), -1)), dim=1)  # (T, n_tags)


def tutorial_flops_per_token(chars_per_word: float, n_tags: int = 12) -> float:
    """Forward FLOPs per token of `TutorialTagger` at its defaults: all unidirectional, no padding."""
    return lstm_step_flops(100 + 50, 128) + 2 * 128 * n_tags + chars_per_word * lstm_step_flops(30, 50)


def tutorial_tokens_per_s(
    sentences: Sequence[TaggedSentence], steps: int, threads: int, warmup: int = 5, seed: int = 1234
) -> dict[str, float | int]:
    """Train the tutorial model one sentence per step; tokens/s over `steps` sentences after `warmup`."""
    torch.manual_seed(seed)
    words = {w: i for i, w in enumerate(sorted({w for s in sentences for w in s.words}))}
    chars = {c: i for i, c in enumerate(sorted({c for s in sentences for w in s.words for c in w}))}
    tags = {t: i for i, t in enumerate(sorted({t for s in sentences for t in s.tags}))}
    model = TutorialTagger(len(words), len(chars), len(tags))
    optimizer = torch.optim.Adam(model.parameters())
    loss_function = nn.NLLLoss()
    chosen = list(itertools.islice(itertools.cycle(sentences), warmup + steps))
    prepared = [
        (
            torch.tensor([words[w] for w in s.words]),
            [torch.tensor([chars[c] for c in w]) for w in s.words],
            torch.tensor([tags[t] for t in s.tags]),
        )
        for s in chosen
    ]

    def step(word_ids: torch.Tensor, char_ids: list[torch.Tensor], targets: torch.Tensor) -> None:
        model.zero_grad()
        loss = loss_function(model(word_ids, char_ids), targets)
        loss.backward()
        optimizer.step()

    with torch_threads(threads):
        for item in prepared[:warmup]:
            step(*item)
        with timed() as t:
            for item in prepared[warmup:]:
                step(*item)
    tokens = sum(len(s.words) for s in chosen[warmup:])
    return {
        "sentences": steps,
        "tokens": tokens,
        "seconds": t["s"],
        "tokens_per_s": tokens / t["s"],
        "torch_threads": threads,
    }


def trainer_command(
    out: Path, data: str, steps: int, nproc: int, extra: Sequence[str], task: str = "tagger"
) -> list[str]:
    """The product's training command, on `nproc` CPU processes through torch.distributed.run."""
    args = [
        "-m",
        "trainer",
        "train",
        "--task",
        task,
        "--data",
        data,
        "--out",
        str(out),
        "--max_steps",
        str(steps),
        *extra,
    ]
    if nproc == 1:
        return [sys.executable, *args]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--standalone", *args]


def trainer_tokens_per_s(
    out: Path, data: str, steps: int, nproc: int, extra: Sequence[str], threads: int | None = None
) -> dict:
    """Run our trainer into `out` for `steps` steps and read the throughput it reports in metrics.json.

    `threads` sets OMP_NUM_THREADS (torch's intra-op threads); torchrun sets 1 per process itself.
    """
    command = trainer_command(out, data, steps, nproc, extra)
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    with timed() as t:
        done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"error: `{' '.join(command)}` failed ({done.returncode}):\n{done.stderr[-2000:]}")
    metrics = json.loads((out / "model" / "metrics.json").read_text(encoding="utf-8"))
    return {
        "processes": nproc,
        "steps": metrics.get("steps"),
        "world_size": metrics.get("world_size"),
        "tokens_per_s": metrics["train_tokens_per_s"],
        "wall_s": t["s"],
        "command": " ".join(command),
    }


def run(args: argparse.Namespace) -> dict:
    train = list(itertools.islice(open_dataset(args.data).examples("train"), args.limit_train))
    cap = PreprocessConfig().max_word_len
    chars = sum(min(len(w), cap) for s in train for w in s.words) / sum(len(s.words) for s in train)
    rate = max(matmul_gflops(1), matmul_gflops(2))
    results: dict = {"data": args.data, "train_sentences": len(train), "chars_per_word": chars, "matmul_gflops": rate}
    rows = []
    tutorial = []
    for threads in (1, 2) if args.tutorial_sentences else ():
        tutorial.append(tutorial_tokens_per_s(train, args.tutorial_sentences, threads))
        rows.append(
            {
                "trainer": f"tutorial loop, {threads} thread(s)",
                **tutorial[-1],
                "train_flops_per_token": TRAIN_OVER_FORWARD * tutorial_flops_per_token(chars),
            }
        )
    results["tutorial"] = tutorial
    # (name, processes, OMP threads per process, model-shape arguments, the config they give)
    runs = [(f"ours, {n} process(es)", n, None, [], TaggerConfig()) for n in args.nproc]
    if 1 in args.nproc:
        runs.append(("ours, 1 process, 1 thread", 1, 1, [], TaggerConfig()))
    if args.unidirectional:
        runs.append(
            (
                "ours, 1 process, unidirectional",
                1,
                None,
                ["--bidirectional", "false"],
                TaggerConfig(bidirectional=False),
            )
        )
    results["ours"] = []
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        for i, (name, nproc, threads, shape, config) in enumerate(runs):
            result = trainer_tokens_per_s(
                Path(tmp) / f"run{i}", args.data, args.steps, nproc, shape + args.trainer_arg, threads
            )
            results["ours"].append({"name": name, "omp_threads": threads, **result})
            rows.append(
                {
                    "trainer": name,
                    **result,
                    "train_flops_per_token": TRAIN_OVER_FORWARD * flops_per_token(config, 12, chars),
                }
            )
    base = max((t["tokens_per_s"] for t in tutorial), default=None)
    for row in rows:
        row["x_tutorial"] = row["tokens_per_s"] / base if base else None
        row["of_floor"] = row["tokens_per_s"] * row["train_flops_per_token"] / (rate * 1e9)
    results["table"] = rows
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.train_speed", description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="brown", help="a tagger --data spec (default: brown)")
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps of our trainer per run (default: 200)")
    parser.add_argument(
        "--nproc", type=int, nargs="*", default=[1, 2], help="process counts for our trainer (default: 1 2)"
    )
    parser.add_argument(
        "--tutorial-sentences",
        type=int,
        default=1000,
        help="timed sentences (= steps) of the tutorial loop; 0 skips it (default: 1000)",
    )
    parser.add_argument(
        "--no-unidirectional",
        dest="unidirectional",
        action="store_false",
        help="skip the extra 1-process run of ours with --bidirectional false",
    )
    parser.add_argument(
        "--trainer-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for every `trainer train` run, repeatable; FLOP floors assume the "
        "default model shape "
        "(e.g. --trainer-arg=--batch_size --trainer-arg=64)",
    )
    parser.add_argument("--limit-train", type=int, help="use only the first N train sentences for the tutorial loop")
    add_json_arg(parser)
    args = parser.parse_args(argv)
    publish("train_speed", args, run(args), ["trainer", "tokens_per_s", "x_tutorial", "of_floor", "seconds", "wall_s"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
