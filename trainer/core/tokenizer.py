"""Raw text -> tokens, run from a description (trainer/core/treebank.json, an export's tokenizer.json).

`Tokenizer(description)` compiles the description's patterns once and applies its steps; nothing in
this file knows a Treebank rule. Training, export validation and serving use the committed
description (`default_tokenizer`), and `serve` the copy inside the export it loads, so what an export
says it does is what serving does. docs/DESIGN.md ("Exports outside Python") specifies the format;
trainer/core/treebank.py writes it from nltk's rules.

The patterns are written for ECMAScript's `u` mode; the one construct Python's `regex` spells
differently is the code point escape, `\\u{HEX}` -> `\\UXXXXXXXX`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path
from typing import Any

import regex

from trainer.core.errors import DataError
from trainer.core.jsonio import read_file

DESCRIPTION = Path(__file__).with_name("treebank.json")
FORMAT, VERSIONS = "seqlstm-tokenizer", (1,)
OPS = {"replace": ("find", "replace"), "pad": ("text",), "split": ("on",)}
_ESCAPE = regex.compile(r"\\u\{([0-9A-Fa-f]{1,6})\}")


def ranges(chars: Iterable[str]) -> list[list[int]]:
    """Sorted, merged [first, last] code point ranges."""
    out: list[list[int]] = []
    for cp in sorted(map(ord, chars)):
        if out and cp == out[-1][1] + 1:
            out[-1][1] = cp
        else:
            out.append([cp, cp])
    return out


def body(spans: list[list[int]]) -> str:
    """A character class body: every member as `\\u{HEX}`, so no character needs escaping."""
    return "".join(f"\\u{{{a:X}}}" if a == b else f"\\u{{{a:X}}}-\\u{{{b:X}}}" for a, b in spans)


@cache
def str_split_pattern() -> str:
    """The split step that is exactly `str.split()`: runs of `str.isspace()` code points."""
    return f"[{body(ranges(c for c in map(chr, range(0x110000)) if c.isspace()))}]+"


def python_pattern(pattern: str, where: str) -> regex.Pattern:
    """A description pattern on Python's `regex` engine (V0, no flags: every class is explicit)."""
    try:
        return regex.compile(_ESCAPE.sub(lambda m: f"\\U{int(m[1], 16):08X}", pattern), regex.V0)
    except (regex.error, OverflowError, ValueError) as exc:
        raise DataError(f"{where}: not a valid pattern ({exc})") from None


def replacement(parts: Any, where: str) -> str | Callable[[Any], str]:
    """`replace` parts (literal strings, group numbers) as a `sub` replacement: all literal, a string the
    engine copies in C (its backslashes escaped), 35% faster than a call per match; else a function."""
    if not isinstance(parts, list) or not all(
        isinstance(p, str) or (isinstance(p, int) and not isinstance(p, bool) and 0 <= p <= 9) for p in parts
    ):
        raise DataError(f"{where}: replace must be a list of strings and group numbers 0-9; got {str(parts)[:60]}")
    if all(isinstance(p, str) for p in parts):
        return "".join(parts).replace("\\", "\\\\")
    if len(parts) == 1:
        group = parts[0]
        return lambda match: match[group] or ""

    def expand(match: Any) -> str:
        return "".join(p if isinstance(p, str) else (match[p] or "") for p in parts)

    return expand


def check_step(step: Any, where: str) -> str:
    """A step object with a known `op` and exactly its keys; returns the op."""
    if not isinstance(step, dict) or step.get("op") not in OPS:
        raise DataError(f"{where}: a step must be an object whose op is one of {', '.join(OPS)}")
    keys = {"op", "name", *OPS[step["op"]]}
    if set(step) != keys:
        raise DataError(f"{where}: a {step['op']} step has exactly the keys {', '.join(sorted(keys))}")
    if not all(isinstance(step[k], str) for k in keys - {"replace"}):
        raise DataError(f"{where}: op, name, {', '.join(OPS[step['op']])} must be strings")
    return step["op"]


# `Tokenizer.tokenize` remembers distinct texts of at most MEMO_TEXT characters until they add up to MEMO_CHARS
# (with their tokens about 60 MB), so repeated texts (a served stream, another epoch) skip the ~35 passes.
MEMO_TEXT, MEMO_CHARS = 1000, 4_000_000


