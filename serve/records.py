"""Input for `serve predict` and `serve ray`: files (plain or compressed) or stdin, lines or JSON records.

Reading (`open_input`): bytes, line by line, so a file larger than memory works. A name ending in
`.gz`, `.bz2` or `.xz` is decompressed on the fly (by name, as Ray Data does, so both commands agree on
what a file is; stdin is always plain). `--shard I/N` reads the I-th of N equal byte ranges of a plain
file, each starting at the first line boundary at or after its offset, as Hadoop's input splits do:
a line belongs to the range where it starts, so the N ranges cover every line exactly once and the
N outputs, concatenated in shard order, are the single-process output. A compressed stream has no
byte offsets to seek to, so `--shard` refuses it with one line saying what to do instead.

Parsing (`RecordParser`): `text` gives one record per line (a blank line is an empty input). `jsonl`
gives one JSON object per line; its `--text-field` is a string (raw text) or, for a tagger, a list of
strings (tokens), and every other field is copied to the output record unchanged, before the results.
JSON is read by the strict reader (`trainer.core.jsonio`), so every output line is RFC 8259 JSON:
a bad record (bytes that are not UTF-8, a line that is not a JSON object, the field missing or of
another type, a field that a result would overwrite, and any value that jsonio refuses: NaN or
Infinity, a number beyond a double such as `1e400`, an integer over 4300 digits, a duplicate key, a
lone surrogate such as `"\ud800"`, nesting over 128 levels) stops the run with `FILE:LINE: ...`
naming the field under `--errors strict`, is dropped and counted by reason under `skip`, and under
`replace` non-UTF-8 bytes and lone surrogates become U+FFFD (any other bad record still stops the run).
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import lzma
import os
import sys
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from trainer.core.errors import ConfigError, DataError
from trainer.core.jsonio import JSONValueError, dumps, parse

# The names serve's result objects use: an input field of that name would be overwritten.
RESULT_FIELDS = ("tokens", "tags", "label", "prob_positive", "truncated")
COMPRESSIONS: dict[str, tuple[str, Callable[[IO[bytes]], IO[bytes]]]] = {
    ".gz": ("gzip", lambda raw: gzip.GzipFile(fileobj=raw, mode="rb")),
    ".bz2": ("bzip2", lambda raw: bz2.BZ2File(raw, "rb")),
    ".xz": ("xz", lambda raw: lzma.LZMAFile(raw, "rb")),  # noqa: SIM115 (the opener; callers close it)
}
DECODE_ERRORS = (OSError, EOFError, zlib.error, lzma.LZMAError)  # corrupt or truncated compressed data
MAX_SHARDS = 1_000_000
REPLACEABLE = ("not UTF-8", "lone surrogate")  # what `--errors replace` turns into U+FFFD


@dataclass(frozen=True)
class Shard:
    index: int  # 1-based, as `--shard I/N` and array-job indices write it
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """`I/N` with 1 <= I <= N <= MAX_SHARDS."""
    index, _, count = text.partition("/")
    try:
        shard = Shard(int(index), int(count))
    except ValueError:
        raise ConfigError(f"--shard must be I/N with integers 1 <= I <= N (e.g. 2/8); got {text!r}") from None
    if not 1 <= shard.index <= shard.count <= MAX_SHARDS:
        raise ConfigError(f"--shard must be I/N with 1 <= I <= N <= {MAX_SHARDS}; got {text!r}")
    return shard


def compression(name: str) -> str | None:
    """The compression a file name says it has ("gzip", ...), or None for a plain file."""
    entry = COMPRESSIONS.get(os.path.splitext(name)[1].lower())
    return entry[0] if entry else None


class Input:
    """An open input: `lines()` yields (line number, byte offset, raw line); `position` and `total` are
    bytes read and bytes to read (of the compressed file, for a compressed one; `total` None for stdin)."""

    def __init__(self, name: str, shard: Shard | None = None) -> None:
        self.name, self.shard = name, shard
        self.label = "<stdin>" if name == "-" else name
        self.kind = None if name == "-" else compression(name)
        if shard is not None:
            self._check_shardable()
        self.raw: IO[bytes] = sys.stdin.buffer if name == "-" else self._open()
        self.total: int | None = None if name == "-" else os.fstat(self.raw.fileno()).st_size
        self.start, self.end = 0, None  # the byte range lines may start in (a shard's)
        if shard is not None and self.total is not None:
            self.start = self.total * (shard.index - 1) // shard.count
            self.end = self.total * shard.index // shard.count
        self.stream = COMPRESSIONS[os.path.splitext(name)[1].lower()][1](self.raw) if self.kind else self.raw
        self._read = 0  # bytes of (decompressed) lines handed out

    def _check_shardable(self) -> None:
        if self.name == "-":
            raise ConfigError("--shard needs a file to seek in; stdin cannot be split (pass --input FILE)")
        if self.kind:
            raise ConfigError(
                f"--shard: {self.name} is {self.kind}-compressed, which cannot be split at byte offsets; "
                "decompress it first, or split it into one file per shard and run one job per file"
            )

    def _open(self) -> IO[bytes]:
        try:
            return open(self.name, "rb")
        except FileNotFoundError:
            raise DataError(f"--input {self.name}: no such file") from None
        except OSError as exc:
            raise DataError(f"--input {self.name}: cannot read ({exc.strerror})") from None

    @property
    def position(self) -> int:
        """Bytes of the input consumed so far, counted from the shard's start (for progress and ETA)."""
        return self.raw.tell() if self.kind else self._read

    @property
    def size(self) -> int | None:
        return self.total if self.end is None else self.end - self.start

    def lines(self) -> Iterator[tuple[int, int, bytes]]:
        offset = self._seek_to_first_line() if self.shard is not None else 0
        number = 0
        try:
            while self.end is None or offset < self.end:
                raw = self.stream.readline()
                if not raw:
                    return
                number += 1
                yield number, offset, raw
                offset += len(raw)
                self._read += len(raw)
        except DECODE_ERRORS as exc:
            raise DataError(f"{self.label}: not valid {self.kind} data after line {number} ({exc})") from None

    def _seek_to_first_line(self) -> int:
        """Seek to the first line that starts at or after the shard's start offset; return its offset."""
        if self.start == 0:
            return 0
        # The byte before `start` is a newline exactly when a line starts at `start`; otherwise the line
        # that runs through `start` belongs to the shard before this one.
        self.raw.seek(self.start - 1)
        offset = self.start - 1 + len(self.raw.readline())
        self._read = offset - self.start
        return offset

    def where(self, number: int, offset: int) -> str:
        """`FILE:LINE`, or for a shard (whose line numbers start after an unknown count) the byte offset."""
        if self.shard is None:
            return f"{self.label}:{number}"
        return f"{self.label}: line at byte {offset} (shard {self.shard})"

    def close(self) -> None:
        if self.name != "-":
            self.stream.close()
            self.raw.close()


