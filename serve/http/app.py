"""The ASGI app (FastAPI) of `serve http`: the JSON API, health, metrics and the Open Inference Protocol.

    POST /predict        {"texts": [...]} or {"tokens": [[...], ...]} (tagger) -> {"results": [...]}
    GET  /health         200 {"status": "ok", "task"} while the batcher runs, else 503 with the reason
    GET  /health/live    200 while the process answers at all (a liveness probe)
    GET  /health/ready   200 while the batcher runs, the model is loaded and no drain has begun, else 503
    GET  /metadata       task, labels, input names, onnx sha256, limits
    GET  /metrics        Prometheus text (serve.http.metrics)
    /v2/...              the Open Inference Protocol (serve.http.v2)
    GET  /docs, /openapi.json   generated from the pydantic models below

Every GET path also answers HEAD (its headers, no body). A body may be chunked or gzip/deflate
encoded, capped after decompression (`serve.http.body`). The request rules and every 4xx are `serve.http.api`'s,
the same as the standard-library server's: the body is read and checked by `serve.http.api`, not by
pydantic (whose 422s would change the API's statuses and messages), so the pydantic models only
document the API. Errors are `{"error": "..."}`.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from fastapi import FastAPI, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from serve.http import v2
from serve.http.api import MAX_TEXT_CHARS, MAX_TEXTS, ApiError, parse_request
from serve.http.body import read_body
from serve.http.metrics import METRICS_CONTENT_TYPE, AccessLog
from serve.http.service import Service, json_response, parse


class PredictTexts(BaseModel):
    texts: list[str] = Field(max_length=MAX_TEXTS, description=f"raw texts, up to {MAX_TEXT_CHARS} characters each")


class PredictTokens(BaseModel):
    tokens: list[list[str]] = Field(max_length=MAX_TEXTS, description="pre-tokenized sentences (tagger only)")


class TaggerResult(BaseModel):
    tokens: list[str]
    tags: list[str]


class SentimentResult(BaseModel):
    label: Literal["positive", "negative"] | None = Field(description="null for an empty text")
    prob_positive: float | None


class PredictResponse(BaseModel):
    results: list[TaggerResult | SentimentResult]


class ErrorBody(BaseModel):
    error: str


ERRORS: dict[int | str, dict[str, Any]] = {status: {"model": ErrorBody} for status in (400, 411, 413, 415, 422, 503)}


def create_app(service: Service) -> Any:
    """The FastAPI app wrapped in the access-log and metrics middleware."""
    app = FastAPI(
        title="seqlstm",
        summary=f"{service.model.task} model {service.model_name}",
        version=service.model.onnx_sha256[:12],
    )
    model, batcher = service.model, service.batcher

    @app.post(
        "/predict",
        response_model=None,
        responses={200: {"model": PredictResponse}, **ERRORS},
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"oneOf": [PredictTexts.model_json_schema(), PredictTokens.model_json_schema()]}
                    }
                },
            }
        },
    )
    async def predict(request: Request) -> Response:
        """The same objects `python -m serve predict` writes, one per input, in order."""
        items = await parse(parse_request, await read_body(request), model)
        return json_response({"results": await batcher.submit_async(items)})

    @app.get("/health", response_model=None)
    async def health() -> Response:
        reason = batcher.health()
        if reason is not None:
            return json_response({"status": "unavailable", "reason": reason, "task": model.task}, 503)
        return json_response({"status": "ok", "task": model.task})

    @app.get("/health/live", response_model=None)
    async def live() -> Response:
        return json_response({"status": "alive"})

    @app.get("/health/ready", response_model=None)
    async def ready() -> Response:
        reason = service.not_ready()
        if reason is not None:
            return json_response({"status": "not ready", "reason": reason}, 503)
        return json_response({"status": "ready"})

    @app.get("/metadata", response_model=None)
    async def metadata() -> Response:
        return json_response(service.metadata)

    @app.get("/metrics", response_model=None)
    async def metrics() -> Response:
        return Response(service.metrics.render(), media_type=METRICS_CONTENT_TYPE)

    app.include_router(v2.router(service))
    replies = error_replies(sorted([*app.openapi()["paths"], "/docs", "/openapi.json"]))
    for exc_type, reply in replies.items():
        app.add_exception_handler(exc_type, reply)
    service.metrics.watch_queue(lambda: batcher.pending)
    predict_route = next(r for r in app.routes if isinstance(r, APIRoute) and r.path == "/predict")
    return AccessLog(HotPath(app, predict_route, predict, replies), service.metrics)


Reply = Callable[[Request, Any], Awaitable[Response]]


def error_replies(known: list[str]) -> dict[type[Exception], Reply]:
    """The reply to each exception a route may raise, most specific first."""

    async def api_error(request: Request, exc: ApiError) -> Response:
        # A 413 leaves the rest of an oversized body unread: the connection cannot carry another request.
        return json_response({"error": exc.message}, exc.status, {"Connection": "close"} if exc.status == 413 else None)

    async def routing_error(request: Request, exc: HTTPException) -> Response:
        path, headers = request.url.path, exc.headers or {}
        if exc.status_code == 404:
            message = f"unknown path {path!r}; known: {', '.join(known)}"
        elif exc.status_code == 405:
            message = f"{path} accepts {headers.get('Allow', '?')}, not {request.method}"
        else:
            message = str(exc.detail)
        return json_response({"error": message}, exc.status_code, headers)

    async def gone(request: Request, exc: ClientDisconnect) -> Response:
        print(
            f"{request.client.host if request.client else '-'} - client went away before its request was read",
            file=sys.stderr,
        )
        return json_response({"error": "client went away"}, 400)

    async def internal(request: Request, exc: Exception) -> Response:
        traceback.print_exception(exc, file=sys.stderr)
        return json_response({"error": "internal server error (logged by the server)"}, 500)

    return {ApiError: api_error, HTTPException: routing_error, ClientDisconnect: gone, Exception: internal}


class HotPath:
    """`POST /predict` straight to its handler; every other request through FastAPI.

    The handler and the error replies are the ones FastAPI's route and exception handlers use, so the
    API is the same either way. A single-text request spends longer in the HTTP stack than in the
    model: skipping FastAPI's middleware stack, routing and dependency solving takes 13% off the
    server's CPU time per request (docs/BENCHMARKS.md section 7).
    """

    def __init__(
        self,
        app: FastAPI,
        route: APIRoute,
        endpoint: Callable[[Request], Awaitable[Response]],
        replies: dict[type[Exception], Reply],
    ) -> None:
        self.app, self.route, self.endpoint, self.replies = app, route, endpoint, replies

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] == "http" and scope["method"] == "HEAD":
            await self.head(scope, receive, send)
            return
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != self.route.path:
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route  # the access log and metrics label requests by it
        request = Request(scope, receive)
        try:
            response = await self.endpoint(request)
        except Exception as exc:
            reply = next(reply for exc_type, reply in self.replies.items() if isinstance(exc, exc_type))
            response = await reply(request, exc)
        await response(scope, receive, send)

    async def head(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        """HEAD on any path is its GET without the body (FastAPI's GET routes answer HEAD with 405),
        the headers, Content-Length included, unchanged; whatever the server does with HEAD bodies."""
        inner = {**scope, "method": "GET"}

        async def headers_only(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        try:
            await self.app(inner, receive, headers_only)
        finally:
            if "route" in inner:
                scope["route"] = inner["route"]  # the access log and metrics label requests by it
