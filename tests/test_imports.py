"""The package's import graph: no cycles, and no module takes another module's private (``_name``) names.

The graph is built statically with ``ast`` over ``medpclip/**/*.py``: every ``import x`` and ``from x import y``
at any level (function-local ones included, since they run too), except inside ``if TYPE_CHECKING:``. A
relative import is resolved against the importing module's package; ``from medpclip.a import b`` is an edge
to ``medpclip.a.b`` when that is a module, else to ``medpclip.a``; a package's ``__init__`` is the package.
Importing ``medpclip.a.b`` also runs ``medpclip/a/__init__``; those implicit parent edges are not counted.

Both allow-lists below only shrink: an entry that no longer occurs fails the test too, so whoever removes an
import also removes its entry.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "medpclip"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE

#: Known import cycles (each a strongly connected component of the graph, as its set of modules), to be
#: removed as the cycles are broken. Only medpclip/sources/ may hold one.
KNOWN_CYCLES: frozenset[frozenset[str]] = frozenset()

#: Known imports of a private name from another module, as (importer, imported module, name); only under
#: medpclip/sources/, which is being cleaned up.
PRIVATE_IMPORTS_ALLOWED: frozenset[tuple[str, str, str]] = frozenset()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST):
    """Import nodes of a module, at any depth, skipping the bodies of ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph() -> tuple[dict[str, set[str]], list[tuple[str, str, str]]]:
    """``{module: {modules it imports}}`` within the package, and every ``from M import _x`` as
    (importer, M, name) with M another package module."""
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    private: list[tuple[str, str, str]] = []
    for mod, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        targets: set[str] = set()
        for node in _imports(tree):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
                continue
            source = _resolve(mod, path.name == "__init__.py", node)
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                targets.add(sub if sub in modules else source)
                private_name = alias.name.startswith("_") and not alias.name.startswith("__")
                if private_name and source in modules and source != mod:
                    private.append((mod, source, alias.name))
        graph[mod] = {t for t in targets if t in modules and t != mod}
    return graph, sorted(set(private))


def strongly_connected(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[frozenset[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(frozenset(component))
    return found


def cycle_path(graph: dict[str, set[str]], component: frozenset[str]) -> list[str]:
    """One cycle through a component, as a path that starts and ends at the same module (breadth-first, so
    the shortest one through the component's first module)."""
    start = min(component)
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for child in sorted(graph[node] & component):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [*reversed(path), start]
                if child not in parents:
                    parents[child] = node
                    nxt.append(child)
        frontier = nxt
    raise AssertionError(f"no cycle through {start}")


def _show(graph, component) -> str:
    return " -> ".join(cycle_path(graph, component))


def test_graph_sees_the_package():
    graph, _ = import_graph()
    assert {"medpclip", "medpclip.fileio", "medpclip.raysession", "medpclip.corpus.build"} <= set(graph)
    assert "medpclip.fileio" in graph["medpclip.corpus.build"]  # a plain top-level import
    assert "medpclip.raysession" in graph["medpclip.train.loop"]  # a function-local one


def test_no_import_cycles():
    graph, _ = import_graph()
    components = strongly_connected(graph)
    print(f"{len(components)} import cycle(s), {len(KNOWN_CYCLES)} known")
    new = [c for c in components if c not in KNOWN_CYCLES]
    assert not new, "import cycle(s):\n" + "\n".join(_show(graph, c) for c in new)
    outside = [c for c in KNOWN_CYCLES if not all(m.startswith(f"{PACKAGE}.sources") for m in c)]
    assert not outside, f"only medpclip/sources/ may hold a known cycle: {outside}"
    gone = [sorted(c) for c in KNOWN_CYCLES if c not in components]
    assert not gone, f"no longer a cycle, remove from KNOWN_CYCLES: {gone}"


def test_no_private_names_from_other_modules():
    _, private = import_graph()
    print(f"{len(private)} private-name import(s), {len(PRIVATE_IMPORTS_ALLOWED)} allowed")
    new = [p for p in private if p not in PRIVATE_IMPORTS_ALLOWED]
    assert not new, (
        "private names imported from another module (make them public or move them):\n"
        + "\n".join(f"{importer}: from {source} import {name}" for importer, source, name in new)
    )
    outside = sorted(p for p in PRIVATE_IMPORTS_ALLOWED if not p[0].startswith(f"{PACKAGE}.sources"))
    assert not outside, f"only medpclip/sources/ may be allow-listed: {outside}"
    gone = sorted(PRIVATE_IMPORTS_ALLOWED - set(private))
    assert not gone, f"no longer imported, remove from PRIVATE_IMPORTS_ALLOWED: {gone}"
