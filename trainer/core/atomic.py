"""Files and directories written whole or not at all, the temporaries a killed writer left behind, and
write errors that name the file.

A target NAME is written as a temporary beside it, then renamed over it: `.NAME.<12 hex>.tmp` for a
file, `.NAME.tmp-<12 hex>` for a directory being built, `.NAME.old-<12 hex>` for the directory it
replaces while the two renames run. While its writer lives, each temporary is held by an exclusive
`flock`, which the kernel drops when the process dies (SIGKILL included). So the next writer of NAME
(`remove_stale`, called when a run starts on its output) removes every temporary of NAME it can lock,
with one line on stderr, and leaves alone one that a running process holds. Where the file system
has no locks, a temporary is named on stderr, not removed. An `.old-` directory with NAME missing is
the previous NAME itself (the kill came between the two renames): it is put back, with a line.
A writer locks its temporary right after creating it; a cleaner looking in the microseconds between
could take it. That window is left open: closing it (O_TMPFILE + linkat) would not work on every
file system, and two runs writing one output at the same moment is a mistake in itself.

An OSError while writing, flushing or renaming (a full disk, a quota, a read-only mount) is a
`WriteError` whose one line names the target: the kernel's message alone does not say which file.
No torch: serving uses it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from trainer.core.errors import WriteError


def write_error(target: Path | str, exc: OSError) -> WriteError:
    return WriteError(f"{target}: cannot write ({exc.strerror or exc})")


def named(target: Path | str, action: Callable[..., Any], *args: Any) -> Any:
    """`action(*args)`, its OSError (a broken pipe aside: the reader left) a WriteError naming `target`."""
    try:
        return action(*args)
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise write_error(target, exc) from None


class NamedStream:
    """A text stream whose write errors name the file the user asked for, not the temporary."""

    def __init__(self, stream: IO[str], target: Path | str) -> None:
        self.stream, self.target = stream, target

    def write(self, text: str) -> int:
        return named(self.target, self.stream.write, text)

    def flush(self) -> None:
        named(self.target, self.stream.flush)


def _lock(path: Path) -> int | str:
    """A descriptor holding `path`'s exclusive lock, or "held" (another process has it) or "unsupported"."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return "held"
    except OSError:
        os.close(fd)
        return "unsupported"
    return fd


def _hold(path: Path) -> int | None:
    """A writer's lock on its temporary, taken right after creating it (None where there are no locks)."""
    lock = _lock(path)
    return lock if isinstance(lock, int) else None


@contextlib.contextmanager
def atomic_file(target: Path, mode: int | None = None, where: str | None = None) -> Iterator[NamedStream]:
    """A text stream into a locked temporary beside `target`, renamed over it when the block succeeds.

    On any error, Ctrl-C or SIGTERM the temporary is removed and `target` is left as it was. `mode`:
    the permission bits to give it (None: 0666 & ~umask); `where`: how errors name it (default: the path)."""
    target = Path(target)
    where = where or str(target)
    tmp = target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp"
    fd = named(where, os.open, tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    lock = _hold(tmp)  # before anything is written: a temporary without a live lock is a dead writer's
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            yield NamedStream(f, where)
            named(where, f.close)  # the last buffered bytes: a full disk shows here
        named(where, os.replace, tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    finally:
        if lock is not None:
            os.close(lock)


def write_text(target: Path, text: str, mode: int | None = None) -> None:
    """`text` into `target`, whole or not at all (`atomic_file`)."""
    with atomic_file(target, mode) as f:
        f.write(text)


@contextlib.contextmanager
def temp_dir(target: Path, kind: str = "tmp") -> Iterator[Path]:
    """A new locked directory `.NAME.<kind>-<hex>` beside `target` (0755, so that a serving user can read
    what is renamed out of it); whatever is still in it at the end is removed. A WriteError inside names
    the file as it would have been called in `target`: the temporary is gone when the user reads it."""
    target = Path(target)
    path = target.parent / f".{target.name}.{kind}-{secrets.token_hex(6)}"
    named(target, os.mkdir, path)
    lock = _hold(path)
    try:
        os.chmod(path, 0o755)
        yield path
    except WriteError as exc:
        raise WriteError(str(exc).replace(str(path), str(target))) from None
    finally:
        shutil.rmtree(path, ignore_errors=True)
        if lock is not None:
            os.close(lock)


def _temporaries(target: Path) -> Iterator[tuple[Path, str]]:
    name = re.escape(target.name)
    kinds = {"file": rf"\.{name}\.[0-9a-f]{{12}}\.tmp", "tmp": rf"\.{name}\.tmp-\w+", "old": rf"\.{name}\.old-\w+"}
    prefix = f".{target.name}."
    try:
        entries = [e for e in os.scandir(target.parent) if e.name.startswith(prefix)]
    except OSError:
        return  # no directory yet: nothing left behind
    for entry in entries:
        for kind, pattern in kinds.items():
            if re.fullmatch(pattern, entry.name) and entry.is_dir(follow_symlinks=False) == (kind != "file"):
                yield Path(entry.path), kind


def remove_stale(target: Path, who: str = "note") -> list[Path]:
    """Remove (or name) the temporaries of `target` that a killed writer left behind (module docstring),
    one line on stderr each; the paths removed or restored."""
    target = Path(target)
    done = []
    for path, kind in _temporaries(target):
        try:
            lock = _lock(path)
        except OSError:
            continue  # gone meanwhile (its writer finished), or not ours to open
        if lock == "unsupported":
            print(
                f"{who}: {path} may be left by a killed run (no file locks here to tell); remove it if so",
                file=sys.stderr,
            )
        if isinstance(lock, str):
            continue
        try:
            done.append(_dispose(path, kind, target, who))
        finally:
            os.close(lock)
    return done


def _dispose(path: Path, kind: str, target: Path, who: str) -> Path:
    previous = path / target.name
    if kind == "old" and not os.path.lexists(target) and previous.is_dir():
        os.replace(previous, target)
        shutil.rmtree(path, ignore_errors=True)
        print(f"{who}: put back {target} from {path}, where a killed run had moved it", file=sys.stderr)
        return target
    if kind == "file":
        os.unlink(path)
    else:
        shutil.rmtree(path)
    print(f"{who}: removed {path}, a temporary left by a killed run", file=sys.stderr)
    return path
