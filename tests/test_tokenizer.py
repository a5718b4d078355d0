"""The tokenizer as data: trainer/core/treebank.json, its compiler, and the export's tokenizer.json.

The tokens must be exactly today's (nltk's Treebank tokenizer between stdlib-`re` URL matches) on the
held-out sets and the crafted texts; serving must tokenize with the export's own file; older exports
(no tokenizer.json) serve as before.
"""

from __future__ import annotations

import json
import re
import shutil
import unicodedata
from pathlib import Path

import pytest
import regex
from helpers import TREEBANK_EDGE_CASES, load_json, serve
from nltk.tokenize import NLTKWordTokenizer

from export.onnx_export import set_metadata
from export.vectors import CASE_AND_DIGITS, CRAFTED_TEXTS, unicode_digits
from serve.onnx_metadata import metadata_props
from serve.runtime import ServingModel
from trainer.core import treebank
from trainer.core.data import open_dataset
from trainer.core.errors import ArtifactError, DataError
from trainer.core.fetch import sha256_file
from trainer.core.preprocess import tokenize
from trainer.core.tokenizer import DESCRIPTION, Tokenizer, default_tokenizer, read_description

NLTK = NLTKWordTokenizer()
URL_BEFORE = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)  # the URL cut before the description existed


def tokenize_before(text: str) -> list[str]:
    """`trainer.core.preprocess.tokenize` as it was: nltk's own tokenizer between URL matches."""
    tokens, start = [], 0
    for match in URL_BEFORE.finditer(text):
        tokens += NLTK.tokenize(text[start : match.start()]) + ["<url>"]
        start = match.end()
    return tokens + NLTK.tokenize(text[start:])


def crafted_texts() -> list[str]:
    extra = [unicode_digits(), CASE_AND_DIGITS, "A " + "abc" * 1000 + "z.", "word " * 3000, "a,\n", "x.\n", "b:\r\n"]
    return TREEBANK_EDGE_CASES + list(CRAFTED_TEXTS.values()) + extra


def test_the_committed_description_is_what_treebank_py_writes() -> None:
    """Regenerated from nltk's rules and this interpreter's engines, it is byte for byte the committed one
    (except the Python version that wrote it): nothing was edited by hand, nothing is stale."""
    committed = read_description(DESCRIPTION)
    here = {"unicodedata": unicodedata.unidata_version, "regex": regex.__version__}
    if committed["source"]["unicode"] != here:
        pytest.skip(f"this interpreter's Unicode data {here} is not the description's {committed['source']['unicode']}")
    fresh = treebank.description()
    fresh["source"]["python"] = committed["source"]["python"]
    assert fresh == committed


def test_tokens_equal_todays_on_the_crafted_texts() -> None:
    texts = crafted_texts()
    differ = [t for t in texts if tokenize(t) != tokenize_before(t)]
    assert not differ, f"{len(differ)} of {len(texts)} differ, e.g. {differ[0][:100]!r}"
    assert tokenize("a,,b a,,,b") == ["a", ",", ",b", "a", ",", ",", ",", "b"]  # why tokenizers' Replace cannot
    doc = read_description(DESCRIPTION)
    doc["steps"][-1]["on"] = f"(?:{doc['steps'][-1]['on']})"  # the same split, run as a regex
    general, fast = Tokenizer(doc), default_tokenizer()
    assert fast.split_is_str_split and not general.split_is_str_split
    assert all(general.tokenize(t) == fast.tokenize(t) for t in texts)
    assert tokenize("x www.a.b/c, HTTPS://Q") == ["x", "<url>", "<url>"]


