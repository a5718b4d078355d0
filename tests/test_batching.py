"""trainer/batching.py on its own, no training: the length-bucketed sampler shared across processes and the
learning-rate schedules."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.batching import BucketBatchSampler


@pytest.mark.parametrize("n, batch_size, world", [(1000, 8, 1), (1000, 8, 2), (403, 4, 2), (37, 5, 3), (2, 4, 2)])
def test_bucket_sampler_covers_each_example_once_per_epoch(n: int, batch_size: int, world: int) -> None:
    lengths = np.random.default_rng(0).integers(1, 60, n)
    sampler = BucketBatchSampler(lengths, batch_size, world, seed=7)
    batches = list(sampler)
    assert len(batches) == len(sampler) and len(batches) % world == 0  # every rank gets as many batches
    seen = sorted(i for b in batches for i in b)
    assert len(seen) == len(set(seen)) and n - len(seen) < world  # at most a tail smaller than the world is dropped
    assert all(0 < len(b) <= batch_size for b in batches)
    sampler.start_epoch(1)
    assert sorted(i for b in sampler for i in b) == seen
    assert list(sampler) != batches or n <= batch_size * world  # reshuffled unless there is one batch
    sampler.start_epoch(0)
    assert list(sampler) == batches  # deterministic per (seed, epoch)
    if n >= 1000:  # length-bucketed: a batch spans far less than the whole range of lengths
        spread = np.mean([np.ptp(lengths[b]) for b in batches])
        assert spread < 0.25 * np.ptp(lengths)


def test_learning_rate_schedules() -> None:
    from trainer.batching import lr_factor

    assert [lr_factor(s, 4, 14, "linear") for s in (0, 3)] == [0.25, 1.0]  # warmup
    assert lr_factor(9, 4, 14, "linear") == pytest.approx(0.5)
    assert lr_factor(9, 4, 14, "cosine") == pytest.approx(0.5)
    assert lr_factor(6, 4, 14, "cosine") == pytest.approx(0.5 * (1 + np.cos(np.pi * 0.2)))
    assert lr_factor(14, 4, 14, "linear") == lr_factor(20, 4, 14, "cosine") == 0.0
    assert lr_factor(13, 4, 14, "constant") == 1.0
