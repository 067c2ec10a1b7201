"""docker-compose.yml and the Dockerfile (Docker cannot run here): the compose file parses, has the
services the README promises, and every command it runs is a valid `regrad` command line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from offline_tools.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
_DEFAULT = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?::?-([^}]*))?\}")


def expand_defaults(value: str) -> str:
    """Compose's `${VAR:-default}` with every variable unset (the out-of-the-box values)."""
    return _DEFAULT.sub(lambda m: m.group(2) or "", value)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_compose_has_es_indexer_and_api(compose):
    services = compose["services"]
    assert {"elasticsearch", "indexer", "api", "api-gpu"} <= set(services)
    es = services["elasticsearch"]
    assert es["image"].split(":")[-1].startswith("8.")
    assert "-Xms" in es["environment"]["ES_JAVA_OPTS"] and "healthcheck" in es
    assert any("/usr/share/elasticsearch/data" in v for v in es["volumes"])
    es_config = yaml.safe_load((REPO / "docker" / "elasticsearch.yml").read_text())
    assert es_config["xpack.security.enabled"] is False and es_config["discovery.type"] == "single-node"
    assert "cluster.routing.allocation.disk.watermark.flood_stage" in es_config
    for name in ("api", "api-gpu"):
        api = services[name]
        assert api["depends_on"]["elasticsearch"]["condition"] == "service_healthy"
        assert any(v.endswith(":/artifacts") for v in api["volumes"])
        assert api["environment"]["REGRAD_RETRIEVER_BACKEND"] == "elasticsearch"
    gpu = services["api-gpu"]
    assert gpu["profiles"] == ["gpu"]
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert services["indexer"]["depends_on"]["elasticsearch"]["condition"] == "service_healthy"


def test_every_compose_command_is_a_valid_regrad_command(compose):
    parser = build_parser()
    commands = {name: s["command"] for name, s in compose["services"].items() if "command" in s}
    assert {"indexer", "api", "api-gpu"} <= set(commands)
    for name, command in commands.items():
        argv = [expand_defaults(str(part)) for part in command]
        assert argv[0] == "regrad", f"{name} runs {argv[0]!r}, not the regrad CLI"
        args = parser.parse_args(argv[1:])  # SystemExit (a failed test) on an unknown flag or value
        assert callable(args.func)
    indexer = parser.parse_args([expand_defaults(str(p)) for p in commands["indexer"][1:]])
    assert (indexer.backend, indexer.es_url) == ("elasticsearch", "http://elasticsearch:9200")


def test_dockerfiles_reference_files_that_exist():
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    assert re.search(r"^FROM ", dockerfile, re.MULTILINE)
    for source in re.findall(r"^COPY (\S+)", dockerfile, re.MULTILINE):
        if source != "README.md":  # written by the lead with the guide; the build needs it
            assert (REPO / source).exists(), f"Dockerfile copies {source}, which does not exist"
    assert 'CMD ["regrad", "serve"]' in dockerfile
    build_parser().parse_args(["serve"])
