"""How a float32 gradient row is stored on disk: `fp32`, `bf16` (default), `int8` with per-block scales,
or `lowrank4`: each LoRA tensor's rank-4 approximation as int8 factors.

A codec turns a batch of rows `[n, D]` float32 into the tensors a shard holds (`gradients [n, width]`
and, for int8 and lowrank4, `scales [n, n_scales]`) and adds one stored row back into a float32
accumulator. Summing never materialises a decoded copy for fp32/bf16: `out.add_(row)` promotes on the
fly. `width` is D for the element-wise codecs and the factors' length for lowrank4, which needs the
store's parameter layout (`Codec.for_layout`) to know each tensor's shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from gradient_store.errors import UnknownCodecError

__all__ = [
    "Codec",
    "LowRankCodec",
    "CODECS",
    "get_codec",
    "zeros_f32",
    "DEFAULT_CODEC",
    "INT8_BLOCK_SIZE",
    "LOWRANK_RANK",
    "ADD_CHUNK",
    "SUM_CHUNK",
]

DEFAULT_CODEC = "bf16"
# Element-wise torch ops on fewer than 32768 (at::internal::GRAIN_SIZE) elements run on the calling
# thread; a whole-row op on D = 760K fans out to the OpenMP pool. On a busy box (the model generating
# on the same cores) waiting for those threads cost ~30 ms per row add on the 2-core test machine,
# against ~0.4 ms in chunks. A sum of k rows is memory-bound anyway: one thread saturates it.
ADD_CHUNK = 16384
# `sum_into`: elements of `out` per chunk while several rows are added into it (256 KB of float32:
# the chunk stays in L2 across the rows; still one thread, as ADD_CHUNK's ops).
SUM_CHUNK = 65536
# 256 divides every LoRA tensor of the bundled preset (r*576 and r*1536 for r=8), so no int8 block
# straddles two tensors whose gradients differ in scale.
INT8_BLOCK_SIZE = 256
# One passage's LoRA gradient is close to low rank per tensor (on the shipped learner the top 4
# singular values hold a median 97-99 % of a tensor's energy): rank 4 with int8 factors is 568,128
# bytes per passage for the shipped learner (D = 2,230,272) against 4,460,544 in bf16 (docs/benchmarks.md).
LOWRANK_RANK = 4


@dataclass(frozen=True)
class Codec:
    """One storage format for gradient rows.

    Args:
        name: `fp32`, `bf16`, `int8` or `lowrank4` (a `LowRankCodec`).
        dtype: torch dtype of the stored `gradients` tensor.
        safetensors_dtype: the same dtype as safetensors spells it (`F32`, `BF16`, `I8`).
        block_size: int8 only: elements per scale (one float32 scale per block); 0 for the others.
    """

    name: str
    dtype: torch.dtype
    safetensors_dtype: str
    block_size: int = 0

    @property
    def has_scales(self) -> bool:
        return self.block_size > 0

    def n_blocks(self, dim: int) -> int:
        """Scales per row (int8), 0 for codecs without scales."""
        return -(-dim // self.block_size) if self.block_size else 0

    def width(self, dim: int) -> int:
        """Values of the stored `gradients` tensor per row of D values (D for the element-wise codecs)."""
        return dim

    def n_scales(self, dim: int) -> int:
        """float32 values of the stored `scales` tensor per row (0: no `scales` tensor)."""
        return self.n_blocks(dim)

    def row_bytes(self, dim: int) -> int:
        """Bytes one row takes on disk (gradients plus scales)."""
        return self.width(dim) * self.dtype.itemsize + self.n_scales(dim) * 4

    def for_layout(self, layout: list[dict]) -> Codec:
        """This codec for a store with this parameter layout (the element-wise codecs ignore it)."""
        return self

    def encode(self, vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Encode float32 rows.

        Args:
            vectors: `[n, D]` float32 (any float dtype is converted first).

        Returns:
            `(gradients [n, D] in self.dtype, scales [n, n_blocks] float32 or None)`, contiguous, on CPU.
        """
        vectors = vectors.detach().to("cpu", torch.float32)
        if not self.has_scales:
            return vectors.to(self.dtype).contiguous(), None
        n, dim = vectors.shape
        n_blocks = self.n_blocks(dim)
        padded = torch.zeros(n, n_blocks * self.block_size, dtype=torch.float32)
        padded[:, :dim] = vectors
        blocks = padded.view(n, n_blocks, self.block_size)  # (n, nb, bs)
        scales = blocks.abs().amax(dim=2) / 127.0  # (n, nb)
        safe = torch.where(scales > 0, scales, torch.ones_like(scales))  # all-zero block -> q = 0
        q = torch.round(blocks / safe.unsqueeze(2)).clamp_(-127, 127).to(torch.int8)
        return q.view(n, -1)[:, :dim].contiguous(), scales.contiguous()

    def decode(self, row: torch.Tensor, scales: torch.Tensor | None = None) -> torch.Tensor:
        """One stored row `[D]` (plus its scales `[n_blocks]` for int8) as a new float32 `[D]` tensor."""
        out = zeros_f32(row.shape[0])
        self.add_into(out, row, scales)
        return out

    def sum_into(self, out: torch.Tensor, rows: list[tuple[torch.Tensor, torch.Tensor | None]],
                 weights: list[float]) -> None:
        """`out += sum_j weights[j] * decode(rows[j])` in place; `out` is float32 `[D]`.

        For the element-wise float codecs the loop runs over chunks of `out` and, inside, over the rows:
        each chunk of `out` stays in cache while every row is added into it (one pass over `out`
        instead of one per row: 2x faster for three bf16 rows of D = 2.2 M on the 2-core box,
        docs/benchmarks.md). Codecs with scales (int8, lowrank4) add row by row (`add_into`)."""
        if self.has_scales or len(rows) < 2:
            for (row, scales), weight in zip(rows, weights, strict=True):
                self.add_into(out, row, scales, weight=weight)
            return
        dim = out.shape[0]
        for i in range(0, dim, SUM_CHUNK):
            chunk = out[i : i + SUM_CHUNK]
            for (row, _), weight in zip(rows, weights, strict=True):
                chunk.add_(row[i : i + SUM_CHUNK], alpha=weight)  # promotes bf16, no copy

    def add_into(self, out: torch.Tensor, row: torch.Tensor, scales: torch.Tensor | None = None,
                 weight: float = 1.0) -> None:
        """`out += weight * decode(row)` in place; `out` is float32 `[D]`. Runs on the calling thread
        (see ADD_CHUNK). The weight rides in the same op (`add_`'s alpha, or the int8 scales)."""
        dim = row.shape[0]
        if not self.has_scales:
            for i in range(0, dim, ADD_CHUNK):
                out[i : i + ADD_CHUNK].add_(row[i : i + ADD_CHUNK], alpha=weight)  # promotes bf16, no copy
            return
        assert scales is not None, "int8 rows need their scales"
        if weight != 1.0:
            scales = scales * weight  # (n_blocks,): far smaller than the row
        bs = self.block_size
        step = max(bs, ADD_CHUNK // bs * bs)  # whole blocks per chunk
        full = dim // bs * bs
        for i in range(0, full, step):
            j = min(i + step, full)
            x = row[i:j].to(torch.float32).view(-1, bs)  # (blocks in chunk, bs)
            x.mul_(scales[i // bs : j // bs].unsqueeze(1))
            out[i:j].add_(x.view(-1))
        if full < dim:  # the last, partial block
            out[full:].add_(row[full:].to(torch.float32).mul_(scales[-1]))


def zeros_f32(dim: int) -> torch.Tensor:
    """A float32 zero vector; numpy's calloc-backed zeros avoid a multi-threaded `fill_` (see ADD_CHUNK)."""
    return torch.from_numpy(np.zeros(dim, dtype=np.float32))


@dataclass(frozen=True)
class LowRankCodec(Codec):
    """Each LoRA tensor `[m, n]` of a row as its best rank-`rank` approximation, int8 factors.

    Per tensor, the truncated SVD `M ≈ U_r diag(S_r) V_r^T` is stored as `P = U_r diag(S_r)` `[m, r]` and
    `Q = V_r^T` `[r, n]`, each quantized to int8 with one scale per rank component (P's column j: max |P[:, j]|
    / 127, Q's row j likewise). Since component j is `P[:, j] Q[j, :]`, one float32 scale per component (the
    product of the two) decodes it: `M ≈ (int8 P * c) @ int8 Q`. A row's `gradients` is the tensors' P then
    Q, in layout order; its `scales` the tensors' `c`. Tensors with fewer than `rank` rows or columns keep
    `min(m, n)` components (exact up to int8); a 1-D tensor is one row `[1, n]`, and one of 3 or more
    dimensions is viewed as `[shape[0], rest]`.

    Args:
        rank: components kept per tensor.
        shapes: the bound layout's tensors as `(offset, m, n)`; empty until `for_layout`.
    """

    rank: int = LOWRANK_RANK
    shapes: tuple[tuple[int, int, int], ...] = ()

    @property
    def has_scales(self) -> bool:
        return True

    def _components(self, m: int, n: int) -> int:
        return min(self.rank, m, n)

    def _bound(self) -> None:
        if not self.shapes:
            raise ValueError(f"codec {self.name} needs the store's parameter layout: use `get_codec(..., layout=)`")

    def _dim(self) -> int:
        offset, m, n = self.shapes[-1]
        return offset + m * n

    def width(self, dim: int) -> int:
        self._bound()
        return sum(self._components(m, n) * (m + n) for _, m, n in self.shapes)

    def n_scales(self, dim: int) -> int:
        self._bound()
        return sum(self._components(m, n) for _, m, n in self.shapes)

    def for_layout(self, layout: list[dict]) -> LowRankCodec:
        shapes = []
        for entry in layout:
            size = math.prod(entry["shape"])
            m = int(entry["shape"][0]) if len(entry["shape"]) > 1 else 1
            shapes.append((int(entry["offset"]), m, size // m))
        return replace(self, shapes=tuple(shapes))

    def encode(self, vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`[n, D]` float32 rows -> `(int8 factors [n, width], float32 scales [n, n_scales])`."""
        self._bound()
        vectors = vectors.detach().to("cpu", torch.float32)
        rows = vectors.shape[0]
        if vectors.shape[1] != self._dim():
            raise ValueError(f"rows have {vectors.shape[1]} values, the layout {self._dim()}")
        factors, scales = [], []
        for offset, m, n in self.shapes:
            r = self._components(m, n)
            tensors = vectors[:, offset : offset + m * n].reshape(rows, m, n)  # (rows, m, n)
            u, s, vh = torch.linalg.svd(tensors, full_matrices=False)
            p = u[:, :, :r] * s[:, None, :r]  # (rows, m, r)
            q = vh[:, :r, :]  # (rows, r, n)
            p_scale = p.abs().amax(dim=1) / 127.0  # (rows, r)
            q_scale = q.abs().amax(dim=2) / 127.0  # (rows, r)
            p_int = torch.round(p / _nonzero(p_scale)[:, None, :]).clamp_(-127, 127).to(torch.int8)
            q_int = torch.round(q / _nonzero(q_scale)[:, :, None]).clamp_(-127, 127).to(torch.int8)
            factors += [p_int.reshape(rows, -1), q_int.reshape(rows, -1)]
            scales.append(p_scale * q_scale)
        return torch.cat(factors, dim=1).contiguous(), torch.cat(scales, dim=1).contiguous()

    def decode(self, row: torch.Tensor, scales: torch.Tensor | None = None) -> torch.Tensor:
        self._bound()
        out = zeros_f32(self._dim())
        self.add_into(out, row, scales)
        return out

    def add_into(self, out: torch.Tensor, row: torch.Tensor, scales: torch.Tensor | None = None,
                 weight: float = 1.0) -> None:
        """`out += weight * decode(row)`: per tensor one `[m, r] @ [r, n]` product added in place (the
        weight rides in the scales). Each op stays on the calling thread (the small element-wise ops are
        under GRAIN_SIZE, and BLAS runs these thin products single-threaded). One batched product per
        group of same-shaped tensors was 2.8x faster with one torch thread but 1.8x slower with two on
        the busy 2-core box: `baddbmm` fans its batch out to the OpenMP pool (docs/benchmarks.md)."""
        self._bound()
        assert scales is not None, f"{self.name} rows need their scales"
        if weight != 1.0:
            scales = scales * weight
        at, sc = 0, 0
        for offset, m, n in self.shapes:
            r = self._components(m, n)
            p = row[at : at + m * r].to(torch.float32).view(m, r).mul_(scales[sc : sc + r])  # (m, r)
            q = row[at + m * r : at + r * (m + n)].to(torch.float32).view(r, n)  # (r, n)
            out[offset : offset + m * n].view(m, n).addmm_(p, q)
            at += r * (m + n)
            sc += r


def _nonzero(scale: torch.Tensor) -> torch.Tensor:
    """`scale` with zeros replaced by 1 (an all-zero factor quantizes to 0 whatever the divisor)."""
    return torch.where(scale > 0, scale, torch.ones_like(scale))


CODECS: dict[str, Codec] = {
    "fp32": Codec("fp32", torch.float32, "F32"),
    "bf16": Codec("bf16", torch.bfloat16, "BF16"),
    "int8": Codec("int8", torch.int8, "I8", block_size=INT8_BLOCK_SIZE),
    f"lowrank{LOWRANK_RANK}": LowRankCodec(f"lowrank{LOWRANK_RANK}", torch.int8, "I8", rank=LOWRANK_RANK),
}


def get_codec(name: str, block_size: int | None = None, layout: list[dict] | None = None) -> Codec:
    """The codec called `name`; `block_size` overrides int8's block size (as read from a manifest); `layout`
    (a store's parameter layout) binds the codecs that need it (lowrank4).

    Raises:
        UnknownCodecError: unknown codec name (the message lists the known ones).
    """
    if name not in CODECS:
        raise UnknownCodecError(name, sorted(CODECS))
    codec = CODECS[name]
    if codec.block_size and block_size and block_size != codec.block_size:
        codec = Codec(codec.name, codec.dtype, codec.safetensors_dtype, block_size=int(block_size))
    return codec.for_layout(layout) if layout is not None else codec
