"""One training run of `python -m trainer train`, after trainer/train.py has checked its arguments.

`build` makes the vocabularies, encoded splits, model, optimizer, schedule and loaders; `run` builds,
resumes if asked, hands over to the loop (trainer/loop.py) and writes RUN_DIR/model once, from the
main process, unless `session_steps` stopped the run first.
"""

from __future__ import annotations

import hashlib
import json  # the vocabulary's hash in a run's identity: json.dumps' bytes, as checkpoints hold them
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, broadcast_object_list, gather_object, set_seed
from torch.utils.data import DataLoader

from trainer.artifact import save_artifact
from trainer.batching import BucketBatchSampler, Schedule, planned_steps
from trainer.checkpoint import Checkpoint
from trainer.core.config import ModelConfig, PreprocessConfig, TrainConfig, to_dict
from trainer.core.errors import DataError
from trainer.core.jsonio import dumps
from trainer.core.lexicon import open_lexicon
from trainer.core.preprocess import Encoder, build_vocabs
from trainer.core.tasks import task_kind
from trainer.distributed import start_process_group, waiting
from trainer.eventlog import RunLog
from trainer.inputs import Collate, EncodedSplit, Split, eval_loader
from trainer.launchers import check_shared_run_dir, nodes
from trainer.loop import Parts, Trainer
from trainer.models import build_model, run_lstms_in_float32, set_weight_drop
from trainer.plots import plot_curves
from trainer.precision import Precision
from trainer.resume import resume
from trainer.runlock import check_lock
from trainer.tasks import task_side
from trainer.tracking import log_release, run_ids, start_trackers


@dataclass
class Job:
    """What `python -m trainer train` was asked to do, every part checked (trainer/train.py)."""

    task: str
    data: str  # the --data spec, as given
    run_dir: Path
    model: ModelConfig
    preprocess: PreprocessConfig
    train: TrainConfig
    precision: Precision
    checkpoint: Checkpoint | None  # what to resume from, already read and verified; None starts afresh


def build(accelerator: Accelerator, job: Job, splits: dict[str, Split]) -> Parts:
    """Vocabularies, encoded splits, model, optimizer, schedule and loaders, prepared."""
    task, model_config, cfg = job.task, job.model, job.train
    kind, side = task_kind(task), task_side(task)
    labels = list(kind.labels)
    # Accelerate's idiom for preprocessing. Encoding is deterministic, so every rank builds the same ids;
    # taking turns keeps N processes on one small machine from peaking in memory together.
    with accelerator.main_process_first():
        chars = kind.char_encoder and model_config.char_encoder
        lexicon = open_lexicon(job.preprocess.lexicon)
        vocabs = build_vocabs(splits["train"].tokens, labels, job.preprocess, chars=chars, lexicon=lexicon)
        encoder = Encoder(vocabs, job.preprocess)
        data = {name: EncodedSplit(split, encoder, side) for name, split in splits.items() if split.tokens}
    model = build_model(model_config, vocabs)
    set_weight_drop(model, cfg.weight_drop)
    try:  # the fused kernel is several times faster on CPU, where torch < 2.4 lacks it
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    except RuntimeError:
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    collate = Collate(encoder, side)
    sampler = BucketBatchSampler(data["train"].lengths, cfg.batch_size, accelerator.num_processes, cfg.seed)
    if len(sampler) == 0:
        raise DataError(f"{len(data['train'])} training examples cannot feed {accelerator.num_processes} processes")
    # Its own generator: starting an epoch then draws nothing from the global (dropout) RNG, so a
    # resumed run's random stream matches an uninterrupted one.
    train = DataLoader(data["train"], batch_sampler=sampler, collate_fn=collate, generator=torch.Generator())
    epoch_batches = len(sampler) // accelerator.num_processes
    schedule = Schedule(
        cfg.warmup_steps,
        planned_steps(0, epoch_batches, epoch_batches, cfg.epochs - 1, cfg.grad_accum, cfg.max_steps),
        cfg.schedule,
    )
    # Stepped by hand once per optimizer step rather than prepared: a prepared scheduler steps once per
    # process, which would bend the schedule with the world size. trainer.checkpoint saves its counters.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    names = [name for name in ("dev", "test") if name in data]
    model, optimizer, train, *loaders = accelerator.prepare(
        model, optimizer, train, *(eval_loader(data[n], collate, cfg.eval_batch_size) for n in names)
    )
    return Parts(
        model,
        optimizer,
        scheduler,
        schedule,
        train,
        sampler,
        dict(zip(names, loaders, strict=True)),
        labels,
        epoch_batches,
        vocabs,
        data,
    )


def start(job: Job, lock_token: str) -> Accelerator:
    """The process group and the Accelerator, threads and seeds, and RUN_DIR checked as every rank's."""
    cfg, precision = job.train, job.precision
    start_process_group(cfg.dist_timeout)  # before Accelerator(), which then uses it (trainer/distributed.py)
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision=precision.mode,
        gradient_accumulation_steps=cfg.grad_accum,
        log_with=None if cfg.report_to == "none" else cfg.report_to,
        project_dir=str(job.run_dir / "logs"),
        # The only buffers are sentiment's n-gram head, zeros until training ends (trainer/ngram.py): DDP's
        # broadcast of them before every forward would move a megabyte a step for nothing.
        kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)],
    )
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    # Per-process seeds (seed + rank) so that dropout masks differ across processes; the initial
    # weights still agree, because preparing the model broadcasts rank 0's.
    set_seed(cfg.seed, device_specific=True)
    if nodes() > 1:  # every rank writes into RUN_DIR: it must be one directory for all of them
        check_shared_run_dir(
            job.run_dir,
            accelerator.process_index,
            lambda token: broadcast_object_list([token])[0],
            lambda ok: gather_object([ok]),
            accelerator.wait_for_everyone,
        )
    if accelerator.num_processes > 1:
        check_lock(job.run_dir, accelerator.process_index, broadcast_object_list([lock_token])[0])
    return accelerator


