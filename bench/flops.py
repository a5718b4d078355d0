"""The FLOP floor: multiply-add FLOPs per token of our models, counted analytically, and the
machine's fp32 matmul rate. floor (tokens/s) = rate / FLOPs-per-token: no implementation of the
same arithmetic on this machine can beat it, so a measured figure's fraction of it says how much
is left on the table.

Only matrix products are counted (2 FLOPs per multiply-add). Gate nonlinearities, embeddings,
gathers and softmax are left out: they are O(hidden) per step against O(hidden^2) for the products.
"""

from __future__ import annotations

import time

import numpy as np

from trainer.core.config import ModelConfig, SentimentConfig, TaggerConfig


def lstm_step_flops(inputs: int, hidden: int) -> int:
    """One LSTM time step, one direction: 4 gates x (W_ih x + W_hh h), each a (hidden x n) product."""
    return 4 * (inputs + hidden) * hidden * 2


def stack_flops(inputs: int, hidden: int, layers: int, bidirectional: bool) -> int:
    """One time step through a stack of (bi)LSTM layers; layer k>0 reads the previous layer's output."""
    directions = 2 if bidirectional else 1
    total = 0
    for layer in range(layers):
        total += directions * lstm_step_flops(inputs if layer == 0 else hidden * directions, hidden)
    return total


def flops_per_token(config: ModelConfig, n_labels: int, chars_per_word: float = 0.0) -> float:
    """Forward FLOPs per token (word). `chars_per_word` is the mean number of characters the char
    encoder reads per word (capped at max_word_len); it only matters for the dual tagger.

    Sentiment: the output layer runs once per review, not per token, and is left out (2 x hidden FLOPs).
    """
    if isinstance(config, SentimentConfig):
        return stack_flops(config.embed_dim, config.hidden, config.layers, config.bidirectional)
    assert isinstance(config, TaggerConfig)
    directions = 2 if config.bidirectional else 1
    token_features = config.word_dim + (2 * config.char_hidden if config.char_encoder else 0)
    total = stack_flops(token_features, config.word_hidden, config.layers, config.bidirectional)
    total += 2 * config.word_hidden * directions * n_labels  # output linear
    if config.char_encoder:
        total += chars_per_word * stack_flops(config.char_dim, config.char_hidden, 1, True)
    return total


def executed_flops_per_token(config: ModelConfig, n_labels: int, batches: list[dict]) -> float:
    """FLOPs the exported model runs per real token on padded batches (encoder arrays).

    Every padded word position runs the word LSTM, and every distinct word of the batch (the
    graph's `Unique`) runs the char LSTM for the batch's longest word (W). Over `flops_per_token`
    this is the padding overhead less what the repeats save. (Eager torch also groups distinct
    words by length, so it runs fewer char steps than this.)
    """
    real = executed = 0.0
    per_char = stack_flops(config.char_dim, config.char_hidden, 1, True) if isinstance(config, TaggerConfig) else 0
    for arrays in batches:
        batch, steps = arrays["words"].shape
        real += float(arrays["lengths"].sum())
        executed += batch * steps * flops_per_token(config, n_labels, 0.0)
        if per_char and "chars" in arrays:
            chars = arrays["chars"].reshape(batch * steps, -1)  # (B*T, W)
            keyed = np.concatenate([arrays["word_lengths"].reshape(-1, 1), chars], axis=1)
            executed += len(np.unique(keyed, axis=0)) * chars.shape[1] * per_char  # distinct words x W steps
    return executed / real


def _best_seconds(fn, seconds: float) -> float:
    """Best of repeated calls for `seconds` (at least one): the least-disturbed run of a kernel."""
    fn()  # warm-up: thread pool, caches, page faults
    best = float("inf")
    deadline = time.perf_counter() + seconds
    while best == float("inf") or time.perf_counter() < deadline:
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def matmul_gflops(threads: int, n: int = 1024, seconds: float = 1.0) -> float:
    """Best fp32 GFLOP/s of an n x n torch matmul on `threads` threads (a sgemm upper bound)."""
    import torch

    from bench.common import torch_threads

    a, b = torch.randn(n, n), torch.randn(n, n)
    with torch_threads(threads):
        return 2 * n**3 / _best_seconds(lambda: torch.mm(a, b), seconds) / 1e9


def numpy_matmul_gflops(n: int = 1024, seconds: float = 1.0) -> float:
    """The same with numpy's BLAS at its default thread count (numpy cannot change it at run time)."""
    rng = np.random.default_rng(0)
    a, b = rng.random((n, n), np.float32), rng.random((n, n), np.float32)
    return 2 * n**3 / _best_seconds(lambda: a @ b, seconds) / 1e9
