"""What the training loop iterates: length-bucketed batches, sharded across processes, and the LR schedule.

No torch here; the sampler yields lists of example indices that a DataLoader collates.
"""

from __future__ import annotations

import math

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
    There is no `batch_size` attribute: batches vary in size, and accelerate must not assume one.
    """

    def __init__(self, lengths: np.ndarray, batch_size: int, world: int, seed: int) -> None:
        self.lengths, self.size, self.world, self.seed = np.asarray(lengths), batch_size * world, world, seed
        self.epoch = 0  # set by the training loop, not accelerate's iteration count, so a resume gets it right

    def global_batches(self) -> list[np.ndarray]:
        rng = np.random.default_rng(self.seed + self.epoch)
        order = rng.permutation(len(self.lengths))
        batches = []
        for start in range(0, len(order), self.size * POOL):
            pool = order[start : start + self.size * POOL]
            pool = pool[np.argsort(self.lengths[pool], kind="stable")]
            batches += [pool[i : i + self.size] for i in range(0, len(pool), self.size)]
        # A tail smaller than the world would leave some rank without an example: dropped this epoch.
        return [batches[i] for i in rng.permutation(len(batches)) if len(batches[i]) >= self.world]

    def __iter__(self):
        for batch in self.global_batches():
            for part in np.array_split(batch, self.world):
                yield part.tolist()

    def __len__(self) -> int:
        full_pools, rest = divmod(len(self.lengths), self.size * POOL)
        count = full_pools * POOL + math.ceil(rest / self.size)
        tail = rest % self.size
        return (count - (0 < tail < self.world)) * self.world


def lr_factor(step: int, warmup: int, total: int, schedule: str) -> float:
    """Linear warmup over `warmup` steps, then linear or cosine decay to 0 at `total` (or constant)."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 1.0 - progress if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
