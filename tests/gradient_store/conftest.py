"""Fixtures for the gradient store: a small layout (D = 1000) and a store factory."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from gradient_store import GradientStore
from gradient_store.shard import ShardReader

DIM = 1000
# Two tensors like one LoRA pair; 400 + 600 = 1000 values, and 1000 is not a multiple of the int8 block.
LAYOUT = [
    {"name": "layers.0.mlp.down_proj.lora_A", "shape": [4, 100], "offset": 0},
    {"name": "layers.0.mlp.down_proj.lora_B", "shape": [150, 4], "offset": 400},
]
FINGERPRINT = "ab" * 32

# Source text, because child processes (test_crash.py) must build the very same vectors.
VECTOR_RECIPE = """
def vectors_for(ids, dim=1000):
    rows = []
    for pid in ids:
        g = torch.Generator().manual_seed(zlib.crc32(pid.encode()))
        rows.append(torch.randn(dim, generator=g) * 1e-3)
    return torch.stack(rows)
"""
_namespace: dict = {"torch": torch, "zlib": zlib}
exec(VECTOR_RECIPE, _namespace)
vectors_for: Callable[..., torch.Tensor] = _namespace["vectors_for"]


def raw_rows(store: GradientStore) -> dict[str, tuple[bytes, bytes | None]]:
    """Each id's stored bytes (gradients, int8 scales), read straight from its shard (no cache, no handle maps)."""
    out = {}
    refs = store._index.lookup(store.ids())
    for pid, ref in refs.items():
        record = store._index.shard(ref.shard_id)
        reader = ShardReader(store.path / "shards" / record.name, store.codec, record.rows, store.dim)
        row = reader.read_row(ref.row, ref.crc32)
        assert row is not None, pid
        out[pid] = (row[0].view(torch.uint8).numpy().tobytes(),
                    row[1].numpy().tobytes() if row[1] is not None else None)
        reader.close()
    return out


@pytest.fixture
def make_store(tmp_path: Path) -> Callable[..., GradientStore]:
    """`make_store(codec="bf16", rows_per_shard=4, name="store", **kw)` → an empty open store; closed after."""
    opened: list[GradientStore] = []

    def make(codec: str = "bf16", rows_per_shard: int = 4, name: str = "store", **kw) -> GradientStore:
        store = GradientStore.create(
            tmp_path / name, layout=LAYOUT, fingerprint=FINGERPRINT, codec=codec, rows_per_shard=rows_per_shard, **kw
        )
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def vec() -> Callable[..., torch.Tensor]:
    """`vec(ids)` → deterministic `[len(ids), 1000]` float32 gradients, one seed per id."""
    return vectors_for


@pytest.fixture
def layout() -> list[dict]:
    return [dict(e) for e in LAYOUT]


@pytest.fixture
def fingerprint() -> str:
    return FINGERPRINT


@pytest.fixture
def vector_recipe() -> str:
    """Source of `vectors_for`, for child processes."""
    return VECTOR_RECIPE
