"""Rotten Tomatoes test accuracy: our sentiment LSTM beside NLTK's Naive Bayes on the same split.

Naive Bayes sees unigram and bigram presence features of the same tokens our model sees
(`trainer.core.preprocess.tokenize`, lower-cased). The test set has ~1,300 reviews, so each accuracy
carries a binomial 95% interval of about +-2.3 points; it is reported beside the figure.

Several `--model` directories (the same recipe trained with different seeds) are each scored, then
summarized: mean test accuracy, sample sd over the runs, and the 95% interval of the mean over seeds
(Student's t), beside the binomial interval of the mean accuracy on this test set.

    python -m bench.sentiment_accuracy --model runs/s1/model runs/s2/model runs/s3/model \
        --json bench/results/sentiment-accuracy/default.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import add_json_arg, publish, timed
from trainer.core.data import Review, open_dataset
from trainer.core.preprocess import tokenize


def load_split(spec: str, split: str, limit: int | None = None) -> list[Review]:
    return list(itertools.islice(open_dataset(spec).examples(split), limit))


def features(text: str) -> dict[str, bool]:
    """Presence of each lower-cased unigram and adjacent bigram."""
    tokens = [t.lower() for t in tokenize(text)]
    found = {f"w:{t}": True for t in tokens}
    found.update({f"b:{a} {b}": True for a, b in zip(tokens, tokens[1:])})
    return found


def accuracy(gold: Sequence[Review], predicted: Sequence[str]) -> dict[str, float | int]:
    n = len(gold)
    acc = sum(r.label == p for r, p in zip(gold, predicted, strict=True)) / n
    return {"accuracy": acc, "ci95": 1.96 * math.sqrt(acc * (1 - acc) / n), "documents": n}


def naive_bayes(train: Sequence[Review], test: Sequence[Review]) -> tuple[list[str], dict[str, float]]:
    from nltk.classify import NaiveBayesClassifier

    with timed() as fit:
        classifier = NaiveBayesClassifier.train([(features(r.text), r.label) for r in train])
    with timed() as run:
        labels = [classifier.classify(features(r.text)) for r in test]
    return labels, {"train_s": fit["s"], "predict_s": run["s"]}


def lstm(model_dir: Path, test: Sequence[Review], batch_size: int) -> tuple[list[str], dict[str, Any]]:
    """Labels from our artifact: logit > 0 is P(positive) > 0.5. For a model with an n-gram head, also the
    test accuracy of each of the two logits it sums, alone (`parts`)."""
    from bench import lstm as torch_lstm

    artifact, encoder = torch_lstm.load(model_dir)
    if artifact.task != "sentiment":
        sys.exit(f"error: --model {model_dir} is a {artifact.task} model; expected a sentiment model")
    negative, positive = artifact.vocabs.labels.itos
    tokens = [tokenize(r.text) for r in test]

    def labels(forward: Any = None) -> list[str]:
        logits = torch_lstm.logits(artifact, encoder, tokens, batch_size, forward)
        return [positive if float(z) > 0 else negative for z in logits]

    with timed() as run:
        predicted = labels()
    facts: dict[str, Any] = {"predict_s": run["s"]}
    if artifact.model.ngram is not None:
        parts = {"lstm_alone": artifact.model.lstm_logits, "ngram_head_alone": artifact.model.ngram}
        facts["parts"] = {name: accuracy(test, labels(part))["accuracy"] for name, part in parts.items()}
    return predicted, facts


# Student's t, two-sided 95%, by degrees of freedom (runs - 1): a handful of seeds is all a benchmark trains.
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def seeds_summary(runs: Sequence[dict], documents: int, baseline: float) -> dict[str, float | int | bool]:
    """Mean, sd and 95% intervals of the runs' test accuracies; whether the interval over seeds clears `baseline`."""
    accs = [r["accuracy"] for r in runs]
    mean = statistics.fmean(accs)
    sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
    half = T95.get(len(accs) - 1, 1.96) * sd / math.sqrt(len(accs)) if len(accs) > 1 else None
    return {
        "runs": len(accs),
        "accuracy": mean,
        "sd": sd,
        "ci95_seeds": half,
        "ci95": 1.96 * math.sqrt(mean * (1 - mean) / documents),
        "dev_accuracy": statistics.fmean(r["dev_accuracy"] for r in runs),
        "seeds_interval_above_baseline": half is not None and mean - half > baseline,
    }


def run_facts(model_dir: Path) -> dict:
    """The run's seed and dev accuracy, from the artifact's metrics.json and the run's start event."""
    metrics = json.loads((model_dir / "metrics.json").read_text(encoding="utf-8"))
    facts = {"dev_accuracy": metrics["dev"]["accuracy"], "train_s": metrics.get("train_seconds")}
    log = model_dir.parent / "logs" / "metrics.jsonl"
    if log.is_file():
        start = json.loads(log.read_text(encoding="utf-8").splitlines()[0])
        facts["seed"] = start.get("config", {}).get("train", {}).get("seed")
    return facts


def run(args: argparse.Namespace) -> dict:
    train = load_split(args.data, "train", args.limit_train)
    test = load_split(args.data, "test", args.limit_test)
    results = {"data": args.data, "train_documents": len(train)}
    labels, times = naive_bayes(train, test)
    results["naive_bayes"] = {**accuracy(test, labels), **times, "features": "unigram+bigram presence"}
    rows = [{"classifier": "nltk NaiveBayes (uni+bigrams)", **results["naive_bayes"]}]
    results["lstm"] = []
    for model in map(Path, args.model or []):
        labels, times = lstm(model, test, args.batch_size)
        results["lstm"].append({**accuracy(test, labels), **times, **run_facts(model), "model": str(model)})
        rows.append({"classifier": f"our sentiment LSTM ({model})", **results["lstm"][-1]})
    if len(results["lstm"]) > 1:
        results["lstm_summary"] = seeds_summary(results["lstm"], len(test), results["naive_bayes"]["accuracy"])
        rows.append({"classifier": "our sentiment LSTM, mean over runs", **results["lstm_summary"]})
    for part in ("lstm_alone", "ngram_head_alone"):  # each half of a model with an n-gram head, alone
        accs = [r["parts"][part] for r in results["lstm"] if "parts" in r]
        if accs:
            results[f"{part}_mean"] = statistics.fmean(accs)
            rows.append(
                {"classifier": f"its {part.replace('_', ' ')}, mean over runs", "accuracy": statistics.fmean(accs)}
            )
    results["table"] = rows
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sentiment_accuracy", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model", nargs="+", help="RUN_DIR/model of sentiment models, e.g. one per seed (omit: NB only)"
    )
    parser.add_argument("--data", default="rotten-tomatoes", help="a sentiment --data spec (default: rotten-tomatoes)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--limit-train", type=int, help="use only the first N train reviews (smoke tests)")
    parser.add_argument("--limit-test", type=int, help="use only the first N test reviews (smoke tests)")
    add_json_arg(parser)
    args = parser.parse_args(argv)
    publish(
        "sentiment_accuracy",
        args,
        run(args),
        ["classifier", "accuracy", "sd", "ci95_seeds", "ci95", "dev_accuracy", "documents", "train_s", "predict_s"],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
