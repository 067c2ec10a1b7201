"""Build a retriever from a `RetrieverConfig`: a list of small builders, the backend name picks one."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from pathlib import Path

from retrieval._indexdir import INFO_FILE
from retrieval.base import Retriever
from retrieval.config import BACKENDS, RetrieverConfig
from retrieval.errors import RetrieverConfigError

__all__ = ["open_retriever", "backend_of"]


# The optional extras (pyproject.toml) a backend's module imports, by top-level module name.
_EXTRA_MODULES = {"elasticsearch": "es", "elastic_transport": "es", "faiss": "dense"}


def _load(module: str, name: str, backend: str) -> type:
    """`module.name`, imported on first use; a backend whose extra is missing is a config error naming it."""
    try:
        return getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as e:
        extra = _EXTRA_MODULES.get((e.name or "").split(".")[0])
        if extra is None:
            raise
        raise RetrieverConfigError(
            "backend", f"{backend!r} needs the `{extra}` extra, not installed: pip install 'regrad[{extra}]'"
        ) from e


def _tantivy(config: RetrieverConfig) -> Retriever:
    return _load("retrieval.tantivy_backend", "TantivyRetriever", config.backend).from_config(config)


def _elasticsearch(config: RetrieverConfig) -> Retriever:
    return _load("retrieval.elasticsearch_backend", "ElasticsearchRetriever", config.backend).from_config(config)


def _dense(config: RetrieverConfig) -> Retriever:
    return _load("retrieval.dense_backend", "DenseRetriever", config.backend).from_config(config)


def _hybrid(config: RetrieverConfig) -> Retriever:
    return _load("retrieval.hybrid_backend", "HybridRetriever", config.backend).from_config(config)


# Imports stay inside the builders: the tantivy path never loads torch, faiss or the ES client.
_BUILDERS: dict[str, Callable[[RetrieverConfig], Retriever]] = {
    "tantivy": _tantivy,
    "elasticsearch": _elasticsearch,
    "dense": _dense,
    "hybrid": _hybrid,
}


def open_retriever(config: RetrieverConfig) -> Retriever:
    """Open (or create, when `config.create_if_missing`) the index `config` describes.

    Args:
        config: a validated `RetrieverConfig`.

    Returns:
        A `Retriever` of the configured backend.

    Example:
        >>> retriever = open_retriever(RetrieverConfig(index="artifacts/index"))  # doctest: +SKIP
        >>> [p.id for p in retriever.search("who directed Ed Wood?", k=3)]      # doctest: +SKIP
    """
    builder = _BUILDERS.get(config.backend)
    if builder is None:
        raise RetrieverConfigError(
            "backend", f"must be one of {', '.join(BACKENDS)}; got {config.backend!r}"
        )
    return builder(config)


def backend_of(index: str | Path) -> str | None:
    """The backend that built an index folder (from its `regrad_index.json`), or None when unknown.

    Lets tools open a folder without being told its backend; an ES index name gives None.
    """
    info = Path(index) / INFO_FILE
    try:
        backend = json.loads(info.read_text(encoding="utf-8")).get("backend")
    except (OSError, ValueError, AttributeError):
        return None
    return backend if backend in BACKENDS else None
