"""`python -m trainer train`'s arguments and config: bad values are one line before anything is trained (and
before torch is imported), usage errors name their command's help, a config file is overridden by the
command line, unusable data and fp16 without CUDA are clear errors.

Runs go through `helpers.trainer` on small real data (Brown and Rotten Tomatoes slices), as in test_train.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import trainer


@pytest.mark.parametrize(
    "override, expected",
    [
        (["--wrd_dim", "8"], "unknown config key 'wrd_dim'; known keys: "),
        (["--lr", "fast"], "config key 'lr' expects float; got 'fast'"),
        (["--schedule", "step"], "config key 'schedule' must be one of linear, cosine, constant; got 'step'"),
        (["--embed_dim", "8"], "unknown config key 'embed_dim'"),  # a sentiment key on a tagger
    ],
)
def test_bad_config_is_a_one_line_error(
    data: dict[str, str], tmp_path: Path, override: list[str], expected: str
) -> None:
    proc = trainer(
        "train", "--task", "tagger", "--data", data["tagger"], "--out", str(tmp_path / "run"), *override, check=False
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("error: ") and expected in proc.stderr
    if "known keys" in expected:
        assert all(key in proc.stderr for key in ("word_dim", "min_count", "max_steps", "grad_accum"))
    assert not (tmp_path / "run").exists()


# The real command, then whether torch was imported: a bad argument must fail before those seconds are spent.
TORCH_LOADED = """
import sys
from trainer.__main__ import main
status = main(sys.argv[1:])
print("torch" in sys.modules, status)
"""


def test_a_bad_argument_fails_before_torch_is_imported(tmp_path: Path) -> None:
    proc = trainer(
        "-c",
        TORCH_LOADED,
        "train",
        "--task",
        "sentiment",
        "--data",
        "unused",
        "--lr",
        "inf",
        "--out",
        str(tmp_path / "run"),
        module=None,
        check=False,
    )
    assert proc.stdout.split() == ["False", "2"]
    assert proc.stderr == "error: config key 'lr' must be a finite number; got inf\n"
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "command, argv, expected",
    [
        ("train", ["--task", "tagging"], "argument --task: invalid choice: 'tagging'"),
        ("evaluate", ["--model", "m"], "the following arguments are required: --data"),
    ],
)
def test_usage_errors_name_the_help_of_their_command(command: str, argv: list[str], expected: str) -> None:
    """train and evaluate share trainer.core.cli.Parser with `python -m trainer` itself."""
    proc = trainer(command, *argv, check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith(f"error: {expected}")
    assert proc.stderr.endswith(f" (see `python -m trainer {command} --help`)\n")


def test_config_file_then_command_line(data: dict[str, str], tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"word_dim": 8, "max_steps": 3, "batch_size": 4}))
    run = tmp_path / "run"
    trainer(
        "train",
        "--task",
        "tagger",
        "--data",
        data["tagger"],
        "--config",
        str(config),
        "--word_hidden",
        "8",
        "--char_dim",
        "4",
        "--char_hidden",
        "4",
        "--max_steps",
        "4",
        "--out",
        str(run),
    )
    saved = json.loads((run / "model" / "config.json").read_text())["model"]
    assert (saved["word_dim"], saved["word_hidden"]) == (8, 8)
    assert json.loads((run / "model" / "metrics.json").read_text())["steps"] == 4
    config.write_text(json.dumps({"word_dim": "big"}))
    proc = trainer(
        "train",
        "--task",
        "tagger",
        "--data",
        data["tagger"],
        "--config",
        str(config),
        "--out",
        str(tmp_path / "bad"),
        check=False,
    )
    assert proc.returncode == 2 and "config key 'word_dim' expects int; got 'big'" in proc.stderr


def test_no_usable_training_data_fails_before_training(data: dict[str, str], tmp_path: Path) -> None:
    empty = tmp_path / "empty.conllu"
    empty.write_text("# a comment and nothing else\n")
    spec = data["tagger"].replace(data["tagger"].split(":")[1].split(",")[0], str(empty))
    proc = trainer("train", "--task", "tagger", "--data", spec, "--out", str(tmp_path / "run"), check=False)
    assert proc.returncode == 2
    assert proc.stderr == f"error: --data {spec}: no usable train examples (0 empty sentences skipped)\n"
    assert not (tmp_path / "run").exists()
    wrong = trainer(
        "train", "--task", "sentiment", "--data", data["tagger"], "--out", str(tmp_path / "run"), check=False
    )
    assert wrong.returncode == 2 and "holds tagger data" in wrong.stderr


def test_fp16_without_cuda_is_a_clear_error(data: dict[str, str], tmp_path: Path) -> None:
    for how, env in ((["--mixed_precision", "fp16"], {}), ([], {"ACCELERATE_MIXED_PRECISION": "fp16"})):
        proc = trainer(
            "train",
            "--task",
            "tagger",
            "--data",
            data["tagger"],
            "--out",
            str(tmp_path / "run"),
            *how,
            env=env,
            check=False,
        )
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1
        assert "fp16" in proc.stderr and "use bf16" in proc.stderr
