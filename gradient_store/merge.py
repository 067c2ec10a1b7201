"""`merge_stores`: combine stores of one learner and one codec into one, in a single atomic commit.

Rows are copied as stored (the codec's bytes, CRC-checked on the way out), never decoded and re-encoded,
so a merged row is bit-identical to its source row. The whole merge goes through one `StoreWriter` and is
committed once, at the end: shard files are flushed as they fill (unregistered, so invisible), and the one
SQLite transaction of the commit makes every copied row visible at once. A crash or SIGKILL before that
transaction leaves the destination exactly as it was (the next writer deletes the unregistered shards);
after it, the merge is complete. A destination the merge created is removed when the merge fails with an
error; a SIGKILL leaves it as an empty store. The destination's writer lock is held for the whole merge.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from gradient_store.errors import FingerprintMismatchError, StoreError, StoreMismatchError
from gradient_store.manifest import MANIFEST_NAME
from gradient_store.store import GradientStore
from gradient_store.writer import OnDuplicate, StoreWriter

__all__ = ["MergeReport", "merge_stores", "copy_rows"]

_COPY_ROWS = 64  # rows read from a source per step: bounds the copy's memory to a few rows


@dataclass
class MergeReport:
    """What `merge_stores` did.

    Attributes:
        into: the destination store.
        sources: the source stores, in merge order.
        rows_copied: rows written into `into` (over all sources).
        duplicates: ids met more than once (already in `into`, or in an earlier source) and left out
            (`skip`) or repointed (`replace`, counted in `rows_copied` too).
        per_source: rows each source holds.
        store_rows: passages in `into` after the merge.
        seconds: wall time of the merge.
    """

    into: str
    sources: list[str]
    rows_copied: int = 0
    duplicates: int = 0
    per_source: dict[str, int] = field(default_factory=dict)
    store_rows: int = 0
    seconds: float = 0.0


def _check_compatible(reference: GradientStore, other: GradientStore) -> None:
    """Refuse a store of another learner, codec or layout than `reference`."""
    if other.fingerprint != reference.fingerprint:
        raise FingerprintMismatchError(str(other.path), expected=reference.fingerprint, found=other.fingerprint)
    fix = (f"only stores of one learner, codec and layout combine (as {reference.path}); re-encode "
           f"{other.path} with the same checkpoint and --codec {reference.codec.name}, or merge it elsewhere")
    for what, expected, found in (
        ("codec", reference.codec.name, other.codec.name),
        ("int8 block size", reference.codec.block_size, other.codec.block_size),
        ("a parameter layout of dimension", reference.dim, other.dim),
    ):
        if expected != found:
            raise StoreMismatchError(str(other.path), what, expected, found, fix)
    if other.layout != reference.layout:
        pairs = zip(reference.layout + [{}] * len(other.layout), other.layout + [{}] * len(reference.layout))
        i, (want, got) = next((i, p) for i, p in enumerate(pairs) if p[0] != p[1])
        raise StoreMismatchError(
            str(other.path), f"layout[{i}] =", _entry(want), _entry(got), fix
        )


def _entry(entry: dict) -> str:
    return f"{entry['name']} {entry['shape']}" if entry else "nothing"


def copy_rows(
    source: GradientStore, ids: Sequence[str], writer: StoreWriter, on_rows: Callable[[int], None] | None = None
) -> int:
    """Append the stored rows of `ids` from `source` to `writer`, as stored bytes (each CRC-checked on the way
    out), a few rows at a time; returns the rows queued. `merge_stores` and `compact_store` copy rows so.

    Raises:
        CorruptShardError: a row fails its checksum.
    """
    copied = 0
    for start in range(0, len(ids), _COPY_ROWS):
        chunk = list(ids[start : start + _COPY_ROWS])
        rows, _, _ = source._fetch(chunk, on_corrupt="raise")
        gradients = [rows[pid][0] for pid in chunk]
        scales = [rows[pid][1] for pid in chunk] if source.codec.has_scales else None
        copied += writer.append_encoded(
            chunk, torch.stack(gradients), torch.stack(scales) if scales is not None else None
        )
        if on_rows is not None:
            on_rows(len(chunk))
    return copied


def merge_stores(
    sources: Sequence[str | Path],
    into: str | Path,
    *,
    on_duplicate: OnDuplicate = "error",
    lock_timeout_s: float = 30.0,
    on_rows: Callable[[int], None] | None = None,
) -> MergeReport:
    """Copy every row of `sources` into the store `into` (created like the first source if missing).

    Args:
        sources: store directories of one learner (fingerprint), codec and parameter layout.
        into: the destination store; when it exists it must match them too.
        on_duplicate: for an id already in `into` or met in an earlier source, the rules of `append`:
            `error` (default) refuses the merge before anything is visible, `skip` keeps the first row,
            `replace` keeps the last one (sources are read in the order given).
        lock_timeout_s: how long to wait for another writer of `into`.
        on_rows: called with the number of rows read after each step (progress bars).

    Returns:
        A `MergeReport`.

    Raises:
        FingerprintMismatchError: a store of another learner.
        StoreMismatchError: another codec or parameter layout.
        DuplicateIdError: `on_duplicate="error"` and an id occurs twice.
        CorruptShardError: a source row fails its checksum (run `regrad store verify` on that source).

    Example:
        >>> merge_stores(["enc.parts/a", "enc.parts/b"], "enc", on_duplicate="skip")  # doctest: +SKIP
    """
    if not sources:
        raise StoreError("nothing to merge: name at least one source store")
    into = Path(into)
    started = time.perf_counter()
    resolved = [Path(s).resolve() for s in sources]
    if into.resolve() in resolved:
        raise StoreError(f"gradient store {into} is both a source and the destination of the merge; merge into "
                         "another directory")
    repeated = sorted({str(s) for s in resolved if resolved.count(s) > 1})
    if repeated:
        raise StoreError(f"source store(s) named twice: {', '.join(repeated)}; name each source once")

    opened: list[GradientStore] = []
    created = False  # `into` did not exist: a merge that fails leaves no empty store behind
    try:
        for source in sources:
            opened.append(GradientStore.open(source, cache_bytes=0))
        first = opened[0]
        for other in opened[1:]:
            _check_compatible(first, other)
        if (into / MANIFEST_NAME).exists():
            dst = GradientStore.open(into, cache_bytes=0)
            opened.append(dst)
            _check_compatible(first, dst)
        else:
            created = not into.exists()
            dst = GradientStore.create(into, layout=first.layout, fingerprint=first.fingerprint,
                                       codec=first.codec.name, rows_per_shard=first.rows_per_shard, cache_bytes=0)
            opened.append(dst)
        report = MergeReport(into=str(into), sources=[str(s) for s in sources])
        rows_before = len(dst)
        # One writer, one commit (on leaving the block): the merge is visible whole or not at all.
        with dst.writer(on_duplicate=on_duplicate, lock_timeout_s=lock_timeout_s) as writer:
            for source in opened[: len(sources)]:
                ids = source.ids()
                report.per_source[str(source.path)] = len(ids)
                report.rows_copied += copy_rows(source, ids, writer, on_rows)
        report.store_rows = len(dst)
        report.duplicates = rows_before + sum(report.per_source.values()) - report.store_rows
        report.seconds = time.perf_counter() - started
        return report
    except BaseException:
        for store in opened:
            store.close()
        if created:
            shutil.rmtree(into, ignore_errors=True)
        raise
    finally:
        for store in opened:
            store.close()
