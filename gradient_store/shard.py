"""One shard file: a plain safetensors file holding `gradients [rows, width]` (and `scales` for int8 and
lowrank4); width is D except for lowrank4 (`Codec.width`).

We write and read the safetensors layout ourselves (8-byte little-endian header length, a JSON header,
then the raw tensors) because the reader needs the byte offset of every row: a row is one contiguous
slice of the memory-mapped file, and its CRC32 is computed over exactly those bytes. Any safetensors
library still opens the files (tests check that).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import mmap
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gradient_store.codecs import Codec

__all__ = [
    "shard_name",
    "row_crcs",
    "write_shard",
    "ShardReader",
    "ShardScan",
    "scan_shard",
    "ShardHeaderError",
]

_ALIGN = 8  # safetensors pads the header so tensor data starts 8-byte aligned


class ShardHeaderError(Exception):
    """A shard's header or size does not match what the index says it holds (internal; callers wrap it)."""


def shard_name(shard_id: int) -> str:
    return f"shard-{shard_id:05d}.safetensors"


def _as_bytes(t: torch.Tensor) -> np.ndarray:
    """A uint8 numpy view of a contiguous CPU tensor (bf16 included), without copying."""
    return t.contiguous().view(torch.uint8).numpy()


def row_crcs(gradients: torch.Tensor, scales: torch.Tensor | None) -> list[int]:
    """CRC32 of each stored row: its gradient bytes, then (int8) its scale bytes."""
    g = _as_bytes(gradients).reshape(gradients.shape[0], -1)
    s = _as_bytes(scales).reshape(scales.shape[0], -1) if scales is not None else None
    out = []
    for i in range(g.shape[0]):
        crc = zlib.crc32(g[i])
        if s is not None:
            crc = zlib.crc32(s[i], crc)
        out.append(crc)
    return out


def _header(codec: Codec, rows: int, width: int, n_scales: int, metadata: dict[str, str]) -> bytes:
    grad_bytes = rows * width * codec.dtype.itemsize
    header: dict = {
        "__metadata__": metadata,
        "gradients": {
            "dtype": codec.safetensors_dtype,
            "shape": [rows, width],
            "data_offsets": [0, grad_bytes],
        },
    }
    if codec.has_scales:
        header["scales"] = {
            "dtype": "F32",
            "shape": [rows, n_scales],
            "data_offsets": [grad_bytes, grad_bytes + rows * n_scales * 4],
        }
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-(8 + len(raw)) % _ALIGN)
    return struct.pack("<Q", len(raw)) + raw


def write_shard(
    path: Path, codec: Codec, gradients: torch.Tensor, scales: torch.Tensor | None, metadata: dict[str, str]
) -> tuple[int, str]:
    """Write a shard to `path` (a temp name: the caller renames it), fsync it.

    Returns:
        `(file size in bytes, sha256 hex of the whole file)`.
    """
    rows, width = gradients.shape
    n_scales = scales.shape[1] if scales is not None else 0
    sha = hashlib.sha256()
    size = 0
    with open(path, "wb") as f:
        for chunk in (
            _header(codec, rows, width, n_scales, metadata),
            _as_bytes(gradients),
            _as_bytes(scales) if scales is not None else None,
        ):
            if chunk is None:
                continue
            sha.update(chunk)
            f.write(chunk)
            size += len(chunk) if isinstance(chunk, bytes) else chunk.nbytes
        f.flush()
        os.fsync(f.fileno())
    return size, sha.hexdigest()


@dataclass(frozen=True)
class _Layout:
    """Where the tensors sit inside a shard file."""

    data_start: int
    grad_row_bytes: int
    scale_row_bytes: int
    scales_start: int  # absolute offset of the scales tensor (int8), else end of data
    end: int


