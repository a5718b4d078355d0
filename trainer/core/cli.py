"""What the three command lines share: one-line errors, exit statuses and signals.

`python -m trainer`, `python -m export` and `python -m serve` each run their `main` through
`run_cli`, so a user sees the same thing wherever a run ends early:

- bad input (`SeqLSTMError`, argparse usage errors): one line `error: ...`, exit 2;
- a failed validation (`ValidationError`): `error: ...` plus one indented line per failed check, exit 1;
- an operating-system error that reached the top (disk full, permission denied): one line, exit 2;
- Ctrl-C or SIGTERM: one line `error: interrupted by SIGINT|SIGTERM`, exit 130 or 143. SIGTERM is
  turned into an exception in the main thread, so every `finally` and `except BaseException` on the
  way up runs and removes its temporary files, as it does for Ctrl-C;
- the reader of stdout went away (`... | head`): not an error, exit 0;
- a command whose extra is not installed (`seqlstm-export` in a `pip install .[serve]` environment):
  one line naming the missing package and the `pip install` that brings it (`extra_needed`), exit 2.

No torch here: serving imports this module.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NoReturn

from trainer.core.errors import ConfigError, SeqLSTMError, ValidationError


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one-line ConfigErrors instead of a usage block."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{message} (see `{self.prog} --help`)")


class Interrupted(BaseException):
    """A termination signal, raised where the main thread is, like KeyboardInterrupt for SIGINT."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted(signum)


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """SIGTERM raises `Interrupted` in the main thread while the block runs (then the old handler is back)."""
    previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


OWN_PACKAGES = ("trainer", "export", "serve")


@contextmanager
def extra_needed(extra: str, what: str) -> Iterator[None]:
    """A third-party module missing inside the block becomes a one-line ConfigError saying what to install."""
    try:
        yield
    except ModuleNotFoundError as exc:
        package = (exc.name or "").partition(".")[0]
        if not package or package in OWN_PACKAGES:
            raise  # a bug in this project, not an install to fix
        hint = f"pip install 'seqlstm[{extra}]'"
        raise ConfigError(f"{what} needs {package}, which is not installed here: {hint}") from None


def fail(message: str, status: int = 2, details: tuple[str, ...] = ()) -> int:
    print(f"error: {message}", file=sys.stderr)
    for line in details:
        print(f"  {line}", file=sys.stderr)
    return status


def run_cli(main: Callable[[], int | None]) -> int:
    """Run a command's `main` and turn every way it can end into an exit status (see the module docstring)."""
    try:
        with sigterm_raises():
            return int(main() or 0)
    except ValidationError as exc:
        return fail(str(exc), 1, tuple(getattr(exc, "failures", ())))
    except SeqLSTMError as exc:
        return fail(str(exc))
    except BrokenPipeError:
        # Point stdout at /dev/null so that the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        return fail(f"{where}{exc.strerror or exc}")
    except KeyboardInterrupt:
        return fail("interrupted by SIGINT", 128 + signal.SIGINT)
    except Interrupted as exc:
        return fail(f"interrupted by {exc}", 128 + exc.signum)
