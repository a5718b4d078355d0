"""The benchmark scripts on tiny settings, so they keep working between full runs (docs/BENCHMARKS.md).

Full runs take minutes to hours; these take seconds: FLOP arithmetic against hand counts, the
perceptron and Naive Bayes baselines on a few hundred real examples, the tutorial loop for a few
sentences, `bench.preprocess_scale` end to end on 2,000 generated lines, and `bench.tokenize` on
short worst cases, `bench.triton_client --quick` on a tiny export, and `bench.stages` on both tiny exports.
"""

import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from helpers import REPO, write_tiny_artifact

from bench import (
    flops,
    inference,
    ngram_grid,
    preprocess_scale,
    schedule_cost,
    sentiment_accuracy,
    stages,
    tagger_accuracy,
    tokenize,
    train_speed,
    triton_client,
)
from trainer.core.config import PreprocessConfig, SentimentConfig, TaggerConfig
from trainer.core.data import TaggedSentence


def test_flops_per_token_matches_a_hand_count():
    assert flops.lstm_step_flops(3, 2) == 4 * (3 + 2) * 2 * 2
    word = 2 * 4 * (100 + 2 * 50 + 128) * 128 * 2  # BiLSTM over [word emb; char BiLSTM states]
    out = 2 * 256 * 12
    char = 2 * 4 * (30 + 50) * 50 * 2  # char BiLSTM, per character
    assert flops.flops_per_token(TaggerConfig(), 12, chars_per_word=4.5) == word + out + 4.5 * char
    assert flops.flops_per_token(TaggerConfig(char_encoder=False), 12) == 2 * 4 * (100 + 128) * 128 * 2 + out
    assert flops.flops_per_token(SentimentConfig(bidirectional=False), 2) == 2 * 4 * (128 + 128) * 128 * 2  # two layers
    # the default BiLSTM: both directions, and the second layer reads both directions' states
    assert flops.flops_per_token(SentimentConfig(), 2) == 2 * 4 * (128 + 128) * 128 * 2 + 2 * 4 * (256 + 128) * 128 * 2
    rate = flops.matmul_gflops(1, n=64, seconds=0.01)
    assert math.isfinite(rate) and rate > 0


def test_executed_flops_count_padding_and_each_distinct_word_once():
    ab, abcd, pad = [2, 3, 0, 0], [2, 3, 4, 5], [0, 0, 0, 0]
    arrays = {
        "words": np.array([[5, 5, 6], [5, 0, 0]]),
        "lengths": np.array([3, 1]),
        "chars": np.array([[ab, ab, abcd], [ab, pad, pad]]),
        "word_lengths": np.array([[2, 2, 4], [2, 0, 0]]),
    }
    config = TaggerConfig()
    words = 2 * 3 * flops.flops_per_token(config, 12)  # every padded position runs the word LSTM
    chars = 3 * 4 * flops.stack_flops(config.char_dim, config.char_hidden, 1, True)  # "ab", "abcd", padding: W=4 steps
    assert flops.executed_flops_per_token(config, 12, [arrays]) == (words + chars) / 4


def test_tagger_score_counts_oov_by_normalized_train_words():
    config = PreprocessConfig()
    known = tagger_accuracy.train_words([TaggedSentence(("The", "1999", "dog"), ("DET", "NUM", "NOUN"))], config)
    gold = [TaggedSentence(("the", "2024", "cat", "runs"), ("DET", "NUM", "NOUN", "VERB"))]
    result = tagger_accuracy.score(gold, [["DET", "NUM", "NOUN", "NOUN"]], known, config)
    # "2024" -> "0000" is known (digits -> 0); "cat" and "runs" are OOV, one of them right.
    assert result == {"accuracy": 0.75, "oov_accuracy": 0.5, "tokens": 4, "oov_tokens": 2}


