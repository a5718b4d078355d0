"""The repository's import graph, read with ast (nothing is imported): every `import` and `from ... import`
statement of every module, function-local and `if TYPE_CHECKING:` ones included, with where it is.

An import names a module of the repository when `from a import b` names the module a.b (else the
package a) or `import a.b` names a.b. Imports by computed name (`importlib.import_module(f"...")`) are
not statements and are not seen.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("trainer", "export", "serve", "bench")


@dataclass(frozen=True)
class Import:
    module: str  # the module that imports
    target: str  # the module imported (absolute name; not necessarily of this repository)
    where: str  # path:line
    local: bool  # inside a function: imported only when the function runs


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_files(packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """Module name -> file, for every .py file under the packages."""
    return {module_name(path): path for package in packages for path in sorted((REPO / package).rglob("*.py"))}


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: set[str]) -> Iterator[str]:
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
        return
    base = node.module or ""
    if node.level:  # relative: the importer's package, less one level per extra dot
        package = module.split(".") if is_package else module.split(".")[:-1]
        anchor = ".".join(package[: len(package) - node.level + 1])
        base = f"{anchor}.{base}" if base else anchor
    for alias in node.names:
        yield f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base


def imports(module: str, path: Path, known: set[str]) -> list[Import]:
    """Every import statement of one module."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path
    found: list[Import] = []

    def visit(node: ast.AST, local: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                where = f"{shown}:{child.lineno}"
                for target in _targets(child, module, path.name == "__init__.py", known):
                    found.append(Import(module, target, where, local))
            visit(child, local or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda))

    visit(tree, False)
    return found


def all_imports(packages: tuple[str, ...] = PACKAGES) -> list[Import]:
    files = module_files(packages)
    known = set(files) | set(module_files())
    return [found for module, path in files.items() for found in imports(module, path, known)]


def cycles(edges: list[Import]) -> list[list[Import]]:
    """One import circle (as the edges that make it) per strongly connected group of modules (Tarjan)."""
    graph: dict[str, list[Import]] = {}
    for edge in edges:
        graph.setdefault(edge.module, []).append(edge)
        graph.setdefault(edge.target, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def connect(node: str) -> None:  # recursion depth is at most the number of modules (~200)
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for edge in graph[node]:
            if edge.target not in index:
                connect(edge.target)
                low[node] = min(low[node], low[edge.target])
            elif edge.target in on_stack:
                low[node] = min(low[node], index[edge.target])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1 or any(edge.target == node for edge in graph[node]):
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return [_circle(graph, group) for group in groups]


def _circle(graph: dict[str, list[Import]], group: set[str]) -> list[Import]:
    """A shortest path from the group's first module back to itself, through the group (breadth first)."""
    start = min(group)
    paths: dict[str, list[Import]] = {start: []}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for edge in graph[node]:
                if edge.target == start:
                    return paths[node] + [edge]
                if edge.target in group and edge.target not in paths:
                    paths[edge.target] = paths[node] + [edge]
                    following.append(edge.target)
        frontier = following
    raise AssertionError(f"no circle through {start} in {sorted(group)}")


def describe(circle: list[Import]) -> str:
    """`a -> b (a.py:3) -> a (b.py:9, function-local)`."""
    steps = [circle[0].module]
    for edge in circle:
        steps.append(f"{edge.target} ({edge.where}{', function-local' if edge.local else ''})")
    return " -> ".join(steps)
