"""RUN_DIR/logs/metrics.jsonl, the run's events (one JSON object a line), and the tracker's scalars."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from accelerate import Accelerator

from trainer.core.atomic import write_error
from trainer.core.jsonio import dumps
from trainer.plots import end_torn_line


class RunLog:
    """RUN_DIR/logs/metrics.jsonl (one JSON object per event) and the tracker's scalars; main process only."""

    def __init__(self, accelerator: Accelerator, path: Path, fresh: bool) -> None:
        self.accelerator, self.path = accelerator, path
        if accelerator.is_main_process:
            path.parent.mkdir(parents=True, exist_ok=True)
            if fresh:
                path.write_text("", encoding="utf-8")
            else:  # a run killed mid-write may have left half a line: the next event must not join it
                end_torn_line(path)

    def __call__(self, event: str, step: int, **values: Any) -> None:
        if not self.accelerator.is_main_process:
            return
        line = dumps({"event": event, "step": step, "time": round(time.time(), 3), **values}, nan_as_null=True)
        try:  # a non-finite loss or gradient norm is a fact to record: null
            with self.path.open("a", encoding="utf-8") as f:
                f.write(line + "\n")
        except OSError as exc:
            raise write_error(self.path, exc) from None
        prefix = values.get("split", event)
        scalars = {f"{prefix}/{k}": v for k, v in values.items() if type(v) in (int, float)}
        if scalars:
            self.accelerator.log(scalars, step=step)