def test_perceptron_baseline_on_200_brown_sentences(data_dir):
    train = tagger_accuracy.load_split("brown", "train", 200)
    test = tagger_accuracy.load_split("brown", "test", 50)
    tags, times = tagger_accuracy.perceptron(train, test, nr_iter=2)
    config = PreprocessConfig()
    result = tagger_accuracy.score(test, tags, tagger_accuracy.train_words(train, config), config)
    assert result["tokens"] == sum(len(s.words) for s in test)
    assert 0 < result["oov_tokens"] < result["tokens"]
    assert result["accuracy"] > 0.75  # tagging everything NOUN gives about 0.3
    assert result["oov_accuracy"] < result["accuracy"]
    assert times["train_s"] > 0


def test_naive_bayes_baseline_on_1000_reviews(data_dir):
    features = sentiment_accuracy.features("Not bad at all")
    assert {"w:not", "w:bad", "b:not bad", "b:at all"} <= set(features)
    train = sentiment_accuracy.load_split("rotten-tomatoes", "train", 1000)
    test = sentiment_accuracy.load_split("rotten-tomatoes", "test", 200)
    labels, _ = sentiment_accuracy.naive_bayes(train, test)
    result = sentiment_accuracy.accuracy(test, labels)
    assert result["documents"] == 200 and result["accuracy"] > 0.6
    assert 0 < result["ci95"] < 0.1


def test_sentiment_benchmark_scores_a_model_and_each_half_of_its_sum(data_dir, tmp_path):
    """Two tiny random-weight models with n-gram heads (`helpers.write_tiny_artifact`), end to end."""
    for seed in (1, 2):
        model = write_tiny_artifact(tmp_path / f"s{seed}" / "model", "sentiment", seed)
        (model / "metrics.json").write_text(json.dumps({"dev": {"accuracy": 0.5}}))
    args = ["--model", str(tmp_path / "s1" / "model"), str(tmp_path / "s2" / "model")]
    args += ["--limit-train", "300", "--limit-test", "100", "--json", str(tmp_path / "report.json")]
    assert sentiment_accuracy.main(args) == 0
    report = json.loads((tmp_path / "report.json").read_text())["results"]
    assert [r["documents"] for r in report["lstm"]] == [100, 100] and report["lstm_summary"]["runs"] == 2
    for run in report["lstm"]:
        assert set(run["parts"]) == {"lstm_alone", "ngram_head_alone"}
    mean_alone = sum(r["parts"]["lstm_alone"] for r in report["lstm"]) / 2
    assert abs(report["lstm_alone_mean"] - mean_alone) < 1e-12


def test_tagger_benchmark_bounds_a_combination_with_the_perceptron(data_dir, tmp_path):
    model = write_tiny_artifact(tmp_path / "run" / "model", "tagger")
    args = ["--model", str(model), "--limit-train", "200", "--limit-test", "30", "--nr-iter", "2", "--split", "dev"]
    assert tagger_accuracy.main([*args, "--json", str(tmp_path / "tagger.json")]) == 0
    results = json.loads((tmp_path / "tagger.json").read_text())["results"]
    assert results["split"] == "dev" and results["test_sentences"] == 30  # the dev split, for choosing
    ours, theirs = results["lstm"][0], results["perceptron"]
    assert max(ours["accuracy"], theirs["accuracy"]) <= ours["either_right"] <= ours["accuracy"] + theirs["accuracy"]
    assert max(ours["oov_accuracy"], theirs["oov_accuracy"]) <= ours["oov_either_right"] <= 1


def test_ngram_grid_refits_the_head_for_every_setting_and_ranks_by_dev(data_dir, tmp_path):
    model = write_tiny_artifact(tmp_path / "run" / "model", "sentiment")
    args = ["--model", str(model), "--l2", "1e-5", "1e-4", "--steps", "5", "--scale", "1", "2", "--buckets", "64"]
    assert ngram_grid.main([*args, "--limit", "120", "--json", str(tmp_path / "grid.json")]) == 0
    results = json.loads((tmp_path / "grid.json").read_text())["results"]
    assert [(f["l2"], f["steps"], f["reviews"]) for f in results["fits"]] == [(1e-5, 5, 120), (1e-4, 5, 120)]
    assert len(results["table"]) == 4 and results["best_by_dev"] == results["table"][0]
    assert all(0 <= row["test_accuracy"] <= 1 for row in results["table"])


