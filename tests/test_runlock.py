"""One run per RUN_DIR (trainer/runlock.py): a second trainer on a held --out stops in one line naming the holder,
the first goes on untouched; a lock a dead process left is taken over with a line; evaluate says what it reads."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import REPO, events, one_line_error, tiny_tagger, trainer

from trainer.core.errors import ArtifactError
from trainer.runlock import LOCK_FILE, STALE, RunLocked, acquire, describe, holder, note_training

# `python HOLD READY GO ARGS`: `python -m trainer ARGS` that, once training is about to start (RUN_DIR locked),
# creates READY and waits for GO before it trains.
HOLD = """
import sys, time
from pathlib import Path
import trainer.loop as loop
ready, go = Path(sys.argv.pop(1)), Path(sys.argv.pop(1))
real_fit = loop.Trainer.fit
def fit(self):
    ready.touch()
    deadline = time.monotonic() + 120
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    return real_fit(self)
loop.Trainer.fit = fit
from trainer.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


@pytest.mark.trains
def test_a_second_trainer_on_a_held_out_stops_and_the_first_is_untouched(data: dict[str, str], tmp_path: Path) -> None:
    run, ready, go = tmp_path / "run", tmp_path / "ready", tmp_path / "go"
    script = tmp_path / "hold.py"
    script.write_text(HOLD)
    args = ["train", *tiny_tagger(data["tagger"]), "--max_steps", "4", "--save_every", "2", "--out", str(run)]
    first = subprocess.Popen(
        [sys.executable, str(script), str(ready), str(go), *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)},
    )
    try:
        deadline = time.monotonic() + 120
        while not ready.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ready.exists(), first.communicate()[1]
        second = trainer(*args, "--resume", "auto", check=False)
        line = one_line_error(second)
        assert line.startswith(f"error: --out {run} is in use by another training run (pid {first.pid} on ")
        assert socket.gethostname() in line and "started 20" in line
        # evaluate and export of the directory read its model/, which is not written yet: one line saying so.
        evaluate = trainer("evaluate", "--model", str(run / "model"), "--data", data["tagger"], check=False)
        assert "not written yet" in one_line_error(evaluate) and f"pid {first.pid}" in evaluate.stderr
    finally:
        go.touch()
        stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    assert len(events(run, "start")) == 1 and len(events(run, "end")) == 1
    assert [e["step"] for e in events(run, "checkpoint")] == [2, 4]
    assert json.loads((run / "model" / "metrics.json").read_text())["steps"] == 4
    assert not (run / LOCK_FILE).exists()  # released on exit
    note = trainer("evaluate", "--model", str(run / "model"), "--data", data["tagger"])
    assert "being trained" not in note.stderr


@pytest.mark.trains
def test_a_lock_left_by_a_dead_process_is_taken_over_with_a_line(data: dict[str, str], tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    pid = dead_pid()
    (run / LOCK_FILE).write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "started": 0, "token": "x"}))
    proc = trainer("train", *tiny_tagger(data["tagger"]), "--max_steps", "2", "--out", str(run))
    [line] = [line for line in proc.stderr.splitlines() if "lock" in line]
    assert line == (
        f"train: took over the lock of {run} from pid {pid} on {socket.gethostname()}, started "
        "1970-01-01 00:00:00 UTC, which is no longer running"
    )
    assert (run / "model" / "metrics.json").is_file() and not (run / LOCK_FILE).exists()


def test_a_holder_on_another_machine_is_refused_until_its_heartbeat_is_stale(tmp_path: Path) -> None:
    """A filesystem whose locks do not reach across machines: the heartbeat (the file's mtime) decides."""
    run = tmp_path / "run"
    run.mkdir()
    lock_file = run / LOCK_FILE
    lock_file.write_text(json.dumps({"pid": 1, "host": "elsewhere.invalid", "started": 0, "token": "x"}))
    with pytest.raises(RunLocked, match=r"pid 1 on elsewhere\.invalid.*locks may not reach across machines"):
        acquire(run)
    assert holder(run)["host"] == "elsewhere.invalid"
    old = time.time() - STALE - 10
    os.utime(lock_file, (old, old))
    assert holder(run) is None
    lock = acquire(run)
    assert lock.replaced["host"] == "elsewhere.invalid"
    assert holder(run)["pid"] == os.getpid() and json.loads(lock_file.read_text())["token"] == lock.token
    with pytest.raises(RunLocked, match=f"pid {os.getpid()} on "):  # held here: refused, whatever the heartbeat
        acquire(run)
    lock.release()
    assert not lock_file.exists() and holder(run) is None


def test_a_run_dir_the_lock_created_goes_again_if_nothing_was_written(tmp_path: Path) -> None:
    acquire(tmp_path / "new").release()
    assert not (tmp_path / "new").exists()
    lock = acquire(tmp_path / "kept")
    (tmp_path / "kept" / "logs").mkdir()
    lock.release()
    assert [p.name for p in (tmp_path / "kept").iterdir()] == ["logs"]


def test_a_reader_of_a_run_being_trained_is_told_which_model_it_reads(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run = tmp_path / "run"
    lock = acquire(run)  # this process plays the training run
    try:
        with pytest.raises(ArtifactError, match=r"--model .*/run/model: not written yet: .* is being trained now"):
            note_training(run / "model", "export")
        (run / "model").mkdir()
        (run / "model" / "config.json").write_text("{}")
        note_training(run / "model", "export")
        [line] = capsys.readouterr().err.splitlines()
        assert line.startswith(f"export: {run} is being trained now (pid {os.getpid()} on ")
        assert line.endswith("reading the model/ published before it, which that run replaces whole when it ends")
    finally:
        lock.release()
    note_training(run / "model", "export")  # no run holds it: nothing to say
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"[" * 100_000,
        b'{"pid": -1, "host": 7, "started": 1e300}',
        json.dumps({"pid": "x" * 500, "started": "yesterday"}).encode(),
    ],
    ids=["empty", "deep", "bad-values", "long-values"],
)
def test_a_damaged_lock_file_is_taken_over_and_named_safely(tmp_path: Path, content: bytes) -> None:
    (tmp_path / LOCK_FILE).write_bytes(content)
    assert holder(tmp_path) is None  # nothing running that it could name
    lock = acquire(tmp_path)  # the flock was free: no process holds it, whatever the file says
    assert lock.replaced is None
    lock.release()
    if content.startswith(b"{"):
        text = describe(json.loads(content))
        assert len(text) < 200 and text.endswith("started at an unknown time")
