"""`EXPORT_DIR/model.json`, read and checked in full before anything it names is opened or used.

An export directory may come from elsewhere (a download, a shared disk), so model.json is treated as
untrusted input: it is read by the strict JSON reader (`trainer.core.jsonio`: no NaN, `1e400`, huge
integer, duplicate key, lone surrogate or deep nesting), every key serving uses is checked for its
type, range and consistency here, and a bad one is a one-line `ArtifactError` naming model.json and
the key (`vocab.labels[3]`, `onnx.file`, ...), never a traceback or a server that starts and then
fails every request.
What can only be checked against the ONNX graph (label count vs the logits, vocabulary sizes vs
the embeddings) is checked by `serve.runtime.ServingModel` when it loads the session.

A file named in model.json (`onnx.file`, `int8.file`) must be a plain file name inside EXPORT_DIR:
no directory separators, not `.` or `..`, and its resolved path must stay inside the directory,
so neither `../other/model.onnx`, an absolute path nor a symlink pointing out is followed.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

from trainer.core.config import LEXICONS, TASKS, PreprocessConfig, field_types
from trainer.core.errors import ArtifactError, DataError
from trainer.core.jsonio import read_file
from trainer.core.lexicon import check_lexicon_json
from trainer.core.preprocess import PAD, UNK
from trainer.core.tasks import task_kind

# 2: the graph carries seqlstm.* metadata_props and the export has test_vectors.json (docs/DESIGN.md).
# 1 (before both) is still read and served; only the checks of what it lacks are skipped.
EXPORT_FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
REQUIRED_KEYS = ("task", "preprocess", "vocab", "onnx", "atol")
REQUIRED_SINCE_2 = ("seqlstm_version", "tokenizer", "test_vectors")
SHA256 = re.compile(r"[0-9a-f]{64}")
# Lower bounds of PreprocessConfig's integer fields: a max_tokens or max_word_len of 0 would empty every input.
PREPROCESS_MIN = {"min_count": 0, "max_tokens": 1, "max_word_len": 1}
# PreprocessConfig fields added after exports existed: absent in an older model.json, they take their default.
PREPROCESS_SINCE = {"lexicon"}


def read_model_json(export_dir: Path) -> dict[str, Any]:
    """`EXPORT_DIR/model.json`, checked in full (see the module docstring)."""
    if not export_dir.exists():
        raise ArtifactError(f"{export_dir}: no such export directory (expected the --out of `python -m export`)")
    if not export_dir.is_dir():
        raise ArtifactError(f"{export_dir}: not a directory (--model takes the export directory, not a file in it)")
    path = export_dir / "model.json"
    if not path.is_file():
        raise ArtifactError(f"{path}: missing (expected an export directory written by `python -m export`)")
    meta = read_file(path, ArtifactError)  # strict: no NaN, 1e400, huge integer, duplicate key or lone surrogate
    if not isinstance(meta, dict):
        raise ArtifactError(f"{path}: expected a JSON object")
    version = meta.get("export_format_version")
    if isinstance(version, bool) or version not in READABLE_VERSIONS:
        raise ArtifactError(
            f"{path}: export_format_version {short(version)} is not supported "
            f"(this build reads {', '.join(map(str, READABLE_VERSIONS))})"
        )
    missing = [k for k in REQUIRED_KEYS + (REQUIRED_SINCE_2 if version >= 2 else ()) if k not in meta]
    if missing:
        raise ArtifactError(f"{path}: missing keys {', '.join(missing)}")
    if meta["task"] not in TASKS:
        raise ArtifactError(f"{path}: task must be one of {', '.join(TASKS)}; got {short(meta['task'])}")
    check_atol(path, meta["atol"])
    check_preprocess(path, meta["preprocess"])
    check_vocab(path, meta["vocab"], meta["task"], meta["preprocess"].get("lexicon", ""))
    if version >= 2:
        check_provenance(path, meta)
        if "file" in meta["tokenizer"]:  # tokenizer.json (trainer.core.portable); older exports have none
            check_file_entry(path, "tokenizer", meta["tokenizer"])
    for key in ("onnx", "int8", "test_vectors"):
        if key in meta:
            check_file_entry(path, key, meta[key])
    return meta


def short(value: Any) -> str:
    """A value for an error message: its repr, cut so that one line stays one short line."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_atol(path: Path, atol: Any) -> None:
    try:
        finite = not isinstance(atol, bool) and isinstance(atol, (int, float)) and math.isfinite(atol)
    except OverflowError:  # an integer beyond a double's range
        finite = False
    if not finite or atol <= 0:
        raise ArtifactError(f"{path}: atol must be a finite number > 0; got {short(atol)}")


def check_provenance(path: Path, meta: dict[str, Any]) -> None:
    """What format 2 copies into the graph's metadata_props besides the vocabularies and preprocessing."""
    if not isinstance(meta["seqlstm_version"], str) or not meta["seqlstm_version"]:
        raise ArtifactError(f"{path}: seqlstm_version must be a non-empty string; got {short(meta['seqlstm_version'])}")
    tokenizer = meta["tokenizer"]
    if (
        not isinstance(tokenizer, dict)
        or not tokenizer
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in tokenizer.items())
    ):
        raise ArtifactError(
            f"{path}: tokenizer must be an object of strings (name, rules, ...); got {short(tokenizer)}"
        )


