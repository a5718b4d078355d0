"""Checkpoints (trainer/checkpoint.py): pickle-free, verified against their manifest, exact on resume,
damaged ones reported and passed over, and safe against a kill at any moment.

One tiny tagger run (`base`) trains 4 of 6 steps with checkpoints at steps 2 and 4; each test copies it.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
import torch
from helpers import REPO, events, tiny_tagger, trainer
from safetensors.torch import load, save

from trainer import checkpoint as ckpt
from trainer.core.errors import ArtifactError
from trainer.plots import read_events

FILES = [
    "best.safetensors",
    "model.safetensors",
    "optimizer.json",
    "optimizer.safetensors",
    "rng-0.json",
    "scheduler.json",
    "trainer_state.json",
]


@pytest.fixture(scope="module")
def args(data: dict[str, str]) -> list[str]:
    """Dropout, word dropout and weight drop on, so that a resume is exact only if the random states come back;
    adversarial training on (two backward passes a step)."""
    return [
        "train",
        *tiny_tagger(data["tagger"]),
        "--dropout",
        "0.3",
        "--word_dropout",
        "0.5",
        "--weight_drop",
        "0.2",
        "--adversarial",
        "1.0",
        "--batch_size",
        "8",
        "--save_every",
        "2",
        "--eval_every",
        "2",
    ]


@pytest.fixture(scope="module")
def base(args: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("base") / "run"
    trainer(*args, "--max_steps", "6", "--session_steps", "4", "--out", str(run))
    return run


def copy_run(base: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(base, tmp_path / "run"))


def messages(stderr: str) -> list[str]:
    """stderr without the progress lines (trainer/progress.py) that a slow run prints off a terminal."""
    return [line for line in stderr.split("\n") if line and not line.startswith("train: step ")]


def set_manifest_entry(folder: Path, name: str) -> None:
    """Make the manifest agree with whatever `name` now holds, as an attacker who controls the folder can."""
    state = json.loads((folder / ckpt.STATE_FILE).read_text())
    data = (folder / name).read_bytes()
    state["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (folder / ckpt.STATE_FILE).write_text(json.dumps(state))


class RunsShell:
    """Unpickling this runs a shell command: what a crafted checkpoint file would do under torch.load/pickle."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple:
        return os.system, (self.command,)


def test_a_checkpoint_is_safetensors_and_json_with_a_manifest(base: Path) -> None:
    folder = base / "checkpoints" / "step-4"
    assert sorted(os.listdir(base / "checkpoints")) == ["step-2", "step-4"]  # no hidden temporaries left
    assert sorted(os.listdir(folder)) == FILES
    state = json.loads((folder / ckpt.STATE_FILE).read_text())
    assert state["format_version"] == 1 and state["world_size"] == 1 and state["trainer"]["step"] == 4
    assert state["accelerator_step"] == 4  # batches seen by accelerate's accumulation counter (grad_accum 1)
    assert sorted(state["files"]) == FILES[:-1]
    for name, entry in state["files"].items():
        data = (folder / name).read_bytes()
        assert entry == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        assert load(data) if name.endswith(".safetensors") else json.loads(data)  # safetensors or JSON, nothing else
    rng = json.loads((folder / "rng-0.json").read_text())
    assert sorted(rng) == ["numpy", "python", "torch"] and len(rng["python"][1]) == 625
    assert json.loads((folder / "optimizer.json").read_text())[0]["betas"] == [0.9, 0.999]


