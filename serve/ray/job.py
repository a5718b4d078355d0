"""`python -m serve ray`: `serve predict` over many files and machines with Ray Data.

The pipeline is read -> map_batches -> write, all of it Ray Data's streaming executor:

- read: `LineSource` (serve.ray.data), a Ray Data datasource built on `serve.records`. A plain file is cut into
  byte ranges of about `SPLIT_BYTES` by the same rule as `predict --shard` (a line belongs to the
  range where it starts), so one large file is read in parallel; a compressed file is one read task.
  Ray's own `read_text` is not used: it splits on every Unicode line break (U+2028, a bare CR) and
  decodes whole files strictly, so its records would not be `serve predict`'s.
- predict: a fixed pool of `--workers` actors (`Predictor`), each loading the `ServingModel` once
  and parsing records with `serve.records.RecordParser`, so results, copied JSONL fields and the
  `--errors` policy are those of `serve predict`, byte for byte.
- write: `JsonlSink` writes each write task's lines to `part-NNNNN.jsonl` in a temporary directory
  beside `--output`, renamed to `--output` when every task succeeded. Order is kept (Ray Data's
  `preserve_order`), so the parts concatenated in name order are the inputs' results in input order.

Without `--address` the command starts a private Ray instance on 127.0.0.1 for this run (no
dashboard, no usage reporting) and stops it at the end; `--address auto|HOST:PORT|ray://...`
joins a cluster, whose nodes must all see the export, the input files and the output directory
(docs/SERVING.md, "Many files or machines: `serve ray`"). Joining, and the plan checked against the
cluster before anything runs, are serve.ray.cluster's. While Ray Data runs (on a thread, `Job`), the main thread polls a
`Tally` actor that the model actors report to: progress lines as `serve predict` prints them, and a
deadline on no progress (`--stall-timeout`) that ends the run in one line saying what is pending.
SIGTERM and Ctrl-C arrive on the main thread too: one line, and the temporary directory removed.
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
import re
import secrets
import shutil
import sys
import threading
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

from serve.options import check_numbers, check_range
from serve.progress import Progress, add_progress_arguments
from serve.records import RecordParser, compression, output_line
from serve.runtime import ServingModel
from trainer.core import errors
from trainer.core.cli import sigterm_raises
from trainer.core.errors import ClusterError, ConfigError, DataError, SeqLSTMError

IO_TASKS_PER_ACTOR = 2  # read tasks at once per model actor: one in hand, one ahead
STALL_SECONDS = 300.0  # --stall-timeout: a batch of data.BLOCK_LINES takes seconds; an actor's start, a few more
POLL_SECONDS = 1.0
INSTALL = "serve ray needs Ray Data, which is not installed here: pip install 'seqlstm[ray]'"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, type=Path, metavar="EXPORT_DIR")
    parser.add_argument(
        "--input",
        required=True,
        nargs="+",
        metavar="PATH_OR_GLOB",
        help="files (plain, .gz, .bz2, .xz) or glob patterns, one input per line",
    )
    parser.add_argument(
        "--output",
        required=True,
        type=Path,
        metavar="DIR",
        help="a new (or empty) directory for part-NNNNN.jsonl files",
    )
    parser.add_argument(
        "--address",
        help="a Ray cluster to join (auto, HOST:PORT or ray://HOST:PORT); "
        "default: a private local instance on 127.0.0.1",
    )
    parser.add_argument("--workers", type=int, default=1, help="model actors (each loads the model once)")
    parser.add_argument("--threads-per-worker", type=int, default=1, help="CPUs and onnxruntime threads per actor")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--input-format", choices=("text", "jsonl"), default="text")
    parser.add_argument("--text-field", default="text")
    parser.add_argument("--errors", choices=("strict", "replace", "skip"), default="strict")
    parser.add_argument("--pretokenized", action="store_true", help="split lines on whitespace (tagger only)")
    parser.add_argument(
        "--stall-timeout",
        type=float,
        default=STALL_SECONDS,
        metavar="SECONDS",
        help="give up, naming what is pending, when no actor starts and no batch ends for this long",
    )
    add_progress_arguments(parser)


def expand_inputs(patterns: list[str]) -> list[str]:
    """Every file the patterns name, in order (each glob sorted); a pattern matching nothing is an error."""
    paths: list[str] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        files = [path for path in matches if os.path.isfile(path)]
        if not files:
            raise DataError(f"--input {pattern}: no such file" + (" matches" if glob.has_magic(pattern) else ""))
        paths.extend(os.path.abspath(path) for path in files)
    return paths


def check_output_dir(path: Path) -> Path:
    """`--output` must be new or an empty directory in an existing, writable directory."""
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise DataError(f"--output {path}: exists and is not a directory")
    if path.is_dir() and any(path.iterdir()):
        raise DataError(f"--output {path}: directory is not empty; choose a new one or empty it")
    parent = path.absolute().parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise DataError(f"--output {path}: cannot create it in {parent} (missing or not writable)")
    return path.absolute()


class Predictor:
    """One Ray actor: the model, loaded once from its path; a batch of raw lines -> output lines (or skip
    reasons). It tells the driver's `Tally` when it has started and what each batch did."""

    def __init__(self, export_dir: str, threads: int, options: dict[str, Any], tally: Any) -> None:
        self.model = ServingModel(Path(export_dir), threads=threads)
        self.parser = RecordParser(
            options["input_format"], options["text_field"], options["errors"], tokens_ok=self.model.kind.tokens_input
        )
        self.batch_size, self.pretokenized = options["batch_size"], options["pretokenized"]
        self.tally = tally
        tally.started.remote()

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        lines, skips, records = [], [], []
        for where, first, raw in zip(batch["where"], batch["first"], batch["raw"]):
            before = Counter(self.parser.skipped)
            record = self.parser.parse(bytes(raw), str(where), first=bool(first))
            skips.append("" if record is not None else next(iter(self.parser.skipped - before)))
            records.append(record)
        kept = [r for r in records if r is not None]
        items = [
            self.model.prepare_tokens(r.value)
            if isinstance(r.value, list)
            else self.model.prepare_tokens(r.value.split())
            if self.pretokenized
            else self.model.prepare_text(r.value)
            for r in kept
        ]
        results = iter(self.model.predict(items, self.batch_size))
        for record in records:
            lines.append("" if record is None else output_line(record, next(results)))
        self.tally.add.remote(len(records), sum(len(raw) + 1 for raw in batch["raw"]), sum(i.truncated for i in items))
        return {"line": lines, "skip": skips}


