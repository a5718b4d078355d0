"""`python -m serve http` at its edges: flag ranges, a stopped batcher, timeouts, odd bodies, hang-ups.

Faults the server cannot be made to hit from outside (a batching thread that dies, a model that
stalls) are injected in-process: a real server of each kind (ASGI and the stdlib fallback) on
127.0.0.1 with a stand-in model behind its `MicroBatcher`.
"""

from __future__ import annotations

import http.client
import json
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import one_line_error, serve
from servers import InProcessServer, Server

HTTP_FLAGS = [
    (("--max-wait-ms", "inf"), "--max-wait-ms must be a finite number from 0 to 10000; got inf"),
    (("--max-wait-ms", "nan"), "--max-wait-ms must be a finite number from 0 to 10000; got nan"),
    (("--max-wait-ms", "1e12"), "--max-wait-ms must be a finite number from 0 to 10000"),
    (("--max-wait-ms", "-1"), "--max-wait-ms must be a finite number from 0"),
    (("--request-timeout", "0"), "--request-timeout must be a finite number from 0.01 to 3600; got 0.0"),
    (("--request-timeout", "nan"), "--request-timeout must be a finite number"),
    (("--port", "70000"), "--port must be an integer from 0 to 65535; got 70000"),
    (("--port", "-1"), "--port must be an integer from 0 to 65535"),
    (("--batch-size", "0"), "--batch-size must be an integer from 1 to 65536"),
    (("--threads", "-1"), "--threads must be an integer from 0 to 1024"),
    (("--host", "no-such-host.invalid"), "cannot listen on --host 'no-such-host.invalid'"),
    (("--host", "é" * 70), "is not a valid host name"),
]


@pytest.mark.parametrize("flags", HTTP_FLAGS, ids=[" ".join(f[0])[:30] for f in HTTP_FLAGS])
def test_http_flags_are_checked_before_serving(runs, flags: tuple) -> None:
    """`--max-wait-ms inf` used to kill the batching thread while /health kept saying 200."""
    args, expected = flags
    assert expected in one_line_error(serve("http", "--model", runs["tagger"][1], *args, timeout=60))


def test_binding_beyond_loopback_warns_once(runs, tmp_path: Path) -> None:
    export_dir = runs["tagger"][1]
    for host in ("", "0.0.0.0"):
        srv = Server(export_dir, tmp_path / "all.log", "--host", host)
        try:
            assert srv.request("GET", "/health")[0] == 200
        finally:
            srv.stop()
        log = srv.log_path.read_text().splitlines()
        warnings = [line for line in log if line.startswith("warning:")]
        assert warnings == [
            f"warning: --host {host!r} listens on every network interface, reachable from other "
            "machines, and the API has no authentication (--host 127.0.0.1 keeps it local)"
        ], log
    srv = Server(export_dir, tmp_path / "local.log")
    srv.stop()
    assert "warning" not in srv.log_path.read_text()


class Boom(BaseException):
    """Not an Exception: what kills a thread that only guards against Exception."""


class FakeModel:
    """Stands in for ServingModel behind the batcher: echoes, stalls or raises as told."""

    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.delay, self.fail = delay, fail

    def predict(self, items: list, batch_size: int) -> list:
        if self.fail:
            raise Boom("injected by the test")
        time.sleep(self.delay)
        return [{"tokens": item.tokens, "tags": []} for item in items]


