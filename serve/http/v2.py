"""The Open Inference Protocol (KServe v2 REST) beside the JSON API, so KServe, Triton and MLServer
clients work unchanged, in their default modes (tritonclient and the KServe SDK send binary tensors).

    GET  /v2                             server metadata; `extensions`: ["binary_tensor_data"]
    GET  /v2/health/live|ready           200 {"live"|"ready": true}; not ready: 400 {"ready": false} (spec: 4xx)
    GET  /v2/models/NAME[/versions/1]    model metadata (its input and output tensors, `versions`: ["1"])
    GET  .../ready, POST .../infer       readiness, inference: one BYTES input, the outputs below

The export is the model's only version, named "1" (an export holds one model; a new model is a new
export and server), so `versions` is ["1"], the reply's `model_version` is "1", and any other version
is a 404, as an unknown model name is. Every GET path also answers HEAD (serve.http.app).

Inputs (one per request): `text`, BYTES, shape [N] (or [N, 1]): one raw text per element; for the
tagger also `tokens`, BYTES, shape [N, T]: N sentences of up to T tokens, each row padded at its end
with "" (a token is never empty, so the padding is unambiguous). `data` is flat (row-major, as the
spec says) or nested row by row, or the tensor is binary (serve.http.v2_binary); the checks, in the order
that bounds a request's cost by its size, are serve.http.v2_request's; the limits and 4xx the JSON API's.
Outputs: sentiment `label` BYTES [N] and `prob_positive` FP32 [N] (an empty text gives "" and -1);
tagger `tokens` and `tags`, BYTES [N, T], T the longest sentence, rows padded with "". A request may
ask for a subset with `"outputs": [{"name": ...}]`, and for binary outputs with the request parameter
`binary_data_output` or an output's `binary_data`: then the reply is the JSON followed by those
tensors' bytes, its length in the `Inference-Header-Content-Length` header. A request's `id` (a
string) comes back. Every error is a `{"error": "..."}` body, as the protocol says.
"""

from __future__ import annotations

from functools import partial
from importlib import metadata
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from serve.http.api import ApiError, encode_json
from serve.http.body import read_body
from serve.http.service import Service, json_response, parse
from serve.http.v2_binary import HEADER, encode_tensor, header_length
from serve.http.v2_request import InferCall, parse_infer
from serve.runtime import ServingModel

VERSION = "1"  # the export's model version (above)
EXTENSIONS = ["binary_tensor_data"]


