"""Task kinds: everything that differs between a tagger and a text classifier, in one place (STYLE 13).

One `TaskKind` per kind, torch-free, which every stage follows instead of `if task == ...`: training
(labels, what an example is called, which metric picks the best weights), evaluation (metric names),
export (validation's real positions, int8 predictions, test vectors), serve (the logits layout, how a
result decodes, its v2 tensors, token input) and the Node client (model.json's `postprocess`, written from
`Decoder.postprocess`). The torch side of each kind (loss, targets, metrics, last steps) is trainer/tasks.py.

Adding a kind is one `TaskKind` here plus its torch side there. A multi-class classifier is a per-text kind
with a softmax decoder (`{"label": L, "probs": {...}}`); a span tagger a per-token kind whose decoder adds
`"spans"` to its result: neither needs the generic code to change, since the stages ask the kind.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from trainer.core.errors import ConfigError

UNIVERSAL_TAGS = ("NOUN", "VERB", "ADJ", "ADV", "ADP", "CONJ", "DET", "NUM", "PRON", "PRT", ".", "X")
SENTIMENT_LABELS = ("negative", "positive")  # index = the BCE target, so P(positive) = sigmoid(logit)
PROB_DECIMALS = 4  # a probability is rounded to this many places before the threshold: batch-size-proof output
THRESHOLD = 0.5  # a rounded P(labels[1]) >= THRESHOLD is labels[1]


@dataclass(frozen=True)
class Field:
    """One field of a result record, as the v2 endpoint sends it: per token (a padded 2-D tensor) or per text."""

    name: str
    datatype: str  # "BYTES" or "FP32"
    per_token: bool
    missing: Any  # what stands for None (an empty input's result) in a tensor


class TokenArgmax:
    """Per-token logits (T, labels): each real position's tag is the label of its largest logit."""

    layout = "(batch, time, labels)"
    label_field = "tags"  # the result field that holds the predicted label(s)
    axes = {0: "batch", 1: "time"}  # the logits' dynamic axes in the exported graph
    fields = (Field("tokens", "BYTES", True, ""), Field("tags", "BYTES", True, ""))

    def probe_shape(self, labels: int) -> tuple[int, ...]:
        """The logits shape of a one-token batch."""
        return (1, 1, labels)

    def postprocess(self) -> dict[str, Any]:
        """model.json's `postprocess`: how any client turns the graph's output into a result."""
        return {
            "output": "logits",
            "op": "argmax",
            "axis": -1,
            "label": "labels[argmax]",
            "positions": "t < lengths[b]; later positions are padding and undefined",
        }

    def label_ids(self, logits: np.ndarray, labels: Sequence[str]) -> np.ndarray:
        """(..., labels) -> (...) label ids."""
        return logits.argmax(axis=-1)

    vector_fields = ("tags",)  # the result fields test_vectors.json repeats beside the logits

    def decode(self, logits: np.ndarray, labels: Sequence[str], tokens: list[str]) -> dict[str, Any]:
        """One input's result from its (T, labels) logits; positions past its tokens are padding."""
        ids = self.label_ids(logits[: len(tokens)], labels)
        return {"tokens": tokens, "tags": [labels[i] for i in ids]}

    def logits_json(self, logits: np.ndarray) -> Any:
        """One input's logits as test_vectors.json holds them."""
        return logits.astype(float).tolist()

    def empty(self) -> dict[str, Any]:
        return {"tokens": [], "tags": []}


class BinarySigmoid:
    """One logit per text: P(labels[1]) = sigmoid(logit), rounded, then thresholded."""

    layout = "(batch,)"
    label_field = "label"
    axes = {0: "batch"}
    fields = (Field("label", "BYTES", False, ""), Field("prob_positive", "FP32", False, -1.0))

    def probe_shape(self, labels: int) -> tuple[int, ...]:
        return (1,)

    def postprocess(self) -> dict[str, Any]:
        return {
            "output": "logits",
            "op": "sigmoid",
            "round": PROB_DECIMALS,
            "threshold": THRESHOLD,
            "label": "labels[1] if round(sigmoid(logit), round) >= threshold else labels[0]",
        }

    def label_ids(self, logits: np.ndarray, labels: Sequence[str]) -> np.ndarray:
        return (logits > 0).astype(np.int64)  # sigmoid(logit) > 0.5

    vector_fields = ("prob_positive", "label")

    def decode(self, logit: np.ndarray, labels: Sequence[str], tokens: list[str]) -> dict[str, Any]:
        prob = round(sigmoid(float(logit)), PROB_DECIMALS)
        return {"label": labels[1] if prob >= THRESHOLD else labels[0], "prob_positive": prob}

    def logits_json(self, logit: np.ndarray) -> Any:
        return float(logit)

    def empty(self) -> dict[str, Any]:
        return {"label": None, "prob_positive": None}


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-min(max(x, -60.0), 60.0)))


