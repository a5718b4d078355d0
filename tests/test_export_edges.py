"""`python -m export` at its edges: data it must not open, directories it must not replace, writes that fail.

conftest's tiny random-weight sentiment artifact (`artifacts["sentiment"]`), copied per test; exports run
without --data, the quickest kind.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import load_json, run_export

import export.onnx_export
import export.validate
import trainer.artifact
from export.__main__ import build_parser, run
from trainer.artifact import load_artifact
from trainer.core.errors import WriteError

SECRET = "root:x:0:0:a line nobody asked to see"
pytestmark = pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # in-process exports trace


@pytest.fixture
def run_dir(artifacts: dict[str, Path], tmp_path: Path) -> Path:
    """A fresh copy of RUN_DIR (holding only the sentiment `model/`) in this test's directory."""
    shutil.copytree(artifacts["sentiment"], tmp_path / "run" / "model")
    return tmp_path / "run"


def snapshot(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_data_named_by_metrics_json_is_never_opened(run_dir: Path, tmp_path: Path, data_dir: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET + "\n")
    metrics = load_json(run_dir / "model" / "metrics.json") | {"data": f"fasttext:{secret}"}
    (run_dir / "model" / "metrics.json").write_text(json.dumps(metrics))
    out = tmp_path / "export"
    proc = run_export(data_dir, "--model", str(run_dir / "model"), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    report = load_json(out / "validation.json")
    assert "nobody asked" not in proc.stdout + proc.stderr + (out / "validation.json").read_text()
    reason = "no --data given; pass --data SPEC to add dev-split sentences"
    assert report["real_data"] == {"used": False, "reason": reason} and report["passed"]
    assert f"real-data cases skipped: {reason}" in proc.stdout
    assert not [c for c in report["cases"] if c["name"].startswith("data-")]


def link(path: Path, target: Path) -> Path:
    path.symlink_to(target, target_is_directory=True)
    return path


# (--model, --out) for a RUN_DIR holding model/, in a test directory that also holds `elsewhere/`
OVERLAPS: dict[str, Callable[[Path], tuple[Path, Path]]] = {
    "out is the model": lambda run: (run / "model", run / "model"),
    "out is the run dir": lambda run: (run / "model", run),
    "out inside the model": lambda run: (run / "model", run / "model" / "onnx"),
    "out inside the run dir": lambda run: (run / "model", run / "export"),
    "out holds the run dir": lambda run: (run / "model", run.parent),
    "out a link to the model": lambda run: (run / "model", link(run.parent / "link", run / "model")),
    "out a link to the run dir": lambda run: (run / "model", link(run.parent / "link", run)),
    "model through a link": lambda run: (link(run.parent / "link", run / "model"), run),
    "model a link named model": lambda run: (
        link(run.parent / "elsewhere" / "model", run / "model"),
        run.parent / "elsewhere",
    ),
    "out.failed is the model": lambda run: (run / "model", run / "mod"),  # model moved to run/mod.failed below
}


@pytest.mark.parametrize("case", list(OVERLAPS))
def test_out_overlapping_the_model_or_its_run_dir_is_refused(
    case: str, run_dir: Path, tmp_path: Path, data_dir: Path
) -> None:
    (tmp_path / "elsewhere").mkdir()
    model, out = OVERLAPS[case](run_dir)
    if case == "out.failed is the model":
        model = (run_dir / "model").rename(run_dir / "mod.failed")
    before = snapshot(tmp_path)
    proc = run_export(data_dir, "--model", str(model), "--out", str(out), "--force")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"error: --out {out}: ") and proc.stderr.count("\n") == 1
    assert " overlaps the model" in proc.stderr and proc.stdout == ""
    assert snapshot(tmp_path) == before  # nothing deleted, nothing written
    assert load_artifact(model).task == "sentiment"


TORCH_LOADED = """
import sys
from export.__main__ import main
status = main(sys.argv[1:])
print("torch" in sys.modules, status)
"""


@pytest.mark.parametrize(
    "bad",
    [["--atol", "inf"], ["--out", "{run}/export"], ["--out", "{tmp}/file"]],
    ids=["atol", "out in the run dir", "out a file"],
)
def test_bad_arguments_fail_before_torch_is_imported(bad: list[str], tmp_path: Path) -> None:
    """Importing torch takes seconds; a mistyped flag should not wait for it."""
    (tmp_path / "file").write_text("precious")
    args = {"--model": str(tmp_path / "run" / "model"), "--out": str(tmp_path / "new-export")}
    args[bad[0]] = bad[1].format(run=tmp_path / "run", tmp=tmp_path)
    proc = run_export(tmp_path, *(part for pair in args.items() for part in pair), code=TORCH_LOADED)
    assert proc.stdout.split() == ["False", "2"], proc.stderr
    assert proc.stderr.startswith(f"error: {bad[0]} ") and proc.stderr.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.fixture
def previous(run_dir: Path, tmp_path: Path, data_dir: Path) -> Path:
    """A finished export at tmp_path/export, to be replaced (with --force) by a failing one."""
    proc = run_export(data_dir, "--model", str(run_dir / "model"), "--out", str(tmp_path / "export"))
    assert proc.returncode == 0, proc.stderr
    return tmp_path / "export"


def fail_writing(name: str, fault: BaseException) -> Callable[[pytest.MonkeyPatch, Path], None]:
    """trainer.artifact.write_json failing for the file called `name` (the disk filling up at that point)."""

    def install(monkeypatch: pytest.MonkeyPatch, out: Path) -> None:
        real = trainer.artifact.write_json

        def write_json(path: Path, data: Any, **options: Any) -> None:
            if path.name == name:
                raise fault
            real(path, data, **options)

        monkeypatch.setattr(trainer.artifact, "write_json", write_json)

    return install


def fail_final_rename(monkeypatch: pytest.MonkeyPatch, out: Path) -> None:
    """os.replace failing to move the finished temporary directory onto EXPORT_DIR."""
    real = os.replace

    def replace(src: Any, dst: Any) -> None:
        if Path(dst) == out.resolve() and Path(src).name.startswith(f".{out.name}.tmp-"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(trainer.artifact.os, "replace", replace)


def interrupt_export(monkeypatch: pytest.MonkeyPatch, out: Path) -> None:
    def export_onnx(*args: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(export.onnx_export, "export_onnx", export_onnx)


# A write error is a WriteError naming --out (trainer.core.atomic), not the kernel's bare message.
FAULTS = {
    "disk full writing validation.json": (fail_writing("validation.json", OSError(errno.ENOSPC, "full")), WriteError),
    "disk full writing test_vectors.json": (
        fail_writing("test_vectors.json", OSError(errno.ENOSPC, "full")),
        WriteError,
    ),
    "disk full writing model.json": (fail_writing("model.json", OSError(errno.ENOSPC, "full")), WriteError),
    "interrupt writing model.json": (fail_writing("model.json", KeyboardInterrupt()), KeyboardInterrupt),
    "disk full at the final rename": (fail_final_rename, WriteError),
    "interrupt during the ONNX export": (interrupt_export, KeyboardInterrupt),
}


@pytest.mark.parametrize("case", list(FAULTS))
def test_a_failed_export_leaves_the_previous_one_and_no_temporaries(
    case: str, previous: Path, run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install, raised = FAULTS[case]
    before, model_before = snapshot(previous), snapshot(run_dir)
    # Validation is not what fails here; a canned pass keeps each case to the export and the writes.
    canned = {"passed": True, "failures": [], "checks": 1, "max_abs_diff": 0.0, "real_data": {"used": False}}
    monkeypatch.setattr(export.validate, "validate", lambda *args: dict(canned))
    install(monkeypatch, previous)
    args = build_parser().parse_args(["--model", str(run_dir / "model"), "--out", str(previous), "--force"])
    with pytest.raises(raised):
        run(args)
    assert snapshot(previous) == before and snapshot(run_dir) == model_before
    assert sorted(p.name for p in previous.parent.iterdir()) == ["export", "run"]  # no .tmp-, .old- or .failed
