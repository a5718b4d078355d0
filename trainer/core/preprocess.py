"""Text -> arrays, in one place: training, export validation and serving all import this module.

Imports numpy and regex only (no torch), so the serving runtime can use it as is. The arrays it
builds are exactly the model inputs named in docs/DESIGN.md.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import chain
from typing import Any

import numpy as np
import regex

from trainer.core.config import PreprocessConfig
from trainer.core.errors import DataError
from trainer.core.lexicon import CLASS_PREFIX, MIN_CLASS_WORDS, Lexicon
from trainer.core.tokenizer import Tokenizer, default_tokenizer

PAD, UNK, URL = "<pad>", "<unk>", "<url>"
UNK_ID = 1  # `<unk>` in every word and character vocabulary (`<pad>` is 0): a token never seen in training


def tokenize(text: str) -> list[str]:
    """Treebank-style tokens in their original case; each URL becomes one `<url>` token.

    The steps are data (trainer/core/treebank.json, run by `trainer.core.tokenizer`): URLs are cut out
    first, because the Treebank rules would split them on punctuation, then nltk's Treebank rules run
    on the text between them. Serving runs the copy inside the export instead (`serve.runtime`).
    """
    return default_tokenizer().tokenize(text)


# The PreprocessConfig fields normalize_word reads: two configs that agree on them look words up by the same keys.
NORMALIZE_KEYS = ("lowercase", "digits_to_zero")


def normalize_word(token: str, config: PreprocessConfig, digits: regex.Pattern | None = None) -> str:
    """The key a token is looked up by in the word vocabulary (characters keep the original).
    `digits`: the decimal digits of the tokenizer description in use (the committed one by default)."""
    if token == URL:
        return token
    if config.lowercase:
        token = token.lower()
    if config.digits_to_zero:
        token = (digits or default_tokenizer().digits).sub("0", token)
    return token


class Vocab:
    """Token <-> id. `<pad>` is id 0 and `<unk>` id 1 when the vocabulary has specials."""

    def __init__(self, itos: Sequence[str], *, specials: bool = True) -> None:
        self.itos = list(itos)
        self.specials = specials
        if specials and self.itos[:2] != [PAD, UNK]:
            raise DataError(f"vocabulary must start with {PAD!r}, {UNK!r}; got {self.itos[:2]}")
        self.stoi = {token: i for i, token in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise DataError("vocabulary has duplicate entries")

    @classmethod
    def build(cls, counts: Counter, min_count: int = 1) -> Vocab:
        """Most frequent first, ties by token, so the same corpus always gives the same ids."""
        kept = sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t))
        return cls([PAD, UNK] + [t for t in kept if t not in (PAD, UNK)])

    @classmethod
    def labels(cls, names: Sequence[str]) -> Vocab:
        return cls(names, specials=False)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    def id(self, token: str) -> int:
        """Unknown tokens map to `<unk>`; a label vocabulary has none, so an unknown label is an error."""
        found = self.stoi.get(token)
        if found is not None:
            return found
        if self.specials:
            return UNK_ID
        raise DataError(f"unknown label {token!r}; expected one of {self.itos}")


@dataclass
class Vocabs:
    """Everything a model needs to turn strings into ids; saved as vocab.json beside the weights."""

    words: Vocab
    labels: Vocab
    chars: Vocab | None = None
    # Unknown words become the `<unk:SIG>` class the lexicon gives them, where `words` has it (trainer/core/lexicon.py)
    lexicon: Lexicon | None = None

    def word_id(self, word: str) -> int:
        """The id of a normalized word: its own, else its lexicon class's, else `<unk>`'s."""
        found = self.words.stoi.get(word)
        if found is None and self.lexicon is not None:
            found = self.words.stoi.get(self.lexicon.class_token(word) or UNK)
        return UNK_ID if found is None else found

    @cached_property
    def unknown_ids(self) -> np.ndarray:
        """(V,) int64: the id each word id takes when its word is treated as unknown (word dropout): its
        lexicon class's or `<unk>`'s. `<pad>`, `<unk>` and the classes map to themselves. Computed once
        (a pass over the vocabulary), on first use."""
        out = np.full(len(self.words), UNK_ID, np.int64)
        out[0] = 0
        for i, word in enumerate(self.words.itos):
            if word.startswith(CLASS_PREFIX):
                out[i] = i
            elif self.lexicon is not None and i > UNK_ID:
                out[i] = self.words.stoi.get(self.lexicon.class_token(word) or UNK, UNK_ID)
        return out

    def to_json(self) -> dict:
        out: dict[str, Any] = {"words": self.words.itos, "labels": self.labels.itos}
        if self.chars is not None:
            out["chars"] = self.chars.itos
        if self.lexicon is not None:
            out["lexicon"] = self.lexicon.to_json()
        return out

    @classmethod
    def from_json(cls, data: dict) -> Vocabs:
        chars, lexicon = data.get("chars"), data.get("lexicon")
        return cls(
            words=Vocab(data["words"]),
            labels=Vocab.labels(data["labels"]),
            chars=Vocab(chars) if chars is not None else None,
            lexicon=Lexicon.from_json(lexicon) if lexicon is not None else None,
        )


def build_vocabs(
    token_lists: Iterable[Sequence[str]],
    labels: Sequence[str],
    config: PreprocessConfig,
    *,
    chars: bool,
    lexicon: Lexicon | None = None,
) -> Vocabs:
    """Vocabularies from the training split only: words by min count, characters of raw tokens. With a
    lexicon, the words end with the class tokens that at least MIN_CLASS_WORDS distinct training words have."""
    word_counts: Counter = Counter()
    char_counts: Counter = Counter()
    for tokens in token_lists:
        word_counts.update(normalize_word(t, config) for t in tokens)
        if chars:
            for token in tokens:
                char_counts.update(token)
    words = Vocab.build(word_counts, config.min_count)
    if lexicon is not None:
        classes = Counter(lexicon.class_token(word) for word in word_counts)
        kept = sorted(c for c, n in classes.items() if c is not None and n >= MIN_CLASS_WORDS and c not in words)
        words = Vocab(words.itos + kept)
    return Vocabs(
        words=words,
        labels=Vocab.labels(labels),
        chars=Vocab.build(char_counts, 1) if chars else None,
        lexicon=lexicon,
    )


@dataclass(frozen=True)
class Encoded:
    """One sentence or review as ids, before padding."""

    words: np.ndarray  # (T,) int64
    chars: np.ndarray | None = None  # (T, W) int64, W = longest word, capped at max_word_len
    word_lengths: np.ndarray | None = None  # (T,) int64


class Memo:
    """`compute(token)`, remembered for the first `size` distinct tokens: frequent tokens come first
    and cover most of any text, and the memory stays bounded however much text goes through."""

    def __init__(self, compute: Callable[[str], Any], size: int) -> None:
        self.compute, self.size = compute, size
        self.values: dict[str, Any] = {}

    def __call__(self, token: str) -> Any:
        found = self.values.get(token)
        if found is None:
            found = self.compute(token)
            if len(self.values) < self.size:
                self.values[token] = found
        return found

    def many(self, tokens: Sequence[str]) -> list[Any]:
        """`[self(t) for t in tokens]`, the remembered ones looked up in C (a Python call per token
        cost as much as the rest of encoding)."""
        found = list(map(self.values.get, tokens))
        if None in found:
            found = [self(t) if v is None else v for t, v in zip(tokens, found)]
        return found


class Encoder:
    """Tokens -> `Encoded` -> padded batch arrays, for one model's vocabularies and config."""

    MEMO_TOKENS = 1 << 16
    # Tokens of remembered inputs (`encode`): with the tagger's char ids about 50 MB at most.
    MEMO_SENTENCE_TOKENS = 1 << 19

    def __init__(self, vocabs: Vocabs, config: PreprocessConfig, tokenizer: Tokenizer | None = None) -> None:
        self.vocabs = vocabs
        self.config = config
        digits = (tokenizer or default_tokenizer()).digits
        self.sentences: dict[tuple[str, ...], Encoded] = {}
        self.sentence_tokens = 0
        self.word_id = Memo(lambda token: vocabs.word_id(normalize_word(token, config, digits)), self.MEMO_TOKENS)
        if vocabs.chars is not None:
            char_id = vocabs.chars.id
            self.char_ids = Memo(lambda token: tuple(map(char_id, token[: config.max_word_len])), self.MEMO_TOKENS)

    def truncate(self, tokens: Sequence[str]) -> list[str]:
        """Inputs longer than `max_tokens` keep their first `max_tokens` tokens (callers report it)."""
        return list(tokens[: self.config.max_tokens])

    def encode(self, tokens: Sequence[str]) -> Encoded:
        """The ids of `tokens` (truncated), remembered for repeated inputs up to MEMO_SENTENCE_TOKENS tokens
        in all; remembered arrays are read-only, since every later caller gets the same ones."""
        key = tuple(tokens[: self.config.max_tokens])
        found = self.sentences.get(key)
        if found is not None:
            return found
        encoded = self.encode_new(key)
        if self.sentence_tokens < self.MEMO_SENTENCE_TOKENS:
            for array in (encoded.words, encoded.chars, encoded.word_lengths):
                if array is not None:
                    array.flags.writeable = False
            self.sentences[key] = encoded
            self.sentence_tokens += len(key)
        return encoded

    def encode_new(self, tokens: Sequence[str]) -> Encoded:
        words = np.array(self.word_id.many(tokens), np.int64)
        if self.vocabs.chars is None:
            return Encoded(words)
        rows = self.char_ids.many(tokens)  # each capped at max_word_len
        lengths = np.fromiter(map(len, rows), np.int64, len(rows))
        width = max(1, int(lengths.max(initial=1)))
        flat = np.fromiter(chain.from_iterable(rows), np.int64, int(lengths.sum()))
        chars = np.zeros((len(rows), width), np.int64)
        chars[np.arange(width) < lengths[:, None]] = flat  # row-major: each row's ids left-aligned, then zeros
        return Encoded(words, chars, lengths)

    def batch(self, items: Sequence[Encoded]) -> dict[str, np.ndarray]:
        """Right-pad with id 0 into the model's named inputs. Every length is at least 1."""
        if not items:
            raise DataError("cannot build a batch from no examples")
        lengths = np.array([len(item.words) for item in items], np.int64)
        if lengths.min() < 1:
            raise DataError("empty input reached the encoder; callers must handle empty texts first")
        batch_size, max_len = len(items), int(lengths.max())
        words = np.zeros((batch_size, max_len), np.int64)
        for b, item in enumerate(items):
            words[b, : lengths[b]] = item.words
        arrays = {"words": words, "lengths": lengths}
        if self.vocabs.chars is not None:
            max_chars = max(item.chars.shape[1] for item in items)
            chars = np.zeros((batch_size, max_len, max_chars), np.int64)
            word_lengths = np.zeros((batch_size, max_len), np.int64)
            for b, item in enumerate(items):
                chars[b, : lengths[b], : item.chars.shape[1]] = item.chars
                word_lengths[b, : lengths[b]] = item.word_lengths
            arrays["chars"] = chars
            arrays["word_lengths"] = word_lengths
        return arrays

    def labels(self, names: Sequence[str]) -> np.ndarray:
        return np.fromiter((self.vocabs.labels.id(n) for n in names), np.int64, len(names))
