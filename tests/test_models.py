"""Padding invariance of the three models, with a control that shows the check can fail."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import random_ngram_head
from torch import nn

from trainer.core.config import PreprocessConfig, SentimentConfig, TaggerConfig
from trainer.core.errors import ConfigError
from trainer.core.preprocess import Encoder, Vocab, Vocabs
from trainer.core.tasks import SENTIMENT_LABELS, UNIVERSAL_TAGS
from trainer.models import DualLSTMTagger, LSTMTagger, PaddedLSTM, SentimentNet, build_model

LETTERS = list("abcdefghijklmnopqrstuvwxyzABC")
WORDS = Vocab(["<pad>", "<unk>"] + [f"w{i}" for i in range(60)])
CHARS = Vocab(["<pad>", "<unk>"] + LETTERS)

CASES = {
    "dual-tagger": (
        TaggerConfig(word_dim=12, word_hidden=10, char_dim=6, char_hidden=5, layers=2),
        UNIVERSAL_TAGS,
        CHARS,
    ),
    "word-tagger": (TaggerConfig(char_encoder=False, word_dim=12, word_hidden=10), UNIVERSAL_TAGS, None),
    "sentiment": (SentimentConfig(embed_dim=12, hidden=10, layers=2), SENTIMENT_LABELS, None),
    "sentiment-bi": (SentimentConfig(embed_dim=12, hidden=10, layers=2, bidirectional=True), SENTIMENT_LABELS, None),
    "sentiment-bi-max": (
        SentimentConfig(embed_dim=12, hidden=10, layers=1, bidirectional=True, pooling="max"),
        SENTIMENT_LABELS,
        None,
    ),
    "sentiment-ngram": (SentimentConfig(embed_dim=12, hidden=10, ngram_buckets=64), SENTIMENT_LABELS, None),
}


def random_sentences(rng: np.random.Generator, n: int, max_len: int) -> list[list[str]]:
    """Mixed known and unknown words of 1..35 characters, so word lengths vary too."""
    out = []
    for _ in range(n):
        length = int(rng.integers(1, max_len + 1))
        out.append(["".join(rng.choice(LETTERS, int(rng.integers(1, 36)))) for _ in range(length)])
    return out


def run(model: nn.Module, arrays: dict[str, np.ndarray]) -> torch.Tensor:
    with torch.no_grad():
        return model(*(torch.from_numpy(arrays[name]) for name in model.input_names))


@pytest.mark.parametrize("case", CASES)
def test_padding_invariance(case: str) -> None:
    config, labels, chars = CASES[case]
    vocabs = Vocabs(WORDS, Vocab.labels(labels), chars)
    torch.manual_seed(0)
    model = build_model(config, vocabs).eval()
    random_ngram_head(model)
    encoder = Encoder(vocabs, PreprocessConfig())
    rng = np.random.default_rng(7)
    worst = 0.0
    for _ in range(3):
        items = [encoder.encode(s) for s in random_sentences(rng, 9, 40)]
        batch = run(model, encoder.batch(items))
        for i, item in enumerate(items):
            alone = run(model, encoder.batch([item]))[0]
            n = len(item.words)
            in_batch = batch[i, :n] if batch.dim() == 3 else batch[i]
            worst = max(worst, (alone[:n] if alone.dim() == 2 else alone).sub(in_batch).abs().max().item())
    assert worst <= 1e-5, f"{case}: output changes with padding by {worst}"


@pytest.mark.parametrize("sentences", [1, 9])
def test_char_states_once_per_distinct_word_equal_the_padded_run(sentences: int) -> None:
    """The eager path (distinct words in length groups) against the exported one, values and gradients."""
    config, labels, chars = CASES["dual-tagger"]
    vocabs = Vocabs(WORDS, Vocab.labels(labels), chars)
    torch.manual_seed(0)
    model = build_model(config, vocabs)
    encoder = Encoder(vocabs, PreprocessConfig(max_word_len=12))
    rng = np.random.default_rng(3)
    texts = random_sentences(rng, sentences, 6)
    texts[0] += texts[0][:2] + ["a", "ab", "a"]  # repeats, and words longer than max_word_len above
    arrays = encoder.batch([encoder.encode(t) for t in texts])
    batch, steps, width = arrays["chars"].shape
    flat = torch.from_numpy(arrays["chars"]).reshape(batch * steps, width)
    lengths = torch.from_numpy(arrays["word_lengths"]).reshape(batch * steps).clamp(min=1)  # padding rows too
    assert len(torch.unique(flat, dim=0)) < len(flat)
    grads = []
    for method in (model.char_states, model.distinct_char_states):
        model.zero_grad()
        states = method(flat, lengths)
        states.pow(2).sum().backward()
        grads.append((states.detach(), [p.grad.clone() for p in model.char_encoder.parameters()]))
    (padded, padded_grads), (distinct, distinct_grads) = grads
    assert distinct.shape == padded.shape == (batch * steps, 2 * config.char_hidden)
    assert torch.allclose(distinct, padded, atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(distinct_grads, padded_grads))


def test_naive_bidirectional_lstm_reads_padding() -> None:
    """The control: nn.LSTM(bidirectional=True) on a padded batch fails the same check."""
    torch.manual_seed(0)
    naive = nn.LSTM(4, 3, batch_first=True, bidirectional=True)
    ours = PaddedLSTM(4, 3, 1, bidirectional=True, dropout=0.0)
    x = torch.randn(1, 5, 4)
    padded = torch.cat([x, torch.randn(1, 3, 4)], dim=1)
    with torch.no_grad():
        naive_diff = (naive(x)[0] - naive(padded)[0][:, :5]).abs().max().item()
        ours_diff = (ours(x, torch.tensor([5])) - ours(padded, torch.tensor([5]))[:, :5]).abs().max().item()
    assert naive_diff > 1e-3
    assert ours_diff <= 1e-6


def test_backward_direction_sees_each_sequence_reversed() -> None:
    """The backward half at position 0 equals a forward pass of the reversed sequence's last step."""
    torch.manual_seed(0)
    lstm = PaddedLSTM(4, 3, 1, bidirectional=True, dropout=0.0)
    x = torch.randn(1, 6, 4)
    with torch.no_grad():
        out = lstm(x, torch.tensor([6]))
        reversed_run, _ = lstm.backward_layers[0](x.flip(1))
    assert torch.allclose(out[0, 0, 3:], reversed_run[0, -1], atol=1e-6)


def test_models_and_shapes() -> None:
    vocabs = Vocabs(WORDS, Vocab.labels(UNIVERSAL_TAGS), CHARS)
    assert isinstance(build_model(TaggerConfig(), vocabs), DualLSTMTagger)
    assert type(build_model(TaggerConfig(char_encoder=False), vocabs)) is LSTMTagger
    sentiment = build_model(SentimentConfig(), Vocabs(WORDS, Vocab.labels(SENTIMENT_LABELS)))
    assert isinstance(sentiment, SentimentNet)
    encoder = Encoder(vocabs, PreprocessConfig())
    arrays = encoder.batch([encoder.encode(["w1", "w2", "zzz"]), encoder.encode(["w3"])])
    assert run(build_model(TaggerConfig(), vocabs).eval(), arrays).shape == (2, 3, len(UNIVERSAL_TAGS))
    assert run(sentiment.eval(), arrays).shape == (2,)


def test_unknown_pooling_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="'pooling' must be one of last, max; got 'mean'"):
        build_model(SentimentConfig(pooling="mean"), Vocabs(WORDS, Vocab.labels(SENTIMENT_LABELS)))
