"""The release artifact `RUN_DIR/model`: weights + config + vocabulary + format version, together.

Safetensors and JSON only. A directory is written under a temporary name and renamed into
place, so a reader never sees a half-written artifact. Reading checks everything before torch
sees it: config.json and vocab.json key by key, tensor names and shapes against the model the
config describes (from the file's header, before any weight is allocated), and finite weights.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from trainer import __version__
from trainer.core.atomic import named, remove_stale, temp_dir, write_text
from trainer.core.config import (
    TASKS,
    ModelConfig,
    PreprocessConfig,
    TaggerConfig,
    model_config_from_dict,
    preprocess_config_from_dict,
    show,
    to_dict,
)
from trainer.core.errors import ArtifactError, ConfigError, DataError, WriteError
from trainer.core.jsonio import dumps, read_file
from trainer.core.lexicon import Lexicon, check_lexicon_json
from trainer.core.preprocess import PAD, UNK, Vocab, Vocabs
from trainer.core.tasks import task_kind
from trainer.models import build_model

FORMAT_VERSION = 1
FILES = ("model.safetensors", "config.json", "vocab.json")
CONFIG_KEYS = ("format_version", "task", "model", "preprocess")


@dataclass
class Artifact:
    model: torch.nn.Module
    config: ModelConfig
    preprocess: PreprocessConfig
    vocabs: Vocabs
    metrics: dict[str, Any]
    format_version: int = FORMAT_VERSION

    @property
    def task(self) -> str:
        return self.config.task


def write_json(path: Path, data: Any, *, nan_as_null: bool = False) -> None:
    """Strict JSON (`trainer.core.jsonio`), indented, written whole or not at all (`trainer.core.atomic`):
    a reader never sees half of it, a write error names it, and the temporaries a killed writer left
    beside it are removed first. `nan_as_null` for measurements (metrics, reports): NaN becomes null."""
    text = dumps(data, indent=2, nan_as_null=nan_as_null) + "\n"
    remove_stale(path)
    write_text(path, text, mode=0o644)  # readable by a serving user


def save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """safetensors' save_file, whose errors (a full disk) name the file instead of a Rust IoError debug string."""
    try:
        save_file(tensors, str(path), metadata=metadata)
    except (SafetensorError, OSError) as exc:
        found = re.search(r'message: "([^"]*)"', str(exc))
        raise WriteError(f"{path}: cannot write ({found[1] if found else exc})") from None


def replace_dir(tmp: Path, final: Path) -> None:
    """Move a finished directory into place, replacing an older one only once the new one is whole.

    If the move fails, the older directory is put back, so `final` is the old or the new one, never gone
    (and if a kill comes between the two renames, the next `remove_stale(final)` puts it back)."""
    if not (final.exists() or final.is_symlink()):
        named(final, os.replace, tmp, final)
        return
    # The new directory in place, failing to delete the old one must not report the save as failed:
    # temp_dir removes it, ignoring errors.
    with temp_dir(final, "old") as old:
        named(final, os.replace, final, old / final.name)
        try:
            named(final, os.replace, tmp, final)
        except BaseException:
            os.replace(old / final.name, final)
            raise


def save_artifact(
    path: Path,
    model: torch.nn.Module,
    config: ModelConfig,
    preprocess: PreprocessConfig,
    vocabs: Vocabs,
    metrics: dict[str, Any] | None = None,
) -> None:
    """Write RUN_DIR/model whole or not at all; weights that `load_artifact` would refuse are not written."""
    path = Path(path)
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    bad = non_finite(state)
    if bad is not None:
        raise ArtifactError(f"{path}: not written: tensor {bad!r} holds non-finite values (NaN or inf)")
    named(path.parent, lambda: path.parent.mkdir(parents=True, exist_ok=True))
    remove_stale(path)
    with temp_dir(path) as tmp:
        save_tensors(
            state,
            tmp / "model.safetensors",
            metadata={"format_version": str(FORMAT_VERSION), "seqlstm_version": __version__},
        )
        write_json(
            tmp / "config.json",
            {
                "format_version": FORMAT_VERSION,
                "task": config.task,
                "model": to_dict(config),
                "preprocess": to_dict(preprocess),
            },
        )
        write_json(tmp / "vocab.json", vocabs.to_json())
        write_json(tmp / "metrics.json", metrics or {}, nan_as_null=True)
        replace_dir(tmp, path)