Decoder = TokenArgmax | BinarySigmoid


@dataclass(frozen=True)
class TaskKind:
    """What one task kind is, for every stage (see the module docstring)."""

    name: str
    labels: tuple[str, ...]  # the label set the kind trains
    label_set: str  # what its labels are called in messages
    labels_in_order: bool  # vocab.labels must be `labels` in this order (it is the target's meaning), else as a set
    per_token: bool  # a label per token (logits per position) or one per text
    decoder: Decoder
    example: str  # what one example is called in messages: "sentences", "reviews"
    data_unit: str  # `trainer stats`' name for an example
    char_encoder: bool  # whether its models may read characters (vocab.chars)
    metrics: tuple[str, ...]  # the headline metrics of metrics.json's dev and test, in order
    text_lengths: tuple[int, int]  # token counts (fewest, most) of `serve bench`'s synthetic inputs
    select_by: str = "accuracy"  # the dev metric that picks the best weights

    @property
    def tokens_input(self) -> bool:
        """Whether input may arrive as tokens (`--pretokenized`, a `tokens` field): a per-token kind's data
        is words; a text's must go through the model's own tokenizer."""
        return self.per_token

    @property
    def count_unit(self) -> str:
        """What throughput and scores count: tokens for a per-token kind, else examples."""
        return "tokens" if self.per_token else self.example

    def units(self, sizes: Sequence[int]) -> int:
        """How many `count_unit`s inputs of these token counts are (empty inputs count nothing)."""
        return int(sum(sizes)) if self.per_token else sum(1 for n in sizes if n)

    def real(self, lengths: np.ndarray, shape: Sequence[int]) -> np.ndarray | None:
        """(B, T) mask of the real positions of logits shaped `shape` (B, T, ...); None for a per-text kind,
        whose every row is real."""
        if not self.per_token:
            return None
        return np.arange(shape[1])[None, :] < np.asarray(lengths)[:, None]

    def labels_problem(self, labels: list[str]) -> str | None:
        """Why a vocabulary's labels do not fit this kind, or None."""
        if self.labels_in_order and labels != list(self.labels):
            return f"must be {list(self.labels)} for a {self.name} model"
        if not self.labels_in_order and set(labels) != set(self.labels):
            return (
                f"must hold the {len(self.labels)} {self.label_set} ({' '.join(self.labels)}) for a {self.name}; "
                f"got {len(labels)} labels"
            )
        return None


KINDS: dict[str, TaskKind] = {
    kind.name: kind
    for kind in (
        TaskKind(
            name="tagger",
            labels=UNIVERSAL_TAGS,
            label_set="universal tags",
            labels_in_order=False,  # its output rows may come in any order
            per_token=True,
            decoder=TokenArgmax(),
            example="sentences",
            data_unit="sentences",
            char_encoder=True,
            metrics=("tokens", "accuracy", "oov_tokens", "oov_accuracy"),
            text_lengths=(5, 40),
        ),
        TaskKind(
            name="sentiment",
            labels=SENTIMENT_LABELS,
            label_set="labels",
            labels_in_order=True,
            per_token=False,
            decoder=BinarySigmoid(),
            example="reviews",
            data_unit="documents",
            char_encoder=False,
            metrics=("examples", "accuracy", "precision", "recall", "f1"),
            text_lengths=(8, 60),
        ),
    )
}


def task_kind(name: str) -> TaskKind:
    """The kind named `name`; an unknown name is a one-line error listing the known ones."""
    if name not in KINDS:
        raise ConfigError(f"task must be one of {', '.join(KINDS)}; got {name!r}")
    return KINDS[name]
