"""`python -m serve {predict,http,bench}`.

Any `SeqLSTMError` (a bad input file, a missing or mismatched model, a failed --verify) becomes
one line `error: <message>` on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

from serve import bench, http, predict
from trainer.errors import SeqLSTMError

COMMANDS = {
    "predict": (predict, "JSON Lines predictions for a file or stdin, one line in, one object out"),
    "http": (http, "a small JSON API: POST /predict, GET /health, GET /metadata"),
    "bench": (bench, "throughput and latency per batch size: onnxruntime fp32/int8, torch eager"),
}


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line, like every other bad-input error, instead of argparse's usage block."""
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m serve", description="Serve an exported model with onnxruntime.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except SeqLSTMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`... | head`): not an error. Point stdout at /dev/null so that
        # the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        print(f"error: {exc.filename or ''}{': ' if exc.filename else ''}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
