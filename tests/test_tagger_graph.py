"""The tagger's fast graph (export/tagger_graph.py, export/bilstm.py): frequent words' char states
precomputed into the graph, used exactly where a token spells a row, and one bidirectional LSTM node
per layer; equal to torch and to the plain graph within atol, at any padding.

Uses conftest's `tiny_artifact` (random weights, a 20-word vocabulary): every word of it fits in the
table, so sentences can be made of table words only, of none, or of both.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from helpers import TINY_CHARS, TINY_CLASSES, TINY_WORDS, load_json, run_main
from onnx.reference import ReferenceEvaluator

from export import onnx_export
from export.reference import reference_evaluator
from export.tagger_graph import NO_ROW, TaggerGraph, surfaces
from trainer.artifact import load_artifact, save_artifact
from trainer.core.config import PreprocessConfig, TaggerConfig
from trainer.core.preprocess import Encoder, Vocab, Vocabs
from trainer.core.tasks import UNIVERSAL_TAGS
from trainer.models import build_model

HELD = ["the", "cat", "sat", "on", "The", "mat", ".", "Dog", "good", "movie"]  # in the table (vocab or Capitalized)
NOT_HELD = ["THE", "cAt", "Zebra", "qqq", "Ωmega", "sAT", "movies", "tHe"]  # other casings, unknown words
SENTENCES = {"all-held": HELD, "none-held": NOT_HELD, "mixed": [w for p in zip(HELD, NOT_HELD) for w in p]}


@pytest.fixture(scope="module")
def tagger(tiny_artifact, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The tiny tagger, its encoder, and its fast graph with (`table`) and without (`no-table`) the char table,
    and its plain graph."""
    root = tmp_path_factory.mktemp("char-table")
    artifact = load_artifact(tiny_artifact(root / "run" / "model", "tagger", seed=3))
    encoder = Encoder(artifact.vocabs, artifact.preprocess)
    sessions = {}
    for name, rows in (("table", len(TINY_WORDS)), ("no-table", 0), ("plain", None)):
        path = root / f"{name}.onnx"
        onnx_export.export_onnx(artifact, path, onnx_export.DEFAULT_OPSET, rows)
        sessions[name] = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return {"artifact": artifact, "encoder": encoder, "sessions": sessions, "root": root}


def torch_logits(artifact, arrays: dict[str, np.ndarray]) -> np.ndarray:
    with torch.inference_mode():
        return artifact.model.eval()(**{k: torch.from_numpy(v) for k, v in arrays.items()}).numpy()


def real_diff(a: np.ndarray, b: np.ndarray, lengths: np.ndarray) -> float:
    real = np.arange(a.shape[1])[None, :] < lengths[:, None]
    return float(np.abs(a[real] - b[real]).max())


def test_table_rows_are_the_char_lstm_states_of_their_surface_forms(tagger: dict) -> None:
    artifact, encoder = tagger["artifact"], tagger["encoder"]
    module = TaggerGraph(artifact.model.eval(), encoder, rows=len(TINY_WORDS))
    forms = surfaces(artifact.vocabs, len(TINY_WORDS))
    assert forms[:2] == [None, None] and forms[2] == "the" and forms[len(TINY_WORDS) + 2] == "The"
    lengths = module.table_lengths.numpy()
    assert (lengths[[0, 1, len(TINY_WORDS), len(TINY_WORDS) + 1]] == NO_ROW).all()
    for row in (2, 5, len(TINY_WORDS) + 3, 2 * len(TINY_WORDS) - 1):
        ids = torch.tensor([encoder.char_ids(forms[row])])
        with torch.inference_mode():
            expected = artifact.model.char_states(ids, torch.tensor([ids.shape[1]]))[0]
        assert lengths[row] == ids.shape[1]
        assert torch.allclose(module.table_states[row], expected, atol=1e-6)


@pytest.mark.parametrize("name", list(SENTENCES))
def test_lookup_finds_exactly_the_held_spellings(tagger: dict, name: str) -> None:
    artifact, encoder = tagger["artifact"], tagger["encoder"]
    module = TaggerGraph(artifact.model.eval(), encoder, rows=len(TINY_WORDS))
    arrays = encoder.batch([encoder.encode(SENTENCES[name])])
    words, chars, lengths = (torch.from_numpy(arrays[k]) for k in ("words", "chars", "word_lengths"))
    found, _ = module.lookup(words.reshape(-1), chars.reshape(-1, chars.shape[2]), lengths.reshape(-1))
    expected = [w in HELD for w in SENTENCES[name]]
    assert found.tolist() == expected


