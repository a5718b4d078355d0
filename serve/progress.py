"""Progress of a long `serve predict` run on stderr: a bar on a terminal, report lines otherwise.

In-house rather than tqdm: tqdm is a training dependency, the serving install stays onnxruntime +
numpy, and two output modes fit in a few dozen lines. On a terminal one line is redrawn (at most
`REDRAW` times a second); into a log file or a pipe a line is printed every `--progress-every`
seconds (lines, lines/s, and percent and ETA when the input size is known). A final summary line
ends every successful run. `--quiet` prints neither (warnings about the data still print).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import TextIO

REDRAW = 0.2  # seconds between redraws of the terminal bar
BAR_WIDTH = 24


def add_progress_arguments(parser: argparse.ArgumentParser) -> None:
    """`--progress-every` and `--quiet`, for every command that reports its progress this way."""
    parser.add_argument(
        "--progress-every",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="seconds between progress lines when stderr is not a terminal",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress and no summary on stderr")


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """`update(lines, done_bytes)` after each chunk; `finish(note)` prints the summary line."""

    def __init__(
        self,
        prefix: str,
        total_bytes: int | None,
        *,
        every: float = 30.0,
        quiet: bool = False,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.prefix, self.total, self.every, self.quiet = prefix, total_bytes, every, quiet
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.clock = clock
        self.start = self.last = clock()
        self.lines = 0
        self.drawn = False

    def update(self, lines: int, done_bytes: int) -> None:
        self.lines = lines
        now = self.clock()
        if self.quiet or now - self.last < (REDRAW if self.tty else self.every):
            return
        self.last = now
        if self.tty:
            self.stream.write(f"\r{self.bar(done_bytes, now)}\x1b[K")
            self.drawn = True
        else:
            self.stream.write(f"{self.prefix}: {self.report(done_bytes, now)}\n")
        self.stream.flush()

    def rate(self, now: float) -> float:
        return self.lines / max(now - self.start, 1e-9)

    def report(self, done_bytes: int, now: float) -> str:
        text = f"{self.lines:,} lines, {self.rate(now):,.0f} lines/s"
        if self.total:
            fraction = min(done_bytes / self.total, 1.0)
            text += f", {fraction:.0%} of {self.total:,} bytes"
            if fraction > 0:
                text += f", ETA {duration((now - self.start) * (1 - fraction) / fraction)}"
        return text

    def bar(self, done_bytes: int, now: float) -> str:
        if not self.total:
            return f"{self.prefix}: {self.report(done_bytes, now)}"
        filled = round(BAR_WIDTH * min(done_bytes / self.total, 1.0))
        return f"{self.prefix} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {self.report(done_bytes, now)}"

    def finish(self, note: str = "", force: bool = False) -> None:
        """The summary line (`force`: even under --quiet, for a note the user must see)."""
        if self.drawn:
            self.stream.write("\n")
        if self.quiet and not force:
            return
        now = self.clock()
        text = f"{self.prefix}: done: {self.lines:,} lines in {now - self.start:.1f} s ({self.rate(now):,.0f} lines/s)"
        self.stream.write(text + (f"; {note}" if note else "") + "\n")
        self.stream.flush()
