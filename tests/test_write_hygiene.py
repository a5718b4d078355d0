"""Disk and kill hygiene (trainer/core/atomic.py): every write error is one line naming the file, and the
temporaries a killed process left beside an output are removed, with a line, by the next run on that
output, while a live run's (locked) temporary is left alone. A SIGKILLed `serve predict`, a real full
file system (a 64 KiB tmpfs, where this machine lets the tests mount one), a file-size limit (anywhere),
and the leftovers of a killed export and trainer save."""

import contextlib
import fcntl
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import REPO, env, one_line_error, run_main, serve

from trainer.core.atomic import remove_stale

CONLLU = REPO / "tests" / "fixtures" / "tiny.conllu"
ENOSPC = "cannot write (No space left on device)"


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def wait_for_temporary(directory: Path, pattern: str, proc: subprocess.Popen) -> Path:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = list(directory.glob(pattern))
        if found:
            return found[0]
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else proc.returncode
        time.sleep(0.05)
    raise AssertionError(f"no {pattern} in {directory}")


def test_a_sigkilled_predicts_temporary_is_removed_by_the_next_run_but_a_live_one_is_not(
    runs, tmp_path: Path, lines_file: Path
) -> None:
    export_dir, out = runs["tagger"][1], tmp_path / "out.jsonl"
    command = [
        sys.executable,
        "-m",
        "serve",
        "predict",
        "--model",
        str(export_dir),
        "--input",
        "-",
        "--output",
        str(out),
    ]
    # stdin left open: the run holds its temporary (and the temporary's lock) until it is killed
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=subprocess.PIPE, env=env(), cwd=REPO)
    try:
        assert proc.stdin is not None
        proc.stdin.write(b"The cat sat on the mat .\n")
        proc.stdin.flush()
        temporary = wait_for_temporary(tmp_path, ".out.jsonl.*.tmp", proc)
        beside = serve("predict", "--model", export_dir, "--input", lines_file, "--output", out)
        assert beside.returncode == 0 and b"removed" not in beside.stderr, beside.stderr
        assert temporary.exists(), "a running predict's temporary was taken"
        first = out.read_bytes()
    finally:
        proc.kill()
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL and temporary.exists()  # what a kill leaves behind
    again = serve("predict", "--model", export_dir, "--input", lines_file, "--output", out)
    assert again.returncode == 0, again.stderr
    assert f"note: removed {temporary}, a temporary left by a killed run" in again.stderr.decode()
    assert names(tmp_path) == ["in.txt", "out.jsonl"] and out.read_bytes() == first


