"""Every command line against a table of bad inputs (docs/RELIABILITY.md lists the classes).

Each case runs the real command in a subprocess and must end the same way: exit status 2 (1 only for
a failed validation), exactly one line on stderr starting `error:`, no traceback, and no input,
model or export file changed or deleted. Cases run on tiny random-weight artifacts and their
exports, so the table needs no corpus and no training.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

INPUT_LINES = "The cat sat on the mat.\n\nA good movie, not bad at all!\n"


@dataclass
class Case:
    id: str
    argv: list[str]  # placeholders: {run} {model} {export} {sentiment_model} {sentiment_export} {input} {out} {tmp} {conllu}
    expect: str  # a substring of the one stderr line
    setup: Callable[[Path], None] | None = None  # mutates the workspace before the run
    status: int = 2
    command: str = "python"  # or "launch.sh"


def edit_json(path: str, change: Callable[[dict], object]) -> Callable[[Path], None]:
    def setup(ws: Path) -> None:
        file = ws / path
        data = json.loads(file.read_text())
        result = change(data)
        file.write_text(json.dumps(data if result is None else result))
    return setup


def write(path: str, content: str | bytes) -> Callable[[Path], None]:
    def setup(ws: Path) -> None:
        file = ws / path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(content if isinstance(content, bytes) else content.encode())
    return setup


TRAIN = ["-m", "trainer", "train", "--task", "tagger", "--data", "conllu:{conllu}", "--out", "{tmp}/new-run"]
PREDICT = ["-m", "serve", "predict", "--model", "{export}", "--input", "{input}", "--output", "{out}"]

CASES = [
    # ---- the command lines themselves
    Case("trainer without a command", ["-m", "trainer"], "required: COMMAND"),
    Case("export without arguments", ["-m", "export"], "required: --model, --out"),
    Case("serve unknown command", ["-m", "serve", "fly"], "invalid choice: 'fly'"),
    Case("launch.sh --nproc without a value", ["train", "--nproc"], "--nproc needs a value", command="launch.sh"),
    Case("launch.sh --nproc 0", ["train", "--nproc", "0", "--"], "--nproc must be a positive integer",
         command="launch.sh"),
    Case("launch.sh unknown command", ["fly"], "unknown command 'fly'", command="launch.sh"),
]


@pytest.fixture(scope="module")
def workspace_template(tmp_path_factory: pytest.TempPathFactory, tiny_artifact) -> Path:
    """Tiny tagger and sentiment artifacts, their exports, an input file and CoNLL-U data."""
    root = tmp_path_factory.mktemp("bad-inputs")
    for task, run in (("tagger", "run"), ("sentiment", "sentiment-run")):
        model = tiny_artifact(root / run / "model", task, 0)
        proc = subprocess.run([sys.executable, "-m", "export", "--model", str(model), "--out",
                               str(root / f"{run}-export")], cwd=REPO, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
    (root / "input.txt").write_text(INPUT_LINES, encoding="utf-8")
    shutil.copy(REPO / "tests" / "fixtures" / "tiny.conllu", root / "tiny.conllu")
    return root


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under root (links by target), so a changed or deleted file shows."""
    return {str(p.relative_to(root)): (os.readlink(p) if p.is_symlink() else hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*")) if p.is_file() or p.is_symlink()}


def run_case(case: Case, ws: Path) -> subprocess.CompletedProcess:
    names = {"run": ws / "run", "model": ws / "run" / "model", "export": ws / "run-export",
             "sentiment_model": ws / "sentiment-run" / "model", "sentiment_export": ws / "sentiment-run-export",
             "input": ws / "input.txt", "out": ws / "out.jsonl", "tmp": ws, "conllu": ws / "tiny.conllu"}
    argv = [arg.format(**names) for arg in case.argv]
    command = [str(REPO / "launch.sh"), *argv] if case.command == "launch.sh" else [sys.executable, *argv]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(case: Case, workspace_template: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(workspace_template, ws, symlinks=True)
    if case.setup is not None:
        case.setup(ws)
    before = snapshot(ws)
    proc = run_case(case, ws)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == case.status, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert case.expect in lines[0], lines[0]
    assert snapshot(ws) == before, "an input, model or export file was changed, created or deleted"
