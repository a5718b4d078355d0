"""What a dataset is: `TaggedSentence` (tagger) and `Review` (sentiment) examples in named splits,
and what every reader shares: bytes decoded line by line, and the deterministic split rule.

Splits are deterministic: corpora of documents split by sorted document position (% 10: 9 test,
8 dev, else train); everything else by `int(sha256(text.strip()).hexdigest()[:8], 16) % 10`, where a
missing DEV or TEST file is carved out of TRAIN with that same rule.

Files are read as bytes and decoded line by line, so bad input is a one-line `DataError` naming
`FILE:LINE`, never a UnicodeDecodeError traceback. No torch here.
"""

from __future__ import annotations

import bz2
import hashlib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from trainer.core.errors import DataError
from trainer.core.preprocess import tokenize

SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class TaggedSentence:
    words: tuple[str, ...]  # original case
    tags: tuple[str, ...]  # universal tags, one per word

    def tokens(self) -> list[str]:
        return list(self.words)

    def line(self) -> str:
        """The example as one line of raw input for `serve predict`."""
        return " ".join(self.words)

    @property
    def target(self) -> tuple[str, ...]:
        return self.tags

    @property
    def labels(self) -> tuple[str, ...]:
        """Every label the example holds, for counts."""
        return self.tags


@dataclass(frozen=True)
class Review:
    text: str
    label: str  # "positive" | "negative"

    def tokens(self) -> list[str]:
        """The tokens the models see (`trainer.core.preprocess.tokenize`)."""
        return tokenize(self.text)

    def line(self) -> str:
        return " ".join(self.text.split())

    @property
    def target(self) -> str:
        return self.label

    @property
    def labels(self) -> tuple[str, ...]:
        return (self.label,)


Example = TaggedSentence | Review


class Dataset:
    """Named splits whose `examples(split)` re-reads the source on every call (streamed)."""

    def __init__(
        self,
        name: str,
        task: str,
        readers: Mapping[str, Callable[[], Iterator[Example]]],
        skipped: Counter | None = None,
        file_skips: dict[str, Counter] | None = None,
    ):
        self.name, self.task = name, task
        self.splits = tuple(readers)
        self._readers = dict(readers)
        self._skipped = Counter(skipped or {})
        # Streamed readers store each file's skip counts after a full pass, so reading a file
        # once per split (or twice) never double-counts.
        self._file_skips = file_skips if file_skips is not None else {}

    @property
    def skipped(self) -> Counter:
        """Documented skips by reason (for streamed files: as of the last full pass)."""
        total = Counter(self._skipped)
        for counts in self._file_skips.values():
            total.update(counts)
        return total

    def examples(self, split: str) -> Iterator[Example]:
        if split not in self._readers:
            raise DataError(f"dataset {self.name!r} has no split {split!r}; expected one of: {', '.join(self.splits)}")
        return self._readers[split]()


# ---- reading bytes line by line ------------------------------------------------------------


def raw_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, bytes) of a plain or `.bz2` file, streamed."""
    opener = bz2.open if path.suffix == ".bz2" else open
    lineno = 0
    try:
        with opener(path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                yield lineno, raw
    except (OSError, EOFError) as exc:  # unreadable file, corrupt or truncated bz2 stream
        raise DataError(f"{path}:{lineno + 1}: cannot read: {exc}") from None


def decode(path: Path, lineno: int, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}:{lineno}: not valid UTF-8 (byte {raw[exc.start]:#04x} at column {exc.start + 1})"
        ) from None


def text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, decoded line with its line ending)."""
    for lineno, raw in raw_lines(path):
        yield lineno, decode(path, lineno, raw)


def shorten(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[:width] + "..."


# ---- splits ---------------------------------------------------------------------------------


def bucket_split(bucket: int) -> str:
    return {9: "test", 8: "dev"}.get(bucket % 10, "train")


def text_bucket(text: str) -> int:
    """The hash bucket 0..9 of a text: 9 → test, 8 → dev, else train."""
    return int(hashlib.sha256(text.strip().encode("utf-8")).hexdigest()[:8], 16) % 10


def split_readers(
    given: dict[str, Path], read: Callable[[Path], Iterator[Example]], key: Callable[[Example], str]
) -> dict[str, Callable[[], Iterator[Example]]]:
    """Split readers over train[/dev][/test] files; a missing dev or test is carved from train."""
    buckets = {"train": set(range(10))}
    for split, bucket in (("dev", 8), ("test", 9)):
        if split not in given:
            buckets["train"].discard(bucket)
            buckets[split] = {bucket}
    readers = {}
    for split in SPLITS:
        if split in given and split != "train":
            readers[split] = partial(read, given[split])
        else:
            readers[split] = partial(_filtered, read, given["train"], key, frozenset(buckets[split]))
    return readers


def _filtered(
    read: Callable[[Path], Iterator[Example]], path: Path, key: Callable[[Example], str], buckets: frozenset[int]
) -> Iterator[Example]:
    for example in read(path):
        if len(buckets) == 10 or text_bucket(key(example)) in buckets:
            yield example
