"""`python -m trainer pretrain` (LSTM and N-gram LMs) and `train --init_embeddings`, by subprocess on small real
data slices; the exported graph of a model started from the LSTM LM keeps parity and padding invariance."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import export
from safetensors.torch import load_file

from trainer.core.config import PreprocessConfig, PretrainConfig, SentimentConfig
from trainer.core.data import open_dataset
from trainer.core.errors import ArtifactError, ConfigError
from trainer.core.preprocess import SENTIMENT_LABELS, Vocab, Vocabs
from trainer.lm import ENCODER_KEYS, BiLanguageModel, copy_layers, next_words
from trainer.models import build_model
from trainer.pretrain import copy_vectors, extend_vocab, load_embeddings, save_embeddings

REPO = Path(__file__).resolve().parents[1]
TINY = ["--embed_dim", "16", "--hidden", "16"]


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "trainer", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    if check and proc.returncode != 0:
        pytest.fail(f"trainer {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="module")
def small(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Brown and Rotten Tomatoes slices as conllu / fasttext specs, and embeddings pretrained on both."""
    out = tmp_path_factory.mktemp("pretrain")
    with (out / "brown.conllu").open("w", encoding="utf-8") as f:
        for _, sentence in zip(range(300), open_dataset("brown", data_dir).examples("train"), strict=False):
            f.writelines(f"{i}\t{w}\t_\tX\t_\t_\t_\t_\t_\t_\n" for i, w in enumerate(sentence.words, 1))
            f.write("\n")
    reviews = open_dataset("rotten-tomatoes", data_dir)
    with (out / "reviews.fasttext").open("w", encoding="utf-8") as f:
        for split, count in (("train", 300), ("dev", 60), ("test", 60)):
            for _, review in zip(range(count), reviews.examples(split), strict=False):
                f.write(f"__label__{2 if review.label == 'positive' else 1} {' '.join(review.text.split())}\n")
    specs = {
        "brown": f"conllu:{out / 'brown.conllu'}",
        "reviews": f"fasttext:{out / 'reviews.fasttext'}",
        "run": str(out / "pre"),
        "dir": str(out),
    }
    run(
        "pretrain",
        "--data",
        f"{specs['brown']}+{specs['reviews']}",
        "--out",
        specs["run"],
        *TINY,
        "--output_words",
        "200",
        "--min_count",
        "1",
        "--epochs",
        "1",
        "--batch_size",
        "64",
        "--threads",
        "1",
    )
    return specs


def test_pretrain_writes_embeddings(small: dict[str, str]) -> None:
    path = Path(small["run"]) / "embeddings"
    words = json.loads((path / "vocab.json").read_text())["words"]
    vectors = load_file(str(path / "embeddings.safetensors"))["embeddings"]
    config = json.loads((path / "config.json").read_text())
    metrics = json.loads((path / "metrics.json").read_text())
    assert words[:2] == ["<pad>", "<unk>"] and vectors.shape == (len(words), 16)
    assert config["task"] == "embeddings" and config["pretrain"]["embed_dim"] == 16
    assert config["pretrain"]["objective"] == "lstm" and config["pretrain"]["batch_size"] == 64
    layers = load_file(str(path / "embeddings.safetensors"))
    for key in ENCODER_KEYS:  # both directions of the first layer, under the sentiment model's names
        assert layers[key].shape == ((64, 16) if "weight" in key else (64,)), key
    assert config["preprocess"]["lowercase"] is True
    assert metrics["held_out"]["tokens"] > 0 and metrics["held_out"]["perplexity"] > 1
    assert "the" in words and "The" not in words  # normalized as the models look words up


