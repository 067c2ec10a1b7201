"""`GradientStore`: precomputed passage gradients, keyed by passage id, summed on request.

Reading a row is one contiguous copy out of a memory-mapped shard plus a CRC32 check; hot rows sit in
an LRU cache (encoded, so bf16 rows take half the memory of fp32); a sum of k rows is k in-place adds
into one float32 vector. Every lookup asks `index.sqlite`, so a handle sees rows committed by any
writer, in this process or another, as soon as their transaction commits.

`compact` (another process, maybe) moves rows to new shards and then deletes the old files. A lookup
made before its switch can name a file that is gone by the time it is mapped: such ids are looked up
again (their new rows hold the same bytes). A mapped file stays readable after it is deleted; the handle
drops its maps (and cached rows) of retired shards when it first maps a shard committed after them.
"""

from __future__ import annotations

import errno
import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch

from gradient_store.cache import RowCache
from gradient_store.codecs import DEFAULT_CODEC, Codec, get_codec, zeros_f32
from gradient_store.errors import (
    CorruptShardError,
    FingerprintMismatchError,
    StoreError,
    StoreExistsError,
    StoreFormatError,
)
from gradient_store.filesystem import NETWORK_FILESYSTEMS, filesystem_type
from gradient_store.index import INDEX_NAME, Index, RowRef
from gradient_store.manifest import (
    DEFAULT_SHARD_BYTES,
    MANIFEST_NAME,
    Manifest,
    ShardRecord,
    normalize_layout,
)
from gradient_store.shard import ShardHeaderError, ShardReader, shard_name
from gradient_store.verify import VerifyReport, verify_store
from gradient_store.writer import LOCK_NAME, OnDuplicate, StoreWriter

__all__ = ["GradientStore", "SumResult", "OnCorrupt", "DEFAULT_CACHE_BYTES", "DEFAULT_MAX_OPEN_SHARDS"]

logger = logging.getLogger("regrad.gradient_store")

OnCorrupt = Literal["missing", "raise"]
# The row cache holds views of mapped shard rows that passed their CRC32 (no heap copy: their bytes
# are page cache, which the kernel reclaims under pressure), so its budget bounds how many checked rows
# stay mapped, not the process's heap: 1 GiB is 240 bf16 rows of the bundled preset.
DEFAULT_CACHE_BYTES = 1 << 30
# Each mapped shard holds a file descriptor and a memory map until it is evicted. Shards number
# rows / rows_per_shard after a bulk encode (5,682 for 1M passages of the bundled preset) and one per
# commit after many small ones (POST /documents), so an unbounded set would reach a 1,024 open-file limit
# or vm.max_map_count (65,530) and fail reads. Re-opening an evicted shard costs one open + mmap + header.
DEFAULT_MAX_OPEN_SHARDS = 256
# Running out of descriptors or maps says nothing about the shard: fail this read, retry on the next.
_TRANSIENT_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.ENOMEM)
# The reason for a shard file that is not there (or a shard the index no longer lists). After a `compact`
# that is a lookup made before its switch: the ids are looked up again, a few times at most (each retry
# means another compaction committed in between).
_FILE_MISSING = "file is missing"
_STALE_RETRIES = 3
_OWN_NAMES = {
    MANIFEST_NAME,
    INDEX_NAME,
    f"{INDEX_NAME}-wal",
    f"{INDEX_NAME}-shm",
    f"{INDEX_NAME}-journal",
    LOCK_NAME,
    "shards",
}

_Row = tuple[torch.Tensor, "torch.Tensor | None"]  # (gradients [D] in the codec dtype, int8 scales or None)


class SumResult(tuple):
    """`(vector, found_ids, missing_ids)` — unpacks as a 3-tuple — plus `corrupt_ids`.

    Attributes:
        vector: float32 `[D]`, the sum of the found rows (zeros when none was found).
        found_ids: ids summed, in the order given (a repeated id is summed, and listed, twice).
        missing_ids: ids not stored, plus (with `on_corrupt="missing"`) ids whose row failed its checksum.
        corrupt_ids: the ids among `missing_ids` that are stored but corrupt.
    """

    def __new__(
        cls,
        vector: torch.Tensor,
        found_ids: list[str],
        missing_ids: list[str],
        corrupt_ids: Iterable[str] = (),
    ) -> SumResult:
        self = super().__new__(cls, (vector, found_ids, missing_ids))
        self.corrupt_ids = list(corrupt_ids)
        return self

    @property
    def vector(self) -> torch.Tensor:
        return self[0]

    @property
    def found_ids(self) -> list[str]:
        return self[1]

    @property
    def missing_ids(self) -> list[str]:
        return self[2]

    def __repr__(self) -> str:
        return (
            f"SumResult(vector=<{self.vector.shape[0]} float32>, found_ids={self.found_ids!r}, "
            f"missing_ids={self.missing_ids!r}, corrupt_ids={self.corrupt_ids!r})"
        )


