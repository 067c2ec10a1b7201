"""The Gradient Bank: precomputed passage gradients in sharded safetensors files plus a SQLite index.

See docs/gradient-store.md for the on-disk format and the guarantees (atomic appends, crash safety,
corruption detection, compaction). This package never imports `models`: a learner is described by plain data,
its fingerprint and its parameter layout.
"""

from gradient_store.codecs import CODECS, DEFAULT_CODEC, Codec, get_codec
from gradient_store.compact import CompactReport, compact_store
from gradient_store.errors import (
    CorruptShardError,
    DuplicateIdError,
    FingerprintMismatchError,
    InvalidAppendError,
    StoreError,
    StoreExistsError,
    StoreFormatError,
    StoreLockedError,
    StoreMismatchError,
    UnknownCodecError,
)
from gradient_store.manifest import FORMAT_VERSION
from gradient_store.merge import MergeReport, merge_stores
from gradient_store.store import DEFAULT_CACHE_BYTES, DEFAULT_MAX_OPEN_SHARDS, GradientStore, OnCorrupt, SumResult
from gradient_store.verify import VerifyReport
from gradient_store.writer import OnDuplicate, StoreWriter

__all__ = [
    "GradientStore",
    "StoreWriter",
    "SumResult",
    "VerifyReport",
    "MergeReport",
    "merge_stores",
    "CompactReport",
    "compact_store",
    "Codec",
    "CODECS",
    "DEFAULT_CODEC",
    "DEFAULT_CACHE_BYTES",
    "DEFAULT_MAX_OPEN_SHARDS",
    "FORMAT_VERSION",
    "OnCorrupt",
    "OnDuplicate",
    "get_codec",
    "StoreError",
    "StoreFormatError",
    "StoreExistsError",
    "StoreLockedError",
    "FingerprintMismatchError",
    "StoreMismatchError",
    "InvalidAppendError",
    "UnknownCodecError",
    "DuplicateIdError",
    "CorruptShardError",
]
