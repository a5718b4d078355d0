"""The task home (trainer/core/tasks.py, trainer/tasks.py): every stage follows one description per task kind,
so no file may branch on a task's name, and every kind's description must be whole."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from trainer.core.config import MODEL_CONFIGS, TASKS
from trainer.core.errors import ConfigError
from trainer.core.tasks import KINDS, TaskKind, task_kind

REPO = Path(__file__).resolve().parent.parent
# `task == "tagger"`, `model.task !== 'sentiment'`, `== "tagger"`, `in ("tagger", ...)`: a branch on a kind's name.
BRANCH = re.compile(
    r"""task\s*(?:===?|!==?)\s*["']|(?:===?|!==?)\s*["'](?:tagger|sentiment)["']|\bin\s*[(\[{]\s*["'](?:tagger|sentiment)["']"""
)
SCANNED = ("trainer", "export", "serve", "clients/node", "bench")
# Each file allowed to name a kind in a comparison, with why.
ALLOWED = {
    "trainer/core/tasks.py": "the task home itself: it defines the kinds",
    # Benchmarks of one task's figures against that task's peer: they refuse a model of another task.
    "bench/sentiment_accuracy.py": "measures sentiment accuracy against Naive Bayes; refuses a tagger",
    "bench/ngram_grid.py": "tunes sentiment's n-gram head; refuses a tagger",
    "bench/tagger_accuracy.py": "measures tagger accuracy against NLTK's perceptron; refuses a sentiment model",
}


def sources() -> list[Path]:
    found = []
    for top in SCANNED:
        for path in sorted((REPO / top).rglob("*")):
            if path.suffix in (".py", ".js") and "node_modules" not in path.parts and path.is_file():
                found.append(path)
    return found


def test_the_scan_sees_the_tree_and_would_catch_a_stray_branch() -> None:
    names = {p.relative_to(REPO).as_posix() for p in sources()}
    assert {"trainer/loop.py", "export/validate.py", "serve/runtime.py", "clients/node/client.js"} <= names
    for line in ('if task == "tagger":', "if (spec.task === 'tagger') {", 'x = model.task != "sentiment"'):
        assert BRANCH.search(line), line
    assert not BRANCH.search("if kind.per_token:")


def test_no_file_outside_the_task_home_branches_on_a_task_name() -> None:
    stray = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for path in sources()
        if path.relative_to(REPO).as_posix() not in ALLOWED
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if BRANCH.search(line)
    ]
    assert stray == [], "ask the task kind (trainer/core/tasks.py) instead:\n" + "\n".join(stray)


@pytest.mark.parametrize("name", list(KINDS))
def test_every_kind_is_described_whole(name: str) -> None:
    from trainer.tasks import SIDES  # torch: the kind's torch side

    kind = task_kind(name)
    assert isinstance(kind, TaskKind) and kind.name == name
    assert name in SIDES and SIDES[name].kind is kind, "the torch side (trainer/tasks.py) is missing"
    assert name in MODEL_CONFIGS, "the model config (trainer/core/config.py) is missing"
    assert kind.labels and len(set(kind.labels)) == len(kind.labels) and kind.label_set and kind.example
    assert kind.data_unit and "accuracy" in kind.metrics and kind.select_by in kind.metrics
    decoder, labels = kind.decoder, list(kind.labels)
    fields = [f.name for f in decoder.fields]
    assert decoder.label_field in fields and set(decoder.empty()) == set(fields)
    assert all(f.datatype in ("BYTES", "FP32") for f in decoder.fields)
    assert decoder.layout.startswith("(batch") and decoder.axes[0] == "batch"
    post = decoder.postprocess()
    assert post["output"] == "logits" and post["op"] and json.loads(json.dumps(post)) == post
    # A one-token batch's logits decode into a result with exactly the declared fields.
    shape = decoder.probe_shape(len(labels))
    logits = np.linspace(-1.0, 1.0, int(np.prod(shape)), dtype=np.float32).reshape(shape)
    row = logits[0]
    result = decoder.decode(row, labels, ["word"])
    assert set(result) == set(fields)
    assert set(decoder.vector_fields) <= set(fields) and decoder.logits_json(row) is not None
    real = kind.real(np.array([1]), shape)
    assert (real is not None) == kind.per_token
    ids = decoder.label_ids(logits, labels)
    assert all(0 <= int(i) < len(labels) for i in np.ravel(ids))
    assert kind.units([3, 0, 2]) == (5 if kind.per_token else 2)
    assert 1 <= kind.text_lengths[0] <= kind.text_lengths[1] and kind.tokens_input == kind.per_token
    assert kind.labels_problem(labels) is None and kind.labels_problem(labels[:-1]) is not None


def test_the_kinds_are_the_tasks_and_an_unknown_kind_is_one_line() -> None:
    assert tuple(KINDS) == TASKS
    with pytest.raises(ConfigError, match=r"^task must be one of tagger, sentiment; got 'spans'$"):
        task_kind("spans")


def test_the_decoders_decode_as_serve_always_has() -> None:
    tagger, sentiment = KINDS["tagger"].decoder, KINDS["sentiment"].decoder
    logits = np.array([[0.1, 2.0, -1.0], [3.0, 0.0, 0.5]], np.float32)  # (T, labels)
    assert tagger.decode(logits, ["A", "B", "C"], ["x", "y"]) == {"tokens": ["x", "y"], "tags": ["B", "A"]}
    assert sentiment.decode(np.float32(0.0), ["negative", "positive"], []) == {
        "label": "positive",
        "prob_positive": 0.5,
    }
    assert sentiment.decode(np.float32(-2.0), ["negative", "positive"], [])["label"] == "negative"
    assert sentiment.logits_json(np.float32(1.0)) == 1.0 and sentiment.vector_fields == ("prob_positive", "label")
