"""The package's parts import each other in one direction: no cycle, counting imports made
inside functions (read with ``ast``, not by importing)."""

from __future__ import annotations

import ast
from pathlib import Path

import spxdask

PACKAGE = Path(spxdask.__file__).parent


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ["spxdask", *path.relative_to(PACKAGE).with_suffix("").parts]
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The spxdask modules ``name`` imports anywhere in its file (a ``from x import y`` of a
    submodule ``y`` counts as an import of ``x.y``, not of the package ``x``)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                found.add(f"{module}.{alias.name}" if f"{module}.{alias.name}" in modules else module)
    return {m for m in found if m in modules and m != name}


def _part(module: str) -> str:
    return ".".join(module.split(".")[:2])


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph, or None (depth-first search)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_the_reader_sees_function_local_imports():
    graph = _graph()
    assert "spxdask.archive.open" in graph["spxdask.cli"]  # imported inside _query
    assert "spxdask.per_image" in graph["spxdask.batch.extract"]  # `from .. import per_image`
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_module_imports_itself_round_a_cycle():
    cycle = _cycle(_graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_no_part_of_the_package_imports_itself_round_a_cycle():
    """Parts: the package's subpackages and top-level modules (``spxdask.batch``, ``spxdask.cli``);
    the package's own ``__init__`` is left out (every module's import runs it first)."""
    parts: dict[str, set[str]] = {}
    for module, targets in _graph().items():
        if module == "spxdask":
            continue
        parts.setdefault(_part(module), set()).update(_part(t) for t in targets
                                                      if t != "spxdask" and _part(t) != _part(module))
    cycle = _cycle(parts)
    assert cycle is None, " -> ".join(cycle or [])


def test_the_per_image_contract_imports_neither_side():
    graph = _graph()
    assert graph["spxdask.per_image"] <= {"spxdask._io"}
    users = {m for m, targets in graph.items() if "spxdask.per_image" in targets}
    assert {"spxdask.batch.extract", "spxdask.catalog.build", "spxdask.catalog.tasks"} <= users
