"""`python -m serve http` (the ASGI server) on 127.0.0.1 (--port 0), hit with real requests."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers import TINY_MAX_TOKENS, serve
from servers import Server, raw_exchange

from trainer.core.preprocess import tokenize


@pytest.fixture(scope="module")
def exports(runs) -> dict[str, Path]:
    return {task: export_dir for task, (_, export_dir) in runs.items()}


@pytest.fixture(scope="module")
def server(exports, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(exports["tagger"], tmp_path_factory.mktemp("log") / "server.log")
    yield srv
    assert srv.proc.poll() is None, "the server died during the tests"
    srv.stop()
    assert "Traceback" not in srv.log_path.read_text(), "the server hit an internal error"


def test_health_and_metadata(server: Server, exports) -> None:
    assert server.request("GET", "/health") == (200, {"status": "ok", "task": "tagger"})
    status, meta = server.request("GET", "/metadata")
    model_json = json.loads((exports["tagger"] / "model.json").read_text())
    assert status == 200 and meta["task"] == "tagger" and meta["labels"] == model_json["vocab"]["labels"]
    assert meta["onnx_sha256"] == model_json["onnx"]["sha256"]
    assert meta["inputs"] == ["words", "lengths", "chars", "word_lengths"]
    assert meta["limits"] == {
        "max_body_bytes": 1 << 20,
        "max_texts": 256,
        "max_text_chars": 10000,
        "max_tokens": TINY_MAX_TOKENS,
    }


def test_predict_texts_matches_the_cli(server: Server, exports) -> None:
    texts = ["The cat sat on the mat.", "", "A good movie, not bad at all!", "dog"]
    status, body = server.request("POST", "/predict", {"texts": texts})
    assert status == 200 and len(body["results"]) == len(texts)
    cli = serve(
        "predict",
        "--model",
        exports["tagger"],
        "--input",
        "-",
        "--output",
        "-",
        input="\n".join(texts).encode() + b"\n",
    )
    assert [json.loads(line) for line in cli.stdout.decode().splitlines()] == body["results"]
    assert body["results"][0]["tokens"] == tokenize(texts[0]) and body["results"][1] == {"tokens": [], "tags": []}


def test_predict_tokens(server: Server) -> None:
    status, body = server.request("POST", "/predict", {"tokens": [["The", "cat", "didn't"], []]})
    assert status == 200
    first, second = body["results"]
    assert first["tokens"] == ["The", "cat", "didn't"] and len(first["tags"]) == 3
    assert second == {"tokens": [], "tags": []}


BAD_REQUESTS = [
    ("malformed JSON", "POST", "/predict", b'{"texts": ["a"', 400, "not valid UTF-8 JSON"),
    ("not UTF-8", "POST", "/predict", b'{"texts": ["\xff"]}', 400, "not valid UTF-8 JSON"),
    ("deep nesting", "POST", "/predict", b"[" * 100_000, 400, "not valid UTF-8 JSON"),
    ("a list body", "POST", "/predict", b"[]", 400, "exactly one key"),
    ("both keys", "POST", "/predict", b'{"texts": [], "tokens": []}', 400, "exactly one key"),
    ("unknown key", "POST", "/predict", b'{"text": "a"}', 400, "exactly one key"),
    ("texts not a list", "POST", "/predict", b'{"texts": "a cat"}', 400, '"texts" must be a list'),
    ("a number text", "POST", "/predict", b'{"texts": ["a", 3]}', 400, "texts[1] must be a string"),
    ("tokens not lists", "POST", "/predict", b'{"tokens": ["a b"]}', 400, "tokens[0] must be a list"),
    ("an empty token", "POST", "/predict", b'{"tokens": [["a", ""]]}', 400, "non-empty strings"),
    ("too many texts", "POST", "/predict", json.dumps({"texts": ["a"] * 257}).encode(), 422, "limit is 256"),
    ("too long a text", "POST", "/predict", json.dumps({"texts": ["a" * 10_001]}).encode(), 422, "limit is 10000"),
    (
        "too many tokens in a text",
        "POST",
        "/predict",
        json.dumps({"texts": ["a " * 21]}).encode(),
        422,
        "more than max_tokens=20",
    ),
    ("too many tokens", "POST", "/predict", json.dumps({"tokens": [["a"] * 21]}).encode(), 422, "max_tokens=20"),
    ("too large a body", "POST", "/predict", b" " * (1_500_000), 413, "limit is 1048576"),
    ("unknown path", "GET", "/nope", None, 404, "unknown path"),
    ("GET /predict", "GET", "/predict", None, 405, "accepts POST"),
    ("POST /health", "POST", "/health", b"{}", 405, "accepts GET"),
    ("DELETE /metadata", "DELETE", "/metadata", None, 405, "accepts GET"),
]


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_requests_get_a_json_4xx(server: Server, case: tuple) -> None:
    _, method, path, raw, status, expected = case
    got_status, body = server.request(method, path, raw=raw)
    assert got_status == status and expected in body["error"], body


def test_length_problems_at_the_socket_level(server: Server) -> None:
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    reply = raw_exchange(server.port, head + b"\r\n")
    assert reply.startswith(b"HTTP/1.1 411") and b"Content-Length is required" in reply
    # A chunked body needs no Content-Length (tests/test_v2_hostile.py sends real ones): this one is empty.
    reply = raw_exchange(server.port, head + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400") and b"not valid" in reply
    # No body follows: the 413 comes at once, and the server closes the connection it cannot reuse.
    reply = raw_exchange(server.port, b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 413") and b"limit is 1048576" in reply
    for value in (b"-4", b"1_0", b"+4", b"0x10"):  # the HTTP parser refuses these before the app sees them
        reply = raw_exchange(server.port, head + b"Content-Length: " + value + b"\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 400"), (value, reply)
    # Not HTTP, or a method HTTP does not define: httptools' parser refuses either before the app runs.
    for request in (b"this is not http\r\n\r\n", b"BREW /predict HTTP/1.1\r\nHost: x\r\n\r\n"):
        reply = raw_exchange(server.port, request)
        assert reply.startswith(b"HTTP/1.1 400"), (request, reply)


def test_keep_alive_and_pipelining(server: Server) -> None:
    """HTTP/1.1: one connection carries several requests, and a pipelined second request is answered too."""
    one = json.dumps({"texts": ["the cat"]}).encode()
    request = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(one), one)
    reply = raw_exchange(
        server.port, request + request + b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert reply.count(b"HTTP/1.1 200 OK") == 3 and reply.count(b'"tags":') == 2, reply
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        sockets = []
        for _ in range(3):
            conn.request("POST", "/predict", body=one)
            response = conn.getresponse()
            assert response.status == 200 and json.loads(response.read())["results"][0]["tokens"] == ["the", "cat"]
            sockets.append(conn.sock)
        assert sockets[0] is not None and sockets == [sockets[0]] * 3  # one socket all along: the server kept it open
    finally:
        conn.close()


def test_a_burst_of_concurrent_requests_gets_no_5xx(server: Server) -> None:
    texts = ["the cat sat", "a dog", "The mat is good ."]
    expected = server.request("POST", "/predict", {"texts": texts})[1]

    def call(i: int) -> tuple[int, dict]:
        kind = i % 4
        if kind == 0:
            return server.request("POST", "/predict", {"texts": texts})
        if kind == 1:
            return server.request("POST", "/predict", raw=b'{"texts": [')
        if kind == 2:
            return server.request("POST", "/predict", {"tokens": [["a", "cat"]] * (i % 7 + 1)})
        return server.request("GET", "/predict")

    with ThreadPoolExecutor(max_workers=50) as pool:
        replies = list(pool.map(call, range(100)))
    assert all(status < 500 for status, _ in replies), replies
    for i, (status, body) in enumerate(replies):
        assert status == (200, 400, 200, 405)[i % 4], (i, status, body)
        if i % 4 == 0:
            assert body == expected
        if i % 4 == 2:
            assert len(body["results"]) == i % 7 + 1
    assert server.request("GET", "/health")[0] == 200


def test_tokens_need_a_tagger_model(exports, tmp_path: Path) -> None:
    srv = Server(exports["sentiment"], tmp_path / "server.log")
    try:
        status, body = srv.request("POST", "/predict", {"tokens": [["good"]]})
        assert status == 422 and "needs a tagger model" in body["error"]
        status, body = srv.request("POST", "/predict", {"texts": ["a good film", ""]})
        assert status == 200 and body["results"][1] == {"label": None, "prob_positive": None}
        assert body["results"][0]["label"] in ("positive", "negative")
    finally:
        srv.stop()


class EchoModel:
    """Stands in for ServingModel: records each batch, returns each item back as its result."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def predict(self, items: list, batch_size: int) -> list:
        self.calls.append(len(items))
        time.sleep(0.05)  # while this runs, the other requests queue up
        return [{"echo": item} for item in items]


def test_micro_batcher_runs_queued_requests_together_and_routes_results() -> None:
    from serve.http.batcher import MicroBatcher

    model = EchoModel()
    batcher = MicroBatcher(model, batch_size=64, max_wait_s=0.005)  # type: ignore[arg-type]
    with ThreadPoolExecutor(max_workers=8) as pool:
        replies = list(pool.map(lambda i: batcher.submit([f"{i}a", f"{i}b"]), range(8)))
    assert replies == [[{"echo": f"{i}a"}, {"echo": f"{i}b"}] for i in range(8)]
    assert sum(model.calls) == 16 and len(model.calls) < 8 and max(model.calls) > 2, model.calls
