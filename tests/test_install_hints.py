"""Every console script works, or says in one line what to install, in the smallest install that ships it.

A throwaway `pip install .[serve]` environment, built without the network: a venv without pip, this
project's wheel installed into it with --no-deps by the test interpreter's pip (`--python`), and the
base and `serve` dependencies (numpy, nltk, regex, onnxruntime and what they require, per pyproject.toml
and the installed metadata) linked in from the test interpreter's site-packages. Nothing else: no torch.
"""

import importlib.metadata
import importlib.util
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomllib
from helpers import REPO, one_line_error
from packaging.requirements import Requirement

CONLLU = REPO / "tests" / "fixtures" / "tiny.conllu"
SOURCES = ("pyproject.toml", "README.md", "trainer", "export", "serve")
TRAIN_HINT = "which is not installed here: pip install 'seqlstm[train]'"  # after "needs torch" (or onnx, ...)


def dependency_closure(extra: str) -> set[str]:
    """The distributions `pip install .[extra]` brings, resolved against this interpreter's metadata."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    todo = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"][extra]]
    found: set[str] = set()
    while todo:
        requirement = todo.pop()
        if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
            continue
        dist = importlib.metadata.distribution(requirement.name)
        if dist.metadata["Name"].lower() in found:
            continue
        found.add(dist.metadata["Name"].lower())
        todo += [Requirement(r) for r in dist.requires or []]
    return found


def link_distributions(names: set[str], site: Path) -> None:
    """Each distribution's top-level files and folders (packages, .libs, .dist-info), linked into `site`."""
    source = Path(sysconfig.get_paths()["purelib"])
    for name in names:
        dist = importlib.metadata.distribution(name)
        for top in {f.parts[0] for f in dist.files or [] if f.parts and f.parts[0] != ".."}:
            if (source / top).exists() and not (site / top).exists():
                (site / top).symlink_to(source / top)


@pytest.fixture(scope="module")
def serve_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The bin directory of a `.[serve]`-only environment (module docstring)."""
    if importlib.util.find_spec("setuptools") is None:  # venvs of Python 3.12+ come without it
        pytest.skip("building the wheel without the network needs setuptools in the test environment")
    root = tmp_path_factory.mktemp("serve-only")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True)
    python = root / "venv" / "bin" / "python"
    src = root / "src"  # the wheel is built from a copy: no build/ or *.egg-info in the checkout
    src.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(REPO / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", root / "wheels", src], check=True)
    wheel = next((root / "wheels").glob("seqlstm-*.whl"))
    subprocess.run([*pip, "--python", python, "install", "--no-deps", "--no-index", wheel], check=True)
    site = Path(subprocess.check_output([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                        text=True).strip())  # fmt: skip
    link_distributions(dependency_closure("serve"), site)
    yield root / "venv" / "bin"


def run(bin_dir: Path, *args: object, cwd: Path) -> subprocess.CompletedProcess:
    """A console script of the throwaway environment, away from the checkout (so nothing imports from it)."""
    return subprocess.run(
        [str(bin_dir / str(args[0])), *map(str, args[1:])], capture_output=True, text=True, cwd=cwd, timeout=120
    )


def test_the_environment_has_serving_and_no_torch(serve_only: Path, tmp_path: Path) -> None:
    probe = "import importlib.util as u, serve; print(serve.__file__, u.find_spec('torch'), u.find_spec('onnxruntime'))"
    found = run(serve_only, "python", "-c", probe, cwd=tmp_path)
    where, torch, onnxruntime = found.stdout.split(" ", 2)
    assert found.returncode == 0 and str(serve_only.parent) in where and torch == "None" and onnxruntime != "None"


TRAIN = ["train", "--task", "tagger", "--data", f"conllu:{CONLLU}", "--out", "{tmp}/run", "--report_to", "none"]
# (script, arguments, the error line's start, its end)
MISSING = [
    ("seqlstm-export", ["--model", "{run}", "--out", "{tmp}/export"], "error: export needs ", TRAIN_HINT),
    ("seqlstm-trainer", TRAIN, "error: `trainer train` needs torch, ", TRAIN_HINT),
    ("seqlstm-trainer", ["evaluate", "--model", "{run}", "--data", f"conllu:{CONLLU}"],
     "error: `trainer evaluate` needs ", TRAIN_HINT),
    ("seqlstm-serve", ["ray", "--model", "{export}", "--input", "x", "--output", "{tmp}/o"], "error: serve ray needs ",
     "pip install 'seqlstm[ray]'"),
    ("seqlstm-server", ["--model", "{export}", "--port", "0"], "error: the ASGI server needs ",
     "pip install 'seqlstm[server]' (or --server stdlib)"),
    ("seqlstm-serve", ["predict", "--model", "{export}", "--input", "-", "--output", "-", "--verify", "{run}"],
     "error: --verify needs torch", "(pip install .[train])"),
]  # fmt: skip


@pytest.mark.parametrize("case", MISSING, ids=[f"{c[0]} {c[1][0]}" for c in MISSING])
def test_a_command_whose_extra_is_missing_says_what_to_install(
    serve_only: Path, runs, tmp_path: Path, case: tuple
) -> None:
    script, args, start, end = case
    argv = [a.format(tmp=tmp_path, run=runs["tagger"][0], export=runs["tagger"][1]) for a in args]
    message = one_line_error(run(serve_only, script, *argv, cwd=tmp_path))
    assert message.startswith(start) and message.endswith(end), message


def test_what_the_serve_install_ships_works(serve_only: Path, runs, tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_text("The cat sat on the mat .\n\n", encoding="utf-8")
    predict = run(serve_only, "seqlstm-serve", "predict", "--model", runs["tagger"][1], "--input", source,
                  "--output", "-", cwd=tmp_path)  # fmt: skip
    assert predict.returncode == 0, predict.stderr
    assert [line.count('"tags"') for line in predict.stdout.splitlines()] == [1, 1]
    stats = run(serve_only, "seqlstm-trainer", "stats", "--data", f"conllu:{CONLLU}", cwd=tmp_path)
    assert stats.returncode == 0 and '"train"' in stats.stdout, stats.stderr
