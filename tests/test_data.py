"""`trainer.core.data` and `python -m trainer stats`: real Brown and Rotten Tomatoes numbers, the tag map,
fasttext streaming and errors, CoNLL-U, NLTK's treebank and bad specs."""

import bz2
import json
import os
import subprocess
import sys
import tracemalloc
from collections import Counter
from pathlib import Path

import pytest
from helpers import REPO, run_main

from trainer.core.corpora import brown_to_universal
from trainer.core.data import SPLITS, Review, TaggedSentence, open_dataset, stats
from trainer.core.errors import DataError
from trainer.core.examples import text_bucket
from trainer.core.fetch import MARKER, SOURCES
from trainer.core.preprocess import UNIVERSAL_TAGS

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SPEC_FORMS = (
    "expected one of: brown, rotten-tomatoes, nltk-treebank, fasttext:PATH[,PATH_TEST], conllu:TRAIN[,DEV[,TEST]]"
)

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


def run_stats(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m trainer stats ARGS` in this process (`helpers.run_main`)."""
    return run_main("trainer", "stats", *args, env=env)


def run_stats_subprocess(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The real subprocess: nltk reads $NLTK_DATA once, when it is first imported."""
    return subprocess.run(
        [sys.executable, "-m", "trainer", "stats", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


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
    assert_one_line_error(proc, f"{data / 'brown' / 'ca01'}:3: unknown Brown tag 'zz'")


def test_brown_non_utf8_names_file_and_line(tmp_path):
    data = fake_brown(tmp_path, b"\tThe/at jury/nn ./.\n\tA/at caf\xe9/nn ./.\n")
    proc = run_stats("--data", "brown", env={"DATA_DIR": str(data)})
    assert_one_line_error(proc, f"{data / 'brown' / 'ca01'}:2: not valid UTF-8")


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


# ---- fasttext ---------------------------------------------------------------------------------


def write_fasttext(path: Path, lines: list[bytes]) -> Path:
    data = b"".join(line + b"\n" for line in lines)
    path.write_bytes(bz2.compress(data) if path.suffix == ".bz2" else data)
    return path


def fasttext_lines(n: int) -> list[bytes]:
    return [f"__label__{i % 2 + 1} review number {i}: {'good' if i % 2 else 'bad'} stuff".encode() for i in range(n)]


@pytest.mark.parametrize("name", ["reviews.txt", "reviews.txt.bz2"])
def test_fasttext_plain_and_bz2(tmp_path, name):
    path = write_fasttext(tmp_path / name, fasttext_lines(200))
    dataset = open_dataset(f"fasttext:{path}")
    splits = {s: list(dataset.examples(s)) for s in SPLITS}
    assert sum(len(v) for v in splits.values()) == 200
    assert all(splits[s] for s in SPLITS)
    for split, bucket_ok in (("test", {9}), ("dev", {8}), ("train", set(range(8)))):
        assert all(text_bucket(r.text) in bucket_ok for r in splits[split])
    review = next(r for r in splits["train"] + splits["dev"] + splits["test"] if r.text.startswith("review number 3:"))
    assert review == Review("review number 3: good stuff", "positive")


def test_fasttext_fixture_with_separate_test_file(tmp_path):
    test_path = write_fasttext(tmp_path / "test.txt", [b"__label__1 awful", b"__label__2 lovely"])
    dataset = open_dataset(f"fasttext:{FIXTURES / 'reviews.fasttext'},{test_path}")
    assert list(dataset.examples("test")) == [Review("awful", "negative"), Review("lovely", "positive")]
    train_dev = list(dataset.examples("train")) + list(dataset.examples("dev"))
    assert len(train_dev) == 6 and all(text_bucket(r.text) != 8 for r in dataset.examples("train"))
    assert Counter(r.label for r in train_dev) == Counter(positive=3, negative=3)


def test_fasttext_is_streamed(tmp_path):
    padding = b" and more words to make a line of a realistic length" * 2
    path = write_fasttext(tmp_path / "big.txt", [line + padding for line in fasttext_lines(100_000)])
    assert path.stat().st_size > 10_000_000
    dataset = open_dataset(f"fasttext:{path}")
    tracemalloc.start()
    try:
        first = next(dataset.examples("train"))
        first_peak = tracemalloc.get_traced_memory()[1]
        n_dev = sum(1 for _ in dataset.examples("dev"))
        full_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert first.label in ("positive", "negative") and n_dev > 5_000
    assert first_peak < 500_000 and full_peak < 1_000_000, (first_peak, full_peak)


def test_fasttext_malformed_line_cli(tmp_path):
    long_text = "x" * 200
    path = write_fasttext(
        tmp_path / "bad.txt", [b"__label__1 fine", b"__label__2 fine too", f"__label__3 {long_text}".encode()]
    )
    proc = run_stats("--data", f"fasttext:{path}")
    line = assert_one_line_error(
        proc, f"{path}:3: expected '__label__1 <text>' or '__label__2 <text>', got '__label__3 xxx"
    )
    assert len(line) < len(str(path)) + 160  # the bad text is shortened


@pytest.mark.parametrize(
    "bad, why",
    [
        (b"__label__1", "expected '__label__1 <text>'"),
        (b"__label__2    ", "expected '__label__1 <text>'"),
        (b"label 1 text", "expected '__label__1 <text>'"),
        (b"__label__1 caf\xe9", "not valid UTF-8"),
    ],
)
def test_fasttext_bad_lines(tmp_path, bad, why):
    path = write_fasttext(tmp_path / "bad.txt.bz2", [b"__label__1 ok", bad])
    with pytest.raises(DataError, match=f"^{path}:2: {why}"):
        for split in SPLITS:
            list(open_dataset(f"fasttext:{path}").examples(split))


def test_fasttext_skip_bad_lines_counts_once(tmp_path):
    lines = fasttext_lines(50)
    lines[10:10] = [b"garbage", b"__label__2 caf\xe9", b"__label__1 "]
    path = write_fasttext(tmp_path / "mixed.txt", lines)
    dataset = open_dataset(f"fasttext:{path}", skip_bad_lines=True)
    for _ in range(2):  # every split re-reads the file; the skips are still counted once
        assert sum(len(list(dataset.examples(s))) for s in SPLITS) == 50
    assert dataset.skipped == Counter({"bad fasttext line": 3})
    proc = run_stats("--data", f"fasttext:{path}", "--skip-bad-lines")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["skipped"] == {"bad fasttext line": 3}
    assert proc.stderr.strip() == "stats: skipped 3: bad fasttext line 3"


def test_corrupt_bz2_is_a_data_error(tmp_path):
    path = tmp_path / "broken.txt.bz2"
    data = bz2.compress(b"".join(b"__label__1 ok %d\n" % i for i in range(3000)))
    path.write_bytes(data[: len(data) // 2])
    assert_one_line_error(run_stats("--data", f"fasttext:{path}"), f"{path}:", "cannot read")


# ---- conllu -----------------------------------------------------------------------------------

TINY_CONLLU = [
    TaggedSentence(("I", "ca", "n't", "go", "."), ("PRON", "VERB", "PRT", "VERB", ".")),
    TaggedSentence(
        ("Paris", "and", "three", "big", "dogs", "because", "of", "the", "%", "wow", "very"),
        ("NOUN", "CONJ", "NUM", "ADJ", "NOUN", "CONJ", "ADP", "DET", ".", "X", "ADV"),
    ),
]


def test_conllu_train_dev_test_files():
    path = FIXTURES / "tiny.conllu"
    dataset = open_dataset(f"conllu:{path},{path},{path}")
    assert dataset.task == "tagger"
    assert {s: list(dataset.examples(s)) for s in SPLITS} == {s: TINY_CONLLU for s in SPLITS}


def test_conllu_carves_missing_dev_and_test_from_train(tmp_path):
    path = tmp_path / "many.conllu"
    path.write_text(
        "".join(
            f"1\tword{i}\t_\tNOUN\t_\t_\t0\troot\t_\t_\n2\t.\t_\tPUNCT\t_\t_\t1\tpunct\t_\t_\n\n" for i in range(100)
        )
    )
    dataset = open_dataset(f"conllu:{path}")
    splits = {s: list(dataset.examples(s)) for s in SPLITS}
    assert sum(len(v) for v in splits.values()) == 100 and all(splits.values())
    assert all(text_bucket(" ".join(s.words)) == 9 for s in splits["test"])
    with_dev = open_dataset(f"conllu:{path},{FIXTURES / 'tiny.conllu'}")
    assert list(with_dev.examples("dev")) == TINY_CONLLU
    assert list(with_dev.examples("test")) == splits["test"]
    assert len(list(with_dev.examples("train"))) == 100 - len(splits["test"])


def test_conllu_stats_cli():
    proc = run_stats("--data", f"conllu:{FIXTURES / 'tiny.conllu'},{FIXTURES / 'tiny.conllu'}")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["dev"] == {
        "sentences": 2,
        "tokens": 16,
        "labels": dict(Counter(TINY_CONLLU[0].tags + TINY_CONLLU[1].tags).most_common()),
    }


@pytest.mark.parametrize(
    "line, why",
    [
        ("1\tI\tI\tPRON\tPRP\t_\t2\tnsubj\t_", "expected 10 tab-separated CoNLL-U columns, got 9"),
        ("1\tI\tI\tPRONOUN\tPRP\t_\t2\tnsubj\t_\t_", "UPOS: expected one of NOUN PROPN"),
    ],
)
def test_conllu_bad_line_cli(tmp_path, line, why):
    path = tmp_path / "bad.conllu"
    path.write_text(f"# sent_id = 1\n1\tHi\thi\tINTJ\tUH\t_\t0\troot\t_\t_\n\n{line}\n\n")
    assert_one_line_error(run_stats("--data", f"conllu:{path}"), f"{path}:4: {why}")


# ---- nltk-treebank ----------------------------------------------------------------------------


def test_nltk_treebank_real_data():
    try:
        dataset = open_dataset("nltk-treebank")
    except DataError as exc:
        pytest.skip(str(exc))
    sentences = {s: list(dataset.examples(s)) for s in SPLITS}
    assert all(sentences.values())
    tags = {t for s in SPLITS for sent in sentences[s] for t in sent.tags}
    assert tags <= set(UNIVERSAL_TAGS)
    assert not any(w.startswith("*") for s in SPLITS for sent in sentences[s] for w in sent.words if w != "*")


def fake_nltk_data(root: Path) -> Path:
    """Ten one-sentence treebank files with -NONE- traces, and the PTB → universal map."""
    corpus = root / "corpora" / "treebank" / "combined"
    corpus.mkdir(parents=True)
    for i in range(10):
        (corpus / f"wsj_{i + 1:04d}.mrg").write_text(
            f"( (S (NP-SBJ (NNP Doc{i}) ) (VP (VBD said) (SBAR (-NONE- 0) (S (NP-SBJ (-NONE- *T*-1) ) "
            f"(VP (VBZ works) ))) ) (. .) ))\n"
        )
    mapping = root / "taggers" / "universal_tagset"
    mapping.mkdir(parents=True)
    (mapping / "en-ptb.map").write_text("NNP\tNOUN\nVBD\tVERB\nVBZ\tVERB\n.\t.\n-NONE-\tX\n")
    return root


def test_nltk_treebank_with_fake_nltk_data(tmp_path):
    env = {"NLTK_DATA": str(fake_nltk_data(tmp_path / "nltk_data"))}
    proc = run_stats_subprocess("--data", "nltk-treebank", env=env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert {s: result[s]["sentences"] for s in SPLITS} == {"train": 8, "dev": 1, "test": 1}
    assert result["dev"] == {"sentences": 1, "tokens": 4, "labels": {"VERB": 2, "NOUN": 1, ".": 1}}


def test_nltk_treebank_missing_data_is_one_line(tmp_path):
    import nltk

    try:
        nltk.data.find("corpora/treebank")
        pytest.skip("real nltk_data with treebank is installed")
    except LookupError:
        pass
    proc = run_stats_subprocess("--data", "nltk-treebank", env={"NLTK_DATA": str(tmp_path)})
    assert_one_line_error(
        proc, "nltk-treebank needs NLTK's 'treebank' and 'universal_tagset' data", "never calls nltk.download()"
    )


# ---- specs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, why",
    [
        ("imdb", "unknown data spec"),
        ("brown:extra", "takes no arguments"),
        ("fasttext", "needs file paths"),
        ("fasttext:", "non-empty"),
        ("fasttext:a,", "non-empty"),
        ("conllu:a,b,c,d", "1 to 3"),
        ("fasttext:/no/such/file.txt", "no such file: /no/such/file.txt"),
    ],
)
def test_bad_spec_cli(spec, why):
    assert_one_line_error(run_stats("--data", spec), f"--data {spec!r}: ", why, SPEC_FORMS)


def test_unknown_split():
    dataset = open_dataset(f"conllu:{FIXTURES / 'tiny.conllu'}")
    with pytest.raises(DataError, match="has no split 'validation'; expected one of: train, dev, test"):
        dataset.examples("validation")


def test_stats_counts_tokens_with_the_model_tokenizer():
    from trainer.core.preprocess import tokenize

    dataset = open_dataset(f"fasttext:{FIXTURES / 'reviews.fasttext'}")
    result = stats(dataset)
    texts = [r.text for s in SPLITS for r in dataset.examples(s)]
    assert sum(result[s]["tokens"] for s in SPLITS) == sum(len(tokenize(t)) for t in texts)
    assert sum(result[s]["documents"] for s in SPLITS) == 6 and "skipped" not in result