def test_sentiment_seeds_summary_is_mean_sd_and_t_interval():
    runs = [{"accuracy": a, "dev_accuracy": d} for a, d in ((0.80, 0.79), (0.81, 0.80), (0.82, 0.78))]
    summary = sentiment_accuracy.seeds_summary(runs, 1300, baseline=0.775)
    assert summary["runs"] == 3 and abs(summary["accuracy"] - 0.81) < 1e-12 and abs(summary["sd"] - 0.01) < 1e-12
    assert abs(summary["ci95_seeds"] - 4.303 * 0.01 / 3**0.5) < 1e-12  # t(2) = 4.303
    assert abs(summary["ci95"] - 1.96 * (0.81 * 0.19 / 1300) ** 0.5) < 1e-12
    assert abs(summary["dev_accuracy"] - 0.79) < 1e-12 and summary["seeds_interval_above_baseline"]
    assert not sentiment_accuracy.seeds_summary(runs, 1300, baseline=0.80)["seeds_interval_above_baseline"]


def test_tutorial_loop_trains_a_few_sentences(data_dir):
    train = tagger_accuracy.load_split("brown", "train", 30)
    result = train_speed.tutorial_tokens_per_s(train, steps=3, threads=1, warmup=1)
    assert result["sentences"] == 3 and result["tokens"] > 0 and result["tokens_per_s"] > 0
    assert "torch.distributed.run" in train_speed.trainer_command(REPO / "x", "brown", 10, 2, [])
    assert "torch.distributed.run" not in train_speed.trainer_command(REPO / "x", "brown", 10, 1, [])


def test_inference_rows_compare_with_the_floor_and_model_only():
    measured = {"backend": "onnx-fp32", "batch_size": 64, "throughput": 500.0, "p95_ms": 9.0}
    bench = {"task": "tagger", "results": [measured]}
    e2e = {"batch_size": 64, "throughput": 400.0}
    limits = {
        "floor_tokens_per_s": 1000.0,
        "tokens_per_text": 20.0,
        "flops_per_token": 10.0,
        "executed_flops_per_token": {64: 15.0},
    }
    rows = inference.rows(bench, e2e, limits)
    assert [r["of_floor"] for r in rows] == [0.5, 0.4] and rows[0]["padding_x"] == 1.5
    assert inference.model_only_ratio(bench, e2e) == 0.8
    sentiment = inference.rows({**bench, "task": "sentiment"}, e2e, limits)  # reviews/s x 20 tokens each
    assert sentiment[0]["of_floor"] == 10.0


def test_preprocess_scale_cli_streams_2000_lines(tmp_path, data_dir):
    lines = list(preprocess_scale.repeated(["a\n", "b\n", "c\n"], 7, seed=1))
    assert len(lines) == 7 and sorted(lines[:3]) == ["a\n", "b\n", "c\n"]
    out = tmp_path / "report.json"
    # Rotten Tomatoes is the source of its lines and of the encoder's vocabulary.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.preprocess_scale",
            "--lines",
            "2000",
            "--trace-lines",
            "200",
            "--out",
            str(tmp_path / "corpus"),
            "--json",
            str(out),
        ],
        cwd=REPO,
        check=True,
        capture_output=True,
        env={**os.environ, "DATA_DIR": str(data_dir)},
    )
    (row,) = json.loads(out.read_text())["results"]["table"]
    assert row["file_lines"] == 2000
    assert 1400 < row["reviews"] < 1800  # the train split keeps hash buckets 0-7 of 10
    assert row["tokens"] > 10 * row["reviews"] and row["lines_per_s"] > 0
    assert row["traced_reviews"] == 200 and 0 < row["tracemalloc_peak_mb"] < 50
    assert not list((tmp_path / "corpus").iterdir())  # the generated file is removed unless --keep