def run(args: argparse.Namespace) -> int:
    check_numbers(args)
    check_range("--stall-timeout", args.stall_timeout, 1, 86_400)
    # Read when ray is imported. Without it, a Ray call on the pipeline's thread after the run ended (on an
    # error or a signal) would join the cluster again, or start a new private instance, on its own.
    os.environ["RAY_ENABLE_AUTO_CONNECT"] = "0"
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report leaves this machine
    try:
        import ray
    except ImportError:
        raise ConfigError(INSTALL) from None
    paths = expand_inputs(args.input)
    output = check_output_dir(args.output)
    model = ServingModel(args.model, threads=1)  # checked here once, so a bad export is one line, not N actors
    if args.pretokenized and not model.kind.tokens_input:
        raise ConfigError(f"--pretokenized needs a tagger model; {args.model} is a {model.task} model")
    from serve.ray.cluster import check_plan, connect

    tmp = output.parent / f".{output.name}.{secrets.token_hex(6)}.tmp"
    try:
        cluster = connect(ray, args.address, args.workers * args.threads_per_worker)
        with sigterm_raises():  # ray.init replaced run_cli's SIGTERM handler with one that exits silently
            check_plan(cluster, args.workers, args.threads_per_worker)
            tmp.mkdir()
            job = Job(ray, args, paths, cluster)
            sink = job.run(str(tmp))
        ray.shutdown()
        if output.is_dir():
            output.rmdir()  # checked empty above
        os.replace(tmp, output)
    except BaseException as exc:
        ray.shutdown()  # first: no task of this job may still be writing into `tmp`
        shutil.rmtree(tmp, ignore_errors=True)
        cause = user_error(exc)
        if cause is not None:
            raise cause from None
        if isinstance(exc, ray.exceptions.RayError):
            raise ClusterError(f"serve ray failed: {first_line(exc)}") from None
        raise
    if job.state[3]:  # said as `serve predict` says it
        print(
            f"ray: {job.state[3]} line(s) longer than max_tokens={model.max_tokens} were truncated "
            '(marked "truncated": true)',
            file=sys.stderr,
        )
    note = "; ".join(filter(None, [f"{len(paths)} file(s), {sink.lines:,} records to {output}", sink.summary()]))
    job.progress.finish(note, force=bool(sink.skipped))
    return 0


