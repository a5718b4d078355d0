"""The ASGI app on uvicorn: connection deadlines and cap, keep-alive, and the drain on SIGTERM.

Connections (serve.http.connection): the headers of each request are due within `--header-timeout`
seconds of the connection's accept or of its previous response, and its body at no less than
`--body-min-rate` bytes a second after that much grace; `--limit-concurrency` caps open
connections, and a new one takes the place of the oldest connection that holds no request the app
is working on. `--max-queue` (serve.http.batcher) caps the requests waiting for the model;
`--keep-alive` is how long an idle HTTP/1.1 connection stays open.

Drain, on SIGTERM or SIGINT: `/health/ready` turns 503 at once and every response from then on
carries `Connection: close`. With `--drain-grace S` the server goes on accepting for S seconds (the
time a load balancer takes to stop sending: Kubernetes' pre-stop pattern). Then it takes every
connection still waiting in the listen backlog, closes the listener (new connections are refused),
and serves every request that has reached it, those from the backlog and those still being sent
included; an idle keep-alive connection is closed. Whatever is still unanswered after
`--drain-timeout` seconds gets a clean 503 with `Connection: close`, never a reset. Then the process
exits 0. A second signal during the grace period starts the drain at once.

uvicorn re-raises the signal once it has shut down, for the handler it found; the handler installed
here swallows it, because a finished drain is a clean exit.
"""

from __future__ import annotations

import asyncio
import functools
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

import httptools  # noqa: F401  (imported so that a missing parser is named by `serve http`)
import uvicorn

from serve.http.app import create_app
from serve.http.connection import Guard, GuardedProtocol
from serve.http.metrics import DRAIN_TIMEOUT
from serve.http.service import Service


class DrainingServer(uvicorn.Server):
    """uvicorn's server with the drain described above."""

    def __init__(
        self, config: uvicorn.Config, service: Service, guard: Guard, listener: socket.socket, drain_grace_s: float
    ) -> None:
        super().__init__(config)
        self.service, self.guard, self.listener = service, guard, listener
        self.drain_grace_s = drain_grace_s
        self.drain_at: float | None = None  # when the grace period ends
        self.on_started: Callable[[], None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self.on_started is not None:
            self.on_started()  # the banner: from here on a signal is this server's to handle

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.service.draining = self.guard.draining = True
        if self.drain_grace_s > 0 and self.drain_at is None:
            self.drain_at = time.monotonic() + self.drain_grace_s
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self.drain_at is not None and time.monotonic() >= self.drain_at:
            self.should_exit = True
        return await super().on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.service.draining = self.guard.draining = True
        # Take the backlog and close the listener in one step, with no await between: a connection the
        # kernel completes after this is refused, not reset.
        backlog = accept_backlog(self.listener)
        for server in self.servers:
            server.close()
        self.listener.close()
        loop = asyncio.get_running_loop()
        protocol = functools.partial(
            self.config.http_protocol_class,
            config=self.config,
            server_state=self.server_state,
            app_state=self.lifespan.state,
            _loop=loop,
        )
        for conn in backlog:
            await loop.connect_accepted_socket(protocol, conn)
        for connection in list(self.server_state.connections):
            connection.shutdown()
        try:
            await asyncio.wait_for(self._wait_tasks_to_complete(), timeout=self.config.timeout_graceful_shutdown)
        except asyncio.TimeoutError:
            await self.refuse_the_rest()
        await self.lifespan.shutdown()

    async def refuse_the_rest(self) -> None:
        """--drain-timeout has passed: a request the app holds is cancelled, and answered 503 by
        serve.http.metrics.AccessLog; one still arriving gets its 503 here. Then every connection closes."""
        tasks, connections = list(self.server_state.tasks), list(self.server_state.connections)
        print(
            f"drain: --drain-timeout {self.config.timeout_graceful_shutdown:g} s passed; "
            f"{len(tasks)} requests in the app and {len(connections)} connections answered 503",
            file=sys.stderr,
            flush=True,
        )
        for task in tasks:
            task.cancel(msg="drain timeout")
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
        for connection in list(self.server_state.connections):
            connection.close(DRAIN_TIMEOUT)


def accept_backlog(listener: socket.socket) -> list[socket.socket]:
    """Every connection the kernel has completed on `listener` and the server has not yet accepted."""
    listener.setblocking(False)
    taken = []
    while True:
        try:
            conn, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            return taken
        except OSError:  # e.g. out of file descriptors: what is left is refused with the listener
            return taken
        conn.setblocking(False)
        taken.append(conn)


def ignore_signal(signum: int, frame: Any) -> None:
    """Receives the signal uvicorn re-raises after its drain: the drain was the answer to it."""


def build_server(
    service: Service,
    listener: socket.socket,
    *,
    limit_concurrency: int,
    header_timeout_s: float,
    body_min_rate: float,
    keep_alive_s: float,
    drain_timeout_s: float,
    drain_grace_s: float = 0.0,
) -> DrainingServer:
    """The server as `serve http` runs it (the tests' in-process servers use it too)."""
    guard = Guard(header_timeout=header_timeout_s, body_min_rate=body_min_rate, limit=limit_concurrency)
    config = uvicorn.Config(
        create_app(service),
        http=functools.partial(GuardedProtocol, guard=guard),  # httptools' C parser, with deadlines (above)
        loop="auto",  # uvloop, which the server extra installs except on Windows
        access_log=False,
        log_level="warning",
        lifespan="off",
        server_header=False,
        limit_concurrency=None,  # the cap is Guard's, which makes room instead of refusing
        timeout_keep_alive=keep_alive_s,
        timeout_graceful_shutdown=drain_timeout_s,
    )
    return DrainingServer(config, service, guard, listener, drain_grace_s)


def serve(service: Service, listener: socket.socket, on_started: Callable[[], None], **options: Any) -> None:
    """Run until a signal's drain has finished; `on_started` runs once the server takes signals (and
    requests); `options` are `build_server`'s."""
    server = build_server(service, listener, **options)
    server.on_started = on_started
    previous = {sig: signal.signal(sig, ignore_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run(sockets=[listener])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
