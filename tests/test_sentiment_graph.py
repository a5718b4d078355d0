"""The sentiment model's fast graph (export/sentiment_graph.py): one bidirectional LSTM node per layer,
equal to torch and to the plain graph within atol, at any padding, for both poolings, with and without
the n-gram head; a unidirectional model is traced as it is.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from helpers import TINY_WORDS, load_json, run_main

from export import onnx_export
from trainer.artifact import load_artifact, save_artifact
from trainer.core.config import PreprocessConfig, SentimentConfig
from trainer.core.preprocess import Encoder, Vocab, Vocabs
from trainer.core.tasks import SENTIMENT_LABELS
from trainer.models import build_model

REVIEWS = [
    ["the", "movie", "was", "good", "."],
    ["qqq"],
    ["a", "cat", "sat", "on", "the", "mat", "and", "the", "dog", "was", "not", "good", "at", "all", "!"],
]


def lstm_directions(path: Path) -> list[str]:
    nodes = [n for n in onnx.load(str(path)).graph.node if n.op_type == "LSTM"]
    return [next((a.s.decode() for a in n.attribute if a.name == "direction"), "forward") for n in nodes]


def export_both(config: SentimentConfig, root: Path) -> tuple:
    """A random-weight model of `config` (n-gram head weights random too), its encoder, and sessions of its
    fast and plain graphs."""
    vocabs = Vocabs(Vocab(TINY_WORDS), Vocab.labels(SENTIMENT_LABELS))
    torch.manual_seed(2)
    model = build_model(config, vocabs)
    if model.ngram is not None:
        model.ngram.weight.normal_()
    save_artifact(root / "model", model, config, PreprocessConfig(), vocabs, {})
    artifact = load_artifact(root / "model")
    sessions = {}
    for name, table in (("fast", onnx_export.DEFAULT_CHAR_TABLE), ("plain", None)):
        onnx_export.export_onnx(artifact, root / f"{name}.onnx", onnx_export.DEFAULT_OPSET, table)
        sessions[name] = ort.InferenceSession(str(root / f"{name}.onnx"), providers=["CPUExecutionProvider"])
    return artifact, Encoder(artifact.vocabs, artifact.preprocess), sessions


def torch_logits(artifact, arrays: dict[str, np.ndarray]) -> np.ndarray:
    with torch.inference_mode():
        return artifact.model.eval()(**{k: torch.from_numpy(v) for k, v in arrays.items()}).numpy()


CONFIGS = {
    "max-ngram": SentimentConfig(embed_dim=12, hidden=10, layers=2, ngram_buckets=64),
    "last": SentimentConfig(embed_dim=12, hidden=10, layers=2, pooling="last"),
    "one-layer": SentimentConfig(embed_dim=9, hidden=7, layers=1),
    "three-layers-last": SentimentConfig(embed_dim=8, hidden=5, layers=3, pooling="last", ngram_buckets=16),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_the_fast_graph_equals_torch_and_the_plain_graph(name: str, tmp_path: Path) -> None:
    config = CONFIGS[name]
    artifact, encoder, sessions = export_both(config, tmp_path)
    assert lstm_directions(tmp_path / "fast.onnx") == ["bidirectional"] * config.layers
    assert lstm_directions(tmp_path / "plain.onnx") == ["forward"] * (2 * config.layers)
    for batch in (REVIEWS, REVIEWS[:1], REVIEWS[1:2], REVIEWS * 7):  # shapes other than the traced ones
        arrays = encoder.batch([encoder.encode(r) for r in batch])
        fast, plain = (sessions[k].run(None, arrays)[0] for k in ("fast", "plain"))
        assert fast.shape == (len(batch),)
        assert np.abs(fast - torch_logits(artifact, arrays)).max() <= config.atol
        assert np.abs(fast - plain).max() <= 1e-5


@pytest.mark.parametrize("name", ["max-ngram", "last"])
def test_the_fast_graph_is_padding_invariant(name: str, tmp_path: Path) -> None:
    """A review alone and beside a review 40 tokens longer gets the same logit."""
    _, encoder, sessions = export_both(CONFIGS[name], tmp_path)
    longest = REVIEWS[2] * 3
    for review in REVIEWS:
        alone = sessions["fast"].run(None, encoder.batch([encoder.encode(review)]))[0][0]
        batched = sessions["fast"].run(None, encoder.batch([encoder.encode(r) for r in (longest, review)]))[0][1]
        assert abs(alone - batched) <= 1e-5


def test_a_unidirectional_model_is_traced_as_it_is(tmp_path: Path) -> None:
    config = SentimentConfig(embed_dim=8, hidden=6, layers=2, bidirectional=False, pooling="last")
    artifact, encoder, sessions = export_both(config, tmp_path)
    assert lstm_directions(tmp_path / "fast.onnx") == ["forward"] * 2
    assert onnx_export.graph_description(artifact, onnx_export.DEFAULT_CHAR_TABLE) == {"form": "plain"}
    arrays = encoder.batch([encoder.encode(r) for r in REVIEWS])
    assert np.abs(sessions["fast"].run(None, arrays)[0] - torch_logits(artifact, arrays)).max() <= config.atol


@pytest.mark.parametrize(
    ("flags", "graph", "lstms"),
    [([], {"form": "fast"}, ["bidirectional"] * 2), (["--graph", "plain"], {"form": "plain"}, ["forward"] * 4)],
)
def test_export_records_the_graph_form_and_validates(
    tiny_artifact, tmp_path: Path, flags: list, graph: dict, lstms: list
) -> None:
    model = tiny_artifact(tmp_path / "run" / "model", "sentiment")
    result = run_main("export", "--model", model, "--out", tmp_path / "out", *flags, timeout=300)
    assert result.returncode == 0, result.stderr
    assert load_json(tmp_path / "out" / "model.json")["graph"] == graph
    assert lstm_directions(tmp_path / "out" / "model.onnx") == lstms
    report = load_json(tmp_path / "out" / "validation.json")
    assert report["passed"] and report["cases"]
