"""`python -m serve http` and the `seqlstm-server` console script: serve an export over HTTP.

The default server is ASGI (FastAPI on uvicorn; `pip install 'seqlstm[server]'`): HTTP/1.1
keep-alive, the JSON API, health and readiness, Prometheus metrics, the Open Inference Protocol,
OpenAPI docs, JSON access logs on stderr, and a drain on SIGTERM (`serve.http.app`, `serve.http.v2`,
`serve.http.asgi`). `--server stdlib` is the fallback for an install with only `.[serve]`: the same JSON
API on the standard library's server (`serve.http.stdlib_server`). Both share one micro-batcher
(`serve.http.batcher`) and the request rules of `serve.http.api`.

Every flag can also come from an environment variable (`SEQLSTM_MODEL`, `SEQLSTM_HOST`, `PORT`,
`SEQLSTM_<FLAG>`; see `--help`), read as if it were typed as the flag; a flag on the command line
wins. Every numeric flag is range-checked before the model loads (`serve.options`). Binding
anything but loopback prints one warning line on stderr.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path
from typing import Any

from serve.http.batcher import MicroBatcher
from serve.options import check_host, check_numbers, exposure_warning
from serve.runtime import OPT_LEVELS, ServingModel
from trainer.core.cli import Parser, run_cli
from trainer.core.errors import ConfigError

SERVER_PACKAGES = {"fastapi", "starlette", "pydantic", "uvicorn", "httptools", "prometheus_client"}
INSTALL_HINT = "pip install 'seqlstm[server]'"
BACKLOG = 2048  # a burst of concurrent connects must not overflow the listen queue
TRUE, FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}


def env_name(flag: str) -> str:
    # PORT is what container platforms set; HOST is not read, because shells and CI images often set
    # it to the machine's name, which would bind beyond loopback unasked (SEQLSTM_HOST instead).
    return {"--port": "PORT"}.get(flag, "SEQLSTM_" + flag[2:].replace("-", "_").upper())


def add(parser: argparse.ArgumentParser, flag: str, **kwargs: Any) -> None:
    """A flag whose default comes from its environment variable when that is set."""
    name = env_name(flag)
    value = os.environ.get(name)
    if kwargs.get("action") == "store_true":
        if value is not None and value.strip().lower() not in TRUE | FALSE:
            raise ConfigError(f"environment variable {name} must be 1/true/yes or 0/false/no; got {value[:40]!r}")
        kwargs["default"] = value is not None and value.strip().lower() in TRUE
    elif value is not None:
        kwargs["default"], kwargs["required"] = value, False  # argparse converts a string default with `type`
    kwargs["help"] = f"{kwargs.get('help', '')} [env {name}]".strip()
    parser.add_argument(flag, **kwargs)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add(parser, "--model", required=True, type=Path, metavar="EXPORT_DIR")
    add(
        parser,
        "--server",
        choices=("asgi", "stdlib"),
        default="asgi",
        help="asgi: FastAPI on uvicorn (needs the server extra); stdlib: the JSON API only, HTTP/1.0, no drain",
    )
    add(parser, "--host", default="127.0.0.1", help="interface to bind (default: loopback only)")
    add(parser, "--port", type=int, default=8080, help="0 picks a free port (printed on startup)")
    add(parser, "--model-name", default=None, help="the name in /v2/models/NAME (default: the export's folder name)")
    add(parser, "--batch-size", type=int, default=64, help="most items run through the model at once")
    add(parser, "--max-wait-ms", type=float, default=5.0, help="how long a batch waits for more requests")
    add(
        parser,
        "--request-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="a request with no result by then gets 503",
    )
    add(parser, "--max-queue", type=int, default=1024, help="requests waiting for the model; past it 503")
    add(
        parser,
        "--limit-concurrency",
        type=int,
        default=512,
        help="asgi: open connections; a new one replaces the oldest idle or slow one, 503 only when all are busy",
    )
    add(parser, "--keep-alive", type=float, default=5.0, metavar="SECONDS", help="asgi: idle keep-alive timeout")
    add(
        parser,
        "--header-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="a request's headers are due this long after the connection opened or its last response; past it 408",
    )
    add(
        parser,
        "--body-min-rate",
        type=float,
        default=8192.0,
        metavar="BYTES_PER_S",
        help="asgi: after --header-timeout seconds of grace a body must arrive at least this fast; else 408",
    )
    add(
        parser,
        "--drain-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="asgi: on SIGTERM, how long the requests already received may take; what is left then gets 503",
    )
    add(
        parser,
        "--drain-grace",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="asgi: on SIGTERM, keep accepting (readiness 503) this long before the drain (Kubernetes pre-stop)",
    )
    add(parser, "--int8", action="store_true", help="use model.int8.onnx")
    add(parser, "--threads", type=int, default=0, help="onnxruntime intra-op threads (0: one per core)")
    add(parser, "--optimization", choices=sorted(OPT_LEVELS), default="all")


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, made here so that the banner can name the port that `--port 0` got."""
    try:
        family = socket.AF_INET if host == "" else socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say TCP, and without it
        # Nagle's algorithm holds each reply's body (written after its headers) for the client's delayed ACK.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    except OSError as exc:
        raise ConfigError(f"cannot listen on --host {host!r} --port {port} ({exc.strerror or exc})") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on --host {host!r} --port {port} ({exc.strerror or exc})") from None
    return sock


