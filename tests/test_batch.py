"""`serve predict` as a batch job: JSONL records, bad records, compressed input, shards and progress.

Subprocess tests run the real command on conftest's tiny exports (`runs`); the byte-range rule of
`--shard` is also checked in-process over every shard count up to past the number of lines.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import re
from pathlib import Path

import pytest
from helpers import LINES, TINY_CONFIGS, one_line_error, serve

from serve.progress import Progress
from serve.records import Input, parse_shard

# Lines of very different lengths, CRLF endings, a blank line, and no newline at the end.
SHARD_TEXT = (
    "The cat sat on the mat.\r\nA good movie, not bad at all!\n\n" + "dog " * 40 + "\nx\nÜber café déjà vu.\r\nthe end"
)


def predict(export_dir: Path, path: Path, *args: object) -> bytes:
    result = serve("predict", "--model", export_dir, "--input", path, "--output", "-", *args)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


@pytest.mark.parametrize("task", TINY_CONFIGS)
def test_jsonl_fields_are_copied_and_results_match_text_input(
    runs, lines_file: Path, tmp_path: Path, task: str
) -> None:
    export_dir = runs[task][1]
    records = [
        {"id": i, "text": line, "meta": {"src": "ü", "n": [1, 2.5, None]}, "ok": i % 2 == 0}
        for i, line in enumerate(LINES)
    ]
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    plain = [json.loads(line) for line in predict(export_dir, lines_file).decode().splitlines()]
    out = [json.loads(line) for line in predict(export_dir, path, "--input-format", "jsonl").decode().splitlines()]
    assert len(out) == len(records)
    for record, result, expected in zip(records, out, plain):
        assert list(result)[:3] == ["id", "meta", "ok"]  # copied fields first, in their order
        assert {k: result[k] for k in ("id", "meta", "ok")} == {k: record[k] for k in ("id", "meta", "ok")}
        assert {k: v for k, v in result.items() if k not in ("id", "meta", "ok")} == expected


def test_jsonl_token_lists_for_the_tagger_and_not_for_sentiment(runs, tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"tokens": ["The", "cat", "didn\'t", "sit"], "id": "a"}\n{"tokens": [], "id": "b"}\n')
    out = predict(runs["tagger"][1], path, "--input-format", "jsonl", "--text-field", "tokens").decode()
    first, second = map(json.loads, out.splitlines())
    assert first["id"] == "a" and first["tokens"] == ["The", "cat", "didn't", "sit"] and len(first["tags"]) == 4
    assert second == {"id": "b", "tokens": [], "tags": []}
    result = serve(
        "predict",
        "--model",
        runs["sentiment"][1],
        "--input",
        path,
        "--output",
        "-",
        "--input-format",
        "jsonl",
        "--text-field",
        "tokens",
    )
    message = one_line_error(result)
    assert f"{path}:1: field 'tokens' must be a string (a sentiment model reads raw text)" in message


BAD_JSONL = [
    (b'{"id": 1, "text": "the cat"}', None),
    (b'{"id": 2, "text": "the dog"', "not JSON"),
    (b'["the cat"]', "not a JSON object"),
    (b'{"id": 4, "txt": "oops"}', "no field 'text'"),
    (b'{"id": 5, "text": 7}', "field 'text' of the wrong type"),
    (b"", "blank line"),
    (b'{"id": 7, "text": "bad \xff byte"}', "not UTF-8"),
    (b'{"id": 8, "text": "the mat", "label": "positive"}', "field 'label' clashes with a result"),
    (b'{"id": 9, "text": 7}', "field 'text' of the wrong type"),
    (b'{"id": 10, "text": "a good movie"}', None),
]


def test_bad_records_stop_naming_the_line_or_are_skipped_and_counted(runs, tmp_path: Path) -> None:
    path, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    path.write_bytes(b"\n".join(line for line, _ in BAD_JSONL) + b"\n")
    base = ["predict", "--model", runs["sentiment"][1], "--input", path, "--output", out, "--input-format", "jsonl"]
    message = one_line_error(serve(*base))
    assert message == f"error: {path}:2: not JSON (Expecting ',' delimiter); fix the input, or pass --errors skip"
    assert not out.exists()
    result = serve(*base, "--errors", "skip")
    assert result.returncode == 0, result.stderr.decode()
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == [1, 10]
    summary = result.stderr.decode().strip().splitlines()[-1]
    assert summary.startswith("predict: done: 10 lines in ")
    assert summary.endswith(
        "; skipped 8 (2 field 'text' of the wrong type, 1 not JSON, 1 not a JSON object, "
        "1 no field 'text', 1 blank line, 1 not UTF-8, 1 field 'label' clashes with a result)"
    )
    # Skipping drops data, so it is said even under --quiet.
    quiet = serve(*base, "--errors", "skip", "--quiet")
    assert quiet.stderr.decode().count("\n") == 1 and "skipped 8" in quiet.stderr.decode()


@pytest.mark.parametrize("suffix,compress", [(".gz", gzip.compress), (".bz2", bz2.compress)])
def test_compressed_input_gives_the_same_output(runs, lines_file: Path, tmp_path: Path, suffix: str, compress) -> None:
    packed = tmp_path / f"in.txt{suffix}"
    packed.write_bytes(compress(lines_file.read_bytes()))
    export_dir = runs["tagger"][1]
    assert predict(export_dir, packed) == predict(export_dir, lines_file)
    broken = tmp_path / f"broken.txt{suffix}"
    broken.write_bytes(packed.read_bytes()[:-12])
    message = one_line_error(serve("predict", "--model", export_dir, "--input", broken, "--output", "-"))
    assert f"{broken}: not valid {'gzip' if suffix == '.gz' else 'bzip2'} data" in message


def read_shards(path: Path, count: int) -> list[list[bytes]]:
    shards = []
    for index in range(1, count + 1):
        source = Input(str(path), parse_shard(f"{index}/{count}"))
        try:
            shards.append([raw for _, _, raw in source.lines()])
        finally:
            source.close()
    return shards


@pytest.mark.parametrize(
    "text",
    [SHARD_TEXT, SHARD_TEXT + "\n", "", "\n", "one line, no newline"],
    ids=["no-final-newline", "final-newline", "empty", "one-newline", "one-line"],
)
def test_shards_hold_every_line_once_in_order_for_any_count(tmp_path: Path, text: str) -> None:
    path = tmp_path / "in.txt"
    path.write_bytes(text.encode())
    lines = io.BytesIO(text.encode()).readlines()
    for count in range(1, len(text.encode()) + 3):  # up to shards of at most one byte, and empty ones
        shards = read_shards(path, count)
        assert [raw for shard in shards for raw in shard] == lines, count


def test_concatenated_shard_outputs_equal_the_single_process_output(runs, tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    path.write_bytes(SHARD_TEXT.encode())
    # 5 shards of 50 bytes: line 2 straddles the first boundary, the 161-byte line three more.
    assert [len(shard) for shard in read_shards(path, 5)] == [2, 2, 0, 0, 3]
    export_dir = runs["tagger"][1]
    whole = predict(export_dir, path)
    assert len(whole.splitlines()) == 7
    parts = [predict(export_dir, path, "--shard", f"{i}/5", "--quiet") for i in range(1, 6)]
    assert parts[2] == parts[3] == b"" and b"".join(parts) == whole


def test_shard_refuses_compressed_input_and_stdin(runs, tmp_path: Path) -> None:
    packed = tmp_path / "in.txt.gz"
    packed.write_bytes(gzip.compress(b"the cat\n"))
    base = ["predict", "--model", runs["tagger"][1], "--output", "-", "--shard", "1/2"]
    message = one_line_error(serve(*base, "--input", packed))
    assert "is gzip-compressed, which cannot be split at byte offsets; decompress it first" in message
    assert "stdin cannot be split" in one_line_error(serve(*base, "--input", "-", input=b"the cat\n"))


def test_shard_errors_name_the_byte_offset(runs, tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    path.write_bytes(b"the cat sat\nthe dog\nbad \xff\nok\n")
    result = serve("predict", "--model", runs["tagger"][1], "--input", path, "--output", "-", "--shard", "2/2")
    assert f"{path}: line at byte 20 (shard 2/2): not valid UTF-8" in one_line_error(result)


def test_progress_lines_summary_and_quiet(runs, tmp_path: Path) -> None:
    from serve.predict import CHUNK_LINES

    path = tmp_path / "in.txt"
    path.write_text("the cat sat on the mat\n" * (2 * CHUNK_LINES + 7))
    base = ["predict", "--model", runs["tagger"][1], "--input", path, "--output", tmp_path / "out.jsonl"]
    result = serve(*base, "--progress-every", "0")
    assert result.returncode == 0
    lines = result.stderr.decode().splitlines()
    report = re.compile(r"predict: ([\d,]+) lines, [\d,]+ lines/s, (\d+)% of 188,577 bytes, ETA \d+:\d\d:\d\d$")
    matches = [report.match(line) for line in lines[:-1]]
    assert all(matches) and [m.group(1) for m in matches] == ["4,096", "8,192", "8,199"], lines
    assert [m.group(2) for m in matches][-1] == "100"
    assert re.fullmatch(r"predict: done: 8,199 lines in [\d.]+ s \([\d,]+ lines/s\)", lines[-1]), lines
    quiet = serve(*base, "--progress-every", "0", "--quiet")
    assert quiet.returncode == 0 and quiet.stderr == b""
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 2 * CHUNK_LINES + 7


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_a_redrawn_bar_on_a_terminal() -> None:
    now = [0.0]
    stream = FakeTerminal()
    progress = Progress("predict", 1000, stream=stream, clock=lambda: now[0])
    for step in range(1, 5):
        now[0] = step * 1.0
        progress.update(step * 100, step * 250)
    progress.finish()
    text = stream.getvalue()
    assert text.count("\r") == 4 and text.endswith("predict: done: 400 lines in 4.0 s (100 lines/s)\n")
    assert "\rpredict [############............] 200 lines, 100 lines/s, 50% of 1,000 bytes, ETA 0:00:02" in text