@pytest.mark.parametrize("name", FILES)
# The fallback cases resume and train to the end: slow, so CI (--slow) runs them and the default run does not.
@pytest.mark.parametrize("older", ["none", pytest.param("whole", marks=pytest.mark.slow)])
def test_a_crafted_pickle_in_any_checkpoint_file_runs_nothing(
    base: Path, args: list[str], tmp_path: Path, name: str, older: str
) -> None:
    """Each file of the newest checkpoint replaced by a pickle that would create `marker` if loaded.
    With no older checkpoint the manifest is even made to match (the format check must hold on its own):
    a one-line error. With an older whole one (manifest left as is): one warning line, resumed from it."""
    run, marker = copy_run(base, tmp_path), tmp_path / "marker"
    newest = run / "checkpoints" / "step-4"
    (newest / name).write_bytes(pickle.dumps(RunsShell(f"touch {marker}")))
    if older == "none":
        shutil.rmtree(run / "checkpoints" / "step-2")
        if name != ckpt.STATE_FILE:
            set_manifest_entry(newest, name)
    # --max_steps 2: a run resumed at step 2 stops at once and writes its model.
    proc = trainer(*args, "--max_steps", "2", "--out", str(run), "--resume", "auto", check=False)
    assert not marker.exists()
    if older == "none":
        assert proc.returncode == 2 and messages(proc.stderr) == proc.stderr.splitlines()
        [line] = messages(proc.stderr)
        assert line.startswith(
            f"error: --resume auto: no whole checkpoint in {run / 'checkpoints'}: "
            f"checkpoint {newest} is damaged ({name}"
        )
        assert not (run / "model").exists()
    else:
        assert proc.returncode == 0, proc.stderr[-2000:]
        [line] = messages(proc.stderr)
        assert line.startswith(f"train: checkpoint {newest} is damaged ({name}") and line.endswith(
            "); resuming from step-2"
        )
        assert json.loads((run / "model" / "metrics.json").read_text())["steps"] == 2


def test_resume_passes_over_a_truncated_checkpoint_and_is_exact(base: Path, args: list[str], tmp_path: Path) -> None:
    """step-4's weights cut short: resumed from step-2, the new step-4 replaces the damaged one and
    equals the uninterrupted run's step-4 byte for byte (weights, optimizer, scheduler, RNG)."""
    run = copy_run(base, tmp_path)
    weights = run / "checkpoints" / "step-4" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    proc = trainer(*args, "--max_steps", "6", "--session_steps", "2", "--out", str(run), "--resume", "auto")
    size = (base / "checkpoints" / "step-4" / "model.safetensors").stat().st_size
    assert messages(proc.stderr) == [
        f"train: checkpoint {run / 'checkpoints' / 'step-4'} is damaged "
        f"(model.safetensors: size 1000 != {size}); resuming from step-2"
    ]
    assert sorted(os.listdir(run / "checkpoints")) == ["step-2", "step-4"]
    for name in FILES[:-1]:
        assert (run / "checkpoints/step-4" / name).read_bytes() == (base / "checkpoints/step-4" / name).read_bytes()
    assert [e["resumed_from"] for e in events(run, "start")] == [None, str(run / "checkpoints" / "step-2")]
    state = json.loads((run / "checkpoints/step-4" / ckpt.STATE_FILE).read_text())
    assert state["accelerator_step"] == 4  # accelerate's batch counter went on from 2, as in the straight run


def test_an_explicit_damaged_checkpoint_is_a_one_line_error(base: Path, args: list[str], tmp_path: Path) -> None:
    run = copy_run(base, tmp_path)
    folder = run / "checkpoints" / "step-2"
    (folder / "optimizer.json").unlink()
    proc = trainer(*args, "--out", str(run), "--resume", str(folder), check=False)
    assert proc.returncode == 2
    assert proc.stderr == f"error: --resume {folder}: checkpoint {folder} is damaged (optimizer.json is missing)\n"


def test_a_run_killed_mid_write_resumes_cleanly(base: Path, args: list[str], tmp_path: Path) -> None:
    """A kill can leave a torn last line in metrics.jsonl and hidden temporaries of a save or a rotation.
    The resume must not trip over the torn line (it once failed in the plot step), must start its own
    events on a new line, and its next save removes the temporaries."""
    run = copy_run(base, tmp_path)
    log = run / "logs" / "metrics.jsonl"
    torn = '{"event": "train", "step": 5, "epoch": 0, "lo'
    log.write_text(log.read_text() + torn)
    for stale in (".tmp-step-6", ".del-step-2"):
        (run / "checkpoints" / stale).mkdir()
        (run / "checkpoints" / stale / "model.safetensors").write_bytes(b"half")
    trainer(*args, "--max_steps", "6", "--out", str(run), "--resume", "auto")
    lines = log.read_text().splitlines()
    assert lines.count(torn) == 1 and lines[-1] != torn
    assert all(json.loads(line) for line in lines if line != torn)
    assert read_events(log)[1] == 1
    assert (run / "plots" / "curves.png").stat().st_size > 0
    assert sorted(os.listdir(run / "checkpoints")) == ["step-4", "step-6"]
    assert json.loads((run / "model" / "metrics.json").read_text())["steps"] == 6


