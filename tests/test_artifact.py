"""RUN_DIR/model round-trips, and every way it can be broken gives a one-line ArtifactError."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from trainer.artifact import FORMAT_VERSION, load_artifact, save_artifact
from trainer.config import PreprocessConfig, TaggerConfig
from trainer.errors import ArtifactError
from trainer.models import build_model
from trainer.preprocess import UNIVERSAL_TAGS, Vocab, Vocabs

VOCABS = Vocabs(Vocab(["<pad>", "<unk>", "the", "cat"]), Vocab.labels(UNIVERSAL_TAGS), Vocab(["<pad>", "<unk>", "a"]))
CONFIG = TaggerConfig(word_dim=8, word_hidden=6, char_dim=4, char_hidden=3)


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = build_model(CONFIG, VOCABS)
    save_artifact(tmp_path / "model", model, CONFIG, PreprocessConfig(max_tokens=99), VOCABS, {"task": "tagger"})
    return tmp_path / "model"


def test_round_trip_rebuilds_the_same_model(artifact: Path) -> None:
    loaded = load_artifact(artifact)
    assert loaded.config == CONFIG and loaded.preprocess.max_tokens == 99
    assert loaded.vocabs.to_json() == VOCABS.to_json() and loaded.metrics == {"task": "tagger"}
    torch.manual_seed(0)
    original = build_model(CONFIG, VOCABS).state_dict()
    assert all(torch.equal(original[k], v) for k, v in loaded.model.state_dict().items())
    assert sorted(p.name for p in artifact.iterdir()) == ["config.json", "metrics.json", "model.safetensors", "vocab.json"]
    assert not list(artifact.parent.glob(".model.*")), "temporary directories left behind"


def test_saving_again_replaces_the_artifact_whole(artifact: Path) -> None:
    save_artifact(artifact, build_model(CONFIG, VOCABS), CONFIG, PreprocessConfig(), VOCABS, {"run": 2})
    assert load_artifact(artifact).metrics == {"run": 2}
    assert [p.name for p in artifact.parent.iterdir()] == ["model"]


def break_config_version(path: Path) -> None:
    meta = json.loads((path / "config.json").read_text())
    meta["format_version"] = FORMAT_VERSION + 6
    (path / "config.json").write_text(json.dumps(meta))


def drop_a_weight(path: Path) -> None:
    state = load_file(str(path / "model.safetensors"))
    state.pop("output.bias")
    save_file(state, str(path / "model.safetensors"))


def grow_the_vocab(path: Path) -> None:
    vocab = json.loads((path / "vocab.json").read_text())
    vocab["words"].append("extra")
    (path / "vocab.json").write_text(json.dumps(vocab))


BREAKAGES = {
    "missing dir": (lambda p: p.rename(p.with_name("elsewhere")), "no such model directory"),
    "missing weights": (lambda p: (p / "model.safetensors").unlink(), "model.safetensors: missing"),
    "missing vocab": (lambda p: (p / "vocab.json").unlink(), "vocab.json: missing"),
    "corrupt weights": (lambda p: (p / "model.safetensors").write_bytes(b"\x00garbage"), "corrupt safetensors"),
    "corrupt config": (lambda p: (p / "config.json").write_text("{not json"), "config.json: corrupt JSON"),
    "unknown version": (break_config_version, "format_version 7 is not supported"),
    "unknown key": (
        lambda p: (p / "config.json").write_text(json.dumps({"format_version": 1, "task": "tagger", "model": {"wat": 1}})),
        "unknown config key 'wat'",
    ),
    "missing weight": (drop_a_weight, r"does not match config.json/vocab.json \(missing: output.bias\)"),
    "vocab/weights mismatch": (grow_the_vocab, r"shape mismatch: word_embedding.weight"),
}


@pytest.mark.parametrize("case", BREAKAGES)
def test_broken_artifact_is_a_one_line_error(artifact: Path, case: str) -> None:
    breakage, message = BREAKAGES[case]
    breakage(artifact)
    with pytest.raises(ArtifactError, match=message) as info:
        load_artifact(artifact)
    assert "\n" not in str(info.value)
