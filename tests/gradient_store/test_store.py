"""Writer and reader behaviour: append, duplicates, sums, fingerprints, locking, threads, the LRU cache."""

from __future__ import annotations

import threading

import pytest
import torch

from gradient_store import (
    DuplicateIdError,
    FingerprintMismatchError,
    GradientStore,
    InvalidAppendError,
    StoreError,
    StoreExistsError,
    StoreLockedError,
)


def _ids(n: int, prefix: str = "doc") -> list[str]:
    return [f"{prefix}-{i}" for i in range(n)]


@pytest.mark.parametrize(("codec", "tol"), [("fp32", 1e-7), ("bf16", 2**-8), ("int8", 0.02)])
def test_sum_and_get_match_the_appended_vectors(make_store, vec, codec, tol):
    store = make_store(codec=codec, rows_per_shard=3)
    ids = _ids(8)
    assert store.append(ids, vec(ids)) == 8

    vector, found, missing = store.sum(["doc-1", "nope", "doc-6", "doc-3"])
    expected = vec(["doc-1", "doc-6", "doc-3"]).sum(0)
    assert found == ["doc-1", "doc-6", "doc-3"] and missing == ["nope"]
    assert vector.dtype == torch.float32 and vector.shape == (1000,)
    assert float((vector - expected).norm() / expected.norm()) < tol

    got = store.get(["doc-7", "nope", "doc-0"])
    assert set(got) == {"doc-7", "doc-0"}
    assert float((got["doc-7"] - vec(["doc-7"])[0]).norm() / vec(["doc-7"])[0].norm()) < tol


def test_sum_of_nothing_found_is_zero_and_repeats_count_twice(make_store, vec):
    store = make_store()
    store.append(["a"], vec(["a"]))
    result = store.sum(["x", "y"])
    assert torch.equal(result.vector, torch.zeros(1000)) and result.found_ids == [] and result.missing_ids == ["x", "y"]
    twice = store.sum(["a", "a"])
    assert twice.found_ids == ["a", "a"]
    assert torch.allclose(twice.vector, 2 * store.sum(["a"]).vector)


def test_len_contains_ids_info(make_store, vec):
    store = make_store(rows_per_shard=4)
    store.append(_ids(10), vec(_ids(10)))
    assert len(store) == 10 and "doc-3" in store and not store.contains("doc-10")
    assert store.ids() == _ids(10)
    info = store.info()
    assert info["passages"] == 10 and info["shards"] == 3 and info["codec"] == "bf16"
    assert info["fingerprint"] == store.fingerprint and info["garbage_rows"] == 0
    assert info["bytes_per_passage"] == pytest.approx(info["size_on_disk_bytes"] / 10)
    assert info["size_on_disk_bytes"] > 10 * 2000  # at least the bf16 rows themselves


def test_writer_commits_on_exit_and_discards_on_error(make_store, vec):
    store = make_store(rows_per_shard=2)
    with store.writer() as w:
        w.append(_ids(3), vec(_ids(3)))
        assert len(store) == 0  # nothing visible before the commit
    assert len(store) == 3

    with pytest.raises(RuntimeError), store.writer() as w:
        w.append(_ids(5, "lost"), vec(_ids(5, "lost")))  # fills two shards on disk before the error
        raise RuntimeError("encoder crashed")
    assert len(store) == 3 and not any("lost" in i for i in store.ids())
    assert sorted(p.name for p in (store.path / "shards").iterdir()) == [
        "shard-00000.safetensors",
        "shard-00001.safetensors",
    ]
    assert store.verify().ok and not store.verify().warnings


def test_explicit_commit_makes_progress_durable(make_store, vec):
    store = make_store(rows_per_shard=2)
    with pytest.raises(RuntimeError), store.writer() as w:
        w.append(_ids(3), vec(_ids(3)))
        w.commit()
        w.append(_ids(2, "late"), vec(_ids(2, "late")))
        raise RuntimeError
    assert store.ids() == _ids(3)


