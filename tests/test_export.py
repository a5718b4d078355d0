"""`python -m export`: ONNX parity with torch, dynamic shapes, the acceptance step, int8 (bad input:
test_export_bad_inputs.py).

Artifacts are conftest's `artifacts`: tiny random-weight models (parity needs no training) whose
vocabularies come from a few hundred real Brown / Rotten Tomatoes training examples. The CLI runs as a
forked child (`helpers.run_export`), faults injected into it (`patches`); tests/test_bad_inputs.py runs
`python -m export` itself as a subprocess, to its exit status and through a SIGTERM.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers import EXPORT_KINDS, REPO, load_json, run_export
from onnx import numpy_helper

from export import onnx_export
from export.reference import reference_evaluator
from export.validate import validate
from trainer.artifact import load_artifact
from trainer.core.config import PreprocessConfig
from trainer.core.preprocess import Encoder, Vocabs
from trainer.core.tasks import UNIVERSAL_TAGS

SENTENCES = ["The jury praised the administration .", "It was a dull , overlong film", "Yes"]


@pytest.fixture(scope="session")
def exports(tmp_path_factory: pytest.TempPathFactory, artifacts: dict[str, Path], data_dir: Path) -> dict[str, Path]:
    """Each kind exported once with --data; the word tagger over a non-empty directory with --force."""
    root = tmp_path_factory.mktemp("exports")
    out: dict[str, Path] = {}
    for kind, model in artifacts.items():
        out[kind] = root / kind
        extra = ["--data", EXPORT_KINDS[kind][0]]
        if kind == "word-tagger":
            out[kind].mkdir()
            (out[kind] / "stale.txt").write_text("from an older export")
            extra.append("--force")
        proc = run_export(data_dir, "--model", str(model), "--out", str(out[kind]), *extra)
        assert proc.returncode == 0, f"{kind}: {proc.stderr}"
        assert "checks passed" in proc.stdout and proc.stderr == ""  # exporter warnings are handled, not leaked
    return out


@pytest.mark.parametrize("kind", list(EXPORT_KINDS))
def test_export_writes_a_validated_self_describing_directory(kind: str, exports: dict, artifacts: dict) -> None:
    out = exports[kind]
    names = ["model.json", "model.onnx", "test_vectors.json", "tokenizer.json", "validation.json"]
    assert sorted(p.name for p in out.iterdir()) == names
    assert not list(out.parent.glob(f".{kind}.tmp-*")) and not out.with_name(f"{kind}.failed").exists()
    meta, report = load_json(out / "model.json"), load_json(out / "validation.json")
    onnx.checker.check_model(str(out / "model.onnx"), full_check=True)
    assert meta["onnx"]["sha256"] == hashlib.sha256((out / "model.onnx").read_bytes()).hexdigest()
    assert meta["onnx"] == {**meta["onnx"], "opset": 17, "exporter": "torchscript"}
    assert meta["export_format_version"] == 2 and meta["source_format_version"] == 1
    assert meta["test_vectors"] == {
        "file": "test_vectors.json",
        "sha256": hashlib.sha256((out / "test_vectors.json").read_bytes()).hexdigest(),
    }
    assert meta["tokenizer"]["sha256"] == hashlib.sha256((out / "tokenizer.json").read_bytes()).hexdigest()
    source_config = load_json(artifacts[kind] / "config.json")
    assert (meta["task"], meta["model"], meta["preprocess"]) == (
        source_config["task"],
        source_config["model"],
        source_config["preprocess"],
    )
    assert meta["vocab"] == load_json(artifacts[kind] / "vocab.json") and meta["atol"] == 1e-4
    names = ["words", "lengths", "chars", "word_lengths"] if kind == "dual-tagger" else ["words", "lengths"]
    assert [i["name"] for i in meta["inputs"]] == names
    assert meta["inputs"][0] == {"name": "words", "dtype": "int64", "shape": ["batch", "time"]}
    logits = ["batch", "time", 12] if "tagger" in kind else ["batch"]
    assert meta["outputs"] == [{"name": "logits", "dtype": "float32", "shape": logits}]

    assert report["passed"] and report["failures"] == [] and report["real_data"]["used"]
    assert report["real_data"]["spec"] == EXPORT_KINDS[kind][0]
    parity = [c for c in report["cases"] if c["kind"] == "parity"]
    assert all(c["passed"] and c["outputs"]["logits"]["max_abs_diff"] <= 1e-4 for c in parity)
    shapes = [c["inputs"]["words"] for c in parity]
    assert {1, 7, 64} <= {b for b, _ in shapes} and {1, 230} <= {t for _, t in shapes}
    assert any(name.startswith("data-") for name in (c["name"] for c in parity))
    if kind == "dual-tagger":
        assert {1, 30} <= {c["inputs"]["chars"][2] for c in parity}
    kinds = {c["kind"] for c in report["cases"] if c["passed"]}
    assert kinds == {"parity", "padding", "reference", "vectors", "metadata"}
    assert report["checks"] == len(report["cases"])

    vectors = load_json(out / "test_vectors.json")
    assert vectors["data"] == {"used": True, "name": EXPORT_KINDS[kind][0], "split": "test"}
    real = [v for v in vectors["vectors"] if v["source"]["kind"] == "data"]
    assert len(real) == 24 and all(v["name"] == f"test-{v['source']['index']}" for v in real)
    assert all((v["text"] is None) == ("tagger" in kind) for v in real)  # Brown comes tokenized; reviews as text
    recorded = {c["name"]: c for c in report["cases"] if c["kind"] == "vectors"}
    assert set(recorded) == {f"vector-{v['name']}" for v in vectors["vectors"] if v["tokens"]}  # empty: not run
    assert all(c["passed"] and c["outputs"]["logits"]["max_abs_diff"] <= 1e-4 for c in recorded.values())
    assert recorded["vector-max-tokens"]["inputs"]["words"] == [1, 512]


def declared_output_dims(path: Path) -> list[list]:
    graph = onnx.load(str(path)).graph
    return [[d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim] for o in graph.output]


ORT_PROBE = """
import sys, numpy as np, onnxruntime as ort
options = ort.SessionOptions()
options.log_severity_level = 1  # info and up, so a VerifyOutputSizes warning would show
session = ort.InferenceSession(sys.argv[1], options, providers=["CPUExecutionProvider"])
names = [i.name for i in session.get_inputs()]
for b, t, w in [(1, 1, 1), (3, 17, 9), (64, 230, 30)]:
    full = {"words": (b, t), "lengths": (b,), "chars": (b, t, w), "word_lengths": (b, t)}
    feeds = {n: np.ones(full[n], np.int64) for n in names}
    feeds["lengths"][:] = t
    if "word_lengths" in feeds:
        feeds["word_lengths"][:] = w
    print(session.run(None, feeds)[0].shape)
