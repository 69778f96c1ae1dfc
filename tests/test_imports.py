"""The package's import graph: no cycles (at package and at module level), and every import done inside a function
says why it is lazy.

Imports are read from the source (``ast``), function-level ones included, so a cycle cannot hide behind an import
moved into a function. ``if TYPE_CHECKING:`` blocks are left out: they never run.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import networkx as nx
import pytest

REPO = Path(__file__).resolve().parents[1]
# source folder -> installed package name (pyproject.toml's package-dir)
ROOTS = {REPO / "kgexplain": "kgexplain", REPO / "cli": "kgexplain.cli"}


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported kgexplain module (or package)
    line: int
    lazy: bool  # inside a function
    text: str  # the source lines of the import statement and the line above it


def _modules() -> dict[str, Path]:
    out = {}
    for folder, package in ROOTS.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = path
    return out


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST, in_function: bool = False) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child):
            continue
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, in_function
        yield from _walk(child, in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef))


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    is_package = MODULES[module].name == "__init__.py"
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports() -> list[Import]:
    out = []
    for module, path in MODULES.items():
        text = path.read_text()
        lines = text.splitlines()
        for node, lazy in _walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = _resolve(module, node)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
            snippet = "\n".join(lines[max(0, node.lineno - 2) : node.end_lineno])
            for target in targets:
                if target.split(".")[0] == "kgexplain" or lazy:
                    out.append(Import(module, target, node.lineno, lazy, snippet))
    return out


IMPORTS = _imports()


def _unit(module: str) -> str:
    """The package a module belongs to: ``kgexplain.<first part>`` (the root package stands for itself)."""
    return ".".join(module.split(".")[:2])


def _graph(key) -> nx.DiGraph:  # type: ignore[no-untyped-def]
    g = nx.DiGraph()
    for imp in IMPORTS:
        if imp.target in MODULES or imp.target.split(".")[0] == "kgexplain":
            a, b = key(imp.source), key(imp.target)
            if a != b:
                g.add_edge(a, b, where=f"{MODULES[imp.source].relative_to(REPO)}:{imp.line}")
    return g


def _cycles(g: nx.DiGraph) -> list[str]:
    found = []
    for cycle in nx.simple_cycles(g):
        hops = [f"{a} -> {b} ({g.edges[a, b]['where']})" for a, b in zip(cycle, [*cycle[1:], cycle[0]], strict=True)]
        found.append("; ".join(hops))
    return found


def test_the_walk_sees_the_package() -> None:
    assert "kgexplain.store.base" in MODULES and "kgexplain.cli.main" in MODULES
    assert any(i.source == "kgexplain.store.base" and i.target.startswith("kgexplain.store") for i in IMPORTS)


def test_no_import_cycle_between_packages() -> None:
    assert _cycles(_graph(_unit)) == []


def test_no_import_cycle_between_modules() -> None:
    # A module importing its own package's __init__ is not an edge: Python loads the package first anyway.
    assert _cycles(_graph(lambda m: m)) == []


LAZY = list({(i.source, i.line): i for i in IMPORTS if i.lazy}.values())  # one per import statement


@pytest.mark.parametrize("imp", LAZY, ids=lambda i: f"{i.source}:{i.line}")
def test_a_function_level_import_says_why_it_is_lazy(imp: Import) -> None:
    assert "lazy:" in imp.text, f"{imp.source}:{imp.line} imports {imp.target} inside a function without '# lazy: why'"


def test_cycle_detection_finds_a_cycle() -> None:
    g = nx.DiGraph()
    g.add_edge("a", "b", where="x:1")
    g.add_edge("b", "a", where="y:2")
    assert _cycles(g) == ["a -> b (x:1); b -> a (y:2)"] or _cycles(g) == ["b -> a (y:2); a -> b (x:1)"]
