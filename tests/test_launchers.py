"""Launch checks (trainer/launchers.py): accelerate's one-process CPU launch, and RUN_DIR shared across nodes."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from helpers import REPO

from trainer.core.errors import ConfigError
from trainer.launchers import MARKER, check_launch, check_shared_run_dir, nodes


def test_accelerate_cpu_launch_of_several_processes_is_refused() -> None:
    # What `accelerate launch --cpu --num_processes 2` leaves in its one process's environment.
    with pytest.raises(ConfigError, match="started one .*accelerate issue 2741.*--multi_gpu"):
        check_launch({"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"})
    check_launch({"ACCELERATE_USE_CPU": "True"})  # accelerate launch --cpu of one process
    check_launch({"ACCELERATE_USE_CPU": "False", "MASTER_ADDR": "127.0.0.1", "WORLD_SIZE": "2", "RANK": "1"})
    check_launch({})


@pytest.mark.trains  # accelerate's launcher and two trainer processes, each importing torch: seconds, not a unit test
def test_the_real_accelerate_cpu_launch_is_one_line(tmp_path: Path) -> None:
    conllu = REPO / "tests" / "fixtures" / "tiny.conllu"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--cpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "-m",
            "trainer",
            "train",
            "--task",
            "tagger",
            "--data",
            f"conllu:{conllu}",
            "--out",
            str(tmp_path / "run"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    # Our one line; accelerate's launcher then re-raises the child's exit status 2 with a traceback of its own.
    assert proc.returncode != 0 and "returned non-zero exit status 2" in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "accelerate issue 2741" in errors[0]
    assert not (tmp_path / "run").exists()


def test_nodes_from_the_launchers_environment() -> None:
    assert nodes({}) == 1
    assert nodes({"WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "4"}) == 1
    assert nodes({"WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2"}) == 2


def run_ranks(dirs: list[Path]) -> list[BaseException | None]:
    """`check_shared_run_dir` on one thread per rank, rank r seeing RUN_DIR as dirs[r]."""
    barrier, box, seen = threading.Barrier(len(dirs)), {}, [False] * len(dirs)
    errors: list[BaseException | None] = [None] * len(dirs)

    def rank(r: int) -> None:
        def broadcast(value: str) -> str:
            if r == 0:
                box["token"] = value
            barrier.wait()
            return box["token"]

        def all_true(ok: bool) -> list[bool]:
            seen[r] = ok
            barrier.wait()
            return list(seen)

        try:
            check_shared_run_dir(dirs[r], r, broadcast, all_true, barrier.wait)
        except ConfigError as exc:
            errors[r] = exc

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(len(dirs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return errors


def test_a_shared_run_dir_passes_and_leaves_no_marker(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert run_ranks([run, run, run]) == [None, None, None]
    assert not (run / MARKER).exists()


def test_a_run_dir_that_a_node_does_not_share_is_one_error_on_every_rank(tmp_path: Path) -> None:
    shared, elsewhere = tmp_path / "run", tmp_path / "node-2-local" / "run"
    errors = run_ranks([shared, shared, elsewhere])
    assert all(isinstance(e, ConfigError) for e in errors)
    assert all("not on a filesystem shared by every node: rank(s) [2]" in str(e) for e in errors)
    assert "\n" not in str(errors[0]) and not (shared / MARKER).exists()
