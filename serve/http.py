"""`python -m serve http`: a small JSON API on the standard library's ThreadingHTTPServer.

    POST /predict   {"texts": ["...", ...]} or {"tokens": [["...", ...], ...]} (tagger only)
                    -> {"results": [...]}, the same objects `predict` writes
    GET  /health    -> {"status": "ok", "task": ...}
    GET  /metadata  -> task, labels, input names, onnx sha256, limits

Every client mistake is a 4xx with `{"error": "..."}` (the request rules are `serve.api`'s; here
404 unknown path, 405 wrong method). 500 is kept for bugs. 503 says the model cannot answer: the
batching thread has stopped (then `GET /health` is 503 too, with the reason), or no result came
within `--request-timeout` seconds.

Concurrency: handler threads parse and encode their own request, then hand the items to one
`MicroBatcher` thread, which collects what arrives within `--max-wait-ms` (or until a batch is
full) and runs it through onnxruntime as one sorted-by-length pass. One thread owns the session,
so concurrent requests never race on it, and small concurrent requests share batches.

Every numeric flag is range-checked before the model loads (`serve.options`). Binding anything but
loopback (`--host 0.0.0.0`, or `--host ""`, which is every interface too) prints one warning line
on stderr. A client that hangs up before its reply is one log line, not a traceback.
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from serve.api import MAX_BODY_BYTES, MAX_TEXT_CHARS, MAX_TEXTS, ApiError, content_length, parse_request
from serve.options import check_host, check_numbers, exposure_warning
from serve.runtime import OPT_LEVELS, Item, ServingModel
from trainer.core.errors import ConfigError

DRAIN_LIMIT_BYTES = 16 << 20  # an oversized body up to this is read and dropped, so the 413 arrives cleanly
ROUTES = {"/health": "GET", "/metadata": "GET", "/predict": "POST"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, type=Path, metavar="EXPORT_DIR")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port (printed on startup)")
    parser.add_argument("--batch-size", type=int, default=64, help="most items run through the model at once")
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a batch waits for more requests")
    parser.add_argument("--request-timeout", type=float, default=30.0, metavar="SECONDS",
                        help="a request with no result by then gets 503")
    parser.add_argument("--int8", action="store_true", help="use model.int8.onnx")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: one per core)")
    parser.add_argument("--optimization", choices=sorted(OPT_LEVELS), default="all")


@dataclass
class Job:
    items: list[Item]
    done: threading.Event = field(default_factory=threading.Event)
    results: list[dict[str, Any]] | None = None
    error: BaseException | None = None
    abandoned: bool = False  # its request timed out: the batcher skips it


class MicroBatcher:
    """One worker thread runs the model on requests gathered for up to `max_wait_s`."""

    POLL_S = 0.25  # how often a waiting request checks that the worker is still alive

    def __init__(self, model: ServingModel, batch_size: int, max_wait_s: float, timeout_s: float = 30.0) -> None:
        self.model, self.batch_size, self.max_wait_s, self.timeout_s = model, batch_size, max_wait_s, timeout_s
        self.jobs: queue.Queue[Job] = queue.Queue()
        self.failure: str | None = None
        self.thread = threading.Thread(target=self._loop, name="micro-batcher", daemon=True)
        self.thread.start()

    def health(self) -> str | None:
        """None while the worker runs, else why it does not."""
        if self.thread.is_alive():
            return None
        return f"the batching thread has stopped ({self.failure or 'no reason recorded'})"

    def submit(self, items: list[Item]) -> list[dict[str, Any]]:
        reason = self.health()
        if reason is not None:
            raise ApiError(503, reason)
        job = Job(items)
        self.jobs.put(job)
        deadline = time.monotonic() + self.timeout_s
        while not job.done.wait(min(self.POLL_S, max(0.0, deadline - time.monotonic()))):
            reason = self.health()
            if reason is None and time.monotonic() < deadline:
                continue
            job.abandoned = True
            raise ApiError(503, reason or f"no result within --request-timeout {self.timeout_s:g} s; retry later")
        if job.error is not None:
            raise job.error
        return job.results  # type: ignore[return-value]

    def _gather(self) -> list[Job]:
        jobs = [self.jobs.get()]
        count = len(jobs[0].items)
        deadline = time.monotonic() + self.max_wait_s
        while count < self.batch_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                jobs.append(self.jobs.get(timeout=remaining))
            except queue.Empty:
                break
            count += len(jobs[-1].items)
        return [job for job in jobs if not job.abandoned]

    def _loop(self) -> None:
        try:
            while True:
                self._run(self._gather())
        except BaseException as exc:  # a bug: /health and waiting requests say so (503) from now on
            self.failure = f"{type(exc).__name__}: {str(exc)[:200]}"
            raise

    def _run(self, jobs: list[Job]) -> None:
        try:
            results = self.model.predict([item for job in jobs for item in job.items], self.batch_size)
        except Exception as exc:  # reported to each waiting request as a 500
            for job in jobs:
                job.error = exc
                job.done.set()
            return
        start = 0
        for job in jobs:
            job.results = results[start : start + len(job.items)]
            start += len(job.items)
            job.done.set()


class Handler(BaseHTTPRequestHandler):
    server: Server
    server_version = "seqlstm-serve"
    timeout = 30  # seconds a slow client may take per read

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
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
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

    def __init__(self, address: tuple[str, int], model: ServingModel, batcher: MicroBatcher) -> None:
        super().__init__(address, Handler)
        self.model, self.batcher = model, batcher
        self.metadata = {
            **model.describe(),
            "limits": {
                "max_body_bytes": MAX_BODY_BYTES,
                "max_texts": MAX_TEXTS,
                "max_text_chars": MAX_TEXT_CHARS,
                "max_tokens": model.max_tokens,
            },
        }

    def handle_error(self, request: Any, client_address: tuple[str, int]) -> None:
        """A connection lost while reading the request or flushing the reply: one line, no traceback."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            print(f"{client_address[0]} - connection lost ({type(exc).__name__})", file=sys.stderr)
            return
        super().handle_error(request, client_address)


def run(args: argparse.Namespace) -> int:
    check_numbers(args)
    check_host(args.host)
    model = ServingModel(args.model, int8=args.int8, threads=args.threads, optimization=args.optimization)
    batcher = MicroBatcher(model, args.batch_size, args.max_wait_ms / 1000, args.request_timeout)
    try:
        server = Server((args.host, args.port), model, batcher)
    except OSError as exc:
        raise ConfigError(f"cannot listen on --host {args.host!r} --port {args.port} ({exc.strerror})") from None
    host, port = server.server_address[:2]
    warning = exposure_warning(args.host, host)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    print(f"serving {model.task} model {args.model} on http://{host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
