"""The Ray side of `serve ray` (serve.ray.job): which Ray to use, reaching it, and whether the job fits it.

- Without `--address`: always a private instance, `ray.init(address="local")`, sized to the actors
  (`--workers` x `--threads-per-worker` CPUs). "local" rather than no address, because Ray resolves no
  address through `RAY_ADDRESS` and its `ray_current_cluster` file, which a stopped `ray start` cluster
  leaves behind; joining it would then fail (`num_cpus ... must not be provided`).
- `--address auto|HOST:PORT`: the address is resolved as Ray does it, then probed with a plain TCP
  connection first: Ray itself retries an unreachable GCS for many minutes. A refused connection is a
  one-line error; so is one Ray then fails to join, naming the likely cause (token authentication, on by
  default for Ray 2.60 clusters, or a token that is not the cluster's). `ray://` (Ray Client) is not probed.
- The plan (`check_plan`): an actor needs `--threads-per-worker` CPUs on one node, so the cluster must
  hold `--workers` such slots (counted per live node), or the run is refused in one line naming what
  was asked and what the cluster has. Read and write tasks ask for no CPU (serve.ray.job says why).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from trainer.core.errors import ClusterError, ConfigError

PROBE_SECONDS = 10.0  # a live GCS accepts a TCP connection at once; this only bounds a black-holed address
TOKEN_HELP = (
    "set RAY_AUTH_MODE=token and the cluster's token in RAY_AUTH_TOKEN, or in a file named by "
    "RAY_AUTH_TOKEN_PATH (default ~/.ray/auth_token); `ray get-auth-token` on the head prints it"
)


@dataclass
class Cluster:
    """What the driver joined: a description for messages, and its CPUs per live node."""

    name: str
    node_cpus: list[float]

    def slots(self, threads: int) -> int:
        """How many actors of `threads` CPUs each fit, an actor's CPUs all on one node."""
        return sum(int(cpus // threads) for cpus in self.node_cpus)

    def describe(self) -> str:
        cpus = ", ".join(f"{c:g}" for c in self.node_cpus) or "none"
        return f"{self.name} has {sum(self.node_cpus):g} CPU(s) on {len(self.node_cpus)} node(s) ({cpus})"


def connect(ray: Any, address: str | None, cpus: int) -> Cluster:
    """`ray.init` for the private instance (`address` None) or the cluster at `address`."""
    quiet = {"logging_level": logging.ERROR, "log_to_driver": False}
    if address is None:
        ray.init(address="local", num_cpus=cpus, _node_ip_address="127.0.0.1", include_dashboard=False, **quiet)
        return Cluster("the private Ray instance", live_node_cpus(ray))
    gcs = probe(address) if "://" not in address else address
    try:
        with stderr_discarded():
            ray.init(address=address, **quiet)
    except ConnectionError as exc:
        raise ClusterError(f"--address {address}: {exc}; {likely_cause()}") from None
    except ray.exceptions.AuthenticationError:
        raise ClusterError(f"--address {address}: RAY_AUTH_MODE=token but no token was found: {TOKEN_HELP}") from None
    return Cluster(f"the cluster at {gcs}", live_node_cpus(ray))


@contextlib.contextmanager
def stderr_discarded() -> Iterator[None]:
    """File descriptor 2 on a discarded file while the driver joins a cluster: Ray's C++ client logs each
    retry of a refused or unauthenticated connection as a line of its own, for twenty seconds; the outcome
    is reported in one line. (Not for the private instance, whose processes would inherit the file.)"""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def probe(address: str) -> str:
    """The GCS address `address` resolves to, once a TCP connection to it has succeeded."""
    try:  # Ray's own resolution (RAY_ADDRESS, the cluster file of `auto`, 127.0.0.1 -> the node's address)
        from ray._private.services import canonicalize_bootstrap_address
    except ImportError:  # a private helper another Ray release may lack: then Ray alone resolves it

        def canonicalize_bootstrap_address(given: str) -> str | None:
            return None if given == "auto" else given

    try:
        gcs = canonicalize_bootstrap_address(address)
    except (ConnectionError, ValueError) as exc:
        raise ClusterError(f"--address {address}: {exc}") from None
    if gcs is None:
        return address
    host, _, port = gcs.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=PROBE_SECONDS):
            pass
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        raise ClusterError(
            f"--address {address}: no Ray cluster answers at {host}:{port} ({reason}); is `ray start --head` "
            "running there? (`ray status` on the head says)"
        ) from None
    return f"{host}:{port}"


def likely_cause() -> str:
    """Why Ray could reach the GCS port yet not join: nearly always the authentication token."""
    if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
        return (
            "the likely cause: the cluster uses token authentication (Ray 2.60's default) and this driver "
            f"has no token: {TOKEN_HELP}"
        )
    import ray

    return (
        "the likely cause: this driver's token is not the cluster's (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or "
        f"~/.ray/auth_token), or the cluster runs another Ray version than this driver's {ray.__version__}"
    )


def live_node_cpus(ray: Any) -> list[float]:
    return [float(node["Resources"].get("CPU", 0)) for node in ray.nodes() if node.get("Alive")]


def check_plan(cluster: Cluster, workers: int, threads: int) -> None:
    """Refuse, in one line, a pool of actors that the cluster can never hold all at once."""
    room = cluster.slots(threads)
    if room < workers:
        raise ConfigError(
            f"--workers {workers} x --threads-per-worker {threads} asks for {workers} actor(s) of {threads} CPU(s) "
            f"each, on one node each; {cluster.describe()}, room for {room}: lower --workers or --threads-per-worker"
        )


def free_cpus(ray: Any) -> float:
    """CPUs free on the cluster now (for the no-progress message); 0 when Ray cannot say."""
    try:
        return float(ray.available_resources().get("CPU", 0))
    except Exception:  # the message that asks is already reporting a failure; a second one would hide it
        return 0.0