def test_sentiment_starts_from_the_pretrained_lm_and_exports(small: dict[str, str], tmp_path: Path) -> None:
    """The embeddings and both directions of the LM's LSTM land in the encoder's first layer (lr 1e-9: the
    weights barely move in 3 steps); the model, trained with word dropout too, exports with parity and
    padding invariance."""
    emb = Path(small["run"]) / "embeddings"
    out = Path(small["dir"]) / "sentiment"
    run(
        "train",
        "--task",
        "sentiment",
        "--data",
        small["reviews"],
        "--out",
        str(out),
        *TINY,
        "--layers",
        "2",
        "--max_steps",
        "3",
        "--lr",
        "1e-9",
        "--warmup_steps",
        "0",
        "--threads",
        "1",
        "--word_dropout",
        "0.25",
        "--init_embeddings",
        str(emb),
    )
    pretrained = json.loads((emb / "vocab.json").read_text())["words"]
    saved = load_file(str(emb / "embeddings.safetensors"))
    words = json.loads((out / "model" / "vocab.json").read_text())["words"]
    weights = load_file(str(out / "model" / "model.safetensors"))
    assert set(pretrained) <= set(words)  # Brown-only words joined the vocabulary
    rows = [(i, pretrained.index(w)) for i, w in enumerate(words) if i > 0 and w in pretrained]
    index, source = map(list, zip(*rows, strict=True))
    assert torch.allclose(weights["embedding.weight"][index], saved["embeddings"][source], atol=1e-5)
    for key in ENCODER_KEYS:
        assert torch.allclose(weights[key], saved[key], atol=1e-5), key
    second = "encoder.forward_layers.1.weight_ih_l0"  # the second layer reads both directions: not pretrained
    assert weights[second].shape == (64, 32)
    report = json.loads((export(out / "model", tmp_path / "export") / "validation.json").read_text())
    assert report["passed"] and {"padding", "parity"} <= {check["kind"] for check in report["cases"]}


def test_extend_vocab_keeps_corpus_ids() -> None:
    vocabs = Vocabs(Vocab(["<pad>", "<unk>", "good", "bad"]), Vocab.labels(SENTIMENT_LABELS))
    pretrained = Vocab(["<pad>", "<unk>", "the", "bad", "film"])
    vectors = torch.arange(5 * 4, dtype=torch.float32).reshape(5, 4)
    extended = extend_vocab(vocabs, pretrained)
    assert extended.words.itos == ["<pad>", "<unk>", "good", "bad", "the", "film"]
    model = build_model(SentimentConfig(embed_dim=4, hidden=4, layers=1), extended)
    assert copy_vectors(model, extended, pretrained, vectors) == 4  # <unk>, bad, the, film; not <pad>, good
    assert torch.equal(model.embedding.weight[[1, 3, 4, 5]], vectors[[1, 3, 2, 4]])
    assert torch.equal(model.embedding.weight[0], torch.zeros(4))


@pytest.mark.parametrize("case", ["missing", "dim", "hidden"])
def test_init_embeddings_errors_are_one_line(small: dict[str, str], case: str) -> None:
    emb = Path(small["run"]) / ("nowhere" if case == "missing" else "embeddings")
    dims = ["--embed_dim", "8"] if case == "dim" else TINY[:2]  # with --hidden 8: the LM's LSTM has 16
    proc = run(
        "train",
        "--task",
        "sentiment",
        "--data",
        small["reviews"],
        "--out",
        f"{small['dir']}/err-{case}",
        *dims,
        "--hidden",
        "8",
        "--layers",
        "1",
        "--max_steps",
        "1",
        "--init_embeddings",
        str(emb),
        check=False,
    )
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    expected = {
        "missing": "no such directory",
        "dim": "vectors have 16 dimensions but the model's embed_dim is 8",
        "hidden": f"--init_embeddings {emb}: pretrained encoder.forward_layers.0.weight_ih_l0 has shape (64, 16), "
        "the model's is (32, 16); pretrain with the model's embed_dim and hidden",
    }[case]
    assert expected in proc.stderr


def test_non_finite_pretrained_vectors_are_refused(tmp_path: Path) -> None:
    vectors = torch.zeros(3, 4)
    vectors[2, 1] = float("nan")
    words = Vocab(["<pad>", "<unk>", "the"])
    save_embeddings(tmp_path / "embeddings", vectors, {}, words, PretrainConfig(embed_dim=4), PreprocessConfig(), {})
    with pytest.raises(ArtifactError, match="embeddings.safetensors holds non-finite values"):
        load_embeddings(tmp_path / "embeddings", 4, "embed_dim", PreprocessConfig())


