"""The Open Inference Protocol (KServe v2 REST) beside the JSON API, so KServe, Triton and MLServer
clients work unchanged.

    GET  /v2                         server metadata
    GET  /v2/health/live|ready       200 {"live"|"ready": true}; not ready is 400 {"ready": false} (the spec: 4xx)
    GET  /v2/models/{name}[/ready]   model metadata (its input and output tensors) / readiness
    POST /v2/models/{name}/infer     one BYTES input, the outputs below

Inputs (one per request): `text`, BYTES, shape [N] (or [N, 1]): one raw text per element; for the
tagger also `tokens`, BYTES, shape [N, T]: N sentences of up to T tokens, each row padded at its end
with "" (a token is never empty, so the padding is unambiguous). `data` may be flat (row-major, as
the spec says) or nested. The limits and 4xx are the JSON API's (`serve.api`).
Outputs: sentiment `label` BYTES [N] and `prob_positive` FP32 [N] (an empty text gives "" and -1);
tagger `tokens` and `tags`, BYTES [N, T], T the longest sentence, rows padded with "". A request may
ask for a subset with `"outputs": [{"name": ...}]`; its `id` comes back. An unknown model name is a
404 and every error a `{"error": "..."}` body, as the protocol says.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from importlib import metadata
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from serve.api import ApiError, decode_json, encode_json, prepare_items
from serve.runtime import Item, ServingModel

if TYPE_CHECKING:
    from serve.app import Service

WHERE = "inputs[0].data"


class Tensor(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    data: list[Any]


class InferRequest(BaseModel):
    id: str | None = None
    inputs: list[Tensor]
    outputs: list[dict[str, Any]] | None = None


class InferResponse(BaseModel):
    model_name: str
    id: str | None = None
    outputs: list[Tensor]


def tensors(model: ServingModel) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The model's input and output tensors as the metadata endpoint describes them."""
    inputs = [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    if model.task == "tagger":
        inputs.append({"name": "tokens", "datatype": "BYTES", "shape": [-1, -1]})
        outputs = [{"name": name, "datatype": "BYTES", "shape": [-1, -1]} for name in ("tokens", "tags")]
    else:
        outputs = [
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "prob_positive", "datatype": "FP32", "shape": [-1]},
        ]
    return inputs, outputs


def flatten(data: Any, depth: int) -> list[Any]:
    """`data` nested up to `depth` levels of lists, row-major."""
    if depth <= 1 or not any(isinstance(x, list) for x in data):
        return list(data)
    return [x for row in data for x in (flatten(row, depth - 1) if isinstance(row, list) else [row])]


def parse_infer(body: bytes, model: ServingModel) -> tuple[list[Item], list[str], Any]:
    """An inference request -> (items, the output names asked for, the request id)."""
    data = decode_json(body)
    if not isinstance(data, dict) or not isinstance(data.get("inputs"), list) or len(data["inputs"]) != 1:
        raise ApiError(400, 'expected an inference request object with "inputs": a list of exactly one tensor')
    tensor = data["inputs"][0]
    inputs, outputs = tensors(model)
    names = [t["name"] for t in inputs]
    if not isinstance(tensor, dict) or tensor.get("name") not in names:
        raise ApiError(
            400,
            f"inputs[0].name must be one of {names}; "
            f"got {str(tensor.get('name') if isinstance(tensor, dict) else tensor)[:40]!r}",
        )
    if tensor.get("datatype") != "BYTES":
        raise ApiError(400, f'inputs[0].datatype must be "BYTES"; got {str(tensor.get("datatype"))[:20]!r}')
    shape, values = tensor.get("shape"), tensor.get("data")
    dims = 2 if tensor["name"] == "tokens" else 1
    if not (
        isinstance(shape, list)
        and all(isinstance(d, int) and d >= 0 for d in shape)
        and (len(shape) == dims or (dims == 1 and len(shape) == 2 and shape[1] == 1))
    ):
        wanted = "[N, T]" if dims == 2 else "[N] or [N, 1]"
        raise ApiError(400, f"inputs[0].shape must be {wanted}, non-negative integers; got {str(shape)[:40]}")
    if not isinstance(values, list):
        raise ApiError(400, f"{WHERE} must be a list")
    flat = flatten(values, len(shape))
    if len(flat) != math.prod(shape):
        raise ApiError(400, f"{WHERE} has {len(flat)} elements; shape {shape} needs {math.prod(shape)}")
    if tensor["name"] == "text":
        items = prepare_items("texts", flat, model, WHERE)
    else:
        width = shape[1]
        rows = [flat[i * width : (i + 1) * width] for i in range(shape[0])]
        items = prepare_items("tokens", [strip_padding(row) for row in rows], model, WHERE)
    return items, requested_outputs(data.get("outputs"), [t["name"] for t in outputs]), data.get("id")


