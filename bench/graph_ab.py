"""The faster tagger graph, A/B in one run: the plain graph (the model traced as it is, today's export
before `--graph fast`) and the fast one (char table + one LSTM node per layer), both exported from
one checkpoint; then `serve predict` from raw text against NLTK's averaged perceptron.

- exports: `python -m export --graph plain|fast --quantize int8 --data SPEC`, each validated against
  torch within the model's atol (the export fails otherwise).
- model only: `python -m serve bench` on `--texts` held-out lines for each export, alternating
  plain, fast, and the fast graph with onnxruntime options (1 intra-op thread, lower graph
  optimization levels) for `--rounds` rounds; the median of the rounds counts. % of the FLOP
  floor as in bench.inference.
- end to end: the `serve predict` CLI on `--e2e-lines` raw lines (bench.inference.end_to_end:
  start-up excluded, median of `--e2e-repeats`) for each graph, and for the fast one also with
  `--threads 1` and `--int8`; and in the same run NLTK's `NLTKWordTokenizer` +
  `PerceptronTagger(load=False)` trained on the same train split as bench.tagger_accuracy, timed
  over the same lines (median of the same number of passes).
- accuracy: both taggers on the gold test tokens (bench.tagger_accuracy's `score`), ours through
  the fast export's `ServingModel`, fp32 and int8.

    python -m bench.graph_ab --model runs/bench-tagger/model --json bench/results/inference-speed/graph-ab.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import add_json_arg, publish, timed
from bench.inference import checked, end_to_end, floor, held_out_texts, serve_bench
from bench.tagger_accuracy import load_split, score, train_perceptron, train_words
from trainer.artifact import read_json, read_meta

GRAPHS = ("plain", "fast")
# (label, graph, serve bench flags, batch sizes: None for --batch-sizes): the onnxruntime options only at batch 64
BENCH_VARIANTS = (
    ("plain", "plain", (), None),
    ("fast", "fast", (), None),
    ("fast, threads 1", "fast", ("--threads", "1"), "64"),
    ("fast, optimization basic", "fast", ("--optimization", "basic"), "64"),
    ("fast, optimization disable", "fast", ("--optimization", "disable"), "64"),
)
# (label, graph, serve predict flags)
E2E_VARIANTS = (
    ("plain", "plain", ()),
    ("fast", "fast", ()),
    ("fast, threads 1", "fast", ("--threads", "1")),
    ("fast int8", "fast", ("--int8",)),
    ("fast int8, threads 1", "fast", ("--int8", "--threads", "1")),
)


def load() -> float:
    return round(os.getloadavg()[0], 2)


def export(model: Path, out: Path, graph: str, data: str) -> dict[str, Any]:
    command = [sys.executable, "-m", "export", "--model", str(model), "--out", str(out), "--graph", graph]
    command += ["--quantize", "int8", "--data", data, "--force"]
    with timed() as t:
        checked(command)
    report = read_json(out / "validation.json")
    return {
        "dir": out,
        "seconds": t["s"],
        "onnx_bytes": (out / "model.onnx").stat().st_size,
        "max_abs_diff": report["max_abs_diff"],
        "checks": report["checks"],
        "int8_accuracy": report["int8"]["int8_accuracy"],
        "fp32_accuracy": report["int8"]["fp32_accuracy"],
    }


def model_only(exports: dict, texts: list[str], args: argparse.Namespace, workdir: Path) -> list[dict]:
    """serve bench, the variants alternating; one record per round, variant, backend and batch size."""
    records = []
    for round_ in range(args.rounds):
        for label, graph, flags, sizes in BENCH_VARIANTS:
            at = load()
            bench = serve_bench(
                exports[graph]["dir"], None, texts, sizes or args.batch_sizes, args.min_seconds, workdir, flags
            )
            for r in bench["results"]:
                records.append({"round": round_, "variant": label, "load": at, **r})
    return records


def nltk_end_to_end(tagger: Any, lines: list[str], repeats: int) -> dict[str, Any]:
    """NLTK tokenize + tag over the raw lines, in this process; tokens/s of the median pass."""
    from nltk.tokenize import NLTKWordTokenizer

    tokenizer = NLTKWordTokenizer()
    runs, tokens = [], 0
    for _ in range(repeats):
        with timed() as t:
            tokens = sum(len(tagger.tag(tokenizer.tokenize(line))) for line in lines)
        runs.append(t["s"])
    return {"lines": len(lines), "tokens": tokens, "runs_s": runs, "throughput": tokens / statistics.median(runs)}


def our_tags(export_dir: Path, test: list, int8: bool) -> list[list[str]]:
    from serve.runtime import ServingModel

    model = ServingModel(export_dir, int8=int8)
    results = model.predict([model.prepare_tokens(s.words) for s in test], 64)
    return [r["tags"] for r in results]


def summary(records: list[dict], limits: dict) -> list[dict]:
    """Median over rounds per variant, backend and batch size, with % of the FLOP floor and / plain."""
    medians: dict[tuple, float] = {}
    for key in {(r["variant"], r["backend"], r["batch_size"]) for r in records}:
        medians[key] = statistics.median(
            r["throughput"] for r in records if (r["variant"], r["backend"], r["batch_size"]) == key
        )
    order = [label for label, *_ in BENCH_VARIANTS]
    rows = []
    for variant, backend, size in sorted(medians, key=lambda k: (k[2], k[1], order.index(k[0]))):
        value, plain = medians[(variant, backend, size)], medians.get(("plain", backend, size))
        rows.append(
            {
                "figure": f"{variant}: {backend} batch {size}",
                "throughput": value,
                "of_floor": value / limits["floor_tokens_per_s"],
                "vs_plain": value / plain if plain and variant != "plain" else None,
            }
        )
    return rows


def run(args: argparse.Namespace) -> dict:
    preprocess = read_meta(args.model)[1]
    texts = held_out_texts(args.data, "tagger", args.texts)
    lines = held_out_texts(args.data, "tagger", args.e2e_lines)
    with tempfile.TemporaryDirectory(prefix="bench-graph-ab-") as tmp:
        work = Path(tmp)
        exports = {g: export(args.model, work / g, g, args.data) for g in GRAPHS}
        records = model_only(exports, texts, args, work)
        e2e = {}
        for label, graph, flags in E2E_VARIANTS:
            at = load()
            e2e[label] = {
                **end_to_end(exports[graph]["dir"], lines, "tagger", 64, work, args.e2e_repeats, flags),
                "load": at,
            }
        train, test = load_split(args.data, "train"), load_split(args.data, "test")
        with timed() as fit:
            tagger = train_perceptron(train, args.nr_iter, args.seed)
        at = load()
        nltk = {**nltk_end_to_end(tagger, lines, args.e2e_repeats), "load": at, "train_s": fit["s"]}
        known = train_words(train, preprocess)
        accuracy = {
            "fast fp32": score(test, our_tags(exports["fast"]["dir"], test, False), known, preprocess),
            "fast int8": score(test, our_tags(exports["fast"]["dir"], test, True), known, preprocess),
            "nltk perceptron": score(
                test, [[t for _, t in tagger.tag(list(s.words))] for s in test], known, preprocess
            ),
        }
    limits = floor(args.model, texts, [int(n) for n in args.batch_sizes.split(",")], args.min_seconds)
    for entry in exports.values():
        entry["dir"] = str(entry["dir"].name)
    table = summary(records, limits)
    for label, entry in e2e.items():
        entry["over_nltk"] = entry["throughput"] / nltk["throughput"]
        table.append({"figure": f"serve predict CLI, {label}, raw text", "throughput": entry["throughput"]})
    table.append({"figure": "NLTK tokenize + perceptron, raw text", "throughput": nltk["throughput"]})
    return {
        "data": args.data,
        "exports": exports,
        "model_only": records,
        "end_to_end": e2e,
        "nltk": nltk,
        "accuracy": accuracy,
        "floor": limits,
        "table": table,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.graph_ab", description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, type=Path, metavar="RUN_DIR/model", help="a trained tagger")
    parser.add_argument("--data", default="brown", help="tagger data spec (default: brown)")
    parser.add_argument("--batch-sizes", default="1,64,256")
    parser.add_argument("--texts", type=int, default=2048, help="test lines fed to serve bench (default: 2048)")
    parser.add_argument("--rounds", type=int, default=3, help="serve bench rounds per graph (default: 3)")
    parser.add_argument("--min-seconds", type=float, default=1.5, help="per backend and batch size (default: 1.5)")
    parser.add_argument("--e2e-lines", type=int, default=10_000, help="raw lines for end to end (default: 10,000)")
    parser.add_argument("--e2e-repeats", type=int, default=3, help="end-to-end runs; the median counts (default: 3)")
    parser.add_argument("--nr-iter", type=int, default=5, help="perceptron training passes (default: 5)")
    parser.add_argument("--seed", type=int, default=1234)
    add_json_arg(parser)
    args = parser.parse_args(argv)
    results = publish("graph_ab", args, run(args), ["figure", "throughput", "of_floor", "vs_plain"])["results"]
    print("test accuracy: " + ", ".join(f"{k} {v['accuracy']:.4f}" for k, v in results["accuracy"].items()))
    print("serve predict / NLTK: " + ", ".join(f"{k} {v['over_nltk']:.2f}x" for k, v in results["end_to_end"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
