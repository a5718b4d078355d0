"""The Ray Data ends of `serve ray` (serve.ray.job): the datasource that reads lines as `serve predict`
does, with its read functions, and the sink that writes JSON Lines parts. Imported only once `ray` is known
to be installed."""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

import pyarrow as pa
from ray.data import Datasink, Datasource, ReadTask
from ray.data.block import Block, BlockAccessor, BlockMetadata

from serve.records import Input, Shard, compression

SPLIT_BYTES = 64 << 20  # one read task per 64 MiB of a plain file
BLOCK_LINES = 4096  # rows per block a read task yields, and per batch an actor predicts


def splits(paths: list[str], split_bytes: int = SPLIT_BYTES) -> list[tuple[str, Shard | None]]:
    """(file, byte range) read tasks: byte ranges for plain files, the whole file when compressed."""
    out: list[tuple[str, Shard | None]] = []
    for path in paths:
        count = 1 if compression(path) else max(1, -(-os.path.getsize(path) // split_bytes))
        out.extend((path, None) if count == 1 else (path, Shard(i, count)) for i in range(1, count + 1))
    return out


def read_split(path: str, shard: Shard | None) -> Iterator[Any]:
    """Blocks of rows (where, first, raw) for one read task; `where` names the line as `predict` does."""
    columns: dict[str, list[Any]] = {"where": [], "first": [], "raw": []}
    with contextlib.closing(Input(path, shard)) as source:
        for number, offset, raw in source.lines():
            columns["where"].append(source.where(number, offset))
            columns["first"].append(offset == 0)
            columns["raw"].append(raw)
            if len(columns["raw"]) == BLOCK_LINES:
                yield pa.table(columns)
                columns = {name: [] for name in columns}
    if columns["raw"]:
        yield pa.table(columns)


class LineSource(Datasource):
    """One read task per (file, byte range) of `splits(paths)`, in that order."""

    def __init__(self, paths: list[str]) -> None:
        super().__init__()
        self.splits = splits(paths)

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
