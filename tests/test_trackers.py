"""`--report_to tensorboard|mlflow|wandb|none`: the metrics of metrics.jsonl also go to accelerate's tracker.

mlflow runs against a local file store (mlflow 3.x refuses it unless MLFLOW_ALLOW_FILE_STORE=true, so the
test opts in) and, in the slow tier, against a real `mlflow server` on 127.0.0.1 (sqlite store, proxied
artifacts). mlflow-skinny ships that server's code but not its packages (Flask, SQLAlchemy, alembic, ...):
the dev extra adds them, since the full `mlflow` package needs an `mlflow-tracing` of its own version,
which the registry here does not have.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import TINY_SENTIMENT, events, one_line_error, run_main, tiny_tagger, trainer

# `python -m trainer` as if `module` were not installed (the package lookup answers None for it).
WITHOUT = """
import importlib.util, sys
real, missing = importlib.util.find_spec, sys.argv.pop(1)
importlib.util.find_spec = lambda name, *a: None if name == missing else real(name, *a)
from trainer.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


def mlflow_run(uri: str, task: str) -> Any:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    [experiment] = [e for e in client.search_experiments() if e.name == f"seqlstm-{task}"]
    [found] = client.search_runs([experiment.experiment_id])
    return found


def artifact_files(uri: str, run_id: str, path: str) -> set[str]:
    """Every file under the run's artifact `path`, relative to it."""
    from mlflow.tracking import MlflowClient

    client, files, todo = MlflowClient(uri), set(), [path]
    while todo:
        for info in client.list_artifacts(run_id, todo.pop()):
            if info.is_dir:
                todo.append(info.path)
            else:
                files.add(info.path[len(path) + 1 :])
    return files


def local_files(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file()}


def check_release_in_mlflow(uri: str, task: str, run: Path, export_env: dict[str, str], tmp_path: Path) -> Any:
    """What every MLflow run must hold: every config field and the data spec as parameters, the released
    model's figures as the latest values under metrics.json's names, RUN_DIR/model and plots as artifacts,
    and, after `python -m export` with the tracking URI set, the export. Returns the run."""
    from mlflow.tracking import MlflowClient

    found = mlflow_run(uri, task)
    run_id, metrics = found.info.run_id, json.loads((run / "model" / "metrics.json").read_text())
    assert found.info.status == "FINISHED" and found.info.run_name == run.name
    assert metrics["mlflow_run_id"] == run_id
    config = events(run, "start")[0]["config"]
    expected = {"task": task, "data": metrics["data"]}
    for part in ("train", "model", "preprocess"):
        expected |= {k: str(v) for k, v in config[part].items()}
    assert found.data.params == expected
    latest = found.data.metrics
    for split in ("dev", "test"):
        for name, value in metrics[split].items():
            if type(value) in (int, float):
                assert latest[f"{split}/{name}"] == pytest.approx(value), f"{split}/{name}"
    assert latest["train_tokens_per_s"] == metrics["train_tokens_per_s"] and latest["steps"] == metrics["steps"]
    assert artifact_files(uri, run_id, "model") == local_files(run / "model")
    assert artifact_files(uri, run_id, "plots") == {"curves.png"}
    out = tmp_path / "export"
    exported = run_main("export", "--model", run / "model", "--out", out, env=export_env, timeout=300)
    assert exported.returncode == 0, exported.stderr
    assert f"export: logged {out} to MLflow run {run_id} as artifacts export/" in exported.stdout
    assert artifact_files(uri, run_id, "export") == local_files(out)
    assert MlflowClient(uri).get_run(run_id).info.status == "FINISHED"
    return found


