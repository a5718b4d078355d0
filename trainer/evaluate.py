"""Batches -> predictions -> metrics, and `python -m trainer evaluate`.

Training scores dev and test with these same functions (trainer/loop.py), on batches from the same pipeline
(trainer/inputs.py), so the numbers in RUN_DIR/model/metrics.json and those of `evaluate` are computed one way.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from trainer.artifact import load_artifact, write_json
from trainer.core.cli import Parser
from trainer.core.config import check_out_path, check_value
from trainer.core.data import open_dataset
from trainer.core.errors import DataError
from trainer.core.jsonio import dumps
from trainer.core.preprocess import Encoder, Vocabs
from trainer.inputs import Collate, EncodedSplit, eval_loader, read_split
from trainer.metrics import summary
from trainer.runlock import note_training
from trainer.tasks import TaskSide, task_side

# ---- predictions ---------------------------------------------------------------------------


@torch.no_grad()
def predict(
    model: torch.nn.Module, loader: DataLoader, accelerator: Accelerator, side: TaskSide
) -> dict[str, np.ndarray]:
    """Gold and predicted values of a prepared loader, gathered from every process (`TaskSide.gather`)."""
    was_training = model.training
    model.eval()
    names = accelerator.unwrap_model(model).input_names
    parts: dict[str, list[np.ndarray]] = defaultdict(list)
    for batch in loader:
        logits = model(*(batch[name] for name in names)).float()
        for k, v in side.gather(logits, batch, accelerator).items():
            parts[k].append(v)
    model.train(was_training)
    return {k: np.concatenate(v) for k, v in parts.items()}


def score(
    model: torch.nn.Module, loader: DataLoader, accelerator: Accelerator, side: TaskSide, vocabs: Vocabs
) -> dict[str, Any]:
    """All metrics of one prepared loader; `accuracy` is the one that picks the best model."""
    return side.metrics(predict(model, loader, accelerator, side), vocabs)


# ---- the command ---------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
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
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    note_training(args.model, "evaluate")  # a training run holds RUN_DIR: say which model/ this reads
    artifact = load_artifact(args.model)
    dataset = open_dataset(args.data, skip_bad_lines=args.skip_bad_lines)
    if dataset.task != artifact.task:
        raise DataError(f"--data {args.data} is {dataset.task} data but {args.model} is a {artifact.task} model")
    split = read_split(dataset, args.split)
    if not split.tokens:
        raise DataError(f"--data {args.data}: split {args.split!r} has no usable examples ({split.empty} empty)")
    encoder = Encoder(artifact.vocabs, artifact.preprocess)
    side = task_side(artifact.task)
    data = EncodedSplit(split, encoder, side)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    loader = eval_loader(data, Collate(encoder, side), args.batch_size)
    model, loader = accelerator.prepare(artifact.model, loader)
    metrics = score(model, loader, accelerator, side, artifact.vocabs)

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
