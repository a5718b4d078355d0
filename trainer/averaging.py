"""An exponential moving average of the weights (Polyak averaging, TrainConfig.average).

After every optimizer step the average moves towards the weights: a ← a + (1 - d)(w - a), with the
decay d = min(average, (1 + t) / (10 + t)) at step t, so the early average is not anchored to the
random initial weights. Dev scoring, the best weights and the released model use the average, which
smooths out the noise of the last steps (on Rotten Tomatoes it gained nothing: docs/BENCHMARKS.md
section 2). The average is part of a checkpoint, so a resumed run continues it exactly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


class WeightAverage:
    def __init__(self, model: nn.Module, decay: float) -> None:
        self.model, self.decay = model, decay
        self.names = [name for name, _ in model.named_parameters()]
        self.tensors = [p.detach().float().clone() for p in model.parameters()]

    def reset(self) -> None:
        """Start the average over from the model's weights."""
        for tensor, p in zip(self.tensors, self.model.parameters(), strict=True):
            tensor.copy_(p.detach())

    def update(self, step: int) -> None:
        """Fold in the weights after optimizer step number `step` (counting from 1)."""
        weight = 1.0 - min(self.decay, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(self.tensors, [p.detach().float() for p in self.model.parameters()], weight)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: t.to("cpu", copy=True).contiguous() for name, t in zip(self.names, self.tensors, strict=True)}

    def load_state_dict(self, saved: dict[str, torch.Tensor]) -> None:
        if sorted(saved) != sorted(self.names):
            raise ValueError(f"the weight average has the tensors {sorted(saved)}; the model {sorted(self.names)}")
        for name, tensor in zip(self.names, self.tensors, strict=True):
            if saved[name].shape != tensor.shape:
                shape = tuple(saved[name].shape)
                raise ValueError(f"the weight average's {name} is {shape}, not {tuple(tensor.shape)}")
            tensor.copy_(saved[name])

    @contextlib.contextmanager
    def swapped_in(self) -> Iterator[None]:
        """Within: the model holds the averaged weights; after: its own again."""
        params = list(self.model.parameters())
        own = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p, a in zip(params, self.tensors, strict=True):
                p.copy_(a)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, o in zip(params, own, strict=True):
                    p.copy_(o)
