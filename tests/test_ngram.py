"""Sentiment's n-gram head (trainer/ngram.py): its features, its fit, and its place in the model and artifact.

Export parity and padding invariance in onnxruntime with a head are test_export.py's `sentiment-bi-max` kind;
a trained run's metrics are test_train.py's.
"""

from __future__ import annotations

import json

import numpy as np
import torch

from trainer import ngram
from trainer.artifact import load_artifact, save_artifact
from trainer.core.config import PreprocessConfig, SentimentConfig
from trainer.core.preprocess import Vocab, Vocabs
from trainer.core.tasks import SENTIMENT_LABELS
from trainer.models import SentimentNet

WORDS = Vocab(["<pad>", "<unk>"] + [f"w{i}" for i in range(20)])
VOCABS = Vocabs(WORDS, Vocab.labels(SENTIMENT_LABELS), None)


def padded(reviews: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(r) for r in reviews])
    words = torch.zeros(len(reviews), int(lengths.max()), dtype=torch.int64)
    for i, r in enumerate(reviews):
        words[i, : len(r)] = torch.tensor(r)
    return words, lengths


def test_logit_sums_the_weights_of_each_unigram_and_hashed_bigram_once_per_occurrence() -> None:
    head = ngram.NgramLogit(vocab_size=22, buckets=16)
    head.weight.copy_(torch.arange(22 + 16, dtype=torch.float32))
    head.bias.fill_(0.5)
    review = [3, 7, 3, 7]
    bigrams = [22 + (a * ngram.PRIME + b) % 16 for a, b in zip(review, review[1:])]
    expected = sum(review) + sum(bigrams) + 0.5
    words, lengths = padded([review, [5]])
    out = head(words, lengths)
    assert out[0].item() == expected
    assert out[1].item() == 5 + 0.5  # one word: no bigram


def test_padding_adds_nothing() -> None:
    head = ngram.NgramLogit(vocab_size=22, buckets=16)
    head.weight.normal_()
    reviews = [[4], [5, 6, 7], [8, 9, 10, 11, 12, 13, 14]]
    alone = torch.cat([head(*padded([r])) for r in reviews])
    together = head(*padded(reviews))
    assert torch.allclose(alone, together, atol=1e-6)


def test_the_fit_sees_each_review_as_the_graph_does() -> None:
    """`feature_bags` (all reviews at once) lists the same real features, in the same order, as `features`
    of each review alone, one-word reviews included."""
    head = ngram.NgramLogit(vocab_size=50, buckets=97)
    rng = np.random.default_rng(0)
    reviews = [rng.integers(0, 50, size=int(rng.integers(1, 9))) for _ in range(300)]
    ids, offsets, owner = ngram.feature_bags(head, reviews)
    for i, words in enumerate(reviews):
        features, real = head.features(torch.from_numpy(words).unsqueeze(0), torch.tensor([len(words)]))
        assert real.all()
        assert torch.equal(ids[offsets[i] : offsets[i] + features.shape[1]], features[0])
        assert (owner[offsets[i] : offsets[i] + features.shape[1]] == i).all()
    assert offsets[-1] + 2 * len(reviews[-1]) - 1 == len(ids)


def test_fit_learns_the_words_that_carry_the_label_and_leaves_unseen_features_at_zero() -> None:
    rng = np.random.default_rng(0)
    good, bad = 2, 3  # w0 and w1 decide the label; the other words are noise
    reviews, labels = [], []
    for i in range(200):
        label = i % 2
        words = list(rng.integers(4, 20, size=int(rng.integers(2, 8))))
        words.insert(int(rng.integers(0, len(words))), good if label else bad)
        reviews.append(np.array(words, np.int64))
        labels.append(float(label))
    head = ngram.NgramLogit(len(WORDS), 64)
    info = ngram.fit(head, reviews, labels)
    assert info["reviews"] == 200 and info["train_accuracy"] == 1.0
    assert head.weight[good] > 0 > head.weight[bad]
    assert head.weight[21].item() == 0.0  # a word no review has
    again = ngram.NgramLogit(len(WORDS), 64)
    ngram.fit(again, reviews, labels)
    assert torch.equal(head.weight, again.weight)  # deterministic: every process fits the same head


def test_the_model_adds_the_head_to_the_lstm_and_the_head_is_no_parameter() -> None:
    torch.manual_seed(0)
    model = SentimentNet(SentimentConfig(embed_dim=6, hidden=5, ngram_buckets=32), VOCABS).eval()
    words, lengths = padded([[2, 3, 4], [5, 6]])
    with torch.no_grad():
        assert torch.equal(model(words, lengths), model.lstm_logits(words, lengths))  # unfitted: zeros
        model.ngram.weight.normal_()
        assert torch.allclose(model(words, lengths), model.lstm_logits(words, lengths) + model.ngram(words, lengths))
        model.ngram.weight.zero_()
        model.train()  # the forward is the same in training: an unfitted head adds exactly nothing
        torch.manual_seed(1)
        trained = model(words, lengths)
        torch.manual_seed(1)  # the same dropout masks
        assert torch.equal(trained, model.lstm_logits(words, lengths))
    names = {name for name, _ in model.named_parameters()}
    assert not any(name.startswith("ngram.") for name in names)  # no optimizer moves it
    assert {"ngram.weight", "ngram.bias"} <= set(model.state_dict())


def test_an_artifact_written_before_the_head_existed_loads_without_one(tmp_path) -> None:
    config = SentimentConfig(embed_dim=6, hidden=5)
    save_artifact(tmp_path / "model", SentimentNet(config, VOCABS), config, PreprocessConfig(), VOCABS, {})
    path = tmp_path / "model" / "config.json"
    meta = json.loads(path.read_text())
    del meta["model"]["ngram_buckets"]  # a config.json of an earlier build
    path.write_text(json.dumps(meta))
    assert load_artifact(tmp_path / "model").model.ngram is None
