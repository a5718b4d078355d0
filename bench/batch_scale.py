"""Batch inference at scale: `serve predict` in 1 process, as 2 `--shard` processes, and `serve ray` with 1
and 2 workers, on the same file of real review text, with lines/s and the peak RSS of each worker.

The model is the sentiment network at its default config (the one `./launch.sh demo` trains), its
vocabulary built from the Rotten Tomatoes train split and its weights random: throughput does not
depend on the weights' values. The input is the Rotten Tomatoes test split cycled to `--lines`.
Every run uses one onnxruntime thread per worker, so N workers use N cores. Wall time includes
model loading (and Ray's start-up), as a user's job would. RSS is sampled every 0.2 s over the
process tree (`psutil`); for Ray the figure is each model actor's peak.

    python -m bench.batch_scale --lines 100000 --json bench/results/batch-scale/batch-scale.json
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from bench.common import add_json_arg, publish

REPO = Path(__file__).resolve().parents[1]


def build_export(work: Path) -> Path:
    """A default-config sentiment model (random weights, real vocabulary), exported with `python -m export`."""
    import torch

    from trainer.artifact import save_artifact
    from trainer.core.config import PreprocessConfig, SentimentConfig
    from trainer.core.data import open_dataset
    from trainer.core.preprocess import build_vocabs, tokenize
    from trainer.core.tasks import SENTIMENT_LABELS
    from trainer.models import build_model

    texts = [tokenize(r.text) for r in open_dataset("rotten-tomatoes").examples("train")]
    preprocess, config = PreprocessConfig(), SentimentConfig()
    vocabs = build_vocabs(texts, SENTIMENT_LABELS, preprocess, chars=False)
    torch.manual_seed(0)
    artifact = work / "run" / "model"
    save_artifact(artifact, build_model(config, vocabs), config, preprocess, vocabs, {"task": "sentiment"})
    out = work / "export"
    subprocess.run(
        [sys.executable, "-m", "export", "--model", str(artifact), "--out", str(out), "--force"],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    return out


def write_input(path: Path, lines: int) -> None:
    from trainer.core.data import open_dataset

    reviews = [" ".join(r.text.split()) + "\n" for r in open_dataset("rotten-tomatoes").examples("test")]
    with path.open("w", encoding="utf-8") as f:
        f.writelines(itertools.islice(itertools.cycle(reviews), lines))


class RssSampler:
    """Peak RSS per process of a process tree, sampled in a thread while the commands run."""

    def __init__(self) -> None:
        self.peaks: dict[int, tuple[str, int]] = {}
        self.roots: list[psutil.Process] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def loop(self) -> None:
        while not self.stop.wait(0.2):
            for root in list(self.roots):
                try:
                    procs = [root, *root.children(recursive=True)]
                except psutil.Error:
                    continue
                for proc in procs:
                    try:
                        name, rss = " ".join(proc.cmdline())[:200], proc.memory_info().rss
                    except psutil.Error:
                        continue
                    self.peaks[proc.pid] = (name, max(rss, self.peaks.get(proc.pid, ("", 0))[1]))


def run_commands(commands: list[list[str]]) -> tuple[float, dict[int, tuple[str, int]]]:
    """Start the commands together; wall seconds until the last ends, and the RSS peaks."""
    sampler = RssSampler()
    sampler.thread.start()
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            c,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
        )
        for c in commands
    ]
    sampler.roots = [psutil.Process(p.pid) for p in procs]
    errors = [p.communicate()[1] for p in procs]
    seconds = time.perf_counter() - start
    sampler.stop.set()
    sampler.thread.join()
    for proc, err in zip(procs, errors):
        if proc.returncode != 0:
            raise SystemExit(f"batch_scale: {' '.join(proc.args)} failed:\n{err.decode()[-2000:]}")
    return seconds, sampler.peaks


def measure(name: str, commands: list[list[str]], lines: int, workers: int, worker_tag: str) -> dict[str, Any]:
    seconds, peaks = run_commands(commands)
    rss = [rss for cmd, rss in peaks.values() if worker_tag in cmd]
    return {
        "setup": name,
        "workers": workers,
        "lines": lines,
        "seconds": round(seconds, 2),
        "lines_per_s": round(lines / seconds),
        "lines_per_s_per_worker": round(lines / seconds / workers),
        "worker_rss_mib": round(max(rss) / 2**20) if rss else None,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=100_000)
    add_json_arg(parser)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="batch-scale-") as tmp:
        work = Path(tmp)
        export, data = build_export(work), work / "in.txt"
        write_input(data, args.lines)
        predict = [
            sys.executable,
            "-m",
            "serve",
            "predict",
            "--model",
            str(export),
            "--input",
            str(data),
            "--threads",
            "1",
            "--quiet",
        ]
        ray = [
            sys.executable,
            "-m",
            "serve",
            "ray",
            "--model",
            str(export),
            "--input",
            str(data),
            "--threads-per-worker",
            "1",
        ]
        rows = [
            measure(
                "predict, 1 process", [[*predict, "--output", str(work / "one.jsonl")]], args.lines, 1, "serve predict"
            ),
            measure(
                "predict --shard i/2, 2 processes",
                [[*predict, "--output", str(work / f"shard{i}.jsonl"), "--shard", f"{i}/2"] for i in (1, 2)],
                args.lines,
                2,
                "serve predict",
            ),
            measure(
                "serve ray, 1 worker",
                [[*ray, "--output", str(work / "ray1"), "--workers", "1"]],
                args.lines,
                1,
                "MapWorker",
            ),
            measure(
                "serve ray, 2 workers",
                [[*ray, "--output", str(work / "ray2"), "--workers", "2"]],
                args.lines,
                2,
                "MapWorker",
            ),
        ]
        single = (work / "one.jsonl").read_bytes()
        for name in ("shard", "ray1", "ray2"):
            parts = sorted(work.glob("shard*.jsonl")) if name == "shard" else sorted((work / name).glob("part-*"))
            assert b"".join(p.read_bytes() for p in parts) == single, f"{name} output differs from 1 process"
    results = {
        "lines": args.lines,
        "input": "rotten-tomatoes test split, cycled",
        "model": "SentimentConfig()",
        "table": rows,
        "outputs_identical": True,
    }
    return publish(
        "batch_scale",
        args,
        results,
        ["setup", "workers", "seconds", "lines_per_s", "lines_per_s_per_worker", "worker_rss_mib"],
    )


if __name__ == "__main__":
    main()
