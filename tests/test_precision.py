"""bf16 on any CPU: the probe's two outcomes, each forced, and the real one on this machine.

CI machines differ (AVX2-only and AVX-512 CPUs): oneDNN's bf16 LSTM exists only on the latter.
Nothing here depends on which one runs it: the probe's answer is forced both ways, and the real
answer is checked against what a bf16 LSTM actually does on this CPU.
"""

from __future__ import annotations

import pytest
import torch

from trainer import precision
from trainer.core.config import TaggerConfig
from trainer.core.errors import ConfigError
from trainer.core.preprocess import Vocab, Vocabs
from trainer.core.tasks import UNIVERSAL_TAGS
from trainer.models import build_model, run_lstms_in_float32
from trainer.precision import resolve_precision


@pytest.fixture
def probe(monkeypatch: pytest.MonkeyPatch):
    def force(works: bool) -> None:
        monkeypatch.setattr(precision, "cpu_bf16_lstm_works", lambda: works)

    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    return force


def test_bf16_where_the_cpu_has_a_bf16_lstm(probe) -> None:
    probe(True)
    assert resolve_precision("bf16", cuda=False) == precision.Precision("bf16", "bf16")


def test_bf16_where_the_cpu_has_none_runs_the_lstms_in_float32(probe) -> None:
    probe(False)
    chosen = resolve_precision("bf16", cuda=False)
    assert (chosen.mode, chosen.lstm, chosen.lstm_in_float32) == ("bf16", "fp32", True)
    assert "AVX-512" in chosen.note and "\n" not in chosen.note


def test_modes_and_their_errors(probe, monkeypatch: pytest.MonkeyPatch) -> None:
    probe(False)
    assert resolve_precision("", cuda=False) == precision.Precision("no", "fp32")
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    assert resolve_precision("", cuda=False).mode == "bf16"
    assert resolve_precision("no", cuda=False).mode == "no"  # the config wins over the environment
    with pytest.raises(ConfigError, match="'fp16' needs a CUDA GPU"):
        resolve_precision("fp16", cuda=False)
    with pytest.raises(ConfigError, match="must be one of no, fp16, bf16; got 'fp8'"):
        resolve_precision("fp8", cuda=False)


def test_the_probe_reports_what_this_cpu_really_does() -> None:
    """The probe's answer agrees with a bf16 LSTM run of another shape, whichever answer it is."""
    precision.cpu_bf16_lstm_works.cache_clear()
    works = precision.cpu_bf16_lstm_works()
    lstm = torch.nn.LSTM(8, 16, batch_first=True)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, _ = lstm(torch.randn(3, 5, 8))
        out.float().sum().backward()
        ran = True
    except RuntimeError:
        ran = False
    assert works == ran


def test_the_probe_says_no_when_the_lstm_kernel_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_primitive(*args, **kwargs):
        raise RuntimeError("could not create a primitive descriptor for the LSTM forward propagation primitive")

    monkeypatch.setattr(torch.nn.LSTM, "forward", no_primitive)
    precision.cpu_bf16_lstm_works.cache_clear()
    try:
        assert precision.cpu_bf16_lstm_works() is False
    finally:
        precision.cpu_bf16_lstm_works.cache_clear()


def test_float32_lstms_under_bf16_autocast_run_and_match_float32() -> None:
    """The fallback path works on every CPU: LSTM outputs in float32 inside a bf16 region."""
    torch.manual_seed(0)
    vocabs = Vocabs(Vocab(["<pad>", "<unk>", "a", "b"]), Vocab.labels(UNIVERSAL_TAGS), Vocab(["<pad>", "<unk>", "a"]))
    model = build_model(TaggerConfig(word_dim=8, word_hidden=6, char_dim=4, char_hidden=3, dropout=0.0), vocabs)
    words, lengths = torch.tensor([[2, 3, 2], [3, 2, 0]]), torch.tensor([3, 2])
    chars, word_lengths = torch.tensor([[[2], [2], [2]], [[2], [2], [0]]]), torch.tensor([[1, 1, 1], [1, 1, 0]])
    reference = model(words, lengths, chars, word_lengths)
    run_lstms_in_float32(model)
    seen = []
    model.encoder.forward_layers[0].register_forward_hook(lambda m, i, o: seen.append(o[0].dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(words, lengths, chars, word_lengths)
    logits.float().sum().backward()
    assert seen == [torch.float32]
    assert (logits.float() - reference).abs().max() < 0.1  # bf16 embeddings/linear layers: ~1e-2 of rounding
