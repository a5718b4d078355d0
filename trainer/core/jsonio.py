"""The one JSON reader and writer of everything seqlstm reads and writes: JSONL records, model.json,
config.json, vocab.json, metrics, checkpoints' JSON, HTTP bodies. Strict RFC 8259 both ways.

Reading (`loads`, `parse`, `read_file`) refuses, beyond what is not JSON at all, what parses in Python
but is unusable or reads back differently elsewhere:
- `NaN`, `Infinity`, `-Infinity` (not JSON), and a number out of a double's range such as `1e400`
  (Python reads it as inf, which no strict writer can write back);
- an integer of more than `MAX_INT_DIGITS` digits (Python's int-conversion limit, a ValueError deep
  inside json.loads otherwise);
- a duplicate key in one object (parsers differ on which one wins);
- a lone surrogate escape such as `"\\ud800"` in a string or a key (not Unicode: it cannot be written
  as UTF-8), or, with `replace_surrogates`, each one replaced by U+FFFD and counted;
- nesting deeper than `MAX_DEPTH` levels.
Each is one `JSONValueError` whose message names the field (`meta.ids[2]`) and what is wrong; its
`reason` is a short category for counted skips (`serve predict --errors skip`).

Writing (`dumps`) is UTF-8 (not \\u escapes), key order kept, compact unless `indent`; a value that has
no strict JSON form (NaN, an infinity, a lone surrogate) is a `JSONValueError` naming the field, never
`NaN` in a file. `nan_as_null` writes non-finite floats as null instead: for measurements (metrics,
logs) where a NaN loss is a fact to record, not an error.

The common case costs one C-level json call plus a regex scan: the field-by-field walk that names a
problem runs only when a hook flagged one, the text holds a surrogate escape, or it has more brackets
than `MAX_DEPTH`. No torch, no imports beyond the standard library: serve, export and trainer share it.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

MAX_DEPTH = 128  # serde_json's default recursion limit; nothing seqlstm writes is deeper than 4
MAX_INT_DIGITS = 4300  # Python's default int-conversion limit (sys.get_int_max_str_digits())
SURROGATE = re.compile("[\ud800-\udfff]")
ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
SYNTAX = ("not JSON", "not UTF-8", "nested too deeply")  # reasons that say the text is not (usable) JSON at all


class JSONValueError(ValueError):
    """JSON that is not strict RFC 8259 or holds an unusable value; the message names the field."""

    def __init__(self, reason: str, message: str, position: str = "") -> None:
        super().__init__(message + position)
        self.reason, self.detail = reason, message  # `detail`: without the position, for a caller that has one


class _Flagged:
    """What a parse hook returns instead of raising, so that the walk can name the field it sits in."""

    __slots__ = ("key", "message", "reason")

    def __init__(self, reason: str, message: str, key: str | None = None) -> None:
        self.reason, self.message, self.key = reason, message, key


def field(path: str, key: str | int) -> str:
    """`path` extended by an object key (`a.b`, `a["odd key"]`) or a list index (`a[3]`)."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    if NAME.fullmatch(key):
        return f"{path}.{key}" if path else key
    shown = ascii(key) if len(key) <= 40 else ascii(key[:37]) + "..."
    return f"{path}[{shown}]"


def _at(path: str) -> str:
    return f"{path}: " if path else ""


