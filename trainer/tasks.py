"""The torch side of each task kind (trainer/core/tasks.py describes the kinds): targets, loss, what
evaluation gathers and scores, and the kind's own steps after training (sentiment's n-gram head).

The loop (trainer/loop.py), the data pipeline (trainer/inputs.py) and evaluation (trainer/evaluate.py) call
a `TaskSide` and never ask which task they run. A new kind adds a side here beside its `TaskKind`.

Losses are computed on logits.float(): under autocast the LSTMs and linear layers may run in bf16/fp16
(weights and optimizer state stay fp32), but log-sum-exp and sigmoid in reduced precision lose the small
differences between large logits, so the loss is fp32 whatever the mixed precision.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator

from trainer.core.preprocess import Encoder, Vocabs
from trainer.core.tasks import KINDS, TaskKind
from trainer.metrics import sentiment_metrics, tagger_metrics
from trainer.ngram import fit as fit_ngram

IGNORE = -100  # tag target at padded positions


class TokenTagging:
    """A label per token: cross-entropy over the real positions; token accuracy, OOV accuracy, per-tag P/R/F1."""

    def __init__(self, kind: TaskKind) -> None:
        self.kind = kind

    def encode_targets(self, encoder: Encoder, targets: list) -> list:
        limit = encoder.config.max_tokens  # a truncated sentence keeps the tags of its kept tokens
        return [encoder.labels(tags[:limit]) for tags in targets]

    def batch_targets(self, targets: list, shape: tuple[int, ...]) -> np.ndarray:
        out = np.full(shape, IGNORE, np.int64)  # (B, T)
        for b, tags in enumerate(targets):
            out[b, : len(tags)] = tags
        return out

    def loss_sum(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed loss over real tokens and how many there were."""
        targets = batch["targets"]
        steps = torch.arange(logits.shape[1], device=logits.device)
        real = steps.unsqueeze(0) < batch["lengths"].unsqueeze(1)  # (B, T): positions past a length are padding
        return F.cross_entropy(logits.float()[real], targets[real], reduction="sum"), real.sum()

    def gather(
        self, logits: torch.Tensor, batch: dict[str, torch.Tensor], accelerator: Accelerator
    ) -> dict[str, np.ndarray]:
        """Flat `gold`, `pred`, `words` (ids) over real tokens, from every process."""
        out = {"gold": batch["targets"], "pred": logits.argmax(-1), "words": batch["words"]}  # (B, T) each
        # Ranks hold different sentence lengths; pad to one T before gathering.
        out = {k: accelerator.pad_across_processes(v, dim=1, pad_index=IGNORE) for k, v in out.items()}
        out = {k: v.cpu().numpy() for k, v in accelerator.gather_for_metrics(out).items()}
        real = out["gold"] != IGNORE
        return {k: v[real] for k, v in out.items()}

    def metrics(self, out: dict[str, np.ndarray], vocabs: Vocabs) -> dict[str, Any]:
        """OOV tokens are those outside the word vocabulary: `<unk>` or one of its lexicon's classes."""
        oov = vocabs.unknown_ids[out["words"]] == out["words"]  # <pad> never reaches here: only real tokens
        return tagger_metrics(out["gold"], out["pred"], oov, vocabs.labels.itos)

    def finish(
        self, model: torch.nn.Module, train: Any, best_dev: dict[str, Any], rescore: Callable[[], dict]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Nothing after training: the best weights' dev metrics, no extra entries."""
        return best_dev, {}


class BinaryText:
    """One of two labels per text: BCE on one logit; accuracy and the positive class's P/R/F1."""

    def __init__(self, kind: TaskKind) -> None:
        self.kind = kind

    def encode_targets(self, encoder: Encoder, targets: list) -> list:
        return list(encoder.labels(targets).astype(np.float32))

    def batch_targets(self, targets: list, shape: tuple[int, ...]) -> np.ndarray:
        return np.array(targets, np.float32)  # (B,)

    def loss_sum(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed loss over texts and how many there were."""
        targets = batch["targets"]
        loss = F.binary_cross_entropy_with_logits(logits.float(), targets, reduction="sum")
        return loss, targets.new_tensor(len(targets))

    def gather(
        self, logits: torch.Tensor, batch: dict[str, torch.Tensor], accelerator: Accelerator
    ) -> dict[str, np.ndarray]:
        """`gold` and `prob` per text, from every process."""
        out = {"gold": batch["targets"], "prob": torch.sigmoid(logits)}  # (B,) each
        return {k: v.cpu().numpy() for k, v in accelerator.gather_for_metrics(out).items()}

    def metrics(self, out: dict[str, np.ndarray], vocabs: Vocabs) -> dict[str, Any]:
        return sentiment_metrics(out["gold"], out["prob"], vocabs.labels.itos)

    def finish(
        self, model: torch.nn.Module, train: Any, best_dev: dict[str, Any], rescore: Callable[[], dict]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The n-gram head, where the model has one, fitted beside the trained LSTM (trainer/ngram.py); then
        dev is scored again. Returns (dev metrics, {"ngram": the fit's figures})."""
        if getattr(model, "ngram", None) is None:
            return best_dev, {}
        ngram = fit_ngram(model.ngram, [item.words for item in train.items], train.targets)
        dev = rescore()
        ngram |= {"lstm_dev_accuracy": best_dev["accuracy"], "dev_accuracy": dev["accuracy"]}
        return dev, {"ngram": ngram}


TaskSide = TokenTagging | BinaryText
SIDES: dict[str, TaskSide] = {"tagger": TokenTagging(KINDS["tagger"]), "sentiment": BinaryText(KINDS["sentiment"])}


def task_side(task: str) -> TaskSide:
    return SIDES[task]
