"""`python -m serve predict` and `bench`, driven as subprocesses on tiny real exports.

The exports are conftest's session `runs`: `python -m export` run on tiny random-weight artifacts, so
these tests exercise the real artifact -> ONNX -> serve pipeline in seconds.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import LINES, REPO, TINY_CONFIGS, TINY_MAX_TOKENS, env, one_line_error, serve
from onnx import numpy_helper

from trainer.core.preprocess import tokenize
from trainer.core.tasks import UNIVERSAL_TAGS


@pytest.mark.parametrize("task", TINY_CONFIGS)
def test_output_is_byte_identical_across_batch_sizes(runs, lines_file: Path, tmp_path: Path, task: str) -> None:
    _, export_dir = runs[task]
    outputs = []
    for batch_size in (1, 64):
        out = tmp_path / f"out-{batch_size}.jsonl"
        result = serve(
            "predict", "--model", export_dir, "--input", lines_file, "--output", out, "--batch-size", batch_size
        )
        assert result.returncode == 0, result.stderr.decode()
        assert "1 line(s) longer than max_tokens=20 were truncated" in result.stderr.decode()
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]
    results = [json.loads(line) for line in outputs[0].decode().splitlines()]
    assert len(results) == len(LINES)
    for line, result in zip(LINES, results):
        if task == "tagger":
            expected = tokenize(line)[:TINY_MAX_TOKENS]
            assert result["tokens"] == expected and len(result["tags"]) == len(expected)
            assert set(result["tags"]) <= set(UNIVERSAL_TAGS)
        elif not line.strip():
            assert result == {"label": None, "prob_positive": None}
        else:
            assert result["label"] == ("positive" if result["prob_positive"] >= 0.5 else "negative")
            assert result["prob_positive"] == round(result["prob_positive"], 4)
        assert result.get("truncated", False) == (len(tokenize(line)) > TINY_MAX_TOKENS)
    assert '"truncated":true' in outputs[0].decode()
    if task == "tagger":
        assert "ÜBER" in outputs[0].decode()  # UTF-8, not \u escapes


def test_pretokenized_splits_on_whitespace_only(runs, tmp_path: Path) -> None:
    result = serve(
        "predict",
        "--model",
        runs["tagger"][1],
        "--input",
        "-",
        "--output",
        "-",
        "--pretokenized",
        input=b"The cat , didn't  sat.\n\n",
    )
    assert result.returncode == 0, result.stderr.decode()
    first, second = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert first["tokens"] == ["The", "cat", ",", "didn't", "sat."] and len(first["tags"]) == 5
    assert second == {"tokens": [], "tags": []}


@pytest.mark.parametrize("task", TINY_CONFIGS)
def test_verify_passes_against_the_source_artifact(runs, lines_file: Path, task: str) -> None:
    artifact, export_dir = runs[task]
    result = serve(
        "predict",
        "--model",
        export_dir,
        "--input",
        lines_file,
        "--output",
        "-",
        "--batch-size",
        3,
        "--verify",
        artifact,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert "verify passed: logits: max abs diff" in result.stderr.decode()
    assert "0 argmax disagreement(s)" in result.stderr.decode()
    assert len(result.stdout.decode().splitlines()) == len(LINES)


def perturb_onnx(export_dir: Path) -> None:
    """Shift the largest weight matrix, then re-sign model.json so that only the numbers are wrong."""
    path = export_dir / "model.onnx"
    graph = onnx.load(str(path))
    init = max(
        graph.graph.initializer, key=lambda t: int(np.prod(t.dims)) if t.data_type == onnx.TensorProto.FLOAT else 0
    )
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) + 0.5, init.name))
    onnx.save(graph, str(path))
    meta = json.loads((export_dir / "model.json").read_text())
    meta["onnx"]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (export_dir / "model.json").write_text(json.dumps(meta))


def test_verify_fails_on_a_perturbed_model_and_writes_nothing(runs, lines_file: Path, tmp_path: Path) -> None:
    artifact, export_dir = runs["tagger"]
    broken = tmp_path / "broken"
    shutil.copytree(export_dir, broken)
    perturb_onnx(broken)
    out = tmp_path / "out.jsonl"
    result = serve("predict", "--model", broken, "--input", lines_file, "--output", out, "--verify", artifact)
    message = one_line_error(result, status=1)
    assert "failed: logits: max abs diff" in message and "vs atol 0.0001" in message, message
    assert not out.exists() and not list(tmp_path.glob(".out.jsonl*"))


def test_verify_fails_against_a_different_artifact(runs, lines_file: Path, tiny_artifact, tmp_path: Path) -> None:
    other = tiny_artifact(tmp_path / "other" / "model", "sentiment", 7)  # same vocab, other weights
    result = serve(
        "predict", "--model", runs["sentiment"][1], "--input", lines_file, "--output", "-", "--verify", other
    )
    assert "max abs diff" in one_line_error(result, status=1)
    result = serve(
        "predict",
        "--model",
        runs["sentiment"][1],
        "--input",
        lines_file,
        "--output",
        "-",
        "--verify",
        runs["tagger"][0],
    )
    assert "not the artifact" in one_line_error(result, status=1)


# Blocks `import torch` (and anything under it) the way a torch-free install would, then runs `python -m serve`
# with the given arguments. That every serve module imports so is tests/test_serve_imports.py's.
NO_TORCH = """
import importlib.abc, runpy, sys
class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"No module named {name!r} (blocked by the test)")
sys.meta_path.insert(0, NoTorch())
sys.argv = ["serve"] + sys.argv[1:]
runpy.run_module("serve", run_name="__main__", alter_sys=True)
"""


def test_predict_runs_where_torch_cannot_be_imported_and_verify_says_it_needs_torch(runs, lines_file: Path) -> None:
    artifact, export_dir = runs["tagger"]
    base = [sys.executable, "-c", NO_TORCH, "predict", "--model", str(export_dir), "--input", str(lines_file)]
    base += ["--output", "-"]
    result = subprocess.run(base, cwd=REPO, env=env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == len(LINES)
    result = subprocess.run(
        base + ["--verify", str(artifact)], cwd=REPO, env=env(), capture_output=True, text=True, timeout=60
    )
    assert "--verify needs torch" in one_line_error(result)


def test_predict_streams_chunk_by_chunk(runs) -> None:
    """The first chunk's results arrive while the input is still open: nothing waits for EOF."""
    from serve.predict import CHUNK_LINES

    proc = subprocess.Popen(
        [sys.executable, "-m", "serve", "predict", "--model", str(runs["tagger"][1]), "--input", "-", "--output", "-"],
        cwd=REPO,
        env=env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        proc.stdin.write(b"the cat sat on the mat\n" * (CHUNK_LINES + 10))
        proc.stdin.flush()
        first: list[bytes] = []
        reader = threading.Thread(target=lambda: first.append(proc.stdout.readline()))
        reader.start()
        reader.join(timeout=60)
        assert first and first[0].startswith(b'{"tokens":["the","cat"'), "no output before the input was closed"
        assert proc.poll() is None
        proc.stdin.write(b"a dog\n")
        proc.stdin.close()
        rest = proc.stdout.read().splitlines()
        assert proc.wait(timeout=60) == 0
        assert len(rest) + 1 == CHUNK_LINES + 11 and json.loads(rest[-1])["tokens"] == ["a", "dog"]
    finally:
        proc.kill()


def test_results_keep_input_order_across_chunks(runs, tmp_path: Path) -> None:
    """Chunk k+1 is tokenized while chunk k runs: the output must still follow the input, line by line."""
    from serve.predict import CHUNK_LINES

    lines = [f"{'word ' * (i % 13)}line{i} ." if i % 101 else "" for i in range(2 * CHUNK_LINES + 7)]
    path, out = tmp_path / "many.txt", tmp_path / "out.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = serve("predict", "--model", runs["tagger"][1], "--input", path, "--output", out)
    assert result.returncode == 0, result.stderr
    tokens = [json.loads(line)["tokens"] for line in out.read_text(encoding="utf-8").splitlines()]
    assert tokens == [tokenize(line) for line in lines]


def test_non_utf8_input_is_an_error_naming_the_line_or_replaced(runs, tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_bytes(b"the cat\n\nbad \xff\xfe bytes\nthe dog\n")
    out = tmp_path / "out.jsonl"
    message = one_line_error(serve("predict", "--model", runs["tagger"][1], "--input", path, "--output", out))
    assert f"{path}:3: not valid UTF-8" in message and "--errors replace" in message
    assert not out.exists() and not list(tmp_path.glob(".out*"))
    result = serve("predict", "--model", runs["tagger"][1], "--input", path, "--output", out, "--errors", "replace")
    assert result.returncode == 0
    assert "1 line(s) had non-UTF-8 bytes" in result.stderr.decode()
    results = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(results) == 4 and "\ufffd" in "".join(results[2]["tokens"])


def test_error_after_the_first_chunk_leaves_no_partial_file(runs, tmp_path: Path) -> None:
    from serve.predict import CHUNK_LINES

    path = tmp_path / "big.txt"
    path.write_bytes(b"the cat\n" * (CHUNK_LINES + 5) + b"\xff\n")
    out = tmp_path / "out.jsonl"
    out.write_text("previous\n")
    message = one_line_error(serve("predict", "--model", runs["tagger"][1], "--input", path, "--output", out))
    assert f":{CHUNK_LINES + 6}: not valid UTF-8" in message
    assert out.read_text() == "previous\n" and len(list(tmp_path.iterdir())) == 2


def break_sha(export_dir: Path) -> None:
    with open(export_dir / "model.onnx", "ab") as f:
        f.write(b"\0")


def break_json(export_dir: Path) -> None:
    (export_dir / "model.json").write_text("{not json")


BROKEN_EXPORTS = {
    "missing model.onnx": (lambda d: (d / "model.onnx").unlink(), "model.onnx: missing"),
    "missing model.json": (lambda d: (d / "model.json").unlink(), "model.json: missing"),
    "corrupt model.json": (break_json, "model.json: corrupt JSON"),
    "sha256 mismatch": (break_sha, "does not match model.json"),
}


@pytest.mark.parametrize("case", BROKEN_EXPORTS)
def test_broken_export_is_a_one_line_error(runs, lines_file: Path, tmp_path: Path, case: str) -> None:
    broken = tmp_path / "export"
    shutil.copytree(runs["tagger"][1], broken)
    damage, expected = BROKEN_EXPORTS[case]
    damage(broken)
    out = tmp_path / "out.jsonl"
    message = one_line_error(serve("predict", "--model", broken, "--input", lines_file, "--output", out))
    assert expected in message, message
    assert not out.exists()


def test_usage_errors_are_one_line(runs, lines_file: Path, tmp_path: Path) -> None:
    sentiment, tagger = runs["sentiment"][1], runs["tagger"][1]
    out = tmp_path / "out.jsonl"
    cases = [
        (("--model", sentiment, "--input", lines_file, "--pretokenized"), "--pretokenized needs a tagger model"),
        (("--model", tagger, "--input", tmp_path / "nope.txt"), "nope.txt: no such file"),
        (("--model", tmp_path / "no-export", "--input", lines_file), "no such export directory"),
        (("--model", tagger, "--input", lines_file, "--int8"), "no 'int8' model recorded"),
        (("--model", tagger, "--input", lines_file, "--batch-size", 0), "--batch-size must be an integer from 1"),
    ]
    for args, expected in cases:
        message = one_line_error(serve("predict", *args, "--output", out))
        assert expected in message, message
        assert not out.exists()


def test_int8_model_predicts_and_benches(runs, lines_file: Path, tmp_path: Path) -> None:
    from export.quantize import quantize_int8

    export_dir = tmp_path / "export"
    shutil.copytree(runs["tagger"][1], export_dir)
    quantize_int8(export_dir / "model.onnx", export_dir / "model.int8.onnx")
    meta = json.loads((export_dir / "model.json").read_text())
    meta["int8"] = {
        "file": "model.int8.onnx",
        "sha256": hashlib.sha256((export_dir / "model.int8.onnx").read_bytes()).hexdigest(),
    }
    (export_dir / "model.json").write_text(json.dumps(meta))
    result = serve("predict", "--model", export_dir, "--input", lines_file, "--output", "-", "--int8")
    assert result.returncode == 0, result.stderr.decode()
    results = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert [r["tokens"] for r in results] == [tokenize(line)[:TINY_MAX_TOKENS] for line in LINES]
    message = one_line_error(
        serve(
            "predict",
            "--model",
            export_dir,
            "--input",
            lines_file,
            "--output",
            "-",
            "--int8",
            "--verify",
            runs["tagger"][0],
        )
    )
    assert "drop --int8 or --verify" in message
    result = serve("bench", "--model", export_dir, "--batch-sizes", "4", "--texts", 16, "--min-seconds", 0.01)
    assert result.returncode == 0 and "onnx-int8" in result.stdout.decode(), result.stderr.decode()


def test_argument_errors_are_one_line(runs) -> None:
    message = one_line_error(serve("predict", "--model", runs["tagger"][1], "--input", "-"))
    assert "--output" in message
    assert "--batch-sizes" in one_line_error(serve("bench", "--model", runs["tagger"][1], "--batch-sizes", "0,x"))


@pytest.mark.slow
def test_demo_runs_end_to_end_on_a_tiny_schedule(data_dir: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trainer.demo", "--max-steps", "3", "--workdir", str(tmp_path)],
        cwd=REPO,
        env={**env(), "DATA_DIR": str(data_dir)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = result.stdout[result.stdout.index("task ") :]
    assert "tagger" in table and "sentiment" in table
    for task in TINY_CONFIGS:
        assert (tmp_path / "exports" / f"demo-{task}" / "validation.json").is_file()
        predictions = (tmp_path / "runs" / f"demo-{task}" / "serve" / "predictions.jsonl").read_text().splitlines()
        assert len(predictions) == 300
