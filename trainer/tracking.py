"""What `--report_to` sends to its tracker beyond metrics.jsonl's scalars (trainer/loop.py's RunLog).

- At the start (`start_trackers`): the run's parameters: `task`, `data` (the --data spec as given) and
  every field of the train, model and preprocess configs, under their own names (they share none).
- MLflow at the end (`log_release`), for a run that wrote RUN_DIR/model: the released model's figures
  under metrics.json's names (`dev/accuracy`, `test/macro_f1`, ..., `train_tokens_per_s`) at the last
  step, so a metric's latest value is the release's. During training `dev/*` is what the model in
  training scores; the released model can differ from the last of those: the best step's weights, and
  for sentiment with its n-gram head fitted after training (trainer/ngram.py). Then RUN_DIR/model and
  RUN_DIR/plots as the run's artifacts `model/` and `plots/`.
- The MLflow run's id goes into metrics.json (`mlflow_run_id`), so that `python -m export` run with
  MLFLOW_TRACKING_URI set logs the export into the same run (`log_export`, artifact path `export/`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from trainer.core.config import to_dict
from trainer.core.errors import ConfigError

RUN_ID_KEY = "mlflow_run_id"  # in metrics.json


def parameters(job: Any) -> dict[str, Any]:
    """The run's parameters: task, the data spec and every config field."""
    configs = [to_dict(job.train), to_dict(job.model), to_dict(job.preprocess)]
    merged: dict[str, Any] = {"task": job.task, "data": job.data}
    for config in configs:
        assert not merged.keys() & config.keys(), "config field names must not collide as tracker parameters"
        merged |= config
    return merged


def start_trackers(accelerator: Any, job: Any) -> None:
    """--report_to's tracker (main process), with `parameters(job)`. TensorBoard's project is its folder
    under RUN_DIR/logs; mlflow's experiment and wandb's project are named after the task, the run after RUN_DIR."""
    tracker = job.train.report_to
    project = "tensorboard" if tracker == "tensorboard" else f"seqlstm-{job.task}"
    names = {
        "mlflow": {"run_name": job.run_dir.name},
        "wandb": {"name": job.run_dir.name, "dir": str(job.run_dir / "logs")},
    }
    try:
        accelerator.init_trackers(project, config=parameters(job), init_kwargs=names)
    except Exception as exc:
        # The tracker refusing its settings (mlflow: a tracking URI this install cannot use) is the user's to
        # fix, as one line; anything else stays a bug with its traceback.
        if type(exc).__module__.split(".")[0] != tracker:
            raise
        raise ConfigError(f"--report_to {tracker}: {' '.join(str(exc).split())}") from None


def mlflow_run(accelerator: Any) -> Any | None:
    """The active MLflow run of --report_to mlflow on the main process; None otherwise."""
    if not accelerator.is_main_process or not any(t.name == "mlflow" for t in accelerator.trackers):
        return None
    return accelerator.get_tracker("mlflow", unwrap=True)


def run_ids(accelerator: Any) -> dict[str, str]:
    """{"mlflow_run_id": ...} for metrics.json under --report_to mlflow; {} otherwise."""
    run = mlflow_run(accelerator)
    return {} if run is None else {RUN_ID_KEY: run.info.run_id}


def figures(metrics: dict[str, Any]) -> dict[str, float]:
    """metrics.json's numbers under its own names: top-level ones as they are, dev's and test's as `dev/NAME`,
    `test/NAME` (the names RunLog gives the eval events; nested per-type figures stay in metrics.json)."""
    out = {k: float(v) for k, v in metrics.items() if type(v) in (int, float)}
    for split in ("dev", "test"):
        out |= {f"{split}/{k}": float(v) for k, v in (metrics.get(split) or {}).items() if type(v) in (int, float)}
    return out


def log_release(accelerator: Any, run_dir: Path) -> None:
    """MLflow: the released model's figures (read back from RUN_DIR/model/metrics.json) at its last step, then
    RUN_DIR/model and RUN_DIR/plots as artifacts. Called once the model is written, before end_training."""
    run = mlflow_run(accelerator)
    if run is None:
        return
    import mlflow

    from trainer.artifact import read_metrics

    metrics = read_metrics(run_dir / "model" / "metrics.json")

    # The release is logged after the last eval of the same step, so MLflow takes it as the latest value.
    mlflow.log_metrics(figures(metrics), step=int(metrics["steps"]))
    for name in ("model", "plots"):
        if (run_dir / name).is_dir():
            mlflow.log_artifacts(str(run_dir / name), artifact_path=name)


def export_run(metrics: dict[str, Any], model_dir: Path) -> tuple[str, str] | None:
    """(tracking URI, run id) when `python -m export` is to log the export: MLFLOW_TRACKING_URI is set and
    the model's metrics.json names its MLflow run. Checked before the export, so a wrong URI or run id
    fails in one line before minutes of work; None (with a note) when there is nothing to log into."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if not uri:
        return None
    run_id = metrics.get(RUN_ID_KEY)
    if not isinstance(run_id, str) or not run_id:
        print(
            f"export: MLFLOW_TRACKING_URI is set, but {model_dir}/metrics.json names no MLflow run (trained "
            "without --report_to mlflow): the export is not logged to MLflow"
        )
        return None
    try:
        from mlflow.tracking import MlflowClient

        with bounded_http():
            MlflowClient(uri).get_run(run_id)
    except ImportError:
        raise ConfigError(
            "MLFLOW_TRACKING_URI is set: logging the export needs mlflow, which is not installed: "
            "pip install -e '.[mlflow]', or unset MLFLOW_TRACKING_URI"
        ) from None
    except Exception as exc:
        where = f"run {run_id} ({model_dir}/metrics.json)"
        raise ConfigError(f"MLFLOW_TRACKING_URI={uri}: {where}: {one_line(exc)}") from None
    return uri, run_id


@contextlib.contextmanager
def bounded_http() -> Iterator[None]:
    """MLflow's HTTP client retries an unreachable server for minutes by default (7 retries, exponential
    backoff): the look-up before an export gives up after a few seconds instead, unless the user set these."""
    saved = dict(os.environ)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def log_export(target: tuple[str, str], export_dir: Path) -> None:
    """EXPORT_DIR's files as the artifacts `export/` of the training run."""
    from mlflow.tracking import MlflowClient

    uri, run_id = target
    try:
        MlflowClient(uri).log_artifacts(run_id, str(export_dir), artifact_path="export")
    except Exception as exc:
        raise ConfigError(
            f"MLFLOW_TRACKING_URI={uri}: the export in {export_dir} is written but could not be logged to run "
            f"{run_id}: {one_line(exc)}"
        ) from None
    print(f"export: logged {export_dir} to MLflow run {run_id} as artifacts export/")


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
