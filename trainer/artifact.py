"""The release artifact `RUN_DIR/model`: weights + config + vocabulary + format version, together.

Safetensors and JSON only. A directory is written under a temporary name and renamed into
place, so a reader never sees a half-written artifact.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from trainer.config import (
    ModelConfig,
    PreprocessConfig,
    model_config_from_dict,
    preprocess_config_from_dict,
    to_dict,
)
from trainer.errors import ArtifactError, ConfigError
from trainer.models import build_model
from trainer.preprocess import Vocabs

FORMAT_VERSION = 1
FILES = ("model.safetensors", "config.json", "vocab.json")


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


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def replace_dir(tmp: Path, final: Path) -> None:
    """Move a finished directory into place, replacing an older one only once the new one is whole."""
    old = None
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
        os.replace(final, old / final.name)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old)


def save_artifact(
    path: Path,
    model: torch.nn.Module,
    config: ModelConfig,
    preprocess: PreprocessConfig,
    vocabs: Vocabs,
    metrics: dict[str, Any] | None = None,
) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"), metadata={"format_version": str(FORMAT_VERSION)})
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
        write_json(tmp / "metrics.json", metrics or {})
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_json(path: Path) -> Any:
    if not path.is_file():
        raise ArtifactError(f"{path}: missing (expected a model directory written by `python -m trainer train`)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: corrupt JSON ({exc})") from None


def read_meta(path: Path) -> tuple[ModelConfig, PreprocessConfig, Vocabs, int]:
    """Config, preprocessing and vocabularies of an artifact, checked, without loading weights."""
    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(f"{path}: no such model directory (expected RUN_DIR/model from `python -m trainer train`)")
    meta = read_json(path / "config.json")
    version = meta.get("format_version") if isinstance(meta, dict) else None
    if version != FORMAT_VERSION:
        raise ArtifactError(f"{path / 'config.json'}: format_version {version!r} is not supported (this build reads {FORMAT_VERSION})")
    try:
        config = model_config_from_dict(meta.get("task"), meta.get("model", {}), source=str(path / "config.json"))
        preprocess = preprocess_config_from_dict(meta.get("preprocess", {}), source=str(path / "config.json"))
        vocabs = Vocabs.from_json(read_json(path / "vocab.json"))
    except ConfigError as exc:
        raise ArtifactError(str(exc)) from None
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"{path / 'vocab.json'}: malformed vocabulary ({exc!r})") from None
    return config, preprocess, vocabs, version


def load_artifact(path: Path) -> Artifact:
    """Rebuild the model an artifact describes and load its weights (eval mode, CPU, float32)."""
    path = Path(path)
    config, preprocess, vocabs, version = read_meta(path)
    weights = path / "model.safetensors"
    if not weights.is_file():
        raise ArtifactError(f"{weights}: missing")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"{weights}: corrupt safetensors file ({exc})") from None
    model = build_model(config, vocabs)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{label}: {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", wrong))
            if keys
        )
        raise ArtifactError(f"{weights} does not match config.json/vocab.json ({detail})")
    model.load_state_dict(state)
    model.eval()
    metrics_path = path / "metrics.json"
    metrics = read_json(metrics_path) if metrics_path.exists() else {}
    return Artifact(model, config, preprocess, vocabs, metrics, version)
