"""An LRU cache of hot rows with a byte budget (rows are stored encoded, as read and checked)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

__all__ = ["RowCache"]


class RowCache:
    """Least-recently-used cache bounded by total bytes, safe to share between threads.

    Args:
        max_bytes: budget; 0 disables caching. An item larger than the budget is not cached.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item[0]

    def put(self, key: Hashable, value: Any, nbytes: int) -> None:
        if nbytes > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.bytes -= old[1]
            self._items[key] = (value, nbytes)
            self.bytes += nbytes
            while self.bytes > self.max_bytes:
                _, (_, evicted) = self._items.popitem(last=False)
                self.bytes -= evicted

    def discard(self, predicate: Callable[[Hashable], bool]) -> int:
        """Drop the items whose key satisfies `predicate`; returns how many."""
        with self._lock:
            keys = [key for key in self._items if predicate(key)]
            for key in keys:
                self.bytes -= self._items.pop(key)[1]
        return len(keys)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.bytes = 0
