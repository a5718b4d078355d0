"""The Open Inference Protocol as the standard clients speak it, against the real `serve http`.

tritonclient[http] (sync on geventhttpclient, async on aiohttp) in its default mode (binary tensors
both ways) and in JSON mode, texts and tokens, with and without `model_version="1"`; and the KServe
SDK's v2 REST client (`InferenceRESTClient`) in binary and JSON mode. Every answer is checked against
the JSON API's on the same server.

The KServe SDK pins protobuf<7, pandas<3 and psutil<6, older than the rest of the project, and its
package `__init__` starts by importing the whole model server and the Kubernetes API. So setup installs
it with `--no-deps` (launch.sh), and `kserve_rest()` loads its real, unmodified REST client modules
(`kserve.inference_client`, `kserve.protocol.infer_type`) without running that `__init__`.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton
import tritonclient.http.aio as triton_aio
from servers import Server

# Not for the fast tier: two `serve http` subprocesses (the ASGI stack takes seconds to import).
pytestmark = pytest.mark.trains

MODEL = "pos"
TEXTS = ["The cat sat on the mat.", "dog", ""]
TOKENS = [["The", "cat", "sat"], ["a", "dog", ""]]


@pytest.fixture(scope="module")
def tagger(runs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(runs["tagger"][1], tmp_path_factory.mktemp("clients") / "server.log", "--model-name", MODEL)
    yield srv
    srv.stop()
    assert "Traceback" not in srv.log_path.read_text()


def predict(srv: Server, key: str, values: list) -> list[dict]:
    status, body = srv.request("POST", "/predict", {key: values})
    assert status == 200, body
    return body["results"]


def text(values: np.ndarray) -> list[list[str]]:
    """A BYTES output as rows of str (binary outputs come back as bytes, JSON ones as str), padding dropped."""
    rows = values.reshape(len(values), -1).tolist()
    return [[v.decode() if isinstance(v, bytes) else v for v in row if v not in ("", b"")] for row in rows]


def triton_input(name: str, values: list, binary: bool) -> triton.InferInput:
    array = np.array(values, dtype=np.object_)
    tensor = triton.InferInput(name, list(array.shape), "BYTES")
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("version", ["1", ""], ids=["versioned", "unversioned"])
def test_tritonclient_sync(tagger: Server, binary: bool, version: str) -> None:
    client = triton.InferenceServerClient(url=f"127.0.0.1:{tagger.port}")
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready(MODEL, model_version=version)
        assert not client.is_model_ready(MODEL, model_version="2") and not client.is_model_ready("nope")
        meta = client.get_model_metadata(MODEL, model_version=version)
        assert meta["versions"] == ["1"] and [t["name"] for t in meta["inputs"]] == ["text", "tokens"]
        assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
        expected = predict(tagger, "texts", TEXTS)
        # No outputs named: tritonclient asks for every output in binary (`binary_data_output`).
        result = client.infer(MODEL, [triton_input("text", TEXTS, binary)], model_version=version, request_id="t-1")
        assert result.get_response()["id"] == "t-1" and result.get_response()["model_version"] == "1"
        assert text(result.as_numpy("tags")) == [r["tags"] for r in expected]
        assert text(result.as_numpy("tokens")) == [r["tokens"] for r in expected]
        outputs = [triton.InferRequestedOutput("tags", binary_data=binary)]
        result = client.infer(MODEL, [triton_input("tokens", TOKENS, binary)], model_version=version, outputs=outputs)
        (tags,) = result.get_response()["outputs"]
        assert tags["name"] == "tags" and result.as_numpy("tokens") is None
        assert ("parameters" in tags and "data" not in tags) if binary else ("data" in tags)  # the mode asked for
        assert text(result.as_numpy("tags")) == [
            r["tags"] for r in predict(tagger, "tokens", [["The", "cat", "sat"], ["a", "dog"]])
        ]
        gzipped = client.infer(
            MODEL, [triton_input("text", TEXTS, binary)], outputs=outputs, request_compression_algorithm="gzip"
        )
        assert text(gzipped.as_numpy("tags")) == [r["tags"] for r in expected]
    finally:
        client.close()


def test_tritonclient_errors_reach_the_caller(tagger: Server) -> None:
    client = triton.InferenceServerClient(url=f"127.0.0.1:{tagger.port}")
    try:
        with pytest.raises(triton.InferenceServerException, match="unknown version '7'"):
            client.infer(MODEL, [triton_input("text", TEXTS, True)], model_version="7")
        too_long = triton.InferInput("tokens", [1, 25], "BYTES")
        too_long.set_data_from_numpy(np.array([["a"] * 25], dtype=np.object_))
        with pytest.raises(triton.InferenceServerException, match="max_tokens=20"):
            client.infer(MODEL, [too_long])
    finally:
        client.close()


def test_tritonclient_async(tagger: Server) -> None:
    expected = predict(tagger, "texts", TEXTS)

    async def run() -> list:
        async with triton_aio.InferenceServerClient(url=f"127.0.0.1:{tagger.port}") as client:
            assert await client.is_server_live() and await client.is_server_ready()
            assert await client.is_model_ready(MODEL, model_version="1")
            assert (await client.get_model_metadata(MODEL))["versions"] == ["1"]
            calls = []
            for i, binary in enumerate([True, False] * 4):
                inputs = [triton.InferInput("text", [len(TEXTS)], "BYTES")]
                inputs[0].set_data_from_numpy(np.array(TEXTS, dtype=np.object_), binary_data=binary)
                outputs = [triton_aio.InferRequestedOutput("tags", binary_data=binary)]
                calls.append(client.infer(MODEL, inputs, outputs=outputs, model_version="1" if i % 2 else ""))
            return await asyncio.gather(*calls)

    results = asyncio.run(run())
    assert len(results) == 8 and all(text(r.as_numpy("tags")) == [e["tags"] for e in expected] for r in results)


def test_tritonclient_on_a_sentiment_model(runs, tmp_path: Path) -> None:
    srv = Server(runs["sentiment"][1], tmp_path / "server.log", "--model-name", "sst")
    client = triton.InferenceServerClient(url=f"127.0.0.1:{srv.port}")
    try:
        texts = ["a good film", "", "not bad at all"]
        expected = predict(srv, "texts", texts)
        for binary in (True, False):
            outputs = [triton.InferRequestedOutput(name, binary_data=binary) for name in ("label", "prob_positive")]
            result = client.infer("sst", [triton_input("text", texts, binary)], outputs=outputs)
            probs = result.as_numpy("prob_positive")
            assert probs.dtype == np.float32 and probs.shape == (3,)
            wanted = [-1.0 if r["prob_positive"] is None else r["prob_positive"] for r in expected]
            np.testing.assert_allclose(probs, wanted, rtol=1e-6)
            assert text(result.as_numpy("label")) == [[r["label"]] if r["label"] else [] for r in expected]
    finally:
        client.close()
        srv.stop()


def kserve_rest() -> types.SimpleNamespace:
    """KServe's REST client and its request types, its package `__init__` skipped (the module docstring)."""
    if "kserve" not in sys.modules:
        spec = importlib.util.find_spec("kserve")
        assert spec is not None and spec.submodule_search_locations, "kserve is not installed (./launch.sh setup)"
        package = types.ModuleType("kserve")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["kserve"] = package
    from kserve.inference_client import InferenceRESTClient, RESTConfig
    from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput

    return types.SimpleNamespace(
        Client=InferenceRESTClient, Config=RESTConfig, Input=InferInput, Request=InferRequest, Output=RequestedOutput
    )


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_kserve_rest_client(tagger: Server, binary: bool) -> None:
    kserve = kserve_rest()
    base = f"http://127.0.0.1:{tagger.port}"
    expected = predict(tagger, "texts", TEXTS)
    headers: dict[str, str] = {}

    async def run() -> tuple:
        client = kserve.Client(kserve.Config(protocol="v2", retries=0))
        try:
            live, ready = await client.is_server_live(base), await client.is_server_ready(base)
            model_ready = await client.is_model_ready(base, MODEL)
            tensor = kserve.Input("text", [len(TEXTS)], "BYTES")
            tensor.set_data_from_numpy(np.array(TEXTS, dtype=np.object_), binary_data=binary)
            outputs = [kserve.Output("tags", parameters={"binary_data": binary})]
            request = kserve.Request(MODEL, [tensor], request_id="k-1", request_outputs=outputs)
            response = await client.infer(base, request, model_name=MODEL, response_headers=headers)
            tokens = kserve.Input("tokens", [2, 3], "BYTES")
            tokens.set_data_from_numpy(np.array(TOKENS, dtype=np.object_), binary_data=binary)
            all_outputs = await client.infer(base, kserve.Request(MODEL, [tokens]), model_name=MODEL)
            return live, ready, model_ready, response, all_outputs
        finally:
            await client.close()

    live, ready, model_ready, response, all_outputs = asyncio.run(run())
    assert live and ready and model_ready
    assert response.id == "k-1" and [o.name for o in response.outputs] == ["tags"]
    assert ("inference-header-content-length" in headers) == binary  # the reply came in the mode asked for
    assert text(response.outputs[0].as_numpy()) == [r["tags"] for r in expected]
    by_name = {o.name: o.as_numpy() for o in all_outputs.outputs}
    assert text(by_name["tokens"]) == [["The", "cat", "sat"], ["a", "dog"]]
    assert text(by_name["tags"]) == [
        r["tags"] for r in predict(tagger, "tokens", [["The", "cat", "sat"], ["a", "dog"]])
    ]