@contextlib.contextmanager
def open_input(name: str, shard: Shard | None = None) -> Iterator[Input]:
    source = Input(name, shard)
    try:
        yield source
    finally:
        source.close()


@dataclass(frozen=True)
class Record:
    """One input: `value` is text (str) or tokens (list of str); `fields` the JSON fields to copy, or None."""

    value: str | list[str]
    fields: dict[str, Any] | None = None


class BadRecord(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason, self.detail = reason, detail or reason


class RecordParser:
    """Raw lines -> `Record`s under one `--input-format`, `--text-field` and `--errors` policy."""

    def __init__(
        self, fmt: str = "text", text_field: str = "text", errors: str = "strict", tokens_ok: bool = True
    ) -> None:
        if fmt not in ("text", "jsonl"):
            raise ConfigError(f"--input-format must be text or jsonl; got {fmt!r}")
        if errors not in ("strict", "replace", "skip"):
            raise ConfigError(f"--errors must be strict, replace or skip; got {errors!r}")
        self.fmt, self.field, self.errors, self.tokens_ok = fmt, text_field, errors, tokens_ok
        self.skipped: Counter[str] = Counter()
        self.replaced = 0

    def parse(self, raw: bytes, where: str, first: bool = False) -> Record | None:
        """The record on one line, or None when `--errors skip` drops it (counted in `skipped`)."""
        try:
            return self._parse(raw, first)
        except BadRecord as exc:
            if self.errors == "skip":
                self.skipped[exc.reason] += 1
                return None
            hint = "--errors replace or --errors skip" if exc.reason in REPLACEABLE else "--errors skip"
            raise DataError(f"{where}: {exc.detail}; fix the input, or pass {hint}") from None

    def _parse(self, raw: bytes, first: bool) -> Record:
        raw = raw.rstrip(b"\r\n")
        if first and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]  # a UTF-8 byte order mark is not text
        replaced = False
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            if self.errors != "replace":
                raise BadRecord(
                    "not UTF-8", f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"
                ) from None
            replaced = True
            text = raw.decode("utf-8", errors="replace")
        if self.fmt == "text":
            record = Record(text)
        else:
            record, surrogates = self._json(text)
            replaced = replaced or surrogates
        self.replaced += replaced
        return record

    def _json(self, text: str) -> tuple[Record, bool]:
        """The record on a JSON line, and whether lone surrogates in it were replaced (`--errors replace`)."""
        if not text.strip():
            raise BadRecord("blank line", "blank line, expected a JSON object")
        try:
            record, replaced = parse(text, replace_surrogates=self.errors == "replace")
        except JSONValueError as exc:
            if exc.reason == "not JSON":
                raise BadRecord("not JSON", f"not JSON ({exc.detail})") from None
            raise BadRecord(exc.reason, str(exc)) from None
        if not isinstance(record, dict):
            raise BadRecord("not a JSON object", f"expected a JSON object; got {type(record).__name__}")
        if self.field not in record:
            raise BadRecord(
                f"no field {self.field!r}",
                f"no field {self.field!r} (--text-field; fields: {', '.join(map(repr, record)) or 'none'})",
            )
        value = record.pop(self.field)
        if not (
            isinstance(value, str)
            or (self.tokens_ok and isinstance(value, list) and all(isinstance(t, str) for t in value))
        ):
            expected = (
                "a string or a list of strings" if self.tokens_ok else "a string (a sentiment model reads raw text)"
            )
            raise BadRecord(
                f"field {self.field!r} of the wrong type",
                f"field {self.field!r} must be {expected}; got {dumps(value)[:40]}",
            )
        clash = [name for name in RESULT_FIELDS if name in record]
        if clash:
            raise BadRecord(
                f"field {clash[0]!r} clashes with a result",
                f"field {clash[0]!r} would be overwritten by the prediction (rename it)",
            )
        return Record(value, record), replaced > 0

    def summary(self) -> str:
        """`skipped 3 (2 not JSON, 1 no field 'text')`, or "" when nothing was skipped."""
        if not self.skipped:
            return ""
        reasons = ", ".join(f"{count} {reason}" for reason, count in self.skipped.most_common())
        return f"skipped {sum(self.skipped.values())} ({reasons})"


def output_line(record: Record, result: dict[str, Any]) -> str:
    """A record's output line: its copied fields, then the results."""
    return dumps({**record.fields, **result} if record.fields else result) + "\n"
