"""`python -m serve ray`: the same records as `serve predict`, on a private Ray instance and on a real cluster.

The cluster is a real `ray start --head --num-cpus 2` on 127.0.0.1 (`ray_head`, once per module), started
in a new session with free ports and a private `RAY_TMPDIR`, token authentication off for the head and the
jobs (`RAY_AUTH_MODE=disabled`). Ray's worker processes leave the head's process group, so at the end
every process whose environment names that RAY_TMPDIR is stopped too, and the tests check none is left.
Every job runs as a subprocess (`python -m serve ray`), as a user runs it. Ray's start-up alone takes
~15 s on 2 cores, so these are marked slow; the ones that start no Ray are not.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import LINES, REPO, TINY_MAX_TOKENS, default_sigint, env, one_line_error, serve

RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def records_file(path: Path, start: int) -> Path:
    rows = [{"id": start + i, "text": line, "source": path.name} for i, line in enumerate(LINES * 5)]
    data = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def inputs_and_expected(export_dir: Path, root: Path) -> tuple[Path, bytes]:
    """Two JSONL files (one gzipped) under root/in, and `serve predict`'s output for them, concatenated."""
    inputs = root / "in"
    inputs.mkdir()
    expected = b""
    for path in (records_file(inputs / "a.jsonl", 0), records_file(inputs / "b.jsonl.gz", 1000)):
        single = serve("predict", "--model", export_dir, "--input", path, "--output", "-", "--input-format", "jsonl")
        assert single.returncode == 0, single.stderr.decode()
        expected += single.stdout
    return inputs, expected


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes_of(ray_tmpdir: Path) -> list[int]:
    """Every process whose environment names `ray_tmpdir` as RAY_TMPDIR: the Ray processes a test started."""
    marker = f"RAY_TMPDIR={ray_tmpdir}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
    return found


def stop_processes(ray_tmpdir: Path, grace: float = 20.0) -> list[int]:
    """SIGTERM to what is left of a test's Ray processes, SIGKILL after `grace` s; the pids that had to be stopped."""
    left = processes_of(ray_tmpdir)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while processes_of(ray_tmpdir) and time.monotonic() < deadline:
            time.sleep(0.5)
    return left


def wait_gone(ray_tmpdir: Path, seconds: float = 30.0) -> list[int]:
    """The test's Ray processes still alive after `seconds` (normally none: they end on their own)."""
    deadline = time.monotonic() + seconds
    while processes_of(ray_tmpdir) and time.monotonic() < deadline:
        time.sleep(0.5)
    return processes_of(ray_tmpdir)


@contextlib.contextmanager
def private_ray_tmpdir() -> Iterator[Path]:
    """A short RAY_TMPDIR (Ray's Unix socket paths inside it must stay under 108 bytes) that is removed, with
    every process still naming it, at the end."""
    path = Path(tempfile.mkdtemp(prefix="seqlstm-ray-", dir="/tmp"))
    try:
        yield path
    finally:
        stop_processes(path)
        shutil.rmtree(path, ignore_errors=True)


def job_env(ray_tmpdir: Path) -> dict[str, str]:
    extra = {**RAY_ENV, "RAY_TMPDIR": str(ray_tmpdir)}
    return {k: v for k, v in env().items() if k != "RAY_ADDRESS"} | extra


def ray_job(*args: object, environment: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "serve", "ray", *map(str, args)],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@dataclass
class Head:
    address: str
    tmpdir: Path
    env: dict[str, str]


