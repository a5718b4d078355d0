"""Resuming a run from a checkpoint (`python -m trainer train --resume`): the settings checked, weights,
optimizer, scheduler and RNG restored in place, the loop's `TrainState` read back and checked, and the
re-layout when world size or batch size changed (elastic resume).

trainer/runner.py calls `resume` once, before `Trainer.fit`, and hands what it returns to `Trainer.apply`
(trainer/loop.py); the files themselves are read and verified by trainer/checkpoint.py.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

from accelerate import Accelerator
from accelerate.utils import set_seed

from trainer.batching import planned_steps
from trainer.checkpoint import STATE_FILE, Checkpoint, conform, restore
from trainer.core.config import TrainConfig
from trainer.core.errors import ArtifactError, ConfigError
from trainer.eventlog import RunLog
from trainer.loop import Parts, Resumed, TrainState


def check_layouts(state: TrainState, world: int, examples: int, where: str) -> None:
    """The sampler's layouts from a checkpoint: a crafted one must not reach numpy as a bad batch size, nor
    make the sampler replay more layouts than the epoch has examples (each trained on at least one batch)."""
    layouts = [[state.global_batch, world, state.batches_in_epoch], *state.earlier_layouts]
    for i, layout in enumerate(layouts):
        if not (
            isinstance(layout, list)
            and len(layout) == 3
            and all(type(x) is int for x in layout)
            and 1 <= layout[1] <= layout[0]
            and layout[2] >= (1 if i else 0)
        ):
            raise ArtifactError(
                f"{where}: bad sampler layout {layout!r}; expected [global batch >= processes >= 1, "
                "batches trained on >= 1 (>= 0 for the last)]"
            )
    # Every batch a layout trained on held at least one example per process.
    if sum(world_ * done for _, world_, done in layouts) > examples:
        raise ArtifactError(f"{where}: the sampler layouts account for more than the {examples} training examples")


def resume(
    checkpoint: Checkpoint,
    identity: dict[str, Any],
    accelerator: Accelerator,
    parts: Parts,
    cfg: TrainConfig,
    log: RunLog,
) -> Resumed:
    """Continue from `checkpoint`: same settings checked; weights, optimizer, scheduler and RNG restored into
    `parts` and this process; the loop state re-laid out if the layout changed, and the steps left planned."""
    path, saved, acc = checkpoint.path, checkpoint.state, accelerator
    for key, value in identity.items():
        if saved.get(key) != value:
            raise ConfigError(
                f"--resume {path}: the checkpoint's {key} is {saved.get(key)!r} but this run's is "
                f"{value!r}; resume with the same settings, or train into a new --out"
            )
    where = f"{path / STATE_FILE} 'trainer'"
    fields = conform(dataclasses.asdict(TrainState()), saved["trainer"], where)
    if not restore(
        checkpoint, acc.unwrap_model(parts.model), parts.optimizer, parts.scheduler, acc.scaler, acc.process_index
    ):
        # A rank the checkpoint did not have: a fresh stream from seed + rank, as a new run's.
        set_seed(cfg.seed, device_specific=True)
    state = TrainState(**fields)
    check_layouts(state, saved["world_size"], len(parts.sampler.lengths), where)
    if (state.global_batch, saved["world_size"]) != (cfg.batch_size * acc.num_processes, acc.num_processes):
        relayout(state, saved["world_size"], acc, parts, cfg, log)
    return Resumed(state, checkpoint.best, plan(state, parts, cfg), saved["accelerator_step"])


def relayout(
    state: TrainState, saved_world: int, acc: Accelerator, parts: Parts, cfg: TrainConfig, log: RunLog
) -> None:
    """Resume another layout's checkpoint (world size or batch size changed): same epoch, and the
    examples it had not trained on yet this epoch cut into batches of this layout."""
    sampler = parts.sampler
    old_batch, world = state.global_batch // saved_world, acc.num_processes
    if state.batches_in_epoch:
        state.earlier_layouts.append([state.global_batch, saved_world, state.batches_in_epoch])
    state.batches_in_epoch, state.global_batch = 0, cfg.batch_size * world
    sampler.start_epoch(state.epoch, state.earlier_layouts)
    left = len(sampler.remaining()[0])
    if len(sampler) == 0:  # fewer examples left than processes: the epoch is over
        state.epoch, state.earlier_layouts = state.epoch + 1, []
    message = (
        f"resuming a {saved_world}-process checkpoint (batch {old_batch}) with {world} "
        f"process{'es' if world > 1 else ''} (batch {cfg.batch_size}): same epoch and sample "
        f"position, data re-sharded; results are not bit-identical to an uninterrupted run "
        f"(exact only at the same world size and batch size)"
    )
    if acc.is_main_process:
        print(f"train: {message}", file=sys.stderr)
    log(
        "relayout",
        state.step,
        message=message,
        epoch=state.epoch,
        examples_left_in_epoch=left,
        from_world_size=saved_world,
        from_batch_size=old_batch,
    )


def plan(state: TrainState, parts: Parts, cfg: TrainConfig) -> int:
    """The steps this run will take, from where the checkpoint left off (the LR decays to 0 there)."""
    parts.sampler.start_epoch(state.epoch, state.earlier_layouts)
    left = len(parts.train_loader) - state.batches_in_epoch if state.epoch < cfg.epochs else 0
    return planned_steps(
        state.step,
        left,
        parts.epoch_batches,
        max(0, cfg.epochs - state.epoch - 1),
        cfg.grad_accum,
        cfg.max_steps,
    )
