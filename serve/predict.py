"""`python -m serve predict`: JSON Lines in input order, streamed in chunks of lines.

The input is read as bytes, `CHUNK_LINES` lines at a time, so a file larger than memory works;
each chunk is batched by length (see `serve.runtime`), run and written (and flushed) by a worker
thread while the main thread reads and tokenizes the next one, so at most two chunks are held.
Policies, each reported rather than silent:

- an empty or blank line gives an empty result (`{"tokens": [], "tags": []}` or
  `{"label": null, "prob_positive": null}`);
- non-UTF-8 bytes stop with `FILE:LINE` (`--errors strict`, the default) or are replaced by
  U+FFFD with the number of such lines on stderr (`--errors replace`);
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

`--verify RUN_DIR/model` runs the torch model on the same batches (torch is imported only then)
and fails if any logit differs by more than model.json's atol or any argmax differs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

import numpy as np

from serve.options import check_numbers
from serve.output import check_output, open_output
from serve.runtime import OPT_LEVELS, Item, ServingModel
from trainer.core.config import to_dict
from trainer.core.errors import ConfigError, DataError, ValidationError

CHUNK_LINES = 4096


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, type=Path, metavar="EXPORT_DIR")
    parser.add_argument("--input", required=True, metavar="FILE|-", help="one sentence/review per line, UTF-8")
    parser.add_argument("--output", required=True, metavar="FILE|-", help="JSON Lines, one object per input line")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--pretokenized", action="store_true", help="split lines on whitespace (tagger only)")
    parser.add_argument("--verify", type=Path, metavar="RUN_DIR/model", help="also run torch and compare (needs torch)")
    parser.add_argument("--int8", action="store_true", help="use model.int8.onnx (export --quantize int8)")
    parser.add_argument("--errors", choices=("strict", "replace"), default="strict",
                        help="non-UTF-8 input: stop naming the line, or replace bytes with U+FFFD")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: one per core)")
    parser.add_argument("--optimization", choices=sorted(OPT_LEVELS), default="all",
                        help="onnxruntime graph optimization level")


def dumps(result: dict[str, Any]) -> str:
    """The one JSON Lines encoding used everywhere: compact, UTF-8 (not \\u escapes), key order kept."""
    return json.dumps(result, ensure_ascii=False, separators=(",", ":"))


@contextlib.contextmanager
def open_input(name: str) -> Iterator[IO[bytes]]:
    if name == "-":
        yield sys.stdin.buffer
        return
    try:
        f = open(name, "rb")
    except FileNotFoundError:
        raise DataError(f"--input {name}: no such file") from None
    except OSError as exc:
        raise DataError(f"--input {name}: cannot read ({exc.strerror})") from None
    with f:
        yield f


class LineReader:
    """Numbered, decoded lines from a byte stream; counts replaced lines under `--errors replace`."""

    def __init__(self, stream: IO[bytes], name: str, errors: str) -> None:
        self.stream, self.name, self.errors = stream, name, errors
        self.replaced = 0

    def chunks(self, size: int) -> Iterator[list[str]]:
        chunk: list[str] = []
        for number, raw in enumerate(self.stream, 1):
            chunk.append(self.decode(raw, number))
            if len(chunk) == size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def decode(self, raw: bytes, number: int) -> str:
        raw = raw.rstrip(b"\r\n")
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]  # a UTF-8 byte order mark is not text
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            if self.errors == "strict":
                raise DataError(
                    f"{self.name}:{number}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); "
                    "fix the input or pass --errors replace"
                ) from None
            self.replaced += 1
            return raw.decode("utf-8", errors="replace")


class Verifier:
    """Runs the torch artifact on every batch onnxruntime ran and collects the differences."""

    def __init__(self, artifact_dir: Path, model: ServingModel) -> None:
        try:
            import torch

            from trainer.artifact import load_artifact
        except ImportError:
            raise ConfigError("--verify needs torch, which is not installed here (pip install .[train])") from None
        self.torch = torch
        self.where = f"--verify {artifact_dir}"
        artifact = load_artifact(artifact_dir)
        differ = [
            name
            for name, ours, theirs in (
                ("task", model.task, artifact.task),
                ("vocab", model.vocabs.to_json(), artifact.vocabs.to_json()),
                ("preprocess", to_dict(model.preprocess), to_dict(artifact.preprocess)),
            )
            if ours != theirs
        ]
        if differ:
            raise ValidationError(
                f"{self.where}: not the artifact {model.export_dir} was exported from ({', '.join(differ)} differ)"
            )
        self.net, self.task = artifact.model, model.task
        self.atol = model.atol
        self.max_diff, self.disagreements, self.units, self.bad_shapes = 0.0, 0, 0, 0

    def check(self, arrays: dict[str, Any], logits: Any) -> None:
        with self.torch.inference_mode():
            inputs = [self.torch.from_numpy(arrays[name]) for name in self.net.input_names]
            ref = self.net(*inputs).numpy()
        if ref.shape != logits.shape:
            self.bad_shapes += 1
            return
        if self.task == "tagger":
            lengths = arrays["lengths"]
            real = np.arange(logits.shape[1])[None, :] < lengths[:, None]  # (B, T); padding is undefined
            ours, theirs = logits[real], ref[real]  # (N, n_tags)
            self.disagreements += int((ours.argmax(-1) != theirs.argmax(-1)).sum())
        else:
            ours, theirs = logits, ref  # (B,)
            self.disagreements += int(((ours >= 0) != (theirs >= 0)).sum())
        self.units += len(ours)
        self.max_diff = max(self.max_diff, float(np.abs(ours - theirs).max(initial=0.0)))

    def summary(self) -> str:
        unit = "tokens" if self.task == "tagger" else "reviews"
        text = (f"logits: max abs diff {self.max_diff:.3g} vs atol {self.atol:g}; "
                f"{self.disagreements} argmax disagreement(s) in {self.units} {unit}")
        return text + (f"; {self.bad_shapes} batch(es) with mismatched output shapes" if self.bad_shapes else "")

    def finish(self) -> None:
        if self.max_diff > self.atol or self.disagreements or self.bad_shapes:
            raise ValidationError(f"{self.where} failed: {self.summary()}")


def run(args: argparse.Namespace) -> int:
    check_numbers(args)
    target = check_output(args.output, input_name=args.input)
    model = ServingModel(args.model, int8=args.int8, threads=args.threads, optimization=args.optimization)
    if args.pretokenized and model.task != "tagger":
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
        verifier = Verifier(args.verify, model)
    prepare = (lambda line: model.prepare_tokens(line.split())) if args.pretokenized else model.prepare_text
    truncated = 0
    with open_input(args.input) as stream, open_output(target) as out:

        def emit(items: list[Item]) -> int:
            results = model.predict(items, args.batch_size, verifier.check if verifier else None)
            out.write("".join(dumps(r) + "\n" for r in results))
            out.flush()
            return sum(item.truncated for item in items)

        reader = LineReader(stream, "<stdin>" if args.input == "-" else args.input, args.errors)
        # Two stages: this thread reads and tokenizes chunk k+1 while the worker runs and writes
        # chunk k (onnxruntime releases the GIL). One chunk in flight keeps the output in order.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict") as worker:
            pending: Future[int] | None = None
            for chunk in reader.chunks(CHUNK_LINES):
                items = [prepare(line) for line in chunk]
                if pending is not None:
                    truncated += pending.result()
                pending = worker.submit(emit, items)
            if pending is not None:
                truncated += pending.result()
        if verifier is not None:
            verifier.finish()  # raises before the output file is renamed into place
    if reader.replaced:
        print(f"predict: {reader.replaced} line(s) had non-UTF-8 bytes, replaced by U+FFFD", file=sys.stderr)
    if truncated:
        print(f"predict: {truncated} line(s) longer than max_tokens={model.max_tokens} were truncated "
              '(marked "truncated": true)', file=sys.stderr)
    if verifier is not None:
        print(f"predict: verify passed: {verifier.summary()}", file=sys.stderr)
    return 0
