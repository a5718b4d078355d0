"""Training cost of several schedules of one task, measured back to back in one run.

Each schedule is `python -m trainer train` with its own extra flags, trained for `--steps` optimizer
steps from the same seed (so the same batches), one thread each, one run at a time; the rounds go
A B C, A B C, ... so that a change in the machine's load falls on every schedule alike. The figure
is the loop's own `train_seconds` (no evaluation, no checkpoints) per step, its median over the
rounds, and its ratio to the first schedule. A whole schedule's time is that times the steps it
takes, which early stopping decides (docs/BENCHMARKS.md gives both).

    python -m bench.schedule_cost --task sentiment --steps 150 --rounds 3 \\
        --schedule "filed=--lr 2e-3 --weight_drop 0" --schedule "default=" \\
        --schedule "adversarial=--adversarial 2" --json bench/results/sentiment-accuracy/step-cost.json
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import add_json_arg, publish
from bench.train_speed import trainer_command

DATA = {"tagger": "brown", "sentiment": "rotten-tomatoes"}


def parse_schedule(text: str) -> tuple[str, list[str]]:
    name, sep, flags = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"--schedule {text!r}: expected NAME=FLAGS (FLAGS may be empty)")
    return name, shlex.split(flags)


def seconds_per_step(task: str, data: str, steps: int, flags: list[str], out: Path) -> float:
    command = trainer_command(out, data, steps, 1, ["--threads", "1", "--report_to", "none", *flags], task)
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if done.returncode != 0:
        sys.exit(f"error: `{shlex.join(command)}` failed ({done.returncode}):\n{done.stderr[-2000:]}")
    metrics = json.loads((out / "model" / "metrics.json").read_text(encoding="utf-8"))
    return metrics["train_seconds"] / metrics["steps"]


def run(args: argparse.Namespace) -> dict:
    data = args.data or DATA[args.task]
    times: dict[str, list[float]] = {name: [] for name, _ in args.schedule}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for name, flags in args.schedule:
                out = Path(tmp) / f"{name}-{round_}"
                times[name].append(seconds_per_step(args.task, data, args.steps, flags, out))
    first = statistics.median(times[args.schedule[0][0]])
    rows = [
        {
            "schedule": name,
            "flags": shlex.join(flags),
            "ms_per_step": 1000 * statistics.median(times[name]),
            "x_first": statistics.median(times[name]) / first,
            "rounds_ms": [round(1000 * t, 1) for t in times[name]],
        }
        for name, flags in args.schedule
    ]
    return {"task": args.task, "data": data, "steps": args.steps, "table": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.schedule_cost", description=__doc__.split("\n")[0])
    parser.add_argument("--task", choices=sorted(DATA), required=True)
    parser.add_argument("--data", help="a --data spec (default: brown for the tagger, rotten-tomatoes for sentiment)")
    parser.add_argument("--steps", type=int, default=150, help="optimizer steps per run (default: 150)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of every schedule, interleaved (default: 3)")
    parser.add_argument(
        "--schedule",
        type=parse_schedule,
        action="append",
        required=True,
        metavar="NAME=FLAGS",
        help="a schedule: a name and the train flags it adds, repeatable; the first is the reference",
    )
    add_json_arg(parser)
    args = parser.parse_args(argv)
    publish("schedule_cost", args, run(args), ["schedule", "ms_per_step", "x_first", "rounds_ms", "flags"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