def test_tokens_equal_todays_on_the_held_out_sets(data_dir: Path) -> None:
    """Brown's test sentences as raw text and Rotten Tomatoes' test reviews, every one."""
    texts = [" ".join(e.words) for e in open_dataset("brown", data_dir).examples("test")]
    texts += [e.text for e in open_dataset("rotten-tomatoes", data_dir).examples("test")]
    assert len(texts) == 6940
    differ = [t for t in texts if tokenize(t) != tokenize_before(t)]
    assert not differ, f"{len(differ)} of {len(texts)} differ, e.g. {differ[0][:100]!r}"


def mutate(change):
    def make() -> dict:
        doc = json.loads(DESCRIPTION.read_text())
        change(doc)
        return doc

    return make


BAD = [
    ("not an object", lambda: [], "not a tokenizer description"),
    ("format", mutate(lambda d: d.update(format="tokenizers")), "format must be 'seqlstm-tokenizer'"),
    ("version", mutate(lambda d: d.update(version=2)), "version 2 is not one this build reads"),
    ("url", mutate(lambda d: d.pop("url")), "url must be an object with find and token"),
    ("no steps", mutate(lambda d: d.update(steps=[])), "steps must be a non-empty list"),
    ("op", mutate(lambda d: d["steps"][0].update(op="delete")), "steps[0]: a step must be an object whose op"),
    ("keys", mutate(lambda d: d["steps"][0].update(flags="i")), "steps[0]: a replace step has exactly the keys"),
    ("pattern", mutate(lambda d: d["steps"][3].update(find="(")), "steps[3].find: not a valid pattern"),
    ("parts", mutate(lambda d: d["steps"][0].update(replace=[" ", 1.5])), "steps[0].replace: replace must be"),
    ("split early", mutate(lambda d: d["steps"].insert(0, d["steps"][-1])), "steps[1]: the split step must be"),
    ("no split", mutate(lambda d: d["steps"].pop()), "steps must end with a split step"),
    ("digits", mutate(lambda d: d.update(digits=[[57, 48]])), "digits: must be a list of [first, last]"),
]


@pytest.mark.parametrize("make, message", [pytest.param(m, msg, id=name) for name, m, msg in BAD])
def test_a_bad_description_is_one_line_naming_the_step(make, message: str) -> None:
    with pytest.raises(DataError) as caught:
        Tokenizer(make(), "tokenizer.json")
    assert message in str(caught.value) and "\n" not in str(caught.value), str(caught.value)


def republish(export_dir: Path, meta: dict) -> None:
    """model.json and the graph's metadata_props made consistent again after an edit (as an export would be)."""
    set_metadata(export_dir / "model.onnx", metadata_props(meta))
    meta["onnx"]["sha256"] = sha256_file(export_dir / "model.onnx")
    (export_dir / "model.json").write_text(json.dumps(meta))


def edited_export(runs: dict, tmp_path: Path, change) -> Path:
    """A copy of the tagger export whose tokenizer.json `change` edited, sha256 and metadata updated."""
    export_dir = tmp_path / "export"
    shutil.copytree(runs["tagger"][1], export_dir)
    path = export_dir / "tokenizer.json"
    doc = load_json(path)
    change(doc)
    path.write_text(json.dumps(doc))
    meta = load_json(export_dir / "model.json")
    meta["tokenizer"]["sha256"] = sha256_file(path)
    republish(export_dir, meta)
    return export_dir


def test_serving_tokenizes_with_the_exports_own_description(runs: dict, tmp_path: Path) -> None:
    rule = {"op": "replace", "name": "test", "find": "approved", "replace": ["OK"]}
    export_dir = edited_export(runs, tmp_path, lambda doc: doc["steps"].insert(0, rule))
    assert ServingModel(export_dir).prepare_text("They approved it.").tokens == ["They", "OK", "it", "."]
    assert ServingModel(runs["tagger"][1]).prepare_text("They approved it.").tokens == ["They", "approved", "it", "."]


