"""One strict JSON reader and writer (trainer/core/jsonio.py) for everything the product reads and writes:
lone surrogates, huge integers, NaN/Infinity, numbers beyond a double, duplicate keys and deep nesting are
each one line naming FILE:LINE (or the artifact file) and the field, or a counted skip, through the real
commands: `serve predict --input-format jsonl`, `serve` on a crafted model.json, `trainer evaluate` and
`export` on a crafted RUN_DIR/model, `trainer train --config`. Every output is RFC 8259 JSON."""

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import REPO, env, one_line_error, run_main, serve

from trainer.core.jsonio import JSONValueError, dumps, loads

CONLLU = REPO / "tests" / "fixtures" / "tiny.conllu"
GOOD = '{"text": "The cat sat on the mat .", "id": 7}'
# (case, JSONL line, what the error says after FILE:LINE:, the reason a skip is counted under)
BAD_LINES = [
    ("a lone surrogate in a copied field", '{"text": "cat", "note": "a \\ud800 b"}',
     "note is not valid Unicode: a lone surrogate U+D800 at character 2", "lone surrogate"),
    ("a lone surrogate in the text", '{"text": "the \\udfff cat"}',
     "text is not valid Unicode: a lone surrogate U+DFFF at character 4", "lone surrogate"),
    ("a lone surrogate in tokens", '{"text": ["the", "\\ud83d"]}',
     "text[1] is not valid Unicode: a lone surrogate U+D83D", "lone surrogate"),
    ("an integer over 4300 digits", '{"text": "cat", "id": ' + "9" * 4301 + "}",
     "id: an integer of 4301 digits; the limit is 4300", "integer too long"),
    ("1e400", '{"text": "cat", "score": 1e400}',
     "score: the number 1e400 is beyond a double's range", "number out of range"),
    ("NaN", '{"text": "cat", "score": NaN}', "score: NaN is not valid JSON", "NaN or Infinity"),
    ("-Infinity deep inside", '{"text": "cat", "meta": {"x y": [1, -Infinity]}}',
     "meta['x y'][1]: -Infinity is not valid JSON", "NaN or Infinity"),
    ("a duplicate key", '{"text": "cat", "id": 1, "id": 2}', "duplicate key 'id'", "duplicate key"),
    ("a duplicate nested key", '{"text": "cat", "meta": {"a": 1, "a": 1}}', "meta: duplicate key 'a'",
     "duplicate key"),
    ("nesting over 128 levels", '{"text": "cat", "deep": ' + "[" * 200 + "]" * 200 + "}",
     "nested deeper than 128 levels", "nested too deeply"),
    ("nesting past Python's recursion limit", '{"text": "cat", "deep": ' + "[" * 100_000 + "]" * 100_000 + "}",
     "nested deeper than 128 levels", "nested too deeply"),
]  # fmt: skip


def strict_lines(data: bytes) -> list[dict]:
    """Each output line as any strict RFC 8259 parser reads it: UTF-8, no NaN/Infinity, no lone surrogates."""

    def refuse(name: str) -> Any:
        raise AssertionError(f"{name} in the output")

    text = data.decode("utf-8")  # strict: a lone surrogate cannot have been encoded
    return [json.loads(line, parse_constant=refuse) for line in text.splitlines()]


@pytest.mark.parametrize("case", BAD_LINES, ids=[c[0] for c in BAD_LINES])
def test_each_bad_jsonl_value_is_one_line_naming_file_line_and_field(runs, tmp_path: Path, case: tuple) -> None:
    _, line, expected, reason = case
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text(f"{GOOD}\n{line}\n", encoding="utf-8")
    result = serve(
        "predict", "--model", runs["tagger"][1], "--input", source, "--output", out, "--input-format", "jsonl"
    )
    message = one_line_error(result)
    assert message.startswith(f"error: {source}:2: {expected}"), message
    hint = "--errors replace or --errors skip" if reason == "lone surrogate" else "--errors skip"
    assert message.endswith(f"fix the input, or pass {hint}"), message
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


