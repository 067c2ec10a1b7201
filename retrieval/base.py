"""The `Retriever` protocol every backend implements (tantivy, Elasticsearch, dense, hybrid)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

from retrieval.passage import Passage

__all__ = ["Retriever"]


@runtime_checkable
class Retriever(Protocol):
    """Search and maintain one index of passages.

    Every method is synchronous and safe to call from several threads of one process (the
    service runs them through `asyncio.to_thread`). Writes (`add`, `delete`) are committed and
    visible to the next `search` when they return.
    """

    def search(self, query: str, k: int = 10) -> list[Passage]:
        """The top `k` passages for `query`, best first. Any string is accepted; none matches -> []."""
        ...

    def search_many(self, queries: Sequence[str], k: int = 10) -> list[list[Passage]]:
        """`search` for each query, in order (one request per batch where the backend allows)."""
        ...

    def get(self, ids: Sequence[str]) -> list[Passage]:
        """The passages with these ids, in the order asked; unknown ids are left out (score 0.0)."""
        ...

    def add(self, passages: Iterable[Passage]) -> int:
        """Index passages (streamed; an existing id is replaced), commit, and return how many were sent."""
        ...

    def delete(self, ids: Sequence[str]) -> int:
        """Remove passages by id, commit, and return how many of them existed."""
        ...

    def count(self) -> int:
        """Number of passages in the index now."""
        ...

    def close(self) -> None:
        """Release files, threads and connections. Idempotent."""
        ...
