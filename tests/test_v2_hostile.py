"""The Open Inference Protocol and the request body under hostile input, against the real `serve http`.

Every request here is one an attacker or a careless client can send: shape bombs that once froze the
event loop, lone surrogates that once made a 500, ragged rows that were once re-cut into a wrong 200,
malformed binary tensors, decompression bombs. Each gets a 4xx naming the field, fast, and the
server's log shows no traceback. The well-formed side of the same features (gzip, chunked, HEAD,
versions) is here too; the real clients are in test_v2_clients.py.
"""

from __future__ import annotations

import gzip
import json
import socket
import statistics
import struct
import threading
import time
import zlib
from collections.abc import Iterator

import pytest
from servers import Server, exchange

MODEL = "pos"


@pytest.fixture(scope="module")
def server(runs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(runs["tagger"][1], tmp_path_factory.mktemp("hostile") / "server.log", "--model-name", MODEL)
    yield srv
    assert srv.proc.poll() is None, "the server died during the tests"
    srv.stop()
    log = srv.log_path.read_text()
    assert "Traceback" not in log and '"status": 500' not in log, log


def infer(srv: Server, body: bytes, headers: dict[str, str] | None = None, path: str = "") -> tuple[int, dict]:
    status, _, reply = exchange(srv.port, "POST", path or f"/v2/models/{MODEL}/infer", body, headers)
    return status, json.loads(reply)


def tensor(name: str = "text", shape: object = (1,), data: object = ("the cat",), **extra: object) -> dict:
    """A BYTES input; tuples become lists, anything else (a bad shape, bad data) goes as it is."""
    shape = list(shape) if isinstance(shape, tuple) else shape
    data = list(data) if isinstance(data, tuple) else data
    return {"name": name, "datatype": "BYTES", "shape": shape, "data": data, **extra}


def request(*inputs: dict, **extra: object) -> bytes:
    return json.dumps({"inputs": list(inputs), **extra}).encode()


BOMBS = [
    b'{"inputs":[{"name":"tokens","datatype":"BYTES","shape":[1000000000000,0],"data":[]}]}',
    b'{"inputs":[{"name":"tokens","datatype":"BYTES","shape":[3000000,0],"data":[]}]}',
    b'{"inputs":[{"name":"tokens","datatype":"BYTES","shape":[0,1000000000000],"data":[]}]}',
    b'{"inputs":[{"name":"text","datatype":"BYTES","shape":[' + b"9" * 4000 + b'],"data":[]}]}',
]


def test_shape_bombs_are_refused_at_once_while_liveness_stays_fast(server: Server) -> None:
    """70 bytes once froze the server building 10^12 empty rows: now the shape is checked first."""
    bomb_s, live_s, stop = [], [], threading.Event()

    def probe() -> None:
        while not stop.is_set():
            began = time.perf_counter()
            assert exchange(server.port, "GET", "/health/live")[0] == 200
            live_s.append(time.perf_counter() - began)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        for _ in range(5):
            for bomb in BOMBS:
                began = time.perf_counter()
                status, body = infer(server, bomb)
                bomb_s.append(time.perf_counter() - began)
                assert status == 422 and "inputs[0].shape" in body["error"], body
    finally:
        stop.set()
        prober.join()
    # The bounds on the median; the slowest stays far below the seconds a bomb used to cost.
    assert statistics.median(bomb_s) < 0.1 and max(bomb_s) < 1.0, bomb_s
    assert statistics.median(live_s) < 0.05 and max(live_s) < 1.0, live_s


BAD_SHAPES = [
    ([True], "text", "shape must be [N] or [N, 1], non-negative integers; got [True]"),
    ([1.0], "text", "non-negative integers; got [1.0]"),
    ([-1], "text", "non-negative integers; got [-1]"),
    ([1, 2], "text", "shape must be [N] or [N, 1]; got [1, 2]"),
    ([1, 1, 1], "text", "got [1, 1, 1]"),
    ([2], "tokens", "shape must be [N, T]"),
    ("[1]", "text", "got [1]"),
    ([257], "text", "257 entries; the limit is 256"),
    ([1, 21], "tokens", "rows of 21 tokens; max_tokens=20"),
]


@pytest.mark.parametrize("case", BAD_SHAPES, ids=[f"{c[1]} {c[0]}" for c in BAD_SHAPES])
def test_bad_shapes_name_the_field(server: Server, case: tuple) -> None:
    shape, name, expected = case
    status, body = infer(server, request(tensor(name, shape, [])))
    assert status in (400, 422) and body["error"].startswith("inputs[0].shape") and expected in body["error"], body


MISMATCHES = [
    ("ragged rows", [2, 2], [["The"], ["dog", "ran", "home"]], "data[0] has 1 elements; shape [2, 2] needs rows of 2"),
    ("a short row", [2, 2], [["The", "dog"], ["ran"]], "inputs[0].data[1] has 1 elements"),
    ("too few rows", [3, 1], [["a"], ["b"]], "inputs[0].data has 2 rows; shape [3, 1] needs 3"),
    ("a row not a list", [2, 2], [["a", "b"], "c"], "inputs[0].data[1] has str; shape [2, 2] needs rows of 2"),
    ("flat, too many", [2, 2], ["a", "b", "c", "d", "e"], "inputs[0].data has 5 elements; shape [2, 2] needs 4"),
    ("flat, too few", [1, 3], ["a"], "has 1 elements; shape [1, 3] needs 3"),
    ("nested rank 1", [2], [["a"], ["b"]], "inputs[0].data must be a flat list of 2 elements for shape [2]"),
    ("not a list", [1], "the cat", "inputs[0].data must be a list; got str"),
    ("no data", [1], None, "inputs[0].data must be a list; got NoneType"),
    ("three levels", [1, 1], [[["a"]]], "inputs[0].data[0] must be a list of non-empty strings"),
    ("an empty token mid-row", [1, 3], ["a", "", "b"], "inputs[0].data[0] must be a list of non-empty strings"),
]  # fmt: skip


@pytest.mark.parametrize("case", MISMATCHES, ids=[c[0] for c in MISMATCHES])
def test_shape_and_data_must_agree_exactly(server: Server, case: tuple) -> None:
    """Ragged rows were once re-cut into other sentences and tagged with a 200."""
    _, shape, data, expected = case
    name = "text" if len(shape) == 1 else "tokens"
    status, body = infer(server, request(tensor(name, shape, data)))
    assert status == 400 and expected in body["error"], body


SURROGATES = [
    ("id", b'{"id": "\\ud800", "inputs": []}', "id is not valid Unicode: a lone surrogate U+D800"),
    ("a key", b'{"\\udc00": 1, "inputs": []}', "a key in the top-level object is not valid Unicode"),
    ("input name", b'{"inputs": [{"name": "\\ud800"}]}', "inputs[0].name is not valid Unicode"),
    ("datatype", b'{"inputs": [{"name": "text", "datatype": "\\udfff"}]}', "inputs[0].datatype is not valid"),
    ("a parameter", b'{"parameters": {"p": "\\ud800"}, "inputs": []}', "parameters.p is not valid Unicode"),
    ("an output name", b'{"inputs": [], "outputs": [{"name": "\\ud800"}]}', "outputs[0].name is not valid"),
    ("a text", b'{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["ok", "a \\ud800"]}]}',
     "inputs[0].data[1] is not valid Unicode: a lone surrogate U+D800 at character 2"),
    ("a token", b'{"inputs": [{"name": "tokens", "datatype": "BYTES", "shape": [1, 1], "data": ["\\udbff"]}]}',
     "inputs[0].data[0] is not valid Unicode: a lone surrogate U+DBFF"),
]  # fmt: skip


@pytest.mark.parametrize("case", SURROGATES, ids=[c[0] for c in SURROGATES])
def test_lone_surrogates_anywhere_are_a_400(server: Server, case: tuple) -> None:
    """A surrogate id was once echoed into the reply, which then failed to encode: a 500."""
    _, raw, expected = case
    status, body = infer(server, raw)
    assert status == 400 and expected in body["error"], body


ODD = [
    ("a numeric id", request(tensor(), id=7), 400, '"id" must be a string'),
    ("a huge integer", b'{"inputs": [], "id": ' + b"9" * 5000 + b"}", 400, "not valid"),
    ("NaN", b'{"inputs": [], "parameters": {"x": NaN}}', 400, "NaN"),
    ("Infinity", b'{"inputs": [Infinity]}', 400, "Infinity"),
    ("a duplicate key", b'{"inputs": [], "inputs": []}', 400, "duplicate key"),
    ("deep nesting", b'{"inputs": ' + b"[" * 100_000, 400, "not valid"),
    ("nested parameters", request(tensor(), parameters={"x": [[[1]]]}), 400, "parameters.x must be a string, number"),
    ("shared memory", request(tensor(parameters={"shared_memory_region": "r"})), 400, "shared memory extension"),
    ("two inputs", request(tensor(), tensor()), 400, "exactly one tensor"),
    ("an output twice", request(tensor(), outputs=[{"name": "tags"}, {"name": "tags"}]), 400, "a second time"),
    ("binary_data not a bool", request(tensor(), outputs=[{"name": "tags", "parameters": {"binary_data": 1}}]),
     400, "outputs[0].parameters.binary_data must be true or false"),
    ("not an object", b"[]", 400, "expected an inference request object; got list"),
]  # fmt: skip


@pytest.mark.parametrize("case", ODD, ids=[c[0] for c in ODD])
def test_odd_requests_get_a_4xx_with_a_reason(server: Server, case: tuple) -> None:
    _, raw, status, expected = case
    got, body = infer(server, raw)
    assert got == status and set(body) == {"error"} and expected in body["error"], body


def pack(values: list[bytes]) -> bytes:
    """BYTES elements in the binary extension's format: a 4-byte little-endian length, then the bytes."""
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


def binary_request(raw: bytes, shape: list[int], declared: int | None = None) -> tuple[bytes, dict]:
    parameters = {"binary_data_size": len(raw) if declared is None else declared}
    header = json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": shape, "parameters": parameters}]})
    return header.encode() + raw, {"Inference-Header-Content-Length": str(len(header))}


def test_malformed_binary_tensors_name_what_is_wrong(server: Server) -> None:
    body, headers = binary_request(pack([b"the cat", b"a dog"]), [2])
    assert infer(server, body, headers)[0] == 200
    json_body = request(tensor())
    cases = [
        (binary_request(pack([b"the cat"]), [2]), "holds 1 elements; its shape says 2"),
        (binary_request(pack([b"a", b"b", b"c"]), [2]), "holds more than the 2 elements its shape says"),
        (binary_request(pack([b"\xff\xfe"]), [1]), "element 0 is not valid UTF-8"),
        (binary_request(pack([b"\xed\xa0\x80"]), [1]), "element 0 is not valid UTF-8"),  # a surrogate in UTF-8
        (binary_request(pack([b"a", b"abcde"])[:-3], [2]), "element 1 says 5 bytes; only 2 remain"),
        (binary_request(pack([b"a"])[:3], [1]), "ends inside the length of element 0"),
        (binary_request(pack([b"abc"]), [1], declared=99), "binary_data_size is 99; 7 bytes follow the JSON"),
        (binary_request(pack([b"abc"]), [1], declared=-1), "binary_data_size must be a non-negative integer"),
        ((body, {"Inference-Header-Content-Length": "99999"}), "more than the body's"),
        ((body, {"Inference-Header-Content-Length": "-1"}), "must be a non-negative integer"),
        ((json_body + b"xyz", {"Inference-Header-Content-Length": str(len(json_body))}),
         "3 bytes follow the JSON, but inputs[0] has no binary_data_size"),
    ]  # fmt: skip
    for (raw, head), expected in cases:
        status, reply = infer(server, raw, head)
        assert status == 400 and expected in reply["error"], (expected, reply)


def test_gzip_and_deflate_bodies_and_the_decompressed_cap(server: Server) -> None:
    plain = request(tensor(data=["The cat sat on the mat."]))
    expected = infer(server, plain)
    assert expected[0] == 200
    assert infer(server, gzip.compress(plain), {"Content-Encoding": "gzip"}) == expected
    assert infer(server, zlib.compress(plain), {"Content-Encoding": "deflate"}) == expected
    predict = exchange(
        server.port, "POST", "/predict", gzip.compress(b'{"texts": ["a dog"]}'), {"Content-Encoding": "gzip"}
    )
    assert predict[0] == 200 and json.loads(predict[2])["results"][0]["tokens"] == ["a", "dog"]
    bomb = gzip.compress(b" " * (64 << 20))  # 64 MiB of spaces in about 64 KiB: refused after 1 MiB of output
    began = time.perf_counter()
    status, headers, reply = exchange(
        server.port, "POST", f"/v2/models/{MODEL}/infer", bomb, {"Content-Encoding": "gzip"}
    )
    assert status == 413 and "decompresses to more than 1048576 bytes" in json.loads(reply)["error"], reply
    assert headers.get("connection") == "close" and time.perf_counter() - began < 5
    for raw, encoding, expected, code in [
        (gzip.compress(plain)[:-10], "gzip", "ends inside its gzip stream", 400),
        (b"not gzip at all", "gzip", "not valid gzip data", 400),
        (gzip.compress(plain) + b"tail", "gzip", "data after the end of its gzip stream", 400),
        (plain, "br", "Content-Encoding 'br' is not supported", 415),
        (plain, "gzip, gzip", "is not supported", 415),
    ]:
        status, body = infer(server, raw, {"Content-Encoding": encoding})
        assert status == code and expected in body["error"], (encoding, body)  # fmt: skip


def chunked(port: int, path: str, pieces: list[bytes]) -> bytes:
    """POST `pieces` as the chunks of a chunked body; the raw reply."""
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head + b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n")
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    return reply


def test_chunked_bodies_are_read_under_the_same_cap(server: Server) -> None:
    body = request(tensor(data=["The cat sat on the mat."]))
    reply = chunked(server.port, f"/v2/models/{MODEL}/infer", [body[:10], body[10:30], body[30:]])
    assert reply.startswith(b"HTTP/1.1 200") and b'"tags"' in reply, reply
    reply = chunked(server.port, "/predict", [b'{"texts": ', b'["a dog"]}'])
    assert reply.startswith(b"HTTP/1.1 200") and b'"tokens":["a","dog"]' in reply, reply
    reply = chunked(server.port, "/predict", [b" " * (256 << 10)] * 6)  # 1.5 MiB in chunks: 413 past 1 MiB
    assert reply.startswith(b"HTTP/1.1 413") and b"chunked body of more than 1048576 bytes" in reply, reply[:200]


def test_head_versions_and_extensions(server: Server) -> None:
    for path in ("/v2/health/live", "/v2/health/ready", "/health/live", "/v2", f"/v2/models/{MODEL}", "/metrics"):
        status, headers, body = exchange(server.port, "HEAD", path)
        get_status, get_headers, get_body = exchange(server.port, "GET", path)
        assert status == get_status == 200 and body == b"", (path, body)
        if path != "/metrics":  # its counters move between the two requests
            assert headers["content-length"] == str(len(get_body)) == get_headers["content-length"]
    assert exchange(server.port, "HEAD", "/nope")[0] == 404
    meta = json.loads(exchange(server.port, "GET", "/v2")[2])
    assert meta["extensions"] == ["binary_tensor_data"]
    versioned = json.loads(exchange(server.port, "GET", f"/v2/models/{MODEL}/versions/1")[2])
    assert versioned == json.loads(exchange(server.port, "GET", f"/v2/models/{MODEL}")[2])
    assert versioned["versions"] == ["1"]
    assert exchange(server.port, "GET", f"/v2/models/{MODEL}/versions/1/ready")[0] == 200
    status, body = infer(server, request(tensor(), id="r-1"), path=f"/v2/models/{MODEL}/versions/1/infer")
    assert status == 200 and body["id"] == "r-1" and body["model_version"] == "1"
    for path in (f"/v2/models/{MODEL}/versions/2", f"/v2/models/{MODEL}/versions/2/ready"):
        status, _, reply = exchange(server.port, "GET", path)
        assert status == 404 and "unknown version '2' of model 'pos'; it has ['1']" in json.loads(reply)["error"]
    status, body = infer(server, request(tensor()), path=f"/v2/models/{MODEL}/versions/0/infer")
    assert status == 404 and "unknown version '0'" in body["error"]


def test_empty_tensors_get_empty_outputs(server: Server) -> None:
    for shape in ([0], [0, 1]):
        status, body = infer(server, request(tensor("text", shape, [])))
        assert status == 200 and [o["shape"] for o in body["outputs"]] == [[0, 0], [0, 0]], body
    status, body = infer(server, request(tensor("tokens", [2, 0], [])))
    assert status == 200 and [o["shape"] for o in body["outputs"]] == [[2, 0], [2, 0]], body
    raw, headers = binary_request(b"", [0])
    assert infer(server, raw, headers)[0] == 200
