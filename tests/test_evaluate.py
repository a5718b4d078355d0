"""`python -m trainer evaluate` on models trained here, and the metric functions on hand-made cases."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY_SENTIMENT, TINY_TAGGER, run_main, trainer
from safetensors.torch import load_file, save_file

from trainer.artifact import save_artifact
from trainer.core.config import PreprocessConfig, SentimentConfig
from trainer.core.preprocess import Vocab, Vocabs
from trainer.core.tasks import SENTIMENT_LABELS, UNIVERSAL_TAGS
from trainer.metrics import sentiment_metrics, tagger_metrics
from trainer.models import build_model

REVIEWS = Path(__file__).resolve().parent / "fixtures" / "reviews.fasttext"


@pytest.fixture(scope="module")
def trained_runs(small_data: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    """A tiny tagger and a tiny sentiment model, trained for a few steps: task -> (RUN_DIR, data spec)."""
    root = tmp_path_factory.mktemp("evaluate")
    out = {}
    for task, sizes in (("tagger", TINY_TAGGER), ("sentiment", TINY_SENTIMENT)):
        run = root / task
        trainer(
            "train",
            "--task",
            task,
            "--data",
            small_data[task],
            *sizes,
            "--batch_size",
            "16",
            "--max_steps",
            "15",
            "--warmup_steps",
            "5",
            "--out",
            str(run),
        )
        out[task] = (run, small_data[task])
    return out


def evaluate(run: Path, spec: str, report: Path) -> tuple[dict, dict]:
    """`python -m trainer evaluate` (`helpers.run_main`): printed JSON, report JSON."""
    proc = run_main("trainer", "evaluate", "--model", run / "model", "--data", spec, "--report", report)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), json.loads(report.read_text())


def test_tagger_report(trained_runs: dict, tmp_path: Path) -> None:
    run, spec = trained_runs["tagger"]
    printed, report = evaluate(run, spec, tmp_path / "reports" / "tagger.json")
    assert printed["task"] == "tagger" and printed["split"] == "test" and "confusion" not in printed

    labels = report["confusion"]["labels"]
    matrix = np.array(report["confusion"]["matrix"])
    assert labels == list(UNIVERSAL_TAGS) and matrix.shape == (12, 12)
    assert matrix.sum() == report["tokens"] == 2100  # the 100 test sentences of the slice, every token
    assert report["accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum())
    assert 0 < report["oov_tokens"] < report["tokens"] and 0 <= report["oov_accuracy"] <= 1
    noun = report["per_tag"]["NOUN"]
    i = labels.index("NOUN")
    assert noun["support"] == matrix[i].sum()
    assert noun["recall"] == pytest.approx(matrix[i, i] / matrix[i].sum())
    # The training run scored its best model on test with the same functions.
    trained = json.loads((run / "model" / "metrics.json").read_text())["test"]
    assert report["accuracy"] == trained["accuracy"] and report["oov_accuracy"] == trained["oov_accuracy"]
    assert (tmp_path / "reports" / "tagger.confusion.png").stat().st_size > 0
    assert not [p for p in (tmp_path / "reports").iterdir() if p.name.startswith(".")]  # no temp file left


def test_sentiment_report(trained_runs: dict, tmp_path: Path) -> None:
    run, spec = trained_runs["sentiment"]
    printed, report = evaluate(run, spec, tmp_path / "sentiment.json")
    assert set(printed) >= {"accuracy", "precision", "recall", "f1", "examples"}
    (tn, fp), (fn, tp) = report["confusion"]["matrix"]
    assert report["confusion"]["labels"] == ["negative", "positive"] and tn + fp + fn + tp == report["examples"] == 200
    assert report["accuracy"] == pytest.approx((tp + tn) / 200)
    if tp:
        assert report["precision"] == pytest.approx(tp / (tp + fp))
        assert report["recall"] == pytest.approx(tp / (tp + fn))
    assert report["accuracy"] == json.loads((run / "model" / "metrics.json").read_text())["test"]["accuracy"]
    assert (tmp_path / "sentiment.confusion.png").is_file()


def test_the_released_sentiment_model_carries_its_fitted_ngram_head(trained_runs: dict, tmp_path: Path) -> None:
    """The train CLI's sentiment schedule fits the n-gram head after the LSTM; metrics.json's dev figure is the
    released model's, the one `evaluate --split dev` computes, and the LSTM's own is kept beside it."""
    run, spec = trained_runs["sentiment"]
    metrics = json.loads((run / "model" / "metrics.json").read_text())
    ngram = metrics["ngram"]
    assert ngram["reviews"] == metrics["examples"]["train"] and 0.5 < ngram["train_accuracy"] <= 1.0
    assert ngram["dev_accuracy"] == metrics["dev"]["accuracy"]
    printed = run_main("trainer", "evaluate", "--model", run / "model", "--data", spec, "--split", "dev")
    assert json.loads(printed.stdout)["accuracy"] == metrics["dev"]["accuracy"]
    head = load_file(str(run / "model" / "model.safetensors"))["ngram.weight"]
    assert len(head) == json.loads((run / "model" / "config.json").read_text())["model"]["ngram_buckets"] + len(
        json.loads((run / "model" / "vocab.json").read_text())["words"]
    )
    assert head.abs().max() > 0
    events = [json.loads(line) for line in (run / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events][-3:] == ["ngram", "eval", "end"]  # fitted, then the test split scored


def test_wrong_data_for_the_model_is_a_one_line_error(trained_runs: dict) -> None:
    run, _ = trained_runs["tagger"]
    _, sentiment_spec = trained_runs["sentiment"]
    proc = run_main("trainer", "evaluate", "--model", run / "model", "--data", sentiment_spec)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "is sentiment data but" in proc.stderr and "is a tagger model" in proc.stderr
    missing = run_main("trainer", "evaluate", "--model", run / "nothing", "--data", sentiment_spec)
    assert missing.returncode == 2 and missing.stderr.startswith("error: ")
    assert "no such model directory" in missing.stderr


def test_tagger_metrics_by_hand() -> None:
    labels = ["A", "B", "C"]
    gold = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 1, 2, 0])
    oov = np.array([False, True, False, False, False, True])
    m = tagger_metrics(gold, pred, oov, labels)
    assert m["accuracy"] == pytest.approx(4 / 6) and m["oov_tokens"] == 2 and m["oov_accuracy"] == 0.0
    assert m["confusion"]["matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert m["per_tag"]["A"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert m["per_tag"]["B"]["precision"] == pytest.approx(2 / 3) and m["per_tag"]["B"]["recall"] == 1.0
    assert m["per_tag"]["B"]["f1"] == pytest.approx(0.8)
    assert tagger_metrics(gold, gold, np.zeros(6, bool), labels)["oov_accuracy"] is None


def test_sentiment_metrics_by_hand() -> None:
    gold = np.array([1, 1, 1, 0, 0], np.float32)
    prob = np.array([0.9, 0.6, 0.2, 0.7, 0.1], np.float32)
    m = sentiment_metrics(gold, prob)
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3) and m["confusion"]["matrix"] == [[1, 1], [1, 2]]
    assert sentiment_metrics(np.zeros(2), np.zeros(2))["precision"] == 0.0  # nothing predicted positive


@pytest.fixture
def tiny_model(tmp_path: Path) -> Path:
    """A random-weight sentiment model: evaluate's argument checks need a real one, not a trained one."""
    vocabs = Vocabs(
        Vocab(["<pad>", "<unk>", *sorted(set(REVIEWS.read_text().lower().split()))]), Vocab.labels(SENTIMENT_LABELS)
    )
    config = SentimentConfig(embed_dim=4, hidden=3, layers=1)
    torch.manual_seed(0)
    save_artifact(tmp_path / "run" / "model", build_model(config, vocabs), config, PreprocessConfig(), vocabs)
    return tmp_path / "run" / "model"


