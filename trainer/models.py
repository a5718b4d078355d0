"""The three LSTMs. `forward` takes the tensors named in `input_names` and returns logits.

Padding invariance without `pack_padded_sequence` (which does not export to ONNX cleanly,
pytorch issues 26462 and 48460): inputs are right-padded, so a forward LSTM's outputs at real
positions never see padding. The backward direction is a second forward LSTM run over each
sequence reversed *within its own length* (a gather), whose outputs are reversed back the same
way. Both are plain `nn.LSTM` calls, which the exporter turns into ONNX `LSTM` nodes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from trainer.core.config import POOLINGS, ModelConfig, SentimentConfig, TaggerConfig
from trainer.core.errors import ConfigError
from trainer.core.preprocess import Vocabs
from trainer.ngram import NgramLogit


def reverse_index(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B, T) positions that reverse each row's first `lengths[b]` steps and keep the padding.

    The map is its own inverse, so the same index reverses the outputs back.
    """
    pos = torch.arange(max_len, device=lengths.device).unsqueeze(0)  # (1, T)
    length = lengths.unsqueeze(1)  # (B, 1)
    return torch.where(pos < length, length - 1 - pos, pos)  # (B, T)


def gather_time(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x[b, index[b, t], :] for (B, T, C) x and (B, T) index."""
    return x.gather(1, index.unsqueeze(2).expand(-1, -1, x.shape[2]))


def last_step(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, C) output at each row's last real position."""
    return gather_time(x, (lengths - 1).unsqueeze(1)).squeeze(1)


class PaddedLSTM(nn.Module):
    """A stack of LSTM layers over right-padded batches, optionally bidirectional.

    Returns (B, T, H * directions); positions past a row's length hold unused values.
    """

    def __init__(self, input_size: int, hidden: int, layers: int, bidirectional: bool, dropout: float) -> None:
        super().__init__()
        sizes = [input_size] + [hidden * (2 if bidirectional else 1)] * (layers - 1)
        self.forward_layers = nn.ModuleList(nn.LSTM(n, hidden, batch_first=True) for n in sizes)
        self.backward_layers = (
            nn.ModuleList(nn.LSTM(n, hidden, batch_first=True) for n in sizes) if bidirectional else None
        )
        self.dropout = nn.Dropout(dropout)
        self.output_size = hidden * (2 if bidirectional else 1)
        # Set by the trainer on CPUs whose oneDNN has no bf16 LSTM (trainer.precision): the LSTM kernels
        # then leave the autocast region and run in float32. Not a weight; exports never see it.
        self.float32_kernels = False
        # DropConnect on the hidden-to-hidden weights in training (AWD-LSTM's weight drop, TrainConfig.weight_drop),
        # also set by the trainer: evaluation and export run the plain weights.
        self.weight_drop = 0.0

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        backward = self.backward_layers
        index = reverse_index(lengths, x.shape[1]) if backward is not None else None
        for i, layer in enumerate(self.forward_layers):
            if i > 0:
                x = self.dropout(x)
            out = self.run_lstm(layer, x)  # (B, T, H)
            if backward is not None:
                back = self.run_lstm(backward[i], gather_time(x, index))
                out = torch.cat([out, gather_time(back, index)], dim=2)  # (B, T, 2H)
            x = out
        return x

    def run_lstm(self, layer: nn.LSTM, x: torch.Tensor) -> torch.Tensor:
        if self.float32_kernels and torch.is_autocast_enabled(x.device.type):
            with torch.autocast(x.device.type, enabled=False):
                return self.call_lstm(layer, x.float())
        return self.call_lstm(layer, x)

    def call_lstm(self, layer: nn.LSTM, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.weight_drop > 0:  # one mask per batch, the same at every step
            dropped = F.dropout(layer.weight_hh_l0, self.weight_drop)
            return functional_call(layer, {"weight_hh_l0": dropped}, (x,))[0]
        return layer(x)[0]

    def final_state(self, out: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Last forward state joined with the backward direction's last state (at position 0)."""
        if self.backward_layers is None:
            return last_step(out, lengths)
        half = out.shape[2] // 2
        return torch.cat([last_step(out[:, :, :half], lengths), out[:, 0, half:]], dim=1)


class LSTMTagger(nn.Module):
    """Word embeddings -> (Bi)LSTM -> linear over the tags: the word-only tagger."""

    input_names: tuple[str, ...] = ("words", "lengths")
    output_names: tuple[str, ...] = ("logits",)

    def __init__(self, config: TaggerConfig, vocabs: Vocabs, token_features: int | None = None) -> None:
        super().__init__()
        self.config = config
        self.word_embedding = nn.Embedding(len(vocabs.words), config.word_dim, padding_idx=0)
        self.dropout = nn.Dropout(config.dropout)
        self.encoder = PaddedLSTM(
            token_features or config.word_dim, config.word_hidden, config.layers, config.bidirectional, config.dropout
        )
        self.output = nn.Linear(self.encoder.output_size, len(vocabs.labels))

    def forward(self, words: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.tag(self.word_embedding(words), lengths)

    def tag(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T, F) token features -> (B, T, n_tags) logits."""
        h = self.encoder(self.dropout(x), lengths)  # (B, T, H*dirs)
        return self.output(self.dropout(h))


class DualLSTMTagger(LSTMTagger):
    """Word embedding joined with a character BiLSTM's final states per word, then as LSTMTagger."""

    input_names = ("words", "lengths", "chars", "word_lengths")
    CHAR_GROUPS = 4  # length groups of distinct words: the fastest of 1, 2, 4, 6, 8 (docs/BENCHMARKS.md section 9)

    def __init__(self, config: TaggerConfig, vocabs: Vocabs) -> None:
        if vocabs.chars is None:
            raise ValueError("DualLSTMTagger needs a character vocabulary")
        super().__init__(config, vocabs, token_features=config.word_dim + 2 * config.char_hidden)
        self.char_embedding = nn.Embedding(len(vocabs.chars), config.char_dim, padding_idx=0)
        self.char_encoder = PaddedLSTM(config.char_dim, config.char_hidden, 1, True, 0.0)

    def forward(
        self, words: torch.Tensor, lengths: torch.Tensor, chars: torch.Tensor, word_lengths: torch.Tensor
    ) -> torch.Tensor:
        batch, steps, width = chars.shape
        flat_lengths = word_lengths.reshape(batch * steps).clamp(min=1)  # padding words: one <pad> step
        per_word = self.distinct_char_states(chars.reshape(batch * steps, width), flat_lengths)
        per_word = per_word.reshape(batch, steps, -1)  # (B, T, 2Hc)
        return self.tag(torch.cat([self.word_embedding(words), per_word], dim=2), lengths)  # (B, T, n_tags)

    def char_states(self, chars: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(N, W) char ids and (N,) lengths -> (N, 2Hc) final char BiLSTM states, all N rows run W steps."""
        h = self.char_encoder(self.char_embedding(chars), lengths)  # (N, W, 2Hc)
        return self.char_encoder.final_state(h, lengths)

    def distinct_char_states(self, chars: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """`char_states`, run once per distinct word: the same values, since no row's LSTM sees another
        row or its own padding. A batch of sentences repeats many of its words.

        In eager torch the distinct words also run in CHAR_GROUPS groups of similar length, each padded
        to its own longest word instead of the batch's, which would be mostly padding (both figures in
        docs/BENCHMARKS.md section 3). The ONNX export keeps one group, a static graph: ONNX `Unique`,
        one char LSTM, a `Gather`.
        """
        keyed = torch.cat([lengths.unsqueeze(1), chars], dim=1)  # (N, 1 + W): equal rows, equal words
        distinct, inverse = torch.unique(keyed, dim=0, return_inverse=True)  # rows sorted, so by length
        distinct_lengths, distinct_chars = distinct[:, 0], distinct[:, 1:]  # (U,), (U, W)
        if torch.onnx.is_in_onnx_export():
            return self.char_states(distinct_chars, distinct_lengths)[inverse]  # (N, 2Hc)
        groups = min(self.CHAR_GROUPS, len(distinct))
        states = [
            self.char_states(part_chars[:, : int(part_lengths[-1])], part_lengths)  # its longest is its last
            for part_chars, part_lengths in zip(
                distinct_chars.tensor_split(groups), distinct_lengths.tensor_split(groups)
            )
        ]
        return torch.cat(states)[inverse]  # (N, 2Hc)


class SentimentNet(nn.Module):
    """Embedding -> multi-layer (Bi)LSTM -> dropout -> linear to one logit per review, plus the n-gram
    head's logit where the config has one."""

    input_names = ("words", "lengths")
    output_names = ("logits",)

    def __init__(self, config: SentimentConfig, vocabs: Vocabs) -> None:
        super().__init__()
        if config.pooling not in POOLINGS:
            raise ConfigError(f"config key 'pooling' must be one of {', '.join(POOLINGS)}; got {config.pooling!r}")
        self.config = config
        self.embedding = nn.Embedding(len(vocabs.words), config.embed_dim, padding_idx=0)
        self.encoder = PaddedLSTM(config.embed_dim, config.hidden, config.layers, config.bidirectional, config.dropout)
        self.dropout = nn.Dropout(config.dropout)
        self.output = nn.Linear(self.encoder.output_size, 1)
        # Fitted once the LSTM has trained (the sentiment task's last step, trainer/tasks.py): until then its
        # weights are zeros, so training, dev scoring and checkpoints see the LSTM's logits exactly.
        self.ngram = NgramLogit(len(vocabs.words), config.ngram_buckets) if config.ngram_buckets else None

    def forward(self, words: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        logits = self.lstm_logits(words, lengths)
        return logits if self.ngram is None else logits + self.ngram(words, lengths)

    def lstm_logits(self, words: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        h = self.encoder(self.dropout(self.embedding(words)), lengths)  # (B, T, H*dirs)
        if self.config.pooling == "max":
            real = torch.arange(h.shape[1], device=h.device).unsqueeze(0) < lengths.unsqueeze(1)  # (B, T)
            state = h.masked_fill(~real.unsqueeze(2), float("-inf")).amax(dim=1)  # (B, H*dirs)
        else:
            state = self.encoder.final_state(h, lengths)  # (B, H*dirs)
        return self.output(self.dropout(state)).squeeze(1)  # (B,)


def run_lstms_in_float32(model: nn.Module) -> None:
    """Every LSTM of `model` runs in float32 even inside an autocast region (see `PaddedLSTM.run_lstm`)."""
    for module in model.modules():
        if isinstance(module, PaddedLSTM):
            module.float32_kernels = True


def set_weight_drop(model: nn.Module, rate: float) -> None:
    """Every LSTM of `model` trains with DropConnect at `rate` on its hidden-to-hidden weights."""
    for module in model.modules():
        if isinstance(module, PaddedLSTM):
            module.weight_drop = rate


def word_embedding(model: nn.Module) -> nn.Embedding:
    """The word vectors of a tagger or a classifier (adversarial training perturbs their output)."""
    for name in ("word_embedding", "embedding"):
        module = getattr(model, name, None)
        if isinstance(module, nn.Embedding):
            return module
    raise TypeError(f"{type(model).__name__} has no word embedding")


def build_model(config: ModelConfig, vocabs: Vocabs) -> nn.Module:
    """The model a config describes; vocabulary sizes come from the vocabularies it was trained with."""
    if isinstance(config, SentimentConfig):
        return SentimentNet(config, vocabs)
    return DualLSTMTagger(config, vocabs) if config.char_encoder else LSTMTagger(config, vocabs)