"""


def ort_warnings(path: Path) -> list[str]:
    proc = subprocess.run([sys.executable, "-c", ORT_PROBE, str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [line for line in proc.stderr.splitlines() if "[W:" in line or "VerifyOutputSizes" in line]


def test_declared_shapes_are_symbolic_and_onnxruntime_runs_other_shapes_silently(
    exports: dict, artifacts: dict, tmp_path: Path
) -> None:
    """Why the TorchScript exporter: its declared output shapes stay symbolic. The frozen copy shows the
    probe would catch what the dynamo exporter produces (a fixed time dim, pytorch issue 191855)."""
    assert declared_output_dims(exports["dual-tagger"] / "model.onnx") == [["batch", "time", 12]]
    assert declared_output_dims(exports["sentiment"] / "model.onnx") == [["batch"]]
    for kind in ("dual-tagger", "sentiment-bi-max"):
        assert ort_warnings(exports[kind] / "model.onnx") == []
    frozen = onnx.load(str(exports["dual-tagger"] / "model.onnx"))
    frozen.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 5
    onnx.save(frozen, str(tmp_path / "frozen.onnx"))
    assert any("VerifyOutputSizes" in line for line in ort_warnings(tmp_path / "frozen.onnx"))
    # ... and so would the export's own acceptance step.
    report = validate(load_artifact(artifacts["dual-tagger"]), tmp_path / "frozen.onnx", 1e-4, [], {"used": False})
    assert not report["passed"]
    assert "text-b1-t1: logits shape [1, 1, 12] does not fit the declared ['batch', 5, 12]" in report["failures"]


@pytest.mark.parametrize("opset", [12, 20])
def test_both_ends_of_the_supported_opset_range_export_and_validate(
    opset: int, artifacts: dict, data_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "export"
    proc = run_export(data_dir, "--model", str(artifacts["dual-tagger"]), "--out", str(out), "--opset", str(opset))
    assert proc.returncode == 0, proc.stderr
    assert load_json(out / "model.json")["onnx"]["opset"] == opset and load_json(out / "validation.json")["passed"]
    assert {o.domain: o.version for o in onnx.load(str(out / "model.onnx")).opset_import}[""] == opset


def encode(artifact_dir: Path, sentences: list[list[str]]) -> dict[str, np.ndarray]:
    meta = load_json(artifact_dir / "model.json")
    encoder = Encoder(Vocabs.from_json(meta["vocab"]), PreprocessConfig(**meta["preprocess"]))
    return encoder.batch([encoder.encode(s) for s in sentences])


@pytest.mark.parametrize("kind", ["dual-tagger", "sentiment-bi-max"])
def test_padding_invariance_in_onnxruntime(kind: str, exports: dict) -> None:
    session = ort.InferenceSession(str(exports[kind] / "model.onnx"), providers=["CPUExecutionProvider"])
    long = ("the very long sentence with a " + "x" * 40 + " in it " * 40).split()
    for sentence in (s.split() for s in SENTENCES):
        alone = session.run(None, encode(exports[kind], [sentence]))[0]
        batched = session.run(None, encode(exports[kind], [long, sentence, long[:50]]))[0]
        n = len(sentence)
        diff = np.abs(alone[0, :n] - batched[1, :n]) if alone.ndim == 3 else np.abs(alone[0] - batched[1])
        assert diff.max() <= 1e-5, f"{kind}: {sentence}: {diff.max()}"


@pytest.mark.parametrize("kind", ["dual-tagger", "sentiment", "sentiment-bi-max"])
def test_reference_evaluator_agrees_with_onnxruntime(kind: str, exports: dict) -> None:
    path = str(exports[kind] / "model.onnx")
    arrays = encode(exports[kind], [s.split() for s in SENTENCES])
    expected = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, arrays)[0]
    reference = reference_evaluator(Path(path)).run(None, arrays)[0]
    real = np.arange(expected.shape[1])[None, :] < arrays["lengths"][:, None] if expected.ndim == 3 else slice(None)
    assert np.abs(expected[real] - reference[real]).max() <= 1e-5
    recorded = [c for c in load_json(exports[kind] / "validation.json")["cases"] if c["kind"] == "reference"]
    assert {c["name"].split("-")[2] for c in recorded} == {"onnxruntime", "torch"} and all(
        c["passed"] for c in recorded
    )


REAL_EXPORT = onnx_export.export_onnx


def broken_export(artifact: Any, path: Path, opset: int, char_table: int) -> None:
    """The real export, then one weight shifted by 0.01: a graph that no longer matches torch."""
    REAL_EXPORT(artifact, path, opset, char_table)
    model = onnx.load(str(path))
    init = next(i for i in model.graph.initializer if i.name.endswith("output.bias"))
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) + np.float32(0.01), init.name))
    onnx.save(model, str(path))


def test_a_broken_export_is_rejected_and_not_left_looking_valid(
    artifacts: dict, data_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "broken"
    patches = {"export.onnx_export.export_onnx": broken_export}
    proc = run_export(data_dir, "--model", str(artifacts["dual-tagger"]), "--out", str(out), patches=patches)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[0].startswith("error: ") and f"{out}.failed" in lines[0] and "Traceback" not in proc.stderr
    assert any("max abs diff 0.01 vs atol 0.0001 (logits shape [64, 230, 12])" in line for line in lines[1:])
    assert not out.exists() and not list(tmp_path.glob(".broken.tmp-*"))
    failed = out.with_name("broken.failed")
    assert sorted(p.name for p in failed.iterdir()) == [
        "model.onnx",
        "test_vectors.json",
        "tokenizer.json",
        "validation.json",
    ]
    assert any(line.strip().startswith("vector-one-token: max abs diff 0.01 vs atol 0.0001") for line in lines[1:])
    report = load_json(failed / "validation.json")
    assert report["passed"] is False and len(report["failures"]) == len(lines) - 1
    by_kind = {kind: [c["passed"] for c in report["cases"] if c["kind"] == kind] for kind in ("parity", "padding")}
    assert not any(by_kind["parity"]) and all(by_kind["padding"])  # a shifted bias is still padding-invariant


def test_atol_override_applies_to_every_parity_case(artifacts: dict, data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "strict"
    proc = run_export(data_dir, "--model", str(artifacts["sentiment"]), "--out", str(out), "--atol", "1e-12")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and not out.exists()
    report = load_json(tmp_path / "strict.failed" / "validation.json")
    assert report["atol"] == 1e-12 and not report["passed"]
    failed = [c for c in report["cases"] if not c["passed"]]
    assert failed and all(c["outputs"]["logits"]["max_abs_diff"] > 1e-12 for c in failed)
    assert all(f"vs atol 1e-12 (logits shape [{c['inputs']['words'][0]}])" in proc.stderr for c in failed)


@pytest.mark.parametrize("kind", ["sentiment-bi-max", "dual-tagger"])  # the tagger's graph holds a Unique
def test_int8_is_accepted_by_dev_accuracy(kind: str, artifacts: dict, data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "int8"
    proc = run_export(
        data_dir,
        "--model",
        str(artifacts[kind]),
        "--out",
        str(out),
        "--quantize",
        "int8",
        "--data",
        EXPORT_KINDS[kind][0],
    )
    assert proc.returncode == 0, proc.stderr
    assert "int8" in proc.stdout and proc.stderr == ""
    meta, report = load_json(out / "model.json"), load_json(out / "validation.json")
    assert meta["int8"] == {
        "file": "model.int8.onnx",
        "sha256": hashlib.sha256((out / "model.int8.onnx").read_bytes()).hexdigest(),
    }
    int8 = report["int8"]
    assert int8["passed"] and int8["split"] == "dev" and int8["scored"] > 500
    assert 0 <= int8["fp32_accuracy"] <= 1 and int8["int8_accuracy"] >= int8["fp32_accuracy"] - 0.02
    assert 0.9 <= int8["argmax_agreement"] <= 1
    nodes = {n.op_type for n in onnx.load(str(out / "model.int8.onnx")).graph.node}
    assert "DynamicQuantizeLSTM" in nodes and "LSTM" not in nodes
    metadata = [c for c in report["cases"] if c["kind"] == "metadata"]
    assert [c["name"] for c in metadata] == ["metadata-model.onnx", "metadata-model.int8.onnx"]
    assert all(c["passed"] and "seqlstm.vocab_sha256" in c["keys"] for c in metadata)
    session = ort.InferenceSession(str(out / "model.int8.onnx"), providers=["CPUExecutionProvider"])
    tokens = [s.split() for s in SENTENCES]
    expected = (3,) if kind.startswith("sentiment") else (3, max(map(len, tokens)), len(UNIVERSAL_TAGS))
    assert session.run(None, encode(out, tokens))[0].shape == expected


def test_int8_accuracy_drop_fails_the_export(artifacts: dict, data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "int8"
    proc = run_export(
        data_dir,
        "--model",
        str(artifacts["sentiment"]),
        "--out",
        str(out),
        "--quantize",
        "int8",
        "--data",
        "rotten-tomatoes",
        patches={"export.quantize.MAX_ACCURACY_DROP": -1.0},
    )
    assert proc.returncode == 1 and "int8: dev accuracy" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists() and load_json(tmp_path / "int8.failed" / "validation.json")["int8"]["passed"] is False


def broken_quantizer(*args: Any, **kwargs: Any) -> None:
    raise Exception("Incomplete symbolic shape inference\nmore detail")


def test_int8_quantizer_failure_is_one_line_and_leaves_no_export(
    artifacts: dict, data_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "int8"
    proc = run_export(
        data_dir,
        "--model",
        str(artifacts["sentiment"]),
        "--out",
        str(out),
        "--quantize",
        "int8",
        "--data",
        "rotten-tomatoes",
        patches={"export.quantize.quantize_dynamic": broken_quantizer},
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (
        "error: int8: onnxruntime's quantization of model.onnx failed (Incomplete symbolic shape inference)"
    )
    assert not out.exists() and not list(tmp_path.iterdir())


@pytest.mark.slow  # 40-80 s on 2 cores, most of it the trainer's full dev and test evaluation
def test_export_of_a_freshly_trained_tagger(tmp_path: Path, data_dir: Path) -> None:
    if not (REPO / "trainer" / "train.py").exists():
        pytest.skip("trainer/train.py is not there yet: nothing to train with")
    run = tmp_path / "run"
    train = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer",
            "train",
            "--task",
            "tagger",
            "--data",
            "brown",
            "--out",
            str(run),
            "--max_steps",
            "5",
            "--word_dim",
            "8",
            "--word_hidden",
            "8",
            "--char_dim",
            "8",
            "--char_hidden",
            "8",
        ],
        cwd=REPO,
        env={**os.environ, "DATA_DIR": str(data_dir)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert train.returncode == 0, train.stderr[-2000:]
    proc = run_export(data_dir, "--model", str(run / "model"), "--out", str(tmp_path / "export"))
    assert proc.returncode == 0, proc.stderr
    report = load_json(tmp_path / "export" / "validation.json")
    assert report["passed"] and report["max_abs_diff"] <= 1e-4
