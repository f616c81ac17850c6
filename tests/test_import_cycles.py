"""No import cycle inside farm/: every module can be read, tested and replaced after the modules it imports.

The graph is built from the source with ``ast``, not by importing: module-level imports only (an import inside a
function is a deliberate late binding, e.g. the optional iOS extra), but imports under ``if TYPE_CHECKING:`` do
count. A type-only cycle is still two modules that cannot be understood apart (posix.py <-> posix_power.py was
one); the fix is a protocol in the lower module, not a hidden import.
"""

from __future__ import annotations

import ast
from pathlib import Path

FARM = Path(__file__).resolve().parent.parent / "farm"


def module_names(root: Path) -> dict[str, Path]:
    """Dotted name -> file of every module of the package at ``root``."""
    out: dict[str, Path] = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _absolute(module: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    package = package[: len(package) - (node.level - 1)]
    return ".".join([*package, *([node.module] if node.module else [])])


def _imported(module: str, path: Path, body: list[ast.stmt]) -> set[str]:
    """Every name a module-level statement in ``body`` imports (``from a import b`` yields ``a`` and ``a.b``)."""
    names: set[str] = set()
    for node in body:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, path, node)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.If):  # `if TYPE_CHECKING:` and any other module-level branch
            names |= _imported(module, path, node.body) | _imported(module, path, node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                names |= _imported(module, path, block)
    return names


def import_graph(root: Path = FARM) -> dict[str, set[str]]:
    """module -> the farm modules it imports at module level."""
    modules = module_names(root)
    return {
        name: {m for m in _imported(name, path, ast.parse(path.read_text()).body) if m in modules and m != name}
        for name, path in modules.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, list[str]]] = [(start, sorted(graph[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, todo = work[-1]
            if todo:
                nxt = todo.pop()
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, sorted(graph[nxt])))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_detector_finds_a_cycle_and_its_members() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_detector_sees_type_checking_and_relative_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import b\n")
    (pkg / "b.py").write_text("from . import a\n\ndef late():\n    from pkg import c\n")
    (pkg / "c.py").write_text("import pkg.b\n")
    graph = import_graph(pkg)
    assert graph["pkg.a"] == {"pkg", "pkg.b"} and graph["pkg.b"] == {"pkg", "pkg.a"} and graph["pkg.c"] == {"pkg.b"}
    assert cycles(graph) == [["pkg.a", "pkg.b"]]


def test_farm_has_no_import_cycle() -> None:
    graph = import_graph()
    assert graph.get("farm.devices.posix")  # the graph really was built
    assert cycles(graph) == []
