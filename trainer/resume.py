"""Resuming a run from a checkpoint (`python -m trainer train --resume`): the loop's `TrainState`, what a
checkpoint's copy of it must satisfy, and the re-layout when world size or batch size changed (elastic resume).

trainer/runner.py calls `resume` once, before `Trainer.fit` (trainer/loop.py); the files themselves are read and
verified by trainer/checkpoint.py.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from accelerate.utils import set_seed

from trainer.batching import planned_steps
from trainer.checkpoint import STATE_FILE, Checkpoint, conform, restore
from trainer.core.errors import ArtifactError, ConfigError

if TYPE_CHECKING:
    from trainer.loop import Trainer


@dataclass
class TrainState:
    """What a resumed run needs besides model, optimizer, scheduler and RNG (trainer/checkpoint.py)."""

    step: int = 0  # optimizer steps
    epoch: int = 0
    batches_in_epoch: int = 0  # per-process batches of `epoch` already trained on, in the current layout
    global_batch: int = 0  # the layout's examples per global batch: batch_size x processes
    # This epoch's layouts before a resume changed it: [global batch, processes, batches trained on] each.
    earlier_layouts: list = field(default_factory=list)
    best_metric: float = -1.0
    best_step: int = 0
    best_dev: dict = field(default_factory=dict)
    evals_without_improvement: int = 0
    bad_in_a_row: int = 0
    skipped_steps: int = 0
    tokens: int = 0  # real tokens trained on, all processes
    train_seconds: float = 0.0  # main process, excluding evaluation and checkpoints
    last_eval_step: int = -1
    last_save_step: int = -1


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


def resume(trainer: Trainer, checkpoint: Checkpoint) -> None:
    """Continue `trainer` from `checkpoint`: same settings checked, weights, optimizer, RNG and loop state
    restored, re-laid out if the layout changed, and the steps left planned."""
    path, saved = checkpoint.path, checkpoint.state
    for key, value in trainer.identity.items():
        if saved.get(key) != value:
            raise ConfigError(
                f"--resume {path}: the checkpoint's {key} is {saved.get(key)!r} but this run's is "
                f"{value!r}; resume with the same settings, or train into a new --out"
            )
    where = f"{path / STATE_FILE} 'trainer'"
    fields = conform(dataclasses.asdict(TrainState()), saved["trainer"], where)
    acc = trainer.accelerator
    if not restore(
        checkpoint, acc.unwrap_model(trainer.model), trainer.optimizer, trainer.scheduler, acc.scaler, acc.process_index
    ):
        # A rank the checkpoint did not have: a fresh stream from seed + rank, as a new run's.
        set_seed(trainer.cfg.seed, device_specific=True)
    acc.step = saved["accelerator_step"]  # gradient accumulation's batch counter, as load_state set it
    trainer.state = TrainState(**fields)
    check_layouts(trainer.state, saved["world_size"], len(trainer.parts.sampler.lengths), where)
    if (trainer.state.global_batch, saved["world_size"]) != (
        trainer.cfg.batch_size * acc.num_processes,
        acc.num_processes,
    ):
        relayout(trainer, saved["world_size"])
    plan(trainer)
    trainer.window_seconds = trainer.state.train_seconds
    trainer.best = checkpoint.best


def relayout(trainer: Trainer, saved_world: int) -> None:
    """Resume another layout's checkpoint (world size or batch size changed): same epoch, and the
    examples it had not trained on yet this epoch cut into batches of this layout."""
    state, acc, sampler = trainer.state, trainer.accelerator, trainer.parts.sampler
    old_batch, world = state.global_batch // saved_world, acc.num_processes
    if state.batches_in_epoch:
        state.earlier_layouts.append([state.global_batch, saved_world, state.batches_in_epoch])
    state.batches_in_epoch, state.global_batch = 0, trainer.cfg.batch_size * world
    sampler.start_epoch(state.epoch, state.earlier_layouts)
    left = len(sampler.remaining()[0])
    if len(sampler) == 0:  # fewer examples left than processes: the epoch is over
        state.epoch, state.earlier_layouts = state.epoch + 1, []
    message = (
        f"resuming a {saved_world}-process checkpoint (batch {old_batch}) with {world} "
        f"process{'es' if world > 1 else ''} (batch {trainer.cfg.batch_size}): same epoch and sample "
        f"position, data re-sharded; results are not bit-identical to an uninterrupted run "
        f"(exact only at the same world size and batch size)"
    )
    if acc.is_main_process:
        print(f"train: {message}", file=sys.stderr)
    trainer.log(
        "relayout",
        state.step,
        message=message,
        epoch=state.epoch,
        examples_left_in_epoch=left,
        from_world_size=saved_world,
        from_batch_size=old_batch,
    )


def plan(trainer: Trainer) -> None:
    """The steps this run will take, from where the checkpoint left off (the LR decays to 0 there)."""
    state, parts = trainer.state, trainer.parts
    parts.sampler.start_epoch(state.epoch, state.earlier_layouts)
    left = len(parts.train_loader) - state.batches_in_epoch if state.epoch < trainer.cfg.epochs else 0
    parts.schedule.total = planned_steps(
        state.step,
        left,
        parts.epoch_batches,
        max(0, trainer.cfg.epochs - state.epoch - 1),
        trainer.cfg.grad_accum,
        trainer.cfg.max_steps,
    )
