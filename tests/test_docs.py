"""The docs and bench/results keep each other honest: every `bench/results/...` path a Markdown file names
exists, every committed report is named by some Markdown file (itself or a folder above it), and every
relative link between the Markdown files points at a file that exists."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
RESULT_PATH = re.compile(r"bench/results/[\w./-]*[\w/]")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def markdown_files() -> list[Path]:
    skip = {".git", ".venv", "node_modules", "data", "runs", "exports"}
    return [p for p in REPO.rglob("*.md") if not skip & set(p.relative_to(REPO).parts)]


def mentioned_paths() -> dict[str, Path]:
    """Each `bench/results/...` path named in a Markdown file, with the first file naming it."""
    found: dict[str, Path] = {}
    for doc in markdown_files():
        for path in RESULT_PATH.findall(doc.read_text(encoding="utf-8")):
            found.setdefault(path.rstrip("/."), doc)
    return found


def test_every_results_path_named_in_the_docs_exists() -> None:
    missing = {path: str(doc.relative_to(REPO)) for path, doc in mentioned_paths().items()}
    missing = {path: doc for path, doc in missing.items() if not (REPO / path).exists()}
    assert not missing, f"named in the docs but not in the tree: {missing}"


def test_every_committed_report_is_named_by_the_docs() -> None:
    named = set(mentioned_paths())
    reports = [p for p in RESULTS.rglob("*") if p.is_file()]
    assert len(reports) > 20  # the committed reports are there

    def is_named(report: Path) -> bool:
        rel = report.relative_to(REPO)
        return any(str(parent) in named for parent in (rel, *rel.parents[:-3]))

    unnamed = sorted(str(p.relative_to(REPO)) for p in reports if not is_named(p))
    assert not unnamed, f"reports no doc names (say which section they back): {unnamed}"


def test_every_relative_markdown_link_resolves() -> None:
    broken = []
    for doc in markdown_files():
        for target in LINK.findall(doc.read_text(encoding="utf-8")):
            if "://" not in target and not (doc.parent / target).exists():
                broken.append(f"{doc.relative_to(REPO)}: {target}")
    assert not broken, f"links to nothing: {broken}"