class Tensor(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    data: list[Any] | None = None
    parameters: dict[str, Any] | None = None


class InferRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[Tensor]
    outputs: list[dict[str, Any]] | None = None


class InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[Tensor]


def tensors(model: ServingModel) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The model's input and output tensors as the metadata endpoint describes them."""
    inputs = [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    if model.kind.tokens_input:
        inputs.append({"name": "tokens", "datatype": "BYTES", "shape": [-1, -1]})
    shape = {True: [-1, -1], False: [-1]}  # a field per token is a padded matrix, one per text a vector
    outputs = [{"name": f.name, "datatype": f.datatype, "shape": shape[f.per_token]} for f in model.kind.decoder.fields]
    return inputs, outputs


def output_tensors(model: ServingModel, results: list[dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
    """The requested result fields as tensors (the task's `Decoder.fields`): a per-token field padded to the
    longest input with its `missing` value, a per-text field with `missing` for an empty input's None."""
    n, fields = len(results), {f.name: f for f in model.kind.decoder.fields}
    width = max((len(r[f.name]) for r in results for f in fields.values() if f.per_token), default=0)
    out = []
    for name in names:
        f = fields[name]
        if f.per_token:
            data = [x for r in results for x in r[name] + [f.missing] * (width - len(r[name]))]
            out.append({"name": name, "datatype": f.datatype, "shape": [n, width], "data": data})
        else:
            data = [f.missing if r[name] is None else r[name] for r in results]
            out.append({"name": name, "datatype": f.datatype, "shape": [n], "data": data})
    return out


def _version() -> str:
    try:
        return metadata.version("seqlstm")
    except metadata.PackageNotFoundError:
        return "unknown"


# The OpenAPI description of the infer routes (the body is read by serve.http.v2_request, not pydantic).
INFER_DOC: dict[str, Any] = {
    "responses": {200: {"model": InferResponse}},
    "openapi_extra": {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": InferRequest.model_json_schema()}},
        }
    },
}


def infer_reply(body: dict[str, Any], outputs: list[dict[str, Any]], binary: dict[str, bool]) -> Response:
    """The inference response: JSON, or JSON then the binary outputs' bytes (serve.http.v2_binary)."""
    buffers = []
    for tensor in outputs:
        if binary[tensor["name"]]:
            raw = encode_tensor(tensor["datatype"], tensor.pop("data"))
            tensor["parameters"] = {"binary_data_size": len(raw)}
            buffers.append(raw)
    header = encode_json({**body, "outputs": outputs})
    if not buffers:
        return Response(header, media_type="application/json")
    return Response(
        b"".join([header, *buffers]), headers={HEADER: str(len(header))}, media_type="application/octet-stream"
    )


def router(service: Service) -> APIRouter:
    """The /v2 routes; bodies are read and parsed as the JSON API's are (serve.http.body, .service)."""
    api = APIRouter(prefix="/v2", tags=["Open Inference Protocol (KServe v2)"])
    model = service.model
    inputs, outputs = tensors(model)
    parse_call = partial(parse_infer, inputs=[t["name"] for t in inputs], outputs=[t["name"] for t in outputs])

    def check_name(name: str, version: str | None = None) -> None:
        if name != service.model_name:
            raise ApiError(404, f"unknown model {name[:80]!r}; this server has {service.model_name!r}")
        if version is not None and version != VERSION:
            raise ApiError(404, f"unknown version {version[:40]!r} of model {name[:80]!r}; it has [{VERSION!r}]")

    @api.get("", response_model=None)
    async def server_metadata() -> Response:
        return json_response({"name": "seqlstm", "version": _version(), "extensions": EXTENSIONS})

    @api.get("/health/live", response_model=None)
    async def live() -> Response:
        return json_response({"live": True})

    @api.get("/health/ready", response_model=None)
    async def ready() -> Response:
        ok = service.not_ready() is None
        return json_response({"ready": ok}, 200 if ok else 400)

    async def model_metadata(name: str, version: str | None = None) -> Response:
        check_name(name, version)
        return json_response(
            {"name": name, "versions": [VERSION], "platform": "onnxruntime_onnx", "inputs": inputs, "outputs": outputs}
        )

    async def model_ready(name: str, version: str | None = None) -> Response:
        check_name(name, version)
        ok = service.not_ready() is None
        return json_response({"name": name, "ready": ok}, 200 if ok else 400)

    async def infer(request: Request, name: str, version: str | None = None) -> Response:
        check_name(name, version)
        json_length = header_length(request.headers.get(HEADER))
        call: InferCall = await parse(partial(parse_call, json_length=json_length), await read_body(request), model)
        results = await service.batcher.submit_async(call.items)
        body: dict[str, Any] = {"model_name": name, "model_version": VERSION}
        if call.id is not None:
            body["id"] = call.id
        return infer_reply(body, output_tensors(model, results, list(call.outputs)), call.outputs)

    for prefix in ("/models/{name}", "/models/{name}/versions/{version}"):
        api.add_api_route(prefix, model_metadata, methods=["GET"], response_model=None)
        api.add_api_route(f"{prefix}/ready", model_ready, methods=["GET"], response_model=None)
        api.add_api_route(f"{prefix}/infer", infer, methods=["POST"], response_model=None, **INFER_DOC)
    return api
