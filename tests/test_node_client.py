"""clients/node/client.js, the Node.js reference client, on conftest's `runs` exports (both tasks):
its self-check (every vector's tokens from raw text, ids, logits, result objects) and its predict mode,
byte for byte against `python -m serve predict` on the crafted texts and on the held-out sets.

onnxruntime-node comes from the committed package-lock.json, installed with `npm ci --ignore-scripts`
once into a cache keyed by the lock's sha256 ($XDG_CACHE_HOME or ~/.cache, `seqlstm/`), so later
sessions reuse it. Skipped, saying why, where `node` or `npm` is not on PATH.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO, load_json, serve

from trainer.core.data import open_dataset

CLIENT = REPO / "clients" / "node"
pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None,
    reason="node and npm are not on PATH, so the Node.js reference client (clients/node) cannot run",
)


@pytest.fixture(scope="session")
def node_modules() -> Path:
    lock = (CLIENT / "package-lock.json").read_bytes()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "seqlstm"
    target = cache / f"node-client-{hashlib.sha256(lock).hexdigest()[:16]}"
    if not (target / "node_modules" / "onnxruntime-node").is_dir():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".node-client-", dir=cache))
        try:
            for name in ("package.json", "package-lock.json"):
                shutil.copy(CLIENT / name, tmp / name)
            # --ignore-scripts: onnxruntime-node's install script downloads extra files;
            # its bundled CPU binaries suffice.
            proc = subprocess.run(
                ["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
                cwd=tmp,
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert proc.returncode == 0, f"npm ci failed:\n{proc.stderr[-3000:]}"
            shutil.rmtree(target, ignore_errors=True)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target / "node_modules"


def client(export_dir: Path, node_modules: Path, *args: str, text: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["node", str(CLIENT / "client.js"), str(export_dir), *args],
        capture_output=True,
        text=text,
        timeout=300,
        env={**os.environ, "NODE_PATH": str(node_modules)},
    )


def same_as_serve_predict(export_dir: Path, node_modules: Path, lines: bytes, tmp_path: Path) -> int:
    """`node client.js EXPORT --input FILE` and `python -m serve predict` write the same bytes; the line count."""
    path = tmp_path / "input.txt"
    path.write_bytes(lines)
    python = serve("predict", "--model", export_dir, "--input", path, "--output", "-", "--quiet")
    assert python.returncode == 0, python.stderr.decode()
    node = client(export_dir, node_modules, "--input", str(path), text=False)
    assert node.returncode == 0 and node.stderr == b"", node.stderr.decode()
    ours, theirs = node.stdout.split(b"\n"), python.stdout.split(b"\n")  # splitlines() would split on U+2028 too
    assert len(ours) == len(theirs) == lines.count(b"\n") + (not lines.endswith(b"\n")) + 1 and ours[-1] == b""
    differ = [(i, a, b) for i, (a, b) in enumerate(zip(ours, theirs)) if a != b]
    assert not differ, (
        f"{len(differ)} lines differ, e.g. line {differ[0][0] + 1}:\n{differ[0][1][:300]}\n{differ[0][2][:300]}"
    )
    assert node.stdout == python.stdout
    return len(theirs) - 1


@pytest.mark.parametrize("task", ["tagger", "sentiment"])
def test_node_predict_equals_serve_predict_on_the_crafted_texts(
    task: str, runs: dict, node_modules: Path, tmp_path: Path
) -> None:
    """Every vector's raw text as a line, and the line policies: a byte order mark, CRLF and CR CR LF
    endings, blank and whitespace-only lines, a last line without its newline."""
    export_dir = runs[task][1]
    texts = [v["text"] for v in load_json(export_dir / "test_vectors.json")["vectors"] if v["text"] is not None]
    assert all("\n" not in t for t in texts) and len(texts) == 28
    body = "\ufeff" + "\n".join(texts) + '\nCRLF line.\r\nCR CR LF "quoted"\r\r\n\n  \t\nno newline at the end'
    assert same_as_serve_predict(export_dir, node_modules, body.encode(), tmp_path) == len(texts) + 5


@pytest.mark.parametrize("task", ["tagger", "sentiment"])
def test_node_predict_equals_serve_predict_on_the_held_out_sets(
    task: str, runs: dict, node_modules: Path, data_dir: Path, tmp_path: Path
) -> None:
    """Brown's test sentences as raw text (their tokens joined by spaces) and Rotten Tomatoes' test reviews."""
    texts = [" ".join(e.words) for e in open_dataset("brown", data_dir).examples("test")]
    texts += [e.text for e in open_dataset("rotten-tomatoes", data_dir).examples("test")]
    assert len(texts) > 6000
    lines = "".join(t + "\n" for t in texts).encode()  # 7 reviews hold newlines: more lines, in both
    assert same_as_serve_predict(runs[task][1], node_modules, lines, tmp_path) == len(texts) + sum(
        t.count("\n") for t in texts
    )


@pytest.mark.parametrize("task", ["tagger", "sentiment"])
def test_node_client_reproduces_every_vector(task: str, runs: dict, node_modules: Path) -> None:
    export_dir = runs[task][1]
    vectors = load_json(export_dir / "test_vectors.json")["vectors"]
    proc = client(export_dir, node_modules)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    found = re.fullmatch(
        rf"ok: {len(vectors)} {task} vectors, (\d+) logits, max abs diff (\S+) vs atol 0.0001, "
        r"0 mismatches\n",
        proc.stdout,
    )
    assert found, proc.stdout
    assert int(found[1]) == sum(np.size(v["logits"]) for v in vectors if v["logits"] is not None)
    assert float(found[2]) <= 1e-4


def shift_logit(doc: dict) -> str:
    vector = doc["vectors"][3]
    if isinstance(vector["logits"], list):
        vector["logits"][1][5] += 1e-3
    else:
        vector["logits"] += 1e-3
    return f"{vector['name']}: max abs diff 1.000e-3 vs atol 0.0001"


def change_word_id(doc: dict) -> str:
    vector = doc["vectors"][0]
    vector["word_ids"][0] += 1
    return f"{vector['name']}: word_ids ["


def change_label(doc: dict) -> str:
    vector = doc["vectors"][2]
    if "tags" in vector:
        labels = ["NOUN", "VERB"]
        vector["tags"][0] = vector["output"]["tags"][0] = labels[vector["tags"][0] == "NOUN"]
    else:
        vector["label"] = vector["output"]["label"] = "positive" if vector["label"] == "negative" else "negative"
    return f"{vector['name']}: output "


@pytest.mark.parametrize("task", ["tagger", "sentiment"])
@pytest.mark.parametrize("corrupt", [shift_logit, change_word_id, change_label])
def test_node_client_fails_on_a_wrong_vector(
    corrupt, task: str, runs: dict, node_modules: Path, tmp_path: Path
) -> None:
    """One expected value off (model.json's sha256 updated to match, as a port's own vectors would be)."""
    export_dir = tmp_path / "export"
    shutil.copytree(runs[task][1], export_dir)
    doc = load_json(export_dir / "test_vectors.json")
    expected = corrupt(doc)
    (export_dir / "test_vectors.json").write_text(json.dumps(doc))
    meta = load_json(export_dir / "model.json")
    meta["test_vectors"]["sha256"] = hashlib.sha256((export_dir / "test_vectors.json").read_bytes()).hexdigest()
    (export_dir / "model.json").write_text(json.dumps(meta))
    proc = client(export_dir, node_modules)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout.startswith("FAIL: ") and proc.stdout.endswith(" 1 mismatches\n"), proc.stdout
    assert proc.stderr.startswith(expected) and proc.stderr.count("\n") == 1, proc.stderr


def test_node_client_refuses_an_export_it_cannot_trust(runs: dict, node_modules: Path, tmp_path: Path) -> None:
    export_dir = tmp_path / "export"
    shutil.copytree(runs["tagger"][1], export_dir)
    with (export_dir / "test_vectors.json").open("a") as f:
        f.write(" ")
    proc = client(export_dir, node_modules)
    assert proc.returncode == 2 and proc.stdout == ""
    assert re.fullmatch(r"error: test_vectors\.json: sha256 \w{12}\.\.\. does not match model\.json\n", proc.stderr)
    shutil.copy(runs["tagger"][1] / "test_vectors.json", export_dir)
    meta = load_json(export_dir / "model.json")
    meta["preprocess"]["lowercase"] = False  # no longer what the graph's metadata_props say
    (export_dir / "model.json").write_text(json.dumps(meta))
    proc = client(export_dir, node_modules)
    assert proc.returncode == 2 and proc.stderr == (
        "error: model.onnx: metadata_props seqlstm.normalization.lowercase is true, model.json gives false\n"
    )


def test_node_client_refuses_a_tokenizer_json_from_elsewhere(runs: dict, node_modules: Path, tmp_path: Path) -> None:
    """An edited tokenizer.json whose sha256 model.json was made to match: the graph's seqlstm.tokenizer
    still holds the exported one's, so neither the check nor predict runs on it."""
    export_dir = tmp_path / "export"
    shutil.copytree(runs["sentiment"][1], export_dir)
    doc = load_json(export_dir / "tokenizer.json")
    doc["encode"]["max_tokens"] = 7
    (export_dir / "tokenizer.json").write_text(json.dumps(doc))
    meta = load_json(export_dir / "model.json")
    meta["tokenizer"]["sha256"] = hashlib.sha256((export_dir / "tokenizer.json").read_bytes()).hexdigest()
    (export_dir / "model.json").write_text(json.dumps(meta))
    (tmp_path / "in.txt").write_text("fine film\n")
    for args in ([], ["--input", str(tmp_path / "in.txt")]):
        proc = client(export_dir, node_modules, *args)
        assert proc.returncode == 2 and proc.stdout == "", proc.stdout
        assert (
            proc.stderr.startswith("error: model.onnx: metadata_props seqlstm.tokenizer is {")
            and proc.stderr.count("\n") == 1
        ), proc.stderr