def _parse_header(head: bytes, file_size: int, codec: Codec, rows: int, dim: int) -> _Layout:
    """Check a shard header against what the index recorded; raise ShardHeaderError on any difference."""
    if len(head) < 8:
        raise ShardHeaderError(f"file is {file_size} bytes, too short for a safetensors header")
    (n,) = struct.unpack("<Q", head[:8])
    if n > len(head) - 8:
        raise ShardHeaderError(f"header length {n} runs past the end of the file ({file_size} bytes)")
    try:
        header = json.loads(head[8 : 8 + n])
        grads = header["gradients"]
    except (ValueError, KeyError, TypeError) as e:
        raise ShardHeaderError(f"header is not valid safetensors JSON with a `gradients` tensor ({e})") from e
    width = codec.width(dim)
    if grads.get("dtype") != codec.safetensors_dtype or grads.get("shape") != [rows, width]:
        raise ShardHeaderError(
            f"`gradients` is {grads.get('dtype')} {grads.get('shape')}, "
            f"expected {codec.safetensors_dtype} [{rows}, {width}]"
        )
    data_start = 8 + n
    grad_row_bytes = width * codec.dtype.itemsize
    if grads.get("data_offsets") != [0, rows * grad_row_bytes]:
        raise ShardHeaderError(f"`gradients` data_offsets {grads.get('data_offsets')} do not fit [{rows}, {width}]")
    end = rows * grad_row_bytes
    scale_row_bytes = 0
    if codec.has_scales:
        scale_row_bytes = codec.n_scales(dim) * 4
        scales = header.get("scales") or {}
        expect = [end, end + rows * scale_row_bytes]
        if scales.get("dtype") != "F32" or scales.get("data_offsets") != expect:
            raise ShardHeaderError(f"`scales` is {scales or None}, expected F32 with data_offsets {expect}")
        end = expect[1]
    if data_start + end != file_size:
        raise ShardHeaderError(f"file is {file_size} bytes, header says {data_start + end}")
    return _Layout(data_start, grad_row_bytes, scale_row_bytes, data_start + rows * grad_row_bytes, data_start + end)


class ShardReader:
    """A memory-mapped shard; `read_row` checks one row against its CRC32 and returns it as a view of the
    map (no copy: the page cache holds the bytes, and the caller's LRU cache holds only views).

    The map is private and writable (`ACCESS_COPY`) so that torch can view it without a read-only
    warning; nothing writes through it (a write would only touch this process's copy of a page).

    Raises ShardHeaderError (or OSError) on open when the file is missing or its header is wrong.
    """

    def __init__(self, path: Path, codec: Codec, rows: int, dim: int) -> None:
        self.path = path
        self.codec = codec
        self.rows = rows
        self.dim = dim
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                raise ShardHeaderError("file is empty")
            self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        try:
            (n,) = struct.unpack("<Q", self._mm[:8]) if size >= 8 else (0,)
            self._layout = _parse_header(self._mm[: min(size, 8 + n)], size, codec, rows, dim)
        except Exception:
            self._mm.close()
            raise

    def read_row(self, row: int, crc: int) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """Row `row` as `(gradients [width] in the codec dtype, scales [n_scales] float32 or None)`, or None when
        its bytes do not match `crc` (a corrupt row)."""
        lay = self._layout
        # numpy's view holds a buffer export of the map, so `close` cannot unmap it under a live row
        # (torch.frombuffer would release the export and leave the tensor dangling).
        g = np.frombuffer(self._mm, np.uint8, lay.grad_row_bytes, lay.data_start + row * lay.grad_row_bytes)
        found = zlib.crc32(g)
        grad = torch.from_numpy(g)
        scales = None
        if lay.scale_row_bytes:
            s = np.frombuffer(self._mm, np.uint8, lay.scale_row_bytes, lay.scales_start + row * lay.scale_row_bytes)
            found = zlib.crc32(s, found)
            scales = torch.from_numpy(s).view(torch.float32)
        if found != crc:
            return None
        return grad.view(self.codec.dtype), scales

    def close(self) -> None:
        """Unmap now, unless rows read from it are still referenced: the map then goes with the last one."""
        with contextlib.suppress(BufferError):  # views read_row exported are alive (a cache, a sum in flight)
            self._mm.close()


@dataclass
class ShardScan:
    """What `scan_shard` found: the file's sha256 and every row's CRC32 (None when the header is bad)."""

    sha256: str
    size: int
    crcs: list[int] | None
    header_error: str | None


def scan_shard(path: Path, codec: Codec, rows: int, dim: int, chunk_rows: int = 64) -> ShardScan:
    """Read a shard once, front to back: the whole-file sha256 and the CRC32 of every row."""
    sha = hashlib.sha256()
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        n = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
        head += f.read(min(n, max(size - 8, 0)))
        sha.update(head)
        try:
            lay = _parse_header(head, size, codec, rows, dim)
        except ShardHeaderError as e:
            for block in iter(lambda: f.read(1 << 24), b""):
                sha.update(block)
            return ShardScan(sha.hexdigest(), size, None, str(e))
        # Rows are contiguous per tensor: pass 1 reads gradient rows, pass 2 (int8) continues each
        # row's CRC over its scales, matching `row_crcs`.
        crcs = [0] * rows
        for row_bytes in (lay.grad_row_bytes, lay.scale_row_bytes):
            if not row_bytes:
                continue
            for first in range(0, rows, chunk_rows):
                count = min(chunk_rows, rows - first)
                block = f.read(count * row_bytes)
                sha.update(block)
                view = memoryview(block)
                for i in range(count):
                    crcs[first + i] = zlib.crc32(view[i * row_bytes : (i + 1) * row_bytes], crcs[first + i])
        sha.update(f.read())
    return ShardScan(sha.hexdigest(), size, crcs, None)
