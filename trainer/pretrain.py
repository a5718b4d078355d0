"""`python -m trainer pretrain`: a language model on unlabeled text, to initialize a model from.

`--objective lstm` (the default): a bidirectional LSTM LM shaped like the sentiment encoder's first layer
(trainer/lm.py); RUN_DIR/embeddings then holds its embeddings and both LSTM directions.
`--objective ngram`: the PyTorch tutorial's NGramLanguageModeler: the embeddings of the previous `context`
words, concatenated, -> linear -> ReLU -> linear over the `output_words` most frequent words; embeddings only.
`train --init_embeddings RUN_DIR/embeddings` starts a sentiment model or tagger from the embeddings
(`extend_vocab` + `copy_vectors`, used by trainer.runner) and a sentiment model's first LSTM layer from the
LSTM's (`trainer.lm.copy_layers`).

Text: every split of tagger datasets, only the train split of sentiment datasets (see `read_text`).
Held out (never trained on): the first HELD_OUT sentences/reviews of each dataset's dev split,
scored for next-word perplexity and accuracy in metrics.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import DataLoader

from trainer.artifact import replace_dir, save_tensors, write_json
from trainer.core.atomic import named, remove_stale, temp_dir
from trainer.core.cli import Parser
from trainer.core.config import (
    PRETRAIN_BATCH,
    PreprocessConfig,
    PretrainConfig,
    apply_overrides,
    check_config,
    check_out_path,
    field_types,
    parse_key_values,
    preprocess_config_from_dict,
    to_dict,
)
from trainer.core.data import open_dataset
from trainer.core.errors import ArtifactError, ConfigError, DataError
from trainer.core.jsonio import dumps, read_file
from trainer.core.preprocess import NORMALIZE_KEYS, UNK_ID, Vocab, Vocabs, normalize_word, tokenize
from trainer.lm import ENCODER_KEYS, BiLanguageModel, fit_lm, run_steps, score_lm
from trainer.models import word_embedding

FORMAT_VERSION = 1
HELD_OUT = 1000  # dev sentences/reviews per dataset kept out of training and scored
FILES = ("embeddings.safetensors", "vocab.json", "config.json")


class NGramLanguageModel(nn.Module):
    """Previous `context` words -> logits over the `output_words` most frequent words."""

    def __init__(self, vocab_size: int, config: PretrainConfig) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, config.embed_dim)
        self.hidden = nn.Linear(config.context * config.embed_dim, config.hidden)
        self.output = nn.Linear(config.hidden, config.output_words)

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        x = self.embedding(context).flatten(1)  # (B, N*E)
        return self.output(F.relu(self.hidden(x)))  # (B, output_words)


# ---- text -> (context, target) ids ------------------------------------------------------------


def read_text(spec: str, preprocess: PreprocessConfig) -> tuple[list[list[str]], list[list[str]]]:
    """Normalized sentences for training and for the held-out score, from `SPEC[+SPEC...]`."""
    train, held_out = [], []
    for part in spec.split("+"):
        dataset = open_dataset(part)
        # Sentiment dev/test texts would leak into the embeddings a sentiment model is then tuned and
        # scored on, so only their train split is read; tagger corpora give words, never tags, but
        # their dev split is held out too, for the perplexity score.
        splits = ("train",) if dataset.task == "sentiment" else ("train", "test")
        for split in [*splits, "dev"]:
            if split not in dataset.splits:
                continue
            for i, example in enumerate(dataset.examples(split)):
                tokens = example.words if dataset.task == "tagger" else tokenize(example.text)
                words = [normalize_word(t, preprocess) for t in tokens]
                if split != "dev":
                    train.append(words)
                elif i < HELD_OUT:
                    held_out.append(words)
                elif dataset.task == "tagger":
                    train.append(words)
    if not train:
        raise DataError(f"--data {spec}: no text to pretrain on")
    return train, held_out


def ids(words: list[str], vocab: Vocab) -> np.ndarray:
    return np.fromiter((vocab.id(w) for w in words), np.int64, len(words))


def ngrams(sentences: list[list[str]], vocab: Vocab, cfg: PretrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(contexts (M, N), targets (M,)): every word with its N previous ones, `<pad>` before the start."""
    contexts, targets = [], []
    for words in sentences:
        word_ids = ids(words, vocab)
        padded = np.concatenate([np.zeros(cfg.context, np.int64), word_ids])
        contexts.append(np.stack([padded[i : i + len(word_ids)] for i in range(cfg.context)], axis=1))  # (T, N)
        targets.append(word_ids)
    target = np.concatenate(targets) if targets else np.zeros(0, np.int64)
    target = np.where(target < cfg.output_words, target, UNK_ID)  # ids are by frequency: rarer words -> <unk>
    context = np.concatenate(contexts) if contexts else np.zeros((0, cfg.context), np.int64)
    return torch.from_numpy(context), torch.from_numpy(target)


