"""`--data` specs → `Dataset`s of `TaggedSentence` (tagger) or `Review` (sentiment), the Brown →
universal tag map, and `stats`. No torch here.

Spec forms: `brown`, `rotten-tomatoes` (both fetched automatically when missing from the data
directory; a no-op when cached), `nltk-treebank`, `fasttext:PATH[,PATH_TEST]`, `conllu:TRAIN[,DEV[,TEST]]`.

Splits are deterministic: corpora of documents split by sorted document position (% 10: 9 test,
8 dev, else train); everything else by `int(sha256(text.strip()).hexdigest()[:8], 16) % 10`, where a
missing DEV or TEST file is carved out of TRAIN with that same rule.

Files are read as bytes and decoded line by line, so bad input is a one-line `DataError` naming
`FILE:LINE`, never a UnicodeDecodeError traceback. Documented skips, counted in `Dataset.skipped`:
rotten-tomatoes `plot` rows, duplicate texts and empty texts; fasttext bad lines (malformed or
non-UTF-8) when `skip_bad_lines=True`.
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path

from trainer.errors import DataError
from trainer.fetch import default_data_dir, fetch
from trainer.preprocess import UNIVERSAL_TAGS, tokenize

SPLITS = ("train", "dev", "test")
SPEC_FORMS = "brown, rotten-tomatoes, nltk-treebank, fasttext:PATH[,PATH_TEST], conllu:TRAIN[,DEV[,TEST]]"


@dataclass(frozen=True)
class TaggedSentence:
    words: tuple[str, ...]  # original case
    tags: tuple[str, ...]  # universal tags, one per word


@dataclass(frozen=True)
class Review:
    text: str
    label: str  # "positive" | "negative"


Example = TaggedSentence | Review


class Dataset:
    """Named splits whose `examples(split)` re-reads the source on every call (streamed)."""

    def __init__(self, name: str, task: str, readers: Mapping[str, Callable[[], Iterator[Example]]],
                 skipped: Counter | None = None, file_skips: dict[str, Counter] | None = None):
        self.name, self.task = name, task
        self.splits = tuple(readers)
        self._readers = dict(readers)
        self._skipped = Counter(skipped or {})
        # Streamed readers store each file's skip counts after a full pass, so reading a file
        # once per split (or twice) never double-counts.
        self._file_skips = file_skips if file_skips is not None else {}

    @property
    def skipped(self) -> Counter:
        """Documented skips by reason (for streamed files: as of the last full pass)."""
        total = Counter(self._skipped)
        for counts in self._file_skips.values():
            total.update(counts)
        return total

    def examples(self, split: str) -> Iterator[Example]:
        if split not in self._readers:
            raise DataError(f"dataset {self.name!r} has no split {split!r}; expected one of: {', '.join(self.splits)}")
        return self._readers[split]()


def open_dataset(spec: str, data_dir: Path | None = None, *, skip_bad_lines: bool = False) -> Dataset:
    """Open a `--data` spec. `brown` and `rotten-tomatoes` are fetched into `data_dir` (default
    `$DATA_DIR` or `./data`) when missing, a no-op when cached. `skip_bad_lines` applies to
    fasttext files: bad lines are skipped and counted in `Dataset.skipped` instead of failing."""
    kind, colon, args = spec.partition(":")
    named = {"brown": _brown, "rotten-tomatoes": _rotten_tomatoes, "nltk-treebank": _nltk_treebank}
    if kind in named and not colon:
        return named[kind](Path(data_dir) if data_dir is not None else default_data_dir())
    if kind == "fasttext" and colon:
        paths = _spec_paths(spec, args, most=2)
        return _fasttext(spec, paths, skip_bad_lines)
    if kind == "conllu" and colon:
        paths = _spec_paths(spec, args, most=3)
        return _conllu(spec, paths)
    why = "takes no arguments" if kind in named else "needs file paths" if kind in ("fasttext", "conllu") \
        else "unknown data spec"
    raise DataError(f"--data {spec!r}: {why}; expected one of: {SPEC_FORMS}")


def _spec_paths(spec: str, args: str, most: int) -> list[Path]:
    parts = args.split(",")
    if len(parts) > most or not all(p.strip() for p in parts):
        raise DataError(f"--data {spec!r}: takes 1 to {most} non-empty comma-separated paths; "
                        f"expected one of: {SPEC_FORMS}")
    paths = [Path(p.strip()) for p in parts]
    for path in paths:
        if not path.is_file():
            raise DataError(f"--data {spec!r}: no such file: {path}; expected one of: {SPEC_FORMS}")
    return paths


# ---- reading bytes line by line ------------------------------------------------------------

def _raw_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, bytes) of a plain or `.bz2` file, streamed."""
    opener = bz2.open if path.suffix == ".bz2" else open
    lineno = 0
    try:
        with opener(path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                yield lineno, raw
    except (OSError, EOFError) as exc:  # unreadable file, corrupt or truncated bz2 stream
        raise DataError(f"{path}:{lineno + 1}: cannot read: {exc}") from None


def _decode(path: Path, lineno: int, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}:{lineno}: not valid UTF-8 (byte {raw[exc.start]:#04x} at column "
                        f"{exc.start + 1})") from None


def _text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, decoded line with its line ending)."""
    for lineno, raw in _raw_lines(path):
        yield lineno, _decode(path, lineno, raw)


def _shorten(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[:width] + "..."


# ---- splits ---------------------------------------------------------------------------------

def _bucket_split(bucket: int) -> str:
    return {9: "test", 8: "dev"}.get(bucket % 10, "train")


def text_bucket(text: str) -> int:
    """The hash bucket 0..9 of a text: 9 → test, 8 → dev, else train."""
    return int(hashlib.sha256(text.strip().encode("utf-8")).hexdigest()[:8], 16) % 10


def _split_readers(given: dict[str, Path], read: Callable[[Path], Iterator[Example]],
                   key: Callable[[Example], str]) -> dict[str, Callable[[], Iterator[Example]]]:
    """Split readers over train[/dev][/test] files; a missing dev or test is carved from train."""
    buckets = {"train": set(range(10))}
    for split, bucket in (("dev", 8), ("test", 9)):
        if split not in given:
            buckets["train"].discard(bucket)
            buckets[split] = {bucket}
    readers = {}
    for split in SPLITS:
        if split in given and split != "train":
            readers[split] = partial(read, given[split])
        else:
            readers[split] = partial(_filtered, read, given["train"], key, frozenset(buckets[split]))
    return readers


def _filtered(read: Callable[[Path], Iterator[Example]], path: Path, key: Callable[[Example], str],
              buckets: frozenset[int]) -> Iterator[Example]:
    for example in read(path):
        if len(buckets) == 10 or text_bucket(key(example)) in buckets:
            yield example


# ---- brown ----------------------------------------------------------------------------------

BROWN_FILE = re.compile(r"c[a-r]\d\d")
BROWN_BASE = {
    "(": ".", ")": ".", ",": ".", "--": ".", ".": ".", ":": ".", "``": ".", "''": ".", "'": ".",
    "*": "ADV",
    "abl": "PRT", "abn": "PRT", "abx": "DET", "ap": "ADJ", "at": "DET",
    "be": "VERB", "bed": "VERB", "bedz": "VERB", "beg": "VERB", "bem": "VERB", "ben": "VERB", "ber": "VERB",
    "bez": "VERB",
    "cc": "CONJ", "cd": "NUM", "cs": "ADP",
    "do": "VERB", "dod": "VERB", "doz": "VERB",
    "dt": "DET", "dti": "DET", "dts": "DET", "dtx": "DET", "ex": "DET",
    "hv": "VERB", "hvd": "VERB", "hvg": "VERB", "hvn": "VERB", "hvz": "VERB",
    "in": "ADP", "jj": "ADJ", "jjr": "ADJ", "jjs": "ADJ", "jjt": "ADJ", "md": "VERB",
    "nil": "X", "nn": "NOUN", "nns": "NOUN", "np": "NOUN", "nps": "NOUN", "nr": "NOUN", "nrs": "NOUN",
    "od": "ADJ", "pn": "NOUN", "pp$": "DET", "pp$$": "PRON", "ppl": "PRON", "ppls": "PRON",
    "ppo": "PRON", "pps": "PRON", "ppss": "PRON", "ql": "ADV", "qlp": "ADV",
    "rb": "ADV", "rbr": "ADV", "rbt": "ADV", "rn": "ADV", "rp": "PRT", "to": "PRT", "uh": "X",
    "vb": "VERB", "vbd": "VERB", "vbg": "VERB", "vbn": "VERB", "vbz": "VERB",
    "wdt": "DET", "wp$": "PRON", "wpo": "PRON", "wps": "PRON", "wql": "ADV", "wrb": "ADV",
}


@lru_cache(maxsize=None)
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


def _brown(data_dir: Path) -> Dataset:
    root = fetch("brown", data_dir)
    files = sorted(p for p in root.iterdir() if BROWN_FILE.fullmatch(p.name))
    if len(files) != 500:
        raise DataError(f"{root}: expected 500 Brown files c[a-r]NN, found {len(files)}")
    by_split = {s: [f for i, f in enumerate(files) if _bucket_split(i) == s] for s in SPLITS}
    return Dataset("brown", "tagger", {s: partial(_brown_sentences, by_split[s]) for s in SPLITS})


def _brown_sentences(files: list[Path]) -> Iterator[TaggedSentence]:
    """Each non-empty line is a sentence of `word/tag` tokens (split on the last '/')."""
    for path in files:
        for lineno, line in _text_lines(path):
            tokens = line.split()
            if tokens:
                yield _brown_sentence(tokens, f"{path}:{lineno}")


def _brown_sentence(tokens: list[str], where: str) -> TaggedSentence:
    words, tags = [], []
    for token in tokens:
        word, slash, tag = token.rpartition("/")
        if not (slash and word and tag):
            raise DataError(f"{where}: expected 'word/tag', got {_shorten(token)!r}")
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


def _rotten_tomatoes(data_dir: Path) -> Dataset:
    reviews, skipped = _read_rotten_tomatoes(fetch("rotten-tomatoes", data_dir) / RT_FILE)
    by_split: dict[str, list[Review]] = {s: [] for s in SPLITS}
    for review in reviews:
        by_split[_bucket_split(text_bucket(review.text))].append(review)
    return Dataset("rotten-tomatoes", "sentiment", {s: partial(iter, by_split[s]) for s in SPLITS}, skipped)


def _read_rotten_tomatoes(path: Path) -> tuple[list[Review], Counter]:
    """Critic snippets (fresh/rotten) minus `plot` rows, empty and duplicate texts (first kept)."""
    rows = csv.reader(line for _, line in _text_lines(path))
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
            raise DataError(f"{path}:{rows.line_num}: category: expected 'fresh', 'rotten' or 'plot', "
                            f"got {_shorten(category)!r}")
        elif not text.strip():
            skipped["empty text"] += 1
        elif text in seen:
            skipped["duplicate text"] += 1
        else:
            seen.add(text)
            reviews.append(Review(text.strip(), RT_LABELS[category]))
    return reviews, skipped


# ---- fasttext -------------------------------------------------------------------------------

FASTTEXT_LABELS = {"__label__1": "negative", "__label__2": "positive"}


def _fasttext(spec: str, paths: list[Path], skip_bad_lines: bool) -> Dataset:
    file_skips: dict[str, Counter] = {}
    read = partial(_fasttext_reviews, skip_bad_lines=skip_bad_lines, file_skips=file_skips)
    given = {"train": paths[0]} if len(paths) == 1 else {"train": paths[0], "test": paths[1]}
    readers = _split_readers(given, read, key=lambda review: review.text)
    return Dataset(spec, "sentiment", readers, file_skips=file_skips)


def _fasttext_reviews(path: Path, *, skip_bad_lines: bool, file_skips: dict[str, Counter]) -> Iterator[Review]:
    """Stream `__label__1 text` (negative) / `__label__2 text` (positive) lines."""
    skipped: Counter = Counter()
    for lineno, raw in _raw_lines(path):
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
    line = _decode(path, lineno, raw).rstrip("\r\n")
    label, _, text = line.partition(" ")
    if label not in FASTTEXT_LABELS or not text.strip():
        raise DataError(f"{path}:{lineno}: expected '__label__1 <text>' or '__label__2 <text>', "
                        f"got {_shorten(line)!r}")
    return Review(text.strip(), FASTTEXT_LABELS[label])


# ---- conllu ---------------------------------------------------------------------------------

UPOS_TO_UNIVERSAL = {
    "NOUN": "NOUN", "PROPN": "NOUN", "VERB": "VERB", "AUX": "VERB", "ADJ": "ADJ", "ADV": "ADV",
    "ADP": "ADP", "CCONJ": "CONJ", "SCONJ": "CONJ", "DET": "DET", "NUM": "NUM", "PRON": "PRON",
    "PART": "PRT", "PUNCT": ".", "SYM": ".", "INTJ": "X", "X": "X",
}


def _conllu(spec: str, paths: list[Path]) -> Dataset:
    readers = _split_readers(dict(zip(SPLITS, paths)), _conllu_sentences, key=lambda s: " ".join(s.words))
    return Dataset(spec, "tagger", readers)


def _conllu_sentences(path: Path) -> Iterator[TaggedSentence]:
    """Sentences of a CoNLL-U file: FORM and UPOS of word lines (no ranges `1-2`, no empty nodes `1.1`)."""
    words: list[str] = []
    tags: list[str] = []
    for lineno, line in _text_lines(path):
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
            raise DataError(f"{path}:{lineno}: UPOS: expected one of {' '.join(UPOS_TO_UNIVERSAL)}, "
                            f"got {_shorten(cols[3])!r}")
        words.append(cols[1])
        tags.append(UPOS_TO_UNIVERSAL[cols[3]])
    if words:
        yield TaggedSentence(tuple(words), tuple(tags))


# ---- nltk-treebank --------------------------------------------------------------------------

NLTK_MISSING = ("nltk-treebank needs NLTK's 'treebank' and 'universal_tagset' data in nltk_data; "
                "this project never calls nltk.download()")


def _nltk_treebank(data_dir: Path) -> Dataset:
    """NLTK's Penn Treebank sample mapped to the universal tagset, `-NONE-` traces dropped."""
    del data_dir  # nltk_data has its own search path ($NLTK_DATA)
    try:
        from nltk.corpus import treebank
        from nltk.tag.mapping import map_tag

        fileids = sorted(treebank.fileids())
        map_tag("en-ptb", "universal", "NN")  # loads the mapping now, so missing data fails here
    except LookupError:
        raise DataError(NLTK_MISSING) from None
    by_split = {s: [f for i, f in enumerate(fileids) if _bucket_split(i) == s] for s in SPLITS}
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


# ---- stats ----------------------------------------------------------------------------------

def stats(dataset: Dataset) -> dict:
    """Per split: sentences (tagger) or documents (sentiment), tokens and label counts; plus skips.

    Sentiment tokens are counted with `trainer.preprocess.tokenize`, the tokenizer the models see.
    """
    tagger = dataset.task == "tagger"
    result: dict = {}
    for split in dataset.splits:
        count = tokens = 0
        labels: Counter = Counter()
        for example in dataset.examples(split):
            count += 1
            if tagger:
                tokens += len(example.words)
                labels.update(example.tags)
            else:
                tokens += len(tokenize(example.text))
                labels[example.label] += 1
        unit = "sentences" if tagger else "documents"
        result[split] = {unit: count, "tokens": tokens, "labels": dict(labels.most_common())}
    if dataset.skipped:
        result["skipped"] = dict(dataset.skipped)
    return result


def describe_skipped(skipped: Counter) -> str:
    """One line for stderr, e.g. `skipped 3: bad fasttext line 3`."""
    return f"skipped {sum(skipped.values())}: " + ", ".join(f"{why} {n}" for why, n in skipped.most_common())
