"""The `lowrank4` codec: each LoRA tensor of a row as its rank-4 approximation with int8 factors."""

from __future__ import annotations

import json
import logging
import struct

import pytest
import torch
from safetensors import safe_open

from gradient_store import CODECS, GradientStore, get_codec

# The shipped learner's four LoRA shapes (r = 16), one layer: 67,584 values, 17,152 factor bytes at rank 4.
LORA_LAYOUT = [
    {"name": "layers.0.mlp.up_proj.lora_A", "shape": [16, 576], "offset": 0},
    {"name": "layers.0.mlp.up_proj.lora_B", "shape": [1536, 16], "offset": 9216},
    {"name": "layers.0.mlp.down_proj.lora_A", "shape": [16, 1536], "offset": 33792},
    {"name": "layers.0.mlp.down_proj.lora_B", "shape": [576, 16], "offset": 58368},
]
LORA_DIM = 67_584
FINGERPRINT = "cd" * 32


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _low_rank_rows(n: int, layout: list[dict], rank: int = 4, noise: float = 0.0, seed: int = 0) -> torch.Tensor:
    """`[n, D]` rows whose every tensor is a rank-`rank` product (plus `noise` relative Gaussian noise)."""
    g = torch.Generator().manual_seed(seed)
    parts = []
    for entry in layout:
        m, k = entry["shape"][0], entry["shape"][1] if len(entry["shape"]) > 1 else 1
        t = torch.randn(n, m, rank, generator=g) @ torch.randn(n, rank, k, generator=g) * 1e-3
        t += noise * t.std() * torch.randn(t.shape, generator=g)
        parts.append(t.reshape(n, -1))
    return torch.cat(parts, dim=1)


def _truncated(x: torch.Tensor, layout: list[dict], rank: int) -> torch.Tensor:
    """The best rank-`rank` approximation of every tensor of row `x` (Eckart–Young), computed directly."""
    out = torch.empty_like(x)
    for entry in layout:
        m, k = entry["shape"]
        u, s, vh = torch.linalg.svd(x[entry["offset"] : entry["offset"] + m * k].view(m, k).double())
        out[entry["offset"] : entry["offset"] + m * k] = ((u[:, :rank] * s[:rank]) @ vh[:rank]).reshape(-1).float()
    return out


@pytest.fixture
def codec():
    return get_codec("lowrank4", layout=LORA_LAYOUT)


def test_low_rank_tensors_round_trip_to_int8_precision(codec):
    x = _low_rank_rows(3, LORA_LAYOUT)
    data, scales = codec.encode(x)
    assert data.dtype == torch.int8 and data.shape == (3, 4 * (592 + 1552 + 1552 + 592))
    assert scales.dtype == torch.float32 and scales.shape == (3, 16)
    for i in range(3):
        y = codec.decode(data[i], scales[i])
        assert y.dtype == torch.float32 and y.shape == (LORA_DIM,)
        assert _rel(y, x[i]) < 0.02


def test_full_rank_tensors_decode_to_their_best_rank_4_approximation(codec):
    x = _low_rank_rows(2, LORA_LAYOUT, rank=16, seed=1)  # every tensor full rank (16)
    data, scales = codec.encode(x)
    for i in range(2):
        best = _truncated(x[i], LORA_LAYOUT, 4)
        y = codec.decode(data[i], scales[i])
        assert _rel(y, best) < 0.02  # the truncation is the SVD's, up to the int8 factors
        assert _rel(y, x[i]) > 0.3  # and rank 16 -> 4 really drops information: the bound is honest


def test_weighted_add_into_equals_weight_times_decode(codec):
    x = _low_rank_rows(3, LORA_LAYOUT, noise=0.1)
    data, scales = codec.encode(x)
    out = torch.zeros(LORA_DIM)
    for i, weight in enumerate([2.5, -1.0, 0.25]):
        codec.add_into(out, data[i], scales[i], weight=weight)
    expected = 2.5 * codec.decode(data[0], scales[0]) - codec.decode(data[1], scales[1]) + 0.25 * codec.decode(
        data[2], scales[2])
    # float32 rounding of the two orders of summation, near-cancelling entries included: ~1e-7 of the row's scale
    assert torch.allclose(out, expected, rtol=1e-5, atol=1e-6 * float(expected.abs().max()))
    assert torch.equal(scales, codec.encode(x)[1])  # the weight never touches the stored scales


