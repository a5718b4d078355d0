"""model.json is untrusted input: every bad key is a one-line ArtifactError naming model.json and the key.

The table runs `ServingModel` in-process on copies of the shared tiny exports (milliseconds per
case); the last tests drive `serve predict` and `serve http` to show what a user sees.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import TINY_CLASSES, TINY_WORDS, one_line_error, serve

from trainer.core.errors import ArtifactError

TAGGER_WORDS = len(TINY_WORDS) + len(TINY_CLASSES)  # the tiny tagger's vocabulary, its lexicon classes last

Meta = dict[str, Any]
DELETE = object()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def setter(key: str, value: Any) -> Callable[[Meta, Path], None]:
    """Set a dotted key (`vocab.labels`) in model.json; a value of DELETE removes it."""

    def mutate(meta: Meta, export_dir: Path) -> None:
        *parents, last = key.split(".")
        node = meta
        for part in parents:
            node = node[part]
        if value is DELETE:
            del node[last]
        else:
            node[last] = value(node[last]) if callable(value) else value

    return mutate


def outside(kind: str) -> Callable[[Meta, Path], None]:
    """Point onnx.file at a byte-identical copy of model.onnx outside the export (sha256 right)."""

    def mutate(meta: Meta, export_dir: Path) -> None:
        other = export_dir.parent / "other"
        other.mkdir(exist_ok=True)
        shutil.copy(export_dir / "model.onnx", other / "model.onnx")
        if kind == "relative":
            meta["onnx"]["file"] = "../other/model.onnx"
        elif kind == "absolute":
            meta["onnx"]["file"] = str(other / "model.onnx")
        else:
            (export_dir / "linked.onnx").symlink_to(other / "model.onnx")
            meta["onnx"]["file"] = "linked.onnx"
        meta["onnx"]["sha256"] = sha256(other / "model.onnx")

    return mutate


def graph_props(change: dict[str, str | None]) -> Callable[[Meta, Path], None]:
    """Set (or, with None, remove) metadata_props of model.onnx and record its new sha256: a graph from
    another export, which model.json's sha256 alone would accept."""

    def mutate(meta: Meta, export_dir: Path) -> None:
        import onnx

        model = onnx.load(str(export_dir / "model.onnx"))
        props = {p.key: p.value for p in model.metadata_props} | change
        del model.metadata_props[:]
        onnx.helper.set_model_props(model, {k: v for k, v in props.items() if v is not None})
        onnx.save(model, str(export_dir / "model.onnx"))
        meta["onnx"]["sha256"] = sha256(export_dir / "model.onnx")

    return mutate


def swap_words(words: list[str]) -> list[str]:
    return words[:2] + [words[3], words[2]] + words[4:]


