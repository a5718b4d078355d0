"""`python -m serve predict` at its edges: what --output may replace, interrupts, flag ranges.

model.json as untrusted input is tests/test_model_json.py; the HTTP server's edges are
tests/test_http_edges.py.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import LINES, REPO, default_sigint, env, one_line_error, serve


def temporaries(directory: Path) -> list[Path]:
    return sorted(directory.glob(".*.tmp"))


def char_device(tmp_path: Path) -> Path:
    """A character device node to aim --output at: our own copy of /dev/null where we may make one,
    so that a regression replaces a node in tmp_path rather than the machine's /dev/null."""
    node = tmp_path / "null"
    try:
        os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        return Path("/dev/null")  # an unprivileged user cannot replace /dev/null either
    return node


def refusal_cases(tmp_path: Path, lines_file: Path) -> list[tuple[str, Path | str, str]]:
    """(case, --output, expected part of the message)."""
    real = tmp_path / "real.jsonl"
    real.write_text("keep\n")
    (tmp_path / "link.jsonl").symlink_to(real)
    (tmp_path / "dangling.jsonl").symlink_to(tmp_path / "nowhere.jsonl")
    (tmp_path / "dir").mkdir()
    os.link(lines_file, tmp_path / "hard-link.txt")
    return [
        ("symlink to a file", tmp_path / "link.jsonl", "is a symbolic link"),
        ("dangling symlink", tmp_path / "dangling.jsonl", "is a symbolic link"),
        ("character device", char_device(tmp_path), "is a character device"),
        ("directory", tmp_path / "dir", "is a directory"),
        ("the input itself", lines_file, "same file as --input"),
        ("a hard link to the input", tmp_path / "hard-link.txt", "same file as --input"),
        ("another spelling of the input", f"{tmp_path}/dir/../{lines_file.name}", "same file as --input"),
    ]


def snapshot(path: Path) -> tuple:
    info = os.lstat(path)
    content = path.read_bytes() if stat.S_ISREG(info.st_mode) else None
    return info.st_mode, info.st_ino, content


def test_output_refuses_what_it_must_not_replace(runs, lines_file: Path, tmp_path: Path) -> None:
    before_input = lines_file.read_bytes()
    for case, target, expected in refusal_cases(tmp_path, lines_file):
        before = snapshot(Path(target)) if os.path.lexists(target) else None
        result = serve("predict", "--model", runs["tagger"][1], "--input", lines_file, "--output", target)
        message = one_line_error(result)
        assert expected in message and f"--output {target}" in message, (case, message)
        assert (snapshot(Path(target)) if os.path.lexists(target) else None) == before, case
        assert not temporaries(tmp_path) and not temporaries(Path(target).parent), case
    assert lines_file.read_bytes() == before_input
    assert (tmp_path / "real.jsonl").read_text() == "keep\n" and not (tmp_path / "nowhere.jsonl").exists()


def test_output_refuses_the_input_through_stdin_and_stdout(runs, lines_file: Path, tmp_path: Path) -> None:
    """`--input - < FILE --output FILE` and `--input FILE --output - >> FILE` are the same mistake."""
    before = lines_file.read_bytes()
    base = [sys.executable, "-m", "serve", "predict", "--model", str(runs["tagger"][1])]
    with open(lines_file, "rb") as stdin:
        result = subprocess.run(
            base + ["--input", "-", "--output", str(lines_file)],
            stdin=stdin,
            capture_output=True,
            cwd=REPO,
            env=env(),
            timeout=60,
        )
    assert "same file as --input -" in one_line_error(result)
    with open(lines_file, "ab") as stdout:
        result = subprocess.run(
            base + ["--input", str(lines_file), "--output", "-"],
            stdout=stdout,
            stderr=subprocess.PIPE,
            cwd=REPO,
            env=env(),
            timeout=60,
        )
    assert "same file as --input" in one_line_error(result)
    assert lines_file.read_bytes() == before


