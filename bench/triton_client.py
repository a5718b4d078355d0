"""`serve http` through tritonclient: the binary tensor data extension against JSON, beside model-only, in one run.

One `python -m serve http` subprocess on the export, with its defaults (batch 64, max wait 5 ms), on
127.0.0.1. Load: C concurrent clients (1, 8, 64) as coroutines sharing one `tritonclient.http.aio`
client (aiohttp, keep-alive connections), each sending `infer` requests of K texts (1 or 32) back to
back, asking for `label` and `prob_positive`. Mode `binary` is tritonclient's default (inputs with
`binary_data_size`, outputs with `binary_data`); `json` sends and asks for JSON tensors. After a
warm-up, each cell runs for `--seconds` or `--max-requests`, whichever comes first. Texts are Rotten
Tomatoes test reviews. Model-only is `serve bench`'s measure on the same texts: pre-encoded,
length-sorted batches of 64 through onnxruntime in this process, nothing else running.

The export is the default sentiment architecture with random weights and the real vocabulary, built
and exported on the fly unless `--export` names one (bench.http_server). The clients share the
machine's cores with the server: on a small machine they are part of the load. `--quick` is a smoke
run (fractions of a second a cell) that keeps the script working between full runs; its figures mean
nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import add_json_arg, publish
from bench.http_server import build_export, model_only, start_server, test_texts

LEVELS = (1, 8, 64)
SIZES = (1, 32)
MODES = ("binary", "json")
OUTPUTS = ("label", "prob_positive")


def request_parts(texts: list[str], binary: bool) -> tuple[list, list]:
    """tritonclient's inputs and requested outputs for one request of `texts`."""
    import tritonclient.http.aio as triton

    tensor = triton.InferInput("text", [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array(texts, dtype=np.object_), binary_data=binary)
    return [tensor], [triton.InferRequestedOutput(name, binary_data=binary) for name in OUTPUTS]


async def client(
    triton_client: object, model: str, requests: list[tuple], start: int, stop_at: float, budget: list[int], out: dict
) -> None:
    for inputs, outputs in itertools.islice(itertools.cycle(requests), start, None):
        if time.perf_counter() >= stop_at or budget[0] <= 0:
            return
        budget[0] -= 1
        began = time.perf_counter()
        try:
            result = await triton_client.infer(model, inputs, outputs=outputs)
            result.as_numpy("prob_positive")
            out["latencies"].append(time.perf_counter() - began)
        except Exception as exc:  # a benchmark counts failures rather than stopping at the first
            out["errors"].append(type(exc).__name__)


async def load(port: int, model: str, requests: list[tuple], clients: int, seconds: float, max_requests: int) -> dict:
    import tritonclient.http.aio as triton

    out: dict[str, list] = {"latencies": [], "errors": []}
    async with triton.InferenceServerClient(url=f"127.0.0.1:{port}", conn_limit=max(clients, 1)) as triton_client:
        began = time.perf_counter()
        budget = [max_requests]
        await asyncio.gather(
            *(client(triton_client, model, requests, i * 7, began + seconds, budget, out) for i in range(clients))
        )
        elapsed = time.perf_counter() - began
    ms = np.array(out["latencies"] or [float("nan")]) * 1000
    return {
        "requests": len(out["latencies"]),
        "seconds": round(elapsed, 2),
        "requests_per_s": len(out["latencies"]) / elapsed,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "errors": len(out["errors"]),
        "error_kinds": sorted(set(out["errors"]))[:5],
    }


def bench_cells(port: int, model: str, texts: list[str], args: argparse.Namespace, only: float) -> list[dict]:
    rows = []
    for mode, size in itertools.product(MODES, SIZES):
        windows = [texts[i : i + size] for i in range(0, len(texts) - size + 1, size)][:256]
        requests = [request_parts(window, mode == "binary") for window in windows]
        for clients in LEVELS:
            asyncio.run(load(port, model, requests, clients, args.warmup, args.max_requests))  # warm-up, not counted
            cell = asyncio.run(load(port, model, requests, clients, args.seconds, args.max_requests))
            texts_per_s = cell["requests_per_s"] * size
            rows.append(
                {"mode": mode, "texts_per_request": size, "clients": clients, **cell, "texts_per_s": texts_per_s}
            )
            rows[-1]["of_model_only"] = texts_per_s / only
            print(
                f"{mode:6} {size:2} texts x {clients:2} clients: {texts_per_s:8.1f} texts/s, "
                f"p50 {cell['p50_ms']:.1f} ms, p99 {cell['p99_ms']:.1f} ms, "
                f"{cell['errors']} errors {cell['error_kinds'] or ''}",
                flush=True,
            )
    return rows


def servable(export: Path, texts: list[str]) -> tuple[list[str], int]:
    """The texts the export takes whole (the API refuses one over its max_tokens with a 422), and how many not."""
    from serve.runtime import ServingModel

    model = ServingModel(export)
    kept = [t for t in texts if not model.prepare_text(t).truncated]
    return kept, len(texts) - len(kept)


def run(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-triton-") as tmp:
        workdir = Path(tmp)
        export = args.export or build_export(workdir)
        texts, too_long = servable(export, test_texts(2048))
        print(f"{len(texts)} texts, {too_long} left out as over the export's max_tokens", flush=True)
        only = model_only(export, texts, args.model_seconds)
        print(f"model only, batch 64: {only['throughput']:.1f} texts/s", flush=True)
        proc, port = start_server(export, "asgi", workdir / "server.log")
        try:
            rows = bench_cells(port, Path(export).resolve().name, texts, args, only["throughput"])
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    at = {(r["mode"], r["texts_per_request"], r["clients"]): r for r in rows}
    ratios = {
        f"binary_over_json_{size}_texts_{clients}_clients": at["binary", size, clients]["texts_per_s"]
        / at["json", size, clients]["texts_per_s"]
        for size, clients in itertools.product(SIZES, LEVELS)
        if at["json", size, clients]["texts_per_s"] > 0
    }
    return {"model_only_b64": only, "texts_over_max_tokens": too_long, "binary_over_json": ratios, "table": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.triton_client", description=__doc__.split("\n")[0])
    parser.add_argument("--export", type=Path, help="a sentiment EXPORT_DIR (default: build the default architecture)")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured time per cell (default: 5)")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each cell (default: 1)")
    parser.add_argument("--max-requests", type=int, default=50_000, help="cap per cell (default: 50,000)")
    parser.add_argument("--model-seconds", type=float, default=3.0, help="model-only time (default: 3)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 0.2 s cells, at most 40 requests each")
    add_json_arg(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.warmup, args.max_requests, args.model_seconds = 0.2, 0.05, 40, 0.2
    columns = ["mode", "texts_per_request", "clients", "requests", "texts_per_s", "p50_ms", "p99_ms", "errors"]
    results = publish("triton_client", args, run(args), [*columns, "of_model_only"])["results"]
    for name, value in results["binary_over_json"].items():
        print(f"{name}: {value:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
