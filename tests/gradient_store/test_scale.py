"""A store at CI scale (10^4 rows, narrow): sums are right and every id is found; open shards stay bounded.

Timings at 10^3..10^6 rows are bench/store_scale_bench.py's (docs/benchmarks.md), not asserted here.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random

import pytest
import torch

import gradient_store.store as store_module
from gradient_store import GradientStore

from .conftest import FINGERPRINT

ROWS = 10_000
DIM = 64  # narrow: the rows, index and shard count are what is exercised, not the width
LAYOUT = [{"name": "flat", "shape": [DIM], "offset": 0}]


def _ids(n: int) -> list[str]:
    """Ids shaped like `retrieval.passage_id`'s: random order in the index's B-tree."""
    return [hashlib.blake2b(str(i).encode(), digest_size=8).hexdigest() for i in range(n)]


def _expected_sum(rows: torch.Tensor, weights: list[float]) -> torch.Tensor:
    """The store's sum, spelled out: bf16 rows widened and added one by one into float32 zeros."""
    out = torch.zeros(rows.shape[1])
    for row, weight in zip(rows, weights, strict=True):
        out.add_(row.to(torch.bfloat16).float(), alpha=weight)
    return out


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_10k_row_store_sums_right_and_finds_every_id(tmp_path):
    ids = _ids(ROWS)
    vectors = torch.randn(ROWS, DIM, generator=torch.Generator().manual_seed(0))
    store = GradientStore.create(tmp_path / "store", layout=LAYOUT, fingerprint=FINGERPRINT, rows_per_shard=2048)
    with store.writer() as w:  # bulk: a commit per full shard, as `regrad encode` writes
        for first in range(0, ROWS, 2048):
            w.append(ids[first : first + 2048], vectors[first : first + 2048])
            w.commit()
    store.close()

    store = GradientStore.open(tmp_path / "store", expect_fingerprint=FINGERPRINT, cache_bytes=0)
    try:
        info = store.info()
        assert (len(store), info["shards"], info["garbage_rows"]) == (ROWS, 5, 0)
        rng = random.Random(0)
        for _ in range(200):
            rows = rng.sample(range(ROWS), 3)
            weights = [rng.uniform(0.0, 3.0) for _ in rows]
            plain = store.sum([ids[i] for i in rows])
            weighted = store.sum([ids[i] for i in rows], weights=weights)
            assert plain.found_ids == [ids[i] for i in rows] and plain.missing_ids == []
            assert torch.allclose(plain.vector, _expected_sum(vectors[rows], [1.0] * 3), rtol=0, atol=1e-6)
            assert torch.allclose(weighted.vector, _expected_sum(vectors[rows], weights), rtol=0, atol=1e-6)
        # Every id is found at this size, each at its own row; an absent id is missing, not an error.
        got = store.get(ids)
        assert len(got) == ROWS
        assert torch.equal(torch.stack([got[pid] for pid in ids]), vectors.to(torch.bfloat16).float())
        result = store.sum([ids[0], "not-stored", ids[-1]])
        assert (result.found_ids, result.missing_ids) == ([ids[0], ids[-1]], ["not-stored"])
        assert ids[ROWS // 2] in store and "not-stored" not in store
        assert store.verify().ok
    finally:
        store.close()


def test_open_shards_are_bounded_and_evicted_ones_reopen(make_store, vec):
    store = make_store(rows_per_shard=1)  # one shard per row: 40 shards
    ids = [f"p{i}" for i in range(40)]
    store.append(ids, vec(ids))
    reader = GradientStore.open(store.path, cache_bytes=0, max_open_shards=4)
    try:
        fds_before = _fds()
        for _ in range(2):  # the second pass re-opens shards the first evicted
            for i in range(0, 40, 3):
                chunk = ids[i : i + 3]
                result = reader.sum(chunk)
                assert result.found_ids == chunk
                expected = _expected_sum(vec(chunk), [1.0] * len(chunk))
                assert torch.allclose(result.vector, expected, rtol=0, atol=1e-7)
        assert len(reader._readers) == 4
        assert _fds() - fds_before <= 4  # one descriptor per mapped shard, 40 without the bound
        with open("/proc/self/maps") as maps:
            assert sum(f"{store.path}/shards/" in line for line in maps) <= 4
    finally:
        reader.close()


def test_running_out_of_descriptors_is_not_remembered_as_a_broken_shard(make_store, vec, monkeypatch):
    store = make_store()
    store.append(["a", "b"], vec(["a", "b"]))
    reader = GradientStore.open(store.path, cache_bytes=0)
    real_reader = store_module.ShardReader
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise OSError(errno.EMFILE, "Too many open files")
        return real_reader(*args, **kwargs)

    monkeypatch.setattr(store_module, "ShardReader", flaky)
    try:
        assert reader.sum(["a"]).missing_ids == ["a"]  # this read fails, as for a passage not stored
        again = reader.sum(["a", "b"])
        assert again.found_ids == ["a", "b"] and again.missing_ids == []
    finally:
        reader.close()


def test_max_open_shards_must_be_positive(make_store):
    store = make_store()
    with pytest.raises(Exception, match="max_open_shards"):
        GradientStore.open(store.path, max_open_shards=0)


def test_probe_reads_the_index_without_counting_it(make_store, vec, monkeypatch):
    store = make_store()
    store.append(["a"], vec(["a"]))
    monkeypatch.setattr(type(store._index), "count", lambda self: pytest.fail("probe counted every row"))
    store.probe()  # O(log rows): what /readyz asks
    store.close()
    with pytest.raises(Exception, match="closed"):
        store.probe()
