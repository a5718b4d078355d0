"""`python -m serve ray`'s checks before any Ray starts: without Ray installed, one line saying how to install
it; a bad --output or --input, one line and nothing written. (The runs on Ray: test_ray.py.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, env, one_line_error, serve

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