@torch.no_grad()
def score(model: nn.Module, context: torch.Tensor, target: torch.Tensor, batch_size: int) -> dict[str, float]:
    """Next-word perplexity and accuracy (<unk> counts as a word, as in training)."""
    model.eval()
    loss, correct = 0.0, 0
    for start in range(0, len(target), batch_size):
        logits = model(context[start : start + batch_size])
        loss += F.cross_entropy(logits, target[start : start + batch_size], reduction="sum").item()
        correct += (logits.argmax(1) == target[start : start + batch_size]).sum().item()
    model.train()
    n = max(1, len(target))
    return {"perplexity": round(math.exp(loss / n), 3), "accuracy": round(correct / n, 4), "tokens": len(target)}


# ---- the loop ---------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, PretrainConfig]:
    parser = Parser(
        prog="python -m trainer pretrain",
        allow_abbrev=False,
        description="Pretrain a language model (embeddings, and an LSTM layer); --key value overrides.",
        epilog="config keys: " + " ".join(sorted(field_types(PretrainConfig))),
    )
    parser.add_argument("--data", required=True, metavar="SPEC[+SPEC...]")
    parser.add_argument("--out", required=True, type=Path, metavar="RUN_DIR")
    args, rest = parser.parse_known_args(argv)
    check_out_path(args.out, "--out", directory=True)
    cfg = PretrainConfig()
    apply_overrides([cfg], parse_key_values(rest), source="command line")
    cfg.batch_size = cfg.batch_size or PRETRAIN_BATCH[cfg.objective]
    check_config(cfg)
    return args, cfg


