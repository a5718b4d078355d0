"""The onnxruntime core shared by `predict`, `http` and `bench`: load an export, text -> results.

Imports numpy, onnxruntime and the torch-free `trainer.preprocess` / `trainer.config` only.
An export directory is read through `model.json` (docs/DESIGN.md): the `Encoder` is rebuilt from
the vocabularies and preprocessing config stored there, never from a corpus, and the ONNX file is
refused unless its sha256 matches the one `export` recorded.

Batching: items are sorted by length and run `batch_size` at a time (little padding, so fast), and
results come back in the caller's order. Tags are an argmax and so do not depend on the batch, but
LSTM logits can differ at the 1e-7 level between batch shapes, so `prob_positive` is rounded to
`PROB_DECIMALS` places: that makes the output the same, byte for byte, at any `--batch-size`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from trainer.config import TASKS, preprocess_config_from_dict
from trainer.errors import ArtifactError, ConfigError, DataError
from trainer.fetch import sha256_file
from trainer.preprocess import Encoded, Encoder, Vocabs, tokenize

EXPORT_FORMAT_VERSION = 1
PROB_DECIMALS = 4
OPT_LEVELS = {
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
}

# Called once per batch with the input arrays and the logits onnxruntime returned (used by --verify).
BatchObserver = Callable[[dict[str, np.ndarray], np.ndarray], None]


@dataclass(frozen=True)
class Item:
    """One input line or request text, ready for the model. `encoded` is None for an empty input."""

    tokens: list[str]
    encoded: Encoded | None
    truncated: bool = False

    @property
    def size(self) -> int:
        return len(self.tokens)


def read_model_json(export_dir: Path) -> dict[str, Any]:
    """`EXPORT_DIR/model.json`, checked for the keys serving needs."""
    if not export_dir.is_dir():
        raise ArtifactError(f"{export_dir}: no such export directory (expected the --out of `python -m export`)")
    path = export_dir / "model.json"
    if not path.is_file():
        raise ArtifactError(f"{path}: missing (expected an export directory written by `python -m export`)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: corrupt JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise ArtifactError(f"{path}: expected a JSON object")
    version = meta.get("export_format_version")
    if version != EXPORT_FORMAT_VERSION:
        raise ArtifactError(f"{path}: export_format_version {version!r} is not supported (this build reads {EXPORT_FORMAT_VERSION})")
    missing = [k for k in ("task", "preprocess", "vocab", "onnx", "atol") if k not in meta]
    if missing:
        raise ArtifactError(f"{path}: missing keys {', '.join(missing)}")
    if meta["task"] not in TASKS:
        raise ArtifactError(f"{path}: task must be one of {', '.join(TASKS)}; got {meta['task']!r}")
    return meta


def make_session(path: Path, *, threads: int = 0, optimization: str = "all") -> ort.InferenceSession:
    """An onnxruntime session: CUDA when this onnxruntime build has it, else CPU."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = OPT_LEVELS[optimization]
    options.log_severity_level = 3  # warnings about unused initializers etc. are noise to a user
    # Idle pool threads that spin steal the cores from tokenization, HTTP threads and torch (bench).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers = ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own untyped errors for a corrupt file
        raise ArtifactError(f"{path}: onnxruntime cannot load it ({str(exc).splitlines()[0]})") from None


