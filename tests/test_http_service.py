"""The ASGI service beyond the JSON API: the Open Inference Protocol (KServe v2), Prometheus metrics,
liveness and readiness, OpenAPI, JSON access logs, configuration by environment, the stdlib fallback."""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import REPO, env, one_line_error, serve
from servers import Server

from trainer.core.preprocess import tokenize

# Not for the fast tier: each test starts `serve http` subprocesses (the ASGI stack takes seconds to import).
pytestmark = pytest.mark.trains


@pytest.fixture(scope="module")
def tagger(runs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(runs["tagger"][1], tmp_path_factory.mktemp("service") / "server.log", "--model-name", "pos")
    yield srv
    srv.stop()
    assert "Traceback" not in srv.log_path.read_text()


def infer(srv: Server, body: object, name: str = "pos") -> tuple[int, dict]:
    return srv.request("POST", f"/v2/models/{name}/infer", raw=json.dumps(body).encode())


def test_v2_health_and_metadata(tagger: Server) -> None:
    assert tagger.request("GET", "/v2/health/live") == (200, {"live": True})
    assert tagger.request("GET", "/v2/health/ready") == (200, {"ready": True})
    assert tagger.request("GET", "/v2/models/pos/ready") == (200, {"name": "pos", "ready": True})
    status, meta = tagger.request("GET", "/v2/models/pos")
    assert status == 200 and meta["name"] == "pos" and meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [
        {"name": "text", "datatype": "BYTES", "shape": [-1]},
        {"name": "tokens", "datatype": "BYTES", "shape": [-1, -1]},
    ]
    assert [(o["name"], o["datatype"], o["shape"]) for o in meta["outputs"]] == [
        ("tokens", "BYTES", [-1, -1]),
        ("tags", "BYTES", [-1, -1]),
    ]
    status, body = tagger.request("GET", "/v2/models/nope")
    assert status == 404 and body == {"error": "unknown model 'nope'; this server has 'pos'"}


def test_v2_infer_texts_and_tokens_match_the_json_api(tagger: Server) -> None:
    texts = ["The cat sat on the mat.", "dog", ""]
    _, expected = tagger.request("POST", "/predict", {"texts": texts})
    status, body = infer(
        tagger, {"id": "r-1", "inputs": [{"name": "text", "datatype": "BYTES", "shape": [3], "data": texts}]}
    )
    assert status == 200 and body["model_name"] == "pos" and body["id"] == "r-1"
    width = len(tokenize(texts[0]))
    by_name = {o["name"]: o for o in body["outputs"]}
    assert by_name["tags"]["shape"] == [3, width] and by_name["tags"]["datatype"] == "BYTES"
    rows = [by_name["tags"]["data"][i * width : (i + 1) * width] for i in range(3)]
    assert [[t for t in row if t] for row in rows] == [r["tags"] for r in expected["results"]]
    assert by_name["tokens"]["data"][:width] == tokenize(texts[0]) and rows[2] == [""] * width
    # Tokens: a [2, 3] tensor, the second sentence padded with "", nested rows, one output asked for.
    status, body = infer(
        tagger,
        {
            "inputs": [
                {
                    "name": "tokens",
                    "datatype": "BYTES",
                    "shape": [2, 3],
                    "data": [["The", "cat", "sat"], ["a", "dog", ""]],
                }
            ],
            "outputs": [{"name": "tags"}],
        },
    )
    _, tokens_expected = tagger.request("POST", "/predict", {"tokens": [["The", "cat", "sat"], ["a", "dog"]]})
    assert status == 200 and [o["name"] for o in body["outputs"]] == ["tags"] and "id" not in body
    tags = body["outputs"][0]["data"]
    assert tags[:3] == tokens_expected["results"][0]["tags"] and tags[3:5] == tokens_expected["results"][1]["tags"]
    assert tags[5] == ""


BAD_V2 = [
    ("no inputs", {"id": "x"}, 400, "exactly one tensor"),
    (
        "unknown input",
        {"inputs": [{"name": "words", "datatype": "BYTES", "shape": [1], "data": ["a"]}]},
        400,
        "inputs[0].name must be one of ['text', 'tokens']",
    ),
    (
        "not BYTES",
        {"inputs": [{"name": "text", "datatype": "FP32", "shape": [1], "data": [1.0]}]},
        400,
        'datatype must be "BYTES"',
    ),
    (
        "shape vs data",
        {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [3], "data": ["a"]}]},
        400,
        "has 1 elements; shape [3] needs 3",
    ),
    (
        "a number text",
        {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [3]}]},
        400,
        "inputs[0].data[0] must be a string",
    ),
    (
        "too many texts",
        {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [257], "data": ["a"] * 257}]},
        422,
        "limit is 256",
    ),
    (
        "too many tokens",
        {"inputs": [{"name": "tokens", "datatype": "BYTES", "shape": [1, 21], "data": ["a"] * 21}]},
        422,
        "max_tokens=20",
    ),
    (
        "unknown output",
        {
            "inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["a"]}],
            "outputs": [{"name": "logits"}],
        },
        400,
        '"outputs" must be a list',
    ),
]


