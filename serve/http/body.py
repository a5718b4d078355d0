"""A request body as the ASGI service reads it: its length, chunked transfer, gzip/deflate, and the caps.

A body arrives with `Content-Length` (411 without it, unless chunked) or `Transfer-Encoding: chunked`;
either way at most `MAX_BODY_BYTES` travel (413 past that: a declared length is refused before a byte
is read, a chunked body as soon as its running total passes the cap). `Content-Encoding: gzip`
(or `x-gzip`) and `deflate` (the zlib format, RFC 9110, as tritonclient and curl send it) are
decompressed as the bytes arrive, each step allowed only the room left under the same cap, so a
decompression bomb is a 413 after at most `MAX_BODY_BYTES` of output, never a larger allocation.
Inflating a capped body costs a few milliseconds at most, so it runs on the event loop; parsing
what it yields is where `serve.http.app.parse` moves large bodies to a thread. Any other encoding is 415.
"""

from __future__ import annotations

import zlib

from starlette.requests import Request

from serve.http.api import DRAIN_LIMIT_BYTES, MAX_BODY_BYTES, ApiError, content_length

# Content-Encoding -> zlib's wbits: 16 + 15 reads a gzip member, 15 a zlib stream.
ENCODINGS = {"gzip": 31, "x-gzip": 31, "deflate": 15}


class Inflater:
    """Decompresses a body piece by piece, never past `limit` bytes of output."""

    def __init__(self, encoding: str, limit: int) -> None:
        self.encoding, self.limit, self.size = encoding, limit, 0
        self.stream = zlib.decompressobj(ENCODINGS[encoding])

    def feed(self, data: bytes) -> bytes:
        pieces = []
        while data:
            if self.stream.eof:
                raise ApiError(400, f"body has data after the end of its {self.encoding} stream")
            try:
                # Room for one byte more than the cap: getting it proves the body is over the cap.
                piece = self.stream.decompress(data, self.limit + 1 - self.size)
            except zlib.error as exc:
                raise ApiError(400, f"body is not valid {self.encoding} data ({exc})") from None
            self.size += len(piece)
            if self.size > self.limit:
                raise ApiError(413, f"body decompresses to more than {self.limit} bytes; the limit is {self.limit}")
            pieces.append(piece)
            data = self.stream.unconsumed_tail or self.stream.unused_data
        return b"".join(pieces)

    def finish(self) -> None:
        if not self.stream.eof:
            raise ApiError(400, f"body ends inside its {self.encoding} stream (truncated)")


def inflater(header: str | None) -> Inflater | None:
    """The decompressor that `Content-Encoding: header` asks for; None for no encoding."""
    encoding = (header or "").strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding not in ENCODINGS:
        raise ApiError(415, f"Content-Encoding {header[:40]!r} is not supported; send gzip, deflate or identity")
    return Inflater(encoding, MAX_BODY_BYTES)


async def read_body(request: Request) -> bytes:
    """The body under the API's rules (above), decompressed."""
    chunked = "chunked" in request.headers.get("transfer-encoding", "").lower()
    if not chunked:
        length = content_length(request.headers.get("content-length"))
        if length > MAX_BODY_BYTES:
            if length <= DRAIN_LIMIT_BYTES:
                async for _ in request.stream():
                    pass
            raise ApiError(413, f"body of {length} bytes; the limit is {MAX_BODY_BYTES}")
    decoder = inflater(request.headers.get("content-encoding"))
    pieces, received, refused = [], 0, None
    async for chunk in request.stream():
        received += len(chunk)
        if refused is not None:
            if received > DRAIN_LIMIT_BYTES:
                break
            continue  # read on and drop, so that the client is reading when the reply comes
        try:
            if received > MAX_BODY_BYTES:  # only a chunked body gets here: a declared length was checked above
                raise ApiError(413, f"chunked body of more than {MAX_BODY_BYTES} bytes; the limit is {MAX_BODY_BYTES}")
            pieces.append(decoder.feed(chunk) if decoder else chunk)
        except ApiError as exc:
            refused = exc
    if refused is None and decoder:
        decoder.finish()
    if refused is not None:
        raise refused
    return b"".join(pieces)