@pytest.mark.trains
def test_mlflow_gets_the_config_the_metrics_and_the_release(
    small_data: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    uri, run = f"file:{tmp_path / 'mlruns'}", tmp_path / "run"
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    trainer(
        "train",
        *tiny_tagger(small_data["tagger"]),
        "--batch_size",
        "8",
        "--max_steps",
        "6",
        "--log_every",
        "2",
        "--eval_every",
        "3",
        "--report_to",
        "mlflow",
        "--out",
        str(run),
        env={"MLFLOW_TRACKING_URI": uri},
    )
    found = check_release_in_mlflow(uri, "tagger", run, {"MLFLOW_TRACKING_URI": uri}, tmp_path)
    params = found.data.params
    assert (params["lr"], params["batch_size"], params["word_dim"], params["report_to"]) == (
        "0.002",
        "8",
        "16",
        "mlflow",
    )
    assert (params["task"], params["data"], params["lexicon"]) == ("tagger", small_data["tagger"], "wordnet")
    client = MlflowClient(uri)
    losses = client.get_metric_history(found.info.run_id, "train/loss")
    assert [(m.step, m.value) for m in losses] == [(e["step"], e["loss"]) for e in events(run, "train")]
    assert [m.step for m in losses] == [2, 4, 6]
    dev = client.get_metric_history(found.info.run_id, "dev/accuracy")
    released = json.loads((run / "model" / "metrics.json").read_text())["dev"]["accuracy"]
    # The curve of the model in training, then the released model's figure at the last step.
    assert [(m.step, m.value) for m in dev] == [
        (e["step"], e["accuracy"]) for e in events(run, "eval") if e["split"] == "dev"
    ] + [(6, released)]
    assert found.data.metrics["test/accuracy"] == events(run, "eval")[-1]["accuracy"]
    assert not list((run / "logs").rglob("events.out.tfevents.*"))  # mlflow instead of TensorBoard, not both
    assert json.loads((run / "model" / "metrics.json").read_text())["steps"] == 6


@contextlib.contextmanager
def mlflow_server(root: Path) -> Iterator[str]:
    """`mlflow server` on 127.0.0.1 and a free port (sqlite store, proxied artifacts under `root`), in its own
    session, stopped with its process group; its URI once /health answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = (root / "server.log").open("w")
    server = subprocess.Popen(
        [Path(sys.executable).parent / "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
        + ["--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}"]
        + ["--artifacts-destination", str(root / "artifacts")],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None and time.monotonic() < deadline, (root / "server.log").read_text()[-3000:]
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{uri}/health", timeout=5) as response:
                if response.status == 200:
                    break
            time.sleep(0.5)
        yield uri
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(30)
        log.close()


@pytest.mark.slow
@pytest.mark.trains
def test_mlflow_server_gets_the_sentiment_release_with_its_ngram_head(
    small_data: dict[str, str], tmp_path: Path
) -> None:
    """Against a real `mlflow server`: the same contract over HTTP, and for sentiment the latest `dev/accuracy` is
    the released model's (LSTM + n-gram head, as in metrics.json), not the LSTM's alone."""
    pytest.importorskip("flask", reason="`mlflow server` needs the server packages of the dev extra")
    run = tmp_path / "run"
    with mlflow_server(tmp_path) as uri:
        trainer(
            *("train", "--task", "sentiment", "--data", small_data["sentiment"], *TINY_SENTIMENT),
            *("--batch_size", "16", "--max_steps", "8", "--eval_every", "4", "--report_to", "mlflow"),
            *("--out", str(run)),
            env={"MLFLOW_TRACKING_URI": uri},
        )
        found = check_release_in_mlflow(uri, "sentiment", run, {"MLFLOW_TRACKING_URI": uri}, tmp_path)
        metrics = json.loads((run / "model" / "metrics.json").read_text())
        assert found.data.metrics["dev/accuracy"] == pytest.approx(metrics["dev"]["accuracy"])
        assert found.data.metrics["ngram/lstm_dev_accuracy"] == pytest.approx(metrics["ngram"]["lstm_dev_accuracy"])
        assert found.data.params["min_count"] == "2" and found.data.params["lowercase"] == "True"


@pytest.mark.trains
def test_mlflow_refusing_its_store_is_one_line(small_data: dict[str, str], tmp_path: Path) -> None:
    proc = trainer(
        "train",
        *tiny_tagger(small_data["tagger"]),
        "--max_steps",
        "2",
        "--report_to",
        "mlflow",
        "--out",
        str(tmp_path / "run"),
        env={"MLFLOW_TRACKING_URI": f"file:{tmp_path / 'mlruns'}", "MLFLOW_ALLOW_FILE_STORE": "false"},
        check=False,
    )
    assert one_line_error(proc).startswith("error: --report_to mlflow: The filesystem tracking backend")


@pytest.mark.parametrize(
    "argv, expected",
    [
        (
            ["--report_to", "comet"],
            "error: config key 'report_to' must be one of tensorboard, mlflow, wandb, none; got 'comet'",
        ),
        (
            ["--report-to", "mlflow"],
            "error: --report_to mlflow needs the mlflow package, which is not installed: "
            "pip install -e '.[mlflow]' (mlflow-skinny), or pick another --report_to "
            "(tensorboard, mlflow, wandb, none)",
        ),
        (
            ["--report_to", "wandb"],
            "error: --report_to wandb needs the wandb package, which is not installed: "
            "pip install wandb, or pick another --report_to (tensorboard, mlflow, wandb, none)",
        ),
    ],
    ids=["unknown", "mlflow-missing", "wandb-missing"],
)
def test_a_tracker_that_cannot_run_fails_before_torch(tmp_path: Path, argv: list[str], expected: str) -> None:
    package = argv[1] if argv[1] != "comet" else "none"
    args = ["train", "--task", "tagger", "--data", "unused", "--out", str(tmp_path / "run"), *argv]
    proc = trainer("-c", WITHOUT, package, *args, module=None, check=False)
    assert one_line_error(proc) == expected
    assert not (tmp_path / "run").exists()


def test_the_default_tracker_is_tensorboard() -> None:
    from trainer.core.config import TrainConfig

    assert TrainConfig().report_to == "tensorboard" and importlib.util.find_spec("tensorboard") is not None


def test_export_with_a_tracking_uri_logs_only_into_a_run_it_can_find(
    runs: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    """No run in metrics.json: a note and the export. A run the store does not have: one line before any work."""
    pytest.importorskip("mlflow")
    uri = {"MLFLOW_TRACKING_URI": f"file:{tmp_path / 'mlruns'}", "MLFLOW_ALLOW_FILE_STORE": "true"}
    model = tmp_path / "run" / "model"
    shutil.copytree(runs["tagger"][0], model)
    plain = run_main("export", "--model", model, "--out", tmp_path / "plain", env=uri, timeout=300)
    assert plain.returncode == 0, plain.stderr
    assert f"export: MLFLOW_TRACKING_URI is set, but {model}/metrics.json names no MLflow run" in plain.stdout
    metrics = json.loads((model / "metrics.json").read_text()) | {"mlflow_run_id": "0" * 32}
    (model / "metrics.json").write_text(json.dumps(metrics))
    missing = run_main("export", "--model", model, "--out", tmp_path / "missing", env=uri, timeout=300)
    message = one_line_error(missing)
    assert message.startswith(f"error: MLFLOW_TRACKING_URI={uri['MLFLOW_TRACKING_URI']}: run {'0' * 32} ({model}")
    assert not (tmp_path / "missing").exists()
