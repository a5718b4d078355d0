"""Progress of training and pretraining steps on stderr, as `serve predict` shows its lines (serve/progress.py).

On a terminal a bar is redrawn in place; into a log file or a pipe (a Slurm or CI log, `./launch.sh demo > log`)
a plain line is printed every `every` seconds (TrainConfig.progress_every) and once at the end: step, loss,
tokens/s, ETA. A redrawn bar there would be one line of carriage returns megabytes long. Only the main
process prints (`quiet` elsewhere).
"""

from __future__ import annotations

import math
from typing import TextIO

from serve.progress import Progress, duration


class StepProgress(Progress):
    """`step(step, loss, tokens_per_s)` after each optimizer step; `close()` at the end."""

    def __init__(
        self, prefix: str, total: int, initial: int, *, every: float, quiet: bool, stream: TextIO | None = None
    ) -> None:
        super().__init__(prefix, max(total, 1), every=every, quiet=quiet, stream=stream)
        self.initial, self.steps = initial, total
        self.loss = self.tokens_per_s = math.nan  # known at logged steps only (TrainConfig.log_every)
        self.shown = 0  # steps done when a line or bar was last printed

    def step(self, step: int, loss: float | None = None, tokens_per_s: float | None = None) -> None:
        self.loss = self.loss if loss is None else loss
        self.tokens_per_s = self.tokens_per_s if tokens_per_s is None else tokens_per_s
        printed = self.last
        self.update(step - self.initial, step)
        if self.last != printed:
            self.shown = self.lines

    def report(self, done_steps: int, now: float) -> str:
        step, elapsed = self.initial + self.lines, now - self.start
        text = f"step {step:,}/{self.steps:,}"
        if not math.isnan(self.loss):
            text += f", loss {self.loss:.4f}, {self.tokens_per_s:,.0f} tokens/s"
        if self.lines and step < self.steps:
            text += f", ETA {duration(elapsed * (self.steps - step) / self.lines)}"
        return text + f", {duration(elapsed)} elapsed"

    def close(self) -> None:
        """End the bar's line on a terminal; off one, the last step's line (a short run prints at least one)."""
        if self.drawn:
            self.stream.write("\n")
        elif not self.quiet and not self.tty and self.lines > self.shown:
            self.stream.write(f"{self.prefix}: {self.report(self.initial + self.lines, self.clock())}\n")
        self.stream.flush()
