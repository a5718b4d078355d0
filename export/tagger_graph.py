"""The tagger's fast graph: character states of frequent words precomputed into it, one LSTM node per layer.

The character BiLSTM is a function of a token's character ids alone, so the states of the tokens
that make up most of any text can be computed once at export and stored as a constant. Each row
of the table is one surface form: rows 0..K-1 hold word id i written as its vocabulary entry
(`the`), rows K..2K-1 the same with its first letter upper-cased (`The`). Together they cover 94%
of the Brown test tokens with the whole vocabulary (docs/BENCHMARKS.md section 4b).

In the graph a token looks up rows `word id` and `K + word id` and takes a row's state only when
the row's character ids and length equal its own, so a table row is used exactly where the
character BiLSTM would have computed the same input; every other token (unknown words, other
casings, digits other than 0) goes through the character BiLSTM as before, once per distinct
word. The graph's inputs do not change, and neither does anything a client computes.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from export.bilstm import ExportedBiLSTM
from trainer.core.lexicon import CLASS_PREFIX
from trainer.core.preprocess import Encoder, Vocabs
from trainer.models import DualLSTMTagger

NO_ROW = -1  # table length of the rows that must never match (<pad>, <unk>, classes, and words past K)


def surfaces(vocabs: Vocabs, rows: int) -> list[str | None]:
    """The 2 * rows surface forms of the table, None where a row is unused."""
    # <pad>, <unk> and the lexicon's <unk:SIG> classes stand for no one spelling
    words: list[str | None] = [None if w.startswith(CLASS_PREFIX) else w for w in vocabs.words.itos[2:rows]]
    words = ([None, None] + words)[:rows]
    words += [None] * (rows - len(words))
    return words + [w[:1].upper() + w[1:] if w is not None else None for w in words]


def table_arrays(model: DualLSTMTagger, encoder: Encoder, rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(char ids (2K, max_word_len) int32, lengths (2K,) int64, states (2K, 2Hc) float32) of `surfaces`,
    the states computed by the eager model itself."""
    width = encoder.config.max_word_len
    forms = surfaces(encoder.vocabs, rows)
    chars = np.zeros((len(forms), width), np.int32)
    lengths = np.full(len(forms), NO_ROW, np.int64)
    for i, form in enumerate(forms):
        if form:
            ids = encoder.char_ids(form)
            chars[i, : len(ids)] = ids
            lengths[i] = len(ids)
    used = np.flatnonzero(lengths > 0)
    states = np.zeros((len(forms), 2 * model.config.char_hidden), np.float32)
    if not len(used):  # a vocabulary of specials only
        return chars, lengths, states
    with torch.inference_mode():
        computed = model.distinct_char_states(
            torch.from_numpy(chars[used].astype(np.int64)), torch.from_numpy(lengths[used])
        )
    states[used] = computed.numpy()
    return chars, lengths, states


class TaggerGraph(nn.Module):
    """What `--graph fast` traces for a `DualLSTMTagger`: the same inputs, outputs and values, with the
    char states of `rows` frequent words looked up instead of computed, and each bidirectional LSTM
    layer as one ONNX node (export/bilstm.py)."""

    def __init__(self, model: DualLSTMTagger, encoder: Encoder, rows: int) -> None:
        super().__init__()
        self.model = model
        self.input_names, self.output_names = model.input_names, model.output_names
        self.char_lstm = ExportedBiLSTM(model.char_encoder)
        self.word_lstm = ExportedBiLSTM(model.encoder) if model.config.bidirectional else None
        self.rows = rows
        chars, lengths, states = table_arrays(model, encoder, rows)
        self.register_buffer("table_chars", torch.from_numpy(chars))
        self.register_buffer("table_lengths", torch.from_numpy(lengths))
        self.register_buffer("table_states", torch.from_numpy(states))

    def forward(
        self, words: torch.Tensor, lengths: torch.Tensor, chars: torch.Tensor, word_lengths: torch.Tensor
    ) -> torch.Tensor:
        batch, steps, width = chars.shape
        flat_chars = chars.reshape(batch * steps, width)  # (N, W)
        flat_lengths = word_lengths.reshape(batch * steps)  # (N,)
        keyed = torch.cat([flat_lengths.unsqueeze(1), flat_chars], dim=1)  # (N, 1 + W): equal rows, equal words
        if self.rows:
            found, row = self.lookup(words.reshape(batch * steps), flat_chars, flat_lengths)
            # Tokens found in the table all become one key, so Unique leaves only the others to run.
            keyed = torch.where(found.unsqueeze(1), torch.zeros_like(keyed), keyed)
        distinct, inverse = torch.unique(keyed, dim=0, return_inverse=True)  # (U, 1 + W), (N,)
        embedded = self.model.char_embedding(distinct[:, 1:])  # (U, W, Cc)
        per_word = self.char_lstm(embedded, distinct[:, 0].clamp(min=1))[1][inverse]  # (N, 2Hc); padding: 1 step
        if self.rows:
            per_word = torch.where(found.unsqueeze(1), self.table_states[row], per_word)
        features = torch.cat([self.model.word_embedding(words), per_word.reshape(batch, steps, -1)], dim=2)
        if self.word_lstm is None:
            return self.model.tag(features, lengths)  # (B, T, n_tags)
        return self.model.output(self.word_lstm(features, lengths)[0])

    def lookup(
        self, words: torch.Tensor, chars: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(N,) bool: the token's characters are those of table row `row` (N,); `row` is any row elsewhere."""
        first = torch.where(words < self.rows, words, torch.zeros_like(words))  # (N,): row 0 never matches
        second = first + self.rows
        # A row is max_word_len wide and a batch's words at most that long, but a client may pad wider.
        ids = chars[:, : self.table_chars.shape[1]].to(torch.int32)  # (N, min(W, L))
        width = ids.shape[1]

        def same(rows: torch.Tensor) -> torch.Tensor:
            spelled = (self.table_chars[rows][:, :width] == ids).all(dim=1)  # (N,)
            return spelled & (self.table_lengths[rows] == lengths)

        first_found = same(first)
        found = first_found | same(second)
        return found, torch.where(first_found, first, second)