def test_output_to_dev_stdout_and_to_a_fifo_streams(runs, lines_file: Path, tmp_path: Path) -> None:
    export_dir = runs["tagger"][1]
    expected = serve("predict", "--model", export_dir, "--input", lines_file, "--output", "-").stdout
    assert len(expected.splitlines()) == len(LINES)
    result = serve("predict", "--model", export_dir, "--input", lines_file, "--output", "/dev/stdout")
    assert result.returncode == 0 and result.stdout == expected, result.stderr
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    result = serve("predict", "--model", export_dir, "--input", lines_file, "--output", fifo)
    reader.join(timeout=60)
    assert result.returncode == 0, result.stderr
    assert received == [expected] and stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert not temporaries(tmp_path)


def test_output_file_permissions(runs, lines_file: Path, tmp_path: Path) -> None:
    """A new file gets 0666 & ~umask (not a temporary file's 0600); a replaced file keeps its mode."""
    umask = os.umask(0)
    os.umask(umask)
    new, existing = tmp_path / "new.jsonl", tmp_path / "existing.jsonl"
    existing.write_text("old\n")
    existing.chmod(0o640)
    for out in (new, existing):
        result = serve("predict", "--model", runs["tagger"][1], "--input", lines_file, "--output", out)
        assert result.returncode == 0, result.stderr
        assert len(out.read_text().splitlines()) == len(LINES)
    assert stat.S_IMODE(new.stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE(existing.stat().st_mode) == 0o640


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupt_leaves_no_temporary_file(runs, tmp_path: Path, signum: int) -> None:
    from serve.predict import CHUNK_LINES

    big, out = tmp_path / "big.txt", tmp_path / "out.jsonl"
    big.write_bytes(b"The cat sat on the mat .\n" * (CHUNK_LINES * 40))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "serve",
            "predict",
            "--model",
            str(runs["tagger"][1]),
            "--input",
            str(big),
            "--output",
            str(out),
        ],
        cwd=REPO,
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=default_sigint,
    )
    try:
        deadline = time.monotonic() + 60
        while not any(p.stat().st_size for p in temporaries(tmp_path)):  # the first chunk is written
            assert proc.poll() is None and time.monotonic() < deadline, "no temporary output appeared"
            time.sleep(0.02)
        proc.send_signal(signum)
        status = proc.wait(timeout=60)
        stderr = proc.stderr.read().decode()
    finally:
        proc.kill()
    assert status == 128 + signum, stderr
    assert len(stderr.splitlines()) <= 1 and "Traceback" not in stderr, stderr
    assert not temporaries(tmp_path) and not out.exists()


PREDICT_FLAGS = [
    (("--batch-size", "0"), "--batch-size must be an integer from 1 to 65536; got 0"),
    (("--batch-size", "-5"), "--batch-size must be an integer from 1"),
    (("--batch-size", "1000000000"), "--batch-size must be an integer from 1"),
    (("--threads", "-1"), "--threads must be an integer from 0 to 1024; got -1"),
    (("--threads", "100000"), "--threads must be an integer from 0 to 1024"),
]


@pytest.mark.parametrize("flags", PREDICT_FLAGS, ids=[" ".join(f[0]) for f in PREDICT_FLAGS])
def test_predict_numeric_flags_are_range_checked(runs, lines_file: Path, tmp_path: Path, flags: tuple) -> None:
    args, expected = flags
    out = tmp_path / "out.jsonl"
    message = one_line_error(
        serve("predict", "--model", runs["tagger"][1], "--input", lines_file, "--output", out, *args)
    )
    assert expected in message and not out.exists()


def test_predict_path_arguments_of_the_wrong_kind(runs, lines_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    message = one_line_error(serve("predict", "--model", runs["tagger"][1], "--input", tmp_path, "--output", out))
    assert f"--input {tmp_path}: cannot read (Is a directory)" in message
    message = one_line_error(serve("predict", "--model", lines_file, "--input", lines_file, "--output", out))
    assert f"{lines_file}: not a directory" in message
    message = one_line_error(
        serve(
            "predict",
            "--model",
            runs["tagger"][1],
            "--input",
            lines_file,
            "--output",
            tmp_path / "no-dir" / "out.jsonl",
        )
    )
    assert "no-dir does not exist" in message
    assert not out.exists()


@pytest.mark.parametrize(("cores", "threads"), [(1, 1), (2, 1), (16, 15)])
def test_predict_leaves_a_core_to_the_tokenizing_thread(monkeypatch, cores: int, threads: int) -> None:
    import os

    from serve.predict import model_threads

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
    assert model_threads() == threads
