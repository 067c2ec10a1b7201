"""Per-part attention of a packed decode step (`models.packed_attention`) against the one masked
attention over the whole packed sequence that it replaces: the same output, part by part."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models.packed_attention import PackedLayout, packed_attention, packed_layout


def _whole_sequence_attention(query, key, value, layout: PackedLayout) -> torch.Tensor:
    """The reference: every new token against every key, a 4-D mask keeping its own row's."""
    n, width, lengths = layout.rows, layout.width, layout.lengths
    prefixes = layout.prefixes or (0,) * len(lengths)
    cached, total = n * width + sum(prefixes), n + sum(lengths)
    mask = torch.zeros(total, cached + total, dtype=torch.bool)
    for i in range(n):
        mask[i, i * width : (i + 1) * width] = layout.cache_mask[i]
        mask[i, cached + i] = True
    start, earlier = n, n * width
    for prefix, length in zip(prefixes, lengths):
        causal = torch.ones(length, length).tril().bool()
        mask[start : start + length, earlier : earlier + prefix] = True      # the chunk's earlier tokens
        mask[start : start + length, cached + start : cached + start + length] = causal
        start, earlier = start + length, earlier + prefix
    groups = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    return F.scaled_dot_product_attention(query, key, value, attn_mask=mask[None, None]).transpose(1, 2)


@pytest.mark.parametrize(("rows", "lengths", "prefixes"),
                         [(3, (5, 2), ()), (0, (4,), ()), (2, (), ()), (2, (3, 4), (6, 0)), (0, (1, 5), (9, 2))])
def test_each_part_attends_to_its_own_keys_only(rows, lengths, prefixes):
    """Running rows, whole prompts and chunks of prompts whose earlier tokens are cached (chunked prefill)."""
    generator = torch.Generator().manual_seed(rows + len(prefixes))
    heads, kv_heads, dim, width = 6, 2, 8, 7
    cache_mask = torch.ones(rows, width, dtype=torch.bool)
    if rows:
        cache_mask[0, :3] = False                                  # a left-padded row
    layout = PackedLayout(rows, width, cache_mask if rows else None, lengths, prefixes)
    new, keys = rows + sum(lengths), rows * width + sum(prefixes) + rows + sum(lengths)
    query = torch.randn(1, heads, new, dim, generator=generator)
    key = torch.randn(1, kv_heads, keys, dim, generator=generator)
    value = torch.randn(1, kv_heads, keys, dim, generator=generator)
    with packed_layout(layout):
        out, _ = packed_attention(None, query, key, value, None)
    assert out.shape == (1, new, heads, dim)
    torch.testing.assert_close(out, _whole_sequence_attention(query, key, value, layout), atol=1e-5, rtol=1e-5)


def test_without_a_layout_it_refuses():
    x = torch.zeros(1, 2, 1, 4)
    with pytest.raises(RuntimeError, match="packed_layout"):
        packed_attention(None, x, x, x, None)
