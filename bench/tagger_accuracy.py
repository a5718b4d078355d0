"""Brown test token accuracy and OOV accuracy: our LSTM tagger beside NLTK's averaged perceptron.

Both taggers are trained on the same Brown train split and scored on the same test tokens. OOV is
one definition for both: the word, normalized as our model normalizes it (lower-case, digits -> 0,
`trainer.core.preprocess.normalize_word`), never occurs in the train split.

    python -m bench.tagger_accuracy --model runs/bench-tagger/model \
        --json bench/results/tagger-accuracy/lexicon-test.json

Several `--model` directories (variants of a recipe) are each scored against the same perceptron run.
`--split dev` scores the dev split instead, which is what variants are chosen by.
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import add_json_arg, publish, timed
from trainer.core.config import PreprocessConfig
from trainer.core.data import TaggedSentence, open_dataset
from trainer.core.preprocess import NORMALIZE_KEYS, normalize_word


def load_split(spec: str, split: str, limit: int | None = None) -> list[TaggedSentence]:
    return list(itertools.islice(open_dataset(spec).examples(split), limit))


def train_words(train: Sequence[TaggedSentence], config: PreprocessConfig) -> set[str]:
    return {normalize_word(w, config) for s in train for w in s.words}


def score(
    gold: Sequence[TaggedSentence], predicted: Sequence[Sequence[str]], known: set[str], config: PreprocessConfig
) -> dict[str, float | int]:
    """Token accuracy overall and on OOV tokens (normalized word not in `known`)."""
    right = total = oov_right = oov_total = 0
    for sentence, tags in zip(gold, predicted, strict=True):
        for word, gold_tag, tag in zip(sentence.words, sentence.tags, tags, strict=True):
            hit = gold_tag == tag
            right += hit
            total += 1
            if normalize_word(word, config) not in known:
                oov_right += hit
                oov_total += 1
    return {
        "accuracy": right / total,
        "oov_accuracy": oov_right / oov_total if oov_total else None,
        "tokens": total,
        "oov_tokens": oov_total,
    }


def train_perceptron(train: Sequence[TaggedSentence], nr_iter: int = 5, seed: int = 1234) -> Any:
    """NLTK's averaged perceptron trained from scratch (no nltk_data) on `train`."""
    from nltk.tag.perceptron import PerceptronTagger

    tagger = PerceptronTagger(load=False)
    random.seed(seed)  # train() shuffles the sentences with the global `random`
    tagger.train([list(zip(s.words, s.tags)) for s in train], nr_iter=nr_iter)
    return tagger


def perceptron(
    train: Sequence[TaggedSentence], test: Sequence[TaggedSentence], nr_iter: int = 5, seed: int = 1234
) -> tuple[list[list[str]], dict[str, float]]:
    """Train NLTK's averaged perceptron from scratch (no nltk_data) and tag the test sentences."""
    with timed() as fit:
        tagger = train_perceptron(train, nr_iter, seed)
    with timed() as run:
        tags = [[tag for _, tag in tagger.tag(list(s.words))] for s in test]
    return tags, {"train_s": fit["s"], "tag_s": run["s"]}


def lstm(model_dir: Path, test: Sequence[TaggedSentence], batch_size: int) -> tuple[list[list[str]], dict[str, float]]:
    """Tags from our trained artifact: batched forward in torch, argmax per token."""
    from bench import lstm as torch_lstm

    artifact, encoder = torch_lstm.load(model_dir)
    if artifact.task != "tagger":
        sys.exit(f"error: --model {model_dir} is a {artifact.task} model; expected a tagger")
    labels = artifact.vocabs.labels.itos
    with timed() as run:
        logits = torch_lstm.logits(artifact, encoder, [s.words for s in test], batch_size)
    tags = [[labels[i] for i in row.argmax(axis=1)] for row in logits]
    for sentence, row in zip(test, tags):  # over-long sentences are truncated: count the rest as wrong
        row += [None] * (len(sentence.words) - len(row))
    return tags, {"tag_s": run["s"], "train_s": artifact.metrics.get("train_seconds")}  # timed steps only


def run(args: argparse.Namespace) -> dict:
    config = PreprocessConfig()
    models = [Path(m) for m in args.model or []]
    if models:
        from trainer.artifact import read_meta

        config = read_meta(models[0])[1]  # OOV is normalized exactly as our model normalizes words
        for model in models[1:]:
            other = read_meta(model)[1]
            if any(getattr(other, key) != getattr(config, key) for key in NORMALIZE_KEYS):
                sys.exit(f"error: --model {model} normalizes words unlike {models[0]}; score them in separate runs")
    train = load_split(args.data, "train", args.limit_train)
    test = load_split(args.data, args.split, args.limit_test)
    known = train_words(train, config)
    results = {"data": args.data, "split": args.split, "train_sentences": len(train), "test_sentences": len(test)}
    rows = []
    perceptron_tags, times = perceptron(train, test, args.nr_iter, args.seed)
    results["perceptron"] = {**score(test, perceptron_tags, known, config), **times, "nr_iter": args.nr_iter}
    rows.append({"tagger": "nltk averaged perceptron", **results["perceptron"]})
    results["lstm"] = []
    for model in models:
        tags, times = lstm(model, test, args.batch_size)
        # The most any combination with the perceptron could reach: a token counts when either tagger is right.
        either = [
            [gold if gold in (ours, theirs) else ours for gold, ours, theirs in zip(s.tags, row, other, strict=True)]
            for s, row, other in zip(test, tags, perceptron_tags, strict=True)
        ]
        oracle = score(test, either, known, config)
        facts = {"either_right": oracle["accuracy"], "oov_either_right": oracle["oov_accuracy"]}
        results["lstm"].append({**score(test, tags, known, config), **facts, **times, "model": str(model)})
        rows.append({"tagger": f"our LSTM tagger ({model})", **results["lstm"][-1]})
    results["table"] = rows
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tagger_accuracy", description=__doc__.split("\n")[0])
    parser.add_argument("--model", nargs="+", help="RUN_DIR/model of trained taggers (omit: perceptron only)")
    parser.add_argument("--data", default="brown", help="a tagger --data spec (default: brown)")
    parser.add_argument("--nr-iter", type=int, default=5, help="perceptron training passes (default: 5)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--limit-train", type=int, help="use only the first N train sentences (smoke tests)")
    parser.add_argument("--limit-test", type=int, help="use only the first N test sentences (smoke tests)")
    parser.add_argument("--split", choices=("test", "dev"), default="test", help="what to score (dev: to choose)")
    add_json_arg(parser)
    args = parser.parse_args(argv)
    columns = ["tagger", "accuracy", "oov_accuracy", "oov_either_right", "tokens", "oov_tokens", "train_s", "tag_s"]
    publish("tagger_accuracy", args, run(args), columns)
    return 0


if __name__ == "__main__":
    sys.exit(main())
