"""The training data pipeline: examples -> token lists and targets -> encoded splits -> padded batches.

Training (trainer/runner.py) and `python -m trainer evaluate` both feed their models through these, so
the numbers in RUN_DIR/model/metrics.json and those of `evaluate` are computed one way. What a target is
(a tag per token, a label per text) is the task's torch side (trainer/tasks.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from trainer.core.data import Dataset
from trainer.core.preprocess import Encoded, Encoder
from trainer.tasks import TaskSide


@dataclass
class Split:
    """One split as token lists and targets; empty sentences/reviews are counted, not kept."""

    tokens: list[list[str]]
    targets: list  # one per example: what `Example.target` holds (tag tuples, label names)
    empty: int = 0


def read_split(dataset: Dataset, split: str) -> Split:
    out = Split([], [])
    for example in dataset.examples(split):
        tokens = example.tokens()
        if not tokens:
            out.empty += 1
            continue
        out.tokens.append(tokens)
        out.targets.append(example.target)
    return out


class EncodedSplit(torch.utils.data.Dataset):
    """A whole split encoded once up front, so batching is only padding (Encoder.batch)."""

    def __init__(self, split: Split, encoder: Encoder, side: TaskSide) -> None:
        limit = encoder.config.max_tokens
        self.items: list[Encoded] = [encoder.encode(tokens) for tokens in split.tokens]
        self.targets = side.encode_targets(encoder, split.targets)
        self.lengths = np.array([len(item.words) for item in self.items], np.int64)
        self.tokens = int(sum(len(t) for t in split.tokens))
        self.truncated = sum(len(t) > limit for t in split.tokens)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[Encoded, Any]:
        return self.items[i], self.targets[i]


class Collate:
    """A list of (Encoded, target) -> the model's named input tensors plus `targets`."""

    def __init__(self, encoder: Encoder, side: TaskSide) -> None:
        self.encoder, self.side = encoder, side

    def __call__(self, examples: list[tuple[Encoded, Any]]) -> dict[str, torch.Tensor]:
        arrays = self.encoder.batch([item for item, _ in examples])
        targets = self.side.batch_targets([target for _, target in examples], arrays["words"].shape)
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
