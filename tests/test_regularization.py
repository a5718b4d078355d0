"""Training-only regularization. Word dropout (`--word_dropout ALPHA`, trainer.batching.word_drop_probabilities +
trainer.loop.drop_words): the chance per word, the rate and determinism of the draw, and that evaluation never
drops a word. Weight drop (`--weight_drop P`, trainer.models.PaddedLSTM): masks in training only.
Exact resume with both on is tests/test_checkpoint.py's (its runs train with them)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny_tagger, trainer

from trainer.batching import word_drop_probabilities
from trainer.core.preprocess import UNK_ID
from trainer.loop import drop_words
from trainer.models import PaddedLSTM, set_weight_drop
from trainer.train import TASK_TRAIN, parse_args


def test_chance_is_alpha_over_alpha_plus_count() -> None:
    sentences = [np.array([2, 2, 3, 1]), np.array([2, 4, 0])]
    unknown = np.array([0, 1, 1, 1, 1, 1])  # <pad> and <unk> are their own unknown form; the words become <unk>
    prob = word_drop_probabilities(sentences, unknown, alpha=1.0)
    assert prob.dtype == np.float32
    # <pad> and <unk> never; counts 3, 1, 1 and 0 (a word no training sentence has)
    np.testing.assert_allclose(prob, [0, 0, 1 / 4, 1 / 2, 1 / 2, 1.0])
    assert not word_drop_probabilities(sentences, unknown, alpha=0.0).any()
    np.testing.assert_allclose(word_drop_probabilities(sentences, unknown, alpha=0.25)[2], 0.25 / 3.25, rtol=1e-6)


def test_drop_rate_matches_the_chance_and_the_draw_is_seeded() -> None:
    prob = torch.tensor([0.0, 0.0, 0.2, 0.0, 1.0])
    words = torch.tensor([2] * 100_000 + [3] * 1000 + [0] * 1000 + [4] * 1000).reshape(1030, 100)
    torch.manual_seed(7)
    unknown = torch.tensor([0, 1, 1, 1, 1])
    dropped = drop_words(words, prob, unknown)
    changed = dropped != words
    assert (dropped[changed] == UNK_ID).all()
    rate = changed[words == 2].float().mean().item()
    assert abs(rate - 0.2) < 0.005  # 100k draws: sd 0.0013
    assert not changed[(words == 3) | (words == 0)].any()  # chance 0: never, <pad> included
    assert changed[words == 4].all()  # chance 1: always
    torch.manual_seed(7)
    assert torch.equal(drop_words(words, prob, unknown), dropped)  # same seed, same masks
    assert not torch.equal(drop_words(words, prob, unknown), dropped)  # the stream moved on: other masks


@pytest.mark.trains
def test_evaluation_never_drops_words(data: dict[str, str], tmp_path: Path) -> None:
    """Two runs that differ only in a word dropout that turns nearly every training word into <unk> score
    dev and test alike: the weights barely move (lr 1e-9), so only dropping words at evaluation could differ,
    and it would show in the OOV count (the evaluated ids that are <unk>)."""
    metrics = []
    for name, extra in (("off", []), ("on", ["--word_dropout", "1e9"])):
        out = tmp_path / name
        args = [*tiny_tagger(data["tagger"]), "--max_steps", "2", "--lr", "1e-9", "--warmup_steps", "0"]
        trainer("train", *args, "--report_to", "none", *extra, "--out", str(out))
        metrics.append(json.loads((out / "model" / "metrics.json").read_text()))
    off, on = metrics
    for split in ("dev", "test"):
        assert on[split]["oov_tokens"] == off[split]["oov_tokens"] < 0.5 * on[split]["tokens"]
        assert on[split]["accuracy"] == off[split]["accuracy"]


def test_weight_drop_masks_recurrent_weights_in_training_only() -> None:
    torch.manual_seed(0)
    lstm = PaddedLSTM(4, 3, 2, True, 0.0)
    x, lengths = torch.randn(2, 6, 4), torch.tensor([6, 4])
    plain = lstm(x, lengths)
    set_weight_drop(lstm, 0.5)
    torch.manual_seed(1)
    dropped = lstm(x, lengths)
    assert not torch.allclose(dropped, plain)
    torch.manual_seed(1)
    assert torch.equal(lstm(x, lengths), dropped)  # seeded: the same masks
    dropped.sum().backward()
    assert all(p.grad is not None for p in lstm.parameters())
    lstm.eval()
    assert torch.equal(lstm(x, lengths), plain)  # evaluation runs the plain weights
    assert all(layer.weight_hh_l0.grad is not None for layer in lstm.forward_layers)


def test_task_defaults_set_the_schedule_and_flags_override_them(tmp_path: Path) -> None:
    def train_config(*argv: str):
        return parse_args([*argv, "--data", "unused", "--out", str(tmp_path / "run")])[3]

    for task, defaults in TASK_TRAIN.items():
        config = train_config("--task", task)
        assert {key: getattr(config, key) for key in defaults} == defaults
    assert train_config("--task", "tagger", "--word_dropout", "0").word_dropout == 0.0
    config_file = tmp_path / "c.json"
    config_file.write_text(json.dumps({"word_dropout": 0.5}))
    assert train_config("--task", "tagger", "--config", str(config_file)).word_dropout == 0.5