@pytest.mark.parametrize("case", BAD_V2, ids=[c[0] for c in BAD_V2])
def test_v2_bad_requests_get_a_v2_error_body(tagger: Server, case: tuple) -> None:
    _, body, status, expected = case
    got, reply = infer(tagger, body)
    assert got == status and set(reply) == {"error"} and expected in reply["error"], reply


def test_v2_sentiment(runs, tmp_path: Path) -> None:
    srv = Server(runs["sentiment"][1], tmp_path / "server.log")
    try:
        name = runs["sentiment"][1].name  # the default model name: the export's folder
        _, expected = srv.request("POST", "/predict", {"texts": ["a good film", ""]})
        status, body = infer(
            srv,
            {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2, 1], "data": [["a good film"], [""]]}]},
            name,
        )
        assert status == 200, body
        outputs = {o["name"]: o for o in body["outputs"]}
        assert outputs["label"] == {
            "name": "label",
            "datatype": "BYTES",
            "shape": [2],
            "data": [expected["results"][0]["label"], ""],
        }
        assert outputs["prob_positive"]["datatype"] == "FP32"
        assert outputs["prob_positive"]["data"] == [expected["results"][0]["prob_positive"], -1.0]
        status, body = infer(
            srv, {"inputs": [{"name": "tokens", "datatype": "BYTES", "shape": [1, 1], "data": ["good"]}]}, name
        )
        assert status == 400 and "inputs[0].name must be one of ['text']" in body["error"]
    finally:
        srv.stop()


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(r"(\w+)(?:\{(.*)\})? (\S+)", line)
        if match and match[1] == name and ",".join(sorted((match[2] or "").split(","))) == (wanted or ""):
            return float(match[3])
    raise AssertionError(f"no sample {name}{{{wanted}}} in:\n{text}")


def test_metrics_count_requests_latency_and_batches(runs, tmp_path: Path) -> None:
    srv = Server(runs["tagger"][1], tmp_path / "server.log")
    try:
        for _ in range(3):
            assert srv.request("POST", "/predict", {"texts": ["the cat", "a dog sat"]})[0] == 200
        assert srv.request("POST", "/predict", raw=b"{")[0] == 400
        assert srv.request("GET", "/no/such/path")[0] == 404
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        text = response.read().decode()
        assert response.status == 200 and response.getheader("Content-Type").startswith("text/plain")
    finally:
        srv.stop()
    assert metric(text, "seqlstm_http_requests_total", method="POST", route="/predict", status="200") == 3
    assert metric(text, "seqlstm_http_requests_total", method="POST", route="/predict", status="400") == 1
    assert metric(text, "seqlstm_http_requests_total", method="GET", route="other", status="404") == 1
    assert metric(text, "seqlstm_http_request_duration_seconds_count", route="/predict") == 4
    assert metric(text, "seqlstm_http_request_duration_seconds_bucket", route="/predict", le="+Inf") == 4
    # Three sequential requests of two texts: three model runs of two items each.
    assert metric(text, "seqlstm_batch_size_count") == 3 and metric(text, "seqlstm_batch_size_sum") == 6
    assert metric(text, "seqlstm_batch_size_bucket", le="1.0") == 0
    assert metric(text, "seqlstm_batch_size_bucket", le="2.0") == 3
    assert metric(text, "seqlstm_queue_depth") == 0
    # The access log: one JSON object a line, for every request above.
    lines = [json.loads(line) for line in srv.log_path.read_text().splitlines() if line.startswith("{")]
    assert [(x["method"], x["path"], x["status"]) for x in lines] == [
        *[("POST", "/predict", 200)] * 3,
        ("POST", "/predict", 400),
        ("GET", "/no/such/path", 404),
        ("GET", "/metrics", 200),
    ]
    assert all(isinstance(x["latency_ms"], float) and 0 < x["latency_ms"] < 30_000 for x in lines)


