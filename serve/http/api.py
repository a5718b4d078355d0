"""The JSON API's request rules, independent of the HTTP server that carries them.

`parse_request` turns a `POST /predict` body into model items or raises `ApiError` with the status
and message the client gets. Every client mistake is a 4xx naming what is wrong: 400 for malformed
JSON (including `NaN`/`Infinity`, which are not JSON, and duplicate keys, which are ambiguous),
wrong types, or text that is not valid Unicode (a lone surrogate such as `"\\ud800"` parses as JSON
but cannot be encoded, so it is refused here, naming `texts[i]` or `tokens[i][j]`); 411 for a
missing Content-Length; 413 for a body over `MAX_BODY_BYTES`; 422 over a limit (texts per request,
characters per text, tokens per text = the model's max_tokens; the API rejects rather than
truncates, unlike `predict`). 503 means the model cannot answer now (see `serve.http.batcher`).
"""

from __future__ import annotations

import re
from typing import Any

from serve.runtime import Item, ServingModel
from trainer.core.jsonio import JSONValueError, dumps, loads

MAX_BODY_BYTES = 1 << 20
MAX_TEXTS = 256
MAX_TEXT_CHARS = 10_000
DRAIN_LIMIT_BYTES = 16 << 20  # an oversized body up to this is read and dropped, so the 413 arrives cleanly
SURROGATE = re.compile(r"[\ud800-\udfff]")


class ApiError(Exception):
    """A reply other than 200, with `{"error": message}` as its body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def content_length(raw: str | None) -> int:
    """The Content-Length header's value; plain ASCII digits only (no sign, `_` or spaces inside)."""
    if raw is None:
        raise ApiError(411, "Content-Length is required")
    value = raw.strip()
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        raise ApiError(400, f"Content-Length must be a non-negative integer; got {raw[:40]!r}")
    return int(value)


def decode_json(body: bytes) -> Any:
    try:
        return loads(body)  # strict: no NaN, 1e400, huge integer, duplicate key, lone surrogate or deep nesting
    except JSONValueError as exc:
        raise ApiError(400, f"body is not valid UTF-8 JSON ({str(exc)[:160]})") from None


def check_unicode(where: str, text: str) -> None:
    found = SURROGATE.search(text)
    if found:
        raise ApiError(
            400,
            f"{where} is not valid Unicode: a lone surrogate U+{ord(found.group()):04X} at character {found.start()}",
        )


def limits(model: ServingModel) -> dict[str, int]:
    """What `GET /metadata` says a request may hold."""
    return {
        "max_body_bytes": MAX_BODY_BYTES,
        "max_texts": MAX_TEXTS,
        "max_text_chars": MAX_TEXT_CHARS,
        "max_tokens": model.max_tokens,
    }


def encode_json(body: Any) -> bytes:
    """A reply body: compact UTF-8 JSON (the same bytes from every server)."""
    return dumps(body).encode("utf-8")


def parse_request(body: bytes, model: ServingModel) -> list[Item]:
    """The request body -> model items, or an ApiError saying what is wrong with it."""
    data = decode_json(body)
    if not isinstance(data, dict) or len(data) != 1 or not set(data) <= {"texts", "tokens"}:
        raise ApiError(400, 'expected a JSON object with exactly one key, "texts" or "tokens"')
    ((key, value),) = data.items()
    if not isinstance(value, list):
        raise ApiError(400, f'"{key}" must be a list')
    return prepare_items(key, value, model)


def prepare_items(key: str, values: list[Any], model: ServingModel, where: str | None = None) -> list[Item]:
    """`values` as "texts" or "tokens" (lists of tokens) -> items, under the API's limits.

    `where` names the values in messages (the Open Inference Protocol's input is not called "texts").
    """
    where = where or key
    if len(values) > MAX_TEXTS:
        raise ApiError(422, f'"{where}" has {len(values)} entries; the limit is {MAX_TEXTS} per request')
    if key == "texts":
        return [prepare_text(f"{where}[{i}]", text, model) for i, text in enumerate(values)]
    if not model.kind.tokens_input:
        raise ApiError(422, f'"tokens" input needs a tagger model; this is a {model.task} model: send "texts"')
    return [prepare_tokens(f"{where}[{i}]", tokens, model) for i, tokens in enumerate(values)]


def prepare_text(where: str, text: Any, model: ServingModel) -> Item:
    if not isinstance(text, str):
        raise ApiError(400, f"{where} must be a string; got {type(text).__name__}")
    if len(text) > MAX_TEXT_CHARS:
        raise ApiError(422, f"{where} has {len(text)} characters; the limit is {MAX_TEXT_CHARS}")
    check_unicode(where, text)
    item = model.prepare_text(text)
    if item.truncated:
        raise ApiError(422, f"{where} has more than max_tokens={model.max_tokens} tokens")
    return item


def prepare_tokens(where: str, tokens: Any, model: ServingModel) -> Item:
    if not isinstance(tokens, list) or not all(isinstance(t, str) and t for t in tokens):
        raise ApiError(400, f"{where} must be a list of non-empty strings")
    if len(tokens) > model.max_tokens:
        raise ApiError(422, f"{where} has {len(tokens)} tokens; the limit is max_tokens={model.max_tokens}")
    for j, token in enumerate(tokens):
        check_unicode(f"{where}[{j}]", token)
    return model.prepare_tokens(tokens)
