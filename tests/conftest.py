"""Shared fixtures. `data_dir` fetches the real data sets once per session (a no-op when cached)."""

import os
from pathlib import Path

import pytest

from trainer.fetch import fetch

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """`$DATA_DIR` or the repository's `./data`, holding verified `brown` and `rotten-tomatoes`."""
    path = Path(os.environ.get("DATA_DIR") or REPO / "data").resolve()
    for name in ("brown", "rotten-tomatoes"):
        fetch(name, path)
    return path