def test_errors_skip_counts_every_bad_value_and_writes_strict_json(runs, tmp_path: Path) -> None:
    """The real subprocess: one bad record of each kind must not kill the batch."""
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text("".join(f"{GOOD}\n{line}\n" for _, line, _, _ in BAD_LINES) + GOOD + "\n", encoding="utf-8")
    command = ["--input", str(source), "--output", str(out), "--input-format", "jsonl", "--errors", "skip"]
    result = subprocess.run(
        [sys.executable, "-m", "serve", "predict", "--model", str(runs["tagger"][1]), *command],
        capture_output=True,
        text=True,
        env=env(),
        timeout=120,
    )
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    records = strict_lines(out.read_bytes())
    assert len(records) == len(BAD_LINES) + 1
    assert all(r["id"] == 7 and r["tokens"] == ["The", "cat", "sat", "on", "the", "mat", "."] for r in records)
    counts: dict[str, int] = {}
    for _, _, _, reason in BAD_LINES:
        counts[reason] = counts.get(reason, 0) + 1
    summary = result.stderr.strip().splitlines()[-1]
    assert f"skipped {len(BAD_LINES)} (" in summary, result.stderr
    for reason, count in counts.items():
        assert f"{count} {reason}" in summary, summary


def test_errors_replace_turns_lone_surrogates_into_u_fffd_and_stops_on_the_rest(runs, tmp_path: Path) -> None:
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    surrogates = [line for _, line, _, reason in BAD_LINES if reason == "lone surrogate"]
    source.write_text("\n".join([GOOD, *surrogates]) + "\n", encoding="utf-8")
    args = ["--input", source, "--output", out, "--input-format", "jsonl", "--errors", "replace"]
    result = serve("predict", "--model", runs["tagger"][1], *args)
    assert result.returncode == 0, result.stderr
    first, note, text, tokens = strict_lines(out.read_bytes())
    assert first["id"] == 7 and note["note"] == "a \ufffd b" and note["tokens"] == ["cat"]
    assert text["tokens"] == ["the", "\ufffd", "cat"] and tokens["tokens"] == ["the", "\ufffd"]
    assert "3 line(s) had non-UTF-8 bytes or lone surrogates, replaced by U+FFFD" in result.stderr.decode()
    source.write_text(f'{GOOD}\n{{"text": "cat", "p": NaN}}\n', encoding="utf-8")
    message = one_line_error(serve("predict", "--model", runs["tagger"][1], *args))
    assert message.startswith(f"error: {source}:2: p: NaN is not valid JSON") and not out.with_name("x").exists()


