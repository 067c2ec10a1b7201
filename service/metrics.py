"""Prometheus metrics of one app, in the app's own registry (so two apps in one process never clash)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["ServiceMetrics", "CONTENT_TYPE_LATEST"]

# Seconds; CPU generation of a batch takes seconds, a store read well under a millisecond.
_STAGE_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# Seconds between two tokens of a stream: a decode step on a CPU takes tens of milliseconds, a stall
# behind a newcomer's whole long prompt seconds.
_TOKEN_GAP_BUCKETS_S = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServiceMetrics:
    """The service's counters and histograms.

    Metrics:
        regrad_http_requests_total{route, status}: every HTTP request by route template and status code.
        regrad_answer_requests_total{mode, status}: POST /answer by mode and status code.
        regrad_stage_seconds{stage}: per-batch latency of queue, retrieve, gradients, generate, total.
        regrad_batch_size: requests per generation batch.
        regrad_gradient_lookups_total{result}: passages whose gradient was stored / computed / cached / missing.
        regrad_documents_added_total: documents indexed through POST /documents.
        regrad_queue_depth: requests waiting for the model.
        regrad_live_rows: rows decoding now (continuous scheduler).
        regrad_rows_joined_running_total: requests that joined a generation already running (continuous).
        regrad_token_gap_seconds: seconds between two consecutive tokens of the rows decoding, one
            observation per decode step (continuous): vLLM's time per output token; its tail is the
            stall newcomers' prefills, store sums and scoring cause (tune REGRAD_PREFILL_BUDGET_TOKENS).
        regrad_cache_hits_total{cache}, regrad_cache_misses_total{cache}: lookups of the engine's caches
            (`gradient`: computed passage gradients; `relevance`: passage prompts' KV for the
            `likelihood` scoring), once `watch_caches` is called.
        regrad_cache_bytes{cache}, regrad_cache_max_bytes{cache}, regrad_cache_entries{cache}: their size,
            budget and entries (size REGRAD_RELEVANCE_CACHE_MB by the hit rate).
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._caches: _CacheCollector | None = None
        self.http_requests = Counter(
            "regrad_http_requests", "HTTP requests by route and status", ["route", "status"],
            registry=self.registry,
        )
        self.answer_requests = Counter(
            "regrad_answer_requests", "POST /answer requests by mode and status", ["mode", "status"],
            registry=self.registry,
        )
        self.stage_seconds = Histogram(
            "regrad_stage_seconds", "Latency per pipeline stage", ["stage"],
            buckets=_STAGE_BUCKETS_S, registry=self.registry,
        )
        self.batch_size = Histogram(
            "regrad_batch_size", "Requests per generation batch", buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.gradient_lookups = Counter(
            "regrad_gradient_lookups", "Passage gradients by source (store hit = stored)", ["result"],
            registry=self.registry,
        )
        self.documents_added = Counter(
            "regrad_documents_added", "Documents indexed through POST /documents", registry=self.registry
        )
        self.queue_depth = Gauge(
            "regrad_queue_depth", "Requests waiting for the model", registry=self.registry
        )
        self.live_rows = Gauge(
            "regrad_live_rows", "Rows decoding now (continuous scheduler)", registry=self.registry
        )
        self.rows_joined_running = Counter(
            "regrad_rows_joined_running", "Requests that joined a generation already running (continuous)",
            registry=self.registry,
        )
        self.token_gap_seconds = Histogram(
            "regrad_token_gap_seconds", "Seconds between two consecutive tokens of the rows decoding (continuous)",
            buckets=_TOKEN_GAP_BUCKETS_S, registry=self.registry,
        )

    def watch_caches(self, caches: Mapping[str, Any]) -> None:
        """Expose `caches` (name → an object with `hits`, `misses`, `bytes`, `max_bytes` and a length, as
        `models.tensor_cache.TensorCache`), read at each scrape. Entries that are None are left out."""
        if self._caches is not None:   # a second start of the same app: the new engine's caches
            self.registry.unregister(self._caches)
        self._caches = _CacheCollector({k: v for k, v in caches.items() if v is not None})
        self.registry.register(self._caches)

    def observe_stages(self, timings_ms: dict[str, float]) -> None:
        for stage, value_ms in timings_ms.items():
            self.stage_seconds.labels(stage=stage).observe(value_ms / 1000.0)

    def count_gradients(self, sources: list[str | None]) -> None:
        for source in sources:
            if source is not None:
                self.gradient_lookups.labels(result=source).inc()

    def render(self) -> bytes:
        """The text exposition format for GET /metrics."""
        return generate_latest(self.registry)


class _CacheCollector(Collector):
    """Reads the caches' own counters at scrape time (they count on the model thread)."""

    def __init__(self, caches: Mapping[str, Any]) -> None:
        self.caches = dict(caches)

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        families = {
            "hits": CounterMetricFamily("regrad_cache_hits", "Cache lookups that found their entry", labels=["cache"]),
            "misses": CounterMetricFamily("regrad_cache_misses", "Cache lookups that did not", labels=["cache"]),
            "bytes": GaugeMetricFamily("regrad_cache_bytes", "Bytes of tensors held", labels=["cache"]),
            "max_bytes": GaugeMetricFamily("regrad_cache_max_bytes", "The cache's byte budget", labels=["cache"]),
            "entries": GaugeMetricFamily("regrad_cache_entries", "Entries held", labels=["cache"]),
        }
        for name, cache in self.caches.items():
            for field in ("hits", "misses", "bytes", "max_bytes"):
                families[field].add_metric([name], float(getattr(cache, field)))
            families["entries"].add_metric([name], float(len(cache)))
        yield from families.values()
