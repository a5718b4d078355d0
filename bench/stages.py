"""Where raw text's time goes, in CPU seconds, and the model on one thread: figures a shared machine does not blur.

Wall-clock ratios need a quiet machine; CPU seconds per stage, and the best of several one-thread rounds,
hold up under other people's load. On `--lines` held-out lines (the test split, repeated as
bench.inference does), in this process:

- stages: `serve predict`'s steps one after another on one onnxruntime thread, each timed in process CPU
  seconds: read (parse the records), tokenize, encode, batch (length-sorted, `--batch-size`), model,
  result, write (the JSON lines). Pass 1 runs the distinct lines among `--lines` with empty memos (text
  never seen); pass 2 runs them again, as a served stream or a repeated test split does (the
  tokenizer's and encoder's memos then answer).
  `pipeline_bound` is model CPU over all stages' CPU: the share of model-only throughput that raw text
  can reach when every stage's work is spread perfectly over the cores.
- one thread: onnxruntime on each export given and, with `--torch`, torch eager, at `--batch-size`,
  best of `--rounds` rounds; beside the one-thread FLOP floor (bench.flops; the best one-thread sgemm
  rate of the same rounds).

    python -m bench.stages --export exports/bench-sentiment --torch runs/bench-sentiment/model \
        --compare exports/bench-sentiment-plain --json bench/results/raw-text/stages-sentiment.json
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import add_json_arg, publish
from bench.flops import flops_per_token, matmul_gflops
from bench.inference import held_out_texts
from serve.records import RecordParser, output_line
from serve.runtime import ServingModel
from trainer.core.config import model_config_from_dict

STAGES = ("read", "tokenize", "encode", "batch", "model", "result", "write")


def stage_seconds(model: ServingModel, lines: list[str], batch_size: int) -> tuple[dict[str, float], int]:
    """CPU seconds of each stage over `lines`, and the units (tokens or reviews) they held."""
    spent: dict[str, float] = {}
    clock = [time.process_time()]

    def done(stage: str) -> None:
        now = time.process_time()
        spent[stage], clock[0] = now - clock[0], now

    parser = RecordParser("text", "text", "strict", tokens_ok=model.kind.tokens_input)
    records = [parser.parse(f"{line}\n".encode(), f"line {i + 1}", first=i == 0) for i, line in enumerate(lines)]
    done("read")
    tokens = [model.tokenizer.tokenize(r.value) for r in records]  # type: ignore[union-attr, arg-type]
    done("tokenize")
    items = [model.prepare_tokens(t) for t in tokens]
    done("encode")
    order = sorted((i for i, item in enumerate(items) if item.encoded is not None), key=lambda i: items[i].size)
    chunks = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    batches = [model.encoder.batch([items[i].encoded for i in chunk]) for chunk in chunks]  # type: ignore[misc]
    done("batch")
    logits = [model.run(b) for b in batches]
    done("model")
    results = [model._result(items[i], rows[row]) for chunk, rows in zip(chunks, logits) for row, i in enumerate(chunk)]
    done("result")
    "".join(output_line(r, result) for r, result in zip(records, results))  # type: ignore[arg-type]
    done("write")
    units = model.kind.units([len(t) for t in tokens])  # tokens, or the texts that have any
    return spent, units


def stage_rows(model: ServingModel, lines: list[str], batch_size: int) -> list[dict[str, Any]]:
    rows = []
    for name in ("pass 1 (empty memos)", "pass 2 (repeated lines)"):
        spent, units = stage_seconds(model, lines, batch_size)
        total = sum(spent.values())
        row: dict[str, Any] = {"figure": f"stages, {name}", "units": units}
        row.update({f"{s}_us": 1e6 * spent[s] / units for s in STAGES})
        row["pipeline_bound"] = spent["model"] / total
        rows.append(row)
    return rows


def best_rate(run: Callable[[], Any], units: int, rounds: int) -> float:
    best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        run()
        best = max(best, units / (time.perf_counter() - start))
    return best


def torch_runner(artifact_dir: Path, batches: list[dict]) -> Callable[[], Any]:
    import torch

    from trainer.artifact import load_artifact

    torch.set_num_threads(1)
    net = load_artifact(artifact_dir).model.eval()

    def run() -> None:
        with torch.inference_mode():
            for b in batches:
                net(*(torch.from_numpy(b[name]) for name in net.input_names))

    return run


def one_thread_rows(args: argparse.Namespace, lines: list[str]) -> list[dict[str, Any]]:
    """Best-of-rounds units/s on one thread per export (and torch), with the one-thread floor."""
    models = {str(e): ServingModel(e, threads=1) for e in [args.export, *args.compare]}
    first = models[str(args.export)]
    items = sorted((i for i in map(first.prepare_text, lines[: args.texts]) if i.encoded), key=lambda i: i.size)
    batches = [
        first.encoder.batch([i.encoded for i in items[s : s + args.batch_size]])
        for s in range(0, len(items), args.batch_size)
    ]  # type: ignore[misc]
    tokens = sum(int(b["lengths"].sum()) for b in batches)
    units = first.kind.units([i.size for i in items])
    runners = {name: (lambda m=m: [m.run(b) for b in batches]) for name, m in models.items()}
    if args.torch is not None:
        runners["torch eager"] = torch_runner(args.torch, batches)
    rates = {name: 0.0 for name in runners}
    gflops = 0.0
    for _ in range(args.rounds):  # interleaved, so every runner sees the same spells of load
        gflops = max(gflops, matmul_gflops(1, seconds=0.3))
        for name, run in runners.items():
            rates[name] = max(rates[name], best_rate(run, units, 1))
    chars = sum(min(len(t), first.preprocess.max_word_len) for i in items for t in i.tokens) / tokens
    config = model_config(first)
    floor = gflops * 1e9 / flops_per_token(config, len(first.labels), chars) * units / tokens
    torch_rate = rates.get("torch eager")
    return [
        {
            "figure": f"one thread, batch {args.batch_size}: {name}",
            "throughput": rate,
            "of_floor": rate / floor,
            "over_torch": rate / torch_rate if torch_rate else None,
        }
        for name, rate in rates.items()
    ] + [{"figure": f"one-thread FLOP floor ({gflops:.1f} GFLOP/s sgemm)", "throughput": floor}]


def model_config(model: ServingModel) -> Any:
    """The export's model config (model.json `model`), as the FLOP count reads it."""
    return model_config_from_dict(model.task, model.meta["model"], source=str(model.model_json))