def test_duplicate_policies(make_store, vec):
    store = make_store(rows_per_shard=3)
    store.append(["a", "b"], vec(["a", "b"]))

    with pytest.raises(DuplicateIdError) as err:
        store.append(["c", "a", "c"], vec(["c", "a", "c"]))
    assert set(err.value.ids) == {"a", "c"} and len(store) == 2  # nothing of the batch was written

    assert store.append(["a", "d", "d"], vec(["a", "d", "x"]), on_duplicate="skip") == 1
    assert store.ids() == ["a", "b", "d"]
    assert torch.allclose(store.get(["d"])["d"], vec(["d"])[0], rtol=1e-2, atol=1e-6)  # first occurrence kept

    new_b = vec(["other"])
    assert store.append(["b"], new_b, on_duplicate="replace") == 1
    assert torch.allclose(store.get(["b"])["b"], new_b[0], rtol=1e-2, atol=1e-6)
    assert store.ids() == ["a", "b", "d"]  # a replaced id keeps its place
    assert store.info()["garbage_rows"] == 1
    assert store.verify().ok


def test_replace_within_one_writer_keeps_the_last_row(make_store, vec):
    store = make_store()
    with store.writer(on_duplicate="replace") as w:
        w.append(["a"], vec(["first"]))
        w.append(["a", "a"], vec(["second", "third"]))
    assert len(store) == 1
    assert torch.allclose(store.get(["a"])["a"], vec(["third"])[0], rtol=1e-2, atol=1e-6)


def test_invalid_appends_are_rejected_with_the_expected_shape(make_store, vec):
    store = make_store()
    with pytest.raises(InvalidAppendError, match=r"expected \[2, 1000\]"):
        store.append(["a", "b"], torch.zeros(2, 999))
    bad = vec(["a", "b"])
    bad[1, 5] = float("nan")
    with pytest.raises(InvalidAppendError, match="NaN") as err:
        store.append(["a", "b"], bad)
    assert "'b'" in str(err.value)
    with pytest.raises(InvalidAppendError, match="non-empty strings"):
        store.append([3], vec(["a"]))
    with pytest.raises(InvalidAppendError, match="on_duplicate"):
        store.append(["a"], vec(["a"]), on_duplicate="overwrite")
    assert len(store) == 0
    store.append(["single"], vec(["single"])[0])  # a [D] vector for one id is accepted
    assert len(store) == 1


def test_fingerprint_is_checked_on_open(make_store, fingerprint):
    store = make_store()
    GradientStore.open(store.path, expect_fingerprint=fingerprint).close()
    with pytest.raises(FingerprintMismatchError) as err:
        GradientStore.open(store.path, expect_fingerprint="cd" * 32)
    assert err.value.found == fingerprint and err.value.expected == "cd" * 32
    assert "regrad encode" in str(err.value)


def test_create_refuses_existing_stores_unless_exist_ok(make_store, vec, layout, fingerprint):
    store = make_store()
    store.append(["a"], vec(["a"]))
    with pytest.raises(StoreExistsError):
        GradientStore.create(store.path, layout=layout, fingerprint=fingerprint)
    with GradientStore.create(store.path, layout=layout, fingerprint=fingerprint, exist_ok=True) as again:
        assert again.ids() == ["a"]
    with pytest.raises(FingerprintMismatchError):
        GradientStore.create(store.path, layout=layout, fingerprint="cd" * 32, exist_ok=True)
    with pytest.raises(StoreExistsError, match="codec"):
        GradientStore.create(store.path, layout=layout, fingerprint=fingerprint, codec="int8", exist_ok=True)
    (store.path.parent / "other").mkdir()
    (store.path.parent / "other" / "notes.txt").write_text("x")
    with pytest.raises(StoreExistsError, match="not empty"):
        GradientStore.create(store.path.parent / "other", layout=layout, fingerprint=fingerprint)


