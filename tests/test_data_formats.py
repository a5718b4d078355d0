"""`trainer.core.data` for the file formats and specs: fastText streaming and errors, CoNLL-U, NLTK's
treebank, bad `--data` specs and token counts; the corpora themselves are in test_data.py."""

import bz2
import json
import os
import subprocess
import sys
import tracemalloc
from collections import Counter
from pathlib import Path

import pytest
from helpers import REPO, one_line_error, run_stats

from trainer.core.data import SPLITS, Review, TaggedSentence, open_dataset, stats
from trainer.core.errors import DataError
from trainer.core.examples import text_bucket
from trainer.core.tasks import UNIVERSAL_TAGS

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SPEC_FORMS = (
    "expected one of: brown, rotten-tomatoes, nltk-treebank, fasttext:PATH[,PATH_TEST], conllu:TRAIN[,DEV[,TEST]]"
)


def run_stats_subprocess(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The real subprocess: nltk reads $NLTK_DATA once, when it is first imported."""
    return subprocess.run(
        [sys.executable, "-m", "trainer", "stats", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )


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
    line = one_line_error(proc, f"{path}:3: expected '__label__1 <text>' or '__label__2 <text>', got '__label__3 xxx")
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
    one_line_error(run_stats("--data", f"fasttext:{path}"), f"{path}:", "cannot read")


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
    one_line_error(run_stats("--data", f"conllu:{path}"), f"{path}:4: {why}")


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
    one_line_error(
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
    one_line_error(run_stats("--data", spec), f"--data {spec!r}: ", why, SPEC_FORMS)


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
