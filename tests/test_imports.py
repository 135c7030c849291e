"""The package's imports form no cycle, and the backbones package is used through its interface.

Importing each module alone would not show a cycle hidden behind a lazy (function-level) or a
``TYPE_CHECKING`` import, so this reads every ``import`` statement in the source with ``ast``,
wherever it stands, builds the module graph (importing ``a.b.c`` also runs ``a`` and ``a.b``),
and sorts it topologically: a cycle fails with its path.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import dinomask

ROOT = Path(dinomask.__file__).parent


def _modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = ("dinomask",) + path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every dinomask module that ``name`` imports, anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets.add(base)
            targets |= {f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules}
    return {t for t in targets if t in modules and t != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        edges = set()
        for target in _imports(name, path, modules):
            edges.add(target)
            parts = target.split(".")
            for i in range(1, len(parts)):  # importing a.b.c runs a and a.b first
                ancestor = ".".join(parts[:i])
                if not name.startswith(ancestor + ".") and ancestor != name:
                    edges.add(ancestor)
        graph[name] = edges
    return graph


def test_the_package_has_no_import_cycle():
    graph = _graph()
    assert "dinomask.backbones.loader" in graph and len(graph) > 30
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as cycle:
        raise AssertionError(f"import cycle: {' -> '.join(cycle.args[1])}") from None
    assert set(order) == set(graph)


def test_modules_outside_backbones_use_only_its_interface():
    offenders = {name: sorted(t for t in targets if t.startswith("dinomask.backbones."))
                 for name, targets in ((n, _imports(n, p, _modules())) for n, p in _modules().items())
                 if not name.startswith("dinomask.backbones")}
    assert {n: t for n, t in offenders.items() if t} == {}


#: Modules every other may use: errors, and atomic file writing (they import no dinomask module).
LEAVES = ("dinomask", "dinomask.errors", "dinomask.atomic")


def test_backbones_depend_on_nothing_downstream():
    """Data flows one way: the backbones package imports no module that uses backbones."""
    graph = _graph()
    for name, targets in graph.items():
        if name.startswith("dinomask.backbones"):
            assert all(t.startswith("dinomask.backbones") or t in LEAVES for t in targets), (name, targets)
    for leaf in LEAVES[1:]:  # modules below everything import no other dinomask module
        assert graph[leaf] <= {"dinomask"}, (leaf, graph[leaf])


def test_a_cycle_is_found_when_there_is_one():
    """The checker itself: a planted two-module cycle fails the sort."""
    import pytest

    with pytest.raises(graphlib.CycleError):
        list(graphlib.TopologicalSorter({"a": {"b"}, "b": {"a"}}).static_order())
