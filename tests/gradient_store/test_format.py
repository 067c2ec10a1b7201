"""On-disk format and codecs: manifest, SQLite index, shards readable by any safetensors reader."""

from __future__ import annotations

import hashlib
import json
import sqlite3

import pytest
import torch
from safetensors import safe_open

from gradient_store import CODECS, FORMAT_VERSION, GradientStore, StoreFormatError, UnknownCodecError, get_codec
from gradient_store.manifest import normalize_layout


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize(("codec", "bound"), [("fp32", 0.0), ("bf16", 2**-8), ("int8", 0.02)])
def test_codec_round_trip_error_is_bounded(codec, bound):
    x = torch.randn(5, 1000) * torch.logspace(-6, 0, 1000)  # values spanning 6 decades, like real gradients
    c = get_codec(codec)
    data, scales = c.encode(x)
    assert data.dtype == c.dtype and data.shape == (5, 1000)
    assert (scales is not None) == c.has_scales
    for i in range(5):
        y = c.decode(data[i], scales[i] if scales is not None else None)
        assert y.dtype == torch.float32
        assert _rel(y, x[i]) <= bound


def test_int8_zero_block_and_partial_last_block():
    c = get_codec("int8")
    x = torch.zeros(1, 1000)
    x[0, 900:] = torch.randn(100)  # first blocks all zero, last block partial (1000 % 256 = 232)
    data, scales = c.encode(x)
    assert scales.shape == (1, 4) and float(scales[0, 0]) == 0.0
    assert torch.equal(c.decode(data[0], scales[0])[:900], torch.zeros(900))
    assert _rel(c.decode(data[0], scales[0]), x[0]) < 0.01


def test_add_into_accumulates_the_decoded_rows():
    c = get_codec("int8")
    x = torch.randn(3, 1000)
    data, scales = c.encode(x)
    out = torch.zeros(1000)
    for i in range(3):
        c.add_into(out, data[i], scales[i])
    expected = sum(c.decode(data[i], scales[i]) for i in range(3))
    assert torch.allclose(out, expected)
    assert torch.equal(data, c.encode(x)[0])  # adding never mutates stored rows


def test_unknown_codec_lists_the_known_ones():
    with pytest.raises(UnknownCodecError, match="bf16") as err:
        get_codec("fp8")
    assert err.value.known == sorted(CODECS)


def test_layout_must_tile_the_vector_in_order():
    entries, dim = normalize_layout(
        [{"name": "a", "shape": [2, 3], "offset": 0}, {"name": "b", "shape": [4], "offset": 6}]
    )
    assert dim == 10 and entries[1]["shape"] == [4]
    with pytest.raises(ValueError, match="offset 7, expected 6"):
        normalize_layout([{"name": "a", "shape": [2, 3], "offset": 0}, {"name": "b", "shape": [4], "offset": 7}])

    class HasToJson:
        def to_json(self):
            return [{"name": "w", "shape": [5], "offset": 0}]

    assert normalize_layout(HasToJson())[1] == 5


@pytest.mark.parametrize("codec", ["fp32", "bf16", "int8"])
def test_directory_layout_and_shards_are_plain_safetensors(make_store, vec, codec):
    store = make_store(codec=codec, rows_per_shard=4)
    ids = [f"d{i}" for i in range(6)]
    store.append(ids, vec(ids))

    manifest = json.loads((store.path / "manifest.json").read_text())
    assert manifest["format_version"] == FORMAT_VERSION
    assert manifest["fingerprint"] == store.fingerprint and manifest["codec"] == codec
    assert manifest["dim"] == 1000 and [e["name"] for e in manifest["layout"]] == [e["name"] for e in store.layout]
    assert "shards" not in manifest  # the shard list is the index's `shards` table
    with sqlite3.connect(store.path / "index.sqlite") as db:
        shards = db.execute("SELECT shard_id, name, rows, bytes, sha256 FROM shards ORDER BY shard_id").fetchall()
    assert [(name, rows) for _, name, rows, _, _ in shards] == [
        ("shard-00000.safetensors", 4),
        ("shard-00001.safetensors", 2),
    ]
    for _, name, _, size, sha in shards:
        data = (store.path / "shards" / name).read_bytes()
        assert size == len(data) and sha == hashlib.sha256(data).hexdigest()

    with sqlite3.connect(store.path / "index.sqlite") as db:
        rows = db.execute("SELECT id, shard_id, row FROM passages ORDER BY shard_id, row").fetchall()
    assert rows == [(f"d{i}", i // 4, i % 4) for i in range(6)]

    with safe_open(store.path / "shards" / "shard-00001.safetensors", framework="pt") as f:
        keys = set(f.keys())
        grads = f.get_tensor("gradients")
        assert grads.shape == (2, 1000) and grads.dtype == CODECS[codec].dtype
        scales = f.get_tensor("scales") if "scales" in keys else None
    assert keys == ({"gradients", "scales"} if codec == "int8" else {"gradients"})
    expected = vec(["d5"])[0]
    assert _rel(CODECS[codec].decode(grads[1], scales[1] if scales is not None else None), expected) < 0.01


def test_open_refuses_non_stores_and_unknown_versions(tmp_path, make_store):
    with pytest.raises(StoreFormatError, match="manifest.json is missing"):
        GradientStore.open(tmp_path)
    with pytest.raises(StoreFormatError, match="no such directory"):
        GradientStore.open(tmp_path / "nope")
    store = make_store()
    manifest = json.loads((store.path / "manifest.json").read_text())
    manifest["format_version"] = FORMAT_VERSION + 1
    (store.path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StoreFormatError, match="not supported"):
        GradientStore.open(store.path)


def test_default_shard_size_is_bounded(tmp_path, layout, fingerprint):
    big = [{"name": "w", "shape": [760320], "offset": 0}]  # the bundled preset's D
    with GradientStore.create(tmp_path / "s", layout=big, fingerprint=fingerprint) as store:
        assert store.rows_per_shard * store.codec.row_bytes(store.dim) <= 256 << 20
        assert store.rows_per_shard == (256 << 20) // (760320 * 2)
