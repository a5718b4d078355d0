"""`python -m trainer.demo` (`./launch.sh demo`): the whole pipeline on embedded defaults, on CPU.

For each task: fetch the data, train a short schedule, export to ONNX with validation, run
`serve predict --verify` on held-out test text, time it with `serve bench`, then print one summary
table. Every step is a subprocess of the project's own CLIs, so this module imports no torch.

Re-running reuses what is there: `fetch` is a no-op on a valid cache, training is skipped when
`runs/demo-TASK/model` exists (an interrupted run resumes from its checkpoint), export is skipped
when `exports/demo-TASK` is newer than the model. `--fresh` retrains and re-exports.
Writes runs/demo-{tagger,sentiment}, exports/demo-{tagger,sentiment}; the held-out text,
predictions and bench JSON go to runs/demo-TASK/serve/.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from trainer.core.cli import Parser
from trainer.core.data import open_dataset
from trainer.core.jsonio import loads
from trainer.core.tasks import task_kind
from trainer.train import TASK_PREPROCESS

# Short CPU schedules of the default models, so that the whole demo (set-up and downloads included)
# stays well under 15 minutes on a 2-core machine, even a shared one. One thread per process: these
# LSTM matrices are too small for two (docs/BENCHMARKS.md, section 3). Any config key can go here.
TRAINING = {
    "tagger": {
        "data": "brown",
        "args": {"max_steps": 800, "eval_every": 400, "warmup_steps": 50, "threads": 1},
    },
    "sentiment": {
        "data": "rotten-tomatoes",
        "args": {"max_steps": 1000, "eval_every": 250, "warmup_steps": 50, "threads": 1},
    },
}
HELD_OUT = 300  # test-split sentences / reviews fed to `serve predict --verify`
ROOT = Path(__file__).resolve().parents[1]


class StepFailed(Exception):
    pass


def sh(*args: object, capture: bool = False) -> subprocess.CompletedProcess:
    """Run one project CLI from the repository root; stop the demo with its command line if it fails."""
    cmd = [sys.executable, *map(str, args)]
    print(f"\n$ python {' '.join(cmd[1:])}", flush=True)  # the command as a user would type it
    result = subprocess.run(cmd, cwd=ROOT, text=True, capture_output=capture)
    if capture:
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr)
    if result.returncode != 0:
        raise StepFailed(f"`{' '.join(cmd[1:])}` exited with status {result.returncode}")
    return result


def train(task: str, run_dir: Path, fresh: bool, max_steps: int | None) -> None:
    if fresh and run_dir.exists():
        shutil.rmtree(run_dir)
    if (run_dir / "model" / "metrics.json").is_file():
        print(f"\n{task}: reusing {run_dir / 'model'} (pass --fresh to retrain)")
        return
    spec = TRAINING[task]
    overrides = {**spec["args"], **({"max_steps": max_steps, "eval_every": max_steps} if max_steps else {})}
    extra = [x for key, value in overrides.items() for x in (f"--{key}", value)]
    resume = ["--resume", "auto"] if (run_dir / "checkpoints").is_dir() else []
    sh("-m", "trainer", "train", "--task", task, "--data", spec["data"], "--out", run_dir, *resume, *extra)


def export(task: str, run_dir: Path, export_dir: Path, fresh: bool) -> None:
    model_json, weights = export_dir / "model.json", run_dir / "model" / "model.safetensors"
    if not fresh and model_json.is_file() and model_json.stat().st_mtime > weights.stat().st_mtime:
        print(f"\nreusing {export_dir} (newer than {weights})")
        return
    sh("-m", "export", "--model", run_dir / "model", "--out", export_dir, "--force", "--data", TRAINING[task]["data"])


def write_held_out(task: str, path: Path) -> list[Any]:
    """The first HELD_OUT test examples, one per line (tagger: words joined by spaces), and their gold labels."""
    dataset = open_dataset(TRAINING[task]["data"])
    lines, gold = [], []
    for example in dataset.examples("test"):
        lines.append(example.line())
        gold.append(example.target)
        if len(lines) == HELD_OUT:
            break
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return gold


def held_out_accuracy(task: str, predictions: Path, gold: list[Any]) -> float:
    results = [loads(line) for line in predictions.read_text(encoding="utf-8").splitlines()]
    kind = task_kind(task)
    predicted = [r[kind.decoder.label_field] for r in results]
    if kind.per_token:
        pairs = [(p, g) for labels, tags in zip(predicted, gold) for p, g in zip(labels, tags)]
    else:
        pairs = list(zip(predicted, gold))
    return sum(p == g for p, g in pairs) / max(len(pairs), 1)


def serve_task(task: str, run_dir: Path, export_dir: Path) -> dict[str, Any]:
    work = run_dir / "serve"
    text, predictions, bench = work / "heldout.txt", work / "predictions.jsonl", work / "bench.json"
    gold = write_held_out(task, text)
    pretokenized = ["--pretokenized"] if task_kind(task).per_token else []  # tagged words are already tokens
    start = time.perf_counter()
    result = sh(
        "-m",
        "serve",
        "predict",
        "--model",
        export_dir,
        "--input",
        text,
        "--output",
        predictions,
        *pretokenized,
        "--verify",
        run_dir / "model",
        capture=True,
    )
    predict_seconds = time.perf_counter() - start
    verify = re.search(r"max abs diff (\S+)", result.stderr)
    sh(
        "-m",
        "serve",
        "bench",
        "--model",
        export_dir,
        "--input",
        text,
        "--json",
        bench,
        "--batch-sizes",
        "1,64",
        "--min-seconds",
        "0.5",
    )
    report = loads(bench.read_text())
    at_64 = next(r for r in report["results"] if r["backend"] == "onnx-fp32" and r["batch_size"] == 64)
    return {
        "verify_diff": verify.group(1) if verify else "?",
        "held_out_accuracy": held_out_accuracy(task, predictions, gold),
        "held_out": len(gold),
        "predict_seconds": predict_seconds,
        "throughput": at_64["throughput"],
        "unit": report["unit"],
        "e2e_ratio": report["end_to_end"]["ratio"],
    }


def summary_row(task: str, run_dir: Path, export_dir: Path, served: dict[str, Any]) -> list[str]:
    metrics = loads((run_dir / "model" / "metrics.json").read_text())
    validation = loads((export_dir / "validation.json").read_text())
    test = (metrics.get("test") or {}).get("accuracy")
    onnx_diff = validation.get("max_abs_diff")
    return [
        task,
        str(metrics.get("steps", "?")),
        f"{test:.4f}" if test is not None else "n/a",
        f"{onnx_diff:.2g}" if isinstance(onnx_diff, float) else str(onnx_diff),
        served["verify_diff"],
        f"{served['held_out_accuracy']:.4f} ({served['held_out']})",
        f"{served['throughput']:,.0f} {served['unit']}",
        f"{served['e2e_ratio']:.2f}",
    ]


def print_table(rows: list[list[str]]) -> None:
    header = [
        "task",
        "steps",
        "test acc",
        "onnx max diff",
        "verify diff",
        "served acc (n)",
        "onnx fp32 @64",
        "e2e/model",
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print()
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)))


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m trainer.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--fresh", action="store_true", help="retrain and re-export even if results exist")
    parser.add_argument("--workdir", type=Path, default=ROOT, help="where runs/ and exports/ go (default: the repo)")
    parser.add_argument("--max-steps", type=int, help="override the schedules' max_steps (a quick smoke run)")
    parser.add_argument("--tasks", default="tagger,sentiment", help="comma-separated subset of tagger,sentiment")
    args = parser.parse_args(argv)
    tasks = [t for t in args.tasks.split(",") if t]
    if not tasks or any(t not in TRAINING for t in tasks):
        parser.error(f"--tasks must be a comma-separated subset of {','.join(TRAINING)}; got {args.tasks!r}")
    os.chdir(ROOT)  # the CLIs and trainer.core.data resolve ./data, runs/ and exports/ from here
    started = time.perf_counter()
    rows = []
    try:
        for task in tasks:  # the data set, and the lexicon the task's schedule names (the tagger's WordNet)
            for name in filter(None, (TRAINING[task]["data"], TASK_PREPROCESS[task].get("lexicon"))):
                sh("-m", "trainer", "fetch", name)
        for task in tasks:
            workdir = args.workdir.resolve()
            run_dir, export_dir = workdir / "runs" / f"demo-{task}", workdir / "exports" / f"demo-{task}"
            train(task, run_dir, args.fresh, args.max_steps)
            export(task, run_dir, export_dir, args.fresh)
            rows.append(summary_row(task, run_dir, export_dir, serve_task(task, run_dir, export_dir)))
    except StepFailed as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 1
    print_table(rows)
    print(
        f"\ndemo finished in {time.perf_counter() - started:.0f} s; "
        "test acc from runs/demo-*/model/metrics.json (torch), onnx max diff from exports/demo-*/validation.json, "
        "verify diff from `serve predict --verify`, served acc = onnxruntime on the held-out text, "
        "throughput from `serve bench` (model only, batch 64); e2e/model = raw-text over model-only throughput"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
