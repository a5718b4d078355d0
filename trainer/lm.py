"""The LSTM language model of `python -m trainer pretrain --objective lstm` (Dai & Le 2015's LM pretraining).

A bidirectional LM shaped like the first layer of a sentiment model's encoder (trainer.models.SentimentNet):
an embedding, then a forward LSTM that predicts each next word and a backward LSTM that reads the sentence
reversed (within its own length, as `PaddedLSTM` does) and predicts each previous word. The two directions
never see each other, so neither sees the word it predicts. Both share one softmax over the `output_words`
most frequent words; `<pad>` (id 0) is the end-of-sentence target.

Only the first layer is pretrained: in the encoder a second layer reads both directions of the first, so a
language model cannot train it without seeing the future. Its tensors are saved under the sentiment model's
own parameter names (`ENCODER_KEYS`), so `train --init_embeddings` copies them by name (`copy_layers`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from torch import nn

from trainer.core.config import PretrainConfig
from trainer.core.errors import ConfigError
from trainer.models import gather_time, reverse_index
from trainer.progress import StepProgress

LSTM_PARAMS = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
DIRECTIONS = ("encoder.forward_layers.0.", "encoder.backward_layers.0.")  # SentimentNet's first layer
ENCODER_KEYS = tuple(prefix + name for prefix in DIRECTIONS for name in LSTM_PARAMS)
PROGRESS_EVERY = 30.0  # seconds between progress lines off a terminal (trainer/progress.py)


class BiLanguageModel(nn.Module):
    """(B, T) word ids and lengths -> summed next-word (forward) and previous-word (backward) loss."""

    def __init__(self, vocab_size: int, config: PretrainConfig) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, config.embed_dim, padding_idx=0)
        self.forward_lstm = nn.LSTM(config.embed_dim, config.hidden, batch_first=True)
        self.backward_lstm = nn.LSTM(config.embed_dim, config.hidden, batch_first=True)
        self.dropout = nn.Dropout(config.dropout)
        # Most of a full softmax's time would go to rare words: the adaptive softmax (Grave et al. 2017) puts
        # the 1,000 most frequent in its head (ids are by frequency) and the rest in two smaller clusters
        # (a small vocabulary: half in the head).
        cutoffs = [c for c in (1000, 4000) if c < config.output_words - 1] or [config.output_words // 2]
        self.output = nn.AdaptiveLogSoftmaxWithLoss(config.hidden, config.output_words, cutoffs, div_value=4.0)
        self.output_words = config.output_words

    def forward(self, words: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss summed over both directions' predictions, their count)."""
        index = reverse_index(lengths, words.shape[1])
        x = self.dropout(self.embedding(words))
        total, count = 0.0, 0
        for lstm, ids, inputs in (
            (self.forward_lstm, words, x),
            (self.backward_lstm, words.gather(1, index), gather_time(x, index)),
        ):
            h = self.dropout(lstm(inputs)[0])  # (B, T, H)
            target = next_words(ids, lengths, self.output_words)
            real = target >= 0
            n = int(real.sum())
            total = total + self.output(h[real], target[real]).loss * n
            count += n
        return total, torch.tensor(count)

    def encoder_state(self) -> dict[str, torch.Tensor]:
        """The two LSTMs under the sentiment encoder's names (ENCODER_KEYS)."""
        return {
            prefix + name: getattr(lstm, name).detach().to("cpu", torch.float32).contiguous()
            for prefix, lstm in zip(DIRECTIONS, (self.forward_lstm, self.backward_lstm), strict=True)
            for name in LSTM_PARAMS
        }


def next_words(ids: torch.Tensor, lengths: torch.Tensor, output_words: int) -> torch.Tensor:
    """(B, T) target of each position: the next word's id (rarer than `output_words`: `<unk>`), 0 (end) after
    the last word, -1 at padding."""
    target = torch.cat([ids[:, 1:], torch.zeros_like(ids[:, :1])], dim=1)
    target = torch.where(target < output_words, target, torch.ones_like(target))
    positions = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0)
    target = torch.where(positions == (lengths - 1).unsqueeze(1), torch.zeros_like(target), target)
    return torch.where(positions < lengths.unsqueeze(1), target, torch.full_like(target, -1))


