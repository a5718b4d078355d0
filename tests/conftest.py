"""Shared fixtures. `data_dir` fetches the real data sets once per session (a no-op when cached);
`tiny_artifact` writes a random-weight RUN_DIR/model in milliseconds, for tests that need no training."""

import os
import string
from collections.abc import Callable
from pathlib import Path

import pytest

from trainer.fetch import fetch

REPO = Path(__file__).resolve().parents[1]
TINY_MAX_TOKENS = 20
TINY_WORDS = ["<pad>", "<unk>"] + "the a cat dog sat on mat . , ! good bad movie film great awful is was not".split()
TINY_CHARS = ["<pad>", "<unk>"] + list(string.ascii_letters + string.digits + ".,'!")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """`$DATA_DIR` or the repository's `./data`, holding verified `brown` and `rotten-tomatoes`."""
    path = Path(os.environ.get("DATA_DIR") or REPO / "data").resolve()
    for name in ("brown", "rotten-tomatoes"):
        fetch(name, path)
    return path


def write_tiny_artifact(path: Path, task: str, seed: int = 0) -> Path:
    """A tiny tagger (word + char) or sentiment model with random weights, saved as RUN_DIR/model."""
    import torch

    from trainer.artifact import save_artifact
    from trainer.config import PreprocessConfig, SentimentConfig, TaggerConfig
    from trainer.models import build_model
    from trainer.preprocess import SENTIMENT_LABELS, UNIVERSAL_TAGS, Vocab, Vocabs

    configs = {"tagger": TaggerConfig(word_dim=8, word_hidden=6, char_dim=4, char_hidden=3),
               "sentiment": SentimentConfig(embed_dim=8, hidden=6, layers=2)}
    torch.manual_seed(seed)
    chars = Vocab(TINY_CHARS) if task == "tagger" else None
    labels = Vocab.labels(UNIVERSAL_TAGS if task == "tagger" else SENTIMENT_LABELS)
    vocabs = Vocabs(Vocab(TINY_WORDS), labels, chars)
    model = build_model(configs[task], vocabs)
    save_artifact(path, model, configs[task], PreprocessConfig(max_tokens=TINY_MAX_TOKENS), vocabs, {"task": task})
    return path


@pytest.fixture(scope="session")
def tiny_artifact() -> Callable[[Path, str, int], Path]:
    """`tiny_artifact(path, task, seed=0)` writes a random-weight artifact (see `write_tiny_artifact`)."""
    return write_tiny_artifact


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that read a corpus (through `data_dir`) are marked `corpus`; `./launch.sh test --fast` leaves
    them out, with the `slow` ones, and runs everything that needs no corpus and no training."""
    for item in items:
        if "data_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.corpus)
