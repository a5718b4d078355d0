"""Plain helpers for the tests of `serve http`: the server as a subprocess (`Server`), one request's status,
headers and bytes (`exchange`), raw bytes on a socket (`raw_exchange`), and the real server in a thread of
this process around a stand-in model (`InProcessServer`). Fixtures live in conftest.py; the other shared
helpers in helpers.py.
"""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from helpers import REPO, env


class Server:
    """`python -m serve http --port 0` as a subprocess, its stderr in `log`."""

    def __init__(self, export_dir: Path | None, log: Path, *extra: str, environ: dict[str, str] | None = None) -> None:
        """`export_dir` None: no `--model` (it comes from `environ`'s SEQLSTM_MODEL)."""
        self.log_path = log
        self.log = open(log, "wb")  # noqa: SIM115 (closed by stop())
        model = ["--model", str(export_dir)] if export_dir is not None else []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "serve", "http", *model, "--port", "0", *extra],
            cwd=REPO,
            env={**env(), **(environ or {})},
            stdout=subprocess.PIPE,
            stderr=self.log,
        )
        banner: list[bytes] = []
        reader = threading.Thread(target=lambda: banner.append(self.proc.stdout.readline()))
        reader.start()
        reader.join(timeout=60)
        assert banner and b"http://" in banner[0], f"no startup line: {banner} {log.read_text()}"
        self.port = int(banner[0].decode().rsplit(":", 1)[1])

    def request(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
            conn.request(method, path, body=data, headers=headers or {})
            response = conn.getresponse()
            payload = response.read()
            assert response.getheader("Content-Type", "").startswith("application/json"), payload
            return response.status, json.loads(payload)
        finally:
            conn.close()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


def exchange(
    port: int, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection: (status, headers with lower-case names, the body's bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def raw_exchange(port: int, data: bytes) -> bytes:
    """Send raw bytes to the server and read until it closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


# ---- serve http in-process (a stand-in model behind the real server) ---------------------------


class SlowModel:
    """Stands in for ServingModel behind the batcher: each run takes `delay` seconds."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    def predict(self, items: list, batch_size: int) -> list:
        time.sleep(self.delay)
        return [{"tokens": item.tokens, "tags": ["X"] * len(item.tokens)} for item in items]


# `python -m serve http`'s defaults for the ASGI server's connection settings (serve.http.asgi.build_server).
SERVER_DEFAULTS = {
    "limit_concurrency": 512,
    "header_timeout_s": 10.0,
    "body_min_rate": 8192.0,
    "keep_alive_s": 5.0,
    "drain_timeout_s": 30.0,
}


class InProcessServer:
    """A real `serve http` server on 127.0.0.1 in a thread of this process, around `batcher`:
    kind "asgi" (FastAPI on uvicorn; `options` override SERVER_DEFAULTS) or "stdlib" (`options`: header_timeout)."""

    def __init__(self, kind: str, model: object, batcher: object, **options: object) -> None:
        self.kind = kind
        if kind == "stdlib":
            from serve.http.stdlib_server import Server as StdlibServer

            self.server = StdlibServer(("127.0.0.1", 0), model, batcher, **options)
            self.port = self.server.server_address[1]
            self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
            self.thread.start()
            return
        from serve.http.asgi import build_server
        from serve.http.cli import listen
        from serve.http.metrics import Metrics
        from serve.http.service import Service

        self.service = Service(model, batcher, Metrics(), "tagger")
        sock = listen("127.0.0.1", 0)
        self.port = sock.getsockname()[1]
        self.server = build_server(self.service, sock, **{**SERVER_DEFAULTS, **options})
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.server.started, "uvicorn did not start"

    def stop(self) -> None:
        if self.kind == "stdlib":
            self.server.shutdown()
            self.server.server_close()
        else:
            self.server.should_exit = True
            self.thread.join(timeout=30)
