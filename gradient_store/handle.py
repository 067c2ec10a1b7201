"""`StoreHandle`: what the writer and `verify` use of an open store. `GradientStore` is one; typing
against this protocol keeps writer.py and verify.py from importing store.py, which imports them."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from gradient_store.codecs import Codec
from gradient_store.index import Index
from gradient_store.manifest import Manifest

__all__ = ["StoreHandle"]


class StoreHandle(Protocol):
    path: Path
    manifest: Manifest
    _index: Index   # the store's own SQLite index: the writer commits to it, verify reads it
    _writer_ready: bool  # a writer of this handle has cleaned up after crashed writers and upgraded the manifest

    @property
    def codec(self) -> Codec: ...

    @property
    def dim(self) -> int: ...

    @property
    def rows_per_shard(self) -> int: ...

    @property
    def fingerprint(self) -> str: ...
