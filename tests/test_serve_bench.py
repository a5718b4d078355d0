"""`python -m serve bench` on the shared tiny exports: its table and JSON report, and its flags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import LINES, one_line_error, serve


def test_bench_writes_a_table_and_json(runs, tmp_path: Path) -> None:
    artifact, export_dir = runs["tagger"]
    report_path = tmp_path / "bench.json"
    result = serve(
        "bench",
        "--model",
        export_dir,
        "--torch",
        artifact,
        "--json",
        report_path,
        "--batch-sizes",
        "1,16,64,256",
        "--texts",
        64,
        "--min-seconds",
        0.01,
        "--threads",
        1,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert "onnx-fp32" in result.stdout.decode() and "torch-eager" in result.stdout.decode()
    report = json.loads(report_path.read_text())
    assert report["task"] == "tagger" and report["unit"] == "tokens/s" and report["texts"] == 64
    assert {(r["backend"], r["batch_size"]) for r in report["results"]} == {
        (b, n) for b in ("onnx-fp32", "torch-eager") for n in (1, 16, 64, 256)
    }
    for r in report["results"]:
        assert r["throughput"] > 0 and 0 < r["p50_ms"] <= r["p95_ms"] and r["batches"] >= 1
    e2e = report["end_to_end"]
    assert e2e["raw_text_throughput"] > 0 and e2e["model_only_throughput"] > 0
    assert e2e["ratio"] == pytest.approx(e2e["raw_text_throughput"] / e2e["model_only_throughput"])


def test_bench_reads_reviews_from_a_file(runs, lines_file: Path, tmp_path: Path) -> None:
    report_path = tmp_path / "bench.json"
    result = serve(
        "bench",
        "--model",
        runs["sentiment"][1],
        "--input",
        lines_file,
        "--json",
        report_path,
        "--batch-sizes",
        "1,4",
        "--min-seconds",
        0.02,
    )
    assert result.returncode == 0, result.stderr.decode()
    report = json.loads(report_path.read_text())
    assert report["unit"] == "reviews/s" and report["texts"] == sum(1 for line in LINES if line.strip())
    assert [r["batch_size"] for r in report["results"]] == [1, 4]


BENCH_FLAGS = [
    (("--texts", "0"), "--texts must be an integer from 1 to 10000000; got 0"),
    (("--min-seconds", "inf"), "--min-seconds must be a finite number from 0 to 3600; got inf"),
    (("--min-seconds", "nan"), "--min-seconds must be a finite number"),
    (("--seed", "-1"), "--seed must be an integer from 0"),
    (("--batch-sizes", "4,0"), "--batch-sizes must be an integer from 1 to 65536; got 0"),
    (("--batch-sizes", "100000"), "--batch-sizes must be an integer from 1 to 65536; got 100000"),
    (("--e2e-batch-size", "0"), "--e2e-batch-size must be an integer from 1"),
    (("--threads", "-2"), "--threads must be an integer from 0 to 1024"),
]


@pytest.mark.parametrize("flags", BENCH_FLAGS, ids=[" ".join(f[0]) for f in BENCH_FLAGS])
def test_bench_numeric_flags_are_range_checked(runs, flags: tuple) -> None:
    args, expected = flags
    assert expected in one_line_error(serve("bench", "--model", runs["tagger"][1], *args))


def test_bench_json_is_checked_before_the_run(runs, lines_file: Path, tmp_path: Path) -> None:
    """`--json` follows predict's --output rules: no symlink, no device, never the --input file."""
    real = tmp_path / "real.json"
    real.write_text("{}\n")
    (tmp_path / "link.json").symlink_to(real)
    cases = [
        (tmp_path / "link.json", "is a symbolic link"),
        (lines_file, "is the same file as --input"),
        (tmp_path, "is a directory"),
    ]
    for target, expected in cases:
        message = one_line_error(
            serve("bench", "--model", runs["tagger"][1], "--input", lines_file, "--json", target, "--min-seconds", 0)
        )
        assert f"--json {target}: {expected}" in message
    assert real.read_text() == "{}\n" and (tmp_path / "link.json").is_symlink()
    assert lines_file.read_text().splitlines() == LINES
