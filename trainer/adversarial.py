"""Adversarial training on the word embeddings (Miyato, Dai & Goodfellow 2017, TrainConfig.adversarial).

Each step trains on the batch twice: once as it is, and once with every sentence's word embeddings
moved by ε in the direction that raises its loss most, to first order: r = ε g / ‖g‖₂, where g is the
gradient of the clean loss with respect to that sentence's embeddings (padding included, where it is
zero). The two losses are summed, so a step costs two forward and two backward passes (2.1× the
time of a plain step, docs/BENCHMARKS.md section 2). The model learns to keep its prediction when a
word's vector moves a little, a smoothness prior that helps most where labels are few (Miyato et al.
report +1 to +3 points on Rotten Tomatoes with a pretrained LSTM).

The perturbation enters through a forward hook on the embedding module, so the model's forward, its
export and evaluation are untouched: with no perturbation set, the hook only keeps the embedding
output so that its gradient can be read after the clean backward pass. (Perturbing a tagger's whole
token features, word vectors joined with the character BiLSTM's states, was tried: no better.)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


class EmbeddingPerturbation:
    """Captures the word embeddings of a clean pass; adds an `epsilon`-sized adversarial step to the next's."""

    def __init__(self, embedding: nn.Embedding, epsilon: float) -> None:
        self.epsilon = epsilon
        self.clean: torch.Tensor | None = None  # the clean pass's embeddings, their gradient kept
        self.delta: torch.Tensor | None = None  # set while the adversarial pass runs
        embedding.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor | None:
        if not module.training:
            return None
        if self.delta is not None:
            return output + self.delta
        output.retain_grad()
        self.clean = output
        return None

    @contextlib.contextmanager
    def adversarial(self) -> Iterator[None]:
        """Within: the embedding output moves by ε along its normalized clean-loss gradient, per sentence."""
        if self.clean is None or self.clean.grad is None:
            raise RuntimeError("the adversarial pass needs a clean forward and backward pass first")
        grad = self.clean.grad.detach().float()  # (B, T, D); under fp16 the GradScaler's factor cancels below
        norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (grad.dim() - 1)))
        self.delta = (self.epsilon * grad / norm).to(self.clean.dtype)
        self.clean = None
        try:
            yield
        finally:
            self.delta = None
