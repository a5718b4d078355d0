"""`--data` specs → `Dataset`s of `TaggedSentence` (tagger) or `Review` (sentiment), the user's own
file formats (fastText, CoNLL-U), and `stats`. No torch here.

Spec forms: `brown`, `rotten-tomatoes` (both fetched automatically when missing from the data
directory; a no-op when cached), `nltk-treebank` (trainer/core/corpora.py), `fasttext:PATH[,PATH_TEST]`,
`conllu:TRAIN[,DEV[,TEST]]`. How splits are drawn: trainer/core/examples.py. Documented skips:
fasttext bad lines (malformed or non-UTF-8) when `skip_bad_lines=True`, counted in `Dataset.skipped`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from functools import partial
from pathlib import Path

from trainer.core import corpora
from trainer.core.errors import DataError
from trainer.core.examples import (
    SPLITS,
    Dataset,
    Review,
    TaggedSentence,
    decode,
    raw_lines,
    shorten,
    split_readers,
    text_lines,
)
from trainer.core.fetch import default_data_dir
from trainer.core.tasks import task_kind

__all__ = ["SPEC_FORMS", "SPLITS", "Dataset", "Review", "TaggedSentence", "describe_skipped", "open_dataset", "stats"]

SPEC_FORMS = "brown, rotten-tomatoes, nltk-treebank, fasttext:PATH[,PATH_TEST], conllu:TRAIN[,DEV[,TEST]]"


def open_dataset(spec: str, data_dir: Path | None = None, *, skip_bad_lines: bool = False) -> Dataset:
    """Open a `--data` spec. `brown` and `rotten-tomatoes` are fetched into `data_dir` (default
    `$DATA_DIR` or `./data`) when missing, a no-op when cached. `skip_bad_lines` applies to
    fasttext files: bad lines are skipped and counted in `Dataset.skipped` instead of failing."""
    kind, colon, args = spec.partition(":")
    named = {"brown": corpora.brown, "rotten-tomatoes": corpora.rotten_tomatoes, "nltk-treebank": corpora.nltk_treebank}
    if kind in named and not colon:
        return named[kind](Path(data_dir) if data_dir is not None else default_data_dir())
    if kind == "fasttext" and colon:
        paths = _spec_paths(spec, args, most=2)
        return _fasttext(spec, paths, skip_bad_lines)
    if kind == "conllu" and colon:
        paths = _spec_paths(spec, args, most=3)
        return _conllu(spec, paths)
    why = (
        "takes no arguments"
        if kind in named
        else "needs file paths"
        if kind in ("fasttext", "conllu")
        else "unknown data spec"
    )
    raise DataError(f"--data {spec!r}: {why}; expected one of: {SPEC_FORMS}")


def _spec_paths(spec: str, args: str, most: int) -> list[Path]:
    parts = args.split(",")
    if len(parts) > most or not all(p.strip() for p in parts):
        raise DataError(
            f"--data {spec!r}: takes 1 to {most} non-empty comma-separated paths; expected one of: {SPEC_FORMS}"
        )
    paths = [Path(p.strip()) for p in parts]
    for path in paths:
        if not path.is_file():
            raise DataError(f"--data {spec!r}: no such file: {path}; expected one of: {SPEC_FORMS}")
    return paths


# ---- fasttext -------------------------------------------------------------------------------

FASTTEXT_LABELS = {"__label__1": "negative", "__label__2": "positive"}


def _fasttext(spec: str, paths: list[Path], skip_bad_lines: bool) -> Dataset:
    file_skips: dict[str, Counter] = {}
    read = partial(_fasttext_reviews, skip_bad_lines=skip_bad_lines, file_skips=file_skips)
    given = {"train": paths[0]} if len(paths) == 1 else {"train": paths[0], "test": paths[1]}
    readers = split_readers(given, read, key=lambda review: review.text)
    return Dataset(spec, "sentiment", readers, file_skips=file_skips)


def _fasttext_reviews(path: Path, *, skip_bad_lines: bool, file_skips: dict[str, Counter]) -> Iterator[Review]:
    """Stream `__label__1 text` (negative) / `__label__2 text` (positive) lines."""
    skipped: Counter = Counter()
    for lineno, raw in raw_lines(path):
        try:
            review = _fasttext_review(path, lineno, raw)
        except DataError:
            if not skip_bad_lines:
                raise
            skipped["bad fasttext line"] += 1
            continue
        yield review
    file_skips[str(path)] = skipped


def _fasttext_review(path: Path, lineno: int, raw: bytes) -> Review:
    line = decode(path, lineno, raw).rstrip("\r\n")
    label, _, text = line.partition(" ")
    if label not in FASTTEXT_LABELS or not text.strip():
        raise DataError(f"{path}:{lineno}: expected '__label__1 <text>' or '__label__2 <text>', got {shorten(line)!r}")
    return Review(text.strip(), FASTTEXT_LABELS[label])


# ---- conllu ---------------------------------------------------------------------------------

UPOS_TO_UNIVERSAL = {
    "NOUN": "NOUN",
    "PROPN": "NOUN",
    "VERB": "VERB",
    "AUX": "VERB",
    "ADJ": "ADJ",
    "ADV": "ADV",
    "ADP": "ADP",
    "CCONJ": "CONJ",
    "SCONJ": "CONJ",
    "DET": "DET",
    "NUM": "NUM",
    "PRON": "PRON",
    "PART": "PRT",
    "PUNCT": ".",
    "SYM": ".",
    "INTJ": "X",
    "X": "X",
}


def _conllu(spec: str, paths: list[Path]) -> Dataset:
    readers = split_readers(dict(zip(SPLITS, paths)), _conllu_sentences, key=lambda s: " ".join(s.words))
    return Dataset(spec, "tagger", readers)


def _conllu_sentences(path: Path) -> Iterator[TaggedSentence]:
    """Sentences of a CoNLL-U file: FORM and UPOS of word lines (no ranges `1-2`, no empty nodes `1.1`)."""
    words: list[str] = []
    tags: list[str] = []
    for lineno, line in text_lines(path):
        line = line.rstrip("\r\n")
        if not line.strip():
            if words:
                yield TaggedSentence(tuple(words), tuple(tags))
            words, tags = [], []
            continue
        if line.startswith("#"):
            continue
        cols = line.split("\t")
        if len(cols) != 10:
            raise DataError(f"{path}:{lineno}: expected 10 tab-separated CoNLL-U columns, got {len(cols)}")
        if "-" in cols[0] or "." in cols[0]:
            continue
        if cols[3] not in UPOS_TO_UNIVERSAL:
            raise DataError(
                f"{path}:{lineno}: UPOS: expected one of {' '.join(UPOS_TO_UNIVERSAL)}, got {shorten(cols[3])!r}"
            )
        words.append(cols[1])
        tags.append(UPOS_TO_UNIVERSAL[cols[3]])
    if words:
        yield TaggedSentence(tuple(words), tuple(tags))


# ---- stats ----------------------------------------------------------------------------------


def stats(dataset: Dataset) -> dict:
    """Per split: sentences (tagger) or documents (sentiment), tokens and label counts; plus skips.

    Sentiment tokens are counted with `trainer.core.preprocess.tokenize`, the tokenizer the models see.
    """
    unit = task_kind(dataset.task).data_unit
    result: dict = {}
    for split in dataset.splits:
        count = tokens = 0
        labels: Counter = Counter()
        for example in dataset.examples(split):
            count += 1
            tokens += len(example.tokens())
            labels.update(example.labels)
        result[split] = {unit: count, "tokens": tokens, "labels": dict(labels.most_common())}
    if dataset.skipped:
        result["skipped"] = dict(dataset.skipped)
    return result


def describe_skipped(skipped: Counter) -> str:
    """One line for stderr, e.g. `skipped 3: bad fasttext line 3`."""
    return f"skipped {sum(skipped.values())}: " + ", ".join(f"{why} {n}" for why, n in skipped.most_common())
