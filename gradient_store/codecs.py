"""How a float32 gradient row is stored on disk: `fp32`, `bf16` (default) or `int8` with per-block scales.

A codec turns a batch of rows `[n, D]` float32 into the tensors a shard holds (`gradients` and, for
int8, `scales`) and adds one stored row back into a float32 accumulator. Summing never materialises
a decoded copy for fp32/bf16: `out.add_(row)` promotes on the fly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from gradient_store.errors import UnknownCodecError

__all__ = ["Codec", "CODECS", "get_codec", "zeros_f32", "DEFAULT_CODEC", "INT8_BLOCK_SIZE", "ADD_CHUNK"]

DEFAULT_CODEC = "bf16"
# Element-wise torch ops on fewer than 32768 (at::internal::GRAIN_SIZE) elements run on the calling
# thread; a whole-row op on D = 760K fans out to the OpenMP pool. On a busy box (the model generating
# on the same cores) waiting for those threads cost ~30 ms per row add on the 2-core test machine,
# against ~0.4 ms in chunks. A sum of k rows is memory-bound anyway: one thread saturates it.
ADD_CHUNK = 16384
# 256 divides every LoRA tensor of the bundled preset (r*576 and r*1536 for r=8), so no int8 block
# straddles two tensors whose gradients differ in scale.
INT8_BLOCK_SIZE = 256


@dataclass(frozen=True)
class Codec:
    """One storage format for gradient rows.

    Args:
        name: `fp32`, `bf16` or `int8`.
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

    def row_bytes(self, dim: int) -> int:
        """Bytes one row takes on disk (gradients plus scales)."""
        return dim * self.dtype.itemsize + self.n_blocks(dim) * 4

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


CODECS: dict[str, Codec] = {
    "fp32": Codec("fp32", torch.float32, "F32"),
    "bf16": Codec("bf16", torch.bfloat16, "BF16"),
    "int8": Codec("int8", torch.int8, "I8", block_size=INT8_BLOCK_SIZE),
}


def get_codec(name: str, block_size: int | None = None) -> Codec:
    """The codec called `name`; `block_size` overrides int8's block size (as read from a manifest).

    Raises:
        UnknownCodecError: unknown codec name (the message lists the known ones).
    """
    if name not in CODECS:
        raise UnknownCodecError(name, sorted(CODECS))
    codec = CODECS[name]
    if codec.has_scales and block_size and block_size != codec.block_size:
        codec = Codec(codec.name, codec.dtype, codec.safetensors_dtype, block_size=int(block_size))
    return codec
