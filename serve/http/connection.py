"""One HTTP connection of the ASGI server under deadlines, and the cap on open connections.

uvicorn arms its only timer (keep-alive) after a response, so a connection that sends nothing, or
dribbles a byte a second, stays open for ever, and enough of them lock every real client out. Here
each connection (`GuardedProtocol`, uvicorn's httptools protocol with timers added) is always under
one deadline, by the phase it is in:

    idle     accepted, or its last response sent: its next request's headers are due within
             `header_timeout` (uvicorn's keep-alive timer closes an idle connection sooner)
    headers  bytes of a request arrived, the headers not complete: due by the same deadline;
             past it the client gets 408 and the connection closes (431 past MAX_HEAD_BYTES)
    body     headers complete: after `header_timeout` seconds of grace, the body must keep
             arriving at `body_min_rate` bytes a second on average, or 408 and close
    busy     the whole request is in: the app has it, and no deadline but the request's own

The cap (`Guard.limit`, `--limit-concurrency`) is on open connections. A connection past it first
makes room by closing the oldest connection that is not busy: idle ones before those still sending
headers, those before those still sending a body. Silent or slow clients therefore cost each other
their places, never a real client its own; only when every connection holds a request the app is
working on does a new request get 503.

Drain (serve.http.asgi): `Guard.draining` makes every response `Connection: close`; `shutdown()` closes a
connection that is idle after a response and keeps one that has sent no request yet (a connection
taken from the listen backlog, or a client still sending its headers) until its request is served
or its deadline passes.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from serve.http.api import encode_json

IDLE, HEADERS, BODY, BUSY = "idle", "headers", "body", "busy"
EVICTION_ORDER = {IDLE: 0, HEADERS: 1, BODY: 2}  # which phases give way to a new connection, first to last
MAX_HEAD_BYTES = 64 << 10  # request line and headers; the bytes of a pipelined next request count too
PHRASES = {408: "Request Timeout", 431: "Request Header Fields Too Large", 503: "Service Unavailable"}


def error_reply(status: int, reason: str, message: str) -> bytes:
    """A whole HTTP/1.1 response with a `{"error": ...}` body that closes the connection."""
    body = encode_json({"error": message})
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


@dataclass
class Guard:
    """What the connections of one server share: the deadlines, the cap, and whether a drain has begun."""

    header_timeout: float
    body_min_rate: float
    limit: int
    draining: bool = False
    connections: dict[GuardedProtocol, None] = field(default_factory=dict)  # insertion order: oldest first
    evicted: int = 0

    def make_room(self, newcomer: GuardedProtocol) -> None:
        """Close the connections that matter least until `newcomer` fits under the cap."""
        while len(self.connections) > self.limit:
            candidates = [c for c in self.connections if c is not newcomer and c.phase in EVICTION_ORDER]
            if not candidates:
                return
            victim = min(candidates, key=lambda c: (EVICTION_ORDER[c.phase], c.since))
            self.evicted += 1
            victim.close("connection limit reached: the oldest idle or slow connection makes room for a new one")

    def busy(self) -> int:
        return sum(c.phase == BUSY for c in self.connections)

    async def refuse(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """The ASGI app a request gets when every place is held by a request being worked on."""
        body = encode_json({"error": f"server busy: all {self.limit} connections hold a request in progress"})
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 503, "headers": [*headers, (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline in every phase and a place under `Guard`'s cap."""

    def __init__(self, *args: Any, guard: Guard, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard = guard
        self.phase = IDLE
        self.since = time.monotonic()  # when the current phase began
        self.served = 0
        self.head_bytes = self.body_bytes = 0
        self.timer: asyncio.TimerHandle | None = None

    # -- phases --------------------------------------------------------------------------------

    def enter(self, phase: str, deadline: float | None = None) -> None:
        self.phase, self.since = phase, time.monotonic()
        self.arm(deadline)

    def arm(self, delay: float | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = None if delay is None else self.loop.call_later(delay, self.expire)

    def expire(self) -> None:
        self.timer = None
        if self.phase in (IDLE, HEADERS):
            self.close(f"request headers not received within {self.guard.header_timeout:g} s", status=408)
        elif self.phase == BODY:
            # The body may take the grace period plus its bytes at the minimum rate; re-check when that runs out.
            due = self.since + self.guard.header_timeout + self.body_bytes / self.guard.body_min_rate
            left = due - time.monotonic()
            if left > 0:
                self.arm(left)
            else:
                rate = self.guard.body_min_rate
                self.close(f"request body arrived slower than {rate:g} bytes/s", status=408)

    def close(self, reason: str, status: int = 503) -> None:
        """Close now; a client whose request has begun and has no response yet is told why."""
        self.guard.connections.pop(self, None)  # closing: it no longer holds a place
        if self.transport.is_closing():
            return
        current = self.cycle if self.phase in (BODY, BUSY) else None  # the request the app has, if any
        if self.phase != IDLE and not (current is not None and current.response_started):
            if current is not None:
                current.disconnected = True  # the app's own reply, should it come, goes nowhere
            self.transport.write(error_reply(status, PHRASES[status], reason))
        self.transport.close()

    # -- uvicorn's protocol callbacks ----------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.guard.connections[self] = None
        self.enter(IDLE, self.guard.header_timeout)
        self.guard.make_room(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.arm(None)
        self.guard.connections.pop(self, None)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.phase == IDLE:
            self.phase, self.head_bytes = HEADERS, 0  # the deadline armed when the connection went idle still runs
        if self.phase == HEADERS:
            self.head_bytes += len(data)
        super().data_received(data)
        # httptools sets no limit on the request line and headers: without one, a client could fill the
        # memory within its header deadline. (A read holds at most a few hundred KiB, headers and body alike.)
        if self.phase == HEADERS and self.head_bytes > MAX_HEAD_BYTES:
            self.close(f"request line and headers over {MAX_HEAD_BYTES} bytes", status=431)

    def on_headers_complete(self) -> None:
        self.guard.make_room(self)
        # Only a full house can refuse; counting the busy ones costs a pass over every connection.
        refuse = len(self.guard.connections) > self.guard.limit and self.guard.busy() >= self.guard.limit
        if refuse:
            self.app = self.guard.refuse
        try:
            super().on_headers_complete()
        finally:
            self.app = self.config.loaded_app
        if self.guard.draining and self.cycle is not None:
            self.cycle.keep_alive = False
        self.body_bytes = 0
        self.enter(BODY, self.guard.header_timeout)

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        self.enter(BUSY)
        super().on_message_complete()

    def on_response_complete(self) -> None:
        self.served += 1
        super().on_response_complete()
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self.enter(BUSY)  # a pipelined request has started
        else:
            self.enter(IDLE, self.guard.header_timeout)

    def shutdown(self) -> None:
        """The drain: close a connection idle after a response; let every other one finish its request."""
        if self.phase == IDLE and self.served:
            self.close("draining")
        elif self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False
        # A connection that has sent no request yet, or part of one, is served under its deadline; the
        # response it gets carries Connection: close (Guard.draining).