# (case, task, mutation, expected part of the message after "model.json: ")
CASES = [
    ("atol a string", "tagger", setter("atol", "abc"), "atol must be a finite number > 0; got 'abc'"),
    ("atol NaN", "tagger", setter("atol", float("nan")), "atol: NaN is not valid JSON (RFC 8259 has no NaN"),
    ("atol Infinity", "tagger", setter("atol", float("inf")), "atol: Infinity is not valid JSON"),
    ("atol zero", "tagger", setter("atol", 0), "atol must be a finite number > 0; got 0"),
    ("atol negative", "tagger", setter("atol", -1e-4), "atol must be a finite number > 0"),
    ("atol a boolean", "tagger", setter("atol", True), "atol must be a finite number > 0; got True"),
    ("vocab null", "tagger", setter("vocab", None), "vocab must be an object"),
    ("vocab a list", "tagger", setter("vocab", []), "vocab must be an object"),
    ("vocab.words missing", "tagger", setter("vocab.words", DELETE), "vocab.words is missing"),
    (
        "vocab.words not strings",
        "tagger",
        setter("vocab.words", lambda w: w + [5]),
        f"vocab.words[{TAGGER_WORDS}] must be a non-empty string",
    ),
    (
        "vocab.words no specials",
        "tagger",
        setter("vocab.words", lambda w: w[2:]),
        "vocab.words must start with '<pad>', '<unk>'",
    ),
    (
        "vocab.words duplicate",
        "tagger",
        setter("vocab.words", lambda w: w + ["cat"]),
        f"vocab.words[{TAGGER_WORDS}] 'cat' is listed more than once",
    ),
    (
        "vocab.words too many",
        "tagger",
        setter("vocab.words", lambda w: w + ["zebra"]),
        f"vocab.words has {TAGGER_WORDS + 1} entries, more than model.onnx's word embedding has rows",
    ),
    (
        "vocab.words cut short",
        "tagger",
        setter("vocab.words", lambda w: w[:-1]),
        f"vocab.words has {TAGGER_WORDS - 1} entries, fewer than model.onnx's word embedding has rows",
    ),
    (
        "vocab.chars too many",
        "tagger",
        setter("vocab.chars", lambda c: c + ["é"]),
        "vocab.chars has 69 entries, more than model.onnx's char embedding",
    ),
    (
        "vocab.chars cut short",
        "tagger",
        setter("vocab.chars", lambda c: c[:-1]),
        "vocab.chars has 67 entries, fewer than",
    ),
    (
        "vocab.chars dropped",
        "tagger",
        setter("vocab.chars", DELETE),
        "(vocab.chars absent) make inputs ['lengths', 'words']",
    ),
    (
        "vocab.labels cut short",
        "tagger",
        setter("vocab.labels", lambda labels: labels[:-1]),
        "vocab.labels has 11 entries, but model.onnx returns 12 logits per token",
    ),
    (
        "vocab.labels too many",
        "tagger",
        setter("vocab.labels", lambda labels: labels + ["EXTRA"]),
        "vocab.labels has 13 entries, but model.onnx returns 12",
    ),
    (
        "vocab.labels a lone surrogate",
        "tagger",
        setter("vocab.labels", lambda labels: labels[:-1] + ["\ud800"]),
        "vocab.labels[11] is not valid Unicode",
    ),
    ("vocab unknown key", "tagger", setter("vocab.extra", []), "vocab has unknown keys extra"),
    (
        "sentiment with 3 labels",
        "sentiment",
        setter("vocab.labels", ["negative", "neutral", "positive"]),
        "vocab.labels of a sentiment model must be ['negative', 'positive']",
    ),
    (
        "sentiment labels swapped",
        "sentiment",
        setter("vocab.labels", ["positive", "negative"]),
        "vocab.labels of a sentiment model must be",
    ),
    (
        "sentiment with chars",
        "sentiment",
        setter("vocab.chars", ["<pad>", "<unk>", "a"]),
        "vocab.chars is for a tagger's character encoder",
    ),
    (
        "task mismatch",
        "sentiment",
        setter("task", "tagger"),
        "task 'tagger' needs logits shaped (batch, time, labels), but model.onnx returns shape (1,)",
    ),
    ("task unknown", "tagger", setter("task", "parser"), "task must be one of"),
    (
        "preprocess not an object",
        "tagger",
        setter("preprocess", 5),
        "preprocess must be an object of PreprocessConfig fields; got 5",
    ),
    (
        "preprocess.max_tokens a string",
        "tagger",
        setter("preprocess.max_tokens", "20"),
        "preprocess.max_tokens must be int; got '20'",
    ),
    (
        "preprocess.max_tokens zero",
        "tagger",
        setter("preprocess.max_tokens", 0),
        "preprocess.max_tokens must be >= 1; got 0",
    ),
    (
        "preprocess.lowercase a string",
        "tagger",
        setter("preprocess.lowercase", "yes"),
        "preprocess.lowercase must be bool",
    ),
    ("preprocess unknown key", "tagger", setter("preprocess.stemming", True), "preprocess has unknown keys stemming"),
    (
        "preprocess key missing",
        "tagger",
        setter("preprocess.max_word_len", DELETE),
        "preprocess.max_word_len is missing",
    ),
    ("onnx not an object", "tagger", setter("onnx", "model.onnx"), "onnx must be an object with file and sha256"),
    ("onnx.sha256 not hex", "tagger", setter("onnx.sha256", 5), "onnx.sha256 must be 64 lower-case hex digits"),
    (
        "onnx.file a number",
        "tagger",
        setter("onnx.file", 5),
        "onnx.file must be a file name inside the export directory; got 5",
    ),
    (
        "onnx.file dot-dot",
        "tagger",
        setter("onnx.file", ".."),
        "onnx.file must be a file name inside the export directory; got '..'",
    ),
    (
        "onnx.file relative path out",
        "tagger",
        outside("relative"),
        "onnx.file must be a plain file name inside the export directory",
    ),
    (
        "onnx.file absolute path",
        "tagger",
        outside("absolute"),
        "onnx.file must be a plain file name inside the export directory",
    ),
    ("onnx.file symlink out", "tagger", outside("symlink"), "onnx.file 'linked.onnx' resolves to"),
    (
        "int8.file path out",
        "tagger",
        setter("int8", {"file": "../x.onnx", "sha256": "0" * 64}),
        "int8.file must be a plain file name",
    ),
    (
        "format version 3",
        "tagger",
        setter("export_format_version", 3),
        "export_format_version 3 is not supported (this build reads 1, 2)",
    ),
    (
        "format version true",
        "tagger",
        setter("export_format_version", True),
        "export_format_version True is not supported",
    ),
    ("test_vectors missing", "tagger", setter("test_vectors", DELETE), "missing keys test_vectors"),
    (
        "test_vectors.file path out",
        "sentiment",
        setter("test_vectors.file", "../v.json"),
        "test_vectors.file must be a plain file name",
    ),
    ("tokenizer missing", "tagger", setter("tokenizer", DELETE), "missing keys tokenizer"),
    ("tokenizer not an object", "tagger", setter("tokenizer", "treebank"), "tokenizer must be an object of strings"),
    (
        "seqlstm_version a number",
        "tagger",
        setter("seqlstm_version", 1),
        "seqlstm_version must be a non-empty string; got 1",
    ),
    # model.json and the graph's metadata_props disagree: what no probe run can see
    (
        "vocab.words two swapped",
        "tagger",
        setter("vocab.words", swap_words),
        "model.onnx metadata_props seqlstm.vocab_sha256 holds '",
    ),
    ("vocab.chars two swapped", "tagger", setter("vocab.chars", swap_words), "seqlstm.vocab_sha256 holds '"),
    (
        "preprocess.lowercase flipped",
        "sentiment",
        setter("preprocess.lowercase", False),
        'seqlstm.normalization holds \'{"lowercase":true,',
    ),
    ("preprocess.max_tokens changed", "tagger", setter("preprocess.max_tokens", 21), "seqlstm.normalization holds"),
    ("tokenizer rules changed", "tagger", setter("tokenizer.rules", "nltk-0.1"), "seqlstm.tokenizer holds"),
    (
        "seqlstm_version changed",
        "sentiment",
        setter("seqlstm_version", "9.9"),
        "seqlstm.version holds '0.1.0', but model.json gives '9.9'",
    ),
    (
        "graph labels differ",
        "tagger",
        graph_props({"seqlstm.labels": '["NOUN"]'}),
        """seqlstm.labels holds '["NOUN"]', but model.json gives '["NOUN","VERB",""",
    ),
    (
        "graph task differs",
        "sentiment",
        graph_props({"seqlstm.task": "tagger"}),
        "model.onnx metadata_props seqlstm.task holds 'tagger', but model.json gives 'sentiment' "
        "(the graph and model.json come from different exports; re-run `python -m export`)",
    ),
    (
        "graph props missing",
        "sentiment",
        graph_props({"seqlstm.pad_id": None}),
        "model.onnx metadata_props seqlstm.pad_id lacks it, but model.json gives '0'",
    ),
    (
        "graph prop unknown",
        "tagger",
        graph_props({"seqlstm.extra": "1"}),
        "seqlstm.extra holds '1', but model.json has no such key",
    ),
]


