"""Every config value is checked where it is parsed: range, finiteness, choices, with one line naming the key.

Most cases call the commands' own `parse_args` in-process (it reads no data); a few run the whole
commands (`python -m trainer`, as forked children through `helpers.run_main`, the first one also as a real
subprocess), checking the exit status, the one stderr line and that nothing was written.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, run_main

import trainer.train
from trainer.core.config import (
    PreprocessConfig,
    SentimentConfig,
    TaggerConfig,
    TrainConfig,
    check_config,
    field_types,
    model_config_from_dict,
)
from trainer.core.errors import ConfigError

BAD_TRAIN = {  # --task sentiment unless the key is a tagger's; the message's tail
    ("--hidden", "0"): "config key 'hidden' must be in [1, 65536]; got 0",
    ("--hidden", "1000000000"): "config key 'hidden' must be in [1, 65536]; got 1000000000",
    ("--embed_dim", "-1"): "config key 'embed_dim' must be in [1, 65536]; got -1",
    ("--word_dim", "0"): "config key 'word_dim' must be in [1, 65536]; got 0",
    ("--char_hidden", "-3"): "config key 'char_hidden' must be in [1, 65536]; got -3",
    ("--layers", "0"): "config key 'layers' must be in [1, 64]; got 0",
    ("--dropout", "2"): "config key 'dropout' must be in [0, 1); got 2.0",
    ("--dropout", "1"): "config key 'dropout' must be in [0, 1); got 1.0",
    ("--dropout", "-0.1"): "config key 'dropout' must be in [0, 1); got -0.1",
    ("--atol", "0"): "config key 'atol' must be > 0; got 0.0",
    ("--atol", "inf"): "config key 'atol' must be a finite number; got inf",
    ("--lr", "inf"): "config key 'lr' must be a finite number; got inf",
    ("--lr", "nan"): "config key 'lr' must be a finite number; got nan",
    ("--lr", "0"): "config key 'lr' must be > 0; got 0.0",
    ("--weight_decay", "-1"): "config key 'weight_decay' must be >= 0; got -1.0",
    ("--clip_grad_norm", "nan"): "config key 'clip_grad_norm' must be a finite number; got nan",
    ("--clip_grad_norm", "-1"): "config key 'clip_grad_norm' must be >= 0; got -1.0",
    ("--max_tokens", "0"): "config key 'max_tokens' must be in [1, 2147483647]; got 0",
    ("--max_tokens", "99999999999"): "config key 'max_tokens' must be in [1, 2147483647]; got 99999999999",
    ("--max_word_len", "0"): "config key 'max_word_len' must be in [1, 2147483647]; got 0",
    ("--min_count", "0"): "config key 'min_count' must be in [1, 2147483647]; got 0",
    ("--pooling", "mean"): "config key 'pooling' must be one of last, max; got 'mean'",
    ("--ngram_buckets", "-1"): "config key 'ngram_buckets' must be in [0, 16777216]; got -1",
    ("--ngram_buckets", "16777217"): "config key 'ngram_buckets' must be in [0, 16777216]; got 16777217",
    ("--schedule", "step"): "config key 'schedule' must be one of linear, cosine, constant; got 'step'",
    ("--mixed_precision", "fp8"): "config key 'mixed_precision' must be one of '', no, fp16, bf16; got 'fp8'",
    ("--seed", "-1"): "config key 'seed' must be in [0, 2147483647]; got -1",
    ("--patience", "-1"): "config key 'patience' must be in [0, 2147483647]; got -1",
    ("--threads", "100000"): "config key 'threads' must be in [0, 1024]; got 100000",
    ("--batch_size", "0"): "config key 'batch_size' must be in [1, 2147483647]; got 0",
    ("--epochs", "-2"): "config key 'epochs' must be in [0, 2147483647]; got -2",
}
TAGGER_KEYS = {"--word_dim", "--char_hidden"}


@pytest.mark.parametrize("override", list(BAD_TRAIN))
def test_train_rejects_each_bad_value_naming_key_range_and_value(override: tuple[str, str], tmp_path: Path) -> None:
    task = "tagger" if override[0] in TAGGER_KEYS else "sentiment"
    argv = ["--task", task, "--data", "unused", "--out", str(tmp_path / "run"), *override]
    with pytest.raises(ConfigError) as info:
        trainer.train.parse_args(argv)
    assert str(info.value) == BAD_TRAIN[override]


def test_the_same_checks_apply_to_a_config_file(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text('{"lr": 1e400}')  # Python's json reads it as inf; the strict reader refuses it
    argv = ["--task", "tagger", "--data", "unused", "--out", str(tmp_path / "run"), "--config", str(config)]
    with pytest.raises(ConfigError, match="^--config .*: lr: the number 1e400 is beyond a double's range"):
        trainer.train.parse_args(argv)


def test_good_values_at_the_edges_are_accepted(tmp_path: Path) -> None:
    edges = [
        "--dropout",
        "0",
        "--clip_grad_norm",
        "0",
        "--patience",
        "0",
        "--layers",
        "64",
        "--threads",
        "1024",
        "--weight_decay",
        "0",
        "--mixed_precision",
        "no",
        "--max_tokens",
        "1",
        "--seed",
        "0",
    ]
    _, model, preprocess, train = trainer.train.parse_args(
        ["--task", "sentiment", "--data", "unused", "--out", str(tmp_path / "run"), *edges]
    )
    assert (model.dropout, model.layers, train.clip_grad_norm, train.threads, preprocess.max_tokens) == (
        0,
        64,
        0,
        1024,
        1,
    )


def test_defaults_pass_their_own_checks() -> None:
    check_config(TaggerConfig(), SentimentConfig(), PreprocessConfig(), TrainConfig())


def test_every_number_field_declares_its_limits() -> None:
    """A new int/float field without limits would slip past check_config's range checks."""
    for cls in (TaggerConfig, SentimentConfig, PreprocessConfig, TrainConfig):
        kinds = field_types(cls)
        for f in dataclasses.fields(cls):
            if kinds[f.name] in (int, float):
                assert {"min", "gt"} & f.metadata.keys(), f"{cls.__name__}.{f.name} has no lower bound"
            if kinds[f.name] is str:
                assert "choices" in f.metadata, f"{cls.__name__}.{f.name} has no choices"


