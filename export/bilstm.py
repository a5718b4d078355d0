"""A bidirectional `PaddedLSTM` layer as one ONNX `LSTM` node (direction="bidirectional", sequence_lens).

`PaddedLSTM` runs the backward direction as a second forward LSTM over each row reversed within
its own length: two `LSTM` nodes plus gathers, expands and a concat per layer. ONNX's `LSTM` does
the same in one node when given `sequence_lens`: the reverse direction of a row of length L starts
at step L-1 from a zero state, and outputs past L are zeros. The torch exporter writes that node
only for packed sequences, which it does not export cleanly (trainer/models.py), so the node is
written by `symbolic` below; `forward` computes the same values for the trace, by the ONNX
definition. Export validation compares the graph with the eager `PaddedLSTM` within atol.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from trainer.models import PaddedLSTM

# torch stacks the gates as (input, forget, cell, output); ONNX as (input, output, forget, cell).
TORCH_TO_ONNX_GATES = (0, 3, 1, 2)


def onnx_gates(weight: torch.Tensor) -> torch.Tensor:
    """(4H, ...) torch gate blocks reordered into ONNX's order."""
    return torch.cat([weight.chunk(4)[i] for i in TORCH_TO_ONNX_GATES])


def direction_weights(lstm: nn.LSTM) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """W (4H, C), R (4H, H), B (8H,) of a one-layer torch LSTM, in ONNX layout."""
    return (
        onnx_gates(lstm.weight_ih_l0.detach()),
        onnx_gates(lstm.weight_hh_l0.detach()),
        torch.cat([onnx_gates(lstm.bias_ih_l0.detach()), onnx_gates(lstm.bias_hh_l0.detach())]),
    )


class BiLSTMNode(torch.autograd.Function):
    """(T, B, C) input, (B,) lengths, ONNX weights -> Y (T, 2, B, H), Y_h (2, B, H)."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, lengths: torch.Tensor, w: torch.Tensor, r: torch.Tensor, b: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        steps, batch, _ = x.shape
        hidden = r.shape[2]
        y = x.new_zeros(steps, 2, batch, hidden)
        y_h = x.new_zeros(2, batch, hidden)
        for d, order in enumerate((range(steps), range(steps - 1, -1, -1))):
            h, c = x.new_zeros(batch, hidden), x.new_zeros(batch, hidden)
            for t in order:
                gates = x[t] @ w[d].T + h @ r[d].T + b[d, : 4 * hidden] + b[d, 4 * hidden :]
                i, o, f, g = gates.chunk(4, dim=1)
                c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h_new = torch.sigmoid(o) * torch.tanh(c_new)
                real = (t < lengths).unsqueeze(1)  # (B, 1): steps past a row's length leave it as it was
                h, c = torch.where(real, h_new, h), torch.where(real, c_new, c)
                y[t, d] = torch.where(real, h_new, torch.zeros_like(h_new))
            y_h[d] = h
        return y, y_h

    @staticmethod
    def symbolic(g: Any, x: Any, lengths: Any, w: Any, r: Any, b: Any) -> tuple[Any, Any]:
        """The ONNX node; `g` and the values are the TorchScript exporter's graph and `torch._C.Value`s."""
        from torch.onnx import TensorProtoDataType

        sequence_lens = g.op("Cast", lengths, to_i=TensorProtoDataType.INT32)
        hidden = r.type().sizes()[2]
        y, y_h, _ = g.op(
            "LSTM", x, w, r, b, sequence_lens, direction_s="bidirectional", hidden_size_i=hidden, outputs=3
        )
        return y, y_h


class ExportedBiLSTM(nn.Module):
    """A bidirectional `PaddedLSTM`'s layers as `BiLSTMNode`s (inference only: no dropout)."""

    def __init__(self, padded: PaddedLSTM) -> None:
        super().__init__()
        assert padded.backward_layers is not None, "only bidirectional stacks have a one-node form"
        self.layers = len(padded.forward_layers)
        for i, (fw, bw) in enumerate(zip(padded.forward_layers, padded.backward_layers)):
            for name, a, b in zip(("w", "r", "b"), direction_weights(fw), direction_weights(bw)):
                self.register_buffer(f"{name}{i}", torch.stack([a, b]))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, C) -> outputs (B, T, 2H) and final states (B, 2H): the last real step of the forward
        direction joined with the backward direction's state at step 0, as `PaddedLSTM.final_state`."""
        x = x.transpose(0, 1)  # (T, B, C): onnxruntime's LSTM takes no batch-first layout
        for i in range(self.layers):
            w, r, b = (getattr(self, f"{name}{i}") for name in ("w", "r", "b"))
            y, y_h = BiLSTMNode.apply(x, lengths, w, r, b)  # (T, 2, B, H), (2, B, H)
            x = y.permute(0, 2, 1, 3).flatten(2)  # (T, B, 2H)
        return x.transpose(0, 1), y_h.transpose(0, 1).flatten(1)
