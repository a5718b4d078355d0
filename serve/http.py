"""`python -m serve http`: a small JSON API on the standard library's ThreadingHTTPServer.

    POST /predict   {"texts": ["...", ...]} or {"tokens": [["...", ...], ...]} (tagger only)
                    -> {"results": [...]}, the same objects `predict` writes
    GET  /health    -> {"status": "ok", "task": ...}
    GET  /metadata  -> task, labels, input names, onnx sha256, limits

Every client mistake is a 4xx with `{"error": "..."}`: 400 malformed JSON or wrong types, 404
unknown path, 405 wrong method, 411 no Content-Length, 413 body over `MAX_BODY_BYTES`, 422 over a
limit (texts per request, characters per text, tokens per text = the model's max_tokens; the API
rejects rather than truncates, unlike `predict`). 500 is kept for bugs.

Concurrency: handler threads parse and encode their own request, then hand the items to one
`MicroBatcher` thread, which collects what arrives within `--max-wait-ms` (or until a batch is
full) and runs it through onnxruntime as one sorted-by-length pass. One thread owns the session,
so concurrent requests never race on it, and small concurrent requests share batches.
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

from serve.runtime import OPT_LEVELS, Item, ServingModel
from trainer.errors import ConfigError

MAX_BODY_BYTES = 1 << 20
MAX_TEXTS = 256
MAX_TEXT_CHARS = 10_000
DRAIN_LIMIT_BYTES = 16 << 20  # an oversized body up to this is read and dropped, so the 413 arrives cleanly
ROUTES = {"/health": "GET", "/metadata": "GET", "/predict": "POST"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, type=Path, metavar="EXPORT_DIR")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port (printed on startup)")
    parser.add_argument("--batch-size", type=int, default=64, help="most items run through the model at once")
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a batch waits for more requests")
    parser.add_argument("--int8", action="store_true", help="use model.int8.onnx")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: one per core)")
    parser.add_argument("--optimization", choices=sorted(OPT_LEVELS), default="all")


class ClientError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class Job:
    items: list[Item]
    done: threading.Event = field(default_factory=threading.Event)
    results: list[dict[str, Any]] | None = None
    error: BaseException | None = None


class MicroBatcher:
    """One worker thread runs the model on requests gathered for up to `max_wait_s`."""

    def __init__(self, model: ServingModel, batch_size: int, max_wait_s: float) -> None:
        self.model, self.batch_size, self.max_wait_s = model, batch_size, max_wait_s
        self.jobs: queue.Queue[Job] = queue.Queue()
        threading.Thread(target=self._loop, name="micro-batcher", daemon=True).start()

    def submit(self, items: list[Item]) -> list[dict[str, Any]]:
        job = Job(items)
        self.jobs.put(job)
        job.done.wait()
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
        return jobs

    def _loop(self) -> None:
        while True:
            jobs = self._gather()
            try:
                results = self.model.predict([item for job in jobs for item in job.items], self.batch_size)
            except Exception as exc:  # reported to each waiting request as a 500
                for job in jobs:
                    job.error = exc
                    job.done.set()
                continue
            start = 0
            for job in jobs:
                job.results = results[start : start + len(job.items)]
                start += len(job.items)
                job.done.set()


def parse_request(body: bytes, model: ServingModel) -> list[Item]:
    """The request body -> model items, or a ClientError saying what is wrong with it."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ClientError(400, f"body is not valid UTF-8 JSON ({type(exc).__name__}: {str(exc)[:100]})") from None
    if not isinstance(data, dict) or len(data) != 1 or not set(data) <= {"texts", "tokens"}:
        raise ClientError(400, 'expected a JSON object with exactly one key, "texts" or "tokens"')
    (key, value), = data.items()
    if not isinstance(value, list):
        raise ClientError(400, f'"{key}" must be a list')
    if len(value) > MAX_TEXTS:
        raise ClientError(422, f'"{key}" has {len(value)} entries; the limit is {MAX_TEXTS} per request')
    if key == "texts":
        return [prepare_text(i, text, model) for i, text in enumerate(value)]
    if model.task != "tagger":
        raise ClientError(422, f'"tokens" input needs a tagger model; this is a {model.task} model: send "texts"')
    return [prepare_tokens(i, tokens, model) for i, tokens in enumerate(value)]


def prepare_text(i: int, text: Any, model: ServingModel) -> Item:
    if not isinstance(text, str):
        raise ClientError(400, f"texts[{i}] must be a string; got {type(text).__name__}")
    if len(text) > MAX_TEXT_CHARS:
        raise ClientError(422, f"texts[{i}] has {len(text)} characters; the limit is {MAX_TEXT_CHARS}")
    item = model.prepare_text(text)
    if item.truncated:
        raise ClientError(422, f"texts[{i}] has more than max_tokens={model.max_tokens} tokens")
    return item


def prepare_tokens(i: int, tokens: Any, model: ServingModel) -> Item:
    if not isinstance(tokens, list) or not all(isinstance(t, str) and t for t in tokens):
        raise ClientError(400, f"tokens[{i}] must be a list of non-empty strings")
    if len(tokens) > model.max_tokens:
        raise ClientError(422, f"tokens[{i}] has {len(tokens)} tokens; the limit is max_tokens={model.max_tokens}")
    return model.prepare_tokens(tokens)


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
                raise ClientError(404, f"unknown path {path!r}; known: {', '.join(sorted(ROUTES))}")
            if method != allowed:
                raise ClientError(405, f"{path} accepts {allowed}, not {method}")
            if path == "/predict":
                items = parse_request(self.read_body(), self.server.model)
                body: dict[str, Any] = {"results": self.server.batcher.submit(items)}
            elif path == "/metadata":
                body = self.server.metadata
            else:
                body = {"status": "ok", "task": self.server.model.task}
            self.send_json(200, body)
        except ClientError as exc:
            self.send_json(exc.status, {"error": exc.message}, allow=ROUTES.get(path) if exc.status == 405 else None)
        except Exception:
            traceback.print_exc(file=sys.stderr)
            self.send_json(500, {"error": "internal server error (logged by the server)"})

    def read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise ClientError(411, "chunked bodies are not supported; send Content-Length")
        raw = self.headers.get("Content-Length")
        if raw is None:
            raise ClientError(411, "Content-Length is required")
        try:
            length = int(raw)
            if length < 0:
                raise ValueError
        except ValueError:
            raise ClientError(400, f"Content-Length must be a non-negative integer; got {raw!r}") from None
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            if length <= DRAIN_LIMIT_BYTES:
                self.drain(length)
            raise ClientError(413, f"body of {length} bytes; the limit is {MAX_BODY_BYTES}")
        try:
            body = self.rfile.read(length)
        except OSError:
            raise ClientError(408, "timed out reading the request body") from None
        if len(body) < length:
            raise ClientError(400, f"body ended after {len(body)} of {length} bytes (Content-Length)")
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
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        if allow:
            self.send_header("Allow", allow)
        self.end_headers()
        if getattr(self, "command", None) != "HEAD":
            self.wfile.write(data)

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


def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be a positive integer; got {args.batch_size}")
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be 0..65535; got {args.port}")
    model = ServingModel(args.model, int8=args.int8, threads=args.threads, optimization=args.optimization)
    batcher = MicroBatcher(model, args.batch_size, args.max_wait_ms / 1000)
    try:
        server = Server((args.host, args.port), model, batcher)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {args.host}:{args.port} ({exc.strerror})") from None
    host, port = server.server_address[:2]
    print(f"serving {model.task} model {args.model} on http://{host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