def run(job: Job, splits: dict[str, Split], skipped: dict[str, int], lock_token: str) -> int:
    """Build, resume if asked, train, and write the release model (unless a session limit stopped it).
    `lock_token`: RUN_DIR's lock as rank 0 took it (trainer/runlock.py), "" on the other ranks."""
    cfg, precision = job.train, job.precision
    accelerator = start(job, lock_token)
    with waiting("the start (vocabularies, encoding, preparing the model)"):
        parts = build(accelerator, job, splits)
    if precision.lstm_in_float32:
        run_lstms_in_float32(accelerator.unwrap_model(parts.model))
        accelerator.print(f"train: {precision.note}")
    identity = {
        "task": job.task,
        "model": to_dict(job.model),
        "preprocess": to_dict(job.preprocess),
        "vocab_sha256": hashlib.sha256(json.dumps(parts.vocabs.to_json()).encode()).hexdigest(),
    }
    log = RunLog(accelerator, job.run_dir / "logs" / "metrics.jsonl", fresh=job.checkpoint is None)
    trainer = Trainer(accelerator, parts, cfg, job.task, job.run_dir, identity, log)
    if job.checkpoint is not None:
        trainer.apply(resume(job.checkpoint, identity, accelerator, parts, cfg, log))
    examples = {name: len(d) for name, d in parts.data.items()}
    skipped |= {
        f"truncated to {job.preprocess.max_tokens} tokens ({name})": d.truncated
        for name, d in parts.data.items()
        if d.truncated
    }
    announce(accelerator, job, trainer, log, examples, skipped)

    reason = trainer.fit()
    if reason == "session_steps":
        if trainer.state.last_save_step != trainer.state.step:
            trainer.save_checkpoint()
        accelerator.print(
            f"train: stopped after session_steps={cfg.session_steps} at step {trainer.state.step}; "
            "continue with --resume auto (no model written yet)"
        )
    else:
        with waiting("the test evaluation and the release model"):
            release(accelerator, job, trainer, reason, examples, skipped)
    if accelerator.is_main_process:
        plot_curves(log.path, job.run_dir / "plots" / "curves.png")
    if reason != "session_steps":
        log_release(accelerator, job.run_dir)
    accelerator.end_training()
    return 0


def announce(
    accelerator: Accelerator, job: Job, trainer: Trainer, log: RunLog, examples: dict[str, int], skipped: dict[str, int]
) -> None:
    """The run's settings: the tracker's parameters, one line on stdout and the `start` event."""
    precision, checkpoint = job.precision, job.checkpoint
    start_trackers(accelerator, job)
    accelerator.print(
        f"train: {job.task} on {job.data}, world size {accelerator.num_processes} "
        f"({accelerator.distributed_type.value} on {accelerator.device}), mixed precision "
        f"{precision.mode}, examples {examples}, skipped {skipped or 'none'}, "
        f"{trainer.parts.schedule.total} steps"
        + (f", resuming at step {trainer.state.step}" if checkpoint is not None else "")
    )
    log(
        "start",
        trainer.state.step,
        task=job.task,
        data=job.data,
        world_size=accelerator.num_processes,
        mixed_precision=precision.mode,
        lstm_precision=precision.lstm,
        examples=examples,
        skipped=skipped,
        resumed_from=str(checkpoint.path) if checkpoint is not None else None,
        config={"model": to_dict(job.model), "preprocess": to_dict(job.preprocess), "train": to_dict(job.train)},
    )


def release(
    accelerator: Accelerator, job: Job, trainer: Trainer, reason: str, examples: dict[str, int], skipped: dict[str, int]
) -> None:
    """Test metrics of the best weights, then RUN_DIR/model with metrics.json, and one JSON line on stdout."""
    metrics = {
        "task": job.task,
        "data": job.data,
        "world_size": accelerator.num_processes,
        "mixed_precision": job.precision.mode,
        "lstm_precision": job.precision.lstm,
        **trainer.finish(reason),
        "examples": examples,
        "skipped": skipped,
        **run_ids(accelerator),  # where `python -m export` logs the export (trainer/tracking.py)
    }
    # The release model: written once, by the main process, after every process is done with it.
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        model = accelerator.unwrap_model(trainer.model)
        save_artifact(job.run_dir / "model", model, job.model, job.preprocess, trainer.parts.vocabs, metrics)
        accelerator.print(
            dumps(
                {k: metrics[k] for k in ("steps", "stopped", "train_tokens_per_s")}
                | {
                    "dev_accuracy": metrics["dev"].get("accuracy"),
                    "test_accuracy": (metrics["test"] or {}).get("accuracy"),
                    "model": str(job.run_dir / "model"),
                },
                nan_as_null=True,
            )
        )
