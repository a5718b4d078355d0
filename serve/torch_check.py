"""The one serve module that imports torch (and trainer.artifact, which needs it): `serve predict --verify`
compares the torch artifact's logits with onnxruntime's, and `serve bench --torch` times torch eager.

predict.py and bench.py import this module only when those flags are given, and it imports torch only
inside the functions they call, so every other serve path stays torch-free (tests/test_serve_imports.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from serve.runtime import ServingModel
from trainer.core.config import to_dict
from trainer.core.errors import ConfigError, ValidationError


def import_torch(flag: str) -> tuple[Any, Callable[[Path], Any]]:
    """torch and `trainer.artifact.load_artifact`, or one line saying that `flag` needs torch."""
    try:
        import torch

        from trainer.artifact import load_artifact
    except ImportError:
        raise ConfigError(f"{flag} needs torch, which is not installed here (pip install .[train])") from None
    return torch, load_artifact


class Verifier:
    """Runs the torch artifact on every batch onnxruntime ran and collects the differences."""

    def __init__(self, artifact_dir: Path, model: ServingModel) -> None:
        torch, load_artifact = import_torch("--verify")
        self.torch = torch
        self.where = f"--verify {artifact_dir}"
        artifact = load_artifact(artifact_dir)
        differ = [
            name
            for name, ours, theirs in (
                ("task", model.task, artifact.task),
                ("vocab", model.vocabs.to_json(), artifact.vocabs.to_json()),
                ("preprocess", to_dict(model.preprocess), to_dict(artifact.preprocess)),
            )
            if ours != theirs
        ]
        if differ:
            raise ValidationError(
                f"{self.where}: not the artifact {model.export_dir} was exported from ({', '.join(differ)} differ)"
            )
        self.net, self.kind, self.labels = artifact.model, model.kind, model.labels
        self.atol = model.atol
        self.max_diff, self.disagreements, self.units, self.bad_shapes = 0.0, 0, 0, 0

    def check(self, arrays: dict[str, Any], logits: Any) -> None:
        with self.torch.inference_mode():
            inputs = [self.torch.from_numpy(arrays[name]) for name in self.net.input_names]
            ref = self.net(*inputs).numpy()
        if ref.shape != logits.shape:
            self.bad_shapes += 1
            return
        real = self.kind.real(arrays["lengths"], logits.shape)  # (B, T) for per-token logits; padding is undefined
        ours, theirs = (logits, ref) if real is None else (logits[real], ref[real])  # (N, labels) or (B,)
        picked = [self.kind.decoder.label_ids(x, self.labels) for x in (ours, theirs)]
        self.disagreements += int((picked[0] != picked[1]).sum())
        self.units += len(ours)
        self.max_diff = max(self.max_diff, float(np.abs(ours - theirs).max(initial=0.0)))

    def summary(self) -> str:
        unit = self.kind.count_unit
        text = (
            f"logits: max abs diff {self.max_diff:.3g} vs atol {self.atol:g}; "
            f"{self.disagreements} argmax disagreement(s) in {self.units} {unit}"
        )
        return text + (f"; {self.bad_shapes} batch(es) with mismatched output shapes" if self.bad_shapes else "")

    def finish(self) -> None:
        if self.max_diff > self.atol or self.disagreements or self.bad_shapes:
            raise ValidationError(f"{self.where} failed: {self.summary()}")


def torch_runner(artifact_dir: Path, threads: int) -> Callable[[dict[str, np.ndarray]], Any]:
    """`serve bench --torch`: the torch artifact's model as a benchmark runner (torch eager)."""
    torch, load_artifact = import_torch("--torch")
    if threads:
        torch.set_num_threads(threads)
    net = load_artifact(artifact_dir).model

    def run(arrays: dict[str, np.ndarray]) -> Any:
        with torch.inference_mode():
            return net(*(torch.from_numpy(arrays[name]) for name in net.input_names))

    return run
