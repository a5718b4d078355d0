"""GPU smoke test in one command: `python -m bench.gpu_smoke [--steps N] [--json FILE]`.

On a machine with CUDA: trains the tagger for `--steps` steps at mixed precision no, fp16 and bf16,
on 1 GPU and on all of them (`./launch.sh train --nproc N`), exports the fp32 one-GPU model, runs
`serve predict --verify` on held-out Brown sentences (onnxruntime's CUDA provider when this
onnxruntime has it) and `serve bench`, and writes one JSON report: tokens/s and dev accuracy per
run, export parity, the providers used. On a machine without CUDA it says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import add_json_arg, publish

REPO = Path(__file__).resolve().parents[1]


def sh(*args: object) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"gpu_smoke: {' '.join(map(str, args))} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc


def train(out: Path, gpus: int, precision: str, steps: int) -> dict[str, Any]:
    sh(
        REPO / "launch.sh",
        "train",
        "--nproc",
        gpus,
        "--mixed-precision",
        precision,
        "--",
        "--task",
        "tagger",
        "--data",
        "brown",
        "--out",
        out,
        "--max_steps",
        steps,
        "--eval_every",
        steps,
        "--save_every",
        steps,
    )
    metrics = json.loads((out / "model" / "metrics.json").read_text())
    return {
        "gpus": gpus,
        "mixed_precision": precision,
        "lstm_precision": metrics.get("lstm_precision"),
        "steps": metrics["steps"],
        "train_tokens_per_s": metrics["train_tokens_per_s"],
        "dev_accuracy": metrics["dev"]["accuracy"],
    }


def held_out(path: Path, count: int = 2000) -> Path:
    from trainer.core.data import open_dataset

    sentences = (" ".join(s.words) for s in open_dataset("brown").examples("test"))
    path.write_text("\n".join(s for _, s in zip(range(count), sentences)) + "\n", encoding="utf-8")
    return path


def run(args: argparse.Namespace, gpus: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="gpu-smoke-"))
    counts = sorted({1, gpus})
    rows = [train(root / f"{p}-{n}", n, p, args.steps) for p in ("no", "fp16", "bf16") for n in counts]
    model, export = root / "no-1" / "model", root / "export"
    exported = sh(sys.executable, "-m", "export", "--model", model, "--out", export, "--data", "brown").stdout
    verify = sh(
        sys.executable,
        "-m",
        "serve",
        "predict",
        "--model",
        export,
        "--input",
        held_out(root / "held.txt"),
        "--output",
        root / "pred.jsonl",
        "--verify",
        model,
    ).stderr
    sh(sys.executable, "-m", "serve", "bench", "--model", export, "--json", root / "bench.json")
    bench = json.loads((root / "bench.json").read_text())
    return {
        "table": rows,
        "export": exported.strip(),
        "verify": verify.strip().splitlines()[-1],
        "serve_bench": bench,
        "validation": json.loads((export / "validation.json").read_text())["passed"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_smoke", description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps per run")
    add_json_arg(parser)
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("gpu_smoke: no CUDA device on this machine; nothing to run")
        return 0
    results = run(args, torch.cuda.device_count())
    publish(
        "gpu_smoke",
        args,
        results,
        ["gpus", "mixed_precision", "lstm_precision", "steps", "train_tokens_per_s", "dev_accuracy"],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
