"""Examples -> batches -> predictions -> metrics, and `python -m trainer evaluate`.

Training scores dev and test with these same functions (`trainer.loop` and `trainer.runner` import them), so the
numbers in RUN_DIR/model/metrics.json and those of `evaluate` are computed one way.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader, Subset

from trainer.artifact import load_artifact, write_json
from trainer.core.cli import Parser
from trainer.core.config import check_out_path, check_value
from trainer.core.data import Dataset, open_dataset
from trainer.core.errors import DataError
from trainer.core.jsonio import dumps
from trainer.core.preprocess import SENTIMENT_LABELS, Encoded, Encoder, Vocabs, tokenize
from trainer.runlock import note_training

IGNORE = -100  # tag target at padded positions


# ---- text -> encoded examples ----------------------------------------------------------------


@dataclass
class Split:
    """One split as token lists and targets; empty sentences/reviews are counted, not kept."""

    tokens: list[list[str]]
    targets: list  # tagger: tag tuples; sentiment: label names
    empty: int = 0


def read_split(dataset: Dataset, split: str) -> Split:
    tagger = dataset.task == "tagger"
    out = Split([], [])
    for example in dataset.examples(split):
        tokens = list(example.words) if tagger else tokenize(example.text)
        if not tokens:
            out.empty += 1
            continue
        out.tokens.append(tokens)
        out.targets.append(example.tags if tagger else example.label)
    return out


class EncodedSplit(torch.utils.data.Dataset):
    """A whole split encoded once up front, so batching is only padding (Encoder.batch)."""

    def __init__(self, split: Split, encoder: Encoder, task: str) -> None:
        limit = encoder.config.max_tokens
        self.items: list[Encoded] = [encoder.encode(tokens) for tokens in split.tokens]
        if task == "tagger":
            self.targets = [encoder.labels(tags[:limit]) for tags in split.targets]
        else:
            self.targets = list(encoder.labels(split.targets).astype(np.float32))
        self.lengths = np.array([len(item.words) for item in self.items], np.int64)
        self.tokens = int(sum(len(t) for t in split.tokens))
        self.truncated = sum(len(t) > limit for t in split.tokens)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[Encoded, Any]:
        return self.items[i], self.targets[i]


class Collate:
    """A list of (Encoded, target) -> the model's named input tensors plus `targets`."""

    def __init__(self, encoder: Encoder, task: str) -> None:
        self.encoder, self.task = encoder, task

    def __call__(self, examples: list[tuple[Encoded, Any]]) -> dict[str, torch.Tensor]:
        arrays = self.encoder.batch([item for item, _ in examples])
        if self.task == "tagger":
            targets = np.full(arrays["words"].shape, IGNORE, np.int64)  # (B, T)
            for b, (_, tags) in enumerate(examples):
                targets[b, : len(tags)] = tags
        else:
            targets = np.array([label for _, label in examples], np.float32)  # (B,)
        batch = {name: torch.from_numpy(array) for name, array in arrays.items()}
        batch["targets"] = torch.from_numpy(targets)
        return batch


def eval_loader(data: EncodedSplit, collate: Collate, batch_size: int) -> DataLoader:
    """Sequential batches of length-sorted examples: little padding, and metrics ignore order."""
    order = np.argsort(data.lengths, kind="stable").tolist()
    # Its own generator, so that starting an iteration draws nothing from the global torch RNG
    # (dropout's), which keeps a resumed run's random stream the same as an uninterrupted one.
    return DataLoader(
        Subset(data, order), batch_size=batch_size, shuffle=False, collate_fn=collate, generator=torch.Generator()
    )


# ---- predictions ---------------------------------------------------------------------------


@torch.no_grad()
def predict(model: torch.nn.Module, loader: DataLoader, accelerator: Accelerator, task: str) -> dict[str, np.ndarray]:
    """Gold and predicted values of a prepared loader, gathered from every process.

    Tagger: flat `gold`, `pred`, `words` (ids) over real tokens. Sentiment: `gold`, `prob` per review.
    """
    was_training = model.training
    model.eval()
    names = accelerator.unwrap_model(model).input_names
    parts: dict[str, list[np.ndarray]] = defaultdict(list)
    for batch in loader:
        logits = model(*(batch[name] for name in names)).float()
        if task == "tagger":
            out = {"gold": batch["targets"], "pred": logits.argmax(-1), "words": batch["words"]}  # (B, T) each
            # Ranks hold different sentence lengths; pad to one T before gathering.
            out = {k: accelerator.pad_across_processes(v, dim=1, pad_index=IGNORE) for k, v in out.items()}
        else:
            out = {"gold": batch["targets"], "prob": torch.sigmoid(logits)}  # (B,) each
        out = {k: v.cpu().numpy() for k, v in accelerator.gather_for_metrics(out).items()}
        if task == "tagger":
            real = out["gold"] != IGNORE
            out = {k: v[real] for k, v in out.items()}
        for k, v in out.items():
            parts[k].append(v)
    model.train(was_training)
    return {k: np.concatenate(v) for k, v in parts.items()}


# ---- metrics -------------------------------------------------------------------------------


def _prf(tp: np.ndarray, predicted: np.ndarray, actual: np.ndarray) -> tuple[np.ndarray, ...]:
    precision = np.divide(tp, predicted, out=np.zeros(tp.shape), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros(tp.shape), where=actual > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros(tp.shape), where=total > 0)
    return precision, recall, f1


