"""docs/DESIGN.md's module table stays true to the tree: every module of trainer/, export/ and serve/ is
named in it (as `serve/...py`), and every file of theirs it names exists."""

import re

from import_graph import REPO, module_files

DESIGN = REPO / "docs" / "DESIGN.md"


def table_paths() -> set[str]:
    rows = [line for line in DESIGN.read_text(encoding="utf-8").splitlines() if line.startswith("| `")]
    return {path for row in rows for path in re.findall(r"`([\w/]+\.py)`", row.split(" | ")[0])}


PACKAGES = ("trainer", "export", "serve")


def test_design_table_names_every_module_and_only_real_ones() -> None:
    named = table_paths()
    files = {str(path.relative_to(REPO)) for path in module_files(PACKAGES).values()}
    modules = {path for path in files if not path.endswith(("__init__.py", "__main__.py"))}
    assert "serve/http/app.py" in modules and "serve/runtime.py" in named
    assert not modules - named, f"docs/DESIGN.md's module table does not name {sorted(modules - named)}"
    stale = {path for path in named if path.startswith(tuple(f"{package}/" for package in PACKAGES))} - files
    assert not stale, f"docs/DESIGN.md's module table names {sorted(stale)}, which do not exist"
