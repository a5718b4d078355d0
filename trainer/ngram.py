"""The sentiment model's n-gram head: a linear model over word unigrams and hashed bigrams, beside the LSTM.

A review's logit is the LSTM's plus this head's: Σ weight[f] over its n-gram features f (counted, not
deduplicated), plus a bias. The features are functions of the word ids alone, so the head lives inside
the exported graph (a `Gather`, a masked `ReduceSum`) and `serve` feeds the same two inputs as before.

- Unigram feature: the word id (`<unk>` included). Bigram feature: the pair of adjacent ids hashed into
  `buckets` rows after the vocabulary's, `V + (a * PRIME + b) mod buckets`. Padding adds nothing.
- Fitted apart from the LSTM, once it has trained (`fit`, the sentiment task's last step in trainer/tasks.py):
  an NBSVM-style logistic regression (Wang & Manning 2012) on the training split. Each feature is scaled
  by its Naive Bayes log-count ratio; the weights then take full-batch Adam steps against the logistic loss with an L2
  penalty. A linear model over 10k reviews separates its training set almost exactly; trained jointly,
  it would leave the LSTM no gradient to learn from, so the two are fitted in turn and their logits summed
  (docs/BENCHMARKS.md section 2: on Rotten Tomatoes the sum beats either alone).
- Until `fit` runs, the head's weights are zero buffers, so it adds exactly 0.0 to every logit:
  training, dev scoring and checkpoints see the LSTM alone. They are buffers, not parameters: no
  optimizer or gradient touches them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

PRIME = 1_000_003  # the bigram hash's multiplier; word ids stay far below 2**63 / PRIME, so int64 never overflows
STEPS = 60  # full-batch Adam steps from zero: stopping this early regularizes the head (with the L2 below)
LR = 0.01
L2 = 3e-6  # on the unscaled weights, summed over features; both chosen on dev (docs/BENCHMARKS.md section 2)
MAX_REVIEWS = 100_000  # fitted on at most this many training reviews, evenly spaced: a linear model saturates


class NgramLogit(nn.Module):
    def __init__(self, vocab_size: int, buckets: int) -> None:
        super().__init__()
        self.vocab_size, self.buckets = vocab_size, buckets
        self.register_buffer("weight", torch.zeros(vocab_size + buckets))
        self.register_buffer("bias", torch.zeros(()))

    def bigram_ids(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        return self.vocab_size + (first * PRIME + second) % self.buckets

    def features(self, words: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 2T - 1) feature ids, unigrams then bigrams, and whether each is real (not padding)."""
        real = torch.arange(words.shape[1], device=words.device).unsqueeze(0) < lengths.unsqueeze(1)  # (B, T)
        pairs = self.bigram_ids(words[:, :-1], words[:, 1:])  # (B, T - 1)
        # Right padding: a bigram is real when its second word is.
        return torch.cat([words, pairs], dim=1), torch.cat([real, real[:, 1:]], dim=1)

    def forward(self, words: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        ids, real = self.features(words, lengths)
        return self.weight[ids].masked_fill(~real, 0.0).sum(dim=1) + self.bias  # (B,)


def feature_bags(head: NgramLogit, reviews: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every review's real feature ids in `features`' order (its unigrams, then its bigrams), concatenated;
    where each review's features begin (`F.embedding_bag`'s offsets); and the review of each feature."""
    words = torch.from_numpy(np.concatenate(reviews))
    review = torch.repeat_interleave(torch.tensor([len(r) for r in reviews]))  # each word's review
    pair = review[1:] == review[:-1]  # word i and word i + 1 are a bigram of one review
    ids = torch.cat([words, head.bigram_ids(words[:-1][pair], words[1:][pair])])
    owner = torch.cat([review, review[1:][pair]])
    order = torch.argsort(owner, stable=True)  # by review; unigrams first
    sizes = torch.bincount(review, minlength=len(reviews)) * 2 - 1
    return ids[order], torch.cumsum(sizes, 0) - sizes, owner[order]


def fit(
    head: NgramLogit, reviews: Sequence[np.ndarray], labels: Sequence[float], *, l2: float = L2, steps: int = STEPS
) -> dict[str, float]:
    """Fit the head's weights on (word ids, 0/1 label) reviews, on the CPU whatever device it sits on
    (deterministic, so every process fits the same head). Returns the fit's train accuracy and seconds."""
    start = time.perf_counter()
    keep = np.linspace(0, len(reviews) - 1, min(len(reviews), MAX_REVIEWS)).round().astype(np.int64)
    ids, offsets, owner = feature_bags(head, [reviews[i] for i in keep])
    y = torch.tensor(np.asarray(labels, np.float32)[keep])
    # Naive Bayes log-count ratio of each feature, add-one smoothed.
    positive = torch.ones(len(head.weight)).index_add_(0, ids, y[owner])
    negative = torch.ones(len(head.weight)).index_add_(0, ids, 1 - y[owner])
    ratio = torch.log(positive / positive.sum()) - torch.log(negative / negative.sum())
    weight = torch.zeros(len(head.weight), requires_grad=True)
    bias = torch.zeros((), requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=LR)
    for _ in range(steps):
        optimizer.zero_grad()
        logits = F.embedding_bag(ids, (weight * ratio).unsqueeze(1), offsets, mode="sum").squeeze(1) + bias
        loss = F.binary_cross_entropy_with_logits(logits, y) + l2 * weight.pow(2).sum()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        fitted = weight * ratio
        head.weight.copy_(fitted)
        head.bias.copy_(bias)
        logits = F.embedding_bag(ids, fitted.unsqueeze(1), offsets, mode="sum").squeeze(1) + bias
        accuracy = float(((logits > 0).float() == y).float().mean())
    return {
        "reviews": len(keep),
        "train_accuracy": round(accuracy, 4),
        "seconds": round(time.perf_counter() - start, 2),
    }
