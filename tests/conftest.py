"""Shared fixtures. `data_dir` fetches the real data sets once per session (a no-op when cached);
`tiny_artifact` writes a random-weight RUN_DIR/model in milliseconds, and `runs` exports one tiny
model per task once per session, for tests that need no training. Plain helpers are in helpers.py."""

import fcntl
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import (
    EXPORT_KINDS,
    LINES,
    REPO,
    TINY_CONFIGS,
    export,
    write_corpus_artifact,
    write_small_data,
    write_tiny_artifact,
)
from servers import InProcessServer, SlowModel

from trainer.core.fetch import fetch

# The input file of `workspace_template`.
INPUT_LINES = "The cat sat on the mat.\n\nA good movie, not bad at all!\n"


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`$DATA_DIR` or the repository's `./data`, holding verified `brown`, `rotten-tomatoes` and `wordnet`."""
    path = Path(os.environ.get("DATA_DIR") or REPO / "data").resolve()
    # Each pytest-xdist worker runs session fixtures itself: the first fetches, the others wait for it
    # on a lock in the directory the workers' temporary directories share.
    with open(tmp_path_factory.getbasetemp().parent / "seqlstm-fetch.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for name in ("brown", "rotten-tomatoes", "wordnet"):
            fetch(name, path)
    return path


@pytest.fixture(scope="session")
def tiny_artifact() -> Callable[..., Path]:
    """`tiny_artifact(path, task, seed=0)` writes a random-weight artifact (see `helpers.write_tiny_artifact`)."""
    return write_tiny_artifact


@pytest.fixture(scope="session")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """task -> (tiny artifact, its export directory), exported once per session. Read-only: copy to change."""
    root = tmp_path_factory.mktemp("serve")
    out = {}
    for task in TINY_CONFIGS:
        artifact = write_tiny_artifact(root / f"run-{task}" / "model", task, seed=0)
        out[task] = (artifact, export(artifact, root / f"export-{task}"))
    return out


@pytest.fixture
def slow_server(runs: dict[str, tuple[Path, Path]]) -> Iterator[Callable[..., InProcessServer]]:
    """slow_server(delay, max_queue=..., **options) -> the real ASGI server in this process around a tagger
    stand-in whose every model run takes `delay` seconds (`options`: serve.http.asgi.build_server's)."""
    from serve.http.batcher import MicroBatcher
    from serve.runtime import ServingModel

    model = ServingModel(runs["tagger"][1])
    servers: list[InProcessServer] = []

    def make(delay: float, max_queue: int = 1024, **options: object) -> InProcessServer:
        batcher = MicroBatcher(SlowModel(delay), batch_size=8, max_wait_s=0.0, max_queue=max_queue)  # type: ignore[arg-type]
        servers.append(InProcessServer("asgi", model, batcher, **options))
        return servers[-1]

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def lines_file(tmp_path: Path) -> Path:
    """`helpers.LINES` as a UTF-8 file, one per line."""
    path = tmp_path / "in.txt"
    path.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict[str, Path]:
    """kind -> a random-weight artifact of each of `helpers.EXPORT_KINDS`. Read-only: copy to change."""
    root = tmp_path_factory.mktemp("artifacts")
    return {kind: write_corpus_artifact(root / kind / "model", kind, data_dir) for kind in EXPORT_KINDS}


@pytest.fixture(scope="session")
def small_data(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """task -> `--data` spec for small slices of the real corpora (see `helpers.write_small_data`)."""
    return write_small_data(data_dir, tmp_path_factory.mktemp("small-data"))


@pytest.fixture(scope="session")
def data(small_data: dict[str, str]) -> dict[str, str]:
    """`small_data`, under the name the training and checkpoint tests use."""
    return small_data


@pytest.fixture(scope="module")
def workspace_template(tmp_path_factory: pytest.TempPathFactory, runs: dict[str, tuple[Path, Path]]) -> Path:
    """Copies of the tiny tagger and sentiment artifacts and their exports, an input file and CoNLL-U data."""
    root = tmp_path_factory.mktemp("bad-inputs")
    for task, run in (("tagger", "run"), ("sentiment", "sentiment-run")):
        model, export_dir = runs[task]
        shutil.copytree(model, root / run / "model")
        shutil.copytree(export_dir, root / f"{run}-export")
    (root / "input.txt").write_text(INPUT_LINES, encoding="utf-8")
    shutil.copy(REPO / "tests" / "fixtures" / "tiny.conllu", root / "tiny.conllu")
    return root


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that read a corpus (through `data_dir`) are marked `corpus`; `./launch.sh test --fast` leaves
    them out, with the `slow` ones, and runs everything that needs no corpus and no training."""
    for item in items:
        if "data_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.corpus)
