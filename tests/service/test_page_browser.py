"""The page at / in headless Chromium, driven over the DevTools protocol: type a question, read every
mode's answer, add a document, ask again and find it retrieved with a stored gradient; screenshot the
page. /docs renders Swagger UI. No request leaves the server (no CDN).

Chromium is Debian's (`apt-get install chromium`; `make test` installs it where apt can). The test
skips, saying so, only where no browser is installed. Set REGRAD_SCREENSHOT_DIR to keep the screenshots.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from engine.core import Engine
from gradient_store import GradientStore
from models import Learner
from retrieval.passage import Passage
from retrieval.tantivy_backend import TantivyRetriever
from service.app import create_app
from service.settings import Settings, shipped_checkpoint

from .conftest import running_server

pytestmark = pytest.mark.integration

CHROMIUM = next((p for p in (shutil.which("chromium"), "/usr/bin/chromium", shutil.which("chromium-browser"),
                             shutil.which("google-chrome")) if p and Path(p).exists()), None)
QUESTION = "What is the capital of Veltoria?"
CORPUS = [
    Passage("paris", "Paris", "Paris is the capital and most populous city of France."),
    Passage("rome", "Rome", "Rome is the capital city of Italy."),
    Passage("nile", "Nile", "The Nile is a major river in northeastern Africa."),
]
NEW_DOC = ("Veltoria", "Veltoria is an island nation in the north sea. Its capital is Marrowick.")


class Browser:
    """Just enough of the Chrome DevTools protocol: one page, commands and their replies, events kept."""

    def __init__(self, ws) -> None:
        self.ws, self.ids, self.events = ws, itertools.count(1), []

    async def call(self, method: str, **params):
        message_id = next(self.ids)
        await self.ws.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            reply = json.loads(await asyncio.wait_for(self.ws.recv(), 120))
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    async def js(self, expression: str):
        result = await self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout_s: float = 300) -> None:
        deadline = time.monotonic() + timeout_s
        while not await self.js(expression):
            assert time.monotonic() < deadline, f"timed out waiting for {expression}"
            await asyncio.sleep(0.2)

    async def open(self, url: str) -> None:
        await self.call("Page.navigate", url=url)
        await self.wait_for("document.readyState === 'complete'", 60)

    async def type_into(self, selector: str, text: str) -> None:
        await self.js(f"document.querySelector({json.dumps(selector)}).focus()")
        await self.call("Input.insertText", text=text)

    async def press_enter(self) -> None:
        for kind in ("keyDown", "keyUp"):
            await self.call("Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter",
                            windowsVirtualKeyCode=13, **({"text": "\r"} if kind == "keyDown" else {}))

    async def screenshot(self, path: Path) -> None:
        shot = await self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(shot["data"]))

    def requested_urls(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("page")
    learner = Learner.load(shipped_checkpoint(), device="cpu")
    retriever = TantivyRetriever(root / "index")
    retriever.add(CORPUS)
    store = GradientStore.create(root / "store", layout=learner.layout.to_json(), fingerprint=learner.fingerprint)
    engine = Engine(learner, retriever, store)
    app = create_app(Settings(_env_file=None, max_batch=8, max_wait_ms=50), engine_factory=lambda _: engine)
    with running_server(app) as url:
        yield url


async def _drive(url: str, shots: Path) -> dict:
    import websockets

    profile = tempfile.mkdtemp(prefix="regrad-chromium-")
    process = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-port=0",
         f"--user-data-dir={profile}", "--window-size=1400,1000", "--no-first-run", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        port_file = Path(profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            assert process.poll() is None and time.monotonic() < deadline, "Chromium did not start"
            await asyncio.sleep(0.1)
        port = port_file.read_text().split()[0]
        targets = json.loads(subprocess.run(["curl", "-s", f"http://127.0.0.1:{port}/json/list"],
                                            capture_output=True, text=True, check=True).stdout)
        page_ws = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        async with websockets.connect(page_ws, max_size=2**26) as ws:
            browser = Browser(ws)
            for domain in ("Page", "Runtime", "Network"):
                await browser.call(f"{domain}.enable")
            await browser.call("Emulation.setDeviceMetricsOverride", width=1400, height=1000, deviceScaleFactor=1,
                               mobile=False)
            await browser.open(url + "/")
            await browser.wait_for("document.body.dataset.ready === 'true'", 60)
            modes = await browser.js("[...document.querySelectorAll('#modes input')].map(i => i.value)")

            await browser.type_into("#question", QUESTION)
            await browser.press_enter()
            await browser.wait_for("document.body.dataset.state === 'answered'")
            read_cards = """[...document.querySelectorAll('.mode-card')].map(c => ({
                mode: c.dataset.mode, state: c.dataset.state, answer: c.querySelector('.answer').textContent,
                passages: [...c.querySelectorAll('ol.passages li')].map(li => ({
                    title: li.querySelector('strong').textContent,
                    badge: (li.querySelector('.badge') || {}).textContent || null,
                    text: li.querySelector('.ptext').textContent})),
                timings: [...c.querySelectorAll('table.timings td:first-child')].map(td => td.textContent)}))"""
            before = await browser.js(read_cards)
            await browser.screenshot(shots / "page-asked.png")

            await browser.type_into("#doc-title", NEW_DOC[0])
            await browser.type_into("#doc-text", NEW_DOC[1])
            await browser.js("document.querySelector('#add-doc').click()")
            await browser.wait_for("document.body.dataset.doc === 'added'")
            status = await browser.js("document.querySelector('#doc-status').textContent")
            await browser.js("document.body.dataset.state = ''; document.querySelector('#ask-again').click()")
            await browser.wait_for("document.body.dataset.state === 'answered'")
            after = await browser.js(read_cards)
            await browser.screenshot(shots / "page-after-document.png")

            await browser.open(url + "/docs")
            await browser.wait_for("!!document.querySelector('.swagger-ui .info .title')", 60)
            docs_title = await browser.js("document.querySelector('.swagger-ui .info .title').textContent")
            await browser.screenshot(shots / "docs.png")
            return {"modes": modes, "before": before, "after": after, "status": status, "docs_title": docs_title,
                    "urls": browser.requested_urls()}
    finally:
        process.terminate()
        process.wait(30)
        shutil.rmtree(profile, ignore_errors=True)


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed: `apt-get install chromium` (make test does "
                                             "this where apt is available) to run the browser test")
def test_page_in_headless_chromium(server, tmp_path):
    from engine.modes import MODE_NAMES

    shots = Path(os.environ.get("REGRAD_SCREENSHOT_DIR") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    seen = asyncio.run(_drive(server, shots))
    assert seen["modes"] == list(MODE_NAMES)
    for cards in (seen["before"], seen["after"]):
        assert [c["mode"] for c in cards] == list(MODE_NAMES)
        assert all(c["state"] == "done" and c["answer"].strip() for c in cards), cards
        assert all(c["timings"] == ["queue", "retrieve", "gradients", "generate", "total"] for c in cards)
    regrad_before = next(c for c in seen["before"] if c["mode"] == "regrad")
    assert regrad_before["passages"] and all(p["text"] for p in regrad_before["passages"])
    assert "Veltoria" not in [p["title"] for p in regrad_before["passages"]]
    assert "added" in seen["status"]
    regrad_after = next(c for c in seen["after"] if c["mode"] == "regrad")
    veltoria = next(p for p in regrad_after["passages"] if p["title"] == "Veltoria")
    assert veltoria["badge"] == "gradient: stored" and veltoria["text"] == NEW_DOC[1]
    assert seen["docs_title"].startswith("regrad")
    offsite = [u for u in seen["urls"] if not u.startswith((server, "data:", "about:"))]
    assert offsite == [], f"requests left the server: {offsite}"
    assert all((shots / name).stat().st_size > 10_000 for name in ("page-asked.png", "page-after-document.png",
                                                                    "docs.png"))