def announce(requested_host: str, address: tuple[Any, ...], model: ServingModel) -> None:
    host, port = address[:2]
    warning = exposure_warning(requested_host, host)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    print(f"serving {model.task} model {model.export_dir} on http://{host}:{port}", flush=True)


def import_asgi() -> Any:
    try:
        from serve.http import asgi
    except ImportError as exc:
        if exc.name not in SERVER_PACKAGES:
            raise
        raise ConfigError(f"the ASGI server needs {exc.name}: {INSTALL_HINT} (or --server stdlib)") from None
    return asgi


def run(args: argparse.Namespace) -> int:
    check_numbers(args)
    check_host(args.host)
    asgi = import_asgi() if args.server == "asgi" else None
    model = ServingModel(args.model, int8=args.int8, threads=args.threads, optimization=args.optimization)
    if asgi is None:
        return run_stdlib(args, model)
    from serve.http.metrics import Metrics
    from serve.http.service import Service

    metrics = Metrics()
    batcher = MicroBatcher(
        model,
        args.batch_size,
        args.max_wait_ms / 1000,
        args.request_timeout,
        args.max_queue,
        on_batch=metrics.batch_size.observe,
    )
    service = Service(model, batcher, metrics, args.model_name or Path(args.model).resolve().name)
    sock = listen(args.host, args.port)
    asgi.serve(
        service,
        sock,
        lambda: announce(args.host, sock.getsockname(), model),
        limit_concurrency=args.limit_concurrency,
        header_timeout_s=args.header_timeout,
        body_min_rate=args.body_min_rate,
        keep_alive_s=args.keep_alive,
        drain_timeout_s=args.drain_timeout,
        drain_grace_s=args.drain_grace,
    )
    return 0


def run_stdlib(args: argparse.Namespace, model: ServingModel) -> int:
    from serve.http.stdlib_server import Server

    batcher = MicroBatcher(model, args.batch_size, args.max_wait_ms / 1000, args.request_timeout, args.max_queue)
    try:
        server = Server((args.host, args.port), model, batcher, args.header_timeout)
    except OSError as exc:
        raise ConfigError(f"cannot listen on --host {args.host!r} --port {args.port} ({exc.strerror})") from None
    announce(args.host, server.server_address, model)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """The `seqlstm-server` console script: `python -m serve http` on its own."""

    def serve_http() -> int:
        parser = Parser(prog="seqlstm-server", description="Serve an exported model over HTTP.")
        add_arguments(parser)
        return run(parser.parse_args(argv))

    return run_cli(serve_http)
