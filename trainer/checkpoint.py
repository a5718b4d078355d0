"""Resumable training state, RUN_DIR/checkpoints/step-N (layout in docs/DESIGN.md): never a pickle.

Tensors are safetensors; optimizer settings, scheduler, GradScaler and each process's RNG states are
JSON; trainer_state.json, written last, holds the loop's counters, the run's identity and a manifest
(bytes, sha256) of every other file: a folder is a checkpoint only when its manifest matches. Folders
are written as hidden .tmp-step-N and deleted as hidden .del-step-N, so a kill never leaves a step-N
that looks whole but is not.
"""

from __future__ import annotations

import base64
import hashlib
import os
import random
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load

from trainer.artifact import save_tensors, write_json
from trainer.core.atomic import named
from trainer.core.errors import ArtifactError
from trainer.core.jsonio import dumps, loads

FORMAT_VERSION = 1
STATE_FILE = "trainer_state.json"
REQUIRED = ("model.safetensors", "optimizer.safetensors", "optimizer.json", "scheduler.json")
OPTIONAL = ("best.safetensors", "scaler.json")
# Files of removed options (CHANGELOG.md): a checkpoint holding one was trained with that option and cannot be
# continued the same way, so it is refused with one line naming it.
REMOVED = {"average.safetensors": "--average (the moving average of the weights) was removed"}
RNG_FILE = re.compile(r"rng-([0-9]+)\.json")
# What torch, numpy and random raise on a state of the right JSON shape but the wrong content.
RESTORE_ERRORS = (KeyError, IndexError, TypeError, ValueError, RuntimeError, OverflowError)


@dataclass
class Checkpoint:
    """A checkpoint's files, verified against its manifest and parsed (tensors on the CPU)."""

    path: Path
    state: dict[str, Any]  # trainer_state.json
    model: dict[str, torch.Tensor]
    best: dict[str, torch.Tensor] | None
    optimizer: dict[str, Any]  # {"state": {index: {name: tensor}}, "param_groups": [...]}, as state_dict() gives
    scheduler: dict[str, Any]
    scaler: dict[str, Any] | None
    rng: dict[int, dict[str, Any]]  # by rank