@pytest.fixture(params=["asgi", "stdlib"])
def in_process(request: pytest.FixtureRequest, runs, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """start(fake_model, timeout_s) -> (port, batcher): a real server (each kind) whose batcher runs `fake_model`."""
    from serve.http.batcher import MicroBatcher
    from serve.runtime import ServingModel

    monkeypatch.setattr(threading, "excepthook", lambda args: None)  # the injected thread death is expected
    model = ServingModel(runs["tagger"][1])
    servers: list[InProcessServer] = []

    def start(fake: FakeModel, timeout_s: float = 30.0) -> tuple[int, MicroBatcher]:
        batcher = MicroBatcher(fake, batch_size=8, max_wait_s=0.001, timeout_s=timeout_s)  # type: ignore[arg-type]
        servers.append(InProcessServer(request.param, model, batcher))
        return servers[-1].port, batcher

    yield start
    for server in servers:
        server.stop()


def call(port: int, method: str, path: str, body: object = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=json.dumps(body) if body is not None else None)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_health_is_503_once_the_batcher_has_stopped(in_process) -> None:
    port, batcher = in_process(FakeModel(fail=True))
    assert call(port, "GET", "/health")[0] == 200
    status, body = call(port, "POST", "/predict", {"texts": ["the cat"]})  # this request kills the worker
    assert status == 503 and "the batching thread has stopped (Boom: injected by the test)" in body["error"]
    status, body = call(port, "GET", "/health")
    assert status == 503 and body["status"] == "unavailable" and "Boom" in body["reason"]
    started = time.monotonic()
    status, body = call(port, "POST", "/predict", {"texts": ["a dog"]})
    assert status == 503 and time.monotonic() - started < 2 and not batcher.thread.is_alive()


def test_a_request_past_its_timeout_gets_503(in_process) -> None:
    port, _ = in_process(FakeModel(delay=1.0), timeout_s=0.2)
    started = time.monotonic()
    status, body = call(port, "POST", "/predict", {"texts": ["the cat"]})
    assert status == 503 and "no result within --request-timeout 0.2 s" in body["error"], body
    assert time.monotonic() - started < 0.9
    assert call(port, "GET", "/health")[0] == 200  # slow is not dead


@pytest.fixture(scope="module")
def server(runs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(runs["tagger"][1], tmp_path_factory.mktemp("edges") / "server.log")
    yield srv
    srv.stop()


ODD_BODIES = [
    (
        "a lone surrogate in texts",
        b'{"texts": ["ok", "a \\ud800 b"]}',
        "texts[1] is not valid Unicode: a lone surrogate U+D800 at character 2",
    ),
    (
        "a lone low surrogate in tokens",
        b'{"tokens": [["a", "\\udfff"]]}',
        "tokens[0][1] is not valid Unicode: a lone surrogate U+DFFF",
    ),
    ("a NaN literal", b'{"texts": [NaN]}', "NaN is not valid JSON"),
    ("an Infinity literal", b'{"texts": -Infinity}', "-Infinity is not valid JSON"),
    ("a duplicate key", b'{"texts": ["a"], "texts": ["b"]}', "duplicate key 'texts'"),
    ("a huge integer", b'{"texts": [' + b"9" * 5000 + b"]}", "texts[0]: an integer of 5000 digits; the limit is 4300"),
    ("a huge float", b'{"texts": [1e999]}', "texts[0]: the number 1e999 is beyond a double's range"),
]


@pytest.mark.parametrize("case", ODD_BODIES, ids=[c[0] for c in ODD_BODIES])
def test_odd_json_bodies_get_a_400_naming_the_problem(server: Server, case: tuple) -> None:
    _, raw, expected = case
    status, body = server.request("POST", "/predict", raw=raw)
    assert status == 400 and expected in body["error"], body


def hang_up(port: int, data: bytes, wait: float = 0.0) -> None:
    """Send `data`, then reset the connection (RST, not FIN) before any reply can be read."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.sendall(data)
    time.sleep(wait)
    sock.close()


def test_clients_that_hang_up_are_one_quiet_line_each(server: Server) -> None:
    body = json.dumps({"texts": ["the cat sat on the mat"] * 200}).encode()
    request = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
    before = server.log_path.read_text().count("\n")
    hang_up(server.port, request + body[:10], wait=0.2)  # mid-body: the server's read fails, then its reply
    hang_up(server.port, request + body)  # before the reply is written
    hang_up(server.port, b"GET /health HTTP/1.1\r\n")  # mid-headers
    time.sleep(1.0)
    assert server.request("GET", "/health")[0] == 200
    log = server.log_path.read_text()
    assert "Traceback" not in log and '" 500 ' not in log, log
    lost = [line for line in log.splitlines()[before:] if "went away" in line or "connection lost" in line]
    assert len(lost) <= 3, log


def test_the_predict_hot_path_replies_to_errors_as_fastapi_does(capsys: pytest.CaptureFixture) -> None:
    """`POST /predict` skips FastAPI (serve.http.app.HotPath): its errors still get the same JSON replies and
    route label, and every other request still reaches FastAPI."""
    import asyncio

    from fastapi.routing import APIRoute

    from serve.http.api import ApiError
    from serve.http.app import HotPath, error_replies

    async def endpoint(request) -> None:
        body = await request.body()
        raise ApiError(422, "too long") if body == b"api" else RuntimeError("a bug")

    fallback_paths: list[str] = []

    async def fallback(scope, receive, send) -> None:
        fallback_paths.append(f"{scope['method']} {scope['path']}")
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    route = APIRoute("/predict", endpoint, methods=["POST"])
    app = HotPath(fallback, route, endpoint, error_replies(["/predict"]))

    def call(method: str, path: str, body: bytes) -> tuple[dict, int, bytes]:
        scope = {"type": "http", "method": method, "path": path, "headers": [], "query_string": b""}
        sent: list[dict] = []

        async def receive() -> dict:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict) -> None:
            sent.append(message)

        asyncio.run(app(scope, receive, send))
        return scope, sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])

    scope, status, body = call("POST", "/predict", b"api")
    assert (status, json.loads(body)) == (422, {"error": "too long"}) and scope["route"] is route
    _, status, body = call("POST", "/predict", b"bug")
    assert (status, json.loads(body)) == (500, {"error": "internal server error (logged by the server)"})
    assert "RuntimeError: a bug" in capsys.readouterr().err
    assert call("GET", "/predict", b"")[1] == 204 and call("POST", "/health", b"")[1] == 204
    assert fallback_paths == ["GET /predict", "POST /health"]
