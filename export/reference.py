"""onnx's ReferenceEvaluator as an independent reading of the exported graph, with `sequence_lens`.

onnx's reference `LSTM` (onnx 1.23) ignores its `sequence_lens` input, which the fast tagger graph
uses (export/bilstm.py). `LSTM` below applies the operator's definition on top of it: the rows
of each length L run the reference LSTM over their first L steps alone, so the reverse direction
starts at step L-1, and outputs past L are zeros. Everything else is onnx's own code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from onnx.reference import ReferenceEvaluator
from onnx.reference.ops import op_lstm


class LSTM(op_lstm.LSTM):
    """The reference `LSTM` with `sequence_lens` (the evaluator matches new ops by class name)."""

    op_domain = ""

    def _run(  # the arguments are the operator's inputs, named as onnx names them
        self,
        X: np.ndarray,
        W: np.ndarray,
        R: np.ndarray,
        B: np.ndarray | None = None,
        sequence_lens: np.ndarray | None = None,
        initial_h: np.ndarray | None = None,
        initial_c: np.ndarray | None = None,
        P: np.ndarray | None = None,
        **attributes: Any,
    ) -> tuple[np.ndarray, ...]:
        run = super()._run
        if sequence_lens is None or self.layout != 0 or initial_h is not None or initial_c is not None:
            return run(X, W, R, B, sequence_lens, initial_h, initial_c, P, **attributes)
        steps, batch = X.shape[:2]
        outputs: list[np.ndarray] | None = None
        for length in np.unique(sequence_lens):
            rows = np.flatnonzero(sequence_lens == length)
            part = run(X[: int(length), rows], W, R, B, None, None, None, P, **attributes)
            if outputs is None:  # Y (T, D, B, H), then Y_h and Y_c (D, B, H)
                outputs = [np.zeros((steps, part[0].shape[1], batch, part[0].shape[3]), part[0].dtype)]
                outputs += [np.zeros((p.shape[0], batch, p.shape[2]), p.dtype) for p in part[1:]]
            outputs[0][: int(length), :, rows] = part[0]
            for out, p in zip(outputs[1:], part[1:]):
                out[:, rows] = p
        return tuple(outputs)


def reference_evaluator(path: Path) -> ReferenceEvaluator:
    return ReferenceEvaluator(str(path), new_ops=[LSTM])