def test_a_save_interrupted_at_any_point_leaves_no_temporary(base: Path, args: list[str], tmp_path: Path) -> None:
    """KeyboardInterrupt right after the manifest is written (the temporary folder is complete but not
    yet renamed): the folder is removed, and the checkpoints before it are untouched."""
    run = copy_run(base, tmp_path)
    script = (
        "import sys, trainer.checkpoint as checkpoint, trainer.train as t\n"
        "def interrupted(*a, **k):\n"
        "    write_manifest(*a, **k)\n"
        "    raise KeyboardInterrupt\n"
        "write_manifest, checkpoint.write_manifest = checkpoint.write_manifest, interrupted\n"
        "try:\n"
        "    t.main(sys.argv[1:])\n"
        "except KeyboardInterrupt:\n"
        "    sys.exit(3)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, *args[1:], "--max_steps", "6", "--out", str(run), "--resume", "auto"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert sorted(os.listdir(run / "checkpoints")) == ["step-2", "step-4"]
    for name in FILES:
        assert (run / "checkpoints/step-4" / name).read_bytes() == (base / "checkpoints/step-4" / name).read_bytes()


def test_a_kill_during_rotation_leaves_no_half_deleted_checkpoint(
    base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = copy_run(base, tmp_path) / "checkpoints"

    rmtree = shutil.rmtree

    def killed(path: Path, ignore_errors: bool = False) -> None:
        if ignore_errors:  # clearing a leftover of the hidden name first
            return rmtree(path, ignore_errors=True)
        next(Path(path).iterdir()).unlink()  # deleting has begun
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt.shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        ckpt.discard(root / "step-2")
    monkeypatch.undo()
    assert ckpt.list_checkpoints(root) == [root / "step-4"]
    assert sorted(os.listdir(root)) == [".del-step-2", "step-4"]
    ckpt.remove_stale(root)
    assert sorted(os.listdir(root)) == ["step-4"]


def rewrite_state(folder: Path, change: Callable[[dict], object]) -> None:
    state = json.loads((folder / ckpt.STATE_FILE).read_text())
    change(state)
    (folder / ckpt.STATE_FILE).write_text(json.dumps(state))


def test_a_checkpoint_of_the_removed_weight_average_is_a_one_line_error(
    base: Path, args: list[str], tmp_path: Path
) -> None:
    """A checkpoint written with --average (removed) holds average.safetensors: refused, naming it and why."""
    run = copy_run(base, tmp_path)
    folder = run / "checkpoints" / "step-2"
    crafted_file(folder, "average.safetensors", (folder / "model.safetensors").read_bytes())
    proc = trainer(*args, "--out", str(run), "--resume", str(folder), check=False)
    assert proc.returncode == 2
    assert messages(proc.stderr) == [
        f"error: --resume {folder}: checkpoint {folder} is damaged (it holds average.safetensors: "
        "--average (the moving average of the "
        "weights) was removed; resume it with the version that wrote it, or train afresh)"
    ]


def crafted_file(folder: Path, name: str, data: bytes) -> None:
    (folder / name).write_bytes(data)
    set_manifest_entry(folder, name)


@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda f: (f / "scheduler.json").write_text("{}"), "scheduler.json: size 2 != "),
        (
            lambda f: (f / "rng-0.json").write_text(" " * (f / "rng-0.json").stat().st_size),
            "rng-0.json: sha256 differs from the manifest",
        ),
        (lambda f: (f / "best.safetensors").unlink(), "best.safetensors is missing"),
        (
            lambda f: (f / ckpt.STATE_FILE).write_text('{"format_version": 1, "fi'),
            "trainer_state.json is not valid JSON",
        ),
        (lambda f: (f / ckpt.STATE_FILE).write_bytes(b"\xff\xfe"), "trainer_state.json is not valid JSON"),
        (lambda f: crafted_file(f, "scheduler.json", b"\x80\x04K\x01."), "scheduler.json is not valid JSON"),
        (
            lambda f: crafted_file(f, "model.safetensors", b"PK\x03\x04torch-zip"),
            "model.safetensors is not valid safetensors",
        ),
        (
            partial(rewrite_state, change=lambda s: s["files"].update({"../../x.json": s["files"]["rng-0.json"]})),
            "trainer_state.json: the manifest names files this format does not have: ../../x.json",
        ),
        (
            partial(rewrite_state, change=lambda s: s.update(world_size=2)),
            "trainer_state.json: the manifest lacks rng-1.json",
        ),
        (
            partial(rewrite_state, change=lambda s: s.pop("format_version")),
            "trainer_state.json has no format_version 1 manifest (older checkpoints held pickles",
        ),
        (
            partial(rewrite_state, change=lambda s: s.update(accelerator_step="4")),
            "trainer_state.json: bad or missing 'accelerator_step'",
        ),
        (
            partial(rewrite_state, change=lambda s: s["files"].update({"optimizer.json": {"bytes": 1}})),
            "trainer_state.json: the manifest entry of optimizer.json is not {bytes, sha256}",
        ),
        (
            lambda f: crafted_file(f, "optimizer.safetensors", save({"exp_avg": torch.zeros(1)})),
            "optimizer.safetensors: key 'exp_avg' is not <param index>.<name>",
        ),
    ],
    ids=[
        "truncated",
        "overwritten",
        "missing",
        "torn-manifest",
        "binary-manifest",
        "pickle-as-json",
        "torch-zip-as-safetensors",
        "path-in-manifest",
        "rng-file-lacking",
        "old-format",
        "bad-counter",
        "bad-entry",
        "bad-optimizer-key",
    ],
)
def test_damage_is_named(base: Path, tmp_path: Path, damage: Callable[[Path], object], expected: str) -> None:
    folder = copy_run(base, tmp_path) / "checkpoints" / "step-4"
    ckpt.read_checkpoint(folder)
    damage(folder)
    with pytest.raises(ArtifactError) as caught:
        ckpt.read_checkpoint(folder)
    assert str(caught.value).startswith(f"checkpoint {folder} is damaged ({expected}")
    assert "\n" not in str(caught.value)


