"""How to build an engine: which learner, retriever and store, on which device."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["EngineConfig", "DEFAULT_TANTIVY_INDEX", "DEFAULT_ES_INDEX", "DEFAULT_RELEVANCE_CACHE_MB"]

DEFAULT_TANTIVY_INDEX = "artifacts/index"
DEFAULT_ES_INDEX = "regrad"
DEFAULT_RELEVANCE_CACHE_MB = 1024  # ~300 SmolLM2-135M passage prompts of 155 tokens (23 KB a token in bf16)


@dataclass
class EngineConfig:
    """Everything `Engine.from_config` needs (the service's `Settings` maps onto it).

    Args:
        checkpoint: learner folder; None = an UNTRAINED learner built from `preset`.
        preset: model preset used when `checkpoint` is None.
        store: gradient store folder, created for the learner if missing; None = no store.
        retriever_backend: tantivy, elasticsearch, dense or hybrid.
        index: index folder (tantivy, dense) or index name (elasticsearch); None = the backend's default.
        es_url, es_timeout_s, es_max_retries: the Elasticsearch client.
        device: cpu, cuda or auto. dtype: base weights' dtype (auto: bf16 where native).
        torch_threads: CPU threads torch may use; None = torch's default.
        missing_gradients: `compute` (one batched backward for the misses) or `skip`.
        write_back: append computed gradients to the store.
        encode_batch_size: passages per backward when computing gradients.
        composition: how passage gradients are combined when a request does not say (`sum`, `softmax[:T]`,
            `likelihood[:T]`); None = the learner's own (its learner.json), else
            `engine.composition.DEFAULT_COMPOSITION`.
        relevance_cache_mb: memory for the passage prompts' KV caches that the `likelihood` scoring
            keeps (0: none kept).
        stop_bias: added to the end-of-answer tokens' logits after an answer's first token when a request
            does not say (0: plain greedy decoding).
        beams: beam search's width when a request does not say (1: greedy decoding); None = the learner's own
            (its learner.json `beams`), else 1; with a `stop_bias` above 0, 1.
    """

    checkpoint: Path | None = None
    preset: str = "smollm2-135m-instruct"
    store: Path | None = None
    retriever_backend: str = "tantivy"
    index: str | None = None
    es_url: str = "http://localhost:9200"
    es_timeout_s: float = 10.0
    es_max_retries: int = 1
    device: str = "auto"
    dtype: str = "auto"
    torch_threads: int | None = None
    missing_gradients: str = "compute"
    write_back: bool = False
    encode_batch_size: int = 8
    composition: str | None = None
    relevance_cache_mb: int = DEFAULT_RELEVANCE_CACHE_MB
    stop_bias: float = 0.0
    beams: int | None = None

    @property
    def index_name(self) -> str:
        """`index`, or the backend's default."""
        if self.index:
            return self.index
        return DEFAULT_ES_INDEX if self.retriever_backend == "elasticsearch" else DEFAULT_TANTIVY_INDEX