def _decoder(flags: list[_Flagged]) -> json.JSONDecoder:
    def flag(reason: str, message: str, key: str | None = None) -> _Flagged:
        flags.append(found := _Flagged(reason, message, key))
        return found

    def number(text: str) -> Any:
        value = float(text)
        if math.isfinite(value):
            return value
        return flag("number out of range", f"the number {text[:24]} is beyond a double's range (+-1.8e308)")

    def integer(text: str) -> Any:
        digits = len(text) - text.startswith("-")
        if digits <= MAX_INT_DIGITS:
            return int(text)
        return flag("integer too long", f"an integer of {digits} digits; the limit is {MAX_INT_DIGITS}")

    def constant(name: str) -> Any:
        return flag("NaN or Infinity", f"{name} is not valid JSON (RFC 8259 has no NaN or Infinity)")

    def pairs(items: list[tuple[str, Any]]) -> Any:
        data = dict(items)
        if len(data) == len(items):
            return data
        seen: set[str] = set()
        key = next(k for k, _ in items if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        return flag("duplicate key", f"duplicate key {ascii(key)[:60]}")

    return json.JSONDecoder(parse_float=number, parse_int=integer, parse_constant=constant, object_pairs_hook=pairs)


def parse(text: str | bytes, *, replace_surrogates: bool = False) -> tuple[Any, int]:
    """(the value, how many lone surrogates were replaced by U+FFFD), or a JSONValueError (module docstring).

    Bytes must be UTF-8 (json.loads would also guess UTF-16 or UTF-32)."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            byte = exc.object[exc.start]
            raise JSONValueError("not UTF-8", f"not valid UTF-8 (byte 0x{byte:02x} at offset {exc.start})") from None
    flags: list[_Flagged] = []
    try:
        value = _decoder(flags).decode(text)
    except json.JSONDecodeError as exc:
        raise JSONValueError("not JSON", exc.msg, f" at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise JSONValueError("nested too deeply", f"nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # int() under a lower sys.set_int_max_str_digits than MAX_INT_DIGITS
        raise JSONValueError("integer too long", f"an integer too long to convert ({exc})") from None
    if flags or ESCAPED_SURROGATE.search(text) or text.count("[") + text.count("{") > MAX_DEPTH:
        replaced = [0]
        value = _walk(value, "", 0, replaced if replace_surrogates else None)
        return value, replaced[0]
    return value, 0


def loads(text: str | bytes) -> Any:
    """The value of strict JSON text; a JSONValueError naming the field otherwise."""
    return parse(text)[0]


def _surrogate(path: str, text: str, replaced: list[int] | None) -> str:
    found = SURROGATE.search(text)
    if found is None:
        return text
    if replaced is not None:
        replaced[0] += 1
        return SURROGATE.sub("\ufffd", text)
    raise JSONValueError(
        "lone surrogate",
        f"{path or 'the string'} is not valid Unicode: a lone surrogate U+{ord(found.group()):04X} "
        f"at character {found.start()}",
    )


def _walk(value: Any, path: str, depth: int, replaced: list[int] | None) -> Any:
    """`value` checked field by field (surrogates replaced when `replaced` counts them)."""
    if depth > MAX_DEPTH:
        raise JSONValueError("nested too deeply", f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, _Flagged):
        raise JSONValueError(value.reason, f"{_at(path)}{value.message}")
    if isinstance(value, str):
        return _surrogate(path, value, replaced)
    if isinstance(value, list):
        return [_walk(item, field(path, i), depth + 1, replaced) for i, item in enumerate(value)]
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            name = _surrogate(f"a key in {path or 'the top-level object'}", key, replaced)
            if name in out:  # two keys that differed only in their lone surrogates
                raise JSONValueError("duplicate key", f"{_at(path)}duplicate key {ascii(name)[:60]}")
            out[name] = _walk(item, field(path, key), depth + 1, replaced)
        return out
    return value


def dumps(value: Any, *, indent: int | None = None, sort_keys: bool = False, nan_as_null: bool = False) -> str:
    """Strict JSON text of `value` (module docstring); a JSONValueError naming the field it cannot write."""
    separators = (",", ":") if indent is None else (",", ": ")
    options: dict[str, Any] = {"indent": indent, "sort_keys": sort_keys, "separators": separators}
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, **options)
    except (ValueError, RecursionError):  # a non-finite float, an integer past the digit limit, a cycle or depth
        if not nan_as_null:
            raise _unwritable(value, "", 0) from None
        text = json.dumps(_nulled(value), ensure_ascii=False, allow_nan=False, **options)
    if not text.isascii() and SURROGATE.search(text):
        raise _unwritable(value, "", 0)
    return text


def _unwritable(value: Any, path: str, depth: int) -> JSONValueError:
    """The first field of `value` that has no strict JSON form, as the error to raise."""
    found = _find_unwritable(value, path, depth)
    return found or JSONValueError("unwritable", "a value that has no strict JSON form")


def _find_unwritable(value: Any, path: str, depth: int) -> JSONValueError | None:
    if depth > MAX_DEPTH:
        return JSONValueError("nested too deeply", f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, float) and not math.isfinite(value):
        return JSONValueError("NaN or Infinity", f"{_at(path)}{value} has no JSON form (RFC 8259 has no NaN)")
    if isinstance(value, int):
        try:
            str(value)
        except ValueError:
            return JSONValueError("integer too long", f"{_at(path)}an integer of over {MAX_INT_DIGITS} digits")
    if isinstance(value, str):
        try:
            _surrogate(path, value, None)
        except JSONValueError as exc:
            return exc
        return None
    items: Any = ()
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    for key, item in items:
        if isinstance(key, str) and SURROGATE.search(key):
            return JSONValueError("lone surrogate", f"a key in {path or 'the top-level object'} is not valid Unicode")
        found = _find_unwritable(item, field(path, key), depth + 1)
        if found:
            return found
    return None


def _nulled(value: Any) -> Any:
    """`value` with every non-finite float replaced by None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _nulled(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nulled(v) for v in value]
    return value


def read_file(path: Path, error: type[Exception]) -> Any:
    """The strict JSON value in `path`, or `error("PATH: what is wrong")` (corrupt JSON, not UTF-8,
    a value refused above, unreadable). A missing file is the caller's to word: FileNotFoundError."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise error(f"{path}: cannot be read ({exc.strerror or type(exc).__name__})") from None
    try:
        return loads(data)
    except JSONValueError as exc:
        if exc.reason in SYNTAX:
            raise error(f"{path}: corrupt JSON ({exc})") from None
        raise error(f"{path}: {exc}") from None
