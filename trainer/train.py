"""`python -m trainer train`: the command line; the run is trainer/runner.py, the loop trainer/loop.py.

The same script runs as one process or as N processes under torchrun (`./launch.sh train --nproc N`);
Accelerator picks the world up from the environment (gloo on CPU, nccl on GPUs). In order:
  1. check the arguments and the config, before torch and accelerate are imported (seconds), so a bad
     argument fails at once; take RUN_DIR's lock (rank 0, trainer/runlock.py: one run per RUN_DIR); then the
     checkpoint to resume from and the data: unusable data fails here, before any process group starts;
  2. build vocabularies from the training split and encode every split once (main process first);
  3. train: length-bucketed batches, gradient accumulation, clipping, warmup + decay, dev scoring,
     best weights kept, early stopping, checkpoints every `save_every` steps and at each epoch end;
  4. score the best weights on test and write RUN_DIR/model once, from the main process.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.core.cli import Parser
from trainer.core.config import (
    MODEL_CONFIGS,
    REPORT_TO,
    TASKS,
    PreprocessConfig,
    TrainConfig,
    apply_overrides,
    check_config,
    check_out_path,
    field_types,
    parse_key_values,
    read_json_config,
)
from trainer.core.data import open_dataset
from trainer.core.errors import ArtifactError, ConfigError, DataError
from trainer.core.tasks import task_kind
from trainer.launchers import check_launch
from trainer.runlock import RunLock, acquire, describe

if TYPE_CHECKING:
    from trainer.checkpoint import Checkpoint
    from trainer.inputs import Split

# Each task's epochs (docs/BENCHMARKS.md sections 1, 2, 9). The tagger's dev accuracy, with word dropout and
# lexicon classes, still rises after 4 epochs: 6 beat 4 on dev over three seeds, at 1.5x the steps. Sentiment's
# epochs are short and it levels off after 8 to 10; 8 keeps its adversarial schedule (two passes a step) within
# twice the time of the earlier 10-epoch one (section 2).
TASK_EPOCHS = {"tagger": 6, "sentiment": 8}
# Each task's default schedule where it differs from TrainConfig's defaults (docs/BENCHMARKS.md sections 1-2,
# which give what each value was chosen over); --config and --key value still override them.
TASK_TRAIN: dict[str, dict[str, Any]] = {
    "tagger": {"word_dropout": 1.0},
    "sentiment": {"lr": 4e-3, "weight_drop": 0.3, "adversarial": 2.0},
}
# The same for the model: sentiment's n-gram head (docs/BENCHMARKS.md section 2). SentimentConfig's default
# stays 0, so that a config.json written before the head existed still reads as a model without one.
TASK_MODEL: dict[str, dict[str, Any]] = {"tagger": {}, "sentiment": {"ngram_buckets": 1 << 18}}
# And for preprocessing: the tagger's unknown words take their WordNet class (section 1). PreprocessConfig's default
# stays "", for the same reason.
TASK_PREPROCESS: dict[str, dict[str, Any]] = {"tagger": {"lexicon": "wordnet"}, "sentiment": {}}


def parse_args(argv: list[str]) -> tuple[Any, Any, PreprocessConfig, TrainConfig]:
    keys = {
        name: sorted(field_types(cls))
        for name, cls in [*MODEL_CONFIGS.items(), ("preprocess", PreprocessConfig), ("train", TrainConfig)]
    }
    parser = Parser(
        prog="python -m trainer train",
        allow_abbrev=False,
        description="Train a tagger or sentiment model; any config key can follow as --key value.",
        epilog="config keys: " + "; ".join(f"{k}: {' '.join(v)}" for k, v in keys.items()),
    )
    parser.add_argument("--task", required=True, choices=TASKS)
    parser.add_argument("--data", required=True, metavar="SPEC")
    parser.add_argument("--out", required=True, type=Path, metavar="RUN_DIR")
    parser.add_argument("--config", type=Path, metavar="FILE", help="JSON object of config keys (before --key value)")
    parser.add_argument("--resume", metavar="auto|PATH", help="continue from the latest or a given checkpoint")
    parser.add_argument(
        "--skip-bad-lines", "--skip_bad_lines", action="store_true", help="skip malformed fasttext lines (counted)"
    )
    args, rest = parser.parse_known_args(argv)
    check_out_path(args.out, "--out", directory=True)
    model, preprocess = (
        MODEL_CONFIGS[args.task](**TASK_MODEL[args.task]),
        PreprocessConfig(**TASK_PREPROCESS[args.task]),
    )
    train = TrainConfig(**TASK_TRAIN[args.task])
    if args.config is not None:
        apply_overrides([model, preprocess, train], read_json_config(args.config), source=f"--config {args.config}")
    apply_overrides([model, preprocess, train], parse_key_values(rest), source="command line")
    train.epochs = train.epochs or TASK_EPOCHS[args.task]
    check_config(model, preprocess, train)
    return args, model, preprocess, train


# --report_to's package, and how to get it: accelerate would silently log to nothing without it.
TRACKER_PACKAGES = {
    "tensorboard": ("tensorboard", "pip install tensorboard"),
    "mlflow": ("mlflow", "pip install -e '.[mlflow]' (mlflow-skinny)"),
    "wandb": ("wandb", "pip install wandb"),
}


def check_tracker(report_to: str) -> None:
    """The tracker's package is importable (looked up, not imported: no seconds spent, no torch)."""
    if report_to in TRACKER_PACKAGES:
        module, install = TRACKER_PACKAGES[report_to]
        if importlib.util.find_spec(module) is None:
            raise ConfigError(
                f"--report_to {report_to} needs the {module} package, which is not installed: "
                f"{install}, or pick another --report_to ({', '.join(REPORT_TO)})"
            )