def damaged_copy(export_dir: Path, tmp_path: Path, mutate: Callable[[Meta, Path], None]) -> Path:
    copy = tmp_path / "export"
    shutil.copytree(export_dir, copy)
    meta = json.loads((copy / "model.json").read_text())
    mutate(meta, copy)
    (copy / "model.json").write_text(json.dumps(meta))  # NaN and Infinity as Python writes them
    return copy


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_model_json_is_a_one_line_artifact_error(runs, tmp_path: Path, case: tuple) -> None:
    from serve.runtime import ServingModel

    _, task, mutate, expected = case
    export_dir = damaged_copy(runs[task][1], tmp_path, mutate)
    with pytest.raises(ArtifactError) as caught:
        ServingModel(export_dir)
    message = str(caught.value)
    assert len(message.splitlines()) == 1, message
    assert message.startswith(f"{export_dir / 'model.json'}: ") and expected in message, message


def test_the_untouched_exports_load(runs) -> None:
    from serve.runtime import ServingModel

    for task, (_, export_dir) in runs.items():
        model = ServingModel(export_dir)
        assert model.task == task and model.predict([model.prepare_text("the cat")], 1)[0]


def test_a_format_1_export_still_loads(runs, tmp_path: Path) -> None:
    """Format 1 (before metadata_props and test vectors) is read as before; the newer checks are skipped."""
    from serve.runtime import ServingModel

    def as_format_1(meta: Meta, export_dir: Path) -> None:
        graph_props({k: None for k in metadata_keys(export_dir)})(meta, export_dir)
        (export_dir / "test_vectors.json").unlink()
        for key in ("test_vectors", "tokenizer"):
            del meta[key]
        meta["export_format_version"] = 1

    export_dir = damaged_copy(runs["sentiment"][1], tmp_path, as_format_1)
    assert metadata_keys(export_dir) == []
    model = ServingModel(export_dir)
    assert model.predict([model.prepare_text("a good film")], 1)[0]["label"] in ("positive", "negative")


