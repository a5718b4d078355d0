"""The package version (pyproject.toml) travels in every artifact: weights metadata, model.json, validation.json."""

from __future__ import annotations

import json
from pathlib import Path

import tomllib
from helpers import REPO, run_main
from safetensors import safe_open

import trainer


def test_the_version_is_the_installed_projects() -> None:
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert trainer.__version__ == declared


def test_every_artifact_records_the_version(tiny_artifact, tmp_path: Path) -> None:
    model = tiny_artifact(tmp_path / "run" / "model", "sentiment", 0)
    with safe_open(str(model / "model.safetensors"), "np") as f:
        assert f.metadata()["seqlstm_version"] == trainer.__version__
    out = tmp_path / "export"
    proc = run_main("export", "--model", model, "--out", out)
    assert proc.returncode == 0, proc.stderr
    for name in ("model.json", "validation.json"):
        assert json.loads((out / name).read_text())["seqlstm_version"] == trainer.__version__
