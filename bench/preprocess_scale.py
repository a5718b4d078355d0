"""Preprocessing at scale: a 1-million-line fastText file streamed through the product's reader,
tokenizer and encoder, with throughput and peak memory, to show memory does not grow with the file.

The file is built from the Rotten Tomatoes snippets (`__label__1` negative, `__label__2` positive),
repeated in a seeded shuffle. The encoder's vocabulary comes from the Rotten Tomatoes train split,
as a trained model's would.

Two passes: the first reads the whole file, timed (lines/s, tokens/s), and reports the process's
peak RSS (`ru_maxrss`) after it beside the peak before it, so growth with the file would show. The
second runs its first `--trace-lines` reviews under `tracemalloc` (which slows Python down several
times, hence untimed and not the whole file) for the peak of Python allocations while streaming.

    python -m bench.preprocess_scale --lines 1000000 --bz2 --json bench/results/preprocessing/preprocess-scale.json
"""

from __future__ import annotations

import argparse
import bz2
import itertools
import random
import resource
import sys
import tempfile
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

from bench.common import add_json_arg, publish, timed
from trainer.core.config import PreprocessConfig
from trainer.core.data import open_dataset
from trainer.core.preprocess import Encoder, build_vocabs, tokenize
from trainer.core.tasks import SENTIMENT_LABELS

LABELS = {"negative": "__label__1", "positive": "__label__2"}


def source_lines(spec: str = "rotten-tomatoes") -> list[str]:
    """Every review of every split as one fastText line (inner whitespace collapsed)."""
    dataset = open_dataset(spec)
    return [f"{LABELS[r.label]} {' '.join(r.text.split())}\n" for s in dataset.splits for r in dataset.examples(s)]


def repeated(lines: list[str], n: int, seed: int) -> Iterator[str]:
    """n lines: the source over and over, each round in a fresh seeded shuffle."""
    rng = random.Random(seed)
    order = list(lines)
    while n > 0:
        rng.shuffle(order)
        yield from order[:n]
        n -= len(order)


def write_corpus(path: Path, lines: list[str], n: int, seed: int = 1234) -> Path:
    opener = bz2.open if path.suffix == ".bz2" else open
    with opener(path, "wt", encoding="utf-8") as f:
        f.writelines(repeated(lines, n, seed))
    return path


def rt_encoder() -> Encoder:
    config = PreprocessConfig()
    train = [tokenize(r.text) for r in open_dataset("rotten-tomatoes").examples("train")]
    return Encoder(build_vocabs(train, SENTIMENT_LABELS, config, chars=False), config)


def stream(path: Path, encoder: Encoder, batch_size: int = 64, limit: int | None = None) -> dict[str, int]:
    """Read, tokenize, encode and batch the reviews of the file's train split; nothing is kept."""
    reviews = tokens = 0
    pending = []
    for review in itertools.islice(open_dataset(f"fasttext:{path}").examples("train"), limit):
        words = tokenize(review.text)
        reviews += 1
        tokens += len(words)
        pending.append(encoder.encode(words))
        if len(pending) == batch_size:
            encoder.batch(pending)
            pending = []
    if pending:
        encoder.batch(pending)
    return {"reviews": reviews, "tokens": tokens}


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def measure(path: Path, encoder: Encoder, lines: int, trace_lines: int) -> dict[str, float | int | str]:
    """Timed pass with peak RSS, then a tracemalloc pass over `trace_lines` reviews (0: none)."""
    rss_before = max_rss_mb()
    with timed() as t:
        counts = stream(path, encoder)
    result = {
        "file": path.name,
        "file_mb": path.stat().st_size / 2**20,
        "file_lines": lines,
        **counts,
        "seconds": t["s"],
        "lines_per_s": lines / t["s"],
        "reviews_per_s": counts["reviews"] / t["s"],
        "tokens_per_s": counts["tokens"] / t["s"],
        "rss_before_mb": rss_before,
        "peak_rss_mb": max_rss_mb(),
    }
    if trace_lines:
        tracemalloc.start()
        try:
            result["traced_reviews"] = stream(path, encoder, limit=trace_lines)["reviews"]
            result["tracemalloc_peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
        finally:
            tracemalloc.stop()
    return result


def run(args: argparse.Namespace) -> dict:
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-preprocess-"))
    out.mkdir(parents=True, exist_ok=True)
    source = source_lines()
    encoder = rt_encoder()
    paths = [out / f"rt-{args.lines}.fasttext"] + ([out / f"rt-{args.lines}.fasttext.bz2"] if args.bz2 else [])
    rows = []
    for path in paths:
        with timed() as written:
            write_corpus(path, source, args.lines, args.seed)
        rows.append({**measure(path, encoder, args.lines, args.trace_lines), "write_s": written["s"]})
        if not args.keep:
            path.unlink()
    return {"source_reviews": len(source), "vocab_words": len(encoder.vocabs.words), "out": str(out), "table": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.preprocess_scale", description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000, help="lines in the generated file (default: 1,000,000)")
    parser.add_argument("--out", type=Path, help="directory for the generated files (default: a new temp dir)")
    parser.add_argument("--bz2", action="store_true", help="also measure a .bz2-compressed copy")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument(
        "--trace-lines",
        type=int,
        default=100_000,
        help="reviews streamed under tracemalloc (slow; 0 skips it; default: 100,000)",
    )
    parser.add_argument("--seed", type=int, default=1234)
    add_json_arg(parser)
    args = parser.parse_args(argv)
    publish(
        "preprocess_scale",
        args,
        run(args),
        [
            "file",
            "file_mb",
            "file_lines",
            "reviews",
            "tokens",
            "lines_per_s",
            "tokens_per_s",
            "rss_before_mb",
            "peak_rss_mb",
            "tracemalloc_peak_mb",
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