class GradientStore:
    """A directory of passage gradients for one learner (see docs/gradient-store.md for the format).

    Build with `GradientStore.create`, reopen with `GradientStore.open`. Reads are thread-safe; one writer
    at a time per store (a `writer.lock` file), and readers keep serving while it appends.

    Example:
        >>> store = GradientStore.create("artifacts/store", layout=learner.layout.to_json(),  # doctest: +SKIP
        ...                              fingerprint=learner.fingerprint)
        >>> store.append(["doc-1", "doc-2"], passage_gradients(learner, texts))  # doctest: +SKIP
        >>> vector, found, missing = store.sum(["doc-1", "doc-9"])  # doctest: +SKIP
    """

    def __init__(self, path: Path, manifest: Manifest, index: Index, cache_bytes: int,
                 max_open_shards: int = DEFAULT_MAX_OPEN_SHARDS) -> None:
        """Use `create` or `open`."""
        self.path = path
        self.manifest = manifest
        self._index = index
        self._codec = manifest.codec_obj
        self._cache = RowCache(cache_bytes)
        self._records: dict[int, ShardRecord] = {}
        self._readers: OrderedDict[int, ShardReader] = OrderedDict()  # least recently used first
        self._max_open_shards = int(max_open_shards)
        self._broken: dict[int, CorruptShardError] = {}
        self._retired_seen: int | None = None  # the index's count of retired shards, as last checked
        self._shard_lock = threading.Lock()
        self._writer_ready = False  # set by this handle's first writer (StoreWriter._recover)
        self._closed = False

    # --- construction -------------------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | Path,
        *,
        layout: Any,
        fingerprint: str,
        codec: str = DEFAULT_CODEC,
        rows_per_shard: int | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        exist_ok: bool = False,
        max_open_shards: int = DEFAULT_MAX_OPEN_SHARDS,
    ) -> GradientStore:
        """Create an empty store in `path` (a new or empty directory).

        Args:
            path: the store directory.
            layout: the learner's parameter layout: `learner.layout.to_json()` (a list of
                `{"name", "shape", "offset"}` dicts) or any object with `.to_json()`. Fixes D.
            fingerprint: the learner's fingerprint; `open(expect_fingerprint=...)` checks it.
            codec: `bf16` (default), `fp32`, `int8` (per-block scales) or `lowrank4` (each LoRA tensor at
                rank 4, int8 factors: about 1/8 of bf16).
            rows_per_shard: rows per shard file; default keeps a shard at or under 256 MiB.
            cache_bytes: byte budget of the LRU cache of hot rows.
            exist_ok: if `path` already holds a store with the same fingerprint, layout and codec, open it
                (lets `regrad encode` resume); a different one raises `FingerprintMismatchError` or
                `StoreExistsError`.
            max_open_shards: shards kept memory-mapped at once (each holds a file descriptor); the least
                recently read is closed beyond it.

        Returns:
            The open store.
        """
        path = Path(path)
        _check_max_open_shards(max_open_shards)
        entries, dim = _layout_or_error(layout, path)
        if not isinstance(fingerprint, str) or not fingerprint:
            raise StoreFormatError(str(path), f"`fingerprint` must be a non-empty string, got {fingerprint!r}")
        codec_obj = get_codec(codec, layout=entries)
        if (path / MANIFEST_NAME).exists():
            if not exist_ok:
                raise StoreExistsError(
                    str(path),
                    "already holds a gradient store; open it with `GradientStore.open`, "
                    "pass exist_ok=True to reuse it, or choose a new directory",
                )
            store = cls.open(path, expect_fingerprint=fingerprint, cache_bytes=cache_bytes,
                             max_open_shards=max_open_shards)
            if store.manifest.layout != entries or store.codec.name != codec_obj.name:
                store.close()
                raise StoreExistsError(
                    str(path),
                    f"holds a store with codec {store.manifest.codec} and a {store.dim}-value layout, "
                    f"asked for codec {codec} and {dim} values; choose a new directory",
                )
            return store
        if path.exists():
            # Our own names (and temp files) may be left by a create that was interrupted before its manifest.
            strangers = sorted(
                p.name for p in path.iterdir() if p.name not in _OWN_NAMES and not p.name.startswith(".tmp-")
            )
            if strangers:
                raise StoreExistsError(
                    str(path),
                    f"is not empty ({', '.join(strangers[:3])}); a store needs a new or empty directory",
                )
        if rows_per_shard is None:
            rows_per_shard = max(1, DEFAULT_SHARD_BYTES // codec_obj.row_bytes(dim))
        if rows_per_shard < 1:
            raise StoreFormatError(str(path), f"`rows_per_shard` must be at least 1, got {rows_per_shard}")
        (path / "shards").mkdir(parents=True, exist_ok=True)
        _warn_if_network_filesystem(path)
        index = Index(path, create=True)
        manifest = Manifest(
            fingerprint=fingerprint,
            layout=entries,
            dim=dim,
            codec=codec_obj.name,
            int8_block_size=codec_obj.block_size,
            rows_per_shard=int(rows_per_shard),
        )
        manifest.save(path)  # written last: a directory without it is not a store yet
        return cls(path, manifest, index, cache_bytes, max_open_shards)

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        expect_fingerprint: str | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        max_open_shards: int = DEFAULT_MAX_OPEN_SHARDS,
    ) -> GradientStore:
        """Open an existing store.

        Args:
            path: the store directory.
            expect_fingerprint: the serving learner's fingerprint; a store built for another learner
                raises `FingerprintMismatchError` (its gradients would silently give wrong answers).
            cache_bytes: byte budget of the LRU cache of hot rows (0 disables it).
            max_open_shards: shards kept memory-mapped at once (each holds a file descriptor); the least
                recently read is closed beyond it.

        Returns:
            The open store.
        """
        path = Path(path)
        _check_max_open_shards(max_open_shards)
        if not path.is_dir():
            raise StoreFormatError(str(path), "no such directory; build a store with `regrad encode` first")
        manifest = Manifest.load(path)
        if expect_fingerprint is not None and manifest.fingerprint != expect_fingerprint:
            raise FingerprintMismatchError(str(path), expected=expect_fingerprint, found=manifest.fingerprint)
        if not (path / INDEX_NAME).is_file():
            raise StoreFormatError(str(path), f"{INDEX_NAME} is missing; the store cannot be read without it")
        _warn_if_network_filesystem(path)
        return cls(path, manifest, Index(path), cache_bytes, max_open_shards)

    def close(self) -> None:
        """Release the index connection and the memory maps (the handle cannot be used afterwards)."""
        if self._closed:
            return
        self._closed = True
        self._cache.clear()  # the cached rows are views of the maps: drop them first
        with self._shard_lock:
            for reader in self._readers.values():
                reader.close()
            self._readers.clear()
        self._index.close()

    def __enter__(self) -> GradientStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"GradientStore({str(self.path)!r}, codec={self.codec.name}, dim={self.dim})"

    # --- what the store is --------------------------------------------------------------------------------

    @property
    def fingerprint(self) -> str:
        return self.manifest.fingerprint

    @property
    def layout(self) -> list[dict[str, Any]]:
        return self.manifest.layout

    @property
    def dim(self) -> int:
        return self.manifest.dim

    @property
    def codec(self) -> Codec:
        return self._codec

    @property
    def rows_per_shard(self) -> int:
        return self.manifest.rows_per_shard

    def __len__(self) -> int:
        """Stored passages (reads every entry of the index: ~20 ms at 10^6 rows, ~200 ms from a cold disk)."""
        self._check_open()
        return self._index.count()

    def probe(self) -> None:
        """Raise if the index cannot be read, in O(log rows): for health checks, where `len` would count."""
        self._check_open()
        self._index.probe()

    def contains(self, passage_id: str) -> bool:
        self._check_open()
        return passage_id in self._index.lookup([passage_id])

    __contains__ = contains

    def ids(self) -> list[str]:
        """Every stored passage id, oldest first."""
        self._check_open()
        return self._index.ids()

    def shards(self) -> list[ShardRecord]:
        """Every committed shard (id, file name, rows, bytes, sha256), from the index's `shards` table."""
        self._check_open()
        return self._index.shards()

    # --- writing ------------------------------------------------------------------------------------------

    def writer(self, on_duplicate: OnDuplicate = "error", lock_timeout_s: float = 30.0) -> StoreWriter:
        """A writer context: `with store.writer() as w: w.append(ids, vectors)` commits on exit.

        See `StoreWriter` for the duplicate policies; this handle sees the new rows right after the commit.
        """
        self._check_open()
        return StoreWriter(self, on_duplicate=on_duplicate, lock_timeout_s=lock_timeout_s)

    def append(self, ids: Sequence[str], vectors: torch.Tensor, on_duplicate: OnDuplicate = "error") -> int:
        """Append and commit in one call (takes the writer lock for the duration).

        Args:
            ids: passage ids, one per row of `vectors`.
            vectors: `[len(ids), D]` float tensor.
            on_duplicate: `error` (default), `skip` or `replace`; see `StoreWriter`.

        Returns:
            Rows written.
        """
        with self.writer(on_duplicate=on_duplicate) as w:
            return w.append(ids, vectors)

    # --- reading ------------------------------------------------------------------------------------------

    def get(self, ids: Sequence[str], on_corrupt: OnCorrupt = "missing") -> dict[str, torch.Tensor]:
        """Decoded gradients of the stored ids.

        Args:
            ids: passage ids.
            on_corrupt: `missing` leaves a corrupt row out (and logs a warning); `raise` raises
                `CorruptShardError` naming the shard and ids.

        Returns:
            `{id: float32 [D]}` for every id that is stored and intact; other ids are absent.
        """
        ids = [ids] if isinstance(ids, str) else list(ids)
        rows, _, _ = self._fetch(ids, on_corrupt)
        return {pid: self._codec.decode(*row) for pid, row in rows.items()}

    def sum(self, ids: Sequence[str], on_corrupt: OnCorrupt = "missing",
            weights: Sequence[float] | None = None) -> SumResult:
        """Sum the stored gradients of `ids` into one float32 vector, each times its weight if given.

        A corrupt row never fails the sum by default: it is reported in `missing_ids` (and `corrupt_ids`)
        so the caller computes that gradient instead, exactly as for a passage that was never stored.

        Args:
            ids: passage ids (e.g. the retriever's top-k).
            on_corrupt: `missing` (default) or `raise` (`CorruptShardError`).
            weights: one per id (the request's composition, `engine.composition`); default all 1.

        Returns:
            `SumResult` — unpacks as `(vector [D] float32, found_ids, missing_ids)`.

        Example:
            >>> vector, found, missing = store.sum(["doc-1", "doc-2", "doc-3"])  # doctest: +SKIP
        """
        ids = [ids] if isinstance(ids, str) else list(ids)
        weights = [1.0] * len(ids) if weights is None else [float(w) for w in weights]
        if len(weights) != len(ids):
            raise ValueError(f"{len(weights)} weights given for {len(ids)} ids")
        rows, missing, corrupt = self._fetch(ids, on_corrupt)
        vector = zeros_f32(self.dim)
        present = [(pid, weight) for pid, weight in zip(ids, weights) if pid in rows]
        self._codec.sum_into(vector, [rows[pid] for pid, _ in present], [weight for _, weight in present])
        found = [pid for pid, _ in present]
        missing_set = set(missing)
        return SumResult(vector, found, [pid for pid in ids if pid in missing_set], corrupt)

    def prefetch(self, ids: Sequence[str]) -> int:
        """Read the stored rows of `ids` into the row cache (their file pages, and each row's CRC32
        check), so that a `sum` or `get` of them soon after finds them there. No torch work: a server
        prefetches on the thread that retrieves, beside the thread that runs the model. Missing and
        corrupt ids are left for the sum to report. Returns how many rows are now cached."""
        ids = [ids] if isinstance(ids, str) else list(ids)
        if self._cache.max_bytes <= 0:
            return 0
        rows, _, _ = self._fetch(ids, on_corrupt="missing")
        return len(rows)

    def clear_cache(self) -> None:
        """Drop the LRU cache of rows and forget shards that failed to open (to retry a restored file)."""
        self._cache.clear()
        with self._shard_lock:
            self._broken.clear()

    def cache_stats(self) -> dict[str, int]:
        return {
            "rows": len(self._cache),
            "bytes": self._cache.bytes,
            "max_bytes": self._cache.max_bytes,
            "hits": self._cache.hits,
            "misses": self._cache.misses,
        }

    def _fetch(self, ids: Sequence[str], on_corrupt: OnCorrupt) -> tuple[dict[str, _Row], list[str], list[str]]:
        """`(rows of the intact ids, missing ids, corrupt ids)`, ids deduplicated in the order given."""
        self._check_open()
        if on_corrupt not in ("missing", "raise"):
            raise StoreError(f"`on_corrupt` must be 'missing' or 'raise', got {on_corrupt!r}")
        unique = list(dict.fromkeys(ids))
        refs = self._index.lookup(unique)
        rows: dict[str, _Row] = {}
        failed: dict[str, tuple[int, str]] = {}  # id -> (shard id, reason)
        todo = [pid for pid in unique if pid in refs]
        for attempt in range(_STALE_RETRIES + 1):
            gone = []
            for pid in todo:
                row, reason = self._read(refs[pid])
                if row is not None:
                    rows[pid] = row
                elif reason == _FILE_MISSING and attempt < _STALE_RETRIES:
                    gone.append(pid)
                else:
                    failed[pid] = (refs[pid].shard_id, reason)
            if not gone:
                break
            # A `compact` may have moved these rows since the lookup and deleted their old shard: ask the
            # index again. A ref that did not move names a registered shard whose file really is missing.
            fresh = self._index.lookup(gone)
            todo = []
            for pid in gone:
                ref = fresh.get(pid)
                if ref is None:
                    refs.pop(pid)  # not stored any more: missing, like an id never stored
                elif ref != refs[pid]:
                    refs[pid] = ref
                    todo.append(pid)
                else:
                    failed[pid] = (ref.shard_id, _FILE_MISSING)
        missing = [pid for pid in unique if pid not in rows]
        corrupt: dict[int, tuple[str, list[str]]] = {}  # shard id -> (reason, ids)
        for pid in unique:
            if pid in failed:
                shard_id, reason = failed[pid]
                corrupt.setdefault(shard_id, (reason, []))[1].append(pid)
        corrupt_ids = [pid for _, pids in corrupt.values() for pid in pids]
        for shard_id, (reason, pids) in corrupt.items():
            error = CorruptShardError(str(self.path), self._shard_label(shard_id), reason, pids)
            if on_corrupt == "raise":
                raise error
            logger.warning("%s; treating %d passage(s) as missing", error, len(pids))
        return rows, missing, corrupt_ids

    def _read(self, ref: RowRef) -> tuple[_Row | None, str]:
        """One row from the cache or its shard; `(None, reason)` when it fails its checksum."""
        key = (ref.shard_id, ref.row)
        row = self._cache.get(key)
        if row is not None:
            return row, ""
        try:
            reader = self._reader(ref.shard_id)
        except CorruptShardError as e:
            return None, e.reason
        row = reader.read_row(ref.row, ref.crc32)
        if row is None:
            return None, f"row {ref.row} does not match its CRC32 in the index"
        self._cache.put(key, row, self._codec.row_bytes(self.dim))
        return row, ""

    def _record(self, shard_id: int) -> ShardRecord:
        record = self._records.get(shard_id)
        if record is None:  # first touch, or a shard committed since (by this process or another)
            record = self._records[shard_id] = self._index.shard(shard_id)
        return record

    def _shard_label(self, shard_id: int) -> str:
        try:
            return self._record(shard_id).name
        except KeyError:  # retired by a compaction since
            return shard_name(shard_id)

    def _forget_retired(self) -> None:
        """Drop the maps, records and cached rows of shards that a `compact` retired (their files are
        deleted, and a map would pin the disk space), once per compaction: called under `_shard_lock`
        on the first touch of a shard, which is how a handle meets the shards a compaction wrote."""
        retired = self._index.retired_shards()
        if retired == self._retired_seen:
            return
        self._retired_seen = retired
        known = set(self._records) | set(self._readers) | set(self._broken)
        gone = known - self._index.registered(known)
        for shard_id in gone:
            self._records.pop(shard_id, None)
            self._broken.pop(shard_id, None)
            # Not closed, as on eviction: a thread may be copying a row out of it; the map goes with the
            # last reference (its cached rows are dropped below).
            self._readers.pop(shard_id, None)
        if gone:
            self._cache.discard(lambda key: key[0] in gone)

    def _reader(self, shard_id: int) -> ShardReader:
        """The shard's memory map, opened (and its header checked against the index) on first use; at most
        `max_open_shards` stay open, the least recently used is dropped first."""
        with self._shard_lock:
            reader = self._readers.get(shard_id)
            if reader is not None:
                self._readers.move_to_end(shard_id)
                return reader
            if shard_id in self._broken:
                raise self._broken[shard_id]
            if shard_id not in self._records:
                self._forget_retired()
            try:
                record = self._record(shard_id)
            except KeyError:  # a ref looked up before a compaction retired this shard: not broken
                raise CorruptShardError(str(self.path), shard_name(shard_id), _FILE_MISSING) from None
            try:
                reader = ShardReader(self.path / "shards" / record.name, self._codec, record.rows, self.dim)
            except (OSError, ShardHeaderError) as e:
                reason = _FILE_MISSING if isinstance(e, FileNotFoundError) else f"cannot be read: {e}"
                error = CorruptShardError(str(self.path), record.name, reason)
                if not (isinstance(e, OSError) and e.errno in _TRANSIENT_ERRNOS):
                    self._broken[shard_id] = error
                raise error from e
            self._readers[shard_id] = reader
            while len(self._readers) > self._max_open_shards:
                # Not closed here: a thread may be copying a row out of it. The map and its descriptor
                # are released when the last reference goes (at once, unless a read is in flight).
                self._readers.popitem(last=False)
            return reader

    # --- checks and figures -------------------------------------------------------------------------------

    def verify(self, on_shard: Callable[[ShardRecord], None] | None = None,
               shard_ids: Collection[int] | None = None) -> VerifyReport:
        """Read every shard (or the `shard_ids` ones) and check sizes, sha256s and row CRC32s against the index,
        and the manifest (a version-1 manifest's shard list against the index's); see `VerifyReport`."""
        self._check_open()
        return verify_store(self, on_shard=on_shard, shard_ids=shard_ids)

    def info(self) -> dict[str, Any]:
        """Figures for `regrad store info`: passages, codec, size on disk, bytes per passage, fingerprint."""
        self._check_open()
        shards = self._index.shards()
        passages = self._index.count()
        rows = sum(s.rows for s in shards)
        size = _disk_bytes(self.path)
        return {
            "path": str(self.path),
            "format_version": self.manifest.format_version,
            "fingerprint": self.fingerprint,
            "codec": self.codec.name,
            "dim": self.dim,
            "layout_tensors": len(self.layout),
            "passages": passages,
            "rows": rows,
            "garbage_rows": rows - passages,
            "shards": len(shards),
            "rows_per_shard": self.rows_per_shard,
            "row_bytes": self.codec.row_bytes(self.dim),
            "size_on_disk_bytes": size,
            "bytes_per_passage": size / passages if passages else math.nan,
        }

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"gradient store {self.path} is closed; open it again with `GradientStore.open`")


