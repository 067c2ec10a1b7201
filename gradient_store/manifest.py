"""`manifest.json`: what a store holds (learner fingerprint, parameter layout, codec, shard size).

It is written once, at `create` (and once more when a writer upgrades a version-1 store), and never
changes after: commits do not touch it. The shard list is the `shards` table of `index.sqlite`, which
is the commit point. A version-1 manifest also carried a copy of that list, rewritten after every
commit; it is still read (`verify` compares it with the index) until a writer upgrades the store.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradient_store.codecs import Codec, get_codec
from gradient_store.errors import StoreFormatError

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "READABLE_VERSIONS",
    "DEFAULT_SHARD_BYTES",
    "MANIFEST_NAME",
    "ShardRecord",
    "Manifest",
    "normalize_layout",
    "write_atomic",
    "fsync_dir",
]

FORMAT_NAME = "regrad-gradient-store"
FORMAT_VERSION = 2  # the version this regrad writes
READABLE_VERSIONS = (1, 2)  # 1: the manifest also lists the shards; a writer upgrades it to 2
MANIFEST_NAME = "manifest.json"
# A shard is written in one go from memory, so this bounds the writer's buffer as well as file size.
DEFAULT_SHARD_BYTES = 256 << 20


@dataclass(frozen=True)
class ShardRecord:
    """One immutable shard file: `shards/<name>`, `rows` rows, `bytes` long, with this sha256."""

    shard_id: int
    name: str
    rows: int
    bytes: int
    sha256: str


@dataclass
class Manifest:
    """The parsed `manifest.json`.

    Args:
        fingerprint: learner fingerprint (64 hex chars) the gradients were computed with.
        layout: list of `{"name", "shape", "offset"}` dicts (flat-vector order of the LoRA tensors).
        dim: length D of one flat gradient, `= offset + numel` of the last layout entry.
        codec: `fp32`, `bf16`, `int8` or `lowrank4`.
        int8_block_size: elements per int8 scale (0 for other codecs).
        rows_per_shard: most rows one shard file holds.
        format_version: the version read from disk (1 or 2); `save` writes version 2 only.
        v1_shards: a version-1 manifest's copy of the index's shard table as of its last rewrite (empty
            for version 2, where the index's `shards` table is the only list).
    """

    fingerprint: str
    layout: list[dict[str, Any]]
    dim: int
    codec: str
    int8_block_size: int
    rows_per_shard: int
    created_at: float = field(default_factory=time.time)
    format_version: int = FORMAT_VERSION
    v1_shards: list[ShardRecord] = field(default_factory=list)

    @property
    def codec_obj(self) -> Codec:
        return get_codec(self.codec, self.int8_block_size, layout=self.layout)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "format_version": self.format_version,
            "fingerprint": self.fingerprint,
            "dim": self.dim,
            "codec": self.codec,
            "int8_block_size": self.int8_block_size,
            "rows_per_shard": self.rows_per_shard,
            "created_at": self.created_at,
            "tensors": {
                "gradients": "[rows, dim] in the codec's dtype ([rows, rank * sum(m + n)] I8 for lowrank4)",
                "scales": "[rows, ceil(dim/block)] F32 (int8); [rows, rank * tensors] F32 (lowrank4)",
            },
            "layout": self.layout,
        }

    def save(self, store_dir: Path) -> None:
        """Write `manifest.json` atomically (the header only: this regrad writes version 2)."""
        if self.format_version != FORMAT_VERSION:
            raise ValueError(f"only format_version {FORMAT_VERSION} manifests are written, this one is "
                             f"{self.format_version}: upgrade it with dataclasses.replace first")
        write_atomic(store_dir / MANIFEST_NAME, (json.dumps(self.to_json(), indent=1) + "\n").encode())

    @classmethod
    def load(cls, store_dir: Path) -> Manifest:
        path = store_dir / MANIFEST_NAME
        if not path.is_file():
            raise StoreFormatError(
                str(store_dir),
                f"{MANIFEST_NAME} is missing, so this is not a gradient store; "
                "create one with `GradientStore.create` or `regrad encode`",
            )
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise StoreFormatError(
                str(store_dir), f"{MANIFEST_NAME} cannot be read ({e}); restore it from a backup"
            ) from e
        if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
            raise StoreFormatError(
                str(store_dir),
                f"{MANIFEST_NAME} has format {data.get('format') if isinstance(data, dict) else None!r}, "
                f"expected {FORMAT_NAME!r}; point at a directory made by `GradientStore.create`",
            )
        version = data.get("format_version")
        if version not in READABLE_VERSIONS:
            raise StoreFormatError(
                str(store_dir),
                f"format_version {version!r} is not supported (this regrad reads "
                f"{' and '.join(map(str, READABLE_VERSIONS))}); upgrade regrad or re-encode the store",
            )
        try:
            layout, dim = normalize_layout(data["layout"])
            if dim != data["dim"]:
                raise ValueError(f"layout covers {dim} values but dim is {data['dim']}")
            manifest = cls(
                fingerprint=str(data["fingerprint"]),
                layout=layout,
                dim=int(data["dim"]),
                codec=str(data["codec"]),
                int8_block_size=int(data.get("int8_block_size", 0)),
                rows_per_shard=int(data["rows_per_shard"]),
                created_at=float(data.get("created_at", 0.0)),
                format_version=int(version),
                v1_shards=[
                    ShardRecord(int(s["id"]), str(s["name"]), int(s["rows"]), int(s["bytes"]), str(s["sha256"]))
                    for s in (data.get("shards", []) if version == 1 else [])
                ],
            )
            manifest.codec_obj  # noqa: B018 - validates the codec name
        except (KeyError, TypeError, ValueError) as e:
            raise StoreFormatError(
                str(store_dir), f"{MANIFEST_NAME} is malformed: {e}; restore it from a backup"
            ) from e
        return manifest


def normalize_layout(layout: Any) -> tuple[list[dict[str, Any]], int]:
    """Check a parameter layout and return it as plain JSON data plus its dimension D.

    Args:
        layout: a list of `{"name": str, "shape": [int, ...], "offset": int}` dicts, or any object with
            `.to_json()` returning one (e.g. `models.ParamLayout`). Entries must tile `[0, D)` in order.

    Returns:
        `(layout as a list of dicts, D)`.

    Raises:
        ValueError: a malformed entry, a gap or an overlap (the message names the entry).
    """
    if hasattr(layout, "to_json"):
        layout = layout.to_json()
    if not isinstance(layout, list) or not layout:
        raise ValueError(
            f"`layout` must be a non-empty list of {{name, shape, offset}} dicts, got {type(layout).__name__}"
        )
    entries: list[dict[str, Any]] = []
    expected_offset = 0
    for i, entry in enumerate(layout):
        if not isinstance(entry, dict) or not {"name", "shape", "offset"} <= entry.keys():
            raise ValueError(f"`layout[{i}]` must be a dict with name, shape and offset, got {entry!r}")
        shape = [int(n) for n in entry["shape"]]
        if any(n <= 0 for n in shape):
            raise ValueError(f"`layout[{i}]` ({entry['name']!r}) has shape {shape}; every size must be positive")
        offset = int(entry["offset"])
        if offset != expected_offset:
            raise ValueError(
                f"`layout[{i}]` ({entry['name']!r}) starts at offset {offset}, expected {expected_offset}: "
                "entries must tile the flat vector in order without gaps or overlaps"
            )
        entries.append({**entry, "name": str(entry["name"]), "shape": shape, "offset": offset})
        expected_offset = offset + math.prod(shape)
    return entries, expected_offset


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see either the old or the new file, never a mix."""
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)