def test_tokenize_cli_compares_with_nltk_on_both_test_splits_and_worst_cases(tmp_path, data_dir):
    assert tokenize.build(".", " ", 10) == ". " + " " * 8 and len(tokenize.build("", "(]", 11)) == 10
    out = tmp_path / "report.json"
    subprocess.run(
        [sys.executable, "-m", "bench.tokenize", "--repeats", "1", "--lengths", "100,1000", "--json", str(out)],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    results = json.loads(out.read_text())["results"]
    assert [row["case"] for row in results["table"]] == ["rotten-tomatoes test", "brown test"]
    assert all(row["differ"] == 0 and row["tokens"] > row["texts"] and row["speedup"] > 0 for row in results["table"])
    assert len(results["worst_cases"]) == len(tokenize.WORST_CASES)
    assert all(row["differ"] == 0 and row["growth_to_1000"] > 0 for row in results["worst_cases"])


def test_schedule_cost_times_each_schedule_per_step_against_the_first(tmp_path, data):
    """In this process, as the other scripts here; the trainer runs it times are subprocesses of their own."""
    report = tmp_path / "cost.json"
    args = ["--task", "sentiment", "--data", data["sentiment"], "--steps", "3", "--rounds", "2"]
    args += ["--schedule", "plain=--embed_dim 8 --hidden 8 --layers 1"]
    args += ["--schedule", "adversarial=--embed_dim 8 --hidden 8 --layers 1 --adversarial 1"]
    assert schedule_cost.main([*args, "--json", str(report)]) == 0
    rows = json.loads(report.read_text())["results"]["table"]
    assert [row["schedule"] for row in rows] == ["plain", "adversarial"]
    assert rows[0]["x_first"] == 1.0 and rows[1]["x_first"] > 0
    assert all(len(row["rounds_ms"]) == 2 for row in rows)


def test_triton_client_quick_times_binary_and_json_beside_model_only(runs, data_dir, tmp_path):
    report = tmp_path / "triton.json"
    assert triton_client.main(["--quick", "--export", str(runs["sentiment"][1]), "--json", str(report)]) == 0
    results = json.loads(report.read_text())["results"]
    rows = results["table"]
    cells = [(mode, size, clients) for mode in ("binary", "json") for size in (1, 32) for clients in (1, 8, 64)]
    assert [(r["mode"], r["texts_per_request"], r["clients"]) for r in rows] == cells
    assert all(r["requests"] > 0 and r["errors"] == 0 and r["p99_ms"] >= r["p50_ms"] > 0 for r in rows), rows
    assert all(r["texts_per_s"] == r["requests_per_s"] * r["texts_per_request"] for r in rows)
    assert results["model_only_b64"]["throughput"] > 0 and len(results["binary_over_json"]) == 6


@pytest.mark.parametrize("task", ["tagger", "sentiment"])
def test_stages_times_each_stage_and_the_one_thread_backends(runs, data_dir, tmp_path, task):
    artifact, export = runs[task]
    report, other = tmp_path / "stages.json", shutil.copytree(export, tmp_path / "other")
    data = "brown" if task == "tagger" else "rotten-tomatoes"
    args = ["--export", str(export), "--compare", str(other), "--torch", str(artifact), "--data", data]
    assert stages.main([*args, "--lines", "300", "--texts", "200", "--rounds", "1", "--json", str(report)]) == 0
    rows = json.loads(report.read_text())["results"]["table"]
    first, second = rows[0], rows[1]
    assert first["units"] == second["units"] > 0
    assert all(row[f"{s}_us"] >= 0 for row in (first, second) for s in stages.STAGES)
    assert second["tokenize_us"] < first["tokenize_us"]  # the memo answers the repeated lines
    assert 0 < first["pipeline_bound"] <= 1 and 0 < second["pipeline_bound"] <= 1
    timed = rows[2:-1]
    assert [r["figure"].split(": ", 1)[1] for r in timed] == [str(export), str(other), "torch eager"]
    assert all(r["throughput"] > 0 and r["of_floor"] > 0 for r in timed) and timed[-1]["over_torch"] == 1