class Tokenizer:
    """One description, compiled: `tokenize(text)` -> tokens, `digits` for digits_to_zero."""

    def __init__(self, description: Any, where: str = "tokenizer") -> None:
        if not isinstance(description, dict) or description.get("format") != FORMAT:
            raise DataError(f"{where}: not a tokenizer description (format must be {FORMAT!r})")
        if description.get("version") not in VERSIONS:
            version = str(description.get("version"))[:20]
            raise DataError(f"{where}: version {version} is not one this build reads {VERSIONS}")
        url, steps, digits = (description.get(k) for k in ("url", "steps", "digits"))
        if not isinstance(url, dict) or not isinstance(url.get("find"), str) or not isinstance(url.get("token"), str):
            raise DataError(f"{where}: url must be an object with find and token strings")
        if not isinstance(steps, list) or not steps:
            raise DataError(f"{where}: steps must be a non-empty list")
        self.description = description
        self.url = python_pattern(url["find"], f"{where}: url.find")
        self.url_token: str = url["token"]
        self.replacements: list[list[tuple[regex.Pattern, Any]]] = [[]]  # runs of replace steps, split by pads
        self.pads: list[str] = []
        self.split: regex.Pattern | None = None
        self.split_is_str_split = steps[-1] == {"op": "split", "name": "split", "on": str_split_pattern()}
        for i, step in enumerate(steps):
            here = f"{where}: steps[{i}]"
            op = check_step(step, here)
            if self.split is not None:
                raise DataError(f"{here}: the split step must be the last one")
            if op == "replace":
                find = python_pattern(step["find"], f"{here}.find")
                self.replacements[-1].append((find, replacement(step["replace"], f"{here}.replace")))
            elif op == "pad":
                self.pads.append(step["text"])
                self.replacements.append([])
            else:
                self.split = python_pattern(step["on"], f"{here}.on")
        if self.split is None:
            raise DataError(f"{where}: steps must end with a split step")
        self.digits = python_pattern(f"[{class_body(digits, f'{where}: digits')}]", f"{where}: digits")
        self.memo: dict[str, tuple[str, ...]] = {}
        self.memo_chars = 0

    def words(self, text: str) -> list[str]:
        """The steps on one stretch of text between URLs."""
        for i, rules in enumerate(self.replacements):
            if i:
                pad = self.pads[i - 1]
                text = f"{pad}{text}{pad}"
            for find, sub in rules:
                text = find.sub(sub, text)
        if self.split_is_str_split:  # the same tokens, 8% faster on reviews than the regex
            return text.split()
        return [token for token in self.split.split(text) if token]  # type: ignore[union-attr]

    def tokenize(self, text: str) -> list[str]:
        """Tokens in their original case; each URL match becomes the one token `url.token`."""
        found = self.memo.get(text)
        if found is not None:
            return list(found)
        tokens = self.run_steps(text)
        if len(text) <= MEMO_TEXT and self.memo_chars < MEMO_CHARS:
            self.memo[text] = tuple(tokens)
            self.memo_chars += len(text)
        return tokens

    def run_steps(self, text: str) -> list[str]:
        """`tokenize` without the memo."""
        tokens: list[str] = []
        start = 0
        for match in self.url.finditer(text):
            tokens += self.words(text[start : match.start()])
            tokens.append(self.url_token)
            start = match.end()
        tokens += self.words(text[start:])
        return tokens


def class_body(spans: Any, where: str) -> str:
    """[[first, last], ...] code point ranges as a `regex` class body."""
    if not isinstance(spans, list) or not all(
        isinstance(s, list) and len(s) == 2 and all(type(c) is int and 0 <= c <= 0x10FFFF for c in s) and s[0] <= s[1]
        for s in spans
    ):
        raise DataError(f"{where}: must be a list of [first, last] code point pairs")
    return "".join(f"\\U{a:08X}-\\U{b:08X}" for a, b in spans)


def read_description(path: Path) -> dict[str, Any]:
    try:
        return read_file(path, DataError)
    except FileNotFoundError:
        raise DataError(f"{path}: missing (the tokenizer description)") from None


@cache
def default_tokenizer() -> Tokenizer:
    """The committed description: what every model since it was added was trained with."""
    return Tokenizer(read_description(DESCRIPTION), str(DESCRIPTION))
