"""What a launcher left in the environment, checked before training spends any time.

`./launch.sh train --nproc N`, `torchrun --nproc-per-node N -m trainer train` and
`accelerate launch --multi_gpu --num_processes N -m trainer train` all start N processes (on CPUs
too, with gloo). `accelerate launch --cpu --num_processes N` does not: its simple launcher starts
one process and only sets MASTER_ADDR/MASTER_PORT (accelerate issue 2741), so a user who asked for
N processes would silently train on one. Across machines every rank writes into RUN_DIR (its own
RNG state in each checkpoint), so RUN_DIR must be on a filesystem that every node shares.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Callable, Mapping
from pathlib import Path

from trainer.core.errors import ConfigError

MARKER = ".shared-filesystem-check"


def check_launch(environ: Mapping[str, str] = os.environ) -> None:
    """Refuse a launch that asked accelerate for several processes but got one."""
    if "ACCELERATE_USE_CPU" in environ and "MASTER_ADDR" in environ and "WORLD_SIZE" not in environ:
        raise ConfigError(
            "accelerate launch was asked for several processes but started one (with --cpu its simple launcher "
            "runs a single process, accelerate issue 2741); use `accelerate launch --multi_gpu --num_processes N`, "
            "`torchrun --nproc-per-node N` or `./launch.sh train --nproc N`"
        )


def nodes(environ: Mapping[str, str] = os.environ) -> int:
    """How many machines the launcher spans (torchrun and accelerate set both sizes)."""
    world, local = int(environ.get("WORLD_SIZE", 1)), int(environ.get("LOCAL_WORLD_SIZE", environ.get("WORLD_SIZE", 1)))
    return max(1, world // max(1, local))


def check_shared_run_dir(
    run_dir: Path,
    rank: int,
    broadcast: Callable[[str], str],
    all_true: Callable[[bool], list[bool]],
    barrier: Callable[[], None],
) -> None:
    """Rank 0 writes a random token into RUN_DIR; every rank must read the same token back.

    `broadcast` sends rank 0's value to all, `all_true` gathers one bool per rank, `barrier` waits for all:
    accelerate's collectives in training, plain functions in tests.
    """
    marker = run_dir / MARKER
    token = secrets.token_hex(16) if rank == 0 else ""
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        marker.write_text(token, encoding="utf-8")
    token = broadcast(token)
    barrier()
    try:
        seen = marker.read_text(encoding="utf-8") == token
    except OSError:
        seen = False
    results = all_true(seen)
    barrier()
    if rank == 0:
        marker.unlink(missing_ok=True)
    if not all(results):
        blind = [r for r, ok in enumerate(results) if not ok]
        raise ConfigError(
            f"--out {run_dir} is not on a filesystem shared by every node: rank(s) {blind} cannot see what rank 0 "
            f"wrote there (this is rank {rank} on {socket.gethostname()}); put RUN_DIR on shared storage (NFS, a "
            "cluster filesystem) so that every rank writes into the same checkpoints"
        )
