"""Batched inference with a trained artifact in torch (eval mode, CPU), for the accuracy benchmarks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from trainer.artifact import Artifact, load_artifact
from trainer.core.preprocess import Encoder


def load(model_dir: Path) -> tuple[Artifact, Encoder]:
    artifact = load_artifact(Path(model_dir))
    return artifact, Encoder(artifact.vocabs, artifact.preprocess)


@torch.inference_mode()
def logits(
    artifact: Artifact,
    encoder: Encoder,
    token_lists: Sequence[Sequence[str]],
    batch_size: int = 256,
    forward: Callable[..., torch.Tensor] | None = None,
) -> list[np.ndarray]:
    """One logits array per input, in input order: (T, n_tags) for a tagger, a 0-d logit for sentiment.
    `forward` (default: the model) takes the model's inputs, e.g. a part of the model alone.

    Inputs are sorted by length before batching so batches carry little padding; padding does not
    change outputs (the models are padding-invariant), only the time spent.
    """
    order = sorted(range(len(token_lists)), key=lambda i: len(token_lists[i]))
    out: list[np.ndarray | None] = [None] * len(token_lists)
    model = artifact.model
    forward = forward or model
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        encoded = [encoder.encode(token_lists[i]) for i in chunk]
        arrays = encoder.batch(encoded)
        result = forward(*(torch.from_numpy(arrays[name]) for name in model.input_names)).numpy()
        for row, (i, item) in enumerate(zip(chunk, encoded)):
            out[i] = result[row, : len(item.words)] if result.ndim == 3 else result[row]
    return out  # type: ignore[return-value]
