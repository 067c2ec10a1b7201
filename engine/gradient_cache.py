"""A bounded in-memory cache of computed passage gradients, keyed by passage id.

Gradients computed on demand (passages a caller hands in with the question, store misses) are kept
here, so the next question over the same passages skips their backward pass without the store being
written. Caller passages are keyed by their content hash (`retrieval.passage.passage_id`), so the
same text is one entry whatever id the caller gave it. Least recently used entries go first.
"""

from __future__ import annotations

import collections
import threading

import torch

__all__ = ["GradientCache", "DEFAULT_CACHE_BYTES"]

DEFAULT_CACHE_BYTES = 256 * 2**20  # 64 SmolLM2-135M gradients (4.5 MB fp32 each), 16 at 1B scale


class GradientCache:
    """Least-recently-used `id → flat gradient (D,)`, at most `max_bytes` of tensors (0 = off).

    Example:
        cache = GradientCache(max_bytes=2**20)
        cache.put("be9624d68c3416af", vector)
        cache.get("be9624d68c3416af")   # the vector, or None
    """

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        if max_bytes < 0:
            raise ValueError(f"`max_bytes` must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: collections.OrderedDict[str, torch.Tensor] = collections.OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def get(self, key: str) -> torch.Tensor | None:
        with self._lock:
            vector = self._entries.get(key)
            if vector is not None:
                self._entries.move_to_end(key)
            return vector

    def put(self, key: str, vector: torch.Tensor) -> None:
        size = vector.element_size() * vector.numel()
        if size > self.max_bytes:
            return
        vector = vector.detach()
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.bytes -= old.element_size() * old.numel()
            self._entries[key] = vector
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self.bytes -= evicted.element_size() * evicted.numel()