def test_one_writer_at_a_time(make_store, vec):
    store = make_store()
    with store.writer() as w:
        w.append(["a"], vec(["a"]))
        with pytest.raises(StoreLockedError, match="writer.lock"), store.writer(lock_timeout_s=0.1):
            pass
    store.append(["b"], vec(["b"]))  # the lock is free again
    assert store.ids() == ["a", "b"]


def test_a_reader_sees_rows_committed_through_another_handle(make_store, vec):
    store = make_store()
    store.append(["a"], vec(["a"]))
    reader = GradientStore.open(store.path)
    try:
        assert reader.sum(["a", "b"]).missing_ids == ["b"]
        store.append(["b"], vec(["b"]))  # a new shard the reader has never seen
        assert reader.sum(["a", "b"]).found_ids == ["a", "b"]
        assert len(reader) == 2
    finally:
        reader.close()


def test_concurrent_readers_while_a_writer_appends(make_store, vec):
    store = make_store(codec="fp32", rows_per_shard=5)
    store.append(_ids(10), vec(_ids(10)))
    expected = vec(["doc-1", "doc-4", "doc-9"]).sum(0)
    errors: list[BaseException] = []

    def read() -> None:
        try:
            for _ in range(50):
                vector, found, missing = store.sum(["doc-1", "doc-4", "doc-9"])
                assert found == ["doc-1", "doc-4", "doc-9"] and not missing
                assert torch.allclose(vector, expected, atol=1e-6)
        except BaseException as e:  # reported to the main thread
            errors.append(e)

    threads = [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    for k in range(5):
        store.append(_ids(3, f"new{k}"), vec(_ids(3, f"new{k}")))
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert len(store) == 25


def test_lru_cache_respects_its_byte_budget(make_store, vec):
    store = make_store(cache_bytes=3 * 2000)  # three bf16 rows of D = 1000
    store.append(_ids(6), vec(_ids(6)))
    store.sum(_ids(6))
    stats = store.cache_stats()
    assert stats["rows"] == 3 and stats["bytes"] <= 3 * 2000 and stats["misses"] == 6
    store.sum(["doc-5"])  # most recent: still cached
    assert store.cache_stats()["hits"] == 1
    store.sum(["doc-0"])  # evicted long ago
    assert store.cache_stats()["misses"] == 7
    store.clear_cache()
    assert store.cache_stats()["rows"] == 0


def test_closed_store_raises(make_store):
    store = make_store()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.sum(["a"])


def test_a_large_batch_is_encoded_in_steps_and_split_into_shards(make_store, vec):
    store = make_store(codec="int8", rows_per_shard=40)
    ids = _ids(150)
    vectors = vec(ids)
    bad = vectors.clone()
    bad[130, 0] = float("inf")  # past the first encode step of 64 rows
    with pytest.raises(InvalidAppendError, match="doc-130"):
        store.append(ids, bad)
    assert store.append(ids, vectors) == 150
    assert store.info()["shards"] == 4  # 40 + 40 + 40 + 30
    got = store.get(ids)
    worst = max(float((got[pid] - vectors[i]).norm() / vectors[i].norm()) for i, pid in enumerate(ids))
    assert worst < 0.02


@pytest.mark.parametrize(("codec", "tol"), [("fp32", 1e-6), ("bf16", 2**-8), ("int8", 0.02)])
def test_weighted_sum_weights_each_row_in_the_same_op(make_store, vec, codec, tol):
    store = make_store(codec=codec, rows_per_shard=3)
    ids = _ids(5)
    store.append(ids, vec(ids))
    weights = [2.5, 0.0, 0.25, -1.0]
    vector, found, missing = store.sum(["doc-4", "doc-0", "nope", "doc-2"], weights=weights)
    rows = vec(["doc-4", "doc-0", "doc-2"])
    expected = 2.5 * rows[0] + 0.0 * rows[1] - 1.0 * rows[2]   # the missing id's weight is unused
    assert found == ["doc-4", "doc-0", "doc-2"] and missing == ["nope"]
    assert float((vector - expected).norm() / expected.norm()) < tol
    assert torch.equal(store.sum(ids, weights=[1.0] * 5).vector, store.sum(ids).vector)
    with pytest.raises(ValueError, match="2 weights given for 3 ids"):
        store.sum(ids[:3], weights=[1.0, 2.0])


@pytest.mark.parametrize("codec", ["fp32", "bf16"])
def test_several_rows_summed_chunk_by_chunk_equal_row_by_row_bit_for_bit(codec):
    from gradient_store.codecs import SUM_CHUNK, get_codec

    c = get_codec(codec)
    dim = 2 * SUM_CHUNK + 17                                     # crosses chunk edges, a ragged last chunk
    generator = torch.Generator().manual_seed(0)
    rows = [c.encode(torch.randn(1, dim, generator=generator)) for _ in range(3)]
    rows = [(g[0], None) for g, _ in rows]
    weights = [0.7, -1.3, 2.0]
    together, one_by_one = torch.zeros(dim), torch.zeros(dim)
    c.sum_into(together, rows, weights)
    for (row, scales), weight in zip(rows, weights):
        c.add_into(one_by_one, row, scales, weight=weight)
    assert torch.equal(together, one_by_one)


def test_rows_are_checked_views_of_the_shard_map_not_copies(make_store, vec):
    """A row is read as a view of its shard's memory map (its bytes stay in the page cache); a store
    closes while a row read from it is still referenced, and that row stays readable."""
    store = make_store(codec="bf16", cache_bytes=0)              # no cache: every read goes to the shard
    store.append(_ids(3), vec(_ids(3)))
    first = store._fetch(["doc-1"], "raise")[0]["doc-1"][0]
    again = store._fetch(["doc-1"], "raise")[0]["doc-1"][0]
    assert first.data_ptr() == again.data_ptr()                  # the same mapped bytes, read twice
    expected = vec(["doc-1"])[0].to(torch.bfloat16)
    assert torch.equal(first, expected)
    store.close()                                               # the map outlives the handle for `first`
    assert torch.equal(first, expected)


def test_prefetch_reads_rows_into_the_cache_for_the_next_sum(make_store, vec):
    store = make_store()
    store.append(_ids(4), vec(_ids(4)))
    assert store.prefetch(["doc-1", "nope", "doc-3"]) == 2                # the missing id is left for the sum
    assert store.cache_stats()["rows"] == 2
    misses = store.cache_stats()["misses"]
    vector, found, missing = store.sum(["doc-1", "nope", "doc-3"])
    assert store.cache_stats()["misses"] == misses and store.cache_stats()["hits"] == 2   # both from the cache
    assert found == ["doc-1", "doc-3"] and missing == ["nope"]
    assert torch.equal(vector, store.sum(["doc-1", "doc-3"]).vector)
    uncached = make_store(name="uncached", cache_bytes=0)
    uncached.append(_ids(1), vec(_ids(1)))
    assert uncached.prefetch(["doc-0"]) == 0                              # no cache: nothing to keep


@pytest.mark.parametrize("codec", ["fp32", "bf16", "int8"])
def test_rows_of_an_odd_width_read_as_views_in_every_codec(tmp_path, codec):
    """A row's view starts wherever its row starts in the shard: an odd width must still give aligned
    float views (the int8 scales after an odd number of bytes included)."""
    dim = 1001
    store = GradientStore.create(tmp_path / "odd", layout=[{"name": "w", "shape": [dim], "offset": 0}],
                                 fingerprint="f" * 64, codec=codec, rows_per_shard=3)
    vectors = torch.randn(5, dim, generator=torch.Generator().manual_seed(1))
    store.append([f"r{i}" for i in range(5)], vectors)
    weights = [1.0, 2.0, 3.0, 4.0, 5.0]
    summed = store.sum([f"r{i}" for i in range(5)], weights=weights).vector
    expected = (vectors * torch.tensor(weights)[:, None]).sum(0)
    assert float((summed - expected).norm() / expected.norm()) < (1e-6 if codec == "fp32" else 0.02)
    store.close()
