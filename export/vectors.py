"""`EXPORT_DIR/test_vectors.json`: inputs taken through every stage, so a port can check itself stage by stage.

Each vector goes raw text (when there is one) -> tokens -> normalized words -> word ids (and, for a
character-level tagger, character ids and word lengths) -> logits -> tags, or label and
prob_positive. Expected logits are onnxruntime's on the exported graph, one input at a time (batch 1),
and each vector is also a validation check: torch must agree within the export's atol.

Inputs: up to REAL_VECTORS examples of the `--data` set's test split (dev when it has none; the
built-in sample sentences without --data), plus crafted ones: unknown words, a word longer than
max_word_len, digits and case mappings outside ASCII, a 1-token input, exactly max_tokens tokens, more
than max_tokens (truncated), and CRAFTED_TEXTS, raw text where tokenizers are easiest to get wrong.
Every vector also carries `output`, the object `serve predict` writes for its text (or tokens) alone.
docs/DESIGN.md ("Exports outside Python") specifies the file.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from export.validate import (
    SAMPLE_SENTENCES,
    Case,
    example_tokens,
    ort_session,
    run_case,
    session_runner,
    torch_runner,
    unknown_words,
    word_of_length,
)
from serve.model_json import EXPORT_FORMAT_VERSION
from serve.runtime import result
from trainer.artifact import Artifact
from trainer.core.data import Dataset
from trainer.core.fetch import sha256_file
from trainer.core.preprocess import Encoder, normalize_word, tokenize
from trainer.core.tasks import task_kind
from trainer.core.tokenizer import default_tokenizer

FILE = "test_vectors.json"
REAL_VECTORS = 24
LONG_WORD = "Pneumonoultramicroscopicsilicovolcanoconiosis"  # 45 letters, past the default max_word_len of 30
# Unicode digits (Arabic-Indic, Devanagari) are digits to `\d`; dotted capital I and Greek capital sigma
# lower-case to two code points and to a final sigma: a port's normalization must do the same.
CASE_AND_DIGITS = "İstanbul's ΟΔΥΣΣΕΥΣ paid ٣٤ and ४२ dollars, 1,250.75 in 2024!"
# Raw text, each on one line (no "\n": `predict` reads one input per line), for the tokenizer steps.
CRAFTED_TEXTS = {
    "contractions": "I can't, we'll, they're, I'd, you've, she's, 'tis, 'TWAS, CANNOT, gonna, Wanna go, "
    "d'ye gimme lemme gotta more'n, rock 'n' roll, the '90s, O'Neil's",
    "quotes": "\"Hello,\" she said. 'Don't!' ``quoted'' and ‘single’ “double” «chevrons» „low“ `tick` '' \"",
    "brackets": "(Really?) [yes] {no} <maybe> -- em—dash en–dash ‒ ― a:b, c,d ; @user #tag $5 50% R&D *bold* "
    "x?!? Ellipsis... and.. a,,b a,,,b 12:30 3,000 U.S.A. e.g. (.) 'a.' end.)\"'  ",
    "urls-and-emails": "See https://example.com/a?b=1, WWW.Example.org. and HTTP://x.y/z) or mail "
    "jane.doe@example.com, <bob@mail.example.org>; ftp://not.a.url www.",
    "accents": "Café naïve façade Ærøskøbing Straße İstanbul ΟΔΥΣΣΕΥΣ ΣΑΣ cafe\u0301's e\u0301'xyz "
    "\u212aelvin ſtop ǅemal ﬁne",
    "cjk": "東京は日本の首都です。中文，标点！“引号” 한국어 문장입니다. ｆｕｌｌｗｉｄｔｈ １２３",
    "emoji": "I ❤️ this 😀👍🏽 film!!! 👨‍👩‍👧 🇫🇷 #1 :-) 𝟘𝟙𝟚 𝐁𝐨𝐥𝐝",
    "rtl": "مرحبا بالعالم، هذا اختبار. שלום עולם! ١٢٣ \u202bembedded\u202c \u200fmark",
    "zero-width": "zero\u200bwidth non\u200cjoiner jo\u200diner word\u2060joiner bom\ufeffhere soft\u00adhyphen",
    "control-and-nul": "nul\x00char tab\there cr\rhere fs\x1cgs\x1dus\x1f nel\x85ls\u2028ps\u2029 "
    "vt\x0bff\x0c nbsp\u00a0ideographic\u3000end\x7f",
    "empty": "",
    "whitespace-only": " \t \u3000 \u00a0 \u2003 ",
}
LONG_LINE_TOKENS = 3000  # "very-long-line": words and punctuation, far past the default max_tokens of 512


@dataclass
class Source:
    name: str
    origin: dict[str, Any]
    text: str | None  # None: the input is tokens (a tagger corpus is tokenized already)
    tokens: list[str]


def real_sources(dataset: Dataset | None) -> tuple[list[Source], dict[str, Any]]:
    """Test-split examples (the first REAL_VECTORS non-empty ones), or the sample sentences without data."""
    if dataset is None:
        sources = [
            Source(f"sample-{i}", {"kind": "sample"}, text, tokenize(text)) for i, text in enumerate(SAMPLE_SENTENCES)
        ]
        return sources, {"used": False}
    split = "test" if "test" in dataset.splits else "dev"
    sources: list[Source] = []
    for index, example in enumerate(dataset.examples(split)):
        tokens = example_tokens(example)
        if tokens:
            text = getattr(example, "text", None)
            sources.append(Source(f"{split}-{index}", {"kind": "data", "split": split, "index": index}, text, tokens))
        if len(sources) == REAL_VECTORS:
            break
    return sources, {"used": True, "name": dataset.name, "split": split}


def crafted_sources(encoder: Encoder) -> Iterator[Source]:
    crafted = {"kind": "crafted"}

    def text(name: str, value: str) -> Source:
        return Source(name, crafted, value, tokenize(value))

    unknown = unknown_words(encoder.vocabs, encoder, 6)
    yield text("one-token", "Yes")
    yield text("unknown-words", f"The {' '.join(unknown)} arrived .")
    too_long = word_of_length(encoder.config.max_word_len + 15)
    yield text("long-words", f"A {LONG_WORD} case , {too_long} and {'x' * encoder.config.max_word_len} .")
    yield text("case-and-digits", CASE_AND_DIGITS)
    # Plain words, so that the text tokenizes to exactly these tokens.
    plain = [t for s in SAMPLE_SENTENCES for t in tokenize(s) if t.isascii() and t.isalpha()]
    for name, count in (("max-tokens", encoder.config.max_tokens), ("over-max-tokens", encoder.config.max_tokens + 3)):
        yield text(name, " ".join(plain[i % len(plain)] for i in range(count)))
    for name, value in CRAFTED_TEXTS.items():
        yield text(name, value)
    yield text("unicode-digits", unicode_digits())
    yield text("very-long-word", "A " + "abc" * 1000 + "z, then a period.")
    words = (plain[i % len(plain)] + "," * (i % 3 == 0) for i in range(LONG_LINE_TOKENS))
    yield text("very-long-line", " ".join(words))


def unicode_digits() -> str:
    """Every decimal digit (Unicode category Nd, the tokenizer description's `digits`), ten to a word."""
    digits = [chr(c) for first, last in default_tokenizer().description["digits"] for c in range(first, last + 1)]
    return "Digits: " + " ".join("".join(digits[i : i + 10]) for i in range(0, len(digits), 10))


def vector(source: Source, encoder: Encoder, logits: np.ndarray | None, task: str, labels: list[str]) -> dict[str, Any]:
    """One test_vectors.json entry from its source and onnxruntime's logits for it (batch row 0)."""
    kept = encoder.truncate(source.tokens)
    encoded = encoder.encode(kept)
    out: dict[str, Any] = {
        "name": source.name,
        "source": source.origin,
        "text": source.text,
        "tokens": source.tokens,
        "truncated": len(kept) < len(source.tokens),
        "words": [normalize_word(t, encoder.config) for t in kept],
        "word_ids": encoded.words.tolist(),
    }
    if encoded.chars is not None:
        out["chars"] = [row[:n].tolist() for row, n in zip(encoded.chars, encoded.word_lengths)]
        out["word_lengths"] = encoded.word_lengths.tolist()
    kind = task_kind(task)
    row = None if logits is None else logits[0, : len(kept)] if kind.per_token else logits[0]
    output = result(task, labels, kept, row, len(kept) < len(source.tokens))
    out["logits"] = None if row is None else kind.decoder.logits_json(row)  # None: no tokens, no model run
    out |= {name: output[name] for name in kind.decoder.vector_fields}
    out["output"] = output
    return out


def build_vectors(
    artifact: Artifact, onnx_path: Path, dataset: Dataset | None, atol: float
) -> tuple[dict[str, Any], list[dict], list[str]]:
    """(test_vectors.json, one validation record per vector, failure lines): onnxruntime vs torch per vector."""
    encoder = Encoder(artifact.vocabs, artifact.preprocess)
    torch_run, ort_run = torch_runner(artifact.model.eval()), session_runner(ort_session(onnx_path))
    real, data = real_sources(dataset)
    vectors, records, failures = [], [], []
    for source in real + list(crafted_sources(encoder)):
        if not source.tokens:
            vectors.append(vector(source, encoder, None, artifact.task, artifact.vocabs.labels.itos))
            continue
        arrays = encoder.batch([encoder.encode(source.tokens)])
        got: dict[str, np.ndarray] = {}

        def run_ort(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            got.update(ort_run(feeds))  # noqa: B023 (called within this iteration)
            return got  # noqa: B023

        record, found = run_case(
            Case(f"vector-{source.name}", arrays), torch_run, run_ort, artifact.task, atol, kind="vectors"
        )
        records.append(record)
        failures += found
        if got:
            vectors.append(vector(source, encoder, got["logits"], artifact.task, artifact.vocabs.labels.itos))
    doc = {
        "export_format_version": EXPORT_FORMAT_VERSION,
        "task": artifact.task,
        "onnx_sha256": sha256_file(onnx_path),
        "atol": atol,
        "data": data,
        "vectors": vectors,
    }
    return doc, records, failures
