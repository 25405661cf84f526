"""No import circles in ``batchrl``, counting imports inside functions too (a lazy import hides a circle
from Python's import machinery, not from the design).

The graph is read from the source with ``ast``: an edge from a module to every ``batchrl`` module it
imports anywhere in its body (``import a.b``, ``from a.b import c`` -> ``a.b.c`` when that is a module,
else ``a.b``; relative imports resolved against the package). A package's ``__init__`` counts as the
package's module; importing a submodule is not counted as importing its parent package.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "batchrl"


def module_names() -> dict[str, Path]:
    out = {}
    for path in (SRC / PACKAGE).rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, modules: set[str]) -> set[str]:
    is_package = path.name == "__init__.py"
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            for alias in node.names:
                targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {t for t in targets if t in modules and t != name}


def import_graph() -> dict[str, set[str]]:
    names = module_names()
    return {name: imports_of(name, path, set(names)) for name, path in names.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_reader_sees_lazy_and_relative_imports(tmp_path):
    lazy = tmp_path / "m.py"
    lazy.write_text("def f():\n    from batchrl.training import train\n    import batchrl.storage\n")
    modules = {"batchrl.training", "batchrl.training.train", "batchrl.storage", "batchrl.m"}
    assert imports_of("batchrl.m", lazy, modules) == {"batchrl.training.train", "batchrl.storage"}
    package = tmp_path / "__init__.py"
    package.write_text("from . import train\nfrom ..storage import x\n")
    assert imports_of("batchrl.training", package, modules) == {"batchrl.training.train", "batchrl.storage"}
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_batchrl_has_no_import_circles():
    graph = import_graph()
    assert "batchrl.training.algorithms" in graph and "batchrl.training.algorithms.sac" in graph
    assert cycles(graph) == []
