"""Tokenizer speed and worst cases: `trainer.core.tokenizer` (the committed description) beside nltk's own
`NLTKWordTokenizer`, in the same run on the same texts.

- Speed: tokens/s on the test split of each corpus (Rotten Tomatoes reviews, Brown sentences joined
  by spaces), best of `--repeats` passes each, with the number of texts whose tokens differ.
- Worst cases: the inputs most likely to make nltk's patterns backtrack (long runs of spaces after
  a period, of quotes, colons, dots, brackets), at 1,000 and 10,000 characters (the HTTP server's
  cap per text) and 100,000. Linear time grows 10x per step; the `growth` column says how close.

    python -m bench.tokenize --json bench/results/tokenize.json
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence

from nltk.tokenize import NLTKWordTokenizer

from bench.common import add_json_arg, publish, table
from trainer.core.data import open_dataset
from trainer.core.tokenizer import default_tokenizer

Tokenize = Callable[[str], list[str]]

# Each unit repeated to the target length; chosen against nltk's patterns: the final-period rules
# (`\.` then a bracket/quote run then `\s*$`), clitics and quotes, `[:,]`, `\.{2,}`, brackets.
WORST_CASES = {
    "period then spaces": (".", " "),
    "period-space pairs": ("", ". "),
    "period-quote-space": ("", ".' "),
    "apostrophes": ("", "'"),
    "clitic fragments": ("", "a's'"),
    "quotes": ("", '"'),
    "colons and commas": ("", ":,"),
    "dots": ("", "."),
    "brackets": ("", "(]"),
    "one long word": ("", "x"),
    "spaces": ("", " "),
}


def build(prefix: str, unit: str, length: int) -> str:
    return prefix + unit * ((length - len(prefix)) // len(unit))


def best_seconds(tokenize: Tokenize, texts: Sequence[str], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for text in texts:
            tokenize(text)
        best = min(best, time.perf_counter() - start)
    return best


def speed(name: str, texts: list[str], ours: Tokenize, nltk: Tokenize, repeats: int) -> dict:
    tokens = sum(len(nltk(text)) for text in texts)
    differ = sum(ours(text) != nltk(text) for text in texts)
    nltk_s, ours_s = best_seconds(nltk, texts, repeats), best_seconds(ours, texts, repeats)
    return {
        "case": name,
        "texts": len(texts),
        "tokens": tokens,
        "differ": differ,
        "nltk_tokens_per_s": tokens / nltk_s,
        "ours_tokens_per_s": tokens / ours_s,
        "speedup": nltk_s / ours_s,
    }


def worst_case(name: str, prefix: str, unit: str, lengths: Sequence[int], ours: Tokenize, nltk: Tokenize) -> dict:
    row: dict = {"case": name, "differ": 0}
    previous = None
    for length in lengths:
        text = build(prefix, unit, length)
        seconds = best_seconds(ours, [text], 3)
        row[f"ours_ms_{length}"] = seconds * 1e3
        row[f"nltk_ms_{length}"] = best_seconds(nltk, [text], 3) * 1e3
        if previous is not None:
            row[f"growth_to_{length}"] = seconds / previous
        previous = seconds
        row["differ"] += ours(text) != nltk(text)
    return row


def run(args: argparse.Namespace) -> dict:
    ours, nltk = default_tokenizer().words, NLTKWordTokenizer().tokenize
    corpora = {
        "rotten-tomatoes test": [e.text for e in open_dataset("rotten-tomatoes").examples("test")],
        "brown test": [" ".join(e.words) for e in open_dataset("brown").examples("test")],
    }
    lengths = [int(n) for n in args.lengths.split(",")]
    speeds = [speed(name, texts, ours, nltk, args.repeats) for name, texts in corpora.items()]
    worst = [worst_case(name, prefix, unit, lengths, ours, nltk) for name, (prefix, unit) in WORST_CASES.items()]
    return {"lengths": lengths, "table": speeds, "worst_cases": worst}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tokenize", description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="passes over each corpus; the best counts")
    parser.add_argument("--lengths", default="1000,10000,100000", help="worst-case input lengths in characters")
    add_json_arg(parser)
    args = parser.parse_args(argv)
    results = publish(
        "tokenize",
        args,
        run(args),
        ["case", "texts", "tokens", "differ", "nltk_tokens_per_s", "ours_tokens_per_s", "speedup"],
    )["results"]
    lengths = results["lengths"]
    columns = [
        "case",
        *(f"ours_ms_{n}" for n in lengths),
        *(f"nltk_ms_{n}" for n in lengths),
        *(f"growth_to_{n}" for n in lengths[1:]),
        "differ",
    ]
    print(table(results["worst_cases"], columns))
    return 0


if __name__ == "__main__":
    sys.exit(main())
