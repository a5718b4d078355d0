"""Progress of training steps on stderr, as `serve predict` shows its lines (serve/progress.py).

On a terminal a bar is redrawn in place; into a log file or a pipe (a Slurm or CI log, `./launch.sh demo > log`),
where a redrawn bar would be one line of carriage returns megabytes long, a plain line is printed every `every`
seconds (TrainConfig.progress_every): step, loss, tokens/s, ETA. Only the main process prints (`quiet` elsewhere).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TextIO

from serve.progress import Progress, duration


class StepProgress(Progress):
    """`step(step, loss, tokens_per_s)` after each optimizer step; `close()` at the end."""

    def __init__(
        self,
        prefix: str,
        total: int,
        initial: int,
        *,
        every: float,
        quiet: bool,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(prefix, max(total, 1), every=every, quiet=quiet, stream=stream, clock=clock)
        self.initial, self.steps = initial, total
        self.loss = self.tokens_per_s = math.nan  # known at logged steps only (TrainConfig.log_every)

    def step(self, step: int, loss: float | None = None, tokens_per_s: float | None = None) -> None:
        self.loss = self.loss if loss is None else loss
        self.tokens_per_s = self.tokens_per_s if tokens_per_s is None else tokens_per_s
        self.update(step - self.initial, step)

    def report(self, done_steps: int, now: float) -> str:
        step, elapsed = self.initial + self.lines, now - self.start
        text = f"step {step:,}/{self.steps:,}"
        if not math.isnan(self.loss):
            text += f", loss {self.loss:.4f}, {self.tokens_per_s:,.0f} tokens/s"
        if self.lines and step < self.steps:
            text += f", ETA {duration(elapsed * (self.steps - step) / self.lines)}"
        return text + f", {duration(elapsed)} elapsed"

    def close(self) -> None:
        """End the bar's line on a terminal."""
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