@pytest.mark.parametrize("batch", [["all-held"], ["none-held"], ["mixed"], ["all-held", "none-held", "mixed"]])
def test_the_fast_graph_equals_torch_and_the_plain_graph(tagger: dict, batch: list[str]) -> None:
    artifact, encoder, sessions = tagger["artifact"], tagger["encoder"], tagger["sessions"]
    arrays = encoder.batch([encoder.encode(SENTENCES[n]) for n in batch])
    expected = torch_logits(artifact, arrays)
    tabled, untabled, plain = (sessions[k].run(None, arrays)[0] for k in ("table", "no-table", "plain"))
    for got in (tabled, untabled, plain):
        assert real_diff(got, expected, arrays["lengths"]) <= artifact.config.atol
    assert real_diff(tabled, plain, arrays["lengths"]) <= 1e-5


@pytest.mark.parametrize("graph", ["table", "no-table"])
def test_the_fast_graph_is_padding_invariant_at_other_shapes(tagger: dict, graph: str) -> None:
    """Alone, and beside longer sentences with longer words, and with chars padded past max_word_len."""
    encoder, session = tagger["encoder"], tagger["sessions"][graph]
    long = ["x" * 40] + HELD + NOT_HELD  # max_tokens is 20 here: the long word comes first
    for name, sentence in SENTENCES.items():
        alone = session.run(None, encoder.batch([encoder.encode(sentence)]))[0][0, : len(sentence)]
        together = encoder.batch([encoder.encode(t) for t in (long, sentence, NOT_HELD[:2])])
        batched = session.run(None, together)[0][1, : len(sentence)]
        assert np.abs(alone - batched).max() <= 1e-5, name
        assert together["chars"].shape[2] == encoder.config.max_word_len
        wide = dict(together, chars=np.pad(together["chars"], ((0, 0), (0, 0), (0, 12))))  # W = max_word_len + 12
        assert np.abs(session.run(None, wide)[0][1, : len(sentence)] - batched).max() <= 1e-5, name


@pytest.mark.parametrize(
    ("flags", "graph", "lstms"),
    [
        # 25,000 cut to the vocabulary, whose lexicon classes take rows that never match
        ([], {"form": "fast", "char_table_words": len(TINY_WORDS) + len(TINY_CLASSES)}, ["bidirectional"] * 2),
        (["--char-table", "0"], {"form": "fast", "char_table_words": 0}, ["bidirectional"] * 2),
        (["--graph", "plain"], {"form": "plain"}, ["forward"] * 4),
    ],
)
def test_export_records_the_graph_form(tiny_artifact, tmp_path: Path, flags: list, graph: dict, lstms: list) -> None:
    model = tiny_artifact(tmp_path / "run" / "model", "tagger")
    result = run_main("export", "--model", model, "--out", tmp_path / "out", *flags, timeout=300)
    assert result.returncode == 0, result.stderr
    assert load_json(tmp_path / "out" / "model.json")["graph"] == graph
    onnx_graph = onnx.load(str(tmp_path / "out" / "model.onnx")).graph
    directions = [
        next((a.s.decode() for a in node.attribute if a.name == "direction"), "forward")
        for node in onnx_graph.node
        if node.op_type == "LSTM"
    ]
    assert directions == lstms
    assert ("table_states" in {i.name for i in onnx_graph.initializer}) == bool(graph.get("char_table_words"))
    assert load_json(tmp_path / "out" / "validation.json")["passed"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--char-table", "-1"], "error: --char-table must be in [0, 2147483647]; got -1"),
        (
            ["--graph", "plain", "--char-table", "5"],
            "error: --char-table sizes the fast graph's table; --graph plain has none",
        ),
    ],
)
def test_bad_graph_flags_are_one_line_exit_2(tiny_artifact, tmp_path: Path, flags: list, message: str) -> None:
    model = tiny_artifact(tmp_path / "run" / "model", "tagger")
    result = run_main("export", "--model", model, "--out", tmp_path / "out", *flags)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [message]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "config",
    [
        TaggerConfig(word_dim=12, word_hidden=10, char_dim=6, char_hidden=5, layers=2),
        TaggerConfig(word_dim=12, word_hidden=10, char_dim=6, char_hidden=5, layers=2, bidirectional=False),
    ],
    ids=["two-bidirectional-layers", "unidirectional-word-lstm"],
)
def test_other_shapes_of_tagger_export_fast_and_equal_torch(config: TaggerConfig, tmp_path: Path) -> None:
    """Stacked one-node BiLSTM layers, and a forward-only word LSTM (traced as it is, the char LSTM as one node)."""
    vocabs = Vocabs(Vocab(TINY_WORDS), Vocab.labels(UNIVERSAL_TAGS), Vocab(TINY_CHARS))
    torch.manual_seed(1)
    save_artifact(tmp_path / "model", build_model(config, vocabs), config, PreprocessConfig(), vocabs, {})
    artifact = load_artifact(tmp_path / "model")
    onnx_export.export_onnx(artifact, tmp_path / "model.onnx", onnx_export.DEFAULT_OPSET, len(TINY_WORDS))
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    encoder = Encoder(artifact.vocabs, artifact.preprocess)
    arrays = encoder.batch([encoder.encode(s) for s in SENTENCES.values()])
    # A forward-only word LSTM never reads `lengths`, and the exporter drops an unused input (as it does for
    # the plain graph of such a model), so only the inputs the graph takes are fed.
    feeds = {i.name: arrays[i.name] for i in session.get_inputs()}
    assert real_diff(session.run(None, feeds)[0], torch_logits(artifact, arrays), arrays["lengths"]) <= config.atol
    lstms = [n for n in onnx.load(str(tmp_path / "model.onnx")).graph.node if n.op_type == "LSTM"]
    directions = [next((a.s.decode() for a in n.attribute if a.name == "direction"), "forward") for n in lstms]
    expected = ["bidirectional"] * 3 if config.bidirectional else ["bidirectional", "forward", "forward"]
    assert sorted(directions) == sorted(expected)  # the char node, then one per word layer (or two forward ones)


