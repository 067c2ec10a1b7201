"""Install what you use: the optional extras of pyproject.toml (`es`, `dense`, `train`) hold what only one
backend or training imports; every package imported at module level by our code is a core dependency (or one
of theirs), so `import service`, `import engine` and `regrad serve` with tantivy work without the extras; a
missing extra is reported with the `pip install 'regrad[...]'` that brings it."""

from __future__ import annotations

import ast
import contextlib
import importlib.metadata
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("cli", "offline_tools", "service", "engine", "models", "gradient_store", "retrieval")
EXTRA_ONLY = {"es": {"elasticsearch"}, "dense": {"faiss-cpu"}, "train": {"accelerate", "matplotlib", "pillow"},
              "ray": {"ray"}}


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def names(requirements: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(r).name) for r in requirements}


def test_the_extras_are_declared_and_the_core_does_not_carry_them():
    extras = project()["optional-dependencies"]
    core = names(project()["dependencies"])
    for extra, packages in EXTRA_ONLY.items():
        assert packages <= names(extras[extra]), f"[{extra}] lacks {packages - names(extras[extra])}"
        assert not packages & core, f"{packages & core} belong to [{extra}], not to every install"
    dev = [Requirement(r) for r in extras["dev"]]
    self_reference = [r for r in dev if r.name == "regrad"]
    assert self_reference and {"es", "dense", "train", "ray"} <= self_reference[0].extras, "the tests need every extra"


def test_sentencepiece_is_not_a_dependency():
    """SmolLM2's tokenizer is a BPE (tokenizer.json, or the GGUF's): nothing imports sentencepiece."""
    everything = project()["dependencies"] + [r for rs in project()["optional-dependencies"].values() for r in rs]
    assert "sentencepiece" not in names(everything)
    assert "sentencepiece" not in (ROOT / "constraints.txt").read_text()
    for path in ROOT.glob("*/**/*.py"):
        if path.parts[len(ROOT.parts)] in PACKAGES:
            assert "sentencepiece" not in path.read_text(encoding="utf-8"), path


def _closure(requirements: list[str]) -> set[str]:
    """Installed distributions `requirements` bring, following each one's own (non-extra) requirements."""
    seen: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in seen or (requirement.marker and not requirement.marker.evaluate({"extra": ""})):
            continue
        seen.add(name)
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):  # an optional one not installed
            todo += [Requirement(r) for r in importlib.metadata.requires(name) or []]
    return seen


def _unguarded_imports(path: Path) -> set[str]:
    """Top-level module names imported when `path` is imported: module-level imports outside `try` and
    `if TYPE_CHECKING:` (imports inside functions run only where used)."""
    found: set[str] = set()

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
            elif isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
                visit(node.body)
                visit(node.orelse)

    visit(ast.parse(path.read_text(encoding="utf-8")).body)
    return found


def test_module_level_imports_need_only_the_core_dependencies():
    core = _closure(project()["dependencies"])
    distributions = importlib.metadata.packages_distributions()
    ours = set(PACKAGES)
    offenders = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for module in _unguarded_imports(path) - ours - set(sys.stdlib_module_names) - {"__future__"}:
                providers = {canonicalize_name(d) for d in distributions.get(module, [module])}
                if not providers & core:
                    offenders.setdefault(str(path.relative_to(ROOT)), []).append(f"{module} ({', '.join(providers)})")
    assert not offenders, f"module-level imports from outside the core dependencies (import them lazily): {offenders}"


def test_the_serving_path_imports_no_extra(tmp_path):
    """What `regrad serve` with tantivy imports, in a fresh interpreter: none of the extras' packages."""
    code = (
        "import json, sys\n"
        "import cli.main, cli.commands.serve, service.app, engine.core, retrieval, retrieval.tantivy_backend\n"
        "from retrieval import RetrieverConfig, open_retriever\n"
        "open_retriever(RetrieverConfig(index=sys.argv[1], create_if_missing=True))\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "index")], cwd=ROOT,
                            capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    loaded = set(json.loads(result.stdout.splitlines()[-1]))
    for forbidden in ("faiss", "elasticsearch", "elastic_transport", "matplotlib", "accelerate", "sentencepiece",
                      "ray"):
        assert forbidden not in loaded, f"the serving path imports {forbidden}"


@pytest.mark.parametrize(("backend", "module", "extra"), [
    ("elasticsearch", "elasticsearch", "es"), ("dense", "faiss", "dense"), ("hybrid", "faiss", "dense"),
])
def test_a_backend_without_its_extra_names_the_install(monkeypatch, tmp_path, backend, module, extra):
    from retrieval import RetrieverConfig, open_retriever
    from retrieval.errors import RetrieverConfigError

    monkeypatch.setitem(sys.modules, module, None)  # `import faiss` now raises ModuleNotFoundError
    for loaded in ("retrieval.elasticsearch_backend", "retrieval.dense_backend", "retrieval.hybrid_backend"):
        monkeypatch.delitem(sys.modules, loaded, raising=False)
    where = {"index": "regrad", "es_url": "http://localhost:9200"} if backend == "elasticsearch" else \
        {"index": str(tmp_path / "index")}
    with pytest.raises(RetrieverConfigError, match=rf"pip install 'regrad\[{extra}\]'"):
        open_retriever(RetrieverConfig(backend=backend, create_if_missing=True, **where))


def test_training_without_its_extra_names_the_install(monkeypatch, tmp_path):
    from offline_tools.errors import MissingExtraError
    from offline_tools.training.plots import plot_training_log

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    log = tmp_path / "training_log.jsonl"
    log.write_text('{"event": "train", "step": 1, "loss": 1.0}\n')
    with pytest.raises(MissingExtraError, match=r"pip install 'regrad\[train\]'"):
        plot_training_log(log, tmp_path / "curves.png")
