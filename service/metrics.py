"""Prometheus metrics of one app, in the app's own registry (so two apps in one process never clash)."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = ["ServiceMetrics", "CONTENT_TYPE_LATEST"]

# Seconds; CPU generation of a batch takes seconds, a store read well under a millisecond.
_STAGE_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServiceMetrics:
    """The service's counters and histograms.

    Metrics:
        regrad_http_requests_total{route, status}: every HTTP request by route template and status code.
        regrad_answer_requests_total{mode, status}: POST /answer by mode and status code.
        regrad_stage_seconds{stage}: per-batch latency of queue, retrieve, gradients, generate, total.
        regrad_batch_size: requests per generation batch.
        regrad_gradient_lookups_total{result}: passages whose gradient was stored / computed / missing.
        regrad_documents_added_total: documents indexed through POST /documents.
        regrad_queue_depth: requests waiting for the model.
        regrad_live_rows: rows decoding now (continuous scheduler).
        regrad_rows_joined_running_total: requests that joined a generation already running (continuous).
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
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
