"""Checks on `python -m serve` options that argparse's types cannot express, shared by every command.

argparse turns `--max-wait-ms inf` or `nan` into a float and `--threads -1` into an int without
complaint; each numeric flag here has a closed range, checked before anything is loaded, so a bad
value is a one-line `ConfigError` naming the flag instead of a server that starts and then hangs.
"""

from __future__ import annotations

import argparse
import ipaddress
import math

from trainer.core.errors import ConfigError

MAX_BATCH = 65_536
# Flag (as its argparse dest) -> (lowest, highest) allowed value; a float flag must also be finite.
RANGES: dict[str, tuple[float, float]] = {
    "batch_size": (1, MAX_BATCH),
    "e2e_batch_size": (1, MAX_BATCH),
    "threads": (0, 1024),
    "port": (0, 65_535),
    "max_wait_ms": (0, 10_000),
    "request_timeout": (0.01, 3_600),
    "texts": (1, 10_000_000),
    "min_seconds": (0, 3_600),
    "seed": (0, 2**32 - 1),
    "max_queue": (1, 1_000_000),
    "limit_concurrency": (1, 1_000_000),
    "keep_alive": (0.1, 3_600),
    "drain_timeout": (0, 3_600),
    "drain_grace": (0, 3_600),
    "header_timeout": (0.1, 3_600),
    "body_min_rate": (1, 1 << 30),
    "progress_every": (0, 86_400),
    "workers": (1, 4096),
    "threads_per_worker": (1, 1024),
}


def check_numbers(args: argparse.Namespace) -> None:
    """Every numeric flag the command has, against `RANGES`."""
    for name, (low, high) in RANGES.items():
        value = getattr(args, name, None)
        if value is not None:
            check_range(f"--{name.replace('_', '-')}", value, low, high)


def check_range(flag: str, value: float, low: float, high: float) -> None:
    if not (math.isfinite(value) and low <= value <= high):
        kind = "an integer" if isinstance(value, int) else "a finite number"
        raise ConfigError(f"{flag} must be {kind} from {low} to {high}; got {value!r}")


def check_host(host: str) -> None:
    """A name the socket layer can encode: it sends non-ASCII names through IDNA, which refuses some."""
    try:
        host.encode("idna")
    except UnicodeError as exc:
        raise ConfigError(f"--host {host!r} is not a valid host name ({exc})") from None


def exposure_warning(requested: str, bound: str) -> str | None:
    """A one-line warning when the server listens beyond loopback, or None when it does not.

    `bound` is the address the socket got: "" (and "0.0.0.0" or "::") means every interface.
    """
    try:
        address = ipaddress.ip_address(bound.split("%", 1)[0])
    except ValueError:
        address = None
    if address is not None and address.is_loopback:
        return None
    where = "every network interface" if address is None or address.is_unspecified else bound
    return (
        f"warning: --host {requested!r} listens on {where}, reachable from other machines, "
        "and the API has no authentication (--host 127.0.0.1 keeps it local)"
    )
