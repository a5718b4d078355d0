"""The ASGI server against hostile and careless connections (serve.http.connection, serve.http.asgi): silent and slow
clients past the connection cap, header and body deadlines, and a SIGTERM drain that loses nothing,
the listen backlog and half-sent requests included."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
from servers import Server

REQUEST = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"


def predict_request(texts: list[str]) -> bytes:
    body = json.dumps({"texts": texts}).encode()
    return REQUEST % (len(body), body)


def read_reply(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def post(port: int, texts: list[str], timeout: float = 10) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/predict", body=json.dumps({"texts": texts}))
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def test_silent_connections_past_the_cap_never_lock_a_client_out(slow_server) -> None:
    srv = slow_server(0.0, limit_concurrency=20)
    silent = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(60)]
    slow = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(20)]
    try:
        for sock in slow:
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")  # headers begun, never finished
        time.sleep(0.3)
        began = time.monotonic()
        assert post(srv.port, ["the cat sat"]) == 200
        assert time.monotonic() - began < 1.0
        assert srv.server.guard.evicted >= 60  # the oldest made room, 20 places for 80 + 1 connections
        assert len(srv.server.guard.connections) <= 20
    finally:
        for sock in silent + slow:
            sock.close()


def test_slow_uploads_past_the_cap_give_way_to_a_client(slow_server) -> None:
    srv = slow_server(0.0, limit_concurrency=10)
    uploads = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(10)]
    try:
        for sock in uploads:
            sock.sendall(REQUEST % (1000, b'{"texts": ["a'))  # a body that trickles, still within its grace
        time.sleep(0.3)
        assert post(srv.port, ["the cat sat"]) == 200
        evicted = uploads[0]
        evicted.settimeout(5)
        reply = read_reply(evicted)  # the oldest upload was told why it was closed
        assert reply.startswith(b"HTTP/1.1 503") and b"connection limit reached" in reply
    finally:
        for sock in uploads:
            sock.close()


def test_a_silent_connection_is_closed_at_the_header_deadline(slow_server) -> None:
    srv = slow_server(0.0, header_timeout_s=0.5)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
        began = time.monotonic()
        assert read_reply(sock) == b""  # closed without a word: it never asked for anything
        assert 0.4 < time.monotonic() - began < 3


def test_headers_dribbled_a_byte_at_a_time_get_408(slow_server) -> None:
    srv = slow_server(0.0, header_timeout_s=0.6)
    request = predict_request(["the cat"])
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
        began = time.monotonic()
        try:
            for byte in request[:40]:  # each byte well within any per-read timeout
                sock.sendall(bytes([byte]))
                time.sleep(0.05)
        except (BrokenPipeError, ConnectionResetError):
            pass
        reply = read_reply(sock)
    assert reply.startswith(b"HTTP/1.1 408"), reply
    assert b"request headers not received within 0.6 s" in reply
    assert time.monotonic() - began < 3


def test_endless_headers_get_431_not_memory(slow_server) -> None:
    srv = slow_server(0.0)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n")
        try:
            for i in range(10_000):  # 10,000 headers of 100 bytes: 1 MB, and no end in sight
                sock.sendall(b"X-Filler-%05d: %s\r\n" % (i, b"a" * 84))
        except (BrokenPipeError, ConnectionResetError):
            pass
        reply = read_reply(sock)
    assert reply.startswith(b"HTTP/1.1 431") and b"over 65536 bytes" in reply, reply[:200]
    big = predict_request(["a" * 500] * 200)  # headers and a 100 KB body, read together: no 431
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
        sock.sendall(big)
        assert read_reply_headers(sock).startswith(b"HTTP/1.1 200")


def test_a_body_slower_than_the_minimum_rate_gets_408(slow_server) -> None:
    srv = slow_server(0.0, header_timeout_s=0.3, body_min_rate=100.0)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
        sock.sendall(REQUEST % (10_000, b'{"texts": ["'))
        began = time.monotonic()
        try:
            while time.monotonic() - began < 4:
                sock.sendall(b"a")  # 20 bytes/s: under the 100 bytes/s asked for after the 0.3 s grace
                time.sleep(0.05)
        except (BrokenPipeError, ConnectionResetError):
            pass
        reply = read_reply(sock)
    assert reply.startswith(b"HTTP/1.1 408") and b"slower than 100 bytes/s" in reply, reply
    assert post(srv.port, ["the cat"]) == 200


def test_a_body_at_the_minimum_rate_is_served(slow_server) -> None:
    srv = slow_server(0.0, header_timeout_s=0.3, body_min_rate=100.0)
    body = json.dumps({"texts": ["the cat sat"] * 20}).encode()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
        sock.sendall(REQUEST % (len(body), b""))
        for i in range(0, len(body), 30):
            sock.sendall(body[i : i + 30])  # 300 bytes/s
            time.sleep(0.1)
        assert read_reply_headers(sock).startswith(b"HTTP/1.1 200")


def read_reply_headers(sock: socket.socket) -> bytes:
    got = b""
    while b"\r\n\r\n" not in got:
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def test_stdlib_server_closes_a_dribbling_connection_at_the_header_deadline(runs) -> None:
    from servers import InProcessServer

    from serve.http.batcher import MicroBatcher
    from serve.runtime import ServingModel

    model = ServingModel(runs["tagger"][1])
    srv = InProcessServer("stdlib", model, MicroBatcher(model, 8, 0.0), header_timeout=0.5)
    try:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
            began = time.monotonic()
            try:
                for byte in b"GET /health HTTP/1.0\r\nHost: x\r\n":
                    sock.sendall(bytes([byte]))
                    time.sleep(0.05)
            except (BrokenPipeError, ConnectionResetError):
                pass
            read_reply(sock)
            assert time.monotonic() - began < 3
        assert post(srv.port, ["the cat"]) == 200
    finally:
        srv.stop()


# ---- the drain, on the real command ------------------------------------------------------------


def send_then_terminate(srv: Server, count: int, stopped: bool) -> list[bytes]:
    """`count` clients send a whole request each, SIGTERM follows; the replies (or "reset"), in order.
    `stopped`: the server is stopped (SIGSTOP) while they connect, so all of them wait in the listen
    backlog when the signal arrives; else the signal comes 0.3 s after the last request was sent."""
    request = predict_request(["The cat sat on the mat."])
    if stopped:
        srv.proc.send_signal(signal.SIGSTOP)
    socks = [socket.create_connection(("127.0.0.1", srv.port), timeout=30) for _ in range(count)]
    for sock in socks:
        sock.sendall(request)
    if stopped:
        srv.proc.send_signal(signal.SIGTERM)  # delivered, and the drain begun, as it continues
        srv.proc.send_signal(signal.SIGCONT)
    else:
        time.sleep(0.3)
        srv.proc.send_signal(signal.SIGTERM)
    replies = []
    for sock in socks:
        try:
            replies.append(read_reply(sock))
        except ConnectionResetError:
            replies.append(b"reset")
        finally:
            sock.close()
    assert srv.proc.wait(timeout=60) == 0
    srv.log.close()
    assert "Traceback" not in srv.log_path.read_text()
    return replies


def test_connections_still_in_the_accept_queue_are_served_at_the_drain(runs) -> None:
    """The drain takes what the kernel queued on the listener and the server never accepted. The event loop
    accepts as it runs, so the queue is made to hold connections here by a listener it does not watch."""
    from servers import SERVER_DEFAULTS

    from serve.http.asgi import build_server
    from serve.http.batcher import MicroBatcher
    from serve.http.cli import listen
    from serve.http.metrics import Metrics
    from serve.http.service import Service
    from serve.runtime import ServingModel

    model = ServingModel(runs["tagger"][1])
    service = Service(model, MicroBatcher(model, 8, 0.0), Metrics(), "tagger")
    watched, queued = listen("127.0.0.1", 0), listen("127.0.0.1", 0)
    server = build_server(service, queued, **SERVER_DEFAULTS)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [watched]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    socks = [socket.create_connection(queued.getsockname(), timeout=30) for _ in range(40)]
    for sock in socks:
        sock.sendall(predict_request(["The cat sat."]))
    server.should_exit = True  # what SIGTERM sets
    replies = [read_reply(sock) for sock in socks]
    thread.join(timeout=30)
    for sock in socks:
        sock.close()
    assert [r.split(b"\r\n", 1)[0] for r in replies] == [b"HTTP/1.1 200 OK"] * 40
    assert all(b"connection: close" in r.lower() for r in replies)
    assert not thread.is_alive()


@pytest.mark.trains  # server subprocesses and 120 clients
@pytest.mark.parametrize("stopped", [True, False], ids=["all-in-the-backlog", "term-0.3s-after"])
def test_sigterm_serves_every_request_in_the_listen_backlog(runs, tmp_path: Path, stopped: bool) -> None:
    """120 requests fully sent, then SIGTERM: every one is answered, none reset (the issue saw 34-52 of 120)."""
    srv = Server(runs["tagger"][1], tmp_path / "server.log", "--max-wait-ms", "5")
    replies = send_then_terminate(srv, 120, stopped)
    statuses = [r.split(b"\r\n", 1)[0] for r in replies]
    assert statuses == [b"HTTP/1.1 200 OK"] * 120, statuses
    assert all(r.endswith(b"]}]}") for r in replies)  # each reply whole: its results list closed


@pytest.mark.trains
def test_sigterm_serves_a_request_still_being_sent(runs, tmp_path: Path) -> None:
    srv = Server(runs["tagger"][1], tmp_path / "server.log")
    request = predict_request(["The cat sat."])
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
        sock.sendall(request[:20])  # the request line, part of the headers
        time.sleep(0.3)
        srv.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        sock.sendall(request[20:])
        reply = read_reply(sock)
    assert reply.startswith(b"HTTP/1.1 200") and b"connection: close" in reply.lower(), reply
    assert srv.proc.wait(timeout=30) == 0
    srv.log.close()


@pytest.mark.trains
def test_drain_grace_keeps_accepting_while_readiness_says_503(runs, tmp_path: Path) -> None:
    srv = Server(runs["tagger"][1], tmp_path / "server.log", "--drain-grace", "1.5")
    srv.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    try:
        status, body = srv.request("GET", "/health/ready")
        assert status == 503 and "draining" in body["reason"]
        assert post(srv.port, ["still served during the grace period"]) == 200
        assert srv.proc.poll() is None
        assert srv.proc.wait(timeout=30) == 0  # the grace ran out, the drain finished
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    finally:
        if srv.proc.poll() is None:
            srv.proc.kill()
        srv.log.close()


def test_connection_flags_are_range_checked(tmp_path: Path) -> None:
    """The new flags are range-checked like every numeric flag, before anything loads."""
    import subprocess
    import sys

    from helpers import REPO, env, one_line_error

    for flag, value in (("--header-timeout", "0"), ("--body-min-rate", "nan"), ("--drain-grace", "-1")):
        result = subprocess.run(
            [sys.executable, "-m", "serve", "http", "--model", str(tmp_path), flag, value],
            cwd=REPO,
            env=env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert flag in one_line_error(result), result.stderr
