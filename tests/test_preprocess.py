"""The shared text -> arrays path: tokenizer, normalization, vocabularies, batch encoding."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from trainer.config import PreprocessConfig, TrainConfig, apply_overrides, parse_key_values
from trainer.errors import ConfigError, DataError
from trainer.preprocess import PAD, UNK, Encoder, Vocab, Vocabs, build_vocabs, normalize_word, tokenize

BLOCK_TORCH = """
import importlib.abc, sys
class BlockTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, BlockTorch())
"""


def test_tokenize_follows_the_treebank_rules_and_keeps_urls_whole() -> None:
    assert tokenize("I didn't like it, see https://x.org/a?b=1 now.") == [
        "I", "did", "n't", "like", "it", ",", "see", "<url>", "now", ".",
    ]
    assert tokenize("") == []
    assert tokenize("   ") == []


def test_normalize_word_lowercases_and_zeroes_digits() -> None:
    config = PreprocessConfig()
    assert normalize_word("Back-in-1999", config) == "back-in-0000"
    assert normalize_word("<url>", config) == "<url>"
    assert normalize_word("ABC", PreprocessConfig(lowercase=False)) == "ABC"


def test_vocab_min_count_specials_and_json_round_trip() -> None:
    vocab = Vocab.build(Counter({"b": 3, "a": 3, "c": 1}), min_count=2)
    assert vocab.itos == [PAD, UNK, "a", "b"]  # ties broken by token: deterministic ids
    assert vocab.id("c") == 1 and vocab.id("never-seen") == 1
    vocabs = Vocabs(vocab, Vocab.labels(["negative", "positive"]), Vocab.build(Counter("abc")))
    again = Vocabs.from_json(json.loads(json.dumps(vocabs.to_json())))
    assert again.words.itos == vocab.itos and again.chars.itos == vocabs.chars.itos
    with pytest.raises(DataError, match="unknown label 'neutral'"):
        vocabs.labels.id("neutral")
    with pytest.raises(DataError, match="must start with"):
        Vocab(["a", "b"])


def test_vocab_is_built_from_the_given_tokens_only() -> None:
    vocabs = build_vocabs([["The", "the", "cat"], ["THE", "dog"]], ["X"], PreprocessConfig(min_count=2), chars=True)
    assert vocabs.words.itos == [PAD, UNK, "the"]
    assert "T" in vocabs.chars and "t" in vocabs.chars


def test_batch_pads_words_and_characters_with_zero() -> None:
    vocabs = build_vocabs([["ab", "abc"]], ["X"], PreprocessConfig(min_count=1), chars=True)
    encoder = Encoder(vocabs, PreprocessConfig(max_word_len=4))
    arrays = encoder.batch([encoder.encode(["abc", "ab", "zzzzzzz"]), encoder.encode(["ab"])])
    assert arrays["words"].tolist() == [[3, 2, 1], [2, 0, 0]]  # "abc"... ids by frequency then token
    assert arrays["lengths"].tolist() == [3, 1]
    assert arrays["word_lengths"].tolist() == [[3, 2, 4], [2, 0, 0]]  # the 7-letter word is capped at 4
    assert arrays["chars"].shape == (2, 3, 4)
    assert arrays["chars"][0, 2].tolist() == [1, 1, 1, 1]  # unknown characters are <unk>
    assert not arrays["chars"][1, 1:].any()
    assert all(a.dtype == np.int64 for a in arrays.values())


def test_encoder_truncates_over_long_input_and_refuses_empty() -> None:
    vocabs = build_vocabs([["a"]], ["X"], PreprocessConfig(min_count=1), chars=False)
    encoder = Encoder(vocabs, PreprocessConfig(max_tokens=5))
    assert len(encoder.encode(["a"] * 9).words) == 5
    with pytest.raises(DataError, match="empty input"):
        encoder.batch([encoder.encode([])])


def test_config_overrides_are_type_checked_and_unknown_keys_listed() -> None:
    train, pre = TrainConfig(), PreprocessConfig()
    apply_overrides([train, pre], parse_key_values(["--max-steps", "7", "--lr", "0.1", "--lowercase", "false"]), source="cli")
    assert (train.max_steps, train.lr, pre.lowercase) == (7, 0.1, False)
    with pytest.raises(ConfigError, match="unknown config key 'max_stpes'; known keys: .*max_steps"):
        apply_overrides([train], {"max_stpes": 1}, source="cli")
    with pytest.raises(ConfigError, match="'max_steps' expects int; got 'seven'"):
        apply_overrides([train], {"max_steps": "seven"}, source="cli")
    with pytest.raises(ConfigError, match="expects int; got True"):
        apply_overrides([train], {"max_steps": True}, source="config.json")


def test_preprocessing_and_serve_import_without_torch() -> None:
    code = BLOCK_TORCH + (
        "import trainer.preprocess, trainer.config, trainer.data, serve\n"
        "from trainer.preprocess import tokenize\n"
        "assert tokenize('a b') == ['a', 'b']\n"
        "assert 'torch' not in sys.modules\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
    blocked = subprocess.run([sys.executable, "-c", BLOCK_TORCH + "import torch"], capture_output=True, text=True)
    assert "torch is blocked" in blocked.stderr  # the blocker itself works