def lstm_layers(hidden: int, dim: int) -> dict[str, torch.Tensor]:
    return {
        k: torch.ones((4 * hidden, dim if "ih" in k else hidden) if "weight" in k else 4 * hidden) for k in ENCODER_KEYS
    }


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda t: t.update(extra=torch.zeros(2)), "embeddings.safetensors holds unknown tensor 'extra'"),
        (lambda t: t.pop(ENCODER_KEYS[0]), "embeddings.safetensors holds 7 of the 8 LSTM tensors"),
        (lambda t: t[ENCODER_KEYS[-1]].fill_(float("inf")), "embeddings.safetensors holds non-finite values"),
    ],
)
def test_bad_lstm_tensors_are_refused_naming_the_directory(tmp_path: Path, change, expected: str) -> None:
    layers = lstm_layers(3, 4)
    change(layers)
    words = Vocab(["<pad>", "<unk>", "the"])
    path = tmp_path / "embeddings"
    save_embeddings(path, torch.zeros(3, 4), layers, words, PretrainConfig(embed_dim=4), PreprocessConfig(), {})
    with pytest.raises(ArtifactError, match=f"^--init_embeddings {path}: {expected}"):
        load_embeddings(path, 4, "embed_dim", PreprocessConfig())


def test_copy_layers_fills_the_first_layer_and_checks_shapes() -> None:
    vocabs = Vocabs(Vocab(["<pad>", "<unk>", "good"]), Vocab.labels(SENTIMENT_LABELS))
    model = build_model(SentimentConfig(embed_dim=4, hidden=3, layers=2), vocabs)
    layers = {k: torch.randn(v.shape) for k, v in lstm_layers(3, 4).items()}
    second = model.state_dict()["encoder.forward_layers.1.weight_ih_l0"].clone()
    assert copy_layers(model, layers, "here") == list(ENCODER_KEYS)
    for key in ENCODER_KEYS:
        assert torch.equal(model.state_dict()[key], layers[key])
    assert torch.equal(model.state_dict()["encoder.forward_layers.1.weight_ih_l0"], second)
    forward_only = build_model(SentimentConfig(embed_dim=4, hidden=3, layers=1, bidirectional=False), vocabs)
    assert copy_layers(forward_only, layers, "here") == list(ENCODER_KEYS[:4])
    with pytest.raises(
        ConfigError, match=r"^here: pretrained encoder.forward_layers.0.weight_ih_l0 has shape \(12, 4\)"
    ):
        copy_layers(build_model(SentimentConfig(embed_dim=4, hidden=5, layers=1), vocabs), layers, "here")


def test_ngram_objective_writes_embeddings_only(small: dict[str, str]) -> None:
    out = Path(small["dir"]) / "ngram"
    run("pretrain", "--objective", "ngram", "--data", small["reviews"], "--out", str(out), *TINY, "--max_steps", "2")
    path = out / "embeddings"
    assert list(load_file(str(path / "embeddings.safetensors"))) == ["embeddings"]
    config = json.loads((path / "config.json").read_text())["pretrain"]
    assert config["objective"] == "ngram" and config["batch_size"] == 512
    assert json.loads((path / "metrics.json").read_text())["held_out"]["accuracy"] >= 0


def test_lm_targets_are_the_next_word_then_the_end() -> None:
    ids = torch.tensor([[5, 6, 9, 0], [8, 3, 0, 0]])
    target = next_words(ids, torch.tensor([3, 2]), output_words=7)
    assert target.tolist() == [[6, 1, 0, -1], [3, 0, -1, -1]]  # 9 is past the softmax: <unk>; -1: padding


def test_lm_backward_direction_reads_each_sentence_reversed_within_its_length() -> None:
    """With one LSTM in both directions, a batch and the same sentences reversed (padding left in place)
    get the same summed loss only if the backward pass is the forward one over each sentence reversed
    within its length, with its targets; and the padded batch scores as its sentences alone."""
    torch.manual_seed(0)
    model = BiLanguageModel(12, PretrainConfig(embed_dim=8, hidden=8, output_words=12, dropout=0.0)).eval()
    model.backward_lstm = model.forward_lstm
    lengths = torch.tensor([4, 2])
    total, count = model(torch.tensor([[3, 4, 5, 6, 0], [7, 8, 0, 0, 0]]), lengths)
    mirrored, _ = model(torch.tensor([[6, 5, 4, 3, 0], [8, 7, 0, 0, 0]]), lengths)
    assert count.item() == 2 * 6 and torch.allclose(total, mirrored, atol=1e-5)
    alone = sum(model(torch.tensor([s]), torch.tensor([len(s)]))[0] for s in ([3, 4, 5, 6], [7, 8]))
    assert torch.allclose(total, alone, atol=1e-5)  # padding changes nothing
