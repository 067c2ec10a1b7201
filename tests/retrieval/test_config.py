"""RetrieverConfig validation, the backend factory and Passage."""

from __future__ import annotations

import pytest

from retrieval import (
    BACKENDS,
    Passage,
    RetrieverConfig,
    RetrieverConfigError,
    TantivyRetriever,
    backend_of,
    open_retriever,
)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"index": ""}, "index"),
        ({"index": "x", "backend": "solr"}, "backend"),
        ({"index": "x", "backend": "elasticsearch"}, "es_url"),
        ({"index": "x", "backend": "elasticsearch", "es_url": "localhost:9200"}, "es_url"),
        ({"index": "Bad Name", "backend": "elasticsearch", "es_url": "http://es:9200"}, "index"),
        ({"index": "_hidden", "backend": "elasticsearch", "es_url": "http://es:9200"}, "index"),
        ({"index": "x", "tie_breaker": 1.5}, "tie_breaker"),
        ({"index": "x", "title_boost": 0}, "title_boost"),
        ({"index": "x", "dense_index": "ivf"}, "dense_index"),
        ({"index": "x", "es_request_timeout_s": -1}, "es_request_timeout_s"),
        ({"index": "x", "writer_heap_bytes": 1000}, "writer_heap_bytes"),
        ({"index": "x", "embed_batch_size": 0}, "embed_batch_size"),
    ],
)
def test_bad_config_names_the_field(kwargs: dict, field: str):
    with pytest.raises(RetrieverConfigError) as caught:
        RetrieverConfig(**kwargs)
    assert caught.value.field == field and f"`{field}`" in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_good_configs():
    assert RetrieverConfig(index="wiki", backend="elasticsearch", es_url="https://es.example:9200").es_url
    assert RetrieverConfig(index="x", dense_index="hnsw32").dense_index == "hnsw32"
    assert RetrieverConfig(index="x").to_dict()["backend"] == "tantivy"


def test_unknown_backend_lists_the_known_ones(tmp_path):
    config = RetrieverConfig(index=str(tmp_path / "i"))
    config.backend = "solr"  # bypasses __post_init__, as a caller mutating a config would
    with pytest.raises(RetrieverConfigError) as caught:
        open_retriever(config)
    assert all(name in str(caught.value) for name in BACKENDS)


def test_default_backend_is_tantivy(tmp_path):
    retriever = open_retriever(RetrieverConfig(index=str(tmp_path / "i")))
    assert isinstance(retriever, TantivyRetriever) and retriever.count() == 0


def test_passage_to_dict():
    assert Passage("p1", "T", "x", 1.5).to_dict() == {"id": "p1", "title": "T", "text": "x", "score": 1.5}
    assert Passage("p1", "T", "x").score == 0.0


def test_backend_of_reads_the_index_folder(tmp_path):
    TantivyRetriever(tmp_path / "bm25")
    assert backend_of(tmp_path / "bm25") == "tantivy"
    assert backend_of(tmp_path / "absent") is None and backend_of("wiki") is None