TINY_SPEC = f"fasttext:{REVIEWS},{REVIEWS}"


def test_tiny_model_report(tiny_model: Path, tmp_path: Path) -> None:
    """The model the bad-argument cases below use evaluates fine with good arguments."""
    printed, report = evaluate(tiny_model.parent, TINY_SPEC, tmp_path / "r" / "x.json")
    assert printed["examples"] == report["examples"] == 6
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["x.confusion.png", "x.json"]
    assert (tmp_path / "r" / "x.json").stat().st_mode & 0o777 == 0o644


BAD_ARGUMENTS = {
    "batch size 0": (["--batch-size", "0"], "--batch-size must be in [1, 2147483647]; got 0"),
    "negative batch size": (["--batch-size", "-5"], "--batch-size must be in [1, 2147483647]; got -5"),
    "report a directory": (["--report", "{tmp}"], "--report {tmp}: is a directory; expected a file path"),
    "report under a file": (
        ["--report", "{tmp}/file/x.json"],
        "--report {tmp}/file/x.json: {tmp}/file is not a directory",
    ),
}


@pytest.mark.parametrize("case", list(BAD_ARGUMENTS))
def test_bad_arguments_are_one_line_errors_before_any_scoring(case: str, tiny_model: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("precious")
    extra, message = BAD_ARGUMENTS[case]
    extra = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    proc = run_main("trainer", "evaluate", "--model", tiny_model, "--data", TINY_SPEC, *extra)
    assert proc.returncode == 2 and proc.stderr == f"error: {message.replace('{tmp}', str(tmp_path))}\n"
    assert proc.stdout == "" and sorted(p.name for p in tmp_path.iterdir()) == ["file", "run"]
    assert (tmp_path / "file").read_text() == "precious"


def test_a_model_with_non_finite_weights_is_refused_not_scored(tiny_model: Path) -> None:
    state = load_file(str(tiny_model / "model.safetensors"))
    state["output.bias"][0] = float("nan")
    save_file(state, str(tiny_model / "model.safetensors"))
    proc = run_main("trainer", "evaluate", "--model", tiny_model, "--data", TINY_SPEC)
    assert proc.returncode == 2 and proc.stdout == "" and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith(f"error: {tiny_model / 'model.safetensors'}: tensor 'output.bias' holds non-finite")
