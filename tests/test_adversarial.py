"""Adversarial training on the word embeddings (trainer/adversarial.py). Its resumes are exact:
tests/test_checkpoint.py and tests/test_checkpoint_resume.py train with it on, with one process and with two."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainer.adversarial import EmbeddingPerturbation
from trainer.core.config import SentimentConfig, TaggerConfig
from trainer.core.preprocess import Vocabs
from trainer.models import DualLSTMTagger, SentimentNet, word_embedding


def tiny_models() -> tuple[DualLSTMTagger, SentimentNet]:
    specials = ["<pad>", "<unk>", "a", "b"]
    vocabs = Vocabs.from_json({"words": specials, "labels": ["X", "Y"], "chars": specials})
    tagger = DualLSTMTagger(TaggerConfig(word_dim=8, word_hidden=4, char_dim=3, char_hidden=4), vocabs)
    return tagger, SentimentNet(SentimentConfig(embed_dim=8, hidden=4, layers=1), vocabs)


def test_the_adversarial_step_is_epsilon_along_each_sentences_loss_gradient() -> None:
    torch.manual_seed(0)
    embedding = nn.Embedding(10, 4)
    perturbation = EmbeddingPerturbation(embedding, 0.5)
    words = torch.tensor([[1, 2, 3], [4, 5, 0]])
    direction = torch.randn(4)
    clean = embedding(words)
    (clean @ direction).pow(2).sum().backward()
    gradient = clean.grad.clone()
    with perturbation.adversarial():
        moved = embedding(words)
    delta = (moved - embedding(words)).detach()
    assert torch.allclose(delta.flatten(1).norm(dim=1), torch.tensor([0.5, 0.5]))
    cosine = nn.functional.cosine_similarity(delta.flatten(1), gradient.flatten(1))
    assert torch.allclose(cosine, torch.ones(2))
    assert torch.equal(embedding(words), clean)  # out of the context the embeddings are themselves again


def test_evaluation_is_never_perturbed_and_a_missing_clean_pass_is_an_error() -> None:
    embedding = nn.Embedding(10, 4)
    perturbation = EmbeddingPerturbation(embedding, 3.0)
    words = torch.tensor([[1, 2]])
    with pytest.raises(RuntimeError, match="needs a clean forward and backward pass first"), perturbation.adversarial():
        pass
    embedding(words).sum().backward()
    embedding.eval()
    with perturbation.adversarial():
        assert torch.equal(embedding(words), embedding.weight[words])


def test_the_perturbed_module_is_the_word_embedding() -> None:
    tagger, classifier = tiny_models()
    assert word_embedding(tagger) is tagger.word_embedding  # not its character embedding
    assert word_embedding(classifier) is classifier.embedding
    with pytest.raises(TypeError, match="Linear has no word embedding"):
        word_embedding(nn.Linear(2, 2))
