"""`python -m serve ray`: the same records as `serve predict`, from a private Ray instance on 127.0.0.1.

The identity test starts Ray (through the command, without --address: a local instance bound to
node address 127.0.0.1, no dashboard, no usage report) with 2 model actors; Ray's start-up alone
takes ~15 s on 2 cores, so it is marked slow.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import LINES, REPO, env, one_line_error, serve


def records_file(path: Path, start: int) -> Path:
    rows = [{"id": start + i, "text": line, "source": path.name} for i, line in enumerate(LINES * 5)]
    data = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


@pytest.mark.slow
def test_ray_with_two_workers_matches_predict_record_by_record(runs, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    export_dir = runs["tagger"][1]
    inputs = tmp_path / "in"
    inputs.mkdir()
    files = [records_file(inputs / "a.jsonl", 0), records_file(inputs / "b.jsonl.gz", 1000)]
    out = tmp_path / "out"
    result = serve(
        "ray",
        "--model",
        export_dir,
        "--input",
        inputs / "*",
        "--output",
        out,
        "--workers",
        2,
        "--input-format",
        "jsonl",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    summary = result.stderr.decode().strip().splitlines()[-1]
    assert summary == f"ray: done: 2 file(s), {2 * 5 * len(LINES)} records to {out}"
    got = b"".join(part.read_bytes() for part in sorted(out.glob("part-*.jsonl")))
    expected = b""
    for path in files:
        single = serve("predict", "--model", export_dir, "--input", path, "--output", "-", "--input-format", "jsonl")
        assert single.returncode == 0, single.stderr.decode()
        expected += single.stdout
    got_records, expected_records = map(json.loads, got.splitlines()), map(json.loads, expected.splitlines())
    for ours, theirs in zip(got_records, expected_records, strict=True):
        assert ours == theirs
    assert got == expected  # the same bytes, in input order
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]  # no temporary directory left


# Blocks `import ray` the way an install without the extra would, then runs `python -m serve`.
NO_RAY = """
import importlib.abc, runpy, sys
class NoRay(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "ray" or name.startswith("ray."):
            raise ImportError(f"No module named {name!r} (blocked by the test)")
sys.meta_path.insert(0, NoRay())
sys.argv = ["serve"] + sys.argv[1:]
runpy.run_module("serve", run_name="__main__", alter_sys=True)
"""


def test_ray_without_ray_installed_says_how_to_install_it(runs, lines_file: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            NO_RAY,
            "ray",
            "--model",
            str(runs["tagger"][1]),
            "--input",
            str(lines_file),
            "--output",
            str(tmp_path / "out"),
        ],
        cwd=REPO,
        env=env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert one_line_error(result) == (
        "error: serve ray needs Ray Data, which is not installed here: pip install 'seqlstm[ray]'"
    )
    assert not (tmp_path / "out").exists()


def test_ray_output_and_input_are_checked_before_ray_starts(runs, lines_file: Path, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    base = ["ray", "--model", runs["tagger"][1], "--input", lines_file]
    assert "directory is not empty" in one_line_error(serve(*base, "--output", full))
    assert (full / "keep.txt").read_text() == "mine"
    assert "exists and is not a directory" in one_line_error(serve(*base, "--output", lines_file))
    message = one_line_error(
        serve("ray", "--model", runs["tagger"][1], "--input", tmp_path / "*.nothing", "--output", tmp_path / "new")
    )
    assert "no such file matches" in message and not (tmp_path / "new").exists()
