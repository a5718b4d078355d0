"""`python -m serve bench`: throughput and per-batch latency, per backend and batch size.

Backends: onnxruntime fp32, onnxruntime int8 (when the export has model.int8.onnx) and torch eager
(with `--torch RUN_DIR/model`; serve.torch_check, imported only then). Throughput is tokens/s for the tagger
and reviews/s for sentiment; latency is the wall time of one `session.run` on one batch.

Input: `--input FILE` (one text per line; blank lines skipped), else `--texts` texts generated
from the model's own word vocabulary with a fixed seed: words drawn uniformly (specials excluded)
joined by spaces, 5-40 words for the tagger and 8-60 for sentiment. Texts are sorted by length and
cut into batches, as `predict` does. The model-only numbers feed pre-encoded arrays; the
end-to-end number starts from raw text (tokenize + encode + batch + run + results), and their
ratio shows what preprocessing costs.

`--json FILE` (checked before the run and written like `predict --output`, see `serve.output`)
holds: task, unit ("tokens/s" | "reviews/s"), model (as GET /metadata), input, texts, threads,
results (one per backend and batch size: backend "onnx-fp32" | "onnx-int8" | "torch-eager",
batch_size, throughput, p50_ms, p95_ms, batches) and end_to_end (batch_size,
raw_text_throughput, model_only_throughput, ratio).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from serve.options import MAX_BATCH, check_numbers, check_range
from serve.output import check_output, open_output
from serve.runtime import OPT_LEVELS, Item, ServingModel
from trainer.core.errors import ConfigError, DataError
from trainer.core.jsonio import dumps
from trainer.core.preprocess import PAD, UNK, URL

Runner = Callable[[dict[str, np.ndarray]], Any]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, type=Path, metavar="EXPORT_DIR")
    parser.add_argument("--torch", type=Path, metavar="RUN_DIR/model", help="also time torch eager (needs torch)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--batch-sizes", default="1,16,64,256", metavar="N,N,...")
    parser.add_argument("--input", type=Path, metavar="FILE", help="texts to use, one per line (default: generated)")
    parser.add_argument("--texts", type=int, default=1024, help="how many texts to generate or read")
    parser.add_argument("--min-seconds", type=float, default=1.0, help="time spent per backend and batch size")
    parser.add_argument("--e2e-batch-size", type=int, default=64, help="batch size of the end-to-end comparison")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime (and torch) threads (0: default)")
    parser.add_argument("--optimization", choices=sorted(OPT_LEVELS), default="all")
    parser.add_argument("--seed", type=int, default=0)


def parse_batch_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        sizes = []
    if not sizes:
        raise ConfigError(f"--batch-sizes must be comma-separated positive integers; got {text!r}")
    for size in sizes:
        check_range("--batch-sizes", size, 1, MAX_BATCH)
    return sizes


def load_texts(args: argparse.Namespace, model: ServingModel) -> list[str]:
    if args.input is not None:
        try:
            lines = args.input.read_bytes().decode("utf-8", errors="replace").splitlines()
        except OSError as exc:
            raise DataError(f"--input {args.input}: cannot read ({exc.strerror})") from None
        texts = [line for line in lines if line.strip()][: args.texts]
        if not texts:
            raise DataError(f"--input {args.input}: no non-empty lines")
        return texts
    rng = np.random.default_rng(args.seed)
    words = [w for w in model.vocabs.words.itos if w not in (PAD, UNK, URL)] or ["word"]
    low, high = model.kind.text_lengths
    return [" ".join(rng.choice(words, int(rng.integers(low, high + 1)))) for _ in range(args.texts)]


def make_batches(model: ServingModel, items: list[Item], batch_size: int) -> list[tuple[dict[str, np.ndarray], int]]:
    """(arrays, units) per batch of length-sorted items; units = tokens (tagger) or reviews."""
    items = sorted((item for item in items if item.encoded is not None), key=lambda item: item.size)
    batches = []
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        units = model.kind.units([item.size for item in chunk])
        batches.append((model.encoder.batch([item.encoded for item in chunk]), units))
    return batches


def measure(runner: Runner, batches: list[tuple[dict[str, np.ndarray], int]], min_seconds: float) -> dict[str, Any]:
    """Run the batches round-robin (at least once each) until `min_seconds` have passed."""
    runner(batches[0][0])  # warm-up: first-call allocation is not what a server sees
    latencies, units, i = [], 0, 0
    start = time.perf_counter()
    while i < len(batches) or time.perf_counter() - start < min_seconds:
        arrays, n = batches[i % len(batches)]
        t0 = time.perf_counter()
        runner(arrays)
        latencies.append(time.perf_counter() - t0)
        units += n
        i += 1
    ms = np.array(latencies) * 1000
    return {
        "throughput": units / float(np.sum(latencies)),
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "batches": len(latencies),
        "units": units,
    }


def end_to_end(model: ServingModel, texts: list[str], batch_size: int, min_seconds: float) -> dict[str, float]:
    """Raw text -> results against pre-encoded arrays -> logits, on the same texts and batch size."""
    units_per_pass = None
    raw_seconds, passes = 0.0, 0
    while passes < 1 or raw_seconds < min_seconds:
        t0 = time.perf_counter()
        items = [model.prepare_text(text) for text in texts]
        model.predict(items, batch_size)
        raw_seconds += time.perf_counter() - t0
        passes += 1
        if units_per_pass is None:
            units_per_pass = model.kind.units([i.size for i in items])
    raw = units_per_pass * passes / raw_seconds
    model_only = measure(model.run, make_batches(model, items, batch_size), min_seconds)["throughput"]
    return {
        "batch_size": batch_size,
        "raw_text_throughput": raw,
        "model_only_throughput": model_only,
        "ratio": raw / model_only,
    }


def run(args: argparse.Namespace) -> int:
    sizes = parse_batch_sizes(args.batch_sizes)
    check_numbers(args)
    target = check_output(args.json, "--json", str(args.input) if args.input else None) if args.json else None
    model = ServingModel(args.model, threads=args.threads, optimization=args.optimization)
    texts = load_texts(args, model)
    backends: dict[str, Runner] = {"onnx-fp32": model.run}
    if "int8" in model.meta:
        backends["onnx-int8"] = ServingModel(
            args.model, int8=True, threads=args.threads, optimization=args.optimization
        ).run
    if args.torch is not None:
        from serve.torch_check import torch_runner  # the one serve module that imports torch

        backends["torch-eager"] = torch_runner(args.torch, args.threads)
    items = [model.prepare_text(text) for text in texts]
    unit = f"{model.kind.count_unit}/s"
    results = []
    for size in sizes:
        batches = make_batches(model, items, size)
        for name, runner in backends.items():
            results.append({"backend": name, "batch_size": size, **measure(runner, batches, args.min_seconds)})
    e2e = end_to_end(model, texts, args.e2e_batch_size, args.min_seconds)
    report = {
        "task": model.task,
        "unit": unit,
        "model": model.describe(),
        "input": str(args.input) if args.input else "generated",
        "texts": len(texts),
        "threads": args.threads,
        "results": results,
        "end_to_end": e2e,
    }
    print(format_table(report))
    if target is not None:
        with open_output(target, "--json") as f:
            f.write(dumps(report, indent=2, nan_as_null=True) + "\n")
    return 0


def format_table(report: dict[str, Any]) -> str:
    unit = report["unit"]
    lines = [f"{'backend':<12} {'batch':>5} {unit:>14} {'p50 ms':>9} {'p95 ms':>9}"]
    for r in report["results"]:
        lines.append(
            f"{r['backend']:<12} {r['batch_size']:>5} {r['throughput']:>14,.0f} {r['p50_ms']:>9.2f} {r['p95_ms']:>9.2f}"
        )
    e2e = report["end_to_end"]
    lines.append(
        f"end to end at batch {e2e['batch_size']}: {e2e['raw_text_throughput']:,.0f} {unit} from raw text vs "
        f"{e2e['model_only_throughput']:,.0f} model only (ratio {e2e['ratio']:.2f})"
    )
    return "\n".join(lines)