@contextlib.contextmanager
def running_head(**extra_env: str) -> Iterator[Head]:
    """`ray start --head --num-cpus 2` on 127.0.0.1 (auth off unless `extra_env` says otherwise), stopped at the
    end with its process group and every process left that names its RAY_TMPDIR."""
    with private_ray_tmpdir() as tmpdir:
        port, environment = free_port(), job_env(tmpdir) | extra_env
        ports = ["--port", port, "--ray-client-server-port", free_port()]
        ports += ["--dashboard-agent-listen-port", free_port(), "--dashboard-port", free_port()]
        log = (tmpdir / "head.log").open("w")
        head = subprocess.Popen(
            [Path(sys.executable).parent / "ray", "start", "--head", "--block", "--num-cpus", "2"]
            + ["--node-ip-address", "127.0.0.1", "--include-dashboard", "false", "--disable-usage-stats"]
            + [str(p) for p in ports],
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 180
            while "Ray runtime started" not in (tmpdir / "head.log").read_text():
                assert head.poll() is None and time.monotonic() < deadline, (tmpdir / "head.log").read_text()[-3000:]
                time.sleep(0.5)
            yield Head(f"127.0.0.1:{port}", tmpdir, environment)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(head.pid, signal.SIGTERM)
            try:  # `ray start --block` can stay up, half-stopped, after SIGTERM
                head.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(head.pid, signal.SIGKILL)
                head.wait(15)
            log.close()
    assert processes_of(tmpdir) == []


@pytest.fixture(scope="module")
def ray_head() -> Iterator[Head]:
    pytest.importorskip("ray")
    with running_head() as head:
        yield head


def assert_only_progress_lines(stderr: str) -> list[str]:
    """A healthy run prints its progress and summary lines, nothing else (no Ray ERROR or warning lines)."""
    lines = stderr.strip().splitlines()
    assert lines and all(line.startswith("ray: ") for line in lines), stderr[-3000:]
    return lines


@pytest.mark.slow
@pytest.mark.parametrize("workers, threads", [(2, 1), (1, 2)])
def test_ray_on_a_cluster_its_actors_fill_matches_predict(
    ray_head: Head, runs, tmp_path: Path, workers: int, threads: int
) -> None:
    """workers x threads = the cluster's 2 CPUs: read and write tasks need none, so nothing waits for them."""
    export_dir = runs["tagger"][1]
    inputs, expected = inputs_and_expected(export_dir, tmp_path)
    out = tmp_path / "out"
    # (1, 2) joins through `--address auto`: the cluster file `ray start` wrote in its RAY_TMPDIR.
    address = ray_head.address if workers == 2 else "auto"
    result = ray_job(
        *("--model", export_dir, "--input", inputs / "*", "--output", out, "--input-format", "jsonl"),
        *("--address", address, "--workers", workers, "--threads-per-worker", threads, "--progress-every", 0),
        environment=ray_head.env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = assert_only_progress_lines(result.stderr)
    records = 2 * 5 * len(LINES)
    assert lines[-1].startswith(f"ray: done: {records:,} lines in ")
    assert lines[-1].endswith(f"; 2 file(s), {records} records to {out}")
    assert any(line.startswith(f"ray: {records:,} lines, ") for line in lines[:-1])  # a progress line, off a terminal
    truncated = sum(json.loads(line).get("truncated", False) for line in expected.splitlines())
    note = f'{truncated} line(s) longer than max_tokens={TINY_MAX_TOKENS} were truncated (marked "truncated": true)'
    assert truncated and f"ray: {note}" in lines  # as `serve predict` says it
    got = b"".join(part.read_bytes() for part in sorted(out.glob("part-*.jsonl")))
    assert got == expected  # the same bytes, in input order
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]  # no temporary directory left


@pytest.mark.slow
def test_ray_refuses_a_plan_the_cluster_cannot_hold(ray_head: Head, runs, lines_file: Path, tmp_path: Path) -> None:
    base = ("--model", runs["tagger"][1], "--input", lines_file, "--output", tmp_path / "out", "--address")
    too_many = one_line_error(ray_job(*base, ray_head.address, "--workers", 3, environment=ray_head.env))
    assert too_many.startswith("error: --workers 3 x --threads-per-worker 1 asks for 3 actor(s) of 1 CPU(s) each")
    assert "has 2 CPU(s) on 1 node(s) (2), room for 2: lower --workers or --threads-per-worker" in too_many
    too_wide = one_line_error(ray_job(*base, "auto", "--threads-per-worker", 3, environment=ray_head.env))
    assert "asks for 1 actor(s) of 3 CPU(s) each" in too_wide and "room for 0" in too_wide
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]


HOLD_CPUS = """
import sys, ray
ray.init(address=sys.argv[1], log_to_driver=False, logging_level="ERROR")
holder = ray.remote(num_cpus=2)(type("Hold", (), {"ping": lambda self: 1})).remote()
ray.get(holder.ping.remote())
print("held", flush=True)
sys.stdin.read()
"""