def metadata_keys(export_dir: Path) -> list[str]:
    import onnx

    return [p.key for p in onnx.load(str(export_dir / "model.onnx")).metadata_props]


def test_predict_and_http_refuse_a_bad_model_json_at_startup(runs, lines_file: Path, tmp_path: Path) -> None:
    """Before, `serve http` started on labels cut short and answered every request with 500."""
    export_dir = damaged_copy(runs["tagger"][1], tmp_path, setter("vocab.labels", lambda labels: labels[:-1]))
    expected = "model.json: vocab.labels has 11 entries"
    one_line_error(serve("http", "--model", export_dir, "--port", 0, timeout=60), expected)
    out = tmp_path / "out.jsonl"
    one_line_error(serve("predict", "--model", export_dir, "--input", lines_file, "--output", out), expected)
    assert not out.exists()


def test_predict_does_not_follow_onnx_file_out_of_the_export(runs, lines_file: Path, tmp_path: Path) -> None:
    export_dir = damaged_copy(runs["tagger"][1], tmp_path, outside("relative"))
    result = serve("predict", "--model", export_dir, "--input", lines_file, "--output", "-")
    one_line_error(result, "model.json: onnx.file must be a plain file name inside the export directory")
    export_dir = damaged_copy(runs["tagger"][1], tmp_path / "atol", setter("atol", "abc"))
    result = serve("predict", "--model", export_dir, "--input", lines_file, "--output", "-")
    one_line_error(result, "model.json: atol must be a finite number > 0; got 'abc'")
