"""What the ASGI routes share, the JSON API's (serve.http.app) and the Open Inference Protocol's
(serve.http.v2): the service state, the JSON reply, and where a request body is parsed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import Response
from fastapi.concurrency import run_in_threadpool

from serve.http.api import encode_json, limits
from serve.http.batcher import MicroBatcher
from serve.http.metrics import Metrics
from serve.runtime import ServingModel

INLINE_PARSE_BYTES = 16 << 10  # a body up to this is parsed on the event loop; a larger one in a thread
T = TypeVar("T")


@dataclass
class Service:
    """What the routes share: the model, its batcher, the metrics, and whether a drain has begun."""

    model: ServingModel
    batcher: MicroBatcher
    metrics: Metrics
    model_name: str
    draining: bool = False
    metadata: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.metadata = {**self.model.describe(), "limits": limits(self.model)}

    def not_ready(self) -> str | None:
        """None while requests are served, else why not."""
        if self.draining:
            return "draining: the server is shutting down"
        return self.batcher.health()


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(encode_json(body), status, headers, media_type="application/json")


async def parse(parse_fn: Callable[[bytes, ServingModel], T], body: bytes, model: ServingModel) -> T:
    """`parse_fn(body, model)`: on the event loop for a small body (cheaper than a thread hop), in a
    worker thread for a large one (tokenizing it would stall every other request)."""
    if len(body) <= INLINE_PARSE_BYTES:
        return parse_fn(body, model)
    return await run_in_threadpool(parse_fn, body, model)