@pytest.mark.slow
def test_ray_never_waits_forever_and_a_signal_leaves_nothing(
    ray_head: Head, runs, lines_file: Path, tmp_path: Path
) -> None:
    """Another job holds both CPUs: the run gives up after --stall-timeout naming what is pending, and
    SIGTERM or SIGINT while it waits end it in one line, leaving no output and no temporary directory."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_CPUS, ray_head.address],
        env=ray_head.env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "held\n"
        out = tmp_path / "out"
        base = ["--model", runs["tagger"][1], "--input", lines_file, "--output", out, "--address", ray_head.address]
        stalled = one_line_error(ray_job(*base, "--workers", 2, "--stall-timeout", 3, environment=ray_head.env))
        assert stalled == (
            "error: no progress for 3 s (--stall-timeout), 0 line(s) done: 2 of 2 model actor(s) of 1 CPU(s) "
            f"not started (the cluster at {ray_address(ray_head)} has 0 of 2 CPU(s) free: another job holding them?)"
        )
        assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]
        for sig, status in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
            job = subprocess.Popen(
                [sys.executable, "-m", "serve", "ray", *map(str, base)],
                cwd=REPO,
                env=ray_head.env,
                stderr=subprocess.PIPE,
                text=True,
                preexec_fn=default_sigint,
            )
            deadline = time.monotonic() + 120
            while not list(tmp_path.glob(".out.*.tmp")):  # the plan passed; the job waits for CPUs
                assert job.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
            job.send_signal(sig)
            stderr = job.communicate(timeout=60)[1]
            assert (job.returncode, stderr) == (status, f"error: interrupted by {signal.Signals(sig).name}\n")
            assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]
    finally:
        holder.stdin.close()
        holder.wait(30)


def ray_address(head: Head) -> str:
    """The GCS address as Ray reports it: 127.0.0.1 becomes this machine's address."""
    from ray._private.services import resolve_ip_for_localhost

    host, port = head.address.rsplit(":", 1)
    return f"{resolve_ip_for_localhost(host)}:{port}"


@pytest.mark.slow
def test_ray_private_instance_beside_a_live_cluster(ray_head: Head, runs, lines_file: Path, tmp_path: Path) -> None:
    """Without --address, a private instance even while a local cluster runs and RAY_ADDRESS names it."""
    out = tmp_path / "out"
    result = ray_job(
        *("--model", runs["tagger"][1], "--input", lines_file, "--output", out),
        environment=ray_head.env | {"RAY_ADDRESS": ray_head.address},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert_only_progress_lines(result.stderr)
    expected = serve("predict", "--model", runs["tagger"][1], "--input", lines_file, "--output", "-")
    assert (out / "part-00000.jsonl").read_bytes() == expected.stdout


@pytest.mark.slow
def test_ray_private_instance_ignores_a_stale_cluster_file(runs, tmp_path: Path) -> None:
    """Without --address: a private instance with 2 actors, even though Ray's current-cluster file still names
    a cluster that is gone; its outputs are `serve predict`'s, and none of its processes outlives it."""
    pytest.importorskip("ray")
    export_dir = runs["tagger"][1]
    inputs, expected = inputs_and_expected(export_dir, tmp_path)
    out = tmp_path / "out"
    with private_ray_tmpdir() as tmpdir:
        (tmpdir / "ray").mkdir()
        (tmpdir / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{free_port()}")
        result = ray_job(
            *("--model", export_dir, "--input", inputs / "*", "--output", out, "--workers", 2),
            *("--input-format", "jsonl"),
            environment=job_env(tmpdir),
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert_only_progress_lines(result.stderr)
        assert wait_gone(tmpdir) == []
    assert b"".join(part.read_bytes() for part in sorted(out.glob("part-*.jsonl"))) == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]


def test_ray_without_a_cluster_at_the_address_is_one_line(runs, lines_file: Path, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    port = free_port()
    result = ray_job(
        *("--model", runs["tagger"][1], "--input", lines_file, "--output", tmp_path / "out"),
        *("--address", f"127.0.0.1:{port}"),
        environment=job_env(tmp_path),
        timeout=60,
    )
    message = one_line_error(result)
    assert message.startswith(f"error: --address 127.0.0.1:{port}: no Ray cluster answers at ")
    assert "Connection refused" in message
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_ray_on_a_cluster_with_token_authentication(runs, lines_file: Path, tmp_path: Path) -> None:
    """A head with token authentication (Ray 2.60's default): a driver without the token fails in one line that
    names it; with RAY_AUTH_MODE=token and RAY_AUTH_TOKEN, as the README says, the job runs."""
    pytest.importorskip("ray")
    token = os.urandom(16).hex()
    with running_head(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token) as head:
        base = ("--model", runs["tagger"][1], "--input", lines_file, "--output", tmp_path / "out")
        without = {k: v for k, v in head.env.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
        without |= {"HOME": str(tmp_path), "RAY_AUTH_MODE": "disabled"}  # no ~/.ray/auth_token to find either
        refused = one_line_error(ray_job(*base, "--address", head.address, environment=without))
        assert refused.startswith(f"error: --address {head.address}: Failed to connect to Ray cluster at ")
        assert "the likely cause: the cluster uses token authentication" in refused
        assert "RAY_AUTH_MODE=token" in refused and "RAY_AUTH_TOKEN" in refused
        joined = ray_job(*base, "--address", head.address, environment=head.env)
        assert joined.returncode == 0, joined.stderr[-3000:]
        assert_only_progress_lines(joined.stderr)
        assert len((tmp_path / "out" / "part-00000.jsonl").read_text().splitlines()) == len(LINES)
