"""`compact_store`: rewrite a store's small shards and those holding garbage rows into full shards, atomically.

Many small commits make many small shard files (`POST /documents` makes one per request), and
`on_duplicate="replace"` leaves each replaced row behind as garbage. Compaction copies the live rows (the
ones the index points at) of every shard that is not full or holds garbage into new full shards, in
`ids()` order, as stored bytes (never decoded and re-encoded, CRC-checked on the way out, as
`merge_stores` copies them), then switches every moved id to its new row and unregisters the old shards in
ONE SQLite transaction, and only then deletes the old files. Full shards without garbage are left alone.

The run holds the store's writer lock from start to end and goes through one `StoreWriter` with the
`replace` policy (an id's rowid, hence its place in `ids()`, is kept). A SIGKILL before the transaction
leaves the store as it was plus unregistered new shard files; after it, the store is compacted and the old
files that were not deleted yet are unregistered. Either way the next writer (or compaction) deletes those
files, and `verify` passes meanwhile (it lists them as warnings). Shard ids are never reused, so a reader's
cached rows and maps, keyed by shard id, cannot serve another file's bytes; a reader that looked an id up
before the switch and finds the old file gone looks it up again (`GradientStore._fetch`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gradient_store.errors import StoreError
from gradient_store.manifest import fsync_dir
from gradient_store.merge import copy_rows
from gradient_store.store import GradientStore
from gradient_store.writer import StoreWriter, _crash_point

__all__ = ["CompactReport", "compact_store"]

logger = logging.getLogger("regrad.gradient_store")


@dataclass
class CompactReport:
    """What `compact_store` did.

    Attributes:
        path: the store.
        shards_before, shards_after: registered shards before and after.
        shards_rewritten: old shards whose live rows were copied and whose files were deleted.
        shards_written: new shards.
        rows_kept: passages in the store (before = after).
        rows_copied: live rows copied into the new shards.
        garbage_rows_dropped: replaced rows that were in the rewritten shards (all the store had).
        bytes_before, bytes_after: bytes of the registered shard files.
        rows_per_shard: rows per new shard.
        seconds: wall time, waiting for the lock included.
    """

    path: str
    shards_before: int = 0
    shards_after: int = 0
    shards_rewritten: int = 0
    shards_written: int = 0
    rows_kept: int = 0
    rows_copied: int = 0
    garbage_rows_dropped: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    rows_per_shard: int = 0
    seconds: float = 0.0

    @property
    def changed(self) -> bool:
        """False when the store was already compact (or empty) and nothing was written."""
        return self.shards_rewritten > 0


def _rows_per_shard(store: GradientStore, target_shard_bytes: int | None) -> int:
    """Rows per new shard: the store's `rows_per_shard`, or fewer to keep a shard near `target_shard_bytes`."""
    if target_shard_bytes is None:
        return store.rows_per_shard
    if target_shard_bytes <= 0:
        raise StoreError(f"gradient store {store.path}: a target shard size must be positive, got "
                         f"{target_shard_bytes} bytes")
    rows = max(1, int(target_shard_bytes) // store.codec.row_bytes(store.dim))
    if rows > store.rows_per_shard:
        logger.info("gradient store %s: a shard holds at most %d rows (rows_per_shard, fixed at create); "
                    "compacting into shards of that many", store.path, store.rows_per_shard)
    return min(rows, store.rows_per_shard)


def compact_store(
    path: str | Path,
    *,
    target_shard_bytes: int | None = None,
    lock_timeout_s: float = 30.0,
    progress: Callable[[int], None] | None = None,
) -> CompactReport:
    """Merge a store's small shards and drop its garbage rows, in one atomic switch (see the module doc).

    Args:
        path: the store directory.
        target_shard_bytes: the size of a new shard; default (and most) the store's `rows_per_shard` rows.
            A shard with fewer rows than this, or with garbage rows, is rewritten.
        lock_timeout_s: how long to wait for another writer of the store (`StoreLockedError` after).
        progress: called with the number of rows copied after each step (progress bars, tests).

    Returns:
        A `CompactReport`; `changed` is False for an empty or already compact store, which is left as is.

    Raises:
        StoreFormatError: `path` is not a store.
        StoreLockedError: another writer held the lock past `lock_timeout_s`.
        CorruptShardError: a live row fails its checksum (nothing is changed; run `regrad store verify`).

    Example:
        >>> compact_store("artifacts/store").shards_after  # doctest: +SKIP
    """
    started = time.perf_counter()
    store = GradientStore.open(path, cache_bytes=0)
    try:
        rows_per_shard = _rows_per_shard(store, target_shard_bytes)
        report = CompactReport(path=str(path), rows_per_shard=rows_per_shard)
        # The lock first, then the plan: no other writer can change the store between the two. Entering the
        # writer also deletes what an interrupted writer or compaction left (this handle's first writer).
        with StoreWriter(store, on_duplicate="replace", lock_timeout_s=lock_timeout_s,
                         rows_per_shard=rows_per_shard) as writer:
            shards = store.shards()
            live = store._index.live_rows_by_shard()
            report.shards_before = report.shards_after = len(shards)
            report.bytes_before = report.bytes_after = sum(s.bytes for s in shards)
            report.rows_kept = sum(live.values())
            old = [s for s in shards if live.get(s.shard_id, 0) < s.rows or s.rows < rows_per_shard]
            moving = sum(live.get(s.shard_id, 0) for s in old)
            garbage = sum(s.rows for s in old) - moving
            if not garbage and math.ceil(moving / rows_per_shard) >= len(old):
                report.seconds = time.perf_counter() - started
                return report  # already compact: rewriting would not save a file
            old_ids = {s.shard_id for s in old}
            report.rows_copied = copy_rows(store, store._index.ids_in(old_ids), writer, progress)
            # The switch: new shards registered, every moved id repointed, the old shards unregistered.
            writer.commit(retire=old_ids)
            _crash_point("compact_committed")
            for i, record in enumerate(old):
                (store.path / "shards" / record.name).unlink(missing_ok=True)
                if i == 0:
                    _crash_point("compact_old_shard_deleted")
            fsync_dir(store.path / "shards")
            after = store.shards()
        report.shards_rewritten = len(old)
        report.shards_written = len(after) - len(shards) + len(old)
        report.shards_after = len(after)
        report.garbage_rows_dropped = garbage
        report.bytes_after = sum(s.bytes for s in after)
        report.seconds = time.perf_counter() - started
        logger.info("gradient store %s: compacted %d shard(s) into %d, %d garbage row(s) dropped",
                    store.path, report.shards_rewritten, report.shards_written, garbage)
        return report
    finally:
        store.close()
