"""The binary tensor data extension of the Open Inference Protocol: its byte formats, both ways.

A body with binary tensors is a JSON object of `Inference-Header-Content-Length` bytes followed by
each binary tensor's bytes, in the order the JSON lists the tensors, `parameters.binary_data_size`
bytes each. Element formats (little-endian, row-major, no padding): BYTES is a 4-byte unsigned
length then that many bytes, per element; FP32 is IEEE float32. Texts travel as UTF-8 (strict: a
lone surrogate cannot be encoded in it, so none gets in this way).
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from serve.http.api import ApiError

HEADER = "Inference-Header-Content-Length"
LENGTH = struct.Struct("<I")


def header_length(raw: str | None) -> int | None:
    """The `Inference-Header-Content-Length` header's value: None (the whole body is JSON) or an int."""
    if raw is None:
        return None
    value = raw.strip()
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        raise ApiError(400, f"{HEADER} must be a non-negative integer; got {raw[:40]!r}")
    return int(value)


def split_body(body: bytes, json_length: int | None) -> tuple[bytes, bytes]:
    """(the JSON part, the binary part) of a request body."""
    if json_length is None:
        return body, b""
    if json_length > len(body):
        raise ApiError(400, f"{HEADER} is {json_length}, more than the body's {len(body)} bytes")
    return body[:json_length], body[json_length:]


def decode_bytes(buffer: bytes, count: int, where: str) -> list[str]:
    """`count` BYTES elements from `buffer`, as text; 400 naming `where` unless it holds exactly that."""
    values, offset = [], 0
    while offset < len(buffer):
        if len(values) == count:
            raise ApiError(400, f"{where} holds more than the {count} elements its shape says")
        if offset + LENGTH.size > len(buffer):
            raise ApiError(400, f"{where} ends inside the length of element {len(values)}")
        (size,) = LENGTH.unpack_from(buffer, offset)
        offset += LENGTH.size
        if offset + size > len(buffer):
            raise ApiError(400, f"{where} element {len(values)} says {size} bytes; only {len(buffer) - offset} remain")
        try:
            values.append(buffer[offset : offset + size].decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise ApiError(400, f"{where} element {len(values)} is not valid UTF-8 ({exc.reason})") from None
        offset += size
    if len(values) != count:
        raise ApiError(400, f"{where} holds {len(values)} elements; its shape says {count}")
    return values


def encode_tensor(datatype: str, values: list[Any]) -> bytes:
    """A response tensor's data in the extension's format."""
    if datatype == "FP32":
        return np.asarray(values, dtype="<f4").tobytes()
    encoded = [str(value).encode("utf-8") for value in values]
    return b"".join(LENGTH.pack(len(value)) + value for value in encoded)