def test_health_live_ready_and_openapi(tagger: Server) -> None:
    assert tagger.request("GET", "/health/live") == (200, {"status": "alive"})
    assert tagger.request("GET", "/health/ready") == (200, {"status": "ready"})
    status, schema = tagger.request("GET", "/openapi.json")
    assert status == 200 and {"/predict", "/v2/models/{name}/infer", "/health/ready"} <= set(schema["paths"])
    body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert [s["title"] for s in body["oneOf"]] == ["PredictTexts", "PredictTokens"]
    assert {"PredictResponse", "ErrorBody", "InferResponse"} <= set(schema["components"]["schemas"])


def test_configuration_from_the_environment_and_flags_win(runs, tmp_path: Path) -> None:
    # HOST is ignored (shells set it to the machine's name); SEQLSTM_HOST is read.
    environ = {
        "SEQLSTM_MODEL": str(runs["tagger"][1]),
        "SEQLSTM_MODEL_NAME": "from-env",
        "HOST": "0.0.0.0",
        "SEQLSTM_HOST": "127.0.0.1",
    }
    srv = Server(None, tmp_path / "server.log", environ=environ)
    try:
        assert srv.request("GET", "/v2/models/from-env")[0] == 200
    finally:
        srv.stop()
    assert "reachable from other machines" not in srv.log_path.read_text()
    bad = subprocess.run(
        [sys.executable, "-m", "serve", "http", "--model", str(runs["tagger"][1])],
        cwd=REPO,
        env={**env(), "PORT": "70000"},
        capture_output=True,
        timeout=60,
    )
    assert "--port must be an integer from 0 to 65535; got 70000" in one_line_error(bad)
    flag_wins = subprocess.run(
        [sys.executable, "-m", "serve", "http", "--model", str(runs["tagger"][1]), "--port", "99999"],
        cwd=REPO,
        env={**env(), "PORT": "0"},
        capture_output=True,
        timeout=60,
    )
    assert "got 99999" in one_line_error(flag_wins)


def test_without_the_server_extra_one_line_says_how_to_install_it(runs) -> None:
    code = "import sys; sys.modules['fastapi'] = None; from serve.__main__ import main; sys.exit(main(sys.argv[1:]))"
    result = subprocess.run(
        [sys.executable, "-c", code, "http", "--model", str(runs["tagger"][1]), "--port", "0"],
        cwd=REPO,
        env=env(),
        capture_output=True,
        timeout=60,
    )
    assert one_line_error(result) == (
        "error: the ASGI server needs fastapi: pip install 'seqlstm[server]' (or --server stdlib)"
    )


def test_the_stdlib_fallback_serves_the_same_json_api(runs, tmp_path: Path) -> None:
    texts = ["The cat sat on the mat.", "", "dog"]
    srv = Server(runs["tagger"][1], tmp_path / "stdlib.log", "--server", "stdlib")
    try:
        _, old = srv.request("POST", "/predict", {"texts": texts})
        assert srv.request("GET", "/v2/health/live")[0] == 404  # the JSON API only
        nan = "texts[0]: NaN is not valid JSON (RFC 8259 has no NaN or Infinity)"
        assert srv.request("POST", "/predict", raw=b'{"texts": [NaN]}') == (
            400,
            {"error": f"body is not valid UTF-8 JSON ({nan})"},
        )
    finally:
        srv.stop()
    cli = serve(
        "predict",
        "--model",
        runs["tagger"][1],
        "--input",
        "-",
        "--output",
        "-",
        input="\n".join(texts).encode() + b"\n",
    )
    assert old["results"] == [json.loads(line) for line in cli.stdout.decode().splitlines()]
