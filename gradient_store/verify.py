"""`verify`: read every shard once and check it against the index's `shards` and `passages` tables.

The index is the only shard list of a version-2 store. A version-1 store's manifest also carries a copy
of it, which is compared with the index until a writer upgrades the store.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from gradient_store.errors import StoreFormatError
from gradient_store.handle import StoreHandle
from gradient_store.manifest import Manifest, ShardRecord
from gradient_store.shard import scan_shard

__all__ = ["VerifyReport", "verify_store"]


@dataclass
class VerifyReport:
    """The outcome of `GradientStore.verify()`; `ok` is True when there are no errors.

    Errors make a store unfit to serve as-is (a shard whose sha256 or a row whose CRC32 differs, a missing
    file, an index row pointing nowhere). Warnings are harmless leftovers: files from an interrupted
    writer, and (version-1 stores) a manifest one commit behind the index; the next writer opened on a
    fresh handle removes the files, and upgrades a version-1 manifest (dropping its shard list).
    """

    path: str
    shards_checked: int = 0
    rows_checked: int = 0
    passages: int = 0
    garbage_rows: int = 0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    corrupt_shards: list[str] = field(default_factory=list)
    corrupt_ids: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        """A few lines for humans: the verdict, then each error and warning."""
        verdict = "OK" if self.ok else f"FAILED ({len(self.errors)} error(s))"
        lines = [
            f"{self.path}: {verdict}: {self.shards_checked} shard(s), {self.rows_checked} row(s) checked, "
            f"{self.passages} passage(s), {self.garbage_rows} garbage row(s)"
        ]
        lines += [f"error: {e}" for e in self.errors]
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def verify_store(
    store: StoreHandle,
    on_shard: Callable[[ShardRecord], None] | None = None,
    shard_ids: Collection[int] | None = None,
) -> VerifyReport:
    """Check every shard's size, header and sha256 against the index's shard table, every index row's
    shard/row/CRC32, and that the manifest loads (a version-1 manifest's shard list: against the index).

    Args:
        store: an open store (a verify never writes).
        on_shard: called after each shard is read (progress bars).
        shard_ids: read only these shards (e.g. the ones a merge just wrote); the index and the manifest
            are still checked whole. Default: every shard.

    Returns:
        A `VerifyReport`; corrupt data is reported, never raised.
    """
    report = VerifyReport(path=str(store.path))
    report.errors += [f"index.sqlite integrity check: {p}" for p in store._index.integrity_problems()]

    shards = {s.shard_id: s for s in store._index.shards()}
    _check_manifest(store, shards, report)

    rows_by_shard: dict[int, list[tuple[str, int, int]]] = defaultdict(list)
    for pid, shard_id, row, crc in store._index.passages_by_shard():
        report.passages += 1
        record = shards.get(shard_id)
        if record is None:
            report.errors.append(f"passage {pid!r} points at shard id {shard_id}, which the index does not list")
            report.corrupt_ids.append(pid)
        elif not 0 <= row < record.rows:
            report.errors.append(f"passage {pid!r} points at row {row} of {record.name}, which has {record.rows} rows")
            report.corrupt_ids.append(pid)
        else:
            rows_by_shard[shard_id].append((pid, row, crc))

    for record in shards.values():
        if shard_ids is not None and record.shard_id not in shard_ids:
            continue
        _check_shard(store, record, rows_by_shard.get(record.shard_id, []), report)
        if on_shard is not None:
            on_shard(record)

    report.garbage_rows = sum(s.rows for s in shards.values()) - report.passages
    names = {s.name for s in shards.values()}
    leftovers = sorted(f.name for f in (store.path / "shards").iterdir() if f.name not in names)
    if leftovers:
        report.warnings.append(
            f"{len(leftovers)} unregistered file(s) in shards/ left by an interrupted writer "
            f"({', '.join(leftovers[:3])}); invisible to readers, the next writer deletes them"
        )
    return report


def _check_manifest(store: StoreHandle, shards: dict[int, ShardRecord], report: VerifyReport) -> None:
    try:
        manifest = Manifest.load(store.path)  # from disk: a writer may have upgraded it since this handle opened
    except StoreFormatError as e:
        report.errors.append(str(e))
        return
    if manifest.format_version != 1:
        return  # the header alone: nothing in it mirrors the index
    listed = manifest.v1_shards
    for s in listed:
        if shards.get(s.shard_id) != s:
            report.errors.append(
                f"manifest.json lists {s.name} (sha256 {s.sha256[:12]}…) but index.sqlite "
                f"{'records it differently' if s.shard_id in shards else 'does not list it'}"
            )
    lagging = sorted(set(shards) - {s.shard_id for s in listed})
    if lagging:
        report.warnings.append(
            f"manifest.json (format_version 1) lags index.sqlite by {len(lagging)} shard(s) (a writer "
            "stopped after its commit); the next writer upgrades it to version 2, without a shard list"
        )


def _check_shard(
    store: StoreHandle, record: ShardRecord, rows: list[tuple[str, int, int]], report: VerifyReport
) -> None:
    path = store.path / "shards" / record.name
    report.shards_checked += 1

    def fail(reason: str, ids: list[str]) -> None:
        report.errors.append(f"{record.name}: {reason}")
        report.corrupt_shards.append(record.name)
        report.corrupt_ids.extend(ids)

    try:
        scan = scan_shard(path, store.codec, record.rows, store.dim) if path.is_file() else None
    except FileNotFoundError:
        scan = None
    if scan is None:
        if record.shard_id not in store._index.registered([record.shard_id]):
            report.shards_checked -= 1
            report.warnings.append(
                f"{record.name} was retired by a `compact` while this verify ran (its rows moved to new shards); "
                "run verify again"
            )
            return
        fail("file is missing", [pid for pid, _, _ in rows])
        return
    if scan.header_error is not None:
        fail(f"bad header: {scan.header_error}", [pid for pid, _, _ in rows])
        return
    assert scan.crcs is not None
    bad = [pid for pid, row, crc in rows if scan.crcs[row] != crc]
    report.rows_checked += len(rows)
    if scan.sha256 != record.sha256 or scan.size != record.bytes or bad:
        reason = (
            f"sha256 {scan.sha256[:12]}… differs from the recorded {record.sha256[:12]}…"
            if scan.sha256 != record.sha256
            else "sha256 matches"
        )
        if scan.size != record.bytes:
            reason = f"{scan.size} bytes, the index records {record.bytes}; {reason}"
        if bad:
            reason += f"; {len(bad)} row(s) fail their CRC32: {', '.join(repr(p) for p in bad[:5])}"
        else:
            reason += "; every indexed row passes its CRC32 (the damage is in garbage rows or header padding)"
        fail(reason, bad)