def list_checkpoints(root: Path) -> list[Path]:
    """Every step-N folder, oldest first, whole or damaged; hidden temporaries are never listed."""
    found = [p for p in root.glob("step-*") if re.fullmatch(r"step-[0-9]+", p.name) and p.is_dir()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def write_rng(folder: Path, rank: int) -> None:
    """This process's random states: Mersenne Twister words as JSON ints, torch generator states as base64."""
    _, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state = {
        "python": random.getstate(),
        "numpy": [keys.tolist(), pos, has_gauss, cached],
        "torch": _b64(torch.get_rng_state()),
    }
    if torch.cuda.is_available():
        state["cuda"] = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    path = folder / f"rng-{rank}.json"
    named(path, path.write_text, dumps(state), "utf-8")


def write_training_state(
    folder: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    best: dict[str, torch.Tensor] | None,
) -> None:
    """Weights, best weights, optimizer, scheduler and GradScaler: the files every process shares."""
    save_tensors(_cpu(model.state_dict()), folder / "model.safetensors")
    if best is not None:
        save_tensors(best, folder / "best.safetensors")
    saved = optimizer.state_dict()
    tensors = {f"{index}.{name}": value for index, values in saved["state"].items() for name, value in values.items()}
    save_tensors(_cpu(tensors), folder / "optimizer.safetensors")
    write_json(folder / "optimizer.json", saved["param_groups"])
    write_json(folder / "scheduler.json", _scheduler_state(scheduler))
    if scaler is not None:
        write_json(folder / "scaler.json", scaler.state_dict())


def write_manifest(folder: Path, state: dict[str, Any]) -> None:
    """trainer_state.json, last: `state` plus the size and sha256 of every file already in `folder`."""
    files = {
        p.name: {"bytes": p.stat().st_size, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
        for p in sorted(folder.iterdir())
    }
    write_json(folder / STATE_FILE, {"format_version": FORMAT_VERSION, **state, "files": files})


def publish(tmp: Path, final: Path) -> None:
    """Rename a finished folder into place; a folder already there (a damaged one passed over) goes first."""
    if final.exists():
        discard(final)
    os.replace(tmp, final)


def discard(path: Path) -> None:
    """Delete a checkpoint so that a kill half-way through leaves only a hidden name behind."""
    hidden = path.with_name(f".del-{path.name}")
    shutil.rmtree(hidden, ignore_errors=True)
    os.replace(path, hidden)
    shutil.rmtree(hidden)


def remove_stale(root: Path) -> None:
    """Temporaries that a killed run left behind (only the main process writes them, only while saving)."""
    for path in [*root.glob(".tmp-step-*"), *root.glob(".del-step-*")]:
        shutil.rmtree(path)
        print(f"note: removed {path}, a temporary left by a killed run", file=sys.stderr)


def save(
    root: Path,
    step: int,
    accelerator: Any,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    best: dict[str, torch.Tensor] | None,
    state: dict[str, Any],
    keep: int,
) -> Path:
    """Write `root`/step-`step` whole or not at all, on every process together; returns its path.

    The protocol: the main process clears what a killed run left and makes a hidden .tmp-step-N; every process
    writes its RNG file into it; the main process the shared files, then, once every RNG file is in, the
    manifest (`state` plus every file's size and sha256) last; then the folder is renamed into place and all
    but the newest `keep` checkpoints deleted. A failure on the way removes the temporary and is raised.
    """
    acc = accelerator
    final, tmp = root / f"step-{step}", root / f".tmp-step-{step}"
    try:
        if acc.is_main_process:
            root.mkdir(parents=True, exist_ok=True)
            remove_stale(root)
            tmp.mkdir()
        acc.wait_for_everyone()
        write_rng(tmp, acc.process_index)
        if acc.is_main_process:
            write_training_state(tmp, model, optimizer, scheduler, acc.scaler, best)
        acc.wait_for_everyone()  # every process's RNG file is in before the manifest is taken
        if acc.is_main_process:
            write_manifest(tmp, state)
            publish(tmp, final)
            for old in list_checkpoints(root)[:-keep]:
                discard(old)
    except BaseException:
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    acc.wait_for_everyone()
    return final


def read_checkpoint(path: Path) -> Checkpoint:
    """Every file checked against the manifest and parsed; anything amiss is one ArtifactError that names it."""
    try:
        state = _parse(STATE_FILE, _read(path / STATE_FILE))
        data = {name: _parse(name, _verified(path / name, entry)) for name, entry in _manifest(state).items()}
        optimizer = {"state": _optimizer_tensors(data["optimizer.safetensors"]), "param_groups": data["optimizer.json"]}
    except ArtifactError as exc:
        raise ArtifactError(f"checkpoint {path} is damaged ({exc})") from None
    rng = {int(match[1]): value for name, value in data.items() if (match := RNG_FILE.fullmatch(name))}
    return Checkpoint(
        path,
        state,
        data["model.safetensors"],
        data.get("best.safetensors"),
        optimizer,
        data["scheduler.json"],
        data.get("scaler.json"),
        rng,
    )


def _read(path: Path) -> bytes:
    if not path.is_file():
        raise ArtifactError(f"{path.name} is missing")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"{path.name}: {exc.strerror}") from None


def _parse(name: str, data: bytes) -> Any:
    kind = "safetensors" if name.endswith(".safetensors") else "JSON"
    try:
        return load(data) if kind == "safetensors" else loads(data)
    except (SafetensorError, ValueError) as exc:
        raise ArtifactError(f"{name} is not valid {kind}: {' '.join(str(exc).split())}") from None


def _manifest(state: Any) -> dict[str, dict[str, Any]]:
    """The manifest's entries, after checking that it names exactly the files this format has."""
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION or "files" not in state:
        raise ArtifactError(
            f"{STATE_FILE} has no format_version {FORMAT_VERSION} manifest "
            "(older checkpoints held pickles and cannot be resumed)"
        )
    world, files = state.get("world_size"), state["files"]
    for key, ok in (
        ("files", isinstance(files, dict)),
        ("trainer", isinstance(state.get("trainer"), dict)),
        ("accelerator_step", type(state.get("accelerator_step")) is int),
        # at most one rank per manifest entry: a crafted huge world size costs nothing
        ("world_size", type(world) is int and isinstance(files, dict) and 1 <= world <= len(files)),
    ):
        if not ok:
            raise ArtifactError(f"{STATE_FILE}: bad or missing {key!r}")
    if removed := sorted(set(files) & set(REMOVED)):
        raise ArtifactError(
            f"it holds {removed[0]}: {REMOVED[removed[0]]}; resume it with the version that wrote it, or train afresh"
        )
    required = {*REQUIRED, *(f"rng-{rank}.json" for rank in range(world))}
    if unknown := sorted(set(files) - required - set(OPTIONAL)):
        raise ArtifactError(f"{STATE_FILE}: the manifest names files this format does not have: {', '.join(unknown)}")
    if missing := sorted(required - set(files)):
        raise ArtifactError(f"{STATE_FILE}: the manifest lacks {', '.join(missing)}")
    for name, entry in files.items():
        if not (isinstance(entry, dict) and type(entry.get("bytes")) is int and isinstance(entry.get("sha256"), str)):
            raise ArtifactError(f"{STATE_FILE}: the manifest entry of {name} is not {{bytes, sha256}}")
    return files


def _verified(path: Path, entry: dict[str, Any]) -> bytes:
    data = _read(path)
    if len(data) != entry["bytes"]:
        raise ArtifactError(f"{path.name}: size {len(data)} != {entry['bytes']}")
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise ArtifactError(f"{path.name}: sha256 differs from the manifest")
    return data


def _optimizer_tensors(tensors: dict[str, torch.Tensor]) -> dict[int, dict[str, torch.Tensor]]:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        match = re.fullmatch(r"([0-9]+)\.(\w+)", key)
        if match is None:
            raise ArtifactError(f"optimizer.safetensors: key {key!r} is not <param index>.<name>")
        state.setdefault(int(match[1]), {})[match[2]] = tensor
    return state


def restore(
    checkpoint: Checkpoint,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    rank: int,
) -> bool:
    """Load weights, optimizer, scheduler and GradScaler (global: the same on every rank), and this process's
    random states; False if the checkpoint has none for `rank` (it was written by fewer processes)."""
    try:
        model.load_state_dict(checkpoint.model)
        groups, current = checkpoint.optimizer["param_groups"], optimizer.state_dict()["param_groups"]
        if not isinstance(groups, list) or len(groups) != len(current):
            raise ArtifactError(f"optimizer.json: expected a list of {len(current)} param groups")
        optimizer.load_state_dict(
            {
                "state": checkpoint.optimizer["state"],
                "param_groups": [conform(c, g, "optimizer.json") for c, g in zip(current, groups)],
            }
        )
        counters = conform(_scheduler_state(scheduler), checkpoint.scheduler, "scheduler.json")
        scheduler.load_state_dict({**counters, "lr_lambdas": [None] * len(scheduler.lr_lambdas)})
        if scaler is not None and checkpoint.scaler is not None:
            scaler.load_state_dict(conform(scaler.state_dict(), checkpoint.scaler, "scaler.json"))
        if rank in checkpoint.rng:
            _restore_rng(checkpoint.rng[rank])
    except (ArtifactError, *RESTORE_ERRORS) as exc:
        detail = " ".join(str(exc).split())  # torch's load_state_dict errors span lines
        raise ArtifactError(f"checkpoint {checkpoint.path} does not fit this run: {detail}") from None
    return rank in checkpoint.rng


def conform(template: dict[str, Any], saved: Any, where: str) -> dict[str, Any]:
    """`saved` (parsed JSON) if it has exactly `template`'s keys and value types; lists become tuples where
    `template` has tuples (Adam's betas). Keeps a crafted file from setting other attributes."""
    if not isinstance(saved, dict) or saved.keys() != template.keys():
        got = sorted(saved) if isinstance(saved, dict) else type(saved).__name__
        raise ArtifactError(f"{where}: expected the keys {sorted(template)}; got {got}")
    out = {}
    for key, value in saved.items():
        if isinstance(template[key], tuple) and isinstance(value, list):
            value = tuple(value)
        if type(value) is not type(template[key]):
            raise ArtifactError(f"{where}: {key} should be a {type(template[key]).__name__}; got {value!r}")
        out[key] = value
    return out


def _restore_rng(saved: dict[str, Any]) -> None:
    version, words, gauss = saved["python"]
    random.setstate((version, tuple(words), gauss))
    keys, pos, has_gauss, cached = saved["numpy"]
    np.random.set_state(("MT19937", np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(_unb64(saved["torch"]))
    if "cuda" in saved and torch.cuda.is_available():  # a CPU checkpoint resumed on a GPU keeps fresh CUDA states
        torch.cuda.set_rng_state_all([_unb64(s) for s in saved["cuda"]])


def _scheduler_state(scheduler: Any) -> dict[str, Any]:
    return {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}


def _cpu(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}


def _b64(state: torch.Tensor) -> str:
    return base64.b64encode(state.numpy().tobytes()).decode("ascii")


def _unb64(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text, validate=True)), dtype=torch.uint8)
