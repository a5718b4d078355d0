"""`EXPORT_DIR/tokenizer.json`: every step from raw text to the graph's inputs, as data.

The committed text -> tokens description (trainer/core/treebank.json, which `trainer.core.tokenizer`
runs) plus an `encode` section: truncation, normalization, word ids with the lexicon's unknown-word
classes, character ids. The section is derived from model.json's `preprocess` and `vocab` alone, by
`encode_section`, which `export` (writing it) and `serve` (refusing a file whose section differs)
both call; the vocabularies themselves stay in model.json. docs/DESIGN.md ("Exports outside
Python") is the spec.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from trainer.core.errors import DataError
from trainer.core.jsonio import dumps
from trainer.core.lexicon import CLASS_PREFIX, INFLECTIONS, POS_LETTERS
from trainer.core.preprocess import PAD, UNK_ID, URL
from trainer.core.tokenizer import DESCRIPTION, read_description

FILE = "tokenizer.json"
MIN_STEM = 2  # Lexicon.signature: an inflection's stem keeps at least this many code points


def encode_section(preprocess: Mapping[str, Any], vocab: Mapping[str, Any]) -> dict[str, Any]:
    """Tokens -> the graph's inputs, for one model (`Encoder` and `Vocabs.word_id` do exactly this)."""
    lexicon = None
    if preprocess.get("lexicon"):
        lexicon = {
            "name": preprocess["lexicon"],
            "lists": "model.json vocab.lexicon",
            "letters": POS_LETTERS,
            "inflections": {letter: [list(rule) for rule in rules] for letter, rules in INFLECTIONS.items()},
            "min_stem": MIN_STEM,
            "class": [CLASS_PREFIX, ">"],
        }
    chars = None
    if vocab.get("chars") is not None:
        chars = {
            "vocab": "model.json vocab.chars",
            "max_word_len": preprocess["max_word_len"],
            "unit": "code point",
            "case": "original",
            "unk_id": UNK_ID,
        }
    return {
        "max_tokens": preprocess["max_tokens"],
        "words": {
            "vocab": "model.json vocab.words",
            "keep": [URL],
            "lowercase": preprocess["lowercase"],
            "lowercase_mapping": "Unicode default full lower case (SpecialCasing, Final_Sigma)",
            "digits_to_zero": preprocess["digits_to_zero"],
            "unk_id": UNK_ID,
            "lexicon": lexicon,
        },
        "chars": chars,
        "pad": PAD,
        "pad_id": vocab["words"].index(PAD),
        "inputs": ["words", "lengths"] + (["chars", "word_lengths"] if chars else []),
    }


def document(preprocess: Mapping[str, Any], vocab: Mapping[str, Any]) -> str:
    """tokenizer.json's text for a model: deterministic, so its sha256 can go into the graph first."""
    doc = {**read_description(DESCRIPTION), "encode": encode_section(preprocess, vocab)}
    return dumps(doc, indent=1) + "\n"


def sha256(text: str) -> str:
    """The sha256 of the file `text` is written as (UTF-8, "\\n" line ends)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def check_encode(doc: Mapping[str, Any], preprocess: Mapping[str, Any], vocab: Mapping[str, Any], where: str) -> None:
    """The file's `encode` section must be what this build does for model.json's settings."""
    got, want = doc.get("encode"), encode_section(preprocess, vocab)
    if got == want:
        return
    if not isinstance(got, dict):
        raise DataError(f"{where}: encode must be an object (truncation, words, chars, inputs)")
    key = next(k for k in sorted(set(got) | set(want)) if got.get(k) != want.get(k))
    raise DataError(
        f"{where}: encode.{key} is {dumps(got.get(key))[:60]}, but model.json and this build give "
        f"{dumps(want.get(key))[:60]} (the file is not this export's; re-run `python -m export`)"
    )