def find_checkpoint(resume: str | None, run_dir: Path) -> Checkpoint | None:
    """The checkpoint to resume from, read and verified once: `--resume PATH` if it is whole; with `auto`
    the newest whole one, passing over damaged newer ones with one line on stderr; None to start afresh."""
    from trainer.checkpoint import STATE_FILE, list_checkpoints, read_checkpoint  # torch: see `main`

    existing = list_checkpoints(run_dir / "checkpoints")
    if resume is None:
        if existing:
            raise ConfigError(
                f"{run_dir} already has checkpoints ({existing[-1].name}); "
                "continue with --resume auto, or train into a new --out"
            )
        return None
    if resume == "auto":
        return newest_whole_checkpoint(existing, run_dir / "checkpoints")
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        raise ConfigError(
            f"--resume {resume}: not a checkpoint (expected RUN_DIR/checkpoints/step-N with {STATE_FILE}, or auto)"
        )
    try:
        return read_checkpoint(path)
    except ArtifactError as exc:
        raise ArtifactError(f"--resume {resume}: {exc}") from None


def newest_whole_checkpoint(existing: list[Path], root: Path) -> Checkpoint | None:
    from trainer.checkpoint import read_checkpoint

    damaged = []
    for path in reversed(existing):
        try:
            checkpoint = read_checkpoint(path)
        except ArtifactError as exc:
            damaged.append(str(exc))
            continue
        # No process group exists yet, so the rank comes from the launcher's environment: one line, not one each.
        if damaged and os.environ.get("RANK", "0") == "0":
            print(f"train: {'; '.join(damaged)}; resuming from {path.name}", file=sys.stderr)
        return checkpoint
    if damaged:
        raise ArtifactError(
            f"--resume auto: no whole checkpoint in {root}: {'; '.join(damaged)}; train into a new --out"
        )
    return None


def load_splits(spec: str, task: str, skip_bad_lines: bool) -> tuple[dict[str, Split], dict[str, int]]:
    """Every split as tokens and targets, with what was skipped; no usable train or dev data is an error."""
    from trainer.inputs import read_split  # torch: see `main`

    dataset = open_dataset(spec, skip_bad_lines=skip_bad_lines)
    if dataset.task != task:
        raise ConfigError(f"--task {task} does not fit --data {spec}, which holds {dataset.task} data")
    splits = {name: read_split(dataset, name) for name in ("train", "dev", "test") if name in dataset.splits}
    unit = task_kind(task).example
    for name in ("train", "dev"):
        if name not in splits or not splits[name].tokens:
            empty = splits[name].empty if name in splits else 0
            raise DataError(f"--data {spec}: no usable {name} examples ({empty} empty {unit} skipped)")
    skipped = dict(dataset.skipped) | {f"empty {unit} ({name})": s.empty for name, s in splits.items() if s.empty}
    return splits, skipped


def take_lock(run_dir: Path) -> RunLock | None:
    """RUN_DIR's lock, taken by rank 0 for its job (the other ranks check it once the process group is up:
    trainer/runner.py); a lock a dead run left is taken over with one line. No process group exists yet, so
    the rank comes from the launcher's environment."""
    if os.environ.get("RANK", "0") != "0":
        return None
    lock = acquire(run_dir)
    if lock.replaced is not None:
        print(
            f"train: took over the lock of {run_dir} from {describe(lock.replaced)}, which is no longer running",
            file=sys.stderr,
        )
    return lock


def main(argv: list[str]) -> int:
    args, model_config, preprocess, cfg = parse_args(argv)
    check_tracker(cfg.report_to)
    check_launch()  # before seconds of imports: accelerate's one-process CPU launch of "N" processes
    lock = take_lock(args.out)  # before anything is written into RUN_DIR, or a checkpoint is read from it
    try:
        # Only now, with the arguments checked: importing torch and accelerate takes seconds.
        import torch

        from trainer.distributed import failures_named
        from trainer.precision import resolve_precision
        from trainer.runner import Job, run

        precision = resolve_precision(cfg.mixed_precision, cuda=torch.cuda.is_available())
        checkpoint = find_checkpoint(args.resume, args.out)
        splits, skipped = load_splits(args.data, args.task, args.skip_bad_lines)  # before any process group
        job = Job(args.task, args.data, args.out, model_config, preprocess, cfg, precision, checkpoint)
        with failures_named():
            return run(job, splits, skipped, lock.token if lock is not None else "")
    finally:
        if lock is not None:
            lock.release()
