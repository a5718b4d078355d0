"""The n-gram head's settings, chosen on dev: refit it beside trained sentiment LSTMs over a grid, in one run.

For each trained model (one per seed), the LSTM's own logits are computed once; then, for every L2
penalty and step count of the grid, the head (trainer/ngram.py) is fitted afresh on the training split
and the sum `LSTM + scale × head` is scored on dev and test for each scale, beside the head alone. The
table gives the means over the models; the default (trainer/ngram.py's `L2`, `STEPS`, and scale 1, the
plain sum the model computes) is the row with the best mean dev accuracy of the grid run on
2026-11-24 (docs/BENCHMARKS.md section 2).

    python -m bench.ngram_grid --model runs/ng-s1234/model runs/ng-s1235/model runs/ng-s1236/model \\
        --l2 3e-6 1e-5 3e-5 1e-4 --steps 60 120 300 --json bench/results/sentiment-accuracy/ngram-grid.json
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import add_json_arg, publish
from bench.sentiment_accuracy import load_split
from trainer import ngram
from trainer.core.preprocess import tokenize
from trainer.models import SentimentNet


def grid(model_dir: str, splits: dict[str, list], args: argparse.Namespace) -> tuple[list[dict], dict]:
    """One trained model: the head refitted for each (L2, steps); dev and test accuracy of the sum at each
    scale, and of the head alone, keyed by (l2, steps, scale)."""
    from bench import lstm as torch_lstm

    artifact, encoder = torch_lstm.load(Path(model_dir))
    if artifact.task != "sentiment":
        sys.exit(f"error: --model {model_dir} is a {artifact.task} model; expected a sentiment model")
    positive = artifact.vocabs.labels.itos[1]
    model = SentimentNet(dataclasses.replace(artifact.config, ngram_buckets=args.buckets), artifact.vocabs).eval()
    lstm_weights = {k: v for k, v in artifact.model.state_dict().items() if not k.startswith("ngram.")}
    model.load_state_dict(lstm_weights, strict=False)
    tokens = {name: [tokenize(r.text) for r in rows] for name, rows in splits.items()}
    gold = {name: np.array([r.label == positive for r in rows]) for name, rows in splits.items()}

    def logits(forward: Any, split: str) -> np.ndarray:
        return np.array(torch_lstm.logits(artifact, encoder, tokens[split], forward=forward))

    lstm = {name: logits(model.lstm_logits, name) for name in ("dev", "test")}
    reviews = [encoder.encode(t).words for t in tokens["train"]]
    fits, scores = [], {}
    for l2, steps in itertools.product(args.l2, args.steps):
        fit = ngram.fit(model.ngram, reviews, gold["train"].astype(np.float32), l2=l2, steps=steps)
        fits.append({"model": model_dir, "l2": l2, "steps": steps, **fit})
        head = {name: logits(model.ngram, name) for name in ("dev", "test")}
        for scale in args.scale:
            scores[(l2, steps, scale)] = [
                float(((lstm[s] + scale * head[s] > 0) == gold[s]).mean()) for s in ("dev", "test")
            ] + [float(((head[s] > 0) == gold[s]).mean()) for s in ("dev", "test")]
    return fits, scores


def run(args: argparse.Namespace) -> dict:
    splits = {name: load_split(args.data, name, args.limit) for name in ("train", "dev", "test")}
    fits, scores = [], {}
    for model_dir in args.model:
        model_fits, model_scores = grid(model_dir, splits, args)
        fits += model_fits
        for setting, accuracies in model_scores.items():
            scores.setdefault(setting, []).append(accuracies)
    rows = []
    for (l2, steps, scale), per_model in scores.items():
        dev, test, head_dev, head_test = (statistics.fmean(column) for column in zip(*per_model))
        rows.append(
            {"l2": l2, "steps": steps, "scale": scale, "dev_accuracy": dev, "test_accuracy": test,
             "head_alone_dev": head_dev, "head_alone_test": head_test, "test_per_model": [m[1] for m in per_model]}
        )  # fmt: skip
    rows.sort(key=lambda r: -r["dev_accuracy"])
    return {"data": args.data, "models": args.model, "fits": fits, "table": rows, "best_by_dev": rows[0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ngram_grid", description=__doc__.split("\n")[0])
    parser.add_argument("--model", nargs="+", required=True, help="RUN_DIR/model of trained sentiment models")
    parser.add_argument("--data", default="rotten-tomatoes")
    parser.add_argument("--l2", nargs="+", type=float, default=[ngram.L2])
    parser.add_argument("--steps", nargs="+", type=int, default=[ngram.STEPS])
    parser.add_argument("--scale", nargs="+", type=float, default=[0.5, 1.0, 2.0])
    parser.add_argument("--buckets", type=int, default=1 << 18)
    parser.add_argument("--limit", type=int, help="only the first N reviews of each split (smoke tests)")
    add_json_arg(parser)
    args = parser.parse_args(argv)
    columns = ["l2", "steps", "scale", "dev_accuracy", "test_accuracy", "head_alone_dev", "head_alone_test"]
    publish("ngram_grid", args, run(args), columns)
    return 0


if __name__ == "__main__":
    sys.exit(main())