def test_a_changed_or_foreign_tokenizer_json_is_refused(runs: dict, tmp_path: Path) -> None:
    export_dir = edited_export(runs, tmp_path, lambda doc: doc["encode"].update(max_tokens=7))
    with pytest.raises(ArtifactError, match=r"tokenizer.json: encode.max_tokens is 7, but model.json and this build"):
        ServingModel(export_dir)
    shutil.copy(runs["tagger"][1] / "tokenizer.json", export_dir)
    with (export_dir / "tokenizer.json").open("a") as f:
        f.write(" ")
    proc = serve("predict", "--model", export_dir, "--input", "-", "--output", "-", input=b"x\n")
    assert proc.returncode == 2 and proc.stdout == b""
    assert re.fullmatch(rb"error: \S+tokenizer\.json: sha256 \w{12}\.\.\. does not match model\.json .*\n", proc.stderr)


@pytest.mark.parametrize("task", ["tagger", "sentiment"])
def test_an_export_from_before_tokenizer_json_serves_as_before(task: str, runs: dict, tmp_path: Path) -> None:
    export_dir = tmp_path / "export"
    shutil.copytree(runs[task][1], export_dir)
    (export_dir / "tokenizer.json").unlink()
    meta = load_json(export_dir / "model.json")
    del meta["tokenizer"]["file"], meta["tokenizer"]["sha256"]
    republish(export_dir, meta)
    vectors = [v for v in load_json(export_dir / "test_vectors.json")["vectors"] if v["text"] is not None]
    lines = "".join(v["text"] + "\n" for v in vectors).encode()
    proc = serve("predict", "--model", export_dir, "--input", "-", "--output", "-", "--quiet", input=lines)
    assert proc.returncode == 0, proc.stderr.decode()
    assert [json.loads(line) for line in proc.stdout.splitlines()] == [v["output"] for v in vectors]


def test_the_closest_text_in_graph_differs_only_in_the_clitic_exclusion(data_dir: Path, tmp_path: Path) -> None:
    """bench.text_graph: the steps as RE2 regex replaces in onnxruntime (onnxruntime-extensions). Every
    token that differs on the held-out sets is a clitic `'s` or `'n` that RE2 splits as `'` + `s`."""
    pytest.importorskip("onnxruntime_extensions", reason="bench.text_graph needs onnxruntime-extensions")
    from bench import text_graph

    out = tmp_path / "text_graph.json"
    assert text_graph.main(["--json", str(out)]) == 0
    results = load_json(out)["results"]
    held_out = results["table"][:2]
    assert [row["texts"] for row in held_out] == [5642, 1298]
    assert all(0 < row["tokens_differ"] <= 20 for row in held_out)  # 6 and 6 with today's corpora
    assert [row["step"] for row in results["approximated"]][0] == "starting_quotes.4"
    for example in (e for e in results["examples"] if not e["corpus"].startswith("crafted")):
        extra = [t for t in example["graph"] if t not in example["tokenize"]]
        assert set(extra) <= {"'", "s", "n", "S", "N"}, example


def test_the_text_memo_returns_the_same_tokens_as_a_fresh_list_and_stays_bounded(monkeypatch) -> None:
    """A remembered text gives the steps' own tokens, in a list the caller may change; texts past
    MEMO_TEXT characters, or past the MEMO_CHARS budget, are tokenized every time and not kept."""
    from trainer.core import tokenizer as module

    monkeypatch.setattr(module, "MEMO_CHARS", 40)
    tk = Tokenizer(read_description(DESCRIPTION))
    texts = crafted_texts()[:30]
    for text in texts + texts:
        tokens = tk.tokenize(text)
        assert tokens == tk.run_steps(text) == tokenize_before(text)
        tokens.append("changed")
    assert sum(map(len, tk.memo)) == tk.memo_chars and tk.memo_chars < 40 + module.MEMO_TEXT
    assert all(len(text) <= module.MEMO_TEXT for text in tk.memo)
    long = "word " * 300
    assert tk.tokenize(long) == ["word"] * 300 and long not in tk.memo
