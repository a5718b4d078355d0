"""Exports outside Python: the graph's `seqlstm.*` metadata_props and test_vectors.json.

On conftest's `runs` (tiny random-weight exports without --data, one per task); the corpus exports
with --data are checked in test_export.py, the Node.js client in test_node_client.py.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers import TINY_MAX_TOKENS, TINY_WORDS, load_json
from onnx import TensorProto, helper, numpy_helper

from export.onnx_export import set_metadata
from export.vectors import CRAFTED_TEXTS
from serve.runtime import ServingModel
from trainer import __version__
from trainer.core.lexicon import Lexicon
from trainer.core.preprocess import UNK_ID

KEYS = {
    "task",
    "labels",
    "pad_id",
    "unk_id",
    "inputs",
    "postprocess",
    "tokenizer",
    "normalization",
    "vocab_sha256",
    "export_format_version",
    "version",
}
CRAFTED = ["one-token", "unknown-words", "long-words", "case-and-digits", "max-tokens", "over-max-tokens"]
CRAFTED += [*CRAFTED_TEXTS, "unicode-digits", "very-long-word", "very-long-line"]


def props(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


@pytest.mark.parametrize("task", ["tagger", "sentiment"])
def test_the_graph_describes_itself_in_metadata_props(task: str, runs: dict) -> None:
    export_dir = runs[task][1]
    meta, found = load_json(export_dir / "model.json"), props(export_dir / "model.onnx")
    assert set(found) == {f"seqlstm.{k}" for k in KEYS}
    # What a Java or C# user reads through their onnxruntime's model metadata, as serving does.
    session = ort.InferenceSession(str(export_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    assert {k: v for k, v in session.get_modelmeta().custom_metadata_map.items() if k.startswith("seqlstm.")} == found
    value = {k.removeprefix("seqlstm."): v for k, v in found.items()}
    assert value["task"] == task and value["version"] == __version__ and value["export_format_version"] == "2"
    assert json.loads(value["labels"]) == meta["vocab"]["labels"]
    assert (value["pad_id"], value["unk_id"]) == ("0", "1") and meta["vocab"]["words"][:2] == ["<pad>", "<unk>"]
    inputs = json.loads(value["inputs"])
    assert list(inputs) == [i["name"] for i in meta["inputs"]] == [i.name for i in session.get_inputs()]
    assert all("int64" in meaning for meaning in inputs.values())
    postprocess = json.loads(value["postprocess"])
    if task == "tagger":
        assert postprocess["op"] == "argmax" and postprocess["axis"] == -1
    else:
        assert (postprocess["op"], postprocess["round"], postprocess["threshold"]) == ("sigmoid", 4, 0.5)
    assert json.loads(value["tokenizer"]) == meta["tokenizer"]
    assert meta["tokenizer"]["name"] == "nltk-treebank-word" and meta["tokenizer"]["rules"].startswith("nltk-3.")
    assert json.loads(value["normalization"]) == {
        "lowercase": True,
        "digits_to_zero": True,
        "max_tokens": TINY_MAX_TOKENS,
        "max_word_len": 30,
        **({"lexicon": "wordnet"} if task == "tagger" else {}),  # only where set: older graphs keep their props
    }
    canonical = json.dumps(meta["vocab"], sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    assert value["vocab_sha256"] == hashlib.sha256(canonical.encode()).hexdigest()


@pytest.mark.parametrize("task", ["tagger", "sentiment"])
def test_test_vectors_cover_every_stage_and_the_edge_cases(task: str, runs: dict) -> None:
    export_dir = runs[task][1]
    meta, doc = load_json(export_dir / "model.json"), load_json(export_dir / "test_vectors.json")
    assert meta["test_vectors"]["sha256"] == hashlib.sha256((export_dir / "test_vectors.json").read_bytes()).hexdigest()
    assert doc["onnx_sha256"] == meta["onnx"]["sha256"] and doc["atol"] == meta["atol"] and doc["task"] == task
    assert doc["data"] == {"used": False}
    vectors = {v["name"]: v for v in doc["vectors"]}
    assert list(vectors) == [f"sample-{i}" for i in range(7)] + CRAFTED
    words = meta["vocab"]["words"]
    lexicon = Lexicon.from_json(meta["vocab"]["lexicon"]) if task == "tagger" else None

    def word_id(word: str) -> int:  # docs/DESIGN.md: its own id, else its lexicon class's, else <unk>'s
        token = lexicon.class_token(word) if lexicon else None
        return words.index(word) if word in words else words.index(token) if token in words else UNK_ID

    classed = 0
    for v in vectors.values():
        n = len(v["word_ids"])
        if not v["tokens"]:  # empty and whitespace-only text: answered without the model
            empty = {"tokens": [], "tags": []} if task == "tagger" else {"label": None, "prob_positive": None}
            assert v["logits"] is None and v["output"] == empty and v["words"] == []
            continue
        result = {"tokens": v["tokens"][:n], "tags": v["tags"]} if task == "tagger" else {}
        result = result or {"label": v["label"], "prob_positive": v["prob_positive"]}
        assert v["output"] == {**result, **({"truncated": True} if v["truncated"] else {})}
        assert len(v["words"]) == n == min(len(v["tokens"]), TINY_MAX_TOKENS) and v["truncated"] == (
            n < len(v["tokens"])
        )
        assert v["word_ids"] == [word_id(w) for w in v["words"]]
        classed += sum(i >= len(TINY_WORDS) for i in v["word_ids"])
        if task == "tagger":
            assert np.shape(v["logits"]) == (n, 12) and len(v["tags"]) == n and len(v["chars"]) == n
            assert v["word_lengths"] == [min(len(t), 30) for t in v["tokens"][:n]]
            assert v["tags"] == [meta["vocab"]["labels"][i] for i in np.argmax(v["logits"], axis=1)]
        else:
            assert isinstance(v["logits"], float) and v["prob_positive"] == round(1 / (1 + np.exp(-v["logits"])), 4)
            assert v["label"] == ("positive" if v["prob_positive"] >= 0.5 else "negative")
    assert (classed > 0) == (task == "tagger")  # unknown words that take a lexicon class are among them
    assert vectors["one-token"]["tokens"] == ["Yes"]
    assert len(vectors["max-tokens"]["tokens"]) == TINY_MAX_TOKENS and not vectors["max-tokens"]["truncated"]
    assert len(vectors["over-max-tokens"]["tokens"]) == TINY_MAX_TOKENS + 3 and vectors["over-max-tokens"]["truncated"]
    unknown = vectors["unknown-words"]["word_ids"][1:-2]  # 6 words no lexicon knows, then the tagger's classed ones
    assert unknown[:6] == [UNK_ID] * 6 and len(unknown) == (9 if task == "tagger" else 6)
    assert all(i >= len(TINY_WORDS) for i in unknown[6:])  # "ending", "endings", "word": each its class's id
    assert "<url>" in vectors["sample-6"]["tokens"]
    assert {"i̇stanbul", "οδυσσευς", "00", "0,000.00", "0000"} <= set(vectors["case-and-digits"]["words"])
    long_word = vectors["long-words"]["tokens"][1]
    assert len(long_word) == 45 and vectors["long-words"]["words"][1] == long_word.lower()
    if task == "tagger":
        assert vectors["long-words"]["word_lengths"][1] == 30 and len(vectors["long-words"]["chars"][1]) == 30
        assert UNK_ID in vectors["unknown-words"]["chars"][1]  # 'Ω' is no character the vocabulary has


@pytest.mark.parametrize("task", ["tagger", "sentiment"])
def test_serving_reproduces_the_vectors_at_any_batch(task: str, runs: dict) -> None:
    """The vectors are what `serve predict` computes: same tokens, ids, results; logits batched within atol."""
    model = ServingModel(runs[task][1])
    vectors = load_json(runs[task][1] / "test_vectors.json")["vectors"]
    items = [
        model.prepare_text(v["text"]) if v["text"] is not None else model.prepare_tokens(v["tokens"]) for v in vectors
    ]
    for v, item in zip(vectors, items):
        assert item.tokens == v["tokens"][: len(v["word_ids"])] and item.truncated == v["truncated"]
        assert (item.encoded.words.tolist() if item.encoded else []) == v["word_ids"]
    results = model.predict(items, batch_size=5)
    for v, result in zip(vectors, results):
        assert result == v["output"], v["name"]
    ran = [(v, item) for v, item in zip(vectors, items) if item.encoded is not None]
    logits = model.run(model.encoder.batch([item.encoded for _, item in ran]))  # one batch of all lengths
    for row, (v, _) in zip(logits, ran):
        got = row[: len(v["word_ids"])] if task == "tagger" else row
        assert np.abs(got - np.array(v["logits"])).max() <= model.atol, v["name"]


def test_validation_records_each_vector_and_the_metadata(runs: dict) -> None:
    for _, export_dir in runs.values():
        report = load_json(export_dir / "validation.json")
        vectors = load_json(export_dir / "test_vectors.json")["vectors"]
        assert report["test_vectors"] == [v["name"] for v in vectors]
        checked = [c for c in report["cases"] if c["kind"] == "vectors"]
        ran = [f"vector-{v['name']}" for v in vectors if v["tokens"]]  # an empty input has no logits to compare
        assert [c["name"] for c in checked] == ran and all(c["passed"] for c in checked)
        assert len(ran) == len(vectors) - 2
        metadata = [c for c in report["cases"] if c["kind"] == "metadata"]
        assert metadata == [
            {
                "name": "metadata-model.onnx",
                "kind": "metadata",
                "passed": True,
                "keys": sorted(f"seqlstm.{k}" for k in KEYS),
            }
        ]


def test_set_metadata_keeps_external_data_external(tmp_path: Path) -> None:
    """A graph whose weights torch wrote beside it (over 2 GB) keeps them there when the props are set."""
    weight = np.arange(12, dtype=np.float32).reshape(4, 3)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path), save_as_external_data=True, location="model.onnx.data", size_threshold=0)
    data_before = (tmp_path / "model.onnx.data").read_bytes()
    set_metadata(path, {"seqlstm.task": "tagger"})
    assert (tmp_path / "model.onnx.data").read_bytes() == data_before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.onnx.data"]
    assert path.stat().st_size < len(data_before) + 200  # the weights were not inlined
    assert props(path) == {"seqlstm.task": "tagger"}
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.ones((1, 4), np.float32)
    assert np.array_equal(session.run(None, {"x": x})[0], x @ weight)