def craft(path: Path, keys: tuple, raw: str) -> None:
    """Set `keys` (a path into the JSON file at `path`) to the raw JSON text `raw`, which Python's json
    would not write (a duplicate key, NaN, a 4301-digit integer, a lone surrogate escape)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    node = data
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = "@@RAW@@"
    path.write_text(json.dumps(data, indent=2).replace('"@@RAW@@"', raw), encoding="utf-8")


# (case, key path in model.json, raw JSON, expected after "EXPORT_DIR/model.json: ")
MODEL_JSON = [
    ("onnx.file a lone surrogate", ("onnx", "file"), '"\\ud800.onnx"',
     "onnx.file is not valid Unicode: a lone surrogate U+D800 at character 0"),
    ("atol of 4301 digits", ("atol",), "1" * 4301, "atol: an integer of 4301 digits; the limit is 4300"),
    ("atol of 400 digits", ("atol",), "1" * 400, "atol must be a finite number > 0; got 1111"),
    ("atol 1e400", ("atol",), "1e400", "atol: the number 1e400 is beyond a double's range"),
    ("atol NaN", ("atol",), "NaN", "atol: NaN is not valid JSON"),
    ("a duplicate key", ("preprocess", "lowercase"), 'true, "lowercase": false',
     "preprocess: duplicate key 'lowercase'"),
    ("deep nesting", ("tokenizer", "name"), "[" * 300 + "]" * 300, "corrupt JSON (nested deeper than 128 levels)"),
    ("a label a lone surrogate", ("vocab", "labels", 3), '"\\udc00"', "vocab.labels[3] is not valid Unicode"),
]  # fmt: skip


@pytest.mark.parametrize("case", MODEL_JSON, ids=[c[0] for c in MODEL_JSON])
def test_a_crafted_model_json_is_one_line_naming_the_key(runs, tmp_path: Path, case: tuple) -> None:
    _, keys, raw, expected = case
    export_dir = tmp_path / "export"
    shutil.copytree(runs["tagger"][1], export_dir)
    craft(export_dir / "model.json", keys, raw)
    source = tmp_path / "in.txt"
    source.write_text("The cat sat .\n", encoding="utf-8")
    result = serve("predict", "--model", export_dir, "--input", source, "--output", tmp_path / "out.jsonl")
    message = one_line_error(result)
    assert message.startswith(f"error: {export_dir / 'model.json'}: {expected}"), message


# (case, file in RUN_DIR/model, key path, raw JSON, expected after "error: ")
RUN_DIR = [
    ("vocab.json word a lone surrogate", "vocab.json", ("words", 5), '"\\ud800"',
     "vocab.json: words[5] is not valid Unicode: a lone surrogate U+D800"),
    ("vocab.json a duplicate key", "vocab.json", ("labels",), '[], "labels": []', "vocab.json: duplicate key 'labels'"),
    ("config.json an integer of 4301 digits", "config.json", ("model", "word_hidden"), "7" * 4301,
     "config.json: model.word_hidden: an integer of 4301 digits; the limit is 4300"),
    ("config.json an integer of 400 digits for a float", "config.json", ("model", "dropout"), "7" * 400,
     "config.json, key 'model': config key 'dropout' must be a finite number; got 7777"),
    ("config.json an integer of 400 digits", "config.json", ("model", "word_hidden"), "7" * 400,
     "config key 'word_hidden' must be in [1, 65536]; got 7777"),
    ("config.json Infinity", "config.json", ("model", "atol"), "Infinity", "config.json: model.atol: Infinity is not"),
]  # fmt: skip


@pytest.mark.parametrize("case", RUN_DIR, ids=[c[0] for c in RUN_DIR])
def test_a_crafted_run_dir_is_one_line_for_evaluate(tiny_artifact, tmp_path: Path, case: tuple) -> None:
    _, name, keys, raw, expected = case
    model = tiny_artifact(tmp_path / "run" / "model", "tagger")
    craft(model / name, keys, raw)
    result = run_main("trainer", "evaluate", "--model", model, "--data", f"conllu:{CONLLU},{CONLLU},{CONLLU}")
    message = one_line_error(result)
    assert message.startswith("error: ") and str(model / name) in message and expected in message, message


def test_export_of_a_crafted_run_dir_is_one_line_and_writes_nothing(tiny_artifact, tmp_path: Path) -> None:
    model = tiny_artifact(tmp_path / "run" / "model", "tagger")
    craft(model / "vocab.json", ("chars", 4), '"\\udfff"')
    result = run_main("export", "--model", model, "--out", tmp_path / "export")
    assert one_line_error(result) == (
        f"error: {model / 'vocab.json'}: chars[4] is not valid Unicode: a lone surrogate U+DFFF at character 0"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('{"lr": 0.1, "lr": 0.2}', "duplicate key 'lr'"),
        (
            '{"\\ud800": 1}',
            "a key in the top-level object is not valid Unicode: a lone surrogate U+D800 at character 0",
        ),
        ('{"epochs": ' + "9" * 5000 + "}", "epochs: an integer of 5000 digits; the limit is 4300"),
    ],
    ids=["duplicate key", "lone surrogate key", "huge integer"],
)
def test_train_config_files_are_read_strictly(tmp_path: Path, raw: str, expected: str) -> None:
    config = tmp_path / "cfg.json"
    config.write_text(raw, encoding="utf-8")
    args = ["--task", "tagger", "--data", f"conllu:{CONLLU}", "--out", tmp_path / "run", "--config", config]
    message = one_line_error(run_main("trainer", "train", *args))
    assert message == f"error: --config {config}: {expected}"
    assert not (tmp_path / "run").exists()


def test_the_writer_never_writes_nan_or_a_lone_surrogate() -> None:
    with pytest.raises(JSONValueError, match=r"^dev\.loss: nan has no JSON form"):
        dumps({"dev": {"loss": float("nan")}})
    with pytest.raises(JSONValueError, match=r"^tokens\[1\] is not valid Unicode: a lone surrogate U\+D800"):
        dumps({"tokens": ["a", "\ud800"]})
    assert dumps({"loss": [float("inf"), 1.5]}, nan_as_null=True) == '{"loss":[null,1.5]}'  # measurements
    text = dumps({"é": ["😀", 10**4000, 2.5e-308]}, indent=2)
    assert loads(text) == json.loads(text) and text.isascii() is False  # UTF-8, not \u escapes
    assert loads('{"pair": "\\ud83d\\ude00"}') == {"pair": "😀"}  # an escaped surrogate pair is fine
