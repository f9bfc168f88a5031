"""No import cycle among dat_deploy's modules.

A static walk (ast, nothing is imported) of every import statement of every module, those inside
functions included: a lazy import keeps TensorRT or torch out of `import dat_deploy`, but a cycle it
closes is still two modules that each need the other. Importing `a.b.c` also runs the packages `a`
and `a.b`, so they count as imported too, except for a module inside them (its package is already
being imported when it runs).
"""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

from import_graph import imported_modules, module_names


def import_edges(name: str, path: Path) -> set[str]:
    """The package modules that importing `name` runs (see the module docstring)."""
    edges = set()
    for target in imported_modules(ast.walk(ast.parse(path.read_text(encoding="utf-8"))), name):
        parts = target.split(".")
        for depth in range(2, len(parts) + 1):  # the packages above it run first
            ancestor = ".".join(parts[:depth])
            if not (name == ancestor or name.startswith(ancestor + ".")):
                edges.add(ancestor)
    return edges


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (a -> b -> ... -> a), or None; graphlib finds it while ordering the modules."""
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as error:
        return list(reversed(error.args[1]))  # graphlib lists it against the edges' direction
    return None


def import_graph() -> dict[str, set[str]]:
    return {name: import_edges(name, path) for name, path in module_names().items()}


def test_the_walk_sees_the_package():
    graph = import_graph()
    assert len(graph) > 50  # every module, not a stray subset
    # Known edges, so that a walk that silently found nothing cannot pass.
    assert "dat_deploy.graph.dat_graph" in graph["dat_deploy.runtime.onnxruntime_backend"]
    assert "dat_deploy.artifacts" in graph["dat_deploy.api"]
    # `from dat_deploy.model import deformable` names a module; importing it also runs dat_deploy.model.
    assert {"dat_deploy.model", "dat_deploy.model.deformable"} <= graph["dat_deploy.export.plugin_ops"]
    # An import inside a function counts (Classifier.from_artifact imports the TensorRT backend lazily).
    assert "dat_deploy.runtime.tensorrt_backend" in graph["dat_deploy.api"]


def test_a_cycle_is_found_and_spelled_out():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"a", "c"}}) is None
    cycle = find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}})
    assert len(cycle) == 4 and cycle[0] == cycle[-1] and set(cycle) == {"a", "b", "c"}
    assert all(after in {"a": {"b"}, "b": {"c"}, "c": {"a"}}[before] for before, after in zip(cycle, cycle[1:]))


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "an import cycle among dat_deploy modules: " + " -> ".join(cycle)