def strip_padding(row: list[Any]) -> list[Any]:
    end = len(row)
    while end and row[end - 1] == "":
        end -= 1
    return row[:end]


def requested_outputs(asked: Any, known: list[str]) -> list[str]:
    if asked is None:
        return known
    if not isinstance(asked, list) or not all(isinstance(o, dict) and o.get("name") in known for o in asked):
        raise ApiError(400, f'"outputs" must be a list of {{"name": ...}} with names from {known}')
    return [o["name"] for o in asked]


def output_tensors(model: ServingModel, results: list[dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
    n = len(results)
    if model.task == "tagger":
        width = max((len(r["tags"]) for r in results), default=0)
        columns = {
            name: [x for r in results for x in r[name] + [""] * (width - len(r[name]))] for name in ("tokens", "tags")
        }
        return [{"name": name, "datatype": "BYTES", "shape": [n, width], "data": columns[name]} for name in names]
    columns = {
        "label": [r["label"] or "" for r in results],
        "prob_positive": [-1.0 if r["prob_positive"] is None else r["prob_positive"] for r in results],
    }
    types = {"label": "BYTES", "prob_positive": "FP32"}
    return [{"name": name, "datatype": types[name], "shape": [n], "data": columns[name]} for name in names]


def _version() -> str:
    try:
        return metadata.version("seqlstm")
    except metadata.PackageNotFoundError:
        return "unknown"


def router(
    service: Service, read_body: Callable[[Request], Awaitable[bytes]], parse: Callable[..., Awaitable[Any]]
) -> APIRouter:
    """The /v2 routes; `read_body` and `parse` are the JSON API's (body rules, where parsing runs)."""
    api = APIRouter(prefix="/v2", tags=["Open Inference Protocol (KServe v2)"])
    model = service.model
    inputs, outputs = tensors(model)

    def reply(body: Any, status: int = 200) -> Response:
        return Response(encode_json(body), status, media_type="application/json")

    def check_name(name: str) -> None:
        if name != service.model_name:
            raise ApiError(404, f"unknown model {name[:80]!r}; this server has {service.model_name!r}")

    @api.get("", response_model=None)
    async def server_metadata() -> Response:
        return reply({"name": "seqlstm", "version": _version(), "extensions": []})

    @api.get("/health/live", response_model=None)
    async def live() -> Response:
        return reply({"live": True})

    @api.get("/health/ready", response_model=None)
    async def ready() -> Response:
        ok = service.not_ready() is None
        return reply({"ready": ok}, 200 if ok else 400)

    @api.get("/models/{name}", response_model=None)
    async def model_metadata(name: str) -> Response:
        check_name(name)
        return reply(
            {"name": name, "versions": [], "platform": "onnxruntime_onnx", "inputs": inputs, "outputs": outputs}
        )

    @api.get("/models/{name}/ready", response_model=None)
    async def model_ready(name: str) -> Response:
        check_name(name)
        ok = service.not_ready() is None
        return reply({"name": name, "ready": ok}, 200 if ok else 400)

    @api.post(
        "/models/{name}/infer",
        response_model=None,
        responses={200: {"model": InferResponse}},
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": InferRequest.model_json_schema()}},
            }
        },
    )
    async def infer(name: str, request: Request) -> Response:
        check_name(name)
        items, names, request_id = await parse(parse_infer, await read_body(request), model)
        results = await service.batcher.submit_async(items)
        body: dict[str, Any] = {"model_name": name, "outputs": output_tensors(model, results, names)}
        if request_id is not None:
            body["id"] = request_id
        return reply(body)

    return api
