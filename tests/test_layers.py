"""The package is layered: no import circles, and each layer imports only the ones below it.

Read from the source with ``ast`` (every import statement, at any depth, including the
ones under ``TYPE_CHECKING`` and inside functions: a lazy import is still a dependency),
so the check needs nothing installed beyond the package itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import sparked_credits

PACKAGE = Path(sparked_credits.__file__).parent
ROOT = "sparked_credits"

# Lowest first. A module belongs to the first layer one of whose prefixes it matches.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    # What every layer may use: errors, result models, and the validation of values.
    ("leaves", ("_version", "errors", "models", "control_models", "reports", "_core.validation")),
    ("pricing", ("pricing",)),
    ("core", ("_core",)),
    # The two drivers of the core's procedures: blocking and asyncio.
    ("drivers", ("_drive",)),
    ("backends", ("backends",)),
    ("clients", ("_client_base", "holds_context", "client", "async_client")),
    ("package", ("__init__",)),
    ("edges", ("clerk", "integrations", "billing", "archive", "cli", "__main__")),
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([ROOT, *parts])


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _imports(path: Path) -> set[str]:
    """The package's own modules that ``path`` imports (resolved, relative ones too)."""
    name = _module_name(path)
    package = name if _is_package(path) else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == ROOT)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if target.split(".")[0] != ROOT:
                continue
            for alias in node.names:
                # ``from . import x`` names a submodule when one exists.
                candidate = f"{target}.{alias.name}"
                found.add(candidate if candidate in MODULES else target)
    found.discard(name)
    return {m for m in found if m in MODULES}


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
GRAPH = {name: _imports(path) for name, path in MODULES.items()}


def _layer(module: str) -> int:
    rest = module[len(ROOT) + 1 :] if module != ROOT else "__init__"
    for index, (_, prefixes) in enumerate(LAYERS):
        if any(rest == p or rest.startswith(p + ".") for p in prefixes):
            return index
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def _cycles() -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(GRAPH[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    return found


def test_the_graph_is_read() -> None:
    assert "sparked_credits._core.operations" in GRAPH["sparked_credits.client"]
    assert "sparked_credits.errors" in GRAPH["sparked_credits.clerk.errors"]


def test_no_import_circles() -> None:
    assert _cycles() == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_each_module_imports_only_lower_or_same_layers(module: str) -> None:
    upward = sorted(m for m in GRAPH[module] if _layer(m) > _layer(module))
    assert not upward, f"{module} ({LAYERS[_layer(module)][0]}) imports upward: {upward}"


def test_the_check_sees_a_circle() -> None:
    saved = dict(GRAPH)
    try:
        GRAPH["sparked_credits.errors"] = {
            *GRAPH["sparked_credits.errors"],
            "sparked_credits.client",
        }
        assert _cycles()
    finally:
        GRAPH.clear()
        GRAPH.update(saved)
