"""Fixtures for retrieval tests: small indexes over the real shared data, and an Elasticsearch stub.

Elasticsearch cannot run on the CI machines, so `es_stub` is a MOCK of that remote server: a tiny
local HTTP server that answers the handful of endpoints our backend calls (with the product header
the official client checks) and records every request. It checks request bodies and error mapping,
not Elasticsearch's ranking; tests against a real cluster run when REGRAD_TEST_ES_URL is set.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from retrieval import Passage, TantivyRetriever


@pytest.fixture(scope="session")
def scifact_dir(shared_data: Path) -> Path:
    return shared_data / "beir_scifact"


@pytest.fixture(scope="session")
def scifact_index(tmp_path_factory: pytest.TempPathFactory, scifact_dir: Path) -> Path:
    """A tantivy index of the whole SciFact corpus (5,183 docs, under a second), built once via the CLI."""
    from cli.main import main

    index = tmp_path_factory.mktemp("scifact") / "index"
    status = main(["index", "--corpus", str(scifact_dir / "corpus.jsonl"), "--index", str(index), "--no-progress"])
    assert status == 0
    return index


SMALL_PASSAGES = [
    Passage("ed", "Ed Wood", "Edward Davis Wood Jr. was an American filmmaker, actor and writer."),
    Passage("scott", "Scott Derrickson", "Scott Derrickson is an American director, screenwriter and producer."),
    Passage("doctor", "Doctor Strange (2016 film)", "Doctor Strange is a 2016 superhero film directed by "
            "Scott Derrickson."),
]


@pytest.fixture()
def small_index(tmp_path: Path) -> TantivyRetriever:
    retriever = TantivyRetriever(tmp_path / "small")
    retriever.add(SMALL_PASSAGES)
    yield retriever
    retriever.close()


@pytest.fixture(scope="module")
def readonly_index(tmp_path_factory: pytest.TempPathFactory) -> TantivyRetriever:
    """The same small index, built once per module for the many read-only query tests."""
    retriever = TantivyRetriever(tmp_path_factory.mktemp("readonly") / "index")
    retriever.add(SMALL_PASSAGES)
    return retriever


# ---------------------------------------------------------------------------------------------
# The Elasticsearch stub (a mock of the remote server).


class FakeCluster:
    """State behind the stub: one index, its documents, knobs to misbehave, and a request log."""

    def __init__(self) -> None:
        self.indices: dict[str, dict[str, dict]] = {}
        self.requests: list[dict] = []
        self.drop_every = 0  # >0: acknowledge but silently lose every n-th document (a full disk)
        self.fail_status = 0  # >0: answer every request with this HTTP status
        self.delay_s = 0.0  # sleep before answering (timeouts)
        self.disk_percent = "40"
        self._seen = 0

    def last(self, path_part: str) -> dict:
        return [r for r in self.requests if path_part in r["path"]][-1]


def _error(status: int, kind: str, reason: str) -> tuple[int, dict]:
    return status, {"error": {"root_cause": [{"type": kind, "reason": reason}], "type": kind, "reason": reason},
                    "status": status}


def _ndjson(raw: bytes) -> list[dict]:
    return [json.loads(line) for line in raw.decode().splitlines() if line.strip()]


def _route(cluster: FakeCluster, method: str, path: str, query: dict, raw: bytes) -> tuple[int, object]:
    parts = [p for p in path.split("/") if p]
    if cluster.fail_status:
        return _error(cluster.fail_status, "unavailable", "stub says no")
    if parts[:2] == ["_cluster", "settings"]:
        return 200, {"persistent": {}, "transient": {}, "defaults": {
            "cluster.routing.allocation.disk.watermark.high": "90%",
            "cluster.routing.allocation.disk.watermark.flood_stage": "95%"}}
    if parts[:2] == ["_cat", "allocation"]:
        return 200, [{"node": "stub-node", "disk.percent": cluster.disk_percent, "disk.avail": "1073741824"},
                     {"node": "UNASSIGNED", "disk.percent": None, "disk.avail": None}]
    if parts and parts[-1] == "_msearch":
        lines = _ndjson(raw)
        responses = []
        for header, body in zip(lines[::2], lines[1::2], strict=True):
            index = header.get("index") or parts[0]
            if index not in cluster.indices:
                responses.append(_error(404, "index_not_found_exception", f"no such index [{index}]")[1])
            else:
                responses.append(_search(cluster.indices[index], body))
        return 200, {"took": 1, "responses": responses}
    if parts and parts[-1] == "_bulk":
        return 200, _bulk(cluster, parts[0] if len(parts) == 2 else None, _ndjson(raw))
    index = parts[0]
    docs = cluster.indices.get(index)
    if len(parts) == 1:
        if method == "HEAD":
            return (200 if docs is not None else 404), None
        if method == "PUT":
            if docs is not None:
                return _error(400, "resource_already_exists_exception", f"index [{index}] already exists")
            cluster.indices[index] = {}
            return 200, {"acknowledged": True, "shards_acknowledged": True, "index": index}
    if docs is None:
        return _error(404, "index_not_found_exception", f"no such index [{index}]")
    action = parts[1]
    if action == "_count":
        return 200, {"count": len(docs)}
    if action == "_refresh":
        return 200, {"_shards": {"total": 1, "successful": 1, "failed": 0}}
    if action == "_search":
        body = json.loads(raw or b"{}")
        return 200, _search(docs, body)
    if action == "_mget":
        body = json.loads(raw)
        return 200, {"docs": [{"_index": index, "_id": i, "found": i in docs, **({"_source": docs[i]} if i in docs
                                                                                 else {})} for i in body["ids"]]}
    return _error(400, "illegal_argument_exception", f"stub does not know {method} {path}")


def _search(docs: dict, body: dict) -> dict:
    words = set(body["query"]["multi_match"]["query"].lower().split())
    hits = [{"_id": i, "_score": float(len(words & set((d["title"] + " " + d["text"]).lower().split()))),
             "_source": d} for i, d in docs.items()]
    hits = sorted((h for h in hits if h["_score"] > 0), key=lambda h: -h["_score"])[: body["size"]]
    return {"took": 1, "timed_out": False, "hits": {"total": {"value": len(hits), "relation": "eq"}, "hits": hits}}


def _bulk(cluster: FakeCluster, default_index: str | None, lines: list[dict]) -> dict:
    items, position = [], 0
    while position < len(lines):
        (op, meta), position = next(iter(lines[position].items())), position + 1
        index = meta.get("_index", default_index)
        docs = cluster.indices.setdefault(index, {})
        if op == "delete":
            existed = docs.pop(meta["_id"], None) is not None
            items.append({"delete": {"_id": meta["_id"], "result": "deleted" if existed else "not_found",
                                     "status": 200 if existed else 404}})
            continue
        source, position = lines[position], position + 1
        if set(source) - {"title", "text"}:  # the mapping is dynamic: strict
            items.append({op: {"_id": meta["_id"], "status": 400, "error": {
                "type": "strict_dynamic_mapping_exception", "reason": f"unknown fields {sorted(source)}"}}})
            continue
        cluster._seen += 1
        existed = meta["_id"] in docs
        if not (cluster.drop_every and cluster._seen % cluster.drop_every == 0):
            docs[meta["_id"]] = source
        items.append({op: {"_id": meta["_id"], "result": "updated" if existed else "created",
                           "status": 200 if existed else 201}})
    return {"took": 1, "errors": any("error" in next(iter(i.values())) for i in items), "items": items}


class _Handler(BaseHTTPRequestHandler):
    cluster: FakeCluster

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def _handle(self) -> None:
        split = urlsplit(self.path)
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.cluster.requests.append({"method": self.command, "path": split.path,
                                      "query": parse_qs(split.query), "raw": raw})
        if self.cluster.delay_s:
            time.sleep(self.cluster.delay_s)
        status, payload = _route(self.cluster, self.command, split.path, parse_qs(split.query), raw)
        body = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("X-Elastic-Product", "Elasticsearch")  # the official client refuses responses without it
        self.send_header("Content-Type", "application/vnd.elasticsearch+json; compatible-with=8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:  # a client that timed out and left
        pass


@pytest.fixture()
def es_stub():
    """(url, cluster): a local MOCK of an Elasticsearch server (see the module docstring)."""
    cluster = FakeCluster()
    handler = type("Handler", (_Handler,), {"cluster": cluster})
    server = _QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", cluster
    server.shutdown()
    server.server_close()