def tiny_training_state() -> tuple[
    torch.nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR, torch.amp.GradScaler
]:
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.8, 0.9))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 / (step + 1))
    return model, optimizer, scheduler, torch.amp.GradScaler("cpu", init_scale=1024.0)


def test_state_round_trips_and_a_crafted_state_cannot_set_other_attributes(tmp_path: Path) -> None:
    """Weights, AdamW (betas back to a tuple), LambdaLR counters, an fp16-style GradScaler and the RNG
    streams come back exactly; a scheduler.json with another key is refused, not copied into __dict__."""
    model, optimizer, scheduler, scaler = tiny_training_state()
    for _ in range(3):
        scaler.scale(model(torch.randn(4, 3)).sum()).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
    torch.manual_seed(5)
    ckpt.write_rng(tmp_path, 0)
    ckpt.write_training_state(tmp_path, model, optimizer, scheduler, scaler, None)
    ckpt.write_manifest(tmp_path, {"world_size": 1, "accelerator_step": 3, "trainer": {}})
    expected = (torch.rand(3), optimizer.state_dict(), scheduler.state_dict(), scaler.state_dict())

    fresh = tiny_training_state()
    assert ckpt.restore(ckpt.read_checkpoint(tmp_path), *fresh, rank=0) is True
    assert torch.equal(torch.rand(3), expected[0])
    assert all(torch.equal(a, b) for a, b in zip(fresh[0].state_dict().values(), model.state_dict().values()))
    groups = fresh[1].state_dict()["param_groups"]
    assert groups == expected[1]["param_groups"] and groups[0]["betas"] == (0.8, 0.9)
    assert all(
        torch.equal(fresh[1].state_dict()["state"][i][k], v)
        for i, state in expected[1]["state"].items()
        for k, v in state.items()
    )
    assert {k: v for k, v in fresh[2].state_dict().items() if k != "lr_lambdas"} == {
        k: v for k, v in expected[2].items() if k != "lr_lambdas"
    }
    assert fresh[3].state_dict() == expected[3] and expected[3]["_growth_tracker"] == 3

    torch.manual_seed(6)
    assert ckpt.restore(ckpt.read_checkpoint(tmp_path), *tiny_training_state(), rank=1) is False
    assert not torch.equal(torch.rand(3), expected[0])  # a rank the checkpoint lacks keeps its own random state
    crafted_file(
        tmp_path,
        "scheduler.json",
        json.dumps({**json.loads((tmp_path / "scheduler.json").read_text()), "optimizer": "x"}).encode(),
    )
    with pytest.raises(ArtifactError, match=r"does not fit this run: scheduler.json: expected the keys"):
        ckpt.restore(ckpt.read_checkpoint(tmp_path), *tiny_training_state(), rank=0)
