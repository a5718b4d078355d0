"""`python -m serve predict`: JSON Lines in input order, streamed in chunks of lines.

The input (a file, plain or compressed, or stdin; `serve.records`) is read as bytes, `CHUNK_LINES`
lines at a time, so a file larger than memory works; each chunk is batched by length (see
`serve.runtime`), run and written (and flushed) by a worker thread while the main thread reads and
tokenizes the next one, so at most two chunks are held. `--input-format jsonl` reads JSON objects
whose other fields travel to the output; `--shard I/N` reads one of N byte ranges of a plain file
(concatenated in order, the N outputs are the whole file's). Progress goes to stderr
(`serve.progress`) and a summary line ends the run. Policies, each reported rather than silent:

- an empty or blank text line gives an empty result (`{"tokens": [], "tags": []}` or
  `{"label": null, "prob_positive": null}`);
- a bad record (non-UTF-8 bytes; in JSONL, not an object, the text field missing or of the wrong
  type, or a value the strict JSON reader refuses: NaN, `1e400`, a duplicate key, a lone surrogate,
  ...; `serve.records`) stops with `FILE:LINE` and the field (`--errors strict`, the default), is
  skipped and counted by reason in the summary line (`--errors skip`), or, for non-UTF-8 bytes and
  lone surrogates only, has them replaced by U+FFFD with the number of such lines on stderr
  (`--errors replace`); so every output line is strict JSON;
- a line longer than `max_tokens` tokens keeps its first `max_tokens`, its object gets
  `"truncated": true` and the count goes to stderr;
- `prob_positive` is rounded to 4 decimals (`serve.runtime.PROB_DECIMALS`): logits move at the
  1e-7 level with the batch shape, and the output must be byte-identical at any `--batch-size`;
- `--pretokenized` (split on whitespace) is for the tagger only: a sentiment model's reviews are
  raw text that its Treebank tokenizer must see, so asking for it there is an error.

`--output FILE` is written to a temporary file renamed into place at the end: after any error,
Ctrl-C or SIGTERM there is no output file (or the previous one is kept) and no temporary. What
`--output` may name is `serve.output`'s policy: `-` and `/dev/stdout` are stdout, a FIFO is
streamed, and a symlink, a device (`/dev/null`), a directory or the input file itself under any
name are refused before anything runs.

`--verify RUN_DIR/model` runs the torch model on the same batches (serve.torch_check, imported only then)
and fails if any logit differs by more than model.json's atol or any argmax differs.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO

from serve.options import check_numbers
from serve.output import check_output, open_output
from serve.progress import Progress, add_progress_arguments
from serve.records import Input, Record, RecordParser, open_input, output_line, parse_shard
from serve.runtime import OPT_LEVELS, BatchObserver, Item, ServingModel
from trainer.core.errors import ConfigError

CHUNK_LINES = 4096


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, type=Path, metavar="EXPORT_DIR")
    parser.add_argument("--input", required=True, metavar="FILE|-", help="one sentence/review per line, UTF-8")
    parser.add_argument("--output", required=True, metavar="FILE|-", help="JSON Lines, one object per input line")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--pretokenized", action="store_true", help="split lines on whitespace (tagger only)")
    parser.add_argument("--verify", type=Path, metavar="RUN_DIR/model", help="also run torch and compare (needs torch)")
    parser.add_argument("--int8", action="store_true", help="use model.int8.onnx (export --quantize int8)")
    parser.add_argument(
        "--input-format",
        choices=("text", "jsonl"),
        default="text",
        help="text: one input per line; jsonl: one JSON object per line, other fields copied",
    )
    parser.add_argument(
        "--text-field",
        default="text",
        help="jsonl: the field to predict on: a string, or a list of token strings (tagger)",
    )
    parser.add_argument(
        "--errors",
        choices=("strict", "replace", "skip"),
        default="strict",
        help="a bad record: stop naming FILE:LINE, replace non-UTF-8 bytes with U+FFFD, "
        "or skip it (counted in the summary line)",
    )
    parser.add_argument("--shard", metavar="I/N", help="only the I-th of N byte ranges of a plain --input file")
    add_progress_arguments(parser)
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="onnxruntime intra-op threads (0: one per usable core but one, which reads and tokenizes)",
    )
    parser.add_argument(
        "--optimization", choices=sorted(OPT_LEVELS), default="all", help="onnxruntime graph optimization level"
    )


def run(args: argparse.Namespace) -> int:
    check_numbers(args)
    shard = parse_shard(args.shard) if args.shard is not None else None
    target = check_output(args.output, input_name=args.input)
    threads = args.threads or model_threads()
    model = ServingModel(args.model, int8=args.int8, threads=threads, optimization=args.optimization)
    if args.pretokenized and not model.kind.tokens_input:
        raise ConfigError(
            f"--pretokenized needs a tagger model; {args.model} is a {model.task} model, whose reviews must go "
            "through its own tokenizer (drop --pretokenized)"
        )
    verifier = None
    if args.verify is not None:
        if args.int8:
            raise ConfigError(
                "--verify checks fp32 parity with torch; int8 logits differ by design and export accepts them "
                "by dev accuracy (validation.json): drop --int8 or --verify"
            )
        from serve.torch_check import Verifier  # the one serve module that imports torch

        verifier = Verifier(args.verify, model)
    parser = RecordParser(args.input_format, args.text_field, args.errors, tokens_ok=model.kind.tokens_input)
    with open_input(args.input, shard) as source, open_output(target) as out:
        progress = Progress("predict", source.size, every=args.progress_every, quiet=args.quiet)
        truncated = Pipeline(model, parser, args, verifier.check if verifier else None).run(source, out, progress)
        if verifier is not None:
            verifier.finish()  # raises before the output file is renamed into place
    warnings = []
    if parser.replaced:
        warnings.append(f"{parser.replaced} line(s) had non-UTF-8 bytes or lone surrogates, replaced by U+FFFD")
    if truncated:
        warnings.append(
            f'{truncated} line(s) longer than max_tokens={model.max_tokens} were truncated (marked "truncated": true)'
        )
    for warning in warnings:
        print(f"predict: {warning}", file=sys.stderr)
    if verifier is not None:
        print(f"predict: verify passed: {verifier.summary()}", file=sys.stderr)
    # Skipped records are left out of the output: that is said even under --quiet.
    progress.finish(parser.summary(), force=bool(parser.skipped))
    return 0


def model_threads() -> int:
    """onnxruntime threads by default: one per usable core but one, because the main thread reads and
    tokenizes beside the model. On 2 cores, 1 thread ran the tagger 21% faster end to end than 2 did
    (docs/BENCHMARKS.md section 4b), the two onnxruntime threads and the tokenizer contending for 2 cores."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, usable - 1)


