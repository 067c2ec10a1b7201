"""Attention for a packed decode step, part by part (vLLM's chunked prefill, on SDPA).

Continuous batching's fused step (`BatchDecoder._decode_packed`) runs one forward over one sequence:
the n running rows' next tokens, then a chunk of each joining row's prompt (the whole prompt, or the
next part of a long one prefilled over several steps). Scored as one sequence with a 4-D mask, every
token meets every row's cached keys (n · W of them) and SDPA computes all of them before the mask
drops most: O(L · n · W) for L new tokens. Here each part attends to its own keys only:

    running rows (n, 1 token each):   row i's query  × [row i's W cached keys, its new key]   one batched call
    each prompt chunk (l tokens):     its l queries × [its p earlier tokens' keys, its own l keys], causal

so the step costs what its parts cost: O(n · W) for the decode tokens and O(l · (p + l)) per chunk.

The packed layout is set per forward on a `PackedAttentionSlot` (as `RowAdapterSlot` sets the row
adapters); `attention_implementation(model, PACKED_ATTENTION)` selects this function for the duration
of the forward. The HF decoder hands it the cache already extended by the step's L keys:
(1, h, n·W + P + L, d), where P is the chunks' earlier tokens (`prefixes`), in chunk order.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["PACKED_ATTENTION", "PackedLayout", "packed_layout", "register_packed_attention"]

PACKED_ATTENTION = "regrad_packed"


@dataclass(frozen=True)
class PackedLayout:
    """One packed forward's parts.

    Args:
        rows: running rows n (each one new token), first in the sequence.
        width: cached keys per running row W (left-padded: `cache_mask` marks the real ones).
        cache_mask: (n, W) bool, True where a running row's cached key is real.
        lengths: each prompt chunk's token count, in sequence order after the running rows.
        prefixes: each chunk's prompt tokens prefilled by earlier steps (0: the prompt starts here),
            their keys cached after the running rows' n · W, in chunk order; empty: all 0.
    """

    rows: int
    width: int
    cache_mask: torch.Tensor | None
    lengths: tuple[int, ...]
    prefixes: tuple[int, ...] = ()


class _Slot:
    current: PackedLayout | None = None


_SLOT = _Slot()


@contextlib.contextmanager
def packed_layout(layout: PackedLayout) -> Iterator[None]:
    """Forwards inside the block that use `PACKED_ATTENTION` read this layout."""
    previous, _SLOT.current = _SLOT.current, layout
    try:
        yield
    finally:
        _SLOT.current = previous


def packed_attention(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask,
                     dropout: float = 0.0, scaling: float | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """HF's attention-function signature: query (1, H, L, d), key/value (1, h, n·W + L, d) → (1, L, H, d)."""
    layout = _SLOT.current
    if layout is None:
        raise RuntimeError(f"{PACKED_ATTENTION} attention needs a packed_layout() around the forward")
    n, width = layout.rows, layout.width
    heads, kv_heads, dim = query.shape[1], key.shape[1], query.shape[-1]
    groups = heads // kv_heads            # grouped-query attention: query head j reads kv head j // groups
    cached = n * width                    # the running rows' keys; then the chunks' earlier tokens' keys
    prefixes = layout.prefixes or (0,) * len(layout.lengths)
    new = cached + sum(prefixes)          # where the step's own L keys start
    outputs = []
    if n:
        # A running row's `groups` query heads of one kv head go as `groups` queries of that head (no
        # copy of the cache per query head, and no `enable_gqa`, which torch < 2.5 lacks).
        q = query[0, :, :n].transpose(0, 1).reshape(n, kv_heads, groups, dim)            # (n, h, g, d)
        parts_k = (key[0, :, :cached].view(kv_heads, n, width, dim), key[0, :, new : new + n, None])
        parts_v = (value[0, :, :cached].view(kv_heads, n, width, dim), value[0, :, new : new + n, None])
        k = torch.cat(parts_k, dim=2).transpose(0, 1)                                    # (n, h, W + 1, d)
        v = torch.cat(parts_v, dim=2).transpose(0, 1)
        mask = F.pad(layout.cache_mask, (0, 1), value=True)[:, None, None, :]            # (n, 1, 1, W + 1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scaling)    # (n, h, g, d)
        outputs.append(out.reshape(n, heads, dim))                                       # (n, H, d)
    q_start, p_start, k_start = n, cached, new + n
    for prefix, length in zip(prefixes, layout.lengths, strict=True):
        q = query[:, :, q_start : q_start + length]                                       # (1, H, l, d)
        k, v = key[:, :, k_start : k_start + length], value[:, :, k_start : k_start + length]
        if prefix:                                                   # the chunk's earlier tokens, then its own
            k = torch.cat([key[:, :, p_start : p_start + prefix], k], dim=2)
            v = torch.cat([value[:, :, p_start : p_start + prefix], v], dim=2)
        if groups > 1:                                                                    # a prompt's own keys: small
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        if prefix:   # query j sees the prefix and its own first j + 1 keys (SDPA's is_causal aligns top-left)
            causal = torch.ones(length, prefix + length, dtype=torch.bool, device=q.device).tril(prefix)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=causal, scale=scaling)
        else:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scaling)
        outputs.append(out[0].transpose(0, 1))                                           # (l, H, d)
        q_start, p_start, k_start = q_start + length, p_start + prefix, k_start + length
    return torch.cat(outputs)[None], None


def register_packed_attention() -> None:
    """Make `PACKED_ATTENTION` a name `set_attn_implementation` accepts (idempotent)."""
    from transformers import AttentionInterface

    AttentionInterface.register(PACKED_ATTENTION, packed_attention)
