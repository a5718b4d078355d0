"""The onnxruntime core shared by `predict`, `http` and `bench`: load an export, text -> results.

Imports numpy, onnxruntime and the torch-free `trainer.core.preprocess` / `trainer.core.config` only.
An export directory is read through `model.json` (docs/DESIGN.md), checked in full by
`serve.model_json`: the `Encoder` is rebuilt from the vocabularies and preprocessing config stored
there, never from a corpus, and the ONNX file is refused unless its sha256 matches the one `export`
recorded. On load, the graph's `seqlstm.*` metadata_props must be those model.json gives
(serve.onnx_metadata), and probe batches check model.json against the graph (input names, the logits'
shape against the task and the label count, each vocabulary's size against its embedding), so a
mismatched export fails at startup with one line instead of failing every request later.

Batching: items are sorted by length and run `batch_size` at a time (little padding, so fast), and
results come back in the caller's order. Tags are an argmax and so do not depend on the batch, but
LSTM logits can differ at the 1e-7 level between batch shapes, so `prob_positive` is rounded to
`PROB_DECIMALS` places (trainer/core/tasks.py): that makes the output the same, byte for byte, at any `--batch-size`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from serve.model_json import contained_file, read_model_json
from serve.onnx_metadata import check_metadata_props
from serve.tokenizer_file import check_tokenizer, load_tokenizer
from trainer.core.config import preprocess_config_from_dict
from trainer.core.errors import ArtifactError, ConfigError
from trainer.core.fetch import sha256_file
from trainer.core.preprocess import Encoded, Encoder, Vocabs
from trainer.core.tasks import task_kind

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
        self.meta = meta = read_model_json(self.export_dir)  # checked in full: the lines below cannot fail
        self.model_json = self.export_dir / "model.json"
        self.task: str = meta["task"]
        self.kind = task_kind(self.task)  # what the task's results are (trainer/core/tasks.py)
        self.vocabs = Vocabs.from_json(meta["vocab"])
        self.preprocess = preprocess_config_from_dict(meta["preprocess"], source=str(self.model_json))
        self.tokenizer = load_tokenizer(self.export_dir, meta)  # tokenizer.json: every step from text to ids
        self.encoder = Encoder(self.vocabs, self.preprocess, self.tokenizer)
        self.labels: list[str] = self.vocabs.labels.itos
        self.atol = float(meta["atol"])
        self.variant = "int8" if int8 else "fp32"
        self.onnx_path, self.onnx_sha256 = self._checked_onnx_file(int8)
        self.session = make_session(self.onnx_path, threads=threads, optimization=optimization)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.providers = self.session.get_providers()
        self._check_graph()  # its probe runs also do the first run's allocations, outside any timing
        check_tokenizer(self.export_dir, meta, self.tokenizer)  # after the graph checks (see there)

    def _checked_onnx_file(self, int8: bool) -> tuple[Path, str]:
        key = "int8" if int8 else "onnx"
        entry = self.meta.get(key)
        if entry is None:
            hint = " (export with --quantize int8)" if int8 else ""
            raise ArtifactError(f"{self.model_json}: no {key!r} model recorded{hint}")
        path = contained_file(self.export_dir, entry["file"], f"{self.model_json}: {key}.file")
        if not path.is_file():
            raise ArtifactError(f"{path}: missing (model.json lists it; re-run `python -m export`)")
        actual = sha256_file(path)
        if actual != entry["sha256"]:
            raise ArtifactError(
                f"{path}: sha256 {actual[:12]}... does not match model.json ({entry['sha256'][:12]}...); "
                "the file was changed after export, re-run `python -m export`"
            )
        return path, actual

    def _probe(self, word_id: int = 1, char_id: int = 1) -> dict[str, np.ndarray]:
        """A one-token batch with the given word and character ids (1 = <unk>)."""
        chars = lengths = None
        if self.vocabs.chars is not None:
            chars, lengths = np.array([[char_id]], np.int64), np.array([1], np.int64)
        return self.encoder.batch([Encoded(np.array([word_id], np.int64), chars, lengths)])

    def _check_graph(self) -> None:
        """model.json against the graph: input names, logits shape vs task and labels, vocabulary sizes,
        metadata_props."""
        where, onnx_name = self.model_json, self.onnx_path.name
        probe = self._probe()
        # A graph may leave out `lengths`: the exporter drops an input nothing reads, as in a tagger whose
        # word LSTM is forward-only (padding follows the real tokens, so no state depends on it).
        if set(self.input_names) - set(probe) or set(probe) - set(self.input_names) - {"lengths"}:
            raise ArtifactError(
                f"{where}: its vocabularies (vocab.chars {'set' if self.vocabs.chars else 'absent'}) make inputs "
                f"{sorted(probe)}, but {onnx_name} takes {self.input_names}"
            )
        logits = self.run(probe)
        decoder = self.kind.decoder
        expected = decoder.probe_shape(len(self.labels))
        if logits.ndim != len(expected):
            layout = decoder.layout
            raise ArtifactError(
                f"{where}: task {self.task!r} needs logits shaped {layout}, but {onnx_name} "
                f"returns shape {logits.shape} (task does not match the graph)"
            )
        if logits.shape != expected:
            raise ArtifactError(
                f"{where}: vocab.labels has {len(self.labels)} entries, but {onnx_name} "
                f"returns {logits.shape[-1]} logits per token"
            )
        for name, vocab in (("words", self.vocabs.words), ("chars", self.vocabs.chars)):
            if vocab is not None:
                self._check_vocab_size(name, len(vocab))
        # Last, after the more specific messages above: what the probes cannot see, such as two
        # words swapped in vocab.words (vocab_sha256), or a model.json from another export.
        if self.meta["export_format_version"] >= 2:  # format 1 graphs carry no metadata_props
            check_metadata_props(where, onnx_name, self.meta, self.session.get_modelmeta().custom_metadata_map)

    def _check_vocab_size(self, name: str, size: int) -> None:
        """The embedding must take the vocabulary's last id, and (where that is checked) no more."""
        if not self._accepts(name, size - 1):
            raise ArtifactError(
                f"{self.model_json}: vocab.{name} has {size} entries, more than "
                f"{self.onnx_path.name}'s {name[:-1]} embedding has rows"
            )
        # Only the CPU kernel bounds-checks Gather indices; on CUDA an id past the end is no error.
        if self.providers[0] == "CPUExecutionProvider" and self._accepts(name, size):
            raise ArtifactError(
                f"{self.model_json}: vocab.{name} has {size} entries, fewer than "
                f"{self.onnx_path.name}'s {name[:-1]} embedding has rows (not this model's vocabulary)"
            )

    def _accepts(self, name: str, index: int) -> bool:
        """Whether the graph runs on one token whose word (or character) id is `index`."""
        arrays = self._probe(**{"word_id" if name == "words" else "char_id": index})
        quiet = ort.RunOptions()
        quiet.log_severity_level = 4  # an id out of range is what the probes look for, not news
        try:
            self.session.run(None, self._feeds(arrays), quiet)
        except Exception:  # onnxruntime's untyped errors; here Gather's "indices element out of data bounds"
            return False
        return True

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
        return self.prepare_tokens(self.tokenizer.tokenize(text))

    def _feeds(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {name: arrays[name] for name in self.input_names}

    def run(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(None, self._feeds(arrays))[0]

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
        return result(self.task, self.labels, [], None)

    def _result(self, item: Item, logits: np.ndarray) -> dict[str, Any]:
        return result(self.task, self.labels, item.tokens, logits, item.truncated)

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


def result(
    task: str, labels: Sequence[str], tokens: list[str], logits: np.ndarray | None, truncated: bool = False
) -> dict[str, Any]:
    """One input's result object, as `predict` writes it: `logits` is its row (None for an empty input);
    the task's decoder (trainer/core/tasks.py) says what it holds."""
    decoder = task_kind(task).decoder
    out = decoder.empty() if logits is None else decoder.decode(logits, labels, tokens)
    if truncated:
        out["truncated"] = True
    return out
