"""The store's single writer: append-only, atomic, resumable after a crash.

One append cycle (`commit`):
  1. encoded rows are written to `shards/.tmp-…`, fsynced, renamed to `shards/shard-NNNNN.safetensors`
     (a full shard is flushed as soon as it fills, so the writer's memory stays at one shard);
  2. the `shards/` directory is fsynced;
  3. ONE SQLite transaction registers the new shards and points the ids at their rows: the commit point.
A commit costs O(rows committed) whatever the store's size: it neither lists `shards/` nor writes
`manifest.json`. A crash before 3 leaves only unregistered files, invisible to readers. The first writer
that a `GradientStore` handle opens deletes them (it lists `shards/` once) and upgrades a version-1
manifest to version 2 (the header alone, written atomically); later writers of that handle only ask the
index for the next shard id, and reuse (overwrite) an unregistered shard's name when they reach it.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import logging
import os
import time
from collections.abc import Callable, Collection, Sequence
from typing import Literal

import torch

from gradient_store.errors import DuplicateIdError, InvalidAppendError, StoreLockedError
from gradient_store.handle import StoreHandle
from gradient_store.manifest import FORMAT_VERSION, ShardRecord, fsync_dir
from gradient_store.shard import row_crcs, shard_name, write_shard

__all__ = ["StoreWriter", "OnDuplicate", "LOCK_NAME"]

logger = logging.getLogger("regrad.gradient_store")

OnDuplicate = Literal["error", "skip", "replace"]
LOCK_NAME = "writer.lock"
_POLICIES = ("error", "skip", "replace")
# Rows checked and encoded per step: bounds the temporaries (int8 pads a float32 copy) for big batches.
_ENCODE_ROWS = 64

# Test seam: tests/gradient_store/test_crash.py sets this in a child process to SIGKILL itself at a named
# step of the commit protocol, so every crash window is exercised deterministically.
_CRASH_HOOK: Callable[[str], None] | None = None


def _crash_point(name: str) -> None:
    if _CRASH_HOOK is not None:
        _CRASH_HOOK(name)


def _check_policy(on_duplicate: str) -> None:
    if on_duplicate not in _POLICIES:
        raise InvalidAppendError(f"`on_duplicate` must be one of {list(_POLICIES)}, got {on_duplicate!r}")


class StoreWriter:
    """Appends rows to a store; a context manager that commits on a clean exit and discards on an error.

    Example:
        >>> with store.writer(on_duplicate="skip") as w:   # doctest: +SKIP
        ...     w.append(["doc-1", "doc-2"], grads)         # grads: [2, D] float32
        ...     w.commit()                                  # optional: make progress durable mid-way

    Args:
        store: the open store.
        on_duplicate: default policy for ids already stored or repeated in a batch: `error` raises
            `DuplicateIdError` before anything is written, `skip` keeps the stored row (and the first
            occurrence in a batch), `replace` writes a new row and repoints the id (its old row becomes
            garbage, still on disk).
        lock_timeout_s: how long to wait for another writer's `writer.lock`.
        rows_per_shard: rows per new shard file, at most the store's `rows_per_shard` (its default); `compact`
            passes a smaller one for `--target-shard-mb`.
    """

    def __init__(self, store: StoreHandle, on_duplicate: OnDuplicate = "error", lock_timeout_s: float = 30.0,
                 rows_per_shard: int | None = None) -> None:
        _check_policy(on_duplicate)
        self.store = store
        self.on_duplicate = on_duplicate
        self.lock_timeout_s = lock_timeout_s
        most = store.rows_per_shard
        self.rows_per_shard = most if rows_per_shard is None else min(rows_per_shard, most)
        if self.rows_per_shard < 1:
            raise InvalidAppendError(f"`rows_per_shard` must be at least 1, got {rows_per_shard}")
        self._lock_fd: int | None = None
        self._reset()

    # --- lock and recovery --------------------------------------------------------------------------------

    def __enter__(self) -> StoreWriter:
        self._acquire()
        try:
            self._recover()
        except BaseException:
            self._release()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.commit()
            else:
                self.abort()
        finally:
            self._release()

    def _acquire(self) -> None:
        fd = os.open(self.store.path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.lock_timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() >= deadline:
                    os.close(fd)
                    if e.errno in (errno.EAGAIN, errno.EACCES):
                        raise StoreLockedError(str(self.store.path), self.lock_timeout_s) from e
                    raise
                time.sleep(0.02)
        self._lock_fd = fd

    def _release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor drops the flock
            self._lock_fd = None

    def _recover(self) -> None:
        """Find the next shard id in O(log shards); on the handle's first writer, also clean up and upgrade."""
        if not self.store._writer_ready:
            self._clean_up()
            self._upgrade_manifest()
            self.store._writer_ready = True
        top = self.store._index.max_shard_id()
        self._next_shard_id = 0 if top is None else top + 1

    def _clean_up(self) -> None:
        """Delete what an interrupted writer left (we hold the lock, readers never open unregistered files)."""
        names = {s.name for s in self.store._index.shards()}
        removed = []
        for f in (self.store.path / "shards").iterdir():
            if f.name.startswith(".tmp-") or (f.name.startswith("shard-") and f.name not in names):
                f.unlink()
                removed.append(f.name)
        for f in self.store.path.glob(".tmp-*"):
            f.unlink()
            removed.append(f.name)
        if removed:
            logger.warning(
                "gradient store %s: removed %d file(s) left by an interrupted writer: %s",
                self.store.path,
                len(removed),
                ", ".join(sorted(removed)[:5]),
            )

    def _upgrade_manifest(self) -> None:
        """Rewrite a version-1 manifest (header plus a copy of the shard list) as version 2 (the header)."""
        manifest = self.store.manifest
        if manifest.format_version >= FORMAT_VERSION:
            return
        upgraded = dataclasses.replace(manifest, format_version=FORMAT_VERSION, v1_shards=[])
        upgraded.save(self.store.path)  # temp file, fsync, rename: the old manifest or the new one
        self.store.manifest = upgraded
        logger.info("gradient store %s: manifest.json upgraded from format_version %d to %d (the shard list "
                    "lives in index.sqlite alone)", self.store.path, manifest.format_version, FORMAT_VERSION)

    # --- appending ----------------------------------------------------------------------------------------

    def _reset(self) -> None:
        self._pending: dict[str, int] = {}  # id -> pending row number p (latest wins on replace)
        self._crcs: list[int] = []  # CRC32 of pending row p
        self._buffer: list[tuple[torch.Tensor, torch.Tensor | None]] = []
        self._buffered_rows = 0
        self._written: list[ShardRecord] = []  # flushed to disk, not yet committed

    @property
    def pending(self) -> int:
        """Ids appended since the last commit."""
        return len(self._pending)

    def append(self, ids: Sequence[str], vectors: torch.Tensor, on_duplicate: OnDuplicate | None = None) -> int:
        """Queue rows for the next commit.

        Args:
            ids: passage ids (non-empty strings), one per row.
            vectors: `[len(ids), D]` float tensor (a `[D]` vector is accepted for one id).
            on_duplicate: overrides the writer's policy for this call.

        Returns:
            The number of rows written (fewer than `len(ids)` when `skip` dropped duplicates).

        Raises:
            InvalidAppendError: wrong shape, non-finite values, or an id that is not a non-empty string.
            DuplicateIdError: `on_duplicate="error"` and an id is stored, pending, or repeated in `ids`.
        """
        if self._lock_fd is None:
            raise InvalidAppendError("this writer is not open: use `with store.writer() as w:` or `store.append(...)`")
        policy = on_duplicate or self.on_duplicate
        _check_policy(policy)
        ids, vectors = self._validate(ids, vectors)
        keep = self._dedupe(ids, policy)
        for start in range(0, len(keep), _ENCODE_ROWS):
            chunk = keep[start : start + _ENCODE_ROWS]
            gradients, scales = self.store.codec.encode(vectors[chunk])
            self._queue([ids[i] for i in chunk], gradients, scales)
        return len(keep)

    def append_encoded(
        self,
        ids: Sequence[str],
        gradients: torch.Tensor,
        scales: torch.Tensor | None = None,
        on_duplicate: OnDuplicate | None = None,
    ) -> int:
        """Queue rows that are already in this store's codec, byte for byte (`merge_stores` copies rows so).

        Args:
            ids: passage ids, one per row.
            gradients: `[len(ids), codec.width(D)]` in the codec's dtype, as another store holds them.
            scales: codecs with scales only: `[len(ids), codec.n_scales(D)]` float32.
            on_duplicate: overrides the writer's policy for this call.

        Returns:
            The number of rows queued (fewer than `len(ids)` when `skip` dropped duplicates).

        Raises:
            InvalidAppendError: a dtype, shape or scales tensor that does not fit this store's codec.
            DuplicateIdError: `on_duplicate="error"` and an id is stored, pending, or repeated in `ids`.
        """
        if self._lock_fd is None:
            raise InvalidAppendError("this writer is not open: use `with store.writer() as w:`")
        policy = on_duplicate or self.on_duplicate
        _check_policy(policy)
        ids = self._validate_ids(ids)
        codec, dim = self.store.codec, self.store.dim
        width, n_scales = codec.width(dim), codec.n_scales(dim)   # the stored tensors' row shapes
        if gradients.dtype != codec.dtype or list(gradients.shape) != [len(ids), width]:
            raise InvalidAppendError(
                f"encoded rows are {gradients.dtype} {list(gradients.shape)}, expected {codec.dtype} "
                f"[{len(ids)}, {width}] for this {codec.name} store; copy rows only between stores of one codec"
            )
        if codec.has_scales != (scales is not None) or (
            scales is not None and list(scales.shape) != [len(ids), n_scales]
        ):
            expected = f"[{len(ids)}, {n_scales}] float32" if codec.has_scales else "none"
            found = "none" if scales is None else str(list(scales.shape))
            raise InvalidAppendError(f"scales {found}, expected {expected} for this {codec.name} store")
        keep = self._dedupe(ids, policy)
        for start in range(0, len(keep), _ENCODE_ROWS):
            chunk = keep[start : start + _ENCODE_ROWS]
            self._queue(
                [ids[i] for i in chunk],
                gradients[chunk].contiguous(),
                scales[chunk].to(torch.float32).contiguous() if scales is not None else None,
            )
        return len(keep)

    def _queue(self, ids: list[str], gradients: torch.Tensor, scales: torch.Tensor | None) -> None:
        """Buffer encoded rows for the next commit, flushing each shard as soon as it fills."""
        first = len(self._crcs)
        for j, pid in enumerate(ids):
            self._pending[pid] = first + j  # a replaced pending row stays in its shard as garbage
        self._crcs.extend(row_crcs(gradients, scales))
        self._buffer.append((gradients, scales))
        self._buffered_rows += len(ids)
        while self._buffered_rows >= self.rows_per_shard:
            self._flush(self.rows_per_shard)

    @staticmethod
    def _validate_ids(ids: Sequence[str]) -> list[str]:
        if isinstance(ids, str):
            raise InvalidAppendError(
                f"`ids` must be a list of strings, got the single string {ids!r}; wrap it in a list"
            )
        ids = list(ids)
        bad = [i for i in ids if not isinstance(i, str) or not i]
        if bad:
            raise InvalidAppendError(f"passage ids must be non-empty strings, got {bad[:5]!r}; convert them with str()")
        return ids

    def _validate(self, ids: Sequence[str], vectors: torch.Tensor) -> tuple[list[str], torch.Tensor]:
        ids = self._validate_ids(ids)
        if not isinstance(vectors, torch.Tensor):
            raise InvalidAppendError(f"`vectors` must be a torch.Tensor, got {type(vectors).__name__}")
        if vectors.dim() == 1:
            vectors = vectors.unsqueeze(0)
        dim = self.store.dim
        if vectors.dim() != 2 or vectors.shape[0] != len(ids) or vectors.shape[1] != dim:
            raise InvalidAppendError(
                f"`vectors` has shape {list(vectors.shape)}, expected [{len(ids)}, {dim}] (one row of the "
                f"store's dimension D={dim} per id); check that the store and the learner belong together"
            )
        if not vectors.is_floating_point():
            raise InvalidAppendError(f"`vectors` must be a float tensor, got {vectors.dtype}")
        finite = torch.cat(
            [torch.isfinite(vectors[i : i + _ENCODE_ROWS]).all(dim=1) for i in range(0, len(ids), _ENCODE_ROWS)]
        )
        if not bool(finite.all()):
            bad_ids = [ids[i] for i in (~finite).nonzero().flatten().tolist()]
            raise InvalidAppendError(
                f"{len(bad_ids)} gradient(s) hold NaN or inf values (ids {bad_ids[:5]!r}); a sum including "
                "them would poison every answer that retrieves them: fix the encoder (fp32, loss scaling)"
            )
        return ids, vectors

    def _dedupe(self, ids: list[str], policy: str) -> list[int]:
        """Indices of `ids` to write under `policy` (raises for `error`)."""
        if policy == "replace":
            last = {pid: i for i, pid in enumerate(ids)}
            return sorted(last.values())
        stored = self.store._index.lookup(ids)
        seen: set[str] = set()
        keep, dupes = [], []
        for i, pid in enumerate(ids):
            if pid in seen or pid in stored or pid in self._pending:
                dupes.append(pid)
            else:
                keep.append(i)
            seen.add(pid)
        if dupes and policy == "error":
            raise DuplicateIdError(str(self.store.path), list(dict.fromkeys(dupes)))
        return keep

    def _flush(self, rows: int) -> None:
        """Write the first `rows` buffered rows as one shard file (registered only at commit)."""
        grads = torch.cat([g for g, _ in self._buffer]) if len(self._buffer) > 1 else self._buffer[0][0]
        scales = None
        if self.store.codec.has_scales:
            scales = torch.cat([s for _, s in self._buffer]) if len(self._buffer) > 1 else self._buffer[0][1]
        shard_id = self._next_shard_id + len(self._written)
        name = shard_name(shard_id)
        final = self.store.path / "shards" / name
        tmp = final.with_name(f".tmp-{name}-{os.getpid()}")
        metadata = {
            "format": "regrad-gradient-store",
            "fingerprint": self.store.fingerprint,
            "codec": self.store.codec.name,
        }
        try:
            size, sha = write_shard(
                tmp, self.store.codec, grads[:rows], scales[:rows] if scales is not None else None, metadata
            )
        except BaseException:
            tmp.unlink(missing_ok=True)  # e.g. a full disk; only a handle's first writer lists shards/
            raise
        _crash_point("shard_written")
        os.replace(tmp, final)
        _crash_point("shard_renamed")
        self._written.append(ShardRecord(shard_id, name, rows, size, sha))
        rest = grads[rows:]
        self._buffer = [(rest, scales[rows:] if scales is not None else None)] if rest.shape[0] else []
        self._buffered_rows -= rows

    def commit(self, retire: Collection[int] = ()) -> None:
        """Make everything appended so far durable and visible, atomically (one SQLite transaction).

        Args:
            retire: shard ids to unregister in the same transaction (`compact`, once every id they held has
                been appended again). Their files are the caller's to delete, after this returns.
        """
        if not self._pending and not retire:
            self._reset()  # e.g. every row was replaced within the batch: nothing to register
            return
        if self._buffered_rows:
            self._flush(self._buffered_rows)
        fsync_dir(self.store.path / "shards")
        rps = self.rows_per_shard
        base = self._next_shard_id
        rows = [(pid, base + p // rps, p % rps, self._crcs[p]) for pid, p in self._pending.items()]
        _crash_point("before_index_commit")
        self.store._index.commit(self._written, rows, replace=True, retire=retire)
        _crash_point("index_committed")
        self._next_shard_id += len(self._written)
        self._reset()

    def abort(self) -> None:
        """Discard rows appended since the last commit (their shard files are deleted)."""
        for record in self._written:
            (self.store.path / "shards" / record.name).unlink(missing_ok=True)
        self._reset()
