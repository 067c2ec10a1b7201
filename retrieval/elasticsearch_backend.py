"""The Elasticsearch backend: the reference's BM25 query, bulk indexing that checks its own count.

`ElasticsearchRetriever` (synchronous and thread-safe: the CLI calls it directly, the service
through `asyncio.to_thread`) builds its requests and parses its responses with the pure functions
below (what the tests check without a server).

- Mapping: `title` and `text` as `text` with the `english` analyzer; `dynamic: strict`, so no stray
  fields (the reference stored a `refresh` field in every document by accident).
- Query: `multi_match`, `best_fields` over title and text, `tie_breaker` 0.5, `size` = k + 8 (the
  reference fetched 1000 full documents per query and kept 3). Equal scores are ordered by passage
  id, as the tantivy backend orders them: the 8 extra hits show whether a tie runs past the k-th,
  and a tie that runs past them is searched again with twice the size (up to k + 1,024).
- Bulk: `streaming_bulk` (chunks by count and bytes, retries 429 with capped backoff), then a
  refresh and a count: fewer documents than expected raises `IndexingError` with the numbers
  (Elasticsearch stops writing silently past its disk flood-stage watermark). The disk watermark
  is checked, and warned about, before indexing.
- Errors: connection failures, timeouts, 429 and 5xx become `BackendUnavailableError` (the
  service answers 503 + Retry-After); other refusals `BackendError`. Nothing fails silently.
  A missing index reads as empty when `create_if_missing` (the first `add` creates it, as a new
  tantivy folder starts empty), else raises `IndexNotFoundError`. Constructing a retriever makes
  no request, so a service can start before Elasticsearch is up.

Works with the 8.x client (pinned; it talks to 8.x servers) and 9.x: keyword arguments only.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

try:
    import elasticsearch
    from elasticsearch import helpers
except ModuleNotFoundError as e:  # the `es` extra
    raise ModuleNotFoundError("the Elasticsearch backend needs its client: pip install 'regrad[es]'",
                              name=e.name) from e

from retrieval.config import RetrieverConfig
from retrieval.errors import BackendError, BackendUnavailableError, IndexingError, IndexNotFoundError
from retrieval.passage import Passage, by_score_then_id, ties_past
from retrieval.validation import check_k, check_passage, clean_text

__all__ = [
    "ElasticsearchRetriever",
    "index_body",
    "search_body",
    "msearch_body",
    "bulk_action",
    "parse_hits",
    "disk_watermark_warnings",
]

logger = logging.getLogger("regrad.retrieval")

MAX_QUERY_WORDS = 1000  # under ES's default max_clause_count (4096 in 8.x) for two fields
MSEARCH_BATCH = 128  # queries per _msearch request, as in the authors' research code
TIE_WINDOW = 8       # hits asked past the k-th, to order equal scores by id (`by_score_then_id`)
_SOURCE = ["title", "text"]


# ---------------------------------------------------------------------------------------------
# Request bodies and response parsing (pure).


def index_body(number_of_shards: int = 1, number_of_replicas: int = 0) -> dict:
    """Settings and mappings for a new index: keyword args of `indices.create`."""
    english_text = {"type": "text", "analyzer": "english"}
    return {
        "settings": {"number_of_shards": number_of_shards, "number_of_replicas": number_of_replicas},
        "mappings": {"dynamic": "strict", "properties": {"title": english_text, "text": english_text}},
    }


def _query_text(query: str) -> str:
    words = clean_text(query).split()
    return " ".join(words[:MAX_QUERY_WORDS])


def search_body(query: str, k: int, tie_breaker: float = 0.5, title_boost: float = 1.0) -> dict:
    """The reference's query, asking for only `k` hits and only the fields we return."""
    title = "title" if title_boost == 1.0 else f"title^{title_boost:g}"
    return {
        "query": {
            "multi_match": {
                "query": _query_text(query),
                "type": "best_fields",
                "fields": [title, "text"],
                "tie_breaker": tie_breaker,
            }
        },
        "size": k,
        "_source": _SOURCE,
    }


def msearch_body(index: str, queries: Sequence[str], k: int, tie_breaker: float, title_boost: float) -> list[dict]:
    """Header/body pairs for `_msearch` (the `searches=` argument)."""
    searches: list[dict] = []
    for query in queries:
        searches.append({"index": index})
        searches.append(search_body(query, k, tie_breaker, title_boost))
    return searches


def bulk_action(passage: Passage, position: int, op_type: str = "index") -> dict:
    """One `streaming_bulk` action: `_id` is the passage id (never null), source = title + text."""
    check_passage(passage, position)
    return {"_op_type": op_type, "_id": clean_text(passage.id), "title": clean_text(passage.title),
            "text": clean_text(passage.text)}


