"""Prometheus metrics and JSON access logs for the ASGI server, in one pure-ASGI middleware.

Each app has its own registry (two apps in one process, as in the tests, never share counters).
Requests are labelled by route template (`/v2/models/{name}/infer`, not the model name a client
typed), and every path no route knows is `other`, so a scan of random URLs cannot grow the label set.
uvicorn answers past `--limit-concurrency` before the app runs: those 503s are in uvicorn's log only.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from serve.http.api import encode_json

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST
DRAIN_TIMEOUT = "the server is shutting down and --drain-timeout has passed; retry"
CANCELLED_BODY = encode_json({"error": DRAIN_TIMEOUT})  # the bytes of every other error reply


class Metrics:
    """Requests by route and status, their latency, batch sizes, and the batcher's queue depth."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "seqlstm_http_requests",
            "HTTP requests answered, by method, route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "seqlstm_http_request_duration_seconds",
            "Time from request to full reply",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "seqlstm_batch_size",
            "Items per model run of the micro-batcher",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge("seqlstm_queue_depth", "Requests waiting for or in the model", registry=self.registry)

    def watch_queue(self, depth: Callable[[], float]) -> None:
        self.queue_depth.set_function(depth)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class AccessLog:
    """ASGI middleware: one JSON line per request on `stream`, and the request metrics."""

    def __init__(self, app: Any, metrics: Metrics, stream: TextIO | None = None) -> None:
        self.app, self.metrics, self.stream = app, metrics, stream

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets when the app fails before it starts a reply
        started_reply = False

        async def send_and_note(message: dict[str, Any]) -> None:
            nonlocal status, started_reply
            if message["type"] == "http.response.start":
                status, started_reply = message["status"], True
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except asyncio.CancelledError:
            # uvicorn cancels what still runs when --drain-timeout passes: say so rather than a traceback and 500.
            if started_reply:
                raise
            status = 503
            await send(
                {
                    "type": "http.response.start",
                    "status": 503,
                    "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
                }
            )
            await send({"type": "http.response.body", "body": CANCELLED_BODY})
        finally:
            seconds = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", "other")
            self.metrics.requests.labels(scope["method"], route, str(status)).inc()
            self.metrics.latency.labels(route).observe(seconds)
            line = json.dumps(
                {
                    "time": round(time.time(), 3),
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "latency_ms": round(seconds * 1000, 3),
                    "client": (scope.get("client") or ("",))[0],
                }
            )
            print(line, file=self.stream or sys.stderr)
