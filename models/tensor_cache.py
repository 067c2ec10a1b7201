"""A bounded, thread-safe, least-recently-used cache of tensors by string key, counted in bytes.

The engine keeps computed passage gradients in one (`engine.gradient_cache.GradientCache`) and the
relevance scoring keeps each passage prompt's KV cache in another (`models.relevance`).

    cache = TensorCache(max_bytes=2**20)
    cache.put("be9624d68c3416af", tensor)
    cache.get("be9624d68c3416af")   # the tensor, or None
"""

from __future__ import annotations

import collections
import threading

import torch

__all__ = ["TensorCache"]


class TensorCache:
    """Least-recently-used `key → tensor`, at most `max_bytes` of tensors (0 = off). `hits` and
    `misses` count `get` calls."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"`max_bytes` must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = self.misses = 0
        self._entries: collections.OrderedDict[str, torch.Tensor] = collections.OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def get(self, key: str) -> torch.Tensor | None:
        with self._lock:
            tensor = self._entries.get(key)
            if tensor is None:
                self.misses += 1
            else:
                self.hits += 1
                self._entries.move_to_end(key)
            return tensor

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.bytes = 0

    def put(self, key: str, tensor: torch.Tensor) -> None:
        size = tensor.nbytes
        if size > self.max_bytes:
            return
        tensor = tensor.detach()
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.bytes -= old.nbytes
            self._entries[key] = tensor
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self.bytes -= evicted.nbytes