def parse_hits(response: dict) -> list[Passage]:
    """`hits.hits` of a search response -> passages (id, title, text, score)."""
    passages = []
    for hit in response.get("hits", {}).get("hits", []):
        source = hit.get("_source") or {}
        passages.append(Passage(id=str(hit["_id"]), title=source.get("title", ""), text=source.get("text", ""),
                                score=float(hit.get("_score") or 0.0)))
    return passages


def _parse_docs(response: dict) -> list[Passage]:
    return [
        Passage(id=str(doc["_id"]), title=doc["_source"].get("title", ""), text=doc["_source"].get("text", ""))
        for doc in response.get("docs", [])
        if doc.get("found")
    ]


_SIZE = re.compile(r"^\s*([0-9.]+)\s*(b|kb|mb|gb|tb|pb)?\s*$", re.IGNORECASE)
_UNITS = {None: 1, "b": 1, "kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30, "tb": 1 << 40, "pb": 1 << 50}


def _watermark(value: str) -> tuple[str, float] | None:
    """("used_percent", 90.0) for "90%" or "0.9"; ("free_bytes", n) for "500mb"."""
    value = str(value).strip().lower()
    with contextlib.suppress(ValueError):
        if value.endswith("%"):
            return "used_percent", float(value[:-1])
        if re.fullmatch(r"0?\.[0-9]+|1(\.0*)?", value):
            return "used_percent", float(value) * 100
        match = _SIZE.match(value)
        if match:
            return "free_bytes", float(match.group(1)) * _UNITS[(match.group(2) or "b").lower()]
    return None


def disk_watermark_warnings(cluster_settings: dict, allocation: list[dict]) -> list[str]:
    """Warnings for nodes at or past the high (or flood-stage) disk watermark.

    Args:
        cluster_settings: `cluster.get_settings(include_defaults=True, flat_settings=True)`.
        allocation: `cat.allocation(format="json", bytes="b")`.
    """
    merged: dict = {}
    for scope in ("defaults", "persistent", "transient"):  # later scopes override earlier ones
        merged.update(cluster_settings.get(scope) or {})
    warnings = []
    for level in ("flood_stage", "high"):
        limit = _watermark(merged.get(f"cluster.routing.allocation.disk.watermark.{level}", ""))
        if limit is None:
            continue
        kind, threshold = limit
        for node in allocation:
            try:
                percent = float(node.get("disk.percent"))
                avail = float(node.get("disk.avail"))
            except (TypeError, ValueError):
                continue  # the UNASSIGNED row
            past = percent >= threshold if kind == "used_percent" else avail <= threshold
            if past:
                effect = ("indices become read-only and writes fail" if level == "flood_stage"
                          else "no new shards are allocated")
                warnings.append(
                    f"node {node.get('node')} disk is {percent:.0f}% full ({avail / 2**30:.1f} GiB free), past "
                    f"the {level} watermark {merged.get(f'cluster.routing.allocation.disk.watermark.{level}')}: "
                    f"{effect}; free disk space before indexing"
                )
        if warnings:
            break  # flood stage implies high; report the worse one only
    return warnings


@dataclass
class _BulkTally:
    """Counts of a bulk run, checked against the index's document count at the end."""

    sent: int = 0
    created: int = 0
    updated: int = 0
    deleted: int = 0
    failed: int = 0
    errors: list[dict] = field(default_factory=list)

    def record(self, ok: bool, item: dict) -> None:
        self.sent += 1
        op_type, result = next(iter(item.items()))
        outcome = result.get("result")
        if ok:
            self.created += outcome == "created"
            self.updated += outcome in ("updated", "noop")
            self.deleted += outcome == "deleted"
        elif op_type == "delete" and outcome == "not_found":
            pass  # deleting an id that is not there is not a failure
        else:
            self.failed += 1
            if len(self.errors) < 5:
                self.errors.append({"_id": result.get("_id"), "status": result.get("status"),
                                    "error": result.get("error")})

    def check(self, index: str, before: int, after: int) -> None:
        expected = before + self.created
        if self.failed or after < expected:
            raise IndexingError(index, sent=self.sent, created=self.created, updated=self.updated,
                                failed=self.failed, expected=expected, actual=after, errors=self.errors)


@contextlib.contextmanager
def _translated_errors(url: str, index: str) -> Iterator[None]:
    """Map client exceptions to retrieval errors (one type, BackendUnavailableError, for outages)."""
    try:
        yield
    except elasticsearch.UnsupportedProductError as error:
        raise BackendError(url, None, f"the server at {url} is not a supported Elasticsearch (8.x): {error}") from error
    except elasticsearch.ApiError as error:
        status = getattr(error.meta, "status", None)
        if status == 404 and "index_not_found" in str(error):
            raise IndexNotFoundError(
                index,
                f"Elasticsearch index {index!r} does not exist at {url}; build it with "
                f"`regrad index --backend elasticsearch --es-url {url} --index {index} --corpus FILE`",
            ) from error
        if status in (429, 502, 503, 504):
            raise BackendUnavailableError(url, f"HTTP {status} ({error})") from error
        raise BackendError(url, status, f"Elasticsearch at {url} refused a request on index {index!r}: "
                                        f"HTTP {status} {error}") from error
    except elasticsearch.TransportError as error:  # connection refused, DNS, TLS, timeouts
        raise BackendUnavailableError(url, f"{type(error).__name__}: {error}") from error


# ---------------------------------------------------------------------------------------------
# The retriever.


class ElasticsearchRetriever:
    """BM25 in an Elasticsearch index (see the module docstring). Thread-safe (the client is).

    Args:
        url: cluster URL, e.g. `http://localhost:9200`.
        index: index name.
        create_if_missing: `add` creates the index with our mapping when it does not exist.
        client: an existing `Elasticsearch` client (tests, custom auth); otherwise one is built.
        title_boost, tie_breaker: query knobs (1.0 and 0.5 reproduce the reference).
        chunk_size, max_retries, number_of_shards, number_of_replicas: bulk and index settings.

    Example:
        >>> r = ElasticsearchRetriever("http://localhost:9200", "wiki")   # doctest: +SKIP
        >>> r.search("who directed Ed Wood?", k=3)                         # doctest: +SKIP
    """

    backend = "elasticsearch"

    def __init__(
        self,
        url: str,
        index: str,
        *,
        create_if_missing: bool = True,
        client: elasticsearch.Elasticsearch | None = None,
        title_boost: float = 1.0,
        tie_breaker: float = 0.5,
        chunk_size: int = 500,
        max_retries: int = 3,
        number_of_shards: int = 1,
        number_of_replicas: int = 0,
        request_timeout_s: float = 30.0,
    ) -> None:
        self.url, self.index = url, index
        self.create_if_missing = create_if_missing
        self.title_boost, self.tie_breaker = title_boost, tie_breaker
        self.chunk_size, self.max_retries = chunk_size, max_retries
        self.number_of_shards, self.number_of_replicas = number_of_shards, number_of_replicas
        self._client = client or elasticsearch.Elasticsearch(
            url, request_timeout=request_timeout_s, max_retries=max_retries, retry_on_timeout=True
        )
        self._index_ready = False

    @classmethod
    def from_config(cls, config: RetrieverConfig) -> ElasticsearchRetriever:
        return cls(
            config.es_url or "", config.index, create_if_missing=config.create_if_missing,
            title_boost=config.title_boost, tie_breaker=config.tie_breaker, chunk_size=config.es_chunk_size,
            max_retries=config.es_max_retries, number_of_shards=config.es_number_of_shards,
            number_of_replicas=config.es_number_of_replicas, request_timeout_s=config.es_request_timeout_s,
        )

    def search(self, query: str, k: int = 10) -> list[Passage]:
        check_k(k)
        if not _query_text(query):
            return []
        with self._missing_as_empty(), _translated_errors(self.url, self.index):
            return self._ordered(query, k, self._search(query, k + TIE_WINDOW), k + TIE_WINDOW)
        return []

    def _search(self, query: str, size: int) -> list[Passage]:
        response = self._client.search(index=self.index, **search_body(query, size, self.tie_breaker,
                                                                       self.title_boost))
        return parse_hits(response.body)

    def _ordered(self, query: str, k: int, hits: list[Passage], size: int) -> list[Passage]:
        """The top k of `hits` (a search of `size`), equal scores by id; while a tie may run past
        them, the query again with twice the size (rare)."""
        while ties_past([h.score for h in hits], k, size):
            size *= 2
            hits = self._search(query, size)
        return by_score_then_id(hits, k)

    def search_many(self, queries: Sequence[str], k: int = 10) -> list[list[Passage]]:
        check_k(k)
        results: list[list[Passage]] = [[] for _ in queries]
        todo = [i for i, q in enumerate(queries) if _query_text(q)]
        size = k + TIE_WINDOW
        for start in range(0, len(todo), MSEARCH_BATCH):
            batch = todo[start:start + MSEARCH_BATCH]
            searches = msearch_body(self.index, [queries[i] for i in batch], size, self.tie_breaker,
                                    self.title_boost)
            with self._missing_as_empty(), _translated_errors(self.url, self.index):
                response = self._client.msearch(searches=searches)
                for i, item in zip(batch, response.body["responses"], strict=True):
                    results[i] = self._ordered(queries[i], k, _msearch_item(item, self.url, self.index), size)
        return results

    def get(self, ids: Sequence[str]) -> list[Passage]:
        wanted = list(dict.fromkeys(clean_text(i) for i in ids))
        found: dict[str, Passage] = {}
        with self._missing_as_empty(), _translated_errors(self.url, self.index):
            if wanted:
                response = self._client.mget(index=self.index, ids=wanted, source=_SOURCE)
                found = {p.id: p for p in _parse_docs(response.body)}
        return [found[i] for i in wanted if i in found]

    def count(self) -> int:
        with self._missing_as_empty(), _translated_errors(self.url, self.index):
            return int(self._client.count(index=self.index).body["count"])
        return 0

    def _missing_as_empty(self) -> contextlib.AbstractContextManager:
        """With `create_if_missing`, a missing index reads as an empty one (as tantivy's does): no hits."""
        return contextlib.suppress(IndexNotFoundError) if self.create_if_missing else contextlib.nullcontext()

    def ensure_index(self) -> bool:
        """Create the index with our mapping when missing; True when it was created."""
        with _translated_errors(self.url, self.index):
            if self._client.indices.exists(index=self.index):
                return False
            if not self.create_if_missing:
                self.count()  # raises IndexNotFoundError
            try:
                self._client.indices.create(index=self.index, **index_body(self.number_of_shards,
                                                                           self.number_of_replicas))
            except elasticsearch.BadRequestError as error:
                if "resource_already_exists" not in str(error):  # another indexer won the race: fine
                    raise
            return True

    def check_disk(self) -> list[str]:
        """Log and return disk-watermark warnings (advisory: a failing check logs and returns [])."""
        try:
            with _translated_errors(self.url, self.index):
                settings = self._client.cluster.get_settings(include_defaults=True, flat_settings=True).body
                allocation = self._client.cat.allocation(format="json", bytes="b").body
        except (BackendError, IndexNotFoundError) as error:
            logger.info("could not check the disk watermark of %s: %s", self.url, error)
            return []
        warnings = disk_watermark_warnings(settings, allocation)
        for warning in warnings:
            logger.warning("Elasticsearch %s: %s", self.url, warning)
        return warnings

    def add(self, passages: Iterable[Passage]) -> int:
        """Bulk-index (blocks until done); raises `IndexingError` when the count falls short."""
        if not self._index_ready:
            self.ensure_index()
            self.check_disk()
            self._index_ready = True
        before = self.count()
        tally = _BulkTally()
        actions = (bulk_action(p, i) for i, p in enumerate(passages))
        with _translated_errors(self.url, self.index):
            for ok, item in helpers.streaming_bulk(
                self._client, actions, index=self.index, chunk_size=self.chunk_size, raise_on_error=False,
                max_retries=self.max_retries, initial_backoff=2, max_backoff=60,
            ):
                tally.record(ok, item)
            self._client.indices.refresh(index=self.index)
        tally.check(self.index, before, self.count())
        return tally.sent

    def delete(self, ids: Sequence[str]) -> int:
        tally = _BulkTally()
        actions = ({"_op_type": "delete", "_id": clean_text(i)} for i in dict.fromkeys(ids))
        with _translated_errors(self.url, self.index):
            for ok, item in helpers.streaming_bulk(self._client, actions, index=self.index, raise_on_error=False,
                                                   chunk_size=self.chunk_size):
                tally.record(ok, item)
            self._client.indices.refresh(index=self.index)
        if tally.failed:
            raise BackendError(self.url, None, f"{tally.failed} deletes failed on {self.index}: {tally.errors}")
        return tally.deleted

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._client.close()


def _msearch_item(item: dict, url: str, index: str) -> list[Passage]:
    """One `_msearch` response; an error item raises (the reference turned it into 0 hits)."""
    if "error" not in item:
        return parse_hits(item)
    status = item.get("status")
    error = item["error"]
    if status == 404:
        raise IndexNotFoundError(index, f"Elasticsearch index {index!r} does not exist at {url}: {error}")
    if status in (429, 502, 503, 504):
        raise BackendUnavailableError(url, f"HTTP {status} in _msearch: {error}")
    raise BackendError(url, status, f"Elasticsearch at {url} failed a search on {index!r}: HTTP {status} {error}")