def non_finite(state: dict[str, torch.Tensor]) -> str | None:
    """The name of the first tensor holding a NaN or an infinity, if any."""
    return next((k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)


def read_json(path: Path) -> Any:
    """Strict JSON (`trainer.core.jsonio`): a lone surrogate, NaN, 1e400 or a huge integer is one line
    naming the key."""
    if not path.is_file():
        raise ArtifactError(f"{path}: missing (expected a model directory written by `python -m trainer train`)")
    return read_file(path, ArtifactError)


def check_keys(data: Any, expected: set[str], where: Path) -> None:
    if not isinstance(data, dict):
        raise ArtifactError(f"{where}: expected a JSON object; got {type(data).__name__}")
    missing, unknown = sorted(expected - data.keys()), sorted(data.keys() - expected)
    if missing:
        raise ArtifactError(f"{where}: key {missing[0]!r} is missing (expected keys: {', '.join(sorted(expected))})")
    if unknown:
        raise ArtifactError(f"{where}: unknown key {show(unknown[0])} (expected keys: {', '.join(sorted(expected))})")


def parse_vocabs(data: Any, config: ModelConfig, where: Path) -> Vocabs:
    """vocab.json: exactly the vocabularies this model uses, lists of distinct strings, labels of its task."""
    chars = isinstance(config, TaggerConfig) and config.char_encoder
    lexicon = data.get("lexicon") if isinstance(data, dict) else None
    lists = {"words", "labels", "chars"} if chars else {"words", "labels"}
    check_keys(data, lists | ({"lexicon"} if lexicon is not None else set()), where)
    if lexicon is not None:
        try:
            check_lexicon_json(lexicon, str(where))
        except DataError as exc:
            raise ArtifactError(str(exc)) from None
    for key in lists:
        entries = data[key]
        if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
            raise ArtifactError(f"{where}: key {key!r} must be a list of strings")
        if len(set(entries)) != len(entries):
            raise ArtifactError(f"{where}: key {key!r} has duplicate entries")
        if key != "labels" and entries[:2] != [PAD, UNK]:
            raise ArtifactError(f"{where}: key {key!r} must start with {PAD!r}, {UNK!r}")
    if chars and any(len(c) != 1 for c in data["chars"][2:]):
        raise ArtifactError(f"{where}: key 'chars' must hold single characters after {PAD!r}, {UNK!r}")
    # Whether the order matters is the kind's (sentiment's is the BCE target; a tagger's rows may come in any order).
    labels = data["labels"]
    if problem := task_kind(config.task).labels_problem(labels):
        raise ArtifactError(f"{where}: key 'labels' {problem}")
    return Vocabs(
        Vocab(data["words"]),
        Vocab.labels(labels),
        Vocab(data["chars"]) if chars else None,
        Lexicon.from_json(lexicon) if lexicon is not None else None,
    )


def read_meta(path: Path) -> tuple[ModelConfig, PreprocessConfig, Vocabs, int]:
    """Config, preprocessing and vocabularies of an artifact, checked, without loading weights."""
    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(f"{path}: no such model directory (expected RUN_DIR/model from `python -m trainer train`)")
    where = path / "config.json"
    meta = read_json(where)
    if not isinstance(meta, dict):
        raise ArtifactError(f"{where}: expected a JSON object; got {type(meta).__name__}")
    version = meta.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:
        raise ArtifactError(
            f"{where}: format_version {show(version)} is not supported (this build reads {FORMAT_VERSION})"
        )
    check_keys(meta, set(CONFIG_KEYS), where)
    if meta["task"] not in TASKS:
        raise ArtifactError(f"{where}: key 'task' must be one of {', '.join(TASKS)}; got {show(meta['task'])}")
    try:
        config = model_config_from_dict(meta["task"], meta["model"], source=f"{where}, key 'model'")
        preprocess = preprocess_config_from_dict(meta["preprocess"], source=f"{where}, key 'preprocess'")
    except ConfigError as exc:
        raise ArtifactError(str(exc)) from None
    vocabs = parse_vocabs(read_json(path / "vocab.json"), config, path / "vocab.json")
    if (vocabs.lexicon is not None) != bool(preprocess.lexicon):
        said = f"names lexicon {preprocess.lexicon!r}" if preprocess.lexicon else "names no lexicon"
        raise ArtifactError(
            f"{where}: key 'preprocess' {said}, but vocab.json {'lacks' if preprocess.lexicon else 'has'} one"
        )
    return config, preprocess, vocabs, version


def weight_shapes(weights: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes from a safetensors header, without reading the tensors."""
    if not weights.is_file():
        raise ArtifactError(f"{weights}: missing")
    try:
        with safe_open(str(weights), "pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (safe_open has keys(), not __iter__)
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"{weights}: corrupt safetensors file ({exc})") from None


def load_artifact(path: Path) -> Artifact:
    """Rebuild the model an artifact describes and load its weights (eval mode, CPU, float32)."""
    path = Path(path)
    config, preprocess, vocabs, version = read_meta(path)
    weights = path / "model.safetensors"
    shapes = weight_shapes(weights)
    with torch.device("meta"):  # the expected shapes, allocating nothing however large config.json says
        expected = {k: tuple(v.shape) for k, v in build_model(config, vocabs).state_dict().items()}
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(show(k) for k in set(shapes) - set(expected))  # names from the file: quoted, cut short
    wrong = sorted(k for k in set(expected) & set(shapes) if expected[k] != shapes[k])
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{label}: {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", wrong))
            if keys
        )
        raise ArtifactError(f"{weights} does not match config.json/vocab.json ({detail})")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"{weights}: corrupt safetensors file ({exc})") from None
    bad = non_finite(state)
    if bad is not None:
        raise ArtifactError(f"{weights}: tensor {bad!r} holds non-finite values (NaN or inf); the model is unusable")
    model = build_model(config, vocabs)
    model.load_state_dict(state)
    model.eval()
    return Artifact(model, config, preprocess, vocabs, read_metrics(path / "metrics.json"), version)


def read_metrics(path: Path) -> dict[str, Any]:
    """metrics.json is informational: a missing one reads as {}, an unreadable one too, with a warning."""
    if not path.exists():
        return {}
    try:
        metrics = read_json(path)
        if not isinstance(metrics, dict):
            raise ArtifactError(f"{path}: expected a JSON object; got {type(metrics).__name__}")
    except (ArtifactError, OSError) as exc:
        print(f"warning: {exc}; ignored (metrics.json is informational)", file=sys.stderr)
        return {}
    return metrics
