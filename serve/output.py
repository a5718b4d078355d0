"""Where `predict --output` and `bench --json` may write, and how; checked before the model loads.

- `-`, `/dev/stdout`, `/dev/fd/1` and `/proc/self/fd/1` all mean this process's stdout: written as
  it goes (by name, so `> file` redirection keeps its usual meaning and offset).
- A FIFO (`mkfifo`, or a shell's `--output >(gzip > out.jsonl.gz)`, which is a symlink to a pipe):
  written as it goes. A pipe holds nothing to clobber and cannot be renamed over, so the reader
  sees a partial stream if the run fails, exactly as with `-`.
- A new path or an existing regular file: written to a temporary file beside it (`.NAME.<hex>.tmp`)
  and renamed into place only when everything succeeded; on any error, Ctrl-C or SIGTERM the
  temporary is removed and an existing file is left as it was. A new file gets the usual
  0666 & ~umask permissions; a replaced file keeps its own. The temporaries of NAME that a killed
  (SIGKILLed) run left behind are removed when the next run on NAME starts, one line each on stderr
  (`trainer.core.atomic`: a live run's temporary is locked, so it is never taken).
- A write error (a full disk, a quota) is one line naming the output, not just the kernel's message.
- Refused with a one-line `DataError`, nothing touched: a symlink (the rename would replace the
  link, not the file it points to), a directory, a device such as `/dev/null` (redirect `-` there
  instead), a socket, and the input itself under any name (another spelling, a hard link, stdin or
  stdout redirected from or to it): the predictions would replace, or feed back into, their input.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

from trainer.core.atomic import NamedStream, atomic_file, named, remove_stale
from trainer.core.errors import DataError

STDOUT_NAMES = ("-", "/dev/stdout", "/dev/fd/1", "/proc/self/fd/1")
KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


@dataclass(frozen=True)
class Target:
    """A checked output: `kind` is "stdout", "stream" (a FIFO) or "file" (temporary + rename)."""

    kind: str
    path: Path | None = None
    mode: int | None = None  # permission bits to keep when replacing an existing file


def _stat(name: str, fd: int) -> os.stat_result | None:
    """What `name` refers to, following links; the open file descriptor `fd` itself for `-`."""
    try:
        return os.fstat(fd) if name == "-" else os.stat(name)
    except (OSError, ValueError):
        return None  # missing or unreadable: whoever opens it reports that


def _refuse_input(flag: str, name: str, target: os.stat_result | None, input_name: str | None) -> None:
    if target is None or input_name is None or not (stat.S_ISREG(target.st_mode) or stat.S_ISFIFO(target.st_mode)):
        return  # a terminal or a socket may well be stdin and stdout at once
    source = _stat(input_name, 0)
    if source is not None and (source.st_dev, source.st_ino) == (target.st_dev, target.st_ino):
        raise DataError(
            f"{flag} {name}: is the same file as --input {input_name}; writing there would "
            "replace the input or feed back into it (choose another name)"
        )


def check_output(name: str, flag: str = "--output", input_name: str | None = None) -> Target:
    """`name` as a `Target`, or a DataError saying why it must not be written (module docstring)."""
    if name in STDOUT_NAMES:
        _refuse_input(flag, name, _stat("-", 1), input_name)
        return Target("stdout")
    path = Path(name)
    try:
        link = os.lstat(path)
    except FileNotFoundError:
        link = None
    except OSError as exc:
        raise DataError(f"{flag} {name}: cannot use it ({exc.strerror})") from None
    if link is None:
        mode = None
    else:
        target = _stat(name, -1)
        if target is not None and stat.S_ISFIFO(target.st_mode):
            _refuse_input(flag, name, target, input_name)
            return Target("stream", path)
        if stat.S_ISLNK(link.st_mode):
            raise DataError(
                f"{flag} {name}: is a symbolic link; the output would replace the link, not "
                f"{os.readlink(path)}: name the file itself or remove the link"
            )
        for test, kind in KINDS:
            if test(link.st_mode):
                hint = " (to discard the output, use `-` and redirect it)" if stat.S_ISCHR(link.st_mode) else ""
                raise DataError(f"{flag} {name}: is {kind}, not a regular file{hint}")
        if not stat.S_ISREG(link.st_mode):
            raise DataError(f"{flag} {name}: is not a regular file")
        _refuse_input(flag, name, link, input_name)
        mode = stat.S_IMODE(link.st_mode)
    parent = path.parent
    if not parent.is_dir():
        raise DataError(f"{flag} {name}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DataError(f"{flag} {name}: cannot create files in directory {parent} (permission denied)")
    return Target("file", path, mode)


@contextlib.contextmanager
def open_output(target: Target, flag: str = "--output") -> Iterator[IO[str]]:
    """A text stream for `target`; a "file" target appears (atomically) only if the block succeeds.

    A write error names the output (`--output out.jsonl: cannot write (No space left on device)`), and a
    file target's temporaries that a killed run left beside it are removed first (`trainer.core.atomic`)."""
    if target.kind == "stdout":
        yield cast(IO[str], NamedStream(sys.stdout, f"{flag} -"))
        named(f"{flag} -", sys.stdout.flush)
        return
    assert target.path is not None
    where = f"{flag} {target.path}"
    if target.kind == "stream":
        with open(target.path, "w", encoding="utf-8", newline="\n") as f:
            yield cast(IO[str], NamedStream(f, where))
            named(where, f.close)
        return
    remove_stale(target.path)
    with atomic_file(target.path, target.mode, where) as f:
        yield cast(IO[str], f)