class Pipeline:
    """Two stages: the main thread reads, parses and tokenizes chunk k+1 while a worker thread runs and
    writes chunk k (onnxruntime releases the GIL). One chunk in flight keeps the output in order."""

    def __init__(
        self,
        model: ServingModel,
        parser: RecordParser,
        args: argparse.Namespace,
        observer: BatchObserver | None,
    ) -> None:
        """`observer(arrays, logits)` sees every batch the model ran (`--verify`'s check)."""
        self.model, self.parser, self.batch_size = model, parser, args.batch_size
        self.observer = observer
        self.pretokenized = args.pretokenized

    def prepare(self, record: Record) -> Item:
        value = record.value
        if isinstance(value, list):
            return self.model.prepare_tokens(value)
        return self.model.prepare_tokens(value.split()) if self.pretokenized else self.model.prepare_text(value)

    def chunks(self, source: Input) -> Iterator[tuple[int, list[Record]]]:
        """(lines read so far, the records of the next CHUNK_LINES lines)."""
        records: list[Record] = []
        number = 0
        for number, offset, raw in source.lines():
            record = self.parser.parse(raw, source.where(number, offset), first=offset == 0)
            if record is not None:
                records.append(record)
            if number % CHUNK_LINES == 0:
                yield number, records
                records = []
        if records or number % CHUNK_LINES:
            yield number, records

    def run(self, source: Input, out: IO[str], progress: Progress) -> int:
        """Predict every record of `source` into `out`; the number of truncated inputs."""

        def emit(records: list[Record], items: list[Item]) -> int:
            results = self.model.predict(items, self.batch_size, self.observer)
            out.write("".join(output_line(r, result) for r, result in zip(records, results)))
            out.flush()
            return sum(item.truncated for item in items)

        truncated = 0
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict") as worker:
            pending: tuple[Future[int], int] | None = None  # the chunk in flight and the lines read with it
            for lines, records in self.chunks(source):
                items = [self.prepare(record) for record in records]
                if pending is not None:
                    truncated += pending[0].result()
                    progress.update(pending[1], source.position)
                pending = worker.submit(emit, records, items), lines
            if pending is not None:
                truncated += pending[0].result()
                progress.update(pending[1], source.position)
        return truncated