def test_model_config_from_dict_checks_what_it_reads() -> None:
    with pytest.raises(ConfigError, match="^x.json: config key 'layers' must be in \\[1, 64\\]; got 0$"):
        model_config_from_dict("sentiment", {"layers": 0}, source="x.json")
    with pytest.raises(ConfigError, match="^x.json: expected a JSON object of config keys; got list$"):
        model_config_from_dict("tagger", [], source="x.json")
    with pytest.raises(ConfigError, match="^x.json: task must be one of tagger, sentiment; got \\['tagger'\\]$"):
        model_config_from_dict(["tagger"], {}, source="x.json")


def test_long_values_are_cut_short_in_messages() -> None:
    with pytest.raises(ConfigError) as info:
        model_config_from_dict("sentiment", {"pooling": "x" * 5000}, source="x.json")
    assert len(str(info.value)) < 150 and str(info.value).endswith("...")


def test_out_must_be_a_directory_that_can_be_made(tmp_path: Path) -> None:
    module = trainer.train
    (tmp_path / "file").write_text("precious")
    task = ["--task", "tagger"]
    for out, message in (
        (tmp_path / "file", "exists and is not a directory"),
        (tmp_path / "file" / "run", f"{tmp_path / 'file'} is not a directory"),
    ):
        with pytest.raises(ConfigError, match=f"^--out {out}: {message}$"):
            module.parse_args([*task, "--data", "unused", "--out", str(out)])
    assert (tmp_path / "file").read_text() == "precious"


def test_config_that_is_a_directory_is_one_line(tmp_path: Path) -> None:
    argv = ["--task", "tagger", "--data", "unused", "--out", str(tmp_path / "run"), "--config", str(tmp_path)]
    with pytest.raises(ConfigError, match=f"^--config {tmp_path}: is a directory; expected a JSON file$"):
        trainer.train.parse_args(argv)


CLI_CASES = [  # the real commands, as users hit them: exit 2, one line, nothing written
    (["train", "--task", "sentiment", "--layers", "0"], "error: config key 'layers' must be in [1, 64]; got 0"),
    (["train", "--task", "sentiment", "--lr", "inf"], "error: config key 'lr' must be a finite number; got inf"),
    (["train", "--task", "tagger", "--config", "{tmp}"], "error: --config {tmp}: is a directory; expected a JSON file"),
    (["train", "--task", "tagger", "--out", "{tmp}/file"], "error: --out {tmp}/file: exists and is not a directory"),
    # Removed options (CHANGELOG.md): one line naming what went and why, whether from the command line or a file
    (
        ["train", "--task", "sentiment", "--average", "0.9"],
        "error: command line: config key 'average' was removed: "
        "the moving average of the weights measured no gain (Rotten Tomatoes dev 78.23% with and without); "
        "see CHANGELOG.md",
    ),
    (
        ["pretrain", "--data", "x", "--out", "{tmp}/lm"],
        "error: `trainer pretrain` was removed: LM pretraining "
        "measured no clear gain (Rotten Tomatoes +0.4 dev points, in the noise); see CHANGELOG.md",
    ),
]


def test_a_config_file_with_a_removed_key_is_one_line(tmp_path: Path) -> None:
    """A --config written before the cut: refused with the key and why, not read as a different run."""
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"lr": 0.001, "init_embeddings": "runs/lm/embeddings"}))
    argv = ["--task", "tagger", "--data", "brown", "--out", str(tmp_path / "run"), "--config", str(old)]
    with pytest.raises(ConfigError) as info:
        trainer.train.parse_args(argv)
    assert str(info.value) == (
        f"--config {old}: config key 'init_embeddings' was removed: `trainer pretrain` was removed: LM pretraining "
        "measured no clear gain (+0.4 dev, in the noise); see CHANGELOG.md"
    )


@pytest.mark.parametrize("argv, expected, real", [(*case, False) for case in CLI_CASES] + [(*CLI_CASES[0], True)])
def test_bad_config_on_the_command_line_is_one_line_exit_2(
    argv: list[str], expected: str, real: bool, tmp_path: Path
) -> None:
    (tmp_path / "file").write_text("precious")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "run")]
    argv += ["--data", "brown"]
    if real:
        proc = subprocess.run(
            [sys.executable, "-m", "trainer", *argv],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
    else:
        proc = run_main("trainer", *argv)
    assert proc.returncode == 2 and proc.stderr == expected.replace("{tmp}", str(tmp_path)) + "\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"] and (tmp_path / "file").read_text() == "precious"