class Job:
    """The Ray Data pipeline, run on a thread while the main thread reports progress and keeps the deadline.

    Read and write tasks ask for no CPU. They only split lines and write strings (parsing and tokenizing
    happen in the actors), and a CPU they asked for would have to be left over beside the actors, which is
    what hung a pool that filled the cluster: the actors held every CPU while they waited for the read tasks
    that could not start. Their concurrency is capped instead, since CPUs no longer cap it.
    """

    def __init__(self, ray: Any, args: argparse.Namespace, paths: list[str], cluster: Any) -> None:
        from serve.ray.data import Tally

        self.ray, self.args, self.paths, self.cluster = ray, args, paths, cluster
        self.state: tuple[int, ...] = (0, 0, 0, 0)  # the tally's at the end: actors, lines, bytes, truncated
        self.tally = ray.remote(num_cpus=0)(Tally).remote()
        sizes = [os.path.getsize(path) for path in paths]
        total = None if any(compression(path) for path in paths) else sum(sizes)
        self.progress = Progress("ray", total, every=args.progress_every, quiet=args.quiet)

    def dataset(self) -> Any:
        from serve.ray.data import BLOCK_LINES, LineSource

        ray, args = self.ray, self.args
        # Ray Data logs the plan, its end, and a failed task at length; run() reports a failure in one line.
        logging.getLogger("ray.data").setLevel(logging.CRITICAL)
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True
        context.enable_progress_bars = False  # serve.progress reports instead, as `serve predict` does
        options = {k: getattr(args, k) for k in ("input_format", "text_field", "errors", "batch_size", "pretokenized")}
        source = LineSource(self.paths)
        dataset = ray.data.read_datasource(
            source, num_cpus=0, concurrency=min(len(source.splits), IO_TASKS_PER_ACTOR * args.workers)
        )
        with warnings.catch_warnings():  # Ray 2.60 deprecates extra remote arguments, yet names none for this
            warnings.simplefilter("ignore", category=DeprecationWarning)
            return dataset.map_batches(
                Predictor,
                batch_size=BLOCK_LINES,
                compute=ray.data.ActorPoolStrategy(size=args.workers),
                num_cpus=args.threads_per_worker,
                fn_constructor_args=(str(args.model.absolute()), args.threads_per_worker, options, self.tally),
                # No actor restarts: Ray Data hands its actors their arguments through the object store, which
                # makes Ray log an ERROR line for every actor that may restart (ray-project/ray#57733), and
                # restarts that depend on such arguments are not reliable (ray-project/ray#53727). A lost actor
                # fails the run in one line instead; nothing is written, and the run can be repeated.
                max_restarts=0,
            )

    def run(self, directory: str) -> Any:
        """Run the pipeline into `directory`; the sink, with its counts."""
        from serve.ray.data import JsonlSink

        sink = JsonlSink(directory)
        dataset = self.dataset()
        failed: list[BaseException] = []

        def execute() -> None:
            try:
                dataset.write_datasink(sink, ray_remote_args={"num_cpus": 0})
            except BaseException as exc:  # handed to the main thread, which reports it
                failed.append(exc)

        thread = threading.Thread(target=execute, name="ray-data", daemon=True)
        thread.start()
        self.watch(thread)
        if failed:
            raise failed[0]
        return sink

    def watch(self, thread: threading.Thread) -> None:
        """Progress lines while `thread` runs; a ClusterError when nothing moved for --stall-timeout seconds."""
        ray, state, changed = self.ray, (0, 0, 0, 0), time.monotonic()
        asked = self.tally.state.remote()
        while thread.is_alive():
            thread.join(POLL_SECONDS)
            ready, _ = ray.wait([asked], timeout=0)
            now = time.monotonic()
            if ready:
                latest = tuple(ray.get(asked))
                if latest != state:
                    state, changed = latest, now
                    self.progress.update(state[1], state[2])
                asked = self.tally.state.remote()
            if now - changed > self.args.stall_timeout and thread.is_alive():
                raise ClusterError(self.stalled(state))
        self.state = ray.get(self.tally.state.remote())
        self.progress.update(self.state[1], self.state[2])

    def stalled(self, state: tuple[int, ...]) -> str:
        """The no-progress message: what the job waits for, and what the cluster has free."""
        from serve.ray.cluster import free_cpus

        args, (actors, lines, *_) = self.args, state
        total = sum(self.cluster.node_cpus)
        waiting = (
            f"{args.workers - actors} of {args.workers} model actor(s) of {args.threads_per_worker} CPU(s) not "
            f"started ({self.cluster.name} has {free_cpus(self.ray):g} of {total:g} CPU(s) free: another job "
            "holding them?)"
            if actors < args.workers
            else "every model actor started, no batch done since (a node lost, or a batch slower than that?)"
        )
        return f"no progress for {args.stall_timeout:g} s (--stall-timeout), {lines:,} line(s) done: {waiting}"


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def user_error(exc: BaseException) -> SeqLSTMError | None:
    """The SeqLSTMError an actor or a task raised. Ray re-raises it on the driver as a RayTaskError whose
    chain no longer holds the original exception, only its traceback text, so it is found there."""
    if isinstance(exc, SeqLSTMError):
        return exc
    found = re.findall(r"trainer\.core\.errors\.(\w+): (.+)", str(exc))
    if not found:
        return None
    name, message = found[-1]
    kind = getattr(errors, name, None)
    return kind(message) if isinstance(kind, type) and issubclass(kind, SeqLSTMError) else None
