"""The import graph runs one way: cli → offline_tools / service → engine → models / gradient_store /
retrieval, which never import each other, and no module imports itself through others (no circle). Read
from the source (every `import`, at module level, inside a function or under TYPE_CHECKING), so a lazy
import that crosses a layer is caught too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("cli", "offline_tools", "service", "engine", "models", "gradient_store", "retrieval")
# Which of our packages each package may import (besides itself).
ALLOWED = {
    "cli": {"offline_tools", "service", "engine", "models", "gradient_store", "retrieval"},
    "offline_tools": {"engine", "models", "gradient_store", "retrieval"},
    "service": {"engine", "models", "gradient_store", "retrieval"},
    "engine": {"models", "gradient_store", "retrieval"},
    "models": set(),
    "gradient_store": set(),
    "retrieval": set(),
}


def imported_packages(path: Path) -> set[str]:
    """Our top-level packages that `path` imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {name.split(".")[0] for name in names} & set(PACKAGES)
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_package_imports_only_the_layers_below_it(package: str) -> None:
    crossings = {
        str(path.relative_to(ROOT)): sorted(imported - ALLOWED[package] - {package})
        for path in sorted((ROOT / package).rglob("*.py"))
        if (imported := imported_packages(path)) - ALLOWED[package] - {package}
    }
    assert not crossings, f"{package} imports what it must not: {crossings}"


def test_the_checker_sees_a_lazy_crossing(tmp_path: Path) -> None:
    source = tmp_path / "x.py"
    source.write_text("def f():\n    from service.app import create_app\n    import cli.main\n")
    assert imported_packages(source) == {"service", "cli"}


def _module_graph() -> dict[str, set[str]]:
    """Module → the modules of ours it imports (at module level, inside functions or under TYPE_CHECKING)."""
    modules = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            modules[name.removesuffix(".__init__")] = path

    def ours(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [ours(alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [ours(f"{node.module}.{alias.name}") for alias in node.names]
            else:
                continue
            graph[name] |= {t for t in targets if t and t != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                component.append(w)
            if component:
                found.append(sorted([v, *component]))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circle_anywhere() -> None:
    assert _cycles(_module_graph()) == []


def test_the_circle_finder_sees_one() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
