"""The ASGI app on uvicorn: limits, keep-alive, and the drain on SIGTERM.

Drain (uvicorn's graceful shutdown): on SIGTERM or SIGINT the listening socket closes (new
connections are refused), idle keep-alive connections close, and every request already received
runs to its reply (sent with `Connection: close`); then the process exits 0. `/health/ready` turns
503 the moment the signal arrives. Requests still running after `--drain-timeout` seconds are
cancelled (uvicorn logs how many). uvicorn re-raises the signal once it has shut down, for the
handler it found; the handler installed here swallows it, because a finished drain is a clean exit.

Limits: `--limit-concurrency` is uvicorn's: past that many open connections or running requests, a
request gets 503 before the app sees it. `--max-queue` (serve.batcher) caps the requests waiting
for the model. `--keep-alive` is how long an idle HTTP/1.1 connection stays open.
"""

from __future__ import annotations

import signal
import socket
from typing import Any

import httptools  # noqa: F401  (imported so that a missing parser is named by `serve http`)
import uvicorn

from serve.app import Service, create_app


class DrainingServer(uvicorn.Server):
    """uvicorn's server, telling the service that a drain has begun (so readiness says so)."""

    def __init__(self, config: uvicorn.Config, service: Service) -> None:
        super().__init__(config)
        self.service = service

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.service.draining = True
        super().handle_exit(sig, frame)


def ignore_signal(signum: int, frame: Any) -> None:
    """Receives the signal uvicorn re-raises after its drain: the drain was the answer to it."""


def server_config(app: Any, **options: Any) -> uvicorn.Config:
    """uvicorn's configuration as `serve http` runs it (the tests' in-process servers use it too)."""
    return uvicorn.Config(
        app,
        http="httptools",  # C parser: h11 (pure Python) cost 18% of the event loop's time (BENCHMARKS section 7)
        loop="auto",  # uvloop, which the server extra installs except on Windows
        access_log=False,
        log_level="warning",
        lifespan="off",
        server_header=False,
        **options,
    )


def serve(
    service: Service, sock: socket.socket, *, limit_concurrency: int, keep_alive_s: float, drain_timeout_s: float
) -> None:
    config = server_config(
        create_app(service),
        limit_concurrency=limit_concurrency,
        timeout_keep_alive=keep_alive_s,
        timeout_graceful_shutdown=drain_timeout_s,
    )
    server = DrainingServer(config, service)
    previous = {sig: signal.signal(sig, ignore_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
