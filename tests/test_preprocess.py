"""The shared text -> arrays path: tokenizer, normalization, vocabularies, batch encoding."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from helpers import REPO, TREEBANK_EDGE_CASES
from nltk.tokenize import NLTKWordTokenizer

from trainer.core.config import PreprocessConfig, TrainConfig, apply_overrides, parse_key_values
from trainer.core.data import SPLITS, open_dataset
from trainer.core.errors import ConfigError, DataError
from trainer.core.preprocess import (
    PAD,
    UNK,
    Encoder,
    Vocab,
    Vocabs,
    build_vocabs,
    normalize_word,
    tokenize,
)
from trainer.core.tokenizer import default_tokenizer

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
        "I",
        "did",
        "n't",
        "like",
        "it",
        ",",
        "see",
        "<url>",
        "now",
        ".",
    ]
    assert tokenize("") == []
    assert tokenize("   ") == []


def test_treebank_tokenizer_equals_nltk_on_edge_cases_and_random_strings() -> None:
    ours, nltk = default_tokenizer(), NLTKWordTokenizer()
    rng = np.random.default_rng(0)
    alphabet = list("aAsSkK. ,:;'\"`()[]{}<>?!*-—’”“‘«»\t\n") + ["can", "not", "n't", "'s", "\u0301", "ſ", "K", "İ"]
    random = ["".join(rng.choice(alphabet, size=int(rng.integers(1, 40)))) for _ in range(3000)]
    for text in TREEBANK_EDGE_CASES + random:
        assert ours.words(text) == nltk.tokenize(text), repr(text)


@pytest.mark.parametrize(
    "stride", [pytest.param(50, id="every 50th text"), pytest.param(1, id="every text", marks=pytest.mark.slow)]
)
def test_treebank_tokenizer_equals_nltk_on_every_corpus_text(data_dir, stride: int) -> None:
    """Brown sentences (joined) and Rotten Tomatoes reviews, all splits: about 70,000 texts (half a minute
    with nltk's tokenizer, hence `slow`; every 10th of them otherwise)."""
    ours, nltk = default_tokenizer(), NLTKWordTokenizer()
    texts = [e.text for split in SPLITS for e in open_dataset("rotten-tomatoes", data_dir).examples(split)]
    texts += [" ".join(e.words) for split in SPLITS for e in open_dataset("brown", data_dir).examples(split)]
    assert len(texts) > 69_000
    texts = texts[::stride]
    differ = [text for text in texts if ours.words(text) != nltk.tokenize(text)]
    assert not differ, f"{len(differ)} texts differ, e.g. {differ[:3]}"


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


def test_memoized_ids_equal_normalize_and_lookup_past_the_memo_size(monkeypatch) -> None:
    config = PreprocessConfig(min_count=1, max_word_len=3)
    vocabs = build_vocabs([["the", "cat", "1999"]], ["X"], config, chars=True)
    monkeypatch.setattr(Encoder, "MEMO_TOKENS", 3)  # fills up part way through
    encoder = Encoder(vocabs, config)
    tokens = ["The", "THE", "cat", "2024", "Cat", "dog", "The", "0000", "x"] * 2
    expected = [vocabs.words.id(normalize_word(t, config)) for t in tokens]
    encoded = encoder.encode(tokens)
    assert expected[:6] == [4, 4, 3, 2, 3, 1] and encoded.words.tolist() == expected
    assert encoded.word_lengths.tolist() == [min(len(t), 3) for t in tokens]
    for row, token in zip(encoded.chars.tolist(), tokens):
        assert row == [vocabs.chars.id(c) for c in token[:3]] + [0] * (3 - len(token[:3]))
    assert len(encoder.word_id.values) == len(encoder.char_ids.values) == 3


def test_remembered_inputs_give_the_same_arrays_read_only_and_the_memo_is_bounded(monkeypatch) -> None:
    config = PreprocessConfig(min_count=1, max_word_len=3, max_tokens=4)
    vocabs = build_vocabs([["the", "cat", "sat"]], ["X"], config, chars=True)
    monkeypatch.setattr(Encoder, "MEMO_SENTENCE_TOKENS", 6)
    encoder = Encoder(vocabs, config)
    inputs = [["the", "cat"], ["The", "dog", "sat", "on", "it"], ["the", "cat"], ["sat"], ["sat"]]
    first = [encoder.encode(t) for t in inputs]
    fresh = Encoder(vocabs, config)
    for got, tokens in zip(first + [encoder.encode(t) for t in inputs], inputs * 2):
        expected = fresh.encode_new(tokens[:4])
        for name in ("words", "chars", "word_lengths"):
            assert getattr(got, name).tolist() == getattr(expected, name).tolist()
    assert first[0] is first[2] and not first[0].words.flags.writeable and not first[0].chars.flags.writeable
    assert list(encoder.sentences) == [("the", "cat"), ("The", "dog", "sat", "on")]  # the budget of 6 is spent
    assert first[3] is not first[4] and first[3].words.flags.writeable


def test_config_overrides_are_type_checked_and_unknown_keys_listed() -> None:
    train, pre = TrainConfig(), PreprocessConfig()
    apply_overrides(
        [train, pre], parse_key_values(["--max-steps", "7", "--lr", "0.1", "--lowercase", "false"]), source="cli"
    )
    assert (train.max_steps, train.lr, pre.lowercase) == (7, 0.1, False)
    with pytest.raises(ConfigError, match="unknown config key 'max_stpes'; known keys: .*max_steps"):
        apply_overrides([train], {"max_stpes": 1}, source="cli")
    with pytest.raises(ConfigError, match="'max_steps' expects int; got 'seven'"):
        apply_overrides([train], {"max_steps": "seven"}, source="cli")
    with pytest.raises(ConfigError, match="expects int; got True"):
        apply_overrides([train], {"max_steps": True}, source="config.json")


def test_every_core_and_serve_module_imports_without_torch() -> None:
    """Every module of trainer.core and serve, listed by pkgutil in the child so that a new module is
    covered unasked (serve.__main__ too: its `main` runs only under `python -m`)."""
    code = BLOCK_TORCH + (
        "import importlib, pkgutil, trainer.core, serve\n"
        "names = [m.name for p in (trainer.core, serve) for m in pkgutil.walk_packages(p.__path__, p.__name__ + '.')]\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "from trainer.core.preprocess import tokenize\n"
        "assert tokenize('a b') == ['a', 'b']\n"
        "assert 'torch' not in sys.modules\n"
        "print(' '.join(names))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    imported = set(result.stdout.split())
    expected = {f"serve.{p.stem}" for p in (REPO / "serve").glob("*.py") if p.stem != "__init__"}
    expected |= {f"trainer.core.{p.stem}" for p in (REPO / "trainer" / "core").glob("*.py") if p.stem != "__init__"}
    assert expected <= imported and {"serve.runtime", "serve.http", "trainer.core.preprocess"} <= imported, imported
    blocked = subprocess.run([sys.executable, "-c", BLOCK_TORCH + "import torch"], capture_output=True, text=True)
    assert "torch is blocked" in blocked.stderr  # the blocker itself works