def test_the_reference_lstm_needs_sequence_lens_and_ours_applies_it(tagger: dict) -> None:
    """onnx's own evaluator misreads the fast graph (it ignores sequence_lens); export.reference agrees with
    onnxruntime."""
    encoder, path = tagger["encoder"], tagger["root"] / "table.onnx"
    arrays = encoder.batch([encoder.encode(SENTENCES["mixed"]), encoder.encode(NOT_HELD[:3])])
    expected = tagger["sessions"]["table"].run(None, arrays)[0]
    assert real_diff(reference_evaluator(path).run(None, arrays)[0], expected, arrays["lengths"]) <= 1e-5
    assert real_diff(ReferenceEvaluator(str(path)).run(None, arrays)[0], expected, arrays["lengths"]) > 1e-3


@pytest.mark.parametrize("rows", [0, 1, 2, 5, len(TINY_WORDS) + 3])
def test_surfaces_are_two_spellings_per_row_and_none_for_the_specials(rows: int) -> None:
    vocabs = Vocabs(Vocab(TINY_WORDS), Vocab.labels(UNIVERSAL_TAGS), Vocab(TINY_CHARS))
    forms = surfaces(vocabs, rows)
    assert len(forms) == 2 * rows
    words = [None, None] + TINY_WORDS[2:]
    assert forms[:rows] == (words + [None] * rows)[:rows]
    assert forms[rows:] == [w.capitalize() if w else None for w in forms[:rows]]


def test_a_forward_only_tagger_exports_and_serves(tmp_path: Path) -> None:
    """Its graph takes no `lengths` (nothing reads it, and the exporter drops unused inputs); `serve` feeds
    what the graph takes, and tags as torch does."""
    from serve.runtime import ServingModel

    config = TaggerConfig(word_dim=12, word_hidden=10, char_dim=6, char_hidden=5, bidirectional=False)
    vocabs = Vocabs(Vocab(TINY_WORDS), Vocab.labels(UNIVERSAL_TAGS), Vocab(TINY_CHARS))
    torch.manual_seed(2)
    model = tmp_path / "run" / "model"
    save_artifact(model, build_model(config, vocabs), config, PreprocessConfig(), vocabs, {})
    result = run_main("export", "--model", model, "--out", tmp_path / "out", timeout=300)
    assert result.returncode == 0, result.stderr
    served = ServingModel(tmp_path / "out")
    assert "lengths" not in served.input_names
    sentences = list(SENTENCES.values())
    results = served.predict([served.prepare_tokens(s) for s in sentences], batch_size=4)
    artifact = load_artifact(model)
    encoder = Encoder(artifact.vocabs, artifact.preprocess)
    arrays = encoder.batch([encoder.encode(s) for s in sentences])
    expected = torch_logits(artifact, arrays).argmax(-1)
    for row, (sentence, got) in enumerate(zip(sentences, results)):
        assert got["tags"] == [UNIVERSAL_TAGS[i] for i in expected[row, : len(sentence)]], sentence
