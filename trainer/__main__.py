"""`python -m trainer {fetch,stats,train,evaluate}`.

`fetch` and `stats` import no torch; `train` and `evaluate` hand their arguments to
`trainer.<command>.main(argv)`, imported only when asked for.
Errors, signals and exit statuses are `trainer.core.cli.run_cli`'s: one line `error: ...`, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from trainer.core.cli import Parser, extra_needed, run_cli
from trainer.core.errors import ConfigError
from trainer.core.jsonio import dumps

DELEGATED = {
    "train": "train a tagger or sentiment model (see `python -m trainer train --help`)",
    "evaluate": "evaluate a trained model (see `python -m trainer evaluate --help`)",
}
# Commands that were removed, with why (CHANGELOG.md has the figures).
REMOVED = {"pretrain": "LM pretraining measured no clear gain (Rotten Tomatoes +0.4 dev points, in the noise)"}


def _fetch(args: argparse.Namespace) -> int:
    from trainer.core.fetch import fetch

    print(fetch(args.name))
    return 0


def _stats(args: argparse.Namespace) -> int:
    from trainer.core.data import describe_skipped, open_dataset, stats

    dataset = open_dataset(args.data, skip_bad_lines=args.skip_bad_lines)
    result = stats(dataset)
    print(dumps(result, indent=2))
    if dataset.skipped:
        print(f"stats: {describe_skipped(dataset.skipped)}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from trainer.core.data import SPEC_FORMS
    from trainer.core.fetch import SOURCES

    parser = Parser(prog="python -m trainer", description="Data, training and evaluation.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    fetch = commands.add_parser("fetch", help="download and verify a data set into $DATA_DIR (default ./data)")
    fetch.add_argument("name", choices=sorted(SOURCES))
    fetch.set_defaults(run=_fetch)
    stats = commands.add_parser("stats", help="print per-split sentence/document, token and label counts as JSON")
    stats.add_argument("--data", required=True, metavar="SPEC", help=f"one of: {SPEC_FORMS}")
    stats.add_argument(
        "--skip-bad-lines",
        action="store_true",
        help="skip malformed fasttext lines (counted on stderr) instead of failing",
    )
    stats.set_defaults(run=_stats)
    for name, help_text in DELEGATED.items():
        commands.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)

    def run() -> int:
        if argv and argv[0] in REMOVED:
            raise ConfigError(f"`trainer {argv[0]}` was removed: {REMOVED[argv[0]]}; see CHANGELOG.md")
        if argv and argv[0] in DELEGATED:
            # The delegated module owns its whole argument list, --help included.
            with extra_needed("train", f"`trainer {argv[0]}`"):  # torch, accelerate, ...: imported here or in main
                module = importlib.import_module(f"trainer.{argv[0]}")
                return int(module.main(argv[1:]) or 0)
        args = build_parser().parse_args(argv)
        return args.run(args)

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