def tagger_metrics(gold: np.ndarray, pred: np.ndarray, oov: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """Token accuracy, accuracy on OOV words, per-tag P/R/F1, confusion (rows gold, columns predicted)."""
    n = len(labels)
    confusion = np.bincount(gold * n + pred, minlength=n * n).reshape(n, n)
    tp = np.diag(confusion)
    precision, recall, f1 = _prf(tp, confusion.sum(0), confusion.sum(1))
    correct = gold == pred
    return {
        "tokens": int(len(gold)),
        "accuracy": float(correct.mean()) if len(gold) else 0.0,
        "oov_tokens": int(oov.sum()),
        "oov_accuracy": float(correct[oov].mean()) if oov.any() else None,
        "per_tag": {
            label: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(confusion[i].sum()),
            }
            for i, label in enumerate(labels)
        },
        "confusion": {"labels": list(labels), "matrix": confusion.tolist()},
    }


def sentiment_metrics(gold: np.ndarray, prob: np.ndarray) -> dict[str, Any]:
    """Accuracy and precision/recall/F1 of the positive class at P(positive) >= 0.5."""
    gold = gold.astype(np.int64)
    pred = (prob >= 0.5).astype(np.int64)
    confusion = np.bincount(gold * 2 + pred, minlength=4).reshape(2, 2)
    precision, recall, f1 = _prf(np.diag(confusion), confusion.sum(0), confusion.sum(1))
    return {
        "examples": int(len(gold)),
        "accuracy": float((gold == pred).mean()) if len(gold) else 0.0,
        "precision": float(precision[1]),
        "recall": float(recall[1]),
        "f1": float(f1[1]),
        "confusion": {"labels": list(SENTIMENT_LABELS), "matrix": confusion.tolist()},
    }


def score(
    model: torch.nn.Module, loader: DataLoader, accelerator: Accelerator, task: str, vocabs: Vocabs
) -> dict[str, Any]:
    """All metrics of one prepared loader; `accuracy` is the one that picks the best model. A tagger's OOV
    tokens are those outside the word vocabulary: `<unk>` or one of its lexicon's classes."""
    out = predict(model, loader, accelerator, task)
    if task == "tagger":
        unknown = vocabs.unknown_ids
        oov = unknown[out["words"]] == out["words"]  # <pad> never reaches here: only real tokens
        return tagger_metrics(out["gold"], out["pred"], oov, vocabs.labels.itos)
    return sentiment_metrics(out["gold"], out["prob"])


def summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers: no per-tag table, no confusion matrix."""
    return {k: v for k, v in metrics.items() if k not in ("per_tag", "confusion")}


# ---- the command ---------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    parser = Parser(
        prog="python -m trainer evaluate",
        allow_abbrev=False,
        description="Score a trained model (RUN_DIR/model) on a split of a data set.",
    )
    parser.add_argument("--model", required=True, type=Path, metavar="RUN_DIR/model")
    parser.add_argument("--data", required=True, metavar="SPEC")
    parser.add_argument("--split", default="test", choices=("train", "dev", "test"))
    parser.add_argument(
        "--report",
        type=Path,
        metavar="FILE.json",
        help="write the full report here (and the confusion matrix as FILE.confusion.png)",
    )
    parser.add_argument("--batch-size", "--batch_size", type=int, default=128)
    parser.add_argument("--skip-bad-lines", "--skip_bad_lines", action="store_true")
    args = parser.parse_args(argv)
    check_value("--batch-size", args.batch_size, int, {"min": 1})
    if args.report is not None:  # checked now, not after the whole split has been scored
        check_out_path(args.report, "--report", directory=False)

    note_training(args.model, "evaluate")  # a training run holds RUN_DIR: say which model/ this reads
    artifact = load_artifact(args.model)
    dataset = open_dataset(args.data, skip_bad_lines=args.skip_bad_lines)
    if dataset.task != artifact.task:
        raise DataError(f"--data {args.data} is {dataset.task} data but {args.model} is a {artifact.task} model")
    split = read_split(dataset, args.split)
    if not split.tokens:
        raise DataError(f"--data {args.data}: split {args.split!r} has no usable examples ({split.empty} empty)")
    encoder = Encoder(artifact.vocabs, artifact.preprocess)
    data = EncodedSplit(split, encoder, artifact.task)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    loader = eval_loader(data, Collate(encoder, artifact.task), args.batch_size)
    model, loader = accelerator.prepare(artifact.model, loader)
    metrics = score(model, loader, accelerator, artifact.task, artifact.vocabs)

    report = {
        "model": str(args.model),
        "data": args.data,
        "split": args.split,
        "task": artifact.task,
        "examples": len(data),
        "skipped_empty": split.empty,
        "truncated": data.truncated,
        **metrics,
    }
    print(dumps({k: report[k] for k in summary(report)}, indent=2, nan_as_null=True))
    if args.report is not None:
        from trainer.plots import plot_confusion

        args.report.parent.mkdir(parents=True, exist_ok=True)
        write_json(args.report, report, nan_as_null=True)
        plot_confusion(metrics["confusion"], args.report.with_suffix(".confusion.png"))
    return 0