def run(args: argparse.Namespace) -> dict[str, Any]:
    model = ServingModel(args.export, threads=1)
    lines = held_out_texts(args.data or {"tagger": "brown", "sentiment": "rotten-tomatoes"}[model.task], args.lines)
    stages = stage_rows(model, list(dict.fromkeys(lines)), args.batch_size)
    return {"task": model.task, "stages": stages, "table": stages + one_thread_rows(args, lines)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stages", description=__doc__.split("\n")[0])
    parser.add_argument("--export", required=True, type=Path, metavar="EXPORT_DIR")
    parser.add_argument("--compare", type=str, nargs="*", default=[], metavar="EXPORT_DIR", help="more exports to time")
    parser.add_argument("--torch", type=Path, metavar="RUN_DIR/model", help="also time torch eager on one thread")
    parser.add_argument("--data", help="data spec of the test text (default: by the model's task)")
    parser.add_argument("--lines", type=int, default=5000, help="lines for the stage timings (default: 5,000)")
    parser.add_argument("--texts", type=int, default=2048, help="lines for the one-thread rounds (default: 2,048)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=6, help="one-thread rounds; the best counts (default: 6)")
    add_json_arg(parser)
    args = parser.parse_args(argv)
    columns = ["figure", "throughput", "of_floor", "over_torch", "pipeline_bound"]
    columns += [f"{s}_us" for s in STAGES]
    publish("stages", args, run(args), columns)
    return 0


if __name__ == "__main__":
    sys.exit(main())
