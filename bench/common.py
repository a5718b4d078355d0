"""What every benchmark shares: machine facts, a plain-text table, the JSON report, a timer."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """The facts a figure is meaningless without; the load average says whether the machine was quiet."""
    info: dict[str, Any] = {
        "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_avg_1_5_15": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    for package in ("torch", "onnxruntime", "numpy", "nltk", "accelerate"):
        info[package] = _version(package)
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.is_available()
    except ImportError:
        pass
    return info


def report(name: str, args: argparse.Namespace, results: dict[str, Any]) -> dict[str, Any]:
    """The JSON document a script writes: which benchmark, with which arguments, where, what came out."""
    arguments = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    return {"benchmark": name, "args": arguments, "machine": machine_info(), "results": results}


def write_json(path: Path | None, data: dict[str, Any]) -> None:
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def add_json_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results (and machine info) here")


def fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3g}"
        return f"{value:,.4f}".rstrip("0").rstrip(".") if abs(value) < 10 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return "-" if value is None else str(value)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Rows of dicts as an aligned text table (columns default to the first row's keys)."""
    if not rows:
        return "(no rows)"
    columns = list(columns or rows[0])
    cells = [[fmt(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:  # first column left-aligned (names), the rest right (numbers)
        return "  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(values, widths)))

    return "\n".join([line(columns), line(["-" * w for w in widths]), *map(line, cells)])


def publish(name: str, args: argparse.Namespace, results: dict[str, Any], columns: Sequence[str]) -> dict[str, Any]:
    """Every script's ending: the report with machine info, printed as a table, and written to --json."""
    doc = report(name, args, results)
    print_machine(doc["machine"])
    print(table(results["table"], columns))
    write_json(args.json, doc)
    return doc


def print_machine(info: dict[str, Any]) -> None:
    print(
        f"machine: {info['cpu_model']}, {info['cpus_usable']} usable CPUs, load {info['load_avg_1_5_15']}, "
        f"torch {info.get('torch')}, onnxruntime {info.get('onnxruntime')}, {info['date_utc']}"
    )


@contextmanager
def timed() -> Iterator[dict[str, float]]:
    """`with timed() as t: ...` then `t["s"]` is the elapsed wall time in seconds."""
    box = {"s": 0.0}
    start = time.perf_counter()
    try:
        yield box
    finally:
        box["s"] = time.perf_counter() - start


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run a block on `n` intra-op torch threads, restoring the previous count after."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(saved)
