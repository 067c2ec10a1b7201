"""A bounded in-memory cache of computed passage gradients, keyed by passage id.

Gradients computed on demand (passages a caller hands in with the question, store misses) are kept
here, so the next question over the same passages skips their backward pass without the store being
written. Caller passages are keyed by their content hash (`retrieval.passage.passage_id`), so the
same text is one entry whatever id the caller gave it. Least recently used entries go first.
"""

from __future__ import annotations

from models.tensor_cache import TensorCache

__all__ = ["GradientCache", "DEFAULT_CACHE_BYTES"]

DEFAULT_CACHE_BYTES = 256 * 2**20  # 64 SmolLM2-135M gradients (4.5 MB fp32 each), 16 at 1B scale


class GradientCache(TensorCache):
    """Least-recently-used `id → flat gradient (D,)`, at most `max_bytes` of tensors (0 = off).

    Example:
        cache = GradientCache(max_bytes=2**20)
        cache.put("be9624d68c3416af", vector)
        cache.get("be9624d68c3416af")   # the vector, or None
    """

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        super().__init__(max_bytes)