def test_zero_rows_and_thin_tensors(codec):
    layout = [{"name": "bias", "shape": [7], "offset": 0}, {"name": "w", "shape": [2, 9], "offset": 7},
              {"name": "conv", "shape": [3, 2, 2], "offset": 25}]
    thin = get_codec("lowrank4", layout=layout)
    x = torch.randn(2, 37)
    x[1] = 0.0
    data, scales = thin.encode(x)
    # [7] is one row (1 component), [2, 9] keeps 2, [3, 2, 2] is [3, 4] and keeps 3: each exact up to int8
    assert data.shape == (2, 1 * 8 + 2 * 11 + 3 * 7) and scales.shape == (2, 6)
    assert _rel(thin.decode(data[0], scales[0]), x[0]) < 0.02
    assert torch.equal(thin.decode(data[1], scales[1]), torch.zeros(37))


def test_the_codec_needs_the_layout():
    with pytest.raises(ValueError, match="needs the store's parameter layout"):
        CODECS["lowrank4"].encode(torch.zeros(1, 10))
    with pytest.raises(ValueError, match="the layout 67584"):
        get_codec("lowrank4", layout=LORA_LAYOUT).encode(torch.zeros(1, 10))


def test_store_round_trip_bytes_on_disk_and_plain_safetensors(tmp_path):
    x = _low_rank_rows(5, LORA_LAYOUT, noise=0.05)
    ids = [f"d{i}" for i in range(5)]
    with GradientStore.create(tmp_path / "s", layout=LORA_LAYOUT, fingerprint=FINGERPRINT, codec="lowrank4",
                              rows_per_shard=3) as store:
        store.append(ids, x)
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["codec"] == "lowrank4" and manifest["int8_block_size"] == 0 and manifest["dim"] == LORA_DIM

    with GradientStore.open(tmp_path / "s", expect_fingerprint=FINGERPRINT) as store:
        assert store.codec.name == "lowrank4" and store.codec.row_bytes(LORA_DIM) == 17_152 + 16 * 4
        vector, found, missing = store.sum(["d4", "nope", "d0"], weights=[2.0, 1.0, -0.5])
        assert found == ["d4", "d0"] and missing == ["nope"]
        assert _rel(vector, 2.0 * x[4] - 0.5 * x[0]) < 0.08  # the noise is full rank: rank 4 drops it
        assert store.verify().ok
        info = store.info()

    # bytes per row on disk: every shard is its header plus rows * 17,216 (bf16: 135,168)
    shards = sorted((tmp_path / "s" / "shards").glob("shard-*.safetensors"))
    assert [s.name for s in shards] == ["shard-00000.safetensors", "shard-00001.safetensors"]
    for shard, rows in zip(shards, [3, 2], strict=True):
        (header,) = struct.unpack("<Q", shard.read_bytes()[:8])
        assert shard.stat().st_size == 8 + header + rows * 17_216
        with safe_open(shard, framework="pt") as f:
            assert f.get_tensor("gradients").shape == (rows, 17_152) and f.get_tensor("gradients").dtype == torch.int8
            assert f.get_tensor("scales").shape == (rows, 16)
    assert info["row_bytes"] == 17_216 and info["codec"] == "lowrank4"


def test_a_flipped_factor_or_scale_byte_is_caught(tmp_path, caplog):
    x = _low_rank_rows(3, LORA_LAYOUT)
    with GradientStore.create(tmp_path / "s", layout=LORA_LAYOUT, fingerprint=FINGERPRINT, codec="lowrank4") as store:
        store.append(["a", "b", "c"], x)
    (shard,) = (tmp_path / "s" / "shards").glob("shard-*.safetensors")
    data = bytearray(shard.read_bytes())
    (header,) = struct.unpack("<Q", data[:8])
    start = 8 + header
    data[start + 1 * 17_152 + 100] ^= 0xFF  # inside b's factors
    data[start + 3 * 17_152 + 2 * 64 + 5] ^= 0xFF  # inside c's scales (after the 3 rows of factors)
    shard.write_bytes(bytes(data))
    with GradientStore.open(tmp_path / "s") as store:
        report = store.verify()
        assert not report.ok and report.corrupt_ids == ["b", "c"]
        with caplog.at_level(logging.WARNING, logger="regrad.gradient_store"):
            result = store.sum(["a", "b", "c"])
        assert result.found_ids == ["a"] and result.corrupt_ids == ["b", "c"]
        assert _rel(result.vector, x[0]) < 0.02


def test_the_cli_offers_every_store_codec():
    from cli.commands.encode import CODEC_CHOICES

    assert sorted(CODEC_CHOICES) == sorted(CODECS)
