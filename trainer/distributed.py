"""The process group of a multi-process run: started on a store of its own round, every wait bounded.

torchrun (and `accelerate launch`, which runs it) shares its agent's TCPStore with the workers
(TORCHELASTIC_USE_AGENT_STORE) and keeps that one store across restarts, with no prefix per round
(pytorch issues 135712 and 108158: TORCHELASTIC_RESTART_COUNT is not the same on every node). What a
killed round wrote there stays: gloo's full-mesh connect of the next round can read a dead peer's
address before the new peer has written its own, and every restart then fails with
`Gloo connectFullMesh failed ... Connection refused` (or waits out the timeout). So each round's
rank 0 serves a fresh TCPStore on a free port and posts its port and a nonce in the agent's store;
the other ranks retry until they reach a store that answers with that nonce, which a dead round's
cannot (its rank 0 is gone with its server). Without the agent's store (plain env://), the group
starts as torch.distributed does.

Every collective and store wait then ends after TrainConfig.dist_timeout seconds (default 600; the
gloo default is 30 minutes) with one line naming the rank and what it waited for (`waiting`), so a
launcher can restart the job. It must exceed the longest phase one rank runs alone while the others
wait: encoding the data on the main process first, writing a checkpoint, the release model.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import torch
import torch.distributed as dist

from trainer.core.errors import TrainingError

ROUND_STORE_KEY = "seqlstm/round-store"  # in the agent's store: "PORT NONCE" of this round's store
PROBE_S = 2.0  # seconds for one attempt to reach a posted store (a dead round's refuses at once)
_waiting = ["the start of the process group"]  # what this process is at, for the timeout's line


@contextmanager
def waiting(what: str) -> Iterator[None]:
    """Name what the collectives inside the block wait for, in the line a failed one becomes."""
    _waiting.append(what)
    try:
        yield
    except RuntimeError as exc:
        if not hasattr(exc, "waiting_for"):  # the innermost block names it: the stack unwinds before it is caught
            exc.waiting_for = what
        raise
    finally:
        _waiting.pop()


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def start_process_group(timeout_s: float) -> None:
    """Start the default process group (several processes only) with `timeout_s` on every wait."""
    if world_size() <= 1 or dist.is_initialized():
        return
    timeout = timedelta(seconds=timeout_s)
    backend = "nccl" if torch.cuda.is_available() else "gloo"  # accelerate's choice for these devices
    rank = int(os.environ["RANK"])
    if backend == "nccl":  # NCCL binds each rank's communicators to the device current at its first collective
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    with failures_named():
        if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == str(True):
            store = dist.PrefixStore("seqlstm", round_store(rank, timeout))
            dist.init_process_group(backend, store=store, rank=rank, world_size=world_size(), timeout=timeout)
        else:
            dist.init_process_group(backend, init_method="env://", timeout=timeout)


def round_store(rank: int, timeout: timedelta) -> dist.Store:
    """This round's own store: served by rank 0, found by the others through the agent's store."""
    host, agent_port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    agent = dist.TCPStore(host, agent_port, is_master=False, timeout=timeout)
    if rank == 0:
        # Served at the address this machine has towards the agent's store: MASTER_ADDR is the agent's host,
        # which is not rank 0's when rank 0 runs on another node (c10d rendezvous).
        address = own_address(host, agent_port)
        store = dist.TCPStore(address, 0, is_master=True, timeout=timeout, wait_for_workers=False)
        nonce = secrets.token_hex(8)
        store.set("nonce", nonce)
        agent.set(ROUND_STORE_KEY, f"{address} {store.port} {nonce}")
        return store
    deadline = time.monotonic() + timeout.total_seconds()
    while True:
        address, port, nonce = agent.get(ROUND_STORE_KEY).decode().split()  # waits for the first round's post
        if listening(address, int(port)):  # else an earlier round's post: its server is gone with its rank 0
            store = dist.TCPStore(address, int(port), is_master=False, timeout=timeout)
            if store.check(["nonce"]) and store.get("nonce").decode() == nonce:
                return store
        if time.monotonic() > deadline:
            raise dist.DistStoreError(f"no store from rank 0 at {host} within {timeout.total_seconds():.0f} s")
        time.sleep(0.2)


def own_address(host: str, port: int) -> str:
    """This machine's address on the route to host:port (the source address of a connection there)."""
    with socket.create_connection((host, port), timeout=PROBE_S) as probe:
        return probe.getsockname()[0]


def listening(host: str, port: int) -> bool:
    """Whether a server accepts on host:port: a plain connect, which a closed port refuses at once (a TCPStore
    client would retry it for its whole timeout, logging each try)."""
    try:
        with socket.create_connection((host, port), timeout=PROBE_S):
            return True
    except OSError:
        return False


def is_collective_failure(exc: BaseException) -> bool:
    """A wait that timed out or a peer that went away (gloo raises plain RuntimeErrors for the latter)."""
    return isinstance(exc, dist.DistError) or (isinstance(exc, RuntimeError) and "gloo" in str(exc).lower())


@contextmanager
def failures_named() -> Iterator[None]:
    """A failed collective or store wait becomes one TrainingError naming this rank and what it waited for."""
    try:
        yield
    except RuntimeError as exc:
        if not is_collective_failure(exc):
            raise
        rank, what = os.environ.get("RANK", "0"), getattr(exc, "waiting_for", _waiting[-1])
        raise TrainingError(
            f"rank {rank} of {world_size()}: waiting for the other ranks at {what} failed ({brief(exc)}): a peer "
            "died or hung; under torchrun --max-restarts the job restarts from the newest checkpoint (--resume "
            "auto); a phase that legitimately takes longer needs a larger --dist_timeout"
        ) from None


def brief(exc: BaseException) -> str:
    """gloo's or the store's message without its source locations and advice: `Read error ...: Connection reset`."""
    text = re.sub(r"\[[^\]]*\.(?:cc|cpp|h):[0-9]+\] ?", "", " ".join(str(exc).split()))
    return text.split(". ")[0][:200]
