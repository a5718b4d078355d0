"""RUN_DIR/model round-trips, and every way it can be broken gives a one-line ArtifactError."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

import trainer.artifact
from trainer.artifact import FORMAT_VERSION, load_artifact, replace_dir, save_artifact, write_json
from trainer.core.config import PreprocessConfig, SentimentConfig, TaggerConfig
from trainer.core.errors import ArtifactError, WriteError
from trainer.core.preprocess import Vocab, Vocabs
from trainer.core.tasks import SENTIMENT_LABELS, UNIVERSAL_TAGS
from trainer.models import build_model

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
    assert sorted(p.name for p in artifact.iterdir()) == [
        "config.json",
        "metrics.json",
        "model.safetensors",
        "vocab.json",
    ]
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


def edit_json(name: str, change: Callable[[Any], Any]) -> Callable[[Path], None]:
    """A breakage that edits one JSON file of the artifact in place (`change`'s return value is ignored)."""

    def breakage(path: Path) -> None:
        data = json.loads((path / name).read_text())
        change(data)
        (path / name).write_text(json.dumps(data))

    return breakage


def replace_json(name: str, data: Any) -> Callable[[Path], None]:
    return lambda path: (path / name).write_text(json.dumps(data))


def set_model_key(key: str, value: Any) -> Callable[[Path], None]:
    return edit_json("config.json", lambda meta: meta["model"].__setitem__(key, value))


def poison_weight(value: float) -> Callable[[Path], None]:
    def breakage(path: Path) -> None:
        state = load_file(str(path / "model.safetensors"))
        state["output.weight"][0, 0] = value
        save_file(state, str(path / "model.safetensors"))

    return breakage


BREAKAGES = {
    "missing dir": (lambda p: p.rename(p.with_name("elsewhere")), "no such model directory"),
    "missing weights": (lambda p: (p / "model.safetensors").unlink(), "model.safetensors: missing"),
    "missing vocab": (lambda p: (p / "vocab.json").unlink(), "vocab.json: missing"),
    "corrupt weights": (lambda p: (p / "model.safetensors").write_bytes(b"\x00garbage"), "corrupt safetensors"),
    "corrupt config": (lambda p: (p / "config.json").write_text("{not json"), "config.json: corrupt JSON"),
    "unknown version": (break_config_version, "format_version 7 is not supported"),
    "version true": (
        edit_json("config.json", lambda m: m.__setitem__("format_version", True)),
        "format_version True is not supported",
    ),
    "unknown key": (set_model_key("wat", 1), "unknown config key 'wat'"),
    "missing weight": (drop_a_weight, r"does not match config.json/vocab.json \(missing: output.bias\)"),
    "vocab/weights mismatch": (grow_the_vocab, r"shape mismatch: word_embedding.weight"),
    # config.json: every value checked as the command line's are, before torch sees it
    "zero layers": (set_model_key("layers", 0), r"config.json, key 'model': config key 'layers' must be in \[1, "),
    "negative word_dim": (set_model_key("word_dim", -5), r"config key 'word_dim' must be in \[1, \d+\]; got -5"),
    "dropout 2": (set_model_key("dropout", 2), r"config key 'dropout' must be in \[0, 1\); got 2"),
    "NaN atol": (set_model_key("atol", float("nan")), r"config.json: model.atol: NaN is not valid JSON"),
    "huge hidden": (set_model_key("word_hidden", 10**9), r"config key 'word_hidden' must be in \[1, 65536\]"),
    # allowed, but 68 GB of weights that the file does not hold: compared before anything is allocated
    "large hidden": (set_model_key("word_hidden", 65536), "shape mismatch: "),
    "bad max_tokens": (
        edit_json("config.json", lambda m: m["preprocess"].__setitem__("max_tokens", 0)),
        r"key 'preprocess': config key 'max_tokens' must be in \[1, ",
    ),
    "config not an object": (replace_json("config.json", []), "config.json: expected a JSON object; got list"),
    "model not an object": (
        edit_json("config.json", lambda m: m.__setitem__("model", [])),
        "config.json, key 'model': expected a JSON object of config keys; got list",
    ),
    "task missing": (edit_json("config.json", lambda m: m.pop("task")), "config.json: key 'task' is missing"),
    "task unknown": (
        edit_json("config.json", lambda m: m.__setitem__("task", ["tagger"])),
        "config.json: key 'task' must be one of tagger, sentiment; got \\['tagger'\\]",
    ),
    "extra top-level key": (
        edit_json("config.json", lambda m: m.__setitem__("data", "fasttext:/etc/passwd")),
        "config.json: unknown key 'data'",
    ),
    # vocab.json
    "vocab a list": (replace_json("vocab.json", []), "vocab.json: expected a JSON object; got list"),
    "vocab entry not a string": (
        edit_json("vocab.json", lambda v: v["words"].append(5)),
        "vocab.json: key 'words' must be a list of strings",
    ),
    "vocab entry a list": (
        edit_json("vocab.json", lambda v: v["chars"].append(["x"])),
        "vocab.json: key 'chars' must be a list of strings",
    ),
    "vocab no specials": (edit_json("vocab.json", lambda v: v["words"].pop(0)), "key 'words' must start with '<pad>'"),
    "vocab duplicates": (edit_json("vocab.json", lambda v: v["words"].append("the")), "key 'words' has duplicate"),
    "chars missing": (edit_json("vocab.json", lambda v: v.pop("chars")), "vocab.json: key 'chars' is missing"),
    "multi-char chars": (edit_json("vocab.json", lambda v: v["chars"].append("ab")), "single characters"),
    "labels short": (edit_json("vocab.json", lambda v: v["labels"].pop()), "must hold the 12 universal tags"),
    "labels renamed": (edit_json("vocab.json", lambda v: v["labels"].__setitem__(0, "N")), "must hold the 12"),
    # weights
    "NaN weight": (poison_weight(float("nan")), "tensor 'output.weight' holds non-finite values"),
    "inf weight": (poison_weight(float("inf")), "tensor 'output.weight' holds non-finite values"),
}


@pytest.mark.parametrize("case", BREAKAGES)
def test_broken_artifact_is_a_one_line_error(artifact: Path, case: str) -> None:
    breakage, message = BREAKAGES[case]
    breakage(artifact)
    with pytest.raises(ArtifactError, match=message) as info:
        load_artifact(artifact)
    assert "\n" not in str(info.value)


def test_sentiment_labels_must_be_the_bce_order(tmp_path: Path) -> None:
    vocabs = Vocabs(Vocab(["<pad>", "<unk>", "good"]), Vocab.labels(SENTIMENT_LABELS))
    config = SentimentConfig(embed_dim=4, hidden=3, layers=1)
    save_artifact(tmp_path / "model", build_model(config, vocabs), config, PreprocessConfig(), vocabs)
    edit_json("vocab.json", lambda v: v["labels"].reverse())(tmp_path / "model")
    with pytest.raises(ArtifactError, match=r"key 'labels' must be \['negative', 'positive'\] for a sentiment model"):
        load_artifact(tmp_path / "model")


@pytest.mark.parametrize("garbage", ["{not json", "[1, 2]", "\udcff"])
def test_garbage_metrics_json_is_ignored_with_a_warning(
    artifact: Path, garbage: str, capsys: pytest.CaptureFixture
) -> None:
    (artifact / "metrics.json").write_bytes(garbage.encode("utf-8", "surrogateescape"))
    loaded = load_artifact(artifact)
    assert loaded.metrics == {} and loaded.config == CONFIG
    warning = capsys.readouterr().err
    assert warning.startswith(f"warning: {artifact / 'metrics.json'}: ") and warning.count("\n") == 1


def test_non_finite_weights_are_not_saved(tmp_path: Path) -> None:
    model = build_model(CONFIG, VOCABS)
    with torch.no_grad():
        model.output.bias[0] = float("nan")
    with pytest.raises(ArtifactError, match="not written: tensor 'output.bias' holds non-finite values"):
        save_artifact(tmp_path / "model", model, CONFIG, PreprocessConfig(), VOCABS)
    assert list(tmp_path.iterdir()) == []


def snapshot(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


@pytest.mark.parametrize("fault", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()])
@pytest.mark.parametrize("where", ["save_file", "write_json"])
def test_a_failed_save_keeps_the_previous_artifact_and_no_temporaries(
    artifact: Path, monkeypatch: pytest.MonkeyPatch, where: str, fault: BaseException
) -> None:
    before = snapshot(artifact)

    def broken(*args: Any, **kwargs: Any) -> None:
        raise fault

    monkeypatch.setattr(trainer.artifact, where, broken)
    named = isinstance(fault, OSError) and where == "save_file"  # safetensors' errors become WriteErrors naming it
    with pytest.raises(WriteError if named else type(fault)):
        save_artifact(artifact, build_model(CONFIG, VOCABS), CONFIG, PreprocessConfig(), VOCABS, {"run": 2})
    assert snapshot(artifact) == before
    assert [p.name for p in artifact.parent.iterdir()] == ["model"]


def test_replace_dir_puts_the_old_directory_back_when_the_final_rename_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    final, new = tmp_path / "final", tmp_path / "new"
    final.mkdir()
    (final / "old.txt").write_text("old")
    new.mkdir()
    (new / "new.txt").write_text("new")
    real_replace = os.replace

    def failing_replace(src: Any, dst: Any) -> None:
        if Path(src) == new:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(trainer.artifact.os, "replace", failing_replace)
    with pytest.raises(WriteError, match=f"^{final}: cannot write"):
        replace_dir(new, final)
    assert (final / "old.txt").read_text() == "old" and (new / "new.txt").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final", "new"]


def test_write_json_is_atomic_and_leaves_no_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "report.json"
    write_json(path, {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1} and oct(path.stat().st_mode & 0o777) == "0o644"

    def full(*args: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(trainer.artifact.os, "replace", full)
    with pytest.raises(WriteError, match=f"^{path}: cannot write"):
        write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 1} and [p.name for p in tmp_path.iterdir()] == ["report.json"]
