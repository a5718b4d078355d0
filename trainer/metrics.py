"""Metrics from gold and predicted values (numpy only): what metrics.json's dev and test and `trainer evaluate` report.

`accuracy` is in every kind's metrics: it is what picks the best weights (TaskKind.select_by).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from trainer.core.tasks import SENTIMENT_LABELS


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


def sentiment_metrics(gold: np.ndarray, prob: np.ndarray, labels: Sequence[str] = SENTIMENT_LABELS) -> dict[str, Any]:
    """Accuracy and precision/recall/F1 of the positive class (labels[1]) at P(positive) >= 0.5."""
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
        "confusion": {"labels": list(labels), "matrix": confusion.tolist()},
    }


def summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers: no per-tag table, no confusion matrix."""
    return {k: v for k, v in metrics.items() if k not in ("per_tag", "confusion")}
