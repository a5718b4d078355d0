"""`python -m serve {predict,http,bench,ray}`.

Errors, signals and exit statuses are `trainer.core.cli.run_cli`'s: a bad input file or a missing or
mismatched model is one line `error: ...` and exit 2, a failed --verify exit 1, never a traceback.
"""

from __future__ import annotations

import argparse
import sys

from serve import bench, predict
from serve.http import cli as http
from serve.ray import job as ray_job
from trainer.core.cli import Parser, run_cli

COMMANDS = {
    "predict": (predict, "JSON Lines predictions for a file or stdin, one line in, one object out"),
    "http": (http, "an HTTP service: JSON API, Open Inference Protocol (KServe v2), health, metrics"),
    "bench": (bench, "throughput and latency per batch size: onnxruntime fp32/int8, torch eager"),
    "ray": (ray_job, "predict over many files or machines with Ray Data (pip install 'seqlstm[ray]')"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m serve", description="Serve an exported model with onnxruntime.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    def run() -> int:
        args = build_parser().parse_args(argv)
        return int(args.run(args) or 0)

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
