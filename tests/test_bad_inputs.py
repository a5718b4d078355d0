"""Every command line against a table of bad inputs (docs/RELIABILITY.md lists the classes).

Each case runs the real command and must end the same way: exit status 2 (1 only for a failed
validation), exactly one line on stderr starting `error:`, no traceback, and no input, model or
export file changed or deleted. Most cases run the command's `main(argv)` in a child process forked
from a server that has imported torch once (`helpers.run_main`: the same parsing, checks, `run_cli` and
exit status, without starting Python and importing torch 50 times); the `launch.sh` cases and one case
per `python -m` command run as plain subprocesses, so the exit status is seen as the shell sees it.
Cases run on tiny random-weight artifacts and their exports, so the table needs no corpus and no training.
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
from helpers import REPO, run_main


@dataclass
class Case:
    id: str
    argv: list[
        str
    ]  # placeholders: {run} {model} {export} {sentiment_model} {sentiment_export} {input} {out} {tmp} {conllu}
    expect: str  # a substring of the one stderr line
    setup: Callable[[Path], None] | None = None  # mutates the workspace before the run
    status: int = 2
    command: str = "forked"  # `python -m` as a forked child (`run_main`), "python" (a subprocess) or "launch.sh"


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


def nan_weight(path: str) -> Callable[[Path], None]:
    def setup(ws: Path) -> None:
        from safetensors.torch import load_file, save_file

        tensors = load_file(str(ws / path))
        tensors["output.bias"][0] = float("nan")
        save_file(tensors, str(ws / path))

    return setup


def link(name: str, target: str) -> Callable[[Path], None]:
    def setup(ws: Path) -> None:
        (ws / name).symlink_to(ws / target)

    return setup


def mkdir(name: str) -> Callable[[Path], None]:
    return lambda ws: (ws / name).mkdir(parents=True)


TRAIN = ["-m", "trainer", "train", "--task", "tagger", "--data", "conllu:{conllu}", "--out", "{tmp}/new-run"]
EVALUATE = ["-m", "trainer", "evaluate", "--model", "{model}", "--data", "conllu:{conllu},{conllu},{conllu}"]
EXPORT = ["-m", "export", "--model", "{model}", "--out", "{tmp}/new-export"]
PREDICT = ["-m", "serve", "predict", "--model", "{export}", "--input", "{input}", "--output", "{out}"]
HTTP = ["-m", "serve", "http", "--model", "{export}", "--port", "0"]
MODEL_JSON = "run-export/model.json"

CASES = [
    # ---- the command lines themselves
    Case("trainer without a command", ["-m", "trainer"], "required: COMMAND", command="python"),
    Case("export without arguments", ["-m", "export"], "required: --model, --out", command="python"),
    Case("serve unknown command", ["-m", "serve", "fly"], "invalid choice: 'fly'", command="python"),
    Case("launch.sh --nproc without a value", ["train", "--nproc"], "--nproc needs a value", command="launch.sh"),
    Case(
        "launch.sh --nproc 0",
        ["train", "--nproc", "0", "--"],
        "--nproc must be a positive integer",
        command="launch.sh",
    ),
    Case("launch.sh unknown command", ["fly"], "unknown command 'fly'", command="launch.sh"),
    # ---- training config: every value checked where it is parsed, before torch sees it
    Case("train --hidden 0", [*TRAIN[:4], "sentiment", *TRAIN[5:], "--hidden", "0"], "'hidden' must be in [1, 65536]"),
    Case("train --embed_dim -1", [*TRAIN[:4], "sentiment", *TRAIN[5:], "--embed_dim", "-1"], "'embed_dim' must be in"),
    Case("train --dropout 2", [*TRAIN, "--dropout", "2"], "'dropout' must be in [0, 1); got 2.0"),
    Case("train --layers 0", [*TRAIN, "--layers", "0"], "'layers' must be in [1, 64]; got 0"),
    Case("train --lr inf", [*TRAIN, "--lr", "inf"], "'lr' must be a finite number; got inf"),
    Case("train --lr nan", [*TRAIN, "--lr", "nan"], "'lr' must be a finite number; got nan"),
    Case("train --batch_size 0", [*TRAIN, "--batch_size", "0"], "'batch_size' must be in"),
    Case("train --max_tokens 0", [*TRAIN, "--max_tokens", "0"], "'max_tokens' must be in"),
    Case("train --mixed_precision fp8", [*TRAIN, "--mixed_precision", "fp8"], "'mixed_precision' must be one of"),
    Case("train unknown key", [*TRAIN, "--hiden", "3"], "unknown config key 'hiden'"),
    Case("train --config a directory", [*TRAIN, "--config", "{tmp}"], "is a directory; expected a JSON file"),
    Case(
        "train --config NaN",
        [*TRAIN, "--config", "{tmp}/cfg.json"],
        "cfg.json: lr: NaN is not valid JSON (RFC 8259 has no NaN or Infinity)",
        setup=write("cfg.json", '{"lr": NaN}'),
    ),
    Case("train --out an existing file", [*TRAIN[:-1], "{input}"], "exists and is not a directory"),
    Case("train --data malformed spec", [*TRAIN[:6], "conllu:", *TRAIN[7:]], "conllu"),
    Case("train --data missing file", [*TRAIN[:6], "conllu:{tmp}/nope.conllu", *TRAIN[7:]], "nope.conllu"),
    # ---- evaluate
    Case("evaluate --batch-size 0", [*EVALUATE, "--batch-size", "0"], "--batch-size must be in"),
    Case("evaluate --report a directory", [*EVALUATE, "--report", "{tmp}"], "is a directory; expected a file path"),
    Case(
        "evaluate non-finite weights",
        EVALUATE,
        "holds non-finite values",
        setup=nan_weight("run/model/model.safetensors"),
    ),
    # ---- a model directory as untrusted input
    Case(
        "config.json model is a list",
        EXPORT,
        "expected a JSON object of config keys; got list",
        setup=edit_json("run/model/config.json", lambda d: d.update(model=[])),
    ),
    Case(
        "config.json layers 0",
        EXPORT,
        "'layers' must be in [1, 64]; got 0",
        setup=edit_json("run/model/config.json", lambda d: d["model"].update(layers=0)),
    ),
    Case(
        "vocab.json is a list",
        EXPORT,
        "vocab.json: expected a JSON object; got list",
        setup=write("run/model/vocab.json", "[]"),
    ),
    Case(
        "vocab.json labels cut short",
        EXPORT,
        "must hold the 12 universal tags",
        setup=edit_json("run/model/vocab.json", lambda d: d.update(labels=d["labels"][:-1])),
    ),
    Case("corrupt weights", EXPORT, "model.safetensors", setup=write("run/model/model.safetensors", b"\x00" * 64)),
    # ---- export's own arguments
    Case("export --out the model, --force", [*EXPORT[:5], "{model}", "--force"], "overlaps the model directory"),
    Case("export --out the run dir, --force", [*EXPORT[:5], "{run}", "--force"], "overlaps the model directory"),
    Case(
        "export --out beside the model in its run dir",
        [*EXPORT[:5], "{run}/export"],
        "overlaps the model's run directory",
    ),
    Case(
        "export --out a link to the model",
        [*EXPORT[:5], "{tmp}/link", "--force"],
        "overlaps the model directory",
        setup=link("link", "run/model"),
    ),
    Case("export --atol inf", [*EXPORT, "--atol", "inf"], "--atol must be a finite number"),
    Case("export --opset 99", [*EXPORT, "--opset", "99"], "opset"),
    Case("export --out not empty", [*EXPORT[:5], "{sentiment_export}"], "not empty; pass --force"),
    # ---- serve predict: what --output may replace
    Case("predict --output = --input", [*PREDICT[:-1], "{input}"], "same file as --input"),
    Case(
        "predict --output a symlink",
        [*PREDICT[:-1], "{tmp}/out-link"],
        "is a symbolic link",
        setup=link("out-link", "input.txt"),
    ),
    Case("predict --output a directory", [*PREDICT[:-1], "{tmp}"], "is a directory"),
    Case("predict --input a directory", [*PREDICT[:6], "{tmp}", *PREDICT[7:]], "Is a directory"),
    Case("predict --batch-size 0", [*PREDICT, "--batch-size", "0"], "--batch-size must be an integer from 1"),
    Case("predict --shard 3/2", [*PREDICT, "--shard", "3/2"], "--shard must be I/N with 1 <= I <= N"),
    Case("predict --shard x", [*PREDICT, "--shard", "x"], "--shard must be I/N with integers"),
    Case("predict --progress-every -1", [*PREDICT, "--progress-every", "-1"], "--progress-every must be"),
    Case("predict --errors ignore", [*PREDICT, "--errors", "ignore"], "invalid choice: 'ignore'"),
    Case("predict jsonl not JSON", [*PREDICT, "--input-format", "jsonl"], "input.txt:1: not JSON"),
    Case(
        "ray --workers 0",
        [
            "-m",
            "serve",
            "ray",
            "--model",
            "{export}",
            "--input",
            "{input}",
            "--output",
            "{tmp}/ray-out",
            "--workers",
            "0",
        ],
        "--workers must be an integer from 1",
    ),
    Case("predict --model a file", [*PREDICT[:4], "{input}", *PREDICT[5:]], "not a directory"),
    # ---- an export directory as untrusted input
    Case(
        "model.json atol 'abc'",
        PREDICT,
        "atol must be a finite number > 0",
        setup=edit_json(MODEL_JSON, lambda d: d.update(atol="abc")),
    ),
    Case(
        "model.json vocab null",
        PREDICT,
        "vocab must be an object",
        setup=edit_json(MODEL_JSON, lambda d: d.update(vocab=None)),
    ),
    Case(
        "model.json labels cut short",
        PREDICT,
        "vocab.labels has 11 entries",
        setup=edit_json(MODEL_JSON, lambda d: d["vocab"].update(labels=d["vocab"]["labels"][:-1])),
    ),
    Case(
        "model.json onnx.file outside the export",
        PREDICT,
        "must be a plain file name inside the export directory",
        setup=edit_json(MODEL_JSON, lambda d: d["onnx"].update(file="../sentiment-run-export/model.onnx")),
    ),
    Case(
        "model.json onnx.file absolute",
        PREDICT,
        "must be a plain file name inside the export directory",
        setup=lambda ws: edit_json(MODEL_JSON, lambda d: d["onnx"].update(file=str(ws / "run-export/model.onnx")))(ws),
    ),
    Case(
        "model.onnx changed after export",
        PREDICT,
        "does not match model.json",
        setup=lambda ws: (ws / "run-export/model.onnx").write_bytes((ws / "run-export/model.onnx").read_bytes() + b"x"),
    ),
    # ---- serve http: flags checked before serving
    Case("http --max-wait-ms inf", [*HTTP, "--max-wait-ms", "inf"], "--max-wait-ms must be a finite number"),
    Case("http --max-wait-ms nan", [*HTTP, "--max-wait-ms", "nan"], "--max-wait-ms must be a finite number"),
    Case("http --max-wait-ms 1e12", [*HTTP, "--max-wait-ms", "1e12"], "--max-wait-ms must be a finite number"),
    Case("http --port 70000", [*HTTP[:-1], "70000"], "--port must be an integer from 0 to 65535"),
    Case(
        "http labels cut short",
        HTTP,
        "vocab.labels has 11 entries",
        setup=edit_json(MODEL_JSON, lambda d: d["vocab"].update(labels=d["vocab"]["labels"][:-1])),
    ),
]


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under root (links by target), so a changed or deleted file shows."""
    return {
        str(p.relative_to(root)): (os.readlink(p) if p.is_symlink() else hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(root.rglob("*"))
        if p.is_file() or p.is_symlink()
    }


def run_case(case: Case, ws: Path) -> subprocess.CompletedProcess:
    names = {
        "run": ws / "run",
        "model": ws / "run" / "model",
        "export": ws / "run-export",
        "sentiment_model": ws / "sentiment-run" / "model",
        "sentiment_export": ws / "sentiment-run-export",
        "input": ws / "input.txt",
        "out": ws / "out.jsonl",
        "tmp": ws,
        "conllu": ws / "tiny.conllu",
    }
    argv = [arg.format(**names) for arg in case.argv]
    if case.command == "forked":
        assert argv[0] == "-m", argv
        return run_main(*argv[1:], env={"OMP_NUM_THREADS": "1"}, timeout=300)
    command = [str(REPO / "launch.sh"), *argv] if case.command == "launch.sh" else [sys.executable, *argv]
    return subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )


@dataclass
class Outcome:
    proc: subprocess.CompletedProcess
    changed: bool  # a file of the case's workspace was created, changed or deleted


@pytest.fixture(scope="module")
def outcomes(workspace_template: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    """Every case run once, each in its own copy of the workspace."""
    root = tmp_path_factory.mktemp("cases")

    def run(index: int, case: Case) -> Outcome:
        ws = root / str(index)
        shutil.copytree(workspace_template, ws, symlinks=True)
        if case.setup is not None:
            case.setup(ws)
        before = snapshot(ws)
        proc = run_case(case, ws)
        return Outcome(proc, snapshot(ws) != before)

    return {case.id: run(i, case) for i, case in enumerate(CASES)}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(case: Case, outcomes: dict[str, Outcome]) -> None:
    proc = outcomes[case.id].proc
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == case.status, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert case.expect in lines[0], lines[0]
    assert not outcomes[case.id].changed, "an input, model or export file was changed, created or deleted"
