"""`python -m export` given bad input: a missing, corrupt, unknown-version or NaN model, an occupied --out,
--opset, --atol and --quantize out of range; each is one line on stderr, exit 2, and no export written.

Models are copies of conftest's `artifacts["word-tagger"]`; the CLI runs as a forked child (`helpers.run_export`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import load_json, run_export
from safetensors.torch import load_file, save_file


def remove_model(model: Path, out: Path) -> None:
    shutil.rmtree(model)


def corrupt_weights(model: Path, out: Path) -> None:
    (model / "model.safetensors").write_bytes(b"not a safetensors file")


def corrupt_config(model: Path, out: Path) -> None:
    (model / "config.json").write_text("{ not json")


def unknown_version(model: Path, out: Path) -> None:
    meta = load_json(model / "config.json")
    (model / "config.json").write_text(json.dumps({**meta, "format_version": 99}))


def zero_layers(model: Path, out: Path) -> None:
    meta = load_json(model / "config.json")
    meta["model"]["layers"] = 0  # today's PaddedLSTM would quietly build one layer
    (model / "config.json").write_text(json.dumps(meta))


def nan_weight(model: Path, out: Path) -> None:
    state = load_file(str(model / "model.safetensors"))
    state["output.bias"][0] = float("nan")
    save_file(state, str(model / "model.safetensors"))


def occupy_out(model: Path, out: Path) -> None:
    out.mkdir()
    (out / "keep.txt").write_text("precious")


def nothing(model: Path, out: Path) -> None:
    pass


BAD_INPUTS = {
    "missing model": (remove_model, [], "no such model directory"),
    "corrupt weights": (corrupt_weights, [], "corrupt safetensors"),
    "corrupt config": (corrupt_config, [], "corrupt JSON"),
    "unknown format version": (unknown_version, [], "format_version 99 is not supported"),
    "non-empty out dir": (occupy_out, [], "not empty; pass --force"),
    "opset too new": (nothing, ["--opset", "99"], "--opset 99: not supported; expected 12..20"),
    "opset too old": (nothing, ["--opset", "11"], "--opset 11: not supported"),
    "opset not a number": (nothing, ["--opset", "seventeen"], "invalid int value"),
    "int8 without data": (
        nothing,
        ["--quantize", "int8"],
        "--quantize int8 is accepted by dev-split accuracy and needs data",
    ),
    "zero layers in config.json": (
        zero_layers,
        [],
        "config.json, key 'model': config key 'layers' must be in [1, 64]; got 0",
    ),
    "NaN weight": (nan_weight, [], "model.safetensors: tensor 'output.bias' holds non-finite values"),
    "atol inf": (nothing, ["--atol", "inf"], "--atol must be a finite number; got inf"),
    "atol nan": (nothing, ["--atol", "nan"], "--atol must be a finite number; got nan"),
    "atol zero": (nothing, ["--atol", "0"], "--atol must be > 0; got 0.0"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2(case: str, artifacts: dict, tmp_path: Path) -> None:
    breaker, extra, message = BAD_INPUTS[case]
    model, out = tmp_path / "run" / "model", tmp_path / "export"
    shutil.copytree(artifacts["word-tagger"], model)
    breaker(model, out)
    # An empty data directory: nothing could be read even if the export tried.
    proc = run_export(tmp_path / "no-data", "--model", str(model), "--out", str(out), *extra)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ") and message in proc.stderr
    assert proc.stdout == ""
    if breaker is occupy_out:
        assert [p.name for p in out.iterdir()] == ["keep.txt"]
    else:
        assert not out.exists()
