"""The Ray Data ends of `serve ray` (serve.ray_job): the datasource that reads lines as `serve predict`
does, and the sink that writes JSON Lines parts. Imported only once `ray` is known to be installed."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from typing import Any

from ray.data import Datasink, Datasource, ReadTask
from ray.data.block import Block, BlockAccessor, BlockMetadata

from serve.ray.job import read_split
from serve.records import Shard


class LineSource(Datasource):
    """One read task per (file, byte range) of `serve.ray_job.splits`, in that order."""

    def __init__(self, splits: list[tuple[str, Shard | None]]) -> None:
        super().__init__()
        self.splits = splits

    def estimate_inmemory_data_size(self) -> int:
        return sum(os.path.getsize(path) // (shard.count if shard else 1) for path, shard in self.splits)

    def get_read_tasks(
        self, parallelism: int, per_task_row_limit: int | None = None, data_context: Any = None
    ) -> list[ReadTask]:
        # One task per split whatever `parallelism` asks: the splits are the unit that keeps line order.
        return [
            ReadTask(
                lambda path=path, shard=shard: read_split(path, shard),
                BlockMetadata(
                    num_rows=None,
                    size_bytes=os.path.getsize(path) // (shard.count if shard else 1),
                    exec_stats=None,
                    input_files=(path,),
                ),
                per_task_row_limit=per_task_row_limit,
            )
            for path, shard in self.splits
        ]


class JsonlSink(Datasink):
    """Each write task writes its lines to DIR/part-NNNNN.jsonl (NNNNN: the task's index, in input order)
    and returns its counts; the driver adds them up in `on_write_complete`."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.lines = 0
        self.skipped: Counter[str] = Counter()

    def write(self, blocks: Iterable[Block], ctx: Any) -> dict[str, Any]:
        lines: list[str] = []
        skipped: Counter[str] = Counter()
        for block in blocks:
            table = BlockAccessor.for_block(block).to_arrow()
            for line, skip in zip(table.column("line").to_pylist(), table.column("skip").to_pylist()):
                if skip:
                    skipped[skip] += 1
                else:
                    lines.append(line)
        if lines:
            path = os.path.join(self.directory, f"part-{ctx.task_idx:05d}.jsonl")
            with open(path, "w", encoding="utf-8", newline="\n") as f:
                f.write("".join(lines))
        return {"lines": len(lines), "skipped": dict(skipped)}

    def on_write_complete(self, write_result: Any) -> None:
        for returned in write_result.write_returns:
            self.lines += returned["lines"]
            self.skipped.update(returned["skipped"])

    def summary(self) -> str:
        if not self.skipped:
            return ""
        reasons = ", ".join(f"{count} {reason}" for reason, count in self.skipped.most_common())
        return f"skipped {sum(self.skipped.values())} ({reasons})"


class Tally:
    """A Ray actor (no CPU) that the model actors report to, so the driver sees progress while Ray Data
    runs: actors started; lines and bytes predicted, and inputs truncated at max_tokens. Nothing else in
    Ray Data says it as it happens."""

    def __init__(self) -> None:
        self.actors = self.lines = self.bytes = self.truncated = 0

    def started(self) -> None:
        self.actors += 1

    def add(self, lines: int, size: int, truncated: int) -> None:
        self.lines += lines
        self.bytes += size
        self.truncated += truncated

    def state(self) -> tuple[int, int, int, int]:
        return self.actors, self.lines, self.bytes, self.truncated