def main(argv: list[str]) -> int:
    args, cfg = parse_args(argv)
    preprocess = PreprocessConfig()  # lowercase + digits -> 0, as the models that load these vectors
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    set_seed(cfg.seed)
    with accelerator.main_process_first():
        train, held_out = read_text(args.data, preprocess)
        vocab = Vocab.build(Counter(w for words in train for w in words), cfg.min_count)
        cfg.output_words = min(cfg.output_words, len(vocab))
        if cfg.objective == "lstm":
            held = [ids(words, vocab) for words in held_out]
            data = [ids(words, vocab) for words in train]
        else:
            held = ngrams(held_out, vocab, cfg)
            data = ngrams(train, vocab, cfg)
    model = (BiLanguageModel if cfg.objective == "lstm" else NGramLanguageModel)(len(vocab), cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    tokens = sum(len(words) for words in train)
    accelerator.print(f"pretrain: {cfg.objective} LM, {len(train)} sentences, {tokens} tokens, vocabulary {len(vocab)}")
    if cfg.objective == "lstm":
        model, optimizer = accelerator.prepare(model, optimizer)
        step, tokens, seconds, loss_avg = fit_lm(accelerator, model, optimizer, data, cfg)
    else:
        step, tokens, seconds, loss_avg = fit_ngram(accelerator, model, optimizer, data, cfg)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        model = accelerator.unwrap_model(model).cpu()
        metrics = {
            "task": "embeddings",
            "data": args.data,
            "steps": step,
            "train_tokens": tokens,
            "train_tokens_per_s": round(tokens / max(seconds, 1e-9)),
            "train_seconds": round(seconds, 1),
            "train_loss": round(loss_avg, 4),
            "vocab": len(vocab),
            "held_out": score_lm(model, held, 64) if cfg.objective == "lstm" else score(model, *held, 4096),
        }
        layers = model.encoder_state() if cfg.objective == "lstm" else {}
        save_embeddings(args.out / "embeddings", model.embedding.weight, layers, vocab, cfg, preprocess, metrics)
        accelerator.print(
            dumps({"held_out": metrics["held_out"], "embeddings": str(args.out / "embeddings")}, nan_as_null=True)
        )
    accelerator.end_training()
    return 0


def fit_ngram(
    accelerator: Accelerator,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: tuple[torch.Tensor, torch.Tensor],
    cfg: PretrainConfig,
) -> tuple[int, int, float, float]:
    """Train for cfg.epochs (or cfg.max_steps); (steps, tokens, seconds, smoothed loss)."""
    context, target = data
    # The loader deals out example indices; the (M, N) id tensors are indexed in the loop, which is
    # much faster than collating 512 tiny examples one by one.
    loader = DataLoader(
        torch.arange(len(target)),
        batch_size=cfg.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    total = cfg.epochs * len(loader) if not cfg.max_steps else min(cfg.max_steps, cfg.epochs * len(loader))

    def train_step(index: torch.Tensor) -> tuple[torch.Tensor, int]:
        index = index.cpu()
        logits = model(context[index].to(accelerator.device))  # (B, output_words)
        loss = F.cross_entropy(logits, target[index].to(accelerator.device))
        optimizer.zero_grad()
        accelerator.backward(loss)
        optimizer.step()
        return loss, len(index) * accelerator.num_processes

    # The loader reshuffles on every pass.
    return run_steps(total, lambda: loader, train_step, show=accelerator.is_main_process)


# ---- RUN_DIR/embeddings -----------------------------------------------------------------------


def save_embeddings(
    path: Path,
    weight: torch.Tensor,
    layers: dict[str, torch.Tensor],
    vocab: Vocab,
    cfg: PretrainConfig,
    preprocess: PreprocessConfig,
    metrics: dict,
) -> None:
    """The embeddings and any encoder `layers` (trainer.lm.ENCODER_KEYS) in one safetensors file, written
    under a temporary name and renamed into place, as the release model is."""
    named(path.parent, lambda: path.parent.mkdir(parents=True, exist_ok=True))
    remove_stale(path)
    with temp_dir(path) as tmp:
        save_tensors(
            {"embeddings": weight.detach().to("cpu", torch.float32).contiguous(), **layers},
            tmp / "embeddings.safetensors",
            metadata={"format_version": str(FORMAT_VERSION)},
        )
        write_json(tmp / "vocab.json", {"words": vocab.itos})
        write_json(
            tmp / "config.json",
            {
                "format_version": FORMAT_VERSION,
                "task": "embeddings",
                "pretrain": to_dict(cfg),
                "preprocess": to_dict(preprocess),
            },
        )
        write_json(tmp / "metrics.json", metrics, nan_as_null=True)
        replace_dir(tmp, path)


def load_embeddings(
    path: Path, dim: int, dim_key: str, preprocess: PreprocessConfig
) -> tuple[Vocab, torch.Tensor, dict[str, torch.Tensor]]:
    """Vocabulary, (V, dim) vectors and encoder layers (empty from the ngram objective) of RUN_DIR/embeddings,
    checked against the model about to use them (the layers' shapes: `trainer.lm.copy_layers`)."""
    where = f"--init_embeddings {path}"
    if not path.is_dir():
        raise ArtifactError(
            f"{where}: no such directory (expected RUN_DIR/embeddings from `python -m trainer pretrain`)"
        )
    for name in FILES:
        if not (path / name).is_file():
            raise ArtifactError(f"{where}: {name} is missing")
    try:
        meta = read_file(path / "config.json", ArtifactError)
        words = Vocab(read_file(path / "vocab.json", ArtifactError)["words"])
        tensors = load_file(str(path / "embeddings.safetensors"))
        vectors = tensors.pop("embeddings")
        saved = preprocess_config_from_dict(meta["preprocess"], source=str(path / "config.json"))
    except (
        SafetensorError,
        KeyError,
        TypeError,
        ValueError,
        OSError,
        DataError,
        ConfigError,
    ) as exc:
        raise ArtifactError(f"{where}: corrupt embeddings directory ({exc!r})") from None
    if meta.get("format_version") != FORMAT_VERSION or meta.get("task") != "embeddings":
        raise ArtifactError(f"{where}: config.json is not an embeddings directory of format {FORMAT_VERSION}")
    if vectors.ndim != 2 or vectors.shape[0] != len(words):
        raise ArtifactError(f"{where}: {tuple(vectors.shape)} vectors do not match {len(words)} words in vocab.json")
    unknown = sorted(set(tensors) - set(ENCODER_KEYS))
    if unknown or tensors and len(tensors) != len(ENCODER_KEYS):
        what = (
            f"unknown tensor {unknown[0]!r}" if unknown else f"{len(tensors)} of the {len(ENCODER_KEYS)} LSTM tensors"
        )
        raise ArtifactError(f"{where}: embeddings.safetensors holds {what}")
    if not all(torch.isfinite(t).all() for t in (vectors, *tensors.values())):
        raise ArtifactError(f"{where}: embeddings.safetensors holds non-finite values (NaN or inf)")
    if vectors.shape[1] != dim:
        raise ConfigError(
            f"{where}: vectors have {vectors.shape[1]} dimensions but the model's {dim_key} "
            f"is {dim}; set --{dim_key} {vectors.shape[1]}"
        )
    for key in NORMALIZE_KEYS:  # the words must be looked up by the same keys
        if getattr(saved, key) != getattr(preprocess, key):
            raise ConfigError(
                f"{where}: embeddings were built with {key}={getattr(saved, key)}, "
                f"the model uses {key}={getattr(preprocess, key)}"
            )
    return words, vectors, tensors


def extend_vocab(vocabs: Vocabs, pretrained: Vocab) -> Vocabs:
    """The corpus vocabulary with the pretrained words it lacks appended, so corpus ids stay the same."""
    extra = [w for w in pretrained.itos if w not in vocabs.words]
    return dataclasses.replace(vocabs, words=Vocab(vocabs.words.itos + extra))


@torch.no_grad()
def copy_vectors(model: nn.Module, vocabs: Vocabs, pretrained: Vocab, vectors: torch.Tensor) -> int:
    """Copy the pretrained vector of every word that has one (not `<pad>`); how many were copied."""
    embedding = word_embedding(model)
    pairs = [(i, pretrained.stoi[w]) for i, w in enumerate(vocabs.words.itos) if i > 0 and w in pretrained.stoi]
    rows, source = zip(*pairs, strict=True) if pairs else ((), ())
    embedding.weight[list(rows)] = vectors[list(source)].to(embedding.weight.dtype)
    return len(pairs)
