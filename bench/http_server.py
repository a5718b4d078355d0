"""`serve http`: the ASGI server against the old standard-library one, in one run, on 127.0.0.1.

Each server (`--server stdlib`, then `--server asgi`) runs as its own `python -m serve http`
subprocess on the same export, with its defaults (batch 64, max wait 5 ms). Load: C concurrent
clients (1, 16, 64) in one asyncio loop of this process, each sending single-text `POST /predict`
requests back to back on a keep-alive HTTP/1.1 connection (the stdlib server is HTTP/1.0 and
closes after each reply, so its clients reconnect, connect time included in the latency). After a
warm-up, each level runs for `--seconds` or `--max-requests`, whichever comes first. Texts are
Rotten Tomatoes test reviews. Model-only is `serve bench`'s measure: pre-encoded, length-sorted
batches of 64 through onnxruntime in this process, nothing else running.

The export is the default sentiment architecture with random weights and the real vocabulary
(speed does not depend on the weights), built and exported on the fly unless `--export` names one.
The clients share the machine's cores with the server: on a small machine they are part of the load.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

from bench.common import add_json_arg, publish

LEVELS = (1, 16, 64)


def build_export(workdir: Path) -> Path:
    """The default SentimentConfig with random weights and the rotten-tomatoes vocabulary, exported."""
    import torch

    from trainer.artifact import save_artifact
    from trainer.core.config import PreprocessConfig, SentimentConfig
    from trainer.core.data import open_dataset
    from trainer.core.preprocess import build_vocabs, tokenize
    from trainer.core.tasks import SENTIMENT_LABELS
    from trainer.models import build_model

    config, preprocess = SentimentConfig(), PreprocessConfig()
    tokens = [tokenize(r.text) for r in open_dataset("rotten-tomatoes").examples("train")]
    vocabs = build_vocabs(tokens, SENTIMENT_LABELS, preprocess, chars=False)
    torch.manual_seed(0)
    artifact = workdir / "run" / "model"
    save_artifact(
        artifact,
        build_model(config, vocabs),
        config,
        preprocess,
        vocabs,
        {"task": "sentiment", "data": "rotten-tomatoes"},
    )
    out = workdir / "export"
    subprocess.run(
        [sys.executable, "-m", "export", "--model", str(artifact), "--out", str(out), "--force"],
        check=True,
        capture_output=True,
    )
    return out


def test_texts(n: int) -> list[str]:
    from trainer.core.data import open_dataset

    texts = [" ".join(r.text.split()) for r in open_dataset("rotten-tomatoes").examples("test")]
    return list(itertools.islice(itertools.cycle(texts), n))


def model_only(export: Path, texts: list[str], seconds: float) -> dict:
    from serve.bench import make_batches, measure
    from serve.runtime import ServingModel

    model = ServingModel(export)
    cpu = time.process_time()
    items = [model.prepare_text(t) for t in texts]
    prepare_ms = 1000 * (time.process_time() - cpu) / len(texts)  # tokenize + encode: each request pays it too
    batches = make_batches(model, items, 64)
    cpu = time.process_time()
    result = measure(model.run, batches, seconds)
    result["cpu_ms_per_text"] = 1000 * (time.process_time() - cpu) / result["units"]  # onnxruntime's threads too
    return {**result, "prepare_cpu_ms_per_text": prepare_ms}


def start_server(export: Path, kind: str, log: Path) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "serve", "http", "--model", str(export), "--port", "0", "--server", kind],
        stdout=subprocess.PIPE,
        stderr=log.open("wb"),
    )
    banner = proc.stdout.readline().decode()
    if "http://" not in banner:
        proc.kill()
        sys.exit(f"error: the {kind} server did not start:\n{log.read_text()[-2000:]}")
    return proc, int(banner.rsplit(":", 1)[1])


def request_bytes(text: str) -> bytes:
    body = json.dumps({"texts": [text]}).encode()
    return (
        b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (len(body), body)
    )


async def client(
    port: int,
    requests: list[bytes],
    start: int,
    stop_at: float,
    budget: list[int],
    latencies: list[float],
    errors: list[str],
) -> None:
    reader = writer = None
    for request in itertools.islice(itertools.cycle(requests), start, None):
        if time.perf_counter() >= stop_at or budget[0] <= 0:
            break
        budget[0] -= 1
        began = time.perf_counter()
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            status_line = await reader.readline()
            length, close = 0, status_line.startswith(b"HTTP/1.0")
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
                elif name.lower() == b"connection":
                    close = value.strip().lower() == b"close"
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - began)
            if b" 200 " not in status_line:
                errors.append(status_line.decode().strip())
        except (OSError, asyncio.IncompleteReadError) as exc:
            errors.append(type(exc).__name__)
            close = True
        if close:
            writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


async def load(port: int, requests: list[bytes], clients: int, seconds: float, max_requests: int) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    budget = [max_requests]
    began = time.perf_counter()
    await asyncio.gather(
        *(client(port, requests, i * 7, began + seconds, budget, latencies, errors) for i in range(clients))
    )
    elapsed = time.perf_counter() - began
    ms = np.array(latencies) * 1000
    return {
        "clients": clients,
        "requests": len(latencies),
        "seconds": round(elapsed, 2),
        "requests_per_s": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "errors": len(errors),
        "error_kinds": sorted(set(errors))[:5],
    }


def bench_server(export: Path, kind: str, requests: list[bytes], args: argparse.Namespace, workdir: Path) -> list:
    proc, port = start_server(export, kind, workdir / f"{kind}.log")
    server = psutil.Process(proc.pid)
    try:
        levels = []
        for clients in LEVELS:
            asyncio.run(load(port, requests, clients, args.warmup, args.max_requests))  # warm-up, not counted
            before = server.cpu_times()
            level = asyncio.run(load(port, requests, clients, args.seconds, args.max_requests))
            after = server.cpu_times()
            # CPU time per request (all the server's threads, the model's included) does not depend on what
            # else the machine runs, unlike requests/s: the figure to compare servers by on a shared machine.
            cpu_s = after.user + after.system - before.user - before.system
            levels.append({"server": kind, **level, "server_cpu_ms_per_request": 1000 * cpu_s / level["requests"]})
            print(
                f"{kind:6} {clients:3} clients: {level['requests_per_s']:8.1f} req/s, "
                f"p50 {level['p50_ms']:.1f} ms, p99 {level['p99_ms']:.1f} ms, "
                f"server CPU {levels[-1]['server_cpu_ms_per_request']:.2f} ms/request, {level['errors']} errors",
                flush=True,
            )
        return levels
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def run(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-http-") as tmp:
        workdir = Path(tmp)
        export = args.export or build_export(workdir)
        texts = test_texts(2048)
        only = model_only(export, texts, args.model_seconds)
        print(
            f"model only, batch 64: {only['throughput']:.1f} reviews/s, CPU {only['cpu_ms_per_text']:.3f} ms/review; "
            f"tokenize + encode {only['prepare_cpu_ms_per_text']:.3f} ms/review",
            flush=True,
        )
        requests = [request_bytes(t) for t in texts]
        rows = [row for kind in ("stdlib", "asgi") for row in bench_server(export, kind, requests, args, workdir)]
    at = {(r["server"], r["clients"]): r for r in rows}
    new64, old64 = at["asgi", 64]["requests_per_s"], at["stdlib", 64]["requests_per_s"]
    targets = {
        "asgi_64_clients_of_model_only_b64": new64 / only["throughput"],  # target >= 0.5
        "asgi_over_stdlib_at_64_clients": new64 / old64,  # target >= 5
        "asgi_p99_ms_at_16_clients": at["asgi", 16]["p99_ms"],  # target < 100
    }
    return {"model_only_b64": only, "targets": targets, "table": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.http_server", description=__doc__.split("\n")[0])
    parser.add_argument("--export", type=Path, help="a sentiment EXPORT_DIR (default: build the default architecture)")
    parser.add_argument("--seconds", type=float, default=6.0, help="measured time per server and level (default: 6)")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each level (default: 1)")
    parser.add_argument("--max-requests", type=int, default=50_000, help="cap per level (default: 50,000)")
    parser.add_argument("--model-seconds", type=float, default=3.0, help="model-only time (default: 3)")
    add_json_arg(parser)
    args = parser.parse_args(argv)
    results = publish(
        "http_server",
        args,
        run(args),
        ["server", "clients", "requests", "requests_per_s", "p50_ms", "p99_ms", "server_cpu_ms_per_request", "errors"],
    )["results"]
    for name, value in results["targets"].items():
        print(f"{name}: {value:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