def check_preprocess(path: Path, data: Any) -> None:
    """Every PreprocessConfig field, present and of its JSON type (no "20" for 20), and no other key."""
    if not isinstance(data, dict):
        raise ArtifactError(f"{path}: preprocess must be an object of PreprocessConfig fields; got {short(data)}")
    kinds = field_types(PreprocessConfig)
    unknown = sorted(set(data) - set(kinds))
    if unknown:
        raise ArtifactError(f"{path}: preprocess has unknown keys {', '.join(unknown)}; known: {', '.join(kinds)}")
    for name, kind in kinds.items():
        if name not in data:
            if name in PREPROCESS_SINCE:
                continue
            raise ArtifactError(f"{path}: preprocess.{name} is missing")
        value = data[name]
        ok = isinstance(value, bool) if kind is bool else isinstance(value, kind) and not isinstance(value, bool)
        if not ok:
            raise ArtifactError(f"{path}: preprocess.{name} must be {kind.__name__}; got {short(value)}")
        if name in PREPROCESS_MIN and value < PREPROCESS_MIN[name]:
            raise ArtifactError(f"{path}: preprocess.{name} must be >= {PREPROCESS_MIN[name]}; got {value}")
    if data.get("lexicon", "") not in LEXICONS:
        raise ArtifactError(f"{path}: preprocess.lexicon must be one of {LEXICONS}; got {short(data['lexicon'])}")


def check_strings(path: Path, key: str, values: Any, *, specials: bool) -> None:
    if not isinstance(values, list) or not values:
        raise ArtifactError(f"{path}: {key} must be a non-empty list of strings; got {short(values)}")
    seen: set[str] = set()
    for i, value in enumerate(values):
        if not isinstance(value, str) or not value:
            raise ArtifactError(f"{path}: {key}[{i}] must be a non-empty string; got {short(value)}")
        if value in seen:
            raise ArtifactError(f"{path}: {key}[{i}] {short(value)} is listed more than once")
        seen.add(value)
    if specials and values[:2] != [PAD, UNK]:
        raise ArtifactError(f"{path}: {key} must start with {PAD!r}, {UNK!r}; got {short(values[:2])}")


def check_vocab(path: Path, vocab: Any, task: str, lexicon: str) -> None:
    if not isinstance(vocab, dict):
        raise ArtifactError(f"{path}: vocab must be an object with words, labels (and chars); got {short(vocab)}")
    unknown = sorted(set(vocab) - {"words", "labels", "chars", "lexicon"})
    if unknown:
        raise ArtifactError(
            f"{path}: vocab has unknown keys {', '.join(unknown)}; known: words, labels, chars, lexicon"
        )
    if ("lexicon" in vocab) != bool(lexicon):
        said = f"names lexicon {lexicon!r}" if lexicon else "names no lexicon"
        raise ArtifactError(f"{path}: preprocess {said}, but vocab {'lacks' if lexicon else 'has'} one")
    if lexicon:
        try:
            check_lexicon_json(vocab["lexicon"], f"{path}: vocab")
        except DataError as exc:
            raise ArtifactError(str(exc)) from None
    for key in ("words", "labels"):
        if key not in vocab:
            raise ArtifactError(f"{path}: vocab.{key} is missing")
    check_strings(path, "vocab.words", vocab["words"], specials=True)
    check_strings(path, "vocab.labels", vocab["labels"], specials=False)
    kind = task_kind(task)
    if vocab.get("chars") is not None:
        if not kind.char_encoder:
            raise ArtifactError(f"{path}: vocab.chars is for a tagger's character encoder; this is a {task} model")
        check_strings(path, "vocab.chars", vocab["chars"], specials=True)
    # Where the order is the logits' meaning (sentiment: one logit, sigmoid = P(label 1)), it is what `predict`
    # reports; a tagger's rows may come in any order, and the graph check counts them.
    if kind.labels_in_order and vocab["labels"] != list(kind.labels):
        raise ArtifactError(
            f"{path}: vocab.labels of a {task} model must be {list(kind.labels)}; got {short(vocab['labels'])}"
        )


def check_file_entry(path: Path, key: str, entry: Any) -> None:
    if not isinstance(entry, dict):
        raise ArtifactError(f"{path}: {key} must be an object with file and sha256; got {short(entry)}")
    for field in ("file", "sha256"):
        if field not in entry:
            raise ArtifactError(f"{path}: {key}.{field} is missing")
    sha = entry["sha256"]
    if not isinstance(sha, str) or not SHA256.fullmatch(sha):
        raise ArtifactError(f"{path}: {key}.sha256 must be 64 lower-case hex digits; got {short(sha)}")
    contained_file(path.parent, entry["file"], f"{path}: {key}.file")


def contained_file(directory: Path, name: Any, where: str) -> Path:
    """`directory / name` for a plain file name whose resolved path stays inside `directory`."""
    if not isinstance(name, str) or name in ("", ".", "..") or "\0" in name:
        raise ArtifactError(f"{where} must be a file name inside the export directory; got {short(name)}")
    separators = {"/", "\\", os.sep, os.altsep} - {None}
    if any(sep in name for sep in separators):
        raise ArtifactError(
            f"{where} must be a plain file name inside the export directory, without directories; got {short(name)}"
        )
    candidate = directory / name
    try:
        resolved, root = candidate.resolve(), directory.resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise ArtifactError(f"{where} {short(name)} cannot be resolved ({exc})") from None
    if root not in resolved.parents:
        raise ArtifactError(
            f"{where} {short(name)} resolves to {resolved}, outside the export directory "
            "(a symlink pointing out is not followed)"
        )
    return candidate
