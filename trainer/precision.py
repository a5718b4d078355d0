"""Mixed precision: the mode a run asks for, and what this machine's kernels can run of it.

bf16 autocast on a CPU sends the LSTMs to oneDNN, whose bf16 LSTM primitive is missing on CPUs
without AVX-512 (an AVX2-only AMD EPYC fails with "could not create a primitive descriptor for the
LSTM forward propagation primitive"). One tiny forward and backward per process tells. Where it
fails, the LSTM kernels run in float32 inside the bf16 autocast region while embeddings and linear
layers stay in bf16: the run goes on at the precision the CPU has (oneDNN's own fallback, turning
it off for the LSTMs, is much slower than float32 on such a CPU: docs/BENCHMARKS.md section 9), says
so in one line and records `lstm_precision` in metrics.json.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import torch

from trainer.core.errors import ConfigError

MODES = ("no", "fp16", "bf16")


@dataclass(frozen=True)
class Precision:
    mode: str  # what accelerate's autocast runs: no, fp16 or bf16
    lstm: str  # what the LSTM kernels run in: fp32, fp16 or bf16
    note: str = ""  # one line for the user where `lstm` is not what `mode` implies

    @property
    def lstm_in_float32(self) -> bool:
        """The LSTM kernels must leave the autocast region (see `trainer.models.PaddedLSTM`)."""
        return self.mode != "no" and self.lstm == "fp32"


@functools.cache
def cpu_bf16_lstm_works() -> bool:
    """Whether this CPU runs an LSTM forward and backward under bf16 autocast (oneDNN's primitive)."""
    lstm = torch.nn.LSTM(4, 4, batch_first=True)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, _ = lstm(torch.randn(2, 3, 4))
        out.float().sum().backward()
    except RuntimeError:
        return False
    return True


def resolve_precision(value: str, cuda: bool) -> Precision:
    """The config's `mixed_precision`, else ACCELERATE_MIXED_PRECISION (launch.sh --mixed-precision), else no."""
    mode = value or os.environ.get("ACCELERATE_MIXED_PRECISION") or "no"
    if mode not in MODES:
        raise ConfigError(f"config key 'mixed_precision' must be one of {', '.join(MODES)}; got {mode!r}")
    if mode == "no":
        return Precision(mode, "fp32")
    if not cuda:
        if mode == "fp16":
            raise ConfigError(
                "mixed_precision 'fp16' needs a CUDA GPU (fp16 autocast with loss scaling) and "
                "this machine has none; use bf16 (works on any CPU) or no"
            )
        if not cpu_bf16_lstm_works():
            return Precision(
                mode,
                "fp32",
                "this CPU's oneDNN has no bf16 LSTM (it needs AVX-512): the LSTM "
                "kernels run in float32, embeddings and linear layers in bf16",
            )
        return Precision(mode, "bf16")
    if mode == "bf16" and not torch.cuda.is_bf16_supported():
        raise ConfigError(
            "mixed_precision 'bf16' needs a GPU with bf16 support (Ampere or newer) and this one "
            "has none; use fp16 or no"
        )
    return Precision(mode, mode)
