"""The `seqlstm.*` metadata_props of an exported ONNX graph: what a non-Python user needs, in the file.

Every value is derived from model.json by `metadata_props`, the one function both `export` (which
writes them) and `serve` (which checks them on load) call, so the graph and model.json cannot
disagree without one of them having been changed or swapped afterwards. Values are strings, as ONNX
requires: plain text for task and version, decimal for ids, compact JSON for lists and objects.
docs/DESIGN.md ("Exports outside Python") is the spec, key by key.

The vocabulary itself stays in model.json (it can be large); the graph carries its sha256 over a
canonical JSON form (`vocab_sha256`), which any JSON library can reproduce.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trainer.core.errors import ArtifactError
from trainer.core.jsonio import dumps
from trainer.core.portable import FILE as TOKENIZER_FILE
from trainer.core.preprocess import PAD, UNK_ID, URL
from trainer.core.tasks import task_kind
from trainer.core.tokenizer import default_tokenizer

PREFIX = "seqlstm."
URL_PATTERN = r"(?:https?://|www\.)\S+"  # stdlib `re`, IGNORECASE: the source of tokenizer.json's url.find
NORMALIZATION = ("lowercase", "digits_to_zero", "max_tokens", "max_word_len")  # PreprocessConfig fields a port applies
INPUT_MEANINGS = {
    "words": "int64 (batch, time): vocab.words id of each normalized token, right-padded with pad_id",
    "lengths": "int64 (batch,): real tokens per row, >= 1; positions t >= lengths[b] are padding",
    "chars": (
        "int64 (batch, time, word): vocab.chars id of each of the first max_word_len characters "
        "(code points, original case) of each token, right-padded with pad_id"
    ),
    "word_lengths": "int64 (batch, time): characters per token after the max_word_len cut; 0 at padding",
}


def tokenizer_description(document_sha256: str) -> dict[str, Any]:
    """model.json's `tokenizer`: a summary, and the sha256 of tokenizer.json, which holds every step
    (trainer.core.portable); the graph's copy of this object is what ties that file to the graph."""
    return {
        "name": "nltk-treebank-word",  # NLTKWordTokenizer().tokenize, after URLs are cut out
        "rules": default_tokenizer().description["source"]["rules"],  # the nltk release treebank.json came from
        "url_pattern": URL_PATTERN,
        "url_flags": "IGNORECASE",
        "url_token": URL,
        "file": TOKENIZER_FILE,
        "sha256": document_sha256,
    }


def input_names(vocab: Mapping[str, Any]) -> list[str]:
    """The graph's inputs, in order: the character inputs exist exactly when vocab.chars does."""
    return ["words", "lengths"] + (["chars", "word_lengths"] if vocab.get("chars") is not None else [])


def vocab_sha256(vocab: Mapping[str, Any]) -> str:
    """sha256 of the vocab object as compact JSON: keys sorted, UTF-8, no ASCII escaping, no null `chars`."""
    present = {k: v for k, v in vocab.items() if v is not None}
    text = dumps(present, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def normalization(preprocess: Mapping[str, Any]) -> dict[str, Any]:
    """The PreprocessConfig fields a port applies; `lexicon` only when set, so older exports keep their props."""
    out = {name: preprocess[name] for name in NORMALIZATION}
    if preprocess.get("lexicon"):
        out["lexicon"] = preprocess["lexicon"]
    return out


def metadata_props(meta: Mapping[str, Any]) -> dict[str, str]:
    """`seqlstm.*` key -> string value, from a model.json object (export format 2)."""
    vocab = meta["vocab"]
    values: dict[str, Any] = {
        "task": meta["task"],
        "labels": vocab["labels"],
        "pad_id": vocab["words"].index(PAD),  # 0: model.json's vocabularies are checked to start <pad>, <unk>
        "unk_id": UNK_ID,
        "inputs": {name: INPUT_MEANINGS[name] for name in input_names(vocab)},
        "postprocess": task_kind(meta["task"]).decoder.postprocess(),
        "tokenizer": meta["tokenizer"],
        "normalization": normalization(meta["preprocess"]),
        "vocab_sha256": vocab_sha256(vocab),
        "export_format_version": meta["export_format_version"],
        "version": meta["seqlstm_version"],
    }
    return {PREFIX + key: value if isinstance(value, str) else dumps(value) for key, value in values.items()}


def check_metadata_props(where: Path, onnx_name: str, meta: Mapping[str, Any], props: Mapping[str, str]) -> None:
    """The graph's `seqlstm.*` props must be exactly those model.json gives (one-line ArtifactError)."""
    expected = metadata_props(meta)
    for key in sorted(set(expected) | {k for k in props if k.startswith(PREFIX)}):
        want, got = expected.get(key), props.get(key)
        if want != got:
            said = "has no such key" if want is None else f"gives {clip(want)}"
            found = "lacks it" if got is None else f"holds {clip(got)}"
            raise ArtifactError(
                f"{where}: {onnx_name} metadata_props {key} {found}, but model.json {said} "
                "(the graph and model.json come from different exports; re-run `python -m export`)"
            )


def clip(text: str) -> str:
    return repr(text) if len(text) <= 60 else repr(text[:57] + "...")
