"""One run per RUN_DIR: RUN_DIR/.lock, held by the trainer's rank 0 for its whole job.

The lock is an exclusive flock on RUN_DIR/.lock, taken before anything else is written there and
released (the file removed) on exit; the kernel releases it when the holder dies, SIGKILL included.
The file names the holder as JSON (pid, host, start time, a token its job's other ranks compare,
trainer/runner.py) and its modification time is a heartbeat, touched every HEARTBEAT seconds:
- held: a second trainer on the same --out stops with one line naming the holder (`RunLocked`, exit 2);
- free but naming a holder: that process died; the lock is taken over, with a line saying so. If the
  holder was on another machine and its heartbeat is recent, the filesystem's locks may not reach
  across machines (NFS mounted with local locks): refused too, until the heartbeat is STALE seconds old.
`holder` tells readers (evaluate, export) whether a training run holds a directory. No torch here.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.core.errors import ArtifactError, SeqLSTMError
from trainer.core.jsonio import dumps, loads

LOCK_FILE = ".lock"
HEARTBEAT = 30.0  # seconds between touches of the lock file
STALE = 300.0  # a holder on another machine whose heartbeat is older than this is taken to be gone


class RunLocked(SeqLSTMError):
    """RUN_DIR is held by another training run."""


@dataclass
class RunLock:
    """A held lock: its open file (the flock lives as long as it), and the dead holder it replaced, if any."""

    path: Path
    fd: int
    token: str
    replaced: dict[str, Any] | None
    stop: threading.Event
    created: bool  # RUN_DIR did not exist: removed again on release if nothing else was written there

    def release(self) -> None:
        self.stop.set()
        with contextlib.suppress(OSError):
            # Removed while still locked, so that no one can lock this inode after it leaves the directory.
            if os.stat(self.path).st_ino == os.fstat(self.fd).st_ino:
                os.unlink(self.path)
        os.close(self.fd)
        if self.created:
            with contextlib.suppress(OSError):  # not empty: the run wrote something
                self.path.parent.rmdir()


def describe(holder: dict[str, Any]) -> str:
    """`pid P on HOST, started T`, whatever a damaged lock file holds (values cut short, a bad time unknown)."""
    started = holder.get("started")
    when = "at an unknown time"
    if type(started) in (int, float) and 0 <= started < 1e11:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started))
    return f"pid {str(holder.get('pid'))[:20]} on {str(holder.get('host'))[:100]}, started {when}"


def _read(fd: int) -> dict[str, Any] | None:
    """The holder a lock file names; None if empty or not what this module writes (a torn or damaged file)."""
    os.lseek(fd, 0, os.SEEK_SET)
    return _parse(os.read(fd, 65_536))


def _parse(data: bytes) -> dict[str, Any] | None:
    try:
        holder = loads(data)
    except (ValueError, RecursionError):  # jsonio's refusals are ValueErrors
        return None
    return holder if _valid(holder) else None


def _valid(holder: Any) -> bool:
    """What `acquire` writes: a pid os.kill may be given (0 and -1 would signal groups) and a host name."""
    pid = holder.get("pid") if isinstance(holder, dict) else None
    return type(pid) is int and 0 < pid < 1 << 22 and isinstance(holder.get("host"), str)


def acquire(run_dir: Path) -> RunLock:
    """Take RUN_DIR's lock for this process, creating RUN_DIR; `RunLocked` if another run holds it."""
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            who = describe(holder) if holder else "another process"
            raise RunLocked(
                f"--out {run_dir} is in use by another training run ({who}); wait for it to end, or train "
                "into another --out"
            ) from None
        except OSError as exc:  # ENOLCK: a filesystem without locks
            os.close(fd)
            raise RunLocked(
                f"--out {run_dir}: cannot lock {path} ({exc.strerror}); put RUN_DIR on a filesystem with file locks"
            ) from None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:  # not a file its holder removed meanwhile
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    previous = _read(fd)
    if previous is not None and _alive_elsewhere(previous, os.fstat(fd).st_mtime):
        os.close(fd)
        raise RunLocked(
            f"--out {run_dir} is in use by another training run ({describe(previous)}; its heartbeat is "
            f"{time.time() - os.stat(path).st_mtime:.0f} s old); this filesystem's locks may not reach across "
            f"machines: wait for it to end, or for its heartbeat to be {STALE:.0f} s old"
        )
    token = secrets.token_hex(16)
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": round(time.time(), 3), "token": token}
    os.ftruncate(fd, 0)
    os.pwrite(fd, dumps(holder).encode(), 0)
    os.fsync(fd)
    lock = RunLock(path, fd, token, previous, threading.Event(), created)
    threading.Thread(target=_heartbeat, args=(lock,), daemon=True, name="run-lock-heartbeat").start()
    return lock


def _alive_elsewhere(holder: dict[str, Any], heartbeat: float) -> bool:
    """A holder on another machine with a recent heartbeat: its flock may not have reached this one."""
    return holder.get("host") != socket.gethostname() and time.time() - heartbeat < STALE


def _heartbeat(lock: RunLock) -> None:
    while not lock.stop.wait(HEARTBEAT):
        with contextlib.suppress(OSError):
            os.utime(lock.fd)


def read_token(run_dir: Path) -> str | None:
    """The token of the holder RUN_DIR's lock file names (the other ranks compare it with rank 0's)."""
    try:
        holder = _parse((run_dir / LOCK_FILE).read_bytes())
    except OSError:
        return None
    return holder.get("token") if holder is not None else None


def holder(run_dir: Path) -> dict[str, Any] | None:
    """The training run holding RUN_DIR's lock now, if any: read without locking, so that a reader never makes a
    trainer starting at that moment refuse. A holder on this machine is alive if its pid is; one elsewhere if
    its heartbeat is recent."""
    path = run_dir / LOCK_FILE
    try:
        found, heartbeat = _parse(path.read_bytes()), path.stat().st_mtime
    except OSError:
        return None
    if found is None:
        return None
    if found.get("host") != socket.gethostname():
        return found if time.time() - heartbeat < STALE else None
    try:
        os.kill(found["pid"], 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # alive, another user's
        pass
    return found


def check_lock(run_dir: Path, rank: int, token: str) -> None:
    """Every rank: RUN_DIR's lock is its own job's (`token`, rank 0's, broadcast), not another run's."""
    if read_token(run_dir) != token:
        raise RunLocked(
            f"rank {rank} on {socket.gethostname()}: {run_dir / LOCK_FILE} is not held by this job's rank 0; "
            "another run holds --out, or it is not on storage every node shares"
        )


def note_training(model_dir: Path, prog: str) -> None:
    """For a reader of RUN_DIR/model (evaluate, export) while a training run holds RUN_DIR: one line saying what it
    reads. model/ is only ever replaced whole (trainer/artifact.py), so the last one published is read as it is;
    one not written yet is an ArtifactError saying when it will be."""
    found = holder(model_dir.parent)
    if found is None:
        return
    busy = f"{model_dir.parent} is being trained now ({describe(found)})"
    if not (model_dir / "config.json").is_file():
        raise ArtifactError(f"--model {model_dir}: not written yet: {busy}; its model/ appears when that run ends")
    print(
        f"{prog}: {busy}; reading the model/ published before it, which that run replaces whole when it ends",
        file=sys.stderr,
    )
