"""`python -m serve http --server stdlib`: the JSON API on the standard library's ThreadingHTTPServer.

The fallback for an install with only `.[serve]` (no FastAPI/uvicorn): the same `/predict`,
`/health` and `/metadata`, the same request rules and 4xx (`serve.http.api`) and the same micro-batcher
(`serve.http.batcher`), but HTTP/1.0 (one request per connection), a thread per connection with no cap,
no metrics, no Open Inference Protocol, and SIGTERM does not drain. The default ASGI server
(`serve.http.app`, `serve.http.asgi`) has all of those.

404 unknown path, 405 wrong method; 500 is kept for bugs. A client that hangs up before its reply is
one log line, not a traceback.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from serve.http.api import (
    DRAIN_LIMIT_BYTES,
    MAX_BODY_BYTES,
    ApiError,
    content_length,
    encode_json,
    limits,
    parse_request,
)
from serve.http.batcher import MicroBatcher
from serve.runtime import ServingModel

ROUTES = {"/health": "GET", "/metadata": "GET", "/predict": "POST"}


class Handler(BaseHTTPRequestHandler):
    server: Server
    server_version = "seqlstm-serve"
    timeout = 30  # seconds a slow client may take per read

    def setup(self) -> None:
        super().setup()
        # The per-read timeout alone lets a client dribbling a byte at a time hold its thread for ever.
        self.header_deadline = threading.Timer(self.server.header_timeout, self.expire)
        self.header_deadline.start()

    def expire(self) -> None:
        """The request's headers did not arrive in time: end the connection, which ends its thread."""
        self.log_message("request headers not received within %g s; connection closed", self.server.header_timeout)
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def parse_request(self) -> bool:
        """The request line and headers (the base class reads the headers here); then the deadline is off."""
        parsed = super().parse_request()
        self.header_deadline.cancel()
        return parsed

    def finish(self) -> None:
        self.header_deadline.cancel()
        super().finish()

    def __getattr__(self, name: str) -> Any:
        # Any method (PUT, DELETE, made-up ones) gets a JSON 404/405 rather than the base class's 501.
        if name.startswith("do_"):
            return lambda: self.dispatch(name[3:])
        raise AttributeError(name)

    def dispatch(self, method: str) -> None:
        path = urlsplit(self.path).path
        try:
            allowed = ROUTES.get(path)
            if allowed is None:
                raise ApiError(404, f"unknown path {path!r}; known: {', '.join(sorted(ROUTES))}")
            if method != allowed:
                raise ApiError(405, f"{path} accepts {allowed}, not {method}")
            if path == "/predict":
                items = parse_request(self.read_body(), self.server.model)
                body: dict[str, Any] = {"results": self.server.batcher.submit(items)}
            elif path == "/metadata":
                body = self.server.metadata
            else:
                reason = self.server.batcher.health()
                if reason is not None:
                    self.send_json(503, {"status": "unavailable", "reason": reason, "task": self.server.model.task})
                    return
                body = {"status": "ok", "task": self.server.model.task}
            self.send_json(200, body)
        except ApiError as exc:
            self.send_json(exc.status, {"error": exc.message}, allow=ROUTES.get(path) if exc.status == 405 else None)
        except ConnectionError as exc:
            self.close_connection = True
            self.log_message("client went away before its request was read (%s)", type(exc).__name__)
        except Exception:
            traceback.print_exc(file=sys.stderr)
            self.send_json(500, {"error": "internal server error (logged by the server)"})

    def read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise ApiError(411, "chunked bodies are not supported; send Content-Length")
        length = content_length(self.headers.get("Content-Length"))
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            if length <= DRAIN_LIMIT_BYTES:
                self.drain(length)
            raise ApiError(413, f"body of {length} bytes; the limit is {MAX_BODY_BYTES}")
        try:
            body = self.rfile.read(length)
        except ConnectionError:
            raise  # a hang-up, not a timeout: there is nobody left to send a status to
        except OSError:
            raise ApiError(408, "timed out reading the request body") from None
        if len(body) < length:
            raise ApiError(400, f"body ended after {len(body)} of {length} bytes (Content-Length)")
        return body

    def drain(self, length: int) -> None:
        try:
            while length > 0:
                got = len(self.rfile.read(min(length, 1 << 16)))
                if not got:
                    return
                length -= got
        except OSError:
            return

    def send_json(self, status: int, body: dict[str, Any], allow: str | None = None) -> None:
        data = encode_json(body)
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            if allow:
                self.send_header("Allow", allow)
            self.end_headers()
            if getattr(self, "command", None) != "HEAD":
                self.wfile.write(data)
        except ConnectionError as exc:  # the client hung up first: nobody is left to tell, not a server error
            self.close_connection = True
            self.log_message("client went away before its %d reply (%s)", status, type(exc).__name__)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The base class's errors (malformed request line, headers too long) as JSON too."""
        self.close_connection = True
        # An unparsable request line leaves the version at HTTP/0.9, which would drop the status line.
        self.request_version = "HTTP/1.0"
        self.send_json(code, {"error": message or HTTPStatus(code).phrase})


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # a burst of concurrent connects must not overflow the listen backlog

    def __init__(
        self, address: tuple[str, int], model: ServingModel, batcher: MicroBatcher, header_timeout: float = 10.0
    ) -> None:
        super().__init__(address, Handler)
        self.model, self.batcher, self.header_timeout = model, batcher, header_timeout
        self.metadata = {**model.describe(), "limits": limits(model)}

    def handle_error(self, request: Any, client_address: tuple[str, int]) -> None:
        """A connection lost while reading the request or flushing the reply: one line, no traceback."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            print(f"{client_address[0]} - connection lost ({type(exc).__name__})", file=sys.stderr)
            return
        super().handle_error(request, client_address)
