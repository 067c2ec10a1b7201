"""Flipped bytes and missing files: `verify` finds them, the reader refuses exactly the damaged rows."""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import pytest
import torch

from gradient_store import CorruptShardError, GradientStore


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _row_offset(path: Path, row: int, row_bytes: int) -> int:
    """Byte offset of the first byte of `row` in a shard (after the 8-byte length and the JSON header)."""
    (header_len,) = struct.unpack("<Q", path.read_bytes()[:8])
    return 8 + header_len + row * row_bytes


def _store_with_two_shards(make_store, vec, codec: str = "bf16") -> GradientStore:
    store = make_store(codec=codec, rows_per_shard=3)
    ids = [f"doc-{i}" for i in range(6)]  # doc-0..2 in shard 0, doc-3..5 in shard 1
    store.append(ids, vec(ids))
    return store


@pytest.mark.parametrize("codec", ["bf16", "int8"])
def test_a_flipped_byte_is_found_by_verify_and_by_the_reader(make_store, vec, codec, caplog):
    store = _store_with_two_shards(make_store, vec, codec)
    shard = store.path / "shards" / "shard-00000.safetensors"
    _flip(shard, _row_offset(shard, 1, 1000 * store.codec.dtype.itemsize) + 17)  # inside doc-1's row

    report = store.verify()
    assert not report.ok
    assert report.corrupt_shards == ["shard-00000.safetensors"] and report.corrupt_ids == ["doc-1"]
    assert "shard-00000.safetensors" in report.errors[0] and "sha256" in report.errors[0]

    # The service's path: the corrupt row counts as missing, every other row (same shard too) still serves.
    with caplog.at_level(logging.WARNING, logger="regrad.gradient_store"):
        result = store.sum(["doc-0", "doc-1", "doc-2", "doc-4"])
    assert result.found_ids == ["doc-0", "doc-2", "doc-4"]
    assert result.missing_ids == ["doc-1"] and result.corrupt_ids == ["doc-1"]
    expected = vec(["doc-0", "doc-2", "doc-4"]).sum(0)
    assert float((result.vector - expected).norm() / expected.norm()) < 0.02
    assert "shard-00000.safetensors" in caplog.text

    with pytest.raises(CorruptShardError) as err:
        store.sum(["doc-1", "doc-4"], on_corrupt="raise")
    assert err.value.shard == "shard-00000.safetensors" and err.value.ids == ["doc-1"]
    assert "regrad store verify" in str(err.value)
    assert set(store.get(["doc-1", "doc-2"])) == {"doc-2"}


def test_a_corrupt_scale_is_caught_too(make_store, vec):
    store = _store_with_two_shards(make_store, vec, "int8")
    shard = store.path / "shards" / "shard-00001.safetensors"
    scales_start = _row_offset(shard, 3, 1000)  # int8 gradients: 3 rows of 1000 bytes, then the scales
    _flip(shard, scales_start + 2 * 16 + 1)  # row 2's scales (4 float32 each) -> doc-5
    assert store.verify().corrupt_ids == ["doc-5"]
    assert store.sum(["doc-5", "doc-3"]).corrupt_ids == ["doc-5"]


def test_a_damaged_header_takes_out_only_its_shard(make_store, vec):
    store = _store_with_two_shards(make_store, vec)
    shard = store.path / "shards" / "shard-00001.safetensors"
    _flip(shard, 12)  # inside the JSON header
    reader = GradientStore.open(store.path)
    try:
        result = reader.sum(["doc-0", "doc-3", "doc-4"])
        assert result.found_ids == ["doc-0"] and result.corrupt_ids == ["doc-3", "doc-4"]
        with pytest.raises(CorruptShardError, match="shard-00001.safetensors"):
            reader.get(["doc-3"], on_corrupt="raise")
    finally:
        reader.close()
    report = store.verify()
    assert not report.ok and sorted(report.corrupt_ids) == ["doc-3", "doc-4", "doc-5"]


def test_a_missing_shard_file(make_store, vec):
    store = _store_with_two_shards(make_store, vec)
    (store.path / "shards" / "shard-00000.safetensors").unlink()
    reader = GradientStore.open(store.path)
    try:
        result = reader.sum(["doc-0", "doc-5"])
        assert result.found_ids == ["doc-5"] and result.missing_ids == ["doc-0"]
    finally:
        reader.close()
    report = store.verify()
    assert not report.ok and "file is missing" in report.summary()


def test_damage_in_a_garbage_row_fails_verify_but_not_the_reader(make_store, vec):
    store = make_store(rows_per_shard=2)
    store.append(["a", "b"], vec(["a", "b"]))
    store.append(["a"], vec(["new"]), on_duplicate="replace")  # row 0 of shard 0 is garbage now
    shard = store.path / "shards" / "shard-00000.safetensors"
    _flip(shard, _row_offset(shard, 0, 2000) + 3)
    report = store.verify()
    assert not report.ok and report.corrupt_ids == [] and "garbage" in report.errors[0]
    assert store.sum(["a", "b"]).found_ids == ["a", "b"]
    assert torch.allclose(store.get(["a"])["a"], vec(["new"])[0], rtol=1e-2, atol=1e-6)