@pytest.fixture
def full_fs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs mounted for the test (root only; skipped where mounting is not allowed)."""
    mount = tmp_path / "full"
    mount.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root; the file-size-limit test covers the naming elsewhere")
    tried = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if tried.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({tried.stderr.decode().strip()[:80]})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_predict_on_a_full_disk_names_the_output_and_leaves_nothing(runs, full_fs: Path, tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_text("The cat sat on the mat .\n" * 3000, encoding="utf-8")  # ~240 KB of tagger output
    out = full_fs / "out.jsonl"
    result = serve("predict", "--model", runs["tagger"][1], "--input", source, "--output", out)
    assert one_line_error(result) == f"error: --output {out}: {ENOSPC}"
    assert names(full_fs) == []


def test_export_on_a_full_disk_names_the_file_and_leaves_nothing(runs, full_fs: Path) -> None:
    out = full_fs / "export"
    message = one_line_error(run_main("export", "--model", runs["tagger"][0], "--out", out))
    assert message.startswith(f"error: {out}") and message.endswith(ENOSPC), message
    assert names(full_fs) == []


def test_evaluate_report_on_a_full_disk_names_the_report(tiny_artifact, full_fs: Path, tmp_path: Path) -> None:
    with (full_fs / "filler").open("wb", buffering=0) as filler, contextlib.suppress(OSError):
        while True:  # fill it: the report's first bytes find no room
            filler.write(b"\0" * 4096)
    model = tiny_artifact(tmp_path / "run" / "model", "tagger")
    report = full_fs / "report.json"
    data = f"conllu:{CONLLU},{CONLLU},{CONLLU}"
    result = run_main("trainer", "evaluate", "--model", model, "--data", data, "--report", report)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"error: {report}: {ENOSPC}"
    assert names(full_fs) == ["filler"]


def test_a_file_size_limit_is_named_too(runs, tmp_path: Path) -> None:
    """Another write error kind, that needs no root: RLIMIT_FSIZE (SIGXFSZ ignored, so write() fails)."""

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    source, out = tmp_path / "in.txt", tmp_path / "out.jsonl"
    source.write_text("The cat sat on the mat .\n" * 3000, encoding="utf-8")
    command = ["predict", "--model", str(runs["tagger"][1]), "--input", str(source), "--output", str(out)]
    result = subprocess.run(
        [sys.executable, "-m", "serve", *command],
        capture_output=True,
        env=env(),
        cwd=REPO,
        preexec_fn=limit,  # runs in the child before exec: the limit is its own
        timeout=120,
    )
    assert one_line_error(result) == f"error: --output {out}: cannot write (File too large)"
    assert names(tmp_path) == ["in.txt"]


def test_export_removes_a_killed_exports_temporaries_and_keeps_a_live_ones(runs, tmp_path: Path) -> None:
    out = tmp_path / "export"
    shutil.copytree(runs["tagger"][1], out)
    dead = [tmp_path / ".export.tmp-0123456789ab", tmp_path / ".export.old-ba9876543210"]
    live, other = tmp_path / ".export.tmp-aaaaaaaaaaaa", tmp_path / ".export2.tmp-0123456789ab"
    for path in [*dead, live, other]:
        path.mkdir()
        (path / "model.onnx").write_bytes(b"half")
    holder = os.open(live, os.O_RDONLY)  # what a running export holds
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        result = run_main("export", "--model", runs["tagger"][0], "--out", out, "--force")
    finally:
        os.close(holder)
    assert result.returncode == 0, result.stderr
    for path in dead:
        assert f"export: removed {path}, a temporary left by a killed run" in result.stderr
    assert names(tmp_path) == [".export.tmp-aaaaaaaaaaaa", ".export2.tmp-0123456789ab", "export"]


def test_a_directory_a_kill_left_between_two_renames_is_put_back(tmp_path: Path, capsys) -> None:
    """Killed after `model` was moved aside and before the new one took its name: the old one comes back."""
    aside = tmp_path / ".model.old-0123456789ab" / "model"
    aside.mkdir(parents=True)
    (aside / "config.json").write_text("{}")
    assert remove_stale(tmp_path / "model", "train") == [tmp_path / "model"]
    assert names(tmp_path) == ["model"] and (tmp_path / "model" / "config.json").read_text() == "{}"
    assert "train: put back" in capsys.readouterr().err


def test_trainer_outputs_remove_what_a_killed_writer_left(tiny_artifact, tmp_path: Path, capsys) -> None:
    model = tiny_artifact(tmp_path / "model", "tagger")
    dead_dir, dead_file = tmp_path / ".model.tmp-0123456789ab", tmp_path / ".report.json.0123456789ab.tmp"
    dead_dir.mkdir()
    dead_file.write_text("{")
    capsys.readouterr()
    tiny_artifact(model, "tagger", seed=1)  # save_artifact over RUN_DIR/model, as `trainer train` ends
    assert f"note: removed {dead_dir}, a temporary left by a killed run" in capsys.readouterr().err
    data, report = f"conllu:{CONLLU},{CONLLU},{CONLLU}", tmp_path / "report.json"
    result = run_main("trainer", "evaluate", "--model", model, "--data", data, "--report", report)
    assert result.returncode == 0 and f"note: removed {dead_file}" in result.stderr, result.stderr
    assert names(tmp_path) == ["model", "report.confusion.png", "report.json"]
