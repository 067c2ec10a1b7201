"""The page at / and the API docs are served from the package: every `src`/`href` is local (favicon
included) and answers 200, with no CDN. The browser drives them in test_page_browser.py."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from engine.modes import MODE_NAMES
from service.app import create_app
from service.settings import Settings

LINKS = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)


@pytest.fixture
def client(fake_engine):
    app = create_app(Settings(_env_file=None, scheduler="static"), engine_factory=lambda _: fake_engine)
    with TestClient(app) as client:
        yield client


@pytest.mark.parametrize("path", ["/", "/docs", "/redoc"])
def test_pages_link_only_local_files_that_exist(client, path):
    response = client.get(path)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    links = LINKS.findall(response.text)
    assert links, f"{path} links nothing?"
    assert not [link for link in links if re.match(r"(https?:)?//", link)], f"{path} links off this server"
    assets = [link for link in links if link.startswith("/static/")]
    assert assets and all(client.get(link).status_code == 200 for link in assets)
    if path != "/":
        assert "/static/favicon.svg" in links and "/openapi.json" in response.text


def test_page_config_lists_the_engines_modes(client):
    config = client.get("/page/config").json()
    assert [m["name"] for m in config["modes"]] == list(MODE_NAMES)
    assert config["max_gamma"] == 100 and config["needs_api_key"] is False
    assert client.get("/favicon.ico").status_code == 200


def test_page_script_and_styles_load_nothing_remote(client):
    for asset in ("/static/app.js", "/static/style.css"):
        assert not re.search(r"https?://", client.get(asset).text), asset
