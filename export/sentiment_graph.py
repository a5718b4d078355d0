"""The sentiment model's fast graph: each bidirectional LSTM layer as one ONNX node.

`SentimentNet`'s `PaddedLSTM` runs the backward direction of every layer as a second forward LSTM
over each review reversed within its length: two `LSTM` nodes, four gathers and a concat per layer.
Here each layer is one `LSTM` node with `sequence_lens` (export/bilstm.py), whose fused gates run
both directions in one kernel and whose outputs past a review's length are zeros. The pooling,
the output layer and the n-gram head are the model's own modules, so the graph's inputs, outputs
and values are the model's; only unidirectional stacks have no one-node form and are traced as they are.
"""

from __future__ import annotations

import torch
from torch import nn

from export.bilstm import ExportedBiLSTM
from trainer.models import SentimentNet


class SentimentGraph(nn.Module):
    """What `--graph fast` traces for a bidirectional `SentimentNet` (inference only: no dropout)."""

    def __init__(self, model: SentimentNet) -> None:
        super().__init__()
        self.model = model
        self.input_names, self.output_names = model.input_names, model.output_names
        self.lstm = ExportedBiLSTM(model.encoder)

    def forward(self, words: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        h, final = self.lstm(self.model.embedding(words), lengths)  # (B, T, 2H), (B, 2H)
        if self.model.config.pooling == "max":
            real = torch.arange(h.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)  # (B, T)
            state = h.masked_fill(~real.unsqueeze(2), float("-inf")).amax(dim=1)  # (B, 2H)
        else:
            state = final  # the last real forward step joined with the backward state at step 0
        logits = self.model.output(state).squeeze(1)  # (B,)
        ngram = self.model.ngram
        return logits if ngram is None else logits + ngram(words, lengths)


def has_fast_form(model: nn.Module) -> bool:
    """A sentiment model whose LSTM stack is bidirectional (the one-node form needs both directions)."""
    return isinstance(model, SentimentNet) and model.config.bidirectional
