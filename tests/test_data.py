"""`trainer.core.data` and `python -m trainer stats` on the corpora: real Brown and Rotten Tomatoes numbers,
the tag map and its errors; the file formats and specs are in test_data_formats.py."""

import json
from collections import Counter
from pathlib import Path

import pytest
from helpers import one_line_error, run_stats

from trainer.core.corpora import brown_to_universal
from trainer.core.data import SPLITS, Review, open_dataset
from trainer.core.errors import DataError
from trainer.core.examples import text_bucket
from trainer.core.fetch import MARKER, SOURCES
from trainer.core.tasks import UNIVERSAL_TAGS

BROWN_UNIVERSAL = {
    "NOUN": 275652,
    "VERB": 182751,
    ".": 147565,
    "ADP": 144766,
    "DET": 139289,
    "ADJ": 83731,
    "ADV": 56287,
    "PRON": 51696,
    "CONJ": 38151,
    "PRT": 24413,
    "NUM": 14879,
    "X": 2012,
}
# NLTK's own brown → universal map (it sends most `+` contractions to PRT); ours must stay close.
NLTK_BROWN_UNIVERSAL = {
    "NOUN": 275558,
    "VERB": 182750,
    ".": 147565,
    "ADP": 144766,
    "DET": 137019,
    "ADJ": 83721,
    "ADV": 56239,
    "PRON": 49334,
    "CONJ": 38151,
    "PRT": 29829,
    "NUM": 14874,
    "X": 1386,
}


# ---- brown ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def brown_stats(data_dir: Path) -> dict:
    """`python -m trainer stats --data brown` on the real corpus, run once for the tests below."""
    proc = run_stats("--data", "brown", env={"DATA_DIR": str(data_dir)})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def brown_tag_counts(result: dict) -> Counter:
    return sum((Counter(result[s]["labels"]) for s in SPLITS), Counter())


def test_brown_stats_cli(brown_stats: dict) -> None:
    result = brown_stats
    assert {s: result[s]["sentences"] for s in SPLITS} == {"train": 46175, "dev": 5523, "test": 5642}
    assert {s: result[s]["tokens"] for s in SPLITS} == {"train": 929728, "dev": 115661, "test": 115803}
    assert brown_tag_counts(result) == BROWN_UNIVERSAL
    assert "skipped" not in result


def test_brown_distribution_is_close_to_nltks(brown_stats: dict) -> None:
    """The tag map's counts on the real corpus, not BROWN_UNIVERSAL: a change to the map that also updated
    that constant must still keep every tag's share within a point of NLTK's."""
    ours = brown_tag_counts(brown_stats)
    total, nltk_total = sum(ours.values()), sum(NLTK_BROWN_UNIVERSAL.values())
    assert total == nltk_total == 1161192
    assert set(ours) == set(NLTK_BROWN_UNIVERSAL) == set(UNIVERSAL_TAGS)
    for tag in UNIVERSAL_TAGS:
        assert abs(ours[tag] / total - NLTK_BROWN_UNIVERSAL[tag] / nltk_total) < 0.01, tag


def test_brown_examples_keep_words_and_case(data_dir):
    first = next(open_dataset("brown", data_dir).examples("train"))
    assert first.words[:4] == ("The", "Fulton", "County", "Grand")
    assert first.tags[:4] == ("DET", "NOUN", "NOUN", "ADJ")
    assert "Atlanta's" in first.words and first.tags[first.words.index("Atlanta's")] == "NOUN"


@pytest.mark.parametrize(
    "tag, universal",
    [
        ("at", "DET"),
        ("vbd", "VERB"),
        ("np$", "NOUN"),
        ("bez*", "VERB"),
        ("fw-in", "X"),
        ("FW-NN-TL", "X"),
        ("nn-tl", "NOUN"),
        ("jj-tl-hl", "ADJ"),
        ("ppss+md", "PRON"),
        ("to", "PRT"),
        ("pp$", "DET"),
        ("pp$$", "PRON"),
        ("wp$", "PRON"),
        ("md*", "VERB"),
        ("nn-tl+bez", "NOUN"),
        ("*", "ADV"),
        ("``", "."),
        ("--", "."),
        ("nil", "X"),
        ("cd$", "NUM"),
        ("np+bez-nc", "NOUN"),
        ("NN-HL", "NOUN"),
    ],
)
def test_brown_tag_map(tag, universal):
    assert brown_to_universal(tag) == universal


def test_brown_unknown_tag_is_an_error():
    with pytest.raises(DataError, match="unknown Brown tag 'zz'"):
        brown_to_universal("zz")


def fake_brown(tmp_path: Path, first_file: bytes) -> Path:
    """A DATA_DIR whose brown cache (marker included) has 500 one-line files, ca01 = `first_file`."""
    root = tmp_path / "data" / "brown"
    root.mkdir(parents=True)
    names = [f"c{chr(ord('a') + i // 28)}{i % 28 + 1:02d}" for i in range(500)]
    for name in names:
        (root / name).write_bytes(b"\tThe/at jury/nn ./.\n")
    (root / names[0]).write_bytes(first_file)
    (root / MARKER).write_text(json.dumps({"sha256": SOURCES["brown"].sha256, "files": names}))
    return root.parent


def test_brown_bad_tag_names_file_and_line(tmp_path):
    data = fake_brown(tmp_path, b"\tThe/at jury/nn ./.\n\n\tA/at dog/zz ./.\n")
    proc = run_stats("--data", "brown", env={"DATA_DIR": str(data)})
    one_line_error(proc, f"{data / 'brown' / 'ca01'}:3: unknown Brown tag 'zz'")


def test_brown_non_utf8_names_file_and_line(tmp_path):
    data = fake_brown(tmp_path, b"\tThe/at jury/nn ./.\n\tA/at caf\xe9/nn ./.\n")
    proc = run_stats("--data", "brown", env={"DATA_DIR": str(data)})
    one_line_error(proc, f"{data / 'brown' / 'ca01'}:2: not valid UTF-8")


# ---- rotten-tomatoes --------------------------------------------------------------------------


def test_rotten_tomatoes_stats_cli(data_dir):
    proc = run_stats("--data", "rotten-tomatoes", env={"DATA_DIR": str(data_dir)})
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert {s: result[s]["documents"] for s in SPLITS} == {"train": 10113, "dev": 1341, "test": 1298}
    assert result["skipped"] == {"plot row": 1097, "duplicate text": 56}
    assert "skipped 1153" in proc.stderr
    labels = sum((Counter(result[s]["labels"]) for s in SPLITS), Counter())
    assert set(labels) == {"positive", "negative"} and sum(labels.values()) == 12752
    assert all(result[s]["tokens"] > 15 * result[s]["documents"] for s in SPLITS)


def test_rotten_tomatoes_split_follows_the_text_hash(data_dir):
    dataset = open_dataset("rotten-tomatoes", data_dir)
    for split, bucket_ok in (("test", {9}), ("dev", {8}), ("train", set(range(8)))):
        reviews = list(dataset.examples(split))
        assert all(isinstance(r, Review) and text_bucket(r.text) in bucket_ok for r in reviews)
    assert list(dataset.examples("dev")) == list(dataset.examples("dev"))  # re-iterable
