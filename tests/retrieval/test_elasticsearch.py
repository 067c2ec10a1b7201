"""Elasticsearch backend: request bodies, results and error mapping against a local MOCK of the server.

Elasticsearch cannot run on these machines; `es_stub` (conftest.py), a tiny local HTTP server that
mocks the endpoints we call, stands in for the remote and records the requests (it matches words,
it does not rank like Elasticsearch). `test_real_cluster_*` run against a real cluster only when
REGRAD_TEST_ES_URL is set (e.g. http://localhost:9200), and are skipped otherwise.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import uuid

import pytest

from retrieval import (
    BackendUnavailableError,
    ElasticsearchRetriever,
    IndexingError,
    IndexNotFoundError,
    Passage,
    RetrieverConfig,
    open_retriever,
)
from retrieval.elasticsearch_backend import TIE_WINDOW, disk_watermark_warnings, index_body, search_body

PASSAGES = [
    Passage("p1", "Ed Wood", "Edward Wood was an American filmmaker."),
    Passage("p2", "Scott Derrickson", "Scott Derrickson is an American director."),
    Passage("p3", "Doctor Strange", "A 2016 film directed by Scott Derrickson."),
]


def _retriever(url: str, **kwargs) -> ElasticsearchRetriever:
    config = RetrieverConfig(index="regrad-test", backend="elasticsearch", es_url=url, es_max_retries=0,
                             es_request_timeout_s=kwargs.pop("timeout", 5.0), **kwargs)
    retriever = open_retriever(config)
    assert isinstance(retriever, ElasticsearchRetriever)
    return retriever


def test_search_body_is_the_reference_query_with_only_k_hits():
    body = search_body('who "directed" Doctor: Strange?', k=3)
    assert body == {
        "query": {"multi_match": {"query": 'who "directed" Doctor: Strange?', "type": "best_fields",
                                  "fields": ["title", "text"], "tie_breaker": 0.5}},
        "size": 3,
        "_source": ["title", "text"],
    }
    assert search_body("q", 5, title_boost=2.0)["query"]["multi_match"]["fields"] == ["title^2", "text"]


def test_mapping_uses_english_analyzer_and_strict_fields():
    body = index_body(number_of_shards=2, number_of_replicas=0)
    assert body["mappings"]["properties"]["title"] == {"type": "text", "analyzer": "english"}
    assert body["mappings"]["properties"]["text"] == {"type": "text", "analyzer": "english"}
    assert body["mappings"]["dynamic"] == "strict"
    assert body["settings"] == {"number_of_shards": 2, "number_of_replicas": 0}


def test_query_syntax_is_sent_as_plain_text_and_still_finds_the_passage(es_stub):
    url, cluster = es_stub
    retriever = _retriever(url)
    retriever.add(PASSAGES)
    query = 'Ed Wood AND "unbalanced ( [ quotes: \\'
    hits = retriever.search(query, k=3)
    assert json.loads(cluster.last("_search")["raw"])["query"]["multi_match"]["query"] == query
    assert [(h.id, h.title) for h in hits] == [("p1", "Ed Wood")]  # the stub matches the words "ed", "wood"
    assert [[h.id for h in b] for b in retriever.search_many([query, "( [ \\"], k=3)] == [["p1"], []]


def test_add_creates_index_bulk_indexes_and_searches(es_stub):
    url, cluster = es_stub
    retriever = _retriever(url)
    assert retriever.add(iter(PASSAGES)) == 3
    create = [r for r in cluster.requests if r["method"] == "PUT" and r["path"] == "/regrad-test"]
    assert json.loads(create[0]["raw"]) == index_body(1, 0)
    bulk = cluster.last("_bulk")
    assert bulk["path"] == "/regrad-test/_bulk"
    bulk_lines = [json.loads(line) for line in bulk["raw"].decode().splitlines()]
    assert bulk_lines[:2] == [{"index": {"_id": "p1"}},
                              {"title": "Ed Wood", "text": "Edward Wood was an American filmmaker."}]
    assert cluster.indices["regrad-test"]["p3"]["title"] == "Doctor Strange"
    assert retriever.count() == 3

    hits = retriever.search("Scott Derrickson director", k=2)
    sent = json.loads(cluster.last("_search")["raw"])
    assert sent["size"] == 2 + TIE_WINDOW and sent["query"]["multi_match"]["tie_breaker"] == 0.5
    assert [h.id for h in hits][0] == "p2" and hits[0].title == "Scott Derrickson" and hits[0].score > 0

    batches = retriever.search_many(["Ed Wood", "", "2016 film"], k=1)
    assert [[h.id for h in b] for b in batches] == [["p1"], [], ["p3"]]  # a blank query is not sent
    msearch = [json.loads(line) for line in cluster.last("_msearch")["raw"].decode().splitlines()]
    assert len(msearch) == 4 and msearch[0] == {"index": "regrad-test"} and msearch[1]["size"] == 1 + TIE_WINDOW

    assert [p.id for p in retriever.get(["p3", "missing", "p1"])] == ["p3", "p1"]
    assert retriever.delete(["p1", "missing"]) == 1 and retriever.count() == 2
    retriever.close()


def test_index_corpus_into_a_new_index(es_stub, shared_data):
    from retrieval import index_corpus

    url, cluster = es_stub
    path = shared_data / "flashrag_quickstart" / "wiki18_sample_corpus.jsonl"
    report = index_corpus(_retriever(url, es_chunk_size=300), [path], progress=False)
    assert (report.count_before, report.count_after, report.sent) == (0, 1000, 1000)
    assert sum(r["path"].endswith("_bulk") for r in cluster.requests) == 4  # chunks of 300


def test_equal_scores_come_back_in_id_order_as_from_tantivy(es_stub):
    """The stub, like Elasticsearch, lists equal scores in the order documents were stored."""
    url, cluster = es_stub
    retriever = _retriever(url)
    retriever.add([Passage(f"p{i:02d}", "Tied", f"An orchard of pears number {i}.") for i in (7, 3, 5)]
                  + [Passage("q00", "Other", "Nothing alike.")])
    assert [h.id for h in retriever.search("orchard pears", k=2)] == ["p03", "p05"]  # stored: p07, p03, p05
    assert [[h.id for h in b] for b in retriever.search_many(["orchard pears", "pears"], k=2)] == [
        ["p03", "p05"], ["p03", "p05"]]
    # a tie that runs past the window: searched again with room for it, so the lowest ids still win
    retriever.add([Passage(f"w{i:02d}", "Wide", f"A wide field of turnips {i}.") for i in range(30, 0, -1)])
    sizes: list[int] = []
    for search in (lambda: retriever.search("wide turnips", k=3),
                   lambda: retriever.search_many(["wide turnips"], k=3)[0]):
        cluster.requests.clear()
        assert [h.id for h in search()] == ["w01", "w02", "w03"]
        sizes.append([json.loads(r["raw"].decode().splitlines()[-1])["size"] for r in cluster.requests
                      if "_search" in r["path"] or "_msearch" in r["path"]])
    window = 3 + TIE_WINDOW  # 30 tied hits: asked for 11, 22, then 44 (30 come back, the tie is whole)
    assert sizes == [[window, 2 * window, 4 * window]] * 2  # _msearch widens from its own hits


def test_count_shortfall_fails_loudly_with_the_numbers(es_stub):
    url, cluster = es_stub
    cluster.drop_every = 2  # acknowledged, then lost: what a full disk does
    retriever = _retriever(url)
    with pytest.raises(IndexingError) as caught:
        retriever.add(PASSAGES)
    error = caught.value
    assert (error.sent, error.created, error.expected, error.actual) == (3, 3, 3, 2)
    assert "holds 2 documents but 3 were expected" in str(error)


def test_rejected_documents_are_counted_as_failures(es_stub, monkeypatch):
    url, cluster = es_stub
    from retrieval import elasticsearch_backend

    real = elasticsearch_backend.bulk_action
    monkeypatch.setattr(elasticsearch_backend, "bulk_action",
                        lambda p, i, op_type="index": {**real(p, i), **({"refresh": "wait_for"} if i == 1 else {})})
    with pytest.raises(IndexingError) as caught:
        _retriever(url).add(PASSAGES)
    assert caught.value.failed == 1 and caught.value.errors[0]["_id"] == "p2"


def test_disk_watermark_is_checked_and_warned(es_stub, caplog):
    url, cluster = es_stub
    cluster.disk_percent = "96"
    with caplog.at_level(logging.WARNING, logger="regrad.retrieval"):
        _retriever(url).add(PASSAGES[:1])
    assert any("flood_stage" in r.message and "96%" in r.message for r in caplog.records)


def test_disk_watermark_parsing():
    settings = {"defaults": {"cluster.routing.allocation.disk.watermark.high": "90%",
                             "cluster.routing.allocation.disk.watermark.flood_stage": "95%"},
                "persistent": {"cluster.routing.allocation.disk.watermark.high": "500mb"}}
    ok = [{"node": "a", "disk.percent": "50", "disk.avail": str(10 * 2**30)}]
    low_space = [{"node": "a", "disk.percent": "50", "disk.avail": str(100 * 2**20)}]
    assert disk_watermark_warnings(settings, ok) == []
    assert "high watermark 500mb" in disk_watermark_warnings(settings, low_space)[0]


def test_connection_refused_is_backend_unavailable():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed when the block ends: nothing listens there
    retriever = _retriever(f"http://127.0.0.1:{port}")
    for call in (lambda: retriever.search("anything", 3), retriever.count, lambda: retriever.add(PASSAGES)):
        with pytest.raises(BackendUnavailableError) as caught:
            call()
        assert caught.value.url == f"http://127.0.0.1:{port}" and caught.value.retry_after_s > 0


def test_overload_and_timeout_are_backend_unavailable(es_stub):
    url, cluster = es_stub
    cluster.fail_status = 503
    with pytest.raises(BackendUnavailableError, match="HTTP 503"):
        _retriever(url).search("x", 3)
    cluster.fail_status, cluster.delay_s = 0, 1.0
    with pytest.raises(BackendUnavailableError, match="Timeout"):
        _retriever(url, timeout=0.2).count()


def test_missing_index_is_index_not_found(es_stub):
    url, _ = es_stub
    retriever = _retriever(url, create_if_missing=False)
    with pytest.raises(IndexNotFoundError, match="regrad index --backend elasticsearch"):
        retriever.search("anything", 3)
    with pytest.raises(IndexNotFoundError):
        retriever.search_many(["a", "b"], 3)
    with pytest.raises(IndexNotFoundError):
        retriever.add(PASSAGES)


def test_missing_index_reads_as_empty_when_it_would_be_created(es_stub):
    url, cluster = es_stub
    retriever = _retriever(url)  # create_if_missing=True, like the service: the first add creates it
    assert retriever.search("anything", 3) == [] and retriever.search_many(["a", "b"], 3) == [[], []]
    assert retriever.get(["p1"]) == [] and retriever.count() == 0
    assert "regrad-test" not in cluster.indices  # reading never creates the index
    retriever.add(PASSAGES[:1])
    assert retriever.get(["p1"])[0].title == "Ed Wood"


# ---------------------------------------------------------------------------------------------
# A real cluster, only when REGRAD_TEST_ES_URL is set.

ES_URL = os.environ.get("REGRAD_TEST_ES_URL")
real_cluster = pytest.mark.skipif(not ES_URL, reason="set REGRAD_TEST_ES_URL to test against a real Elasticsearch")


@real_cluster
def test_real_cluster_indexes_counts_and_ranks(scifact_dir):
    from retrieval import CorpusReader, index_corpus

    name = f"regrad-test-{uuid.uuid4().hex[:8]}"
    retriever = open_retriever(RetrieverConfig(index=name, backend="elasticsearch", es_url=ES_URL))
    try:
        report = index_corpus(retriever, [scifact_dir / "corpus.jsonl"], progress=False)
        assert report.count_after == 5183
        first = next(iter(CorpusReader(scifact_dir / "corpus.jsonl")))
        assert retriever.search(first.title, 5)[0].id == first.id
        # Query syntax is plain text: the operators and unbalanced quotes/brackets are analysed away,
        # so the hostile query ranks exactly as its words do (3 SciFact documents say "unbalanced").
        hostile = retriever.search('AND "unbalanced ( [ quotes: \\', 5)
        assert hostile and [p.id for p in hostile] == [p.id for p in retriever.search("unbalanced quotes", 5)]
    finally:
        retriever._client.indices.delete(index=name)
        retriever.close()