def _disk_bytes(path: Path) -> int:
    """Bytes of the files under `path`; a file deleted meanwhile (a compaction's old shard) counts 0."""
    total = 0
    for f in path.rglob("*"):
        try:
            if f.is_file():
                total += f.stat().st_size
        except FileNotFoundError:
            pass
    return total


def _check_max_open_shards(max_open_shards: int) -> None:
    if not isinstance(max_open_shards, int) or max_open_shards < 1:
        raise StoreError(f"`max_open_shards` must be an integer of at least 1, got {max_open_shards!r}")


def _warn_if_network_filesystem(path: Path) -> None:
    fs_type = filesystem_type(path)
    if fs_type in NETWORK_FILESYSTEMS:
        logger.warning(
            "gradient store %s is on a %s filesystem: its SQLite index (WAL mode) is only safe for processes "
            "of one host, and writing from two hosts can corrupt it; give each host a local copy and serve it "
            "read-only (docs/gradient-store.md, 'Several processes on one store')",
            path, fs_type,
        )


def _layout_or_error(layout: Any, path: Path) -> tuple[list[dict[str, Any]], int]:
    try:
        return normalize_layout(layout)
    except (TypeError, ValueError) as e:
        raise StoreFormatError(str(path), f"{e}; pass `learner.layout.to_json()`") from e