def batches(sentences: list[np.ndarray], batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled batches of similar-length sentence indices (sorted within pools of 50 batches)."""
    order = rng.permutation(len(sentences))
    lengths = np.array([len(s) for s in sentences])
    out = []
    for start in range(0, len(order), batch_size * 50):
        pool = order[start : start + batch_size * 50]
        pool = pool[np.argsort(lengths[pool], kind="stable")]
        out += [pool[i : i + batch_size] for i in range(0, len(pool), batch_size)]
    return [out[i] for i in rng.permutation(len(out))]


def pad(sentences: list[np.ndarray], index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = np.array([len(sentences[i]) for i in index], np.int64)
    words = np.zeros((len(index), lengths.max()), np.int64)
    for row, i in enumerate(index):
        words[row, : lengths[row]] = sentences[i]
    return torch.from_numpy(words), torch.from_numpy(lengths)


def fit_lm(
    accelerator: Accelerator,
    model: BiLanguageModel,
    optimizer: torch.optim.Optimizer,
    sentences: list[np.ndarray],
    cfg: PretrainConfig,
) -> tuple[int, int, float, float]:
    """Train on `sentences` (id arrays) for cfg.epochs (or cfg.max_steps); (steps, tokens, seconds, smoothed loss).
    One process: the LM is small, and gradients of the full softmax would dominate an all-reduce."""
    rng = np.random.default_rng(cfg.seed)
    per_epoch = math.ceil(len(sentences) / cfg.batch_size)
    total = cfg.epochs * per_epoch if not cfg.max_steps else min(cfg.max_steps, cfg.epochs * per_epoch)

    def train_step(index: np.ndarray) -> tuple[torch.Tensor, int]:
        words, lengths = pad(sentences, index)
        loss_sum, count = model(words.to(accelerator.device), lengths.to(accelerator.device))
        loss = loss_sum / count.clamp(min=1)
        optimizer.zero_grad()
        accelerator.backward(loss)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        return loss, int(lengths.sum())

    return run_steps(total, lambda: batches(sentences, cfg.batch_size, rng), train_step)


def run_steps(
    total: int,
    epoch: Callable[[], Iterable[Any]],
    train_step: Callable[[Any], tuple[torch.Tensor, int]],
    show: bool = True,
) -> tuple[int, int, float, float]:
    """`train_step(batch)` (one optimizer step: its loss and tokens) over `epoch()`'s batches, pass after
    pass, until `total` steps, with a progress bar; (steps, tokens, seconds, smoothed loss). Both
    pretraining objectives (this LM and trainer.pretrain's N-gram LM) train through it."""
    bar = StepProgress("pretrain", total, 0, every=PROGRESS_EVERY, quiet=not show)
    step, tokens, started, loss_avg = 0, 0, time.time(), float("nan")
    while step < total:
        for batch in epoch():
            loss, batch_tokens = train_step(batch)
            step, tokens = step + 1, tokens + batch_tokens
            loss_avg = loss.item() if step == 1 else 0.98 * loss_avg + 0.02 * loss.item()
            bar.step(step, loss_avg, tokens / max(time.time() - started, 1e-9))
            if step >= total:
                break
    bar.close()
    return step, tokens, time.time() - started, loss_avg


@torch.no_grad()
def score_lm(model: BiLanguageModel, sentences: list[np.ndarray], batch_size: int) -> dict[str, float]:
    """Held-out perplexity, both directions together (<unk> and the end count as words, as in training)."""
    model.eval()
    loss, count = 0.0, 0
    for start in range(0, len(sentences), batch_size):
        words, lengths = pad(sentences, np.arange(start, min(start + batch_size, len(sentences))))
        total, n = model(words, lengths)
        loss, count = loss + float(total), count + int(n)
    model.train()
    return {"perplexity": round(math.exp(loss / max(count, 1)), 3), "tokens": count}


@torch.no_grad()
def copy_layers(model: nn.Module, layers: dict[str, torch.Tensor], where: str) -> list[str]:
    """Copy pretrained encoder tensors into `model` by name; the names copied. A unidirectional model takes
    the forward direction only; a shape that differs is a ConfigError naming the config key to change."""
    own = model.state_dict()
    copied = []
    for key in ENCODER_KEYS:  # in this order, so that a mismatch is named the same way each time
        if key not in own or key not in layers:
            continue
        tensor = layers[key]
        if own[key].shape != tensor.shape:
            raise ConfigError(
                f"{where}: pretrained {key} has shape {tuple(tensor.shape)}, the model's is "
                f"{tuple(own[key].shape)}; pretrain with the model's embed_dim and hidden"
            )
        own[key].copy_(tensor.to(own[key].dtype))
        copied.append(key)
    return copied
