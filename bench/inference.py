"""Inference: onnxruntime fp32 / int8 and torch eager at batch 1, 64, 256; the int8 accuracy change;
`serve predict` from raw text against model-only throughput; and every figure beside the FLOP floor.

Inputs are real held-out text: the test split of the model's data set (Brown sentences joined by
spaces, or Rotten Tomatoes reviews), repeated up to `--texts` lines.

- backends: `python -m serve bench --input TEST_TEXT --torch RUN_DIR/model` (the product's own bench).
- end to end: `python -m serve predict` as a subprocess on `--e2e-lines` lines (median of
  `--e2e-repeats` runs) and on 1 line (best of 3); the difference in wall time (start-up and
  model load cancel out) over the difference in tokens is
  what a user gets from raw text to JSON Lines, compared with onnxruntime fp32 model-only
  throughput at the same batch size.
- FLOP floor: `bench.flops` per token (useful work: real characters and tokens only) and the best
  1024^3 sgemm rate on 1 and 2 threads; floor = rate / FLOPs per token.

    python -m bench.inference --export exports/bench-tagger --model runs/bench-tagger/model \
        --json bench/results/inference-speed/tagger.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench.common import add_json_arg, publish, timed
from bench.flops import executed_flops_per_token, flops_per_token, matmul_gflops, numpy_matmul_gflops
from trainer.artifact import read_json, read_meta
from trainer.core.data import open_dataset
from trainer.core.preprocess import Encoder, tokenize
from trainer.core.tasks import task_kind


def held_out_texts(spec: str, n: int) -> list[str]:
    """`n` lines of held-out raw text, the test split repeated as needed."""
    examples = list(open_dataset(spec).examples("test"))
    texts = [e.line() for e in examples]
    return list(itertools.islice(itertools.cycle(texts), n))


def serve_bench(
    export: Path,
    model: Path | None,
    texts: list[str],
    batch_sizes: str,
    min_seconds: float,
    workdir: Path,
    extra: Sequence[str] = (),
) -> dict:
    """`python -m serve bench` on these texts: onnxruntime fp32, int8 (if exported) and, given the
    artifact `model`, torch eager; `extra` flags (--threads, --optimization) go to serve bench."""
    input_file, out = workdir / "input.txt", workdir / "serve-bench.json"
    input_file.write_text("\n".join(texts) + "\n", encoding="utf-8")
    command = [
        sys.executable,
        "-m",
        "serve",
        "bench",
        "--model",
        str(export),
        *(["--torch", str(model)] if model is not None else []),
        "--input",
        str(input_file),
        "--texts",
        str(len(texts)),
        "--batch-sizes",
        batch_sizes,
        "--min-seconds",
        str(min_seconds),
        "--json",
        str(out),
        *extra,
    ]
    checked(command)
    return {**json.loads(out.read_text(encoding="utf-8")), "command": " ".join(command)}


def checked(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"error: `{' '.join(command)}` failed ({done.returncode}):\n{done.stderr[-2000:]}")


def predict_seconds(export: Path, input_file: Path, batch_size: int, workdir: Path, extra: Sequence[str] = ()) -> float:
    command = [
        sys.executable,
        "-m",
        "serve",
        "predict",
        "--model",
        str(export),
        "--input",
        str(input_file),
        "--output",
        str(workdir / "predict.jsonl"),
        "--batch-size",
        str(batch_size),
        *extra,
    ]
    with timed() as t:
        checked(command)
    return t["s"]


def end_to_end(
    export: Path, texts: list[str], task: str, batch_size: int, workdir: Path, repeats: int, extra: Sequence[str] = ()
) -> dict:
    """Marginal raw-text throughput of the `serve predict` CLI (`extra`: more of its flags): (N lines - 1 line)
    / time difference, with the median of `repeats` full runs."""
    full, one = workdir / "e2e-full.txt", workdir / "e2e-one.txt"
    full.write_text("\n".join(texts) + "\n", encoding="utf-8")
    one.write_text(texts[0] + "\n", encoding="utf-8")
    startup = min(predict_seconds(export, one, batch_size, workdir, extra) for _ in range(3))  # start-up is noisy
    runs = [predict_seconds(export, full, batch_size, workdir, extra) for _ in range(repeats)]
    total = statistics.median(runs)
    if total <= startup:
        sys.exit(
            f"error: {len(texts)} lines ran no longer than 1 line ({total:.2f} s vs {startup:.2f} s); raise --e2e-lines"
        )
    units = task_kind(task).units([len(tokenize(t)) for t in texts[1:]])  # tokens or reviews
    return {
        "lines": len(texts),
        "batch_size": batch_size,
        "startup_s": startup,
        "total_s": total,
        "runs_s": runs,
        "throughput": units / (total - startup),
    }


def padded_batches(encoder: Encoder, token_lists: list[list[str]], batch_size: int) -> list[dict]:
    """The arrays serving runs: inputs sorted by length, `batch_size` at a time, right-padded."""
    encoded = sorted((encoder.encode(t) for t in token_lists if t), key=lambda e: len(e.words))
    return [encoder.batch(encoded[i : i + batch_size]) for i in range(0, len(encoded), batch_size)]


def floor(model: Path, texts: list[str], batch_sizes: list[int], min_seconds: float) -> dict:
    """FLOPs per token of the artifact's model and the machine's matmul rates -> tokens/s floor;
    also the FLOPs padded batches actually execute per token at each batch size."""
    config, preprocess, vocabs, _ = read_meta(model)
    token_lists = [tokenize(text) for text in texts]
    tokens = [t for tokens in token_lists for t in tokens]
    chars = sum(min(len(t), preprocess.max_word_len) for t in tokens) / len(tokens)
    per_token = flops_per_token(config, len(vocabs.labels), chars)
    encoder = Encoder(vocabs, preprocess)
    executed = {
        n: executed_flops_per_token(config, len(vocabs.labels), padded_batches(encoder, token_lists, n))
        for n in batch_sizes
    }
    rates = {
        "torch_1_thread": matmul_gflops(1, seconds=min_seconds),
        "torch_2_threads": matmul_gflops(2, seconds=min_seconds),
        "numpy_default": numpy_matmul_gflops(seconds=min_seconds),
    }
    return {
        "flops_per_token": per_token,
        "chars_per_token": chars,
        "tokens_per_text": len(tokens) / len(texts),
        "executed_flops_per_token": executed,
        "matmul_gflops": rates,
        "floor_tokens_per_s": max(rates.values()) * 1e9 / per_token,
    }


def int8_change(export: Path) -> dict | None:
    path = export / "validation.json"
    section = read_json(path).get("int8") if path.is_file() else None
    if not section or "int8_accuracy" not in section:
        return None
    return {k: section.get(k) for k in ("split", "scored", "fp32_accuracy", "int8_accuracy", "argmax_agreement")} | {
        "accuracy_change": section["int8_accuracy"] - section["fp32_accuracy"]
    }


def model_only_ratio(bench: dict, e2e: dict) -> float | None:
    """End-to-end CLI throughput over onnxruntime fp32 model-only throughput at the same batch size."""
    same = [
        r["throughput"]
        for r in bench["results"]
        if r["backend"] == "onnx-fp32" and r["batch_size"] == e2e["batch_size"]
    ]
    return e2e["throughput"] / same[0] if same else None


def rows(bench: dict, e2e: dict, limits: dict) -> list[dict]:
    """One row per measured figure with its fraction of the floor (in tokens/s) and padding overhead."""
    # The floor in the bench's unit: tokens/s for the tagger, reviews/s for sentiment.
    per_unit = 1.0 if task_kind(bench["task"]).per_token else limits["tokens_per_text"]
    floor_units = limits["floor_tokens_per_s"] / per_unit
    executed = limits["executed_flops_per_token"]
    out = [
        {
            "figure": f"{r['backend']} batch {r['batch_size']}",
            "throughput": r["throughput"],
            "p95_ms": r["p95_ms"],
            "of_floor": r["throughput"] / floor_units,
            "padding_x": executed[r["batch_size"]] / limits["flops_per_token"] if r["batch_size"] in executed else None,
        }
        for r in bench["results"]
    ]
    out.append(
        {
            "figure": f"serve predict CLI, raw text, batch {e2e['batch_size']}",
            "throughput": e2e["throughput"],
            "of_floor": e2e["throughput"] / floor_units,
        }
    )
    return out


def run(args: argparse.Namespace) -> dict:
    config = read_meta(args.model)[0]
    # Never a spec read from the artifact: an artifact must not steer which files are opened.
    spec = args.data or {"tagger": "brown", "sentiment": "rotten-tomatoes"}[config.task]
    texts = held_out_texts(spec, args.texts)
    with tempfile.TemporaryDirectory(prefix="bench-inference-") as tmp:
        bench = serve_bench(args.export, args.model, texts, args.batch_sizes, args.min_seconds, Path(tmp))
        e2e = end_to_end(
            args.export,
            held_out_texts(spec, args.e2e_lines),
            config.task,
            bench["end_to_end"]["batch_size"],
            Path(tmp),
            args.e2e_repeats,
        )
    e2e["of_model_only"] = model_only_ratio(bench, e2e)
    sizes = sorted({int(n) for n in args.batch_sizes.split(",")} | {e2e["batch_size"]})
    limits = floor(args.model, texts, sizes, args.min_seconds)
    return {
        "data": spec,
        "task": config.task,
        "unit": bench["unit"],
        "serve_bench": bench,
        "end_to_end_cli": e2e,
        "int8": int8_change(args.export),
        "floor": limits,
        "table": rows(bench, e2e, limits),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.inference", description=__doc__.split("\n")[0])
    parser.add_argument("--export", required=True, type=Path, metavar="EXPORT_DIR")
    parser.add_argument(
        "--model", required=True, type=Path, metavar="RUN_DIR/model", help="the artifact EXPORT_DIR came from"
    )
    parser.add_argument(
        "--data", help="data spec of the test text (default: brown or rotten-tomatoes by the model's task)"
    )
    parser.add_argument("--batch-sizes", default="1,64,256")
    parser.add_argument("--texts", type=int, default=2048, help="test lines fed to serve bench (default: 2048)")
    parser.add_argument(
        "--e2e-lines", type=int, default=20_000, help="lines for the serve predict CLI run (default: 20,000)"
    )
    parser.add_argument("--e2e-repeats", type=int, default=3, help="full CLI runs; the median counts (default: 3)")
    parser.add_argument("--min-seconds", type=float, default=2.0, help="time per backend and batch size (default: 2)")
    add_json_arg(parser)
    args = parser.parse_args(argv)
    results = publish("inference", args, run(args), ["figure", "throughput", "p95_ms", "of_floor", "padding_x"])[
        "results"
    ]
    limits = results["floor"]
    print(
        f"unit: {results['unit']}; floor {limits['floor_tokens_per_s']:,.0f} tokens/s "
        f"({limits['flops_per_token']:,.0f} FLOPs/token at {max(limits['matmul_gflops'].values()):.1f} GFLOP/s)"
    )
    e2e, bench_e2e = results["end_to_end_cli"], results["serve_bench"]["end_to_end"]
    print(
        f"serve predict CLI: {e2e['of_model_only']:.2f} of model-only; serve bench in-process raw text: "
        f"{bench_e2e['ratio']:.2f} of model-only"
    )
    if results["int8"]:
        print(f"int8 accuracy change ({results['int8']['split']}): {results['int8']['accuracy_change']:+.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
