"""`--report_to tensorboard|mlflow|wandb|none`: the metrics of metrics.jsonl also go to accelerate's tracker.

mlflow runs against a local file store (no server). mlflow 3.x refuses its file store unless
MLFLOW_ALLOW_FILE_STORE=true, and mlflow-skinny has no sqlite backend, so the test opts in.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from helpers import events, one_line_error, tiny_tagger, trainer

# `python -m trainer` as if `module` were not installed (the package lookup answers None for it).
WITHOUT = """
import importlib.util, sys
real, missing = importlib.util.find_spec, sys.argv.pop(1)
importlib.util.find_spec = lambda name, *a: None if name == missing else real(name, *a)
from trainer.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.trains
def test_mlflow_gets_the_config_and_the_metrics(
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
    client = MlflowClient(uri)
    [experiment] = [e for e in client.search_experiments() if e.name == "seqlstm-tagger"]
    [found] = client.search_runs([experiment.experiment_id])
    assert found.info.status == "FINISHED" and found.info.run_name == "run"
    params = found.data.params
    assert (params["lr"], params["batch_size"], params["word_dim"], params["report_to"]) == (
        "0.002",
        "8",
        "16",
        "mlflow",
    )
    losses = client.get_metric_history(found.info.run_id, "train/loss")
    assert [(m.step, m.value) for m in losses] == [(e["step"], e["loss"]) for e in events(run, "train")]
    assert [m.step for m in losses] == [2, 4, 6]
    dev = client.get_metric_history(found.info.run_id, "dev/accuracy")
    assert [(m.step, m.value) for m in dev] == [
        (e["step"], e["accuracy"]) for e in events(run, "eval") if e["split"] == "dev"
    ]
    assert len(dev) == 2 and found.data.metrics["test/accuracy"] == events(run, "eval")[-1]["accuracy"]
    assert not list((run / "logs").rglob("events.out.tfevents.*"))  # mlflow instead of TensorBoard, not both
    assert json.loads((run / "model" / "metrics.json").read_text())["steps"] == 6


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
