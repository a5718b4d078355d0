"""What the training loop iterates: length-bucketed batches, sharded across processes, and the LR schedule.

No torch here; the sampler yields lists of example indices that a DataLoader collates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

POOL = 50  # global batches per length-sorting pool: sorted enough to pad little, mixed enough to shuffle


class BucketBatchSampler:
    """Per-process batches of similar-length examples, reshuffled every epoch, in rank order.

    Examples are shuffled (seed + epoch), cut into pools of POOL global batches, sorted by length
    within a pool and cut into global batches of `batch_size * world`; the global batches are
    shuffled and each is split into `world` consecutive per-process batches. Accelerate's
    BatchSamplerShard deals batch i to rank i % world, so every rank gets the same number of
    batches and one step's ranks hold similar lengths. A step's examples do not depend on the world
    size (1 process with batch B*N sees the same steps as N processes with batch B).

    A resume with another layout (world size or batch size) mid-epoch names the epoch's earlier
    layouts, each as (global batch, world, global batches trained on): those batches are replayed
    from the same shuffle and left out, and the examples not yet trained on this epoch, in their
    shuffled order, are cut the same way at the new layout. No example is repeated or skipped.
    There is no `batch_size` attribute: batches vary in size, and accelerate must not assume one.
    """

    def __init__(self, lengths: np.ndarray, batch_size: int, world: int, seed: int) -> None:
        self.lengths, self.size, self.world, self.seed = np.asarray(lengths), batch_size * world, world, seed
        # Set by the training loop (`start_epoch`), not by accelerate's iteration count (which would call a
        # `set_epoch`), so a resume gets them right.
        self.epoch = 0
        self.earlier: list[tuple[int, int, int]] = []

    def start_epoch(self, epoch: int, earlier: Sequence[Sequence[int]] = ()) -> None:
        self.epoch, self.earlier = epoch, [(size, world, done) for size, world, done in earlier]

    def remaining(self) -> tuple[np.ndarray, np.random.Generator]:
        """The epoch's examples not trained on under an earlier layout, in shuffled order, and the epoch's RNG."""
        rng = np.random.default_rng(self.seed + self.epoch)
        order = rng.permutation(len(self.lengths))
        for size, world, done in self.earlier:
            trained = self.cut(order, size, world, rng)[:done]
            if trained:
                order = order[~np.isin(order, np.concatenate(trained))]
        return order, rng

    def cut(self, order: np.ndarray, size: int, world: int, rng: np.random.Generator) -> list[np.ndarray]:
        """`order` as shuffled global batches of `size` similar-length examples."""
        batches = []
        for start in range(0, len(order), size * POOL):
            pool = order[start : start + size * POOL]
            pool = pool[np.argsort(self.lengths[pool], kind="stable")]
            batches += [pool[i : i + size] for i in range(0, len(pool), size)]
        # A tail smaller than the world would leave some rank without an example: dropped this epoch.
        return [batches[i] for i in rng.permutation(len(batches)) if len(batches[i]) >= world]

    def global_batches(self) -> list[np.ndarray]:
        order, rng = self.remaining()
        return self.cut(order, self.size, self.world, rng)

    def __iter__(self):
        for batch in self.global_batches():
            for part in np.array_split(batch, self.world):
                yield part.tolist()

    def __len__(self) -> int:
        examples = len(self.remaining()[0]) if self.earlier else len(self.lengths)
        full_pools, rest = divmod(examples, self.size * POOL)
        count = full_pools * POOL + math.ceil(rest / self.size)
        tail = rest % self.size
        return (count - (0 < tail < self.world)) * self.world


def word_drop_probabilities(sentences: Sequence[np.ndarray], unknown_ids: np.ndarray, alpha: float) -> np.ndarray:
    """(V,) float32: the chance that word dropout turns each word id into its unknown form, alpha / (alpha + count),
    `count` being the id's occurrences in the training `sentences` (id arrays). Ids whose unknown form is
    themselves (`unknown_ids[i] == i`: `<pad>`, `<unk>`, the lexicon's classes) are never dropped; alpha 0
    drops nothing."""
    prob = np.zeros(len(unknown_ids), np.float32)
    if alpha > 0:
        counts = np.bincount(np.concatenate([np.zeros(0, np.int64), *sentences]), minlength=len(unknown_ids))
        prob[:] = alpha / (alpha + counts)
        prob[unknown_ids == np.arange(len(unknown_ids))] = 0
    return prob


def planned_steps(
    step: int, batches_left: int, epoch_batches: int, epochs_after: int, grad_accum: int, max_steps: int
) -> int:
    """Optimizer steps a run will have taken at its end: `step` so far, then those of the `batches_left`
    per-process batches of this epoch and of `epochs_after` whole epochs (a partial accumulation steps too)."""
    total = step + math.ceil(batches_left / grad_accum) + epochs_after * math.ceil(epoch_batches / grad_accum)
    return min(total, max_steps) if max_steps else total


@dataclass
class Schedule:
    """LambdaLR's factor by optimizer step; `total` is planned again when a resume changes the steps left."""

    warmup: int
    total: int
    kind: str

    def __call__(self, step: int) -> float:
        return lr_factor(step, self.warmup, self.total, self.kind)


def lr_factor(step: int, warmup: int, total: int, schedule: str) -> float:
    """Linear warmup over `warmup` steps, then linear or cosine decay to 0 at `total` (or constant)."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 1.0 - progress if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
