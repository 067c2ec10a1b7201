"""The import graph runs one way: cli → offline_tools / service → engine → models / gradient_store /
retrieval, which never import each other. Read from the source (every `import`, at module level or
inside a function), so a lazy import that crosses a layer is caught too."""

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