class ServingModel:
    """An exported model plus its encoder: `prepare` text, `predict` items, `run` raw arrays."""

    def __init__(self, export_dir: Path, *, int8: bool = False, threads: int = 0, optimization: str = "all") -> None:
        if threads < 0:
            raise ConfigError(f"--threads must be 0 (one per core) or a positive integer; got {threads}")
        if optimization not in OPT_LEVELS:
            raise ConfigError(f"optimization must be one of {', '.join(OPT_LEVELS)}; got {optimization!r}")
        self.export_dir = Path(export_dir)
        self.meta = meta = read_model_json(self.export_dir)
        self.task: str = meta["task"]
        source = str(self.export_dir / "model.json")
        try:
            self.vocabs = Vocabs.from_json(meta["vocab"])
            self.preprocess = preprocess_config_from_dict(meta["preprocess"], source=source)
        except ConfigError as exc:
            raise ArtifactError(str(exc)) from None
        except (KeyError, TypeError, ValueError, DataError) as exc:
            raise ArtifactError(f"{source}: malformed vocab ({exc})") from None
        self.encoder = Encoder(self.vocabs, self.preprocess)
        self.labels: list[str] = self.vocabs.labels.itos
        self.atol = float(meta["atol"])
        self.variant = "int8" if int8 else "fp32"
        self.onnx_path, self.onnx_sha256 = self._checked_onnx_file(int8)
        self.session = make_session(self.onnx_path, threads=threads, optimization=optimization)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.providers = self.session.get_providers()
        self._check_inputs()
        self.predict([self.prepare_tokens(["warm", "up"])], 1)  # first run allocates; keep it out of timings

    def _checked_onnx_file(self, int8: bool) -> tuple[Path, str]:
        key = "int8" if int8 else "onnx"
        entry = self.meta.get(key)
        if not isinstance(entry, dict) or "file" not in entry or "sha256" not in entry:
            hint = " (export with --quantize int8)" if int8 else ""
            raise ArtifactError(f"{self.export_dir / 'model.json'}: no {key!r} model recorded{hint}")
        path = self.export_dir / entry["file"]
        if not path.is_file():
            raise ArtifactError(f"{path}: missing (model.json lists it; re-run `python -m export`)")
        actual = sha256_file(path)
        if actual != entry["sha256"]:
            raise ArtifactError(
                f"{path}: sha256 {actual[:12]}... does not match model.json ({str(entry['sha256'])[:12]}...); "
                "the file was changed after export, re-run `python -m export`"
            )
        return path, actual

    def _check_inputs(self) -> None:
        probe = self.encoder.batch([self.encoder.encode(["x"])])
        if set(self.input_names) != set(probe):
            raise ArtifactError(
                f"{self.onnx_path}: inputs {self.input_names} do not match what model.json's vocabularies "
                f"produce ({sorted(probe)})"
            )

    @property
    def max_tokens(self) -> int:
        return self.preprocess.max_tokens

    def prepare_tokens(self, tokens: Sequence[str]) -> Item:
        """Tokens -> Item, truncating past max_tokens (the Item says so)."""
        tokens = list(tokens)
        truncated = len(tokens) > self.max_tokens
        if truncated:
            tokens = self.encoder.truncate(tokens)
        return Item(tokens, self.encoder.encode(tokens) if tokens else None, truncated)

    def prepare_text(self, text: str) -> Item:
        return self.prepare_tokens(tokenize(text))

    def run(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(None, {name: arrays[name] for name in self.input_names})[0]

    def predict(
        self, items: Sequence[Item], batch_size: int, observer: BatchObserver | None = None
    ) -> list[dict[str, Any]]:
        """Results in input order; items sorted by length are run `batch_size` at a time."""
        results: list[dict[str, Any] | None] = [None] * len(items)
        order = sorted((i for i, item in enumerate(items) if item.encoded is not None), key=lambda i: items[i].size)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            arrays = self.encoder.batch([items[i].encoded for i in chunk])
            logits = self.run(arrays)
            if observer is not None:
                observer(arrays, logits)
            for row, i in enumerate(chunk):
                results[i] = self._result(items[i], logits[row])
        for i, item in enumerate(items):
            if item.encoded is None:
                results[i] = self.empty_result()
        return results  # type: ignore[return-value]

    def empty_result(self) -> dict[str, Any]:
        if self.task == "tagger":
            return {"tokens": [], "tags": []}
        return {"label": None, "prob_positive": None}

    def _result(self, item: Item, logits: np.ndarray) -> dict[str, Any]:
        if self.task == "tagger":
            ids = logits[: item.size].argmax(axis=-1)  # (T,); positions past the length are padding
            out: dict[str, Any] = {"tokens": item.tokens, "tags": [self.labels[i] for i in ids]}
        else:
            prob = round(sigmoid(float(logits)), PROB_DECIMALS)
            out = {"label": "positive" if prob >= 0.5 else "negative", "prob_positive": prob}
        if item.truncated:
            out["truncated"] = True
        return out

    def describe(self) -> dict[str, Any]:
        """What `GET /metadata` and `bench` report about the loaded model."""
        return {
            "task": self.task,
            "labels": self.labels,
            "inputs": self.input_names,
            "variant": self.variant,
            "onnx_file": self.onnx_path.name,
            "onnx_sha256": self.onnx_sha256,
            "providers": self.providers,
            "max_tokens": self.max_tokens,
        }


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-min(max(x, -60.0), 60.0)))
