"""`index.sqlite`: passage id → (shard, row, CRC32), and the shard table. Its transaction is the commit point.

The `shards` table is the store's only shard list (name, rows, bytes, sha256 of every shard file);
`verify` checks the files against it. Shard ids only grow: a writer registers `max + 1, max + 2, …` and
`compact` retires shards (deletes their records) without ever reusing an id, so a shard id names one
file's contents for the store's whole life, and `max(shard_id) + 1 - count` counts the retired shards.

WAL mode lets readers (other processes, or the same process through another connection) look rows
up while a writer commits; a reader always sees whole commits.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from gradient_store.errors import StoreError
from gradient_store.manifest import ShardRecord

__all__ = ["INDEX_NAME", "RowRef", "Index"]

INDEX_NAME = "index.sqlite"
_SQL_CHUNK = 500  # ids per `IN (...)` query; far below SQLite's host-parameter limit

_SCHEMA = """
CREATE TABLE IF NOT EXISTS shards (
    shard_id INTEGER PRIMARY KEY,
    name     TEXT    NOT NULL UNIQUE,
    rows     INTEGER NOT NULL,
    bytes    INTEGER NOT NULL,
    sha256   TEXT    NOT NULL
);
CREATE TABLE IF NOT EXISTS passages (
    id       TEXT    PRIMARY KEY,
    shard_id INTEGER NOT NULL REFERENCES shards(shard_id),
    row      INTEGER NOT NULL,
    crc32    INTEGER NOT NULL
);
"""


@dataclass(frozen=True)
class RowRef:
    """Where one passage's gradient lives."""

    shard_id: int
    row: int
    crc32: int


class Index:
    """A thread-safe handle on `index.sqlite` (one connection, one lock; queries are short)."""

    def __init__(self, store_dir: Path, *, create: bool = False) -> None:
        self.path = store_dir / INDEX_NAME
        # timeout: wait out a concurrent writer's commit instead of failing with "database is locked".
        self._conn = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            if create:
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.executescript(_SCHEMA)
            self._conn.execute("PRAGMA synchronous=FULL")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # --- reads --------------------------------------------------------------------------------------------

    def lookup(self, ids: list[str]) -> dict[str, RowRef]:
        """Refs for the ids that are stored (absent ids are simply not in the result)."""
        out: dict[str, RowRef] = {}
        unique = list(dict.fromkeys(ids))
        with self._lock:
            for i in range(0, len(unique), _SQL_CHUNK):
                chunk = unique[i : i + _SQL_CHUNK]
                marks = ",".join("?" * len(chunk))
                for pid, shard_id, row, crc in self._conn.execute(
                    f"SELECT id, shard_id, row, crc32 FROM passages WHERE id IN ({marks})", chunk
                ):
                    out[pid] = RowRef(shard_id, row, crc)
        return out

    def probe(self) -> None:
        """A query that reads the passages table in O(log rows) (`count` reads all of it)."""
        with self._lock:
            self._conn.execute("SELECT max(rowid) FROM passages").fetchone()

    def count(self) -> int:
        with self._lock:
            return self._conn.execute("SELECT COUNT(*) FROM passages").fetchone()[0]

    def ids(self) -> list[str]:
        """All stored ids, oldest first (a replaced id keeps its place)."""
        with self._lock:
            return [r[0] for r in self._conn.execute("SELECT id FROM passages ORDER BY rowid")]

    def ids_in(self, shard_ids: Collection[int]) -> list[str]:
        """The ids whose rows live in `shard_ids`, in `ids()` order (one pass over the index)."""
        wanted = set(shard_ids)
        with self._lock:
            return [pid for pid, shard_id in self._conn.execute("SELECT id, shard_id FROM passages ORDER BY rowid")
                    if shard_id in wanted]

    def shards(self) -> list[ShardRecord]:
        with self._lock:
            return [
                ShardRecord(*r)
                for r in self._conn.execute("SELECT shard_id, name, rows, bytes, sha256 FROM shards ORDER BY shard_id")
            ]

    def max_shard_id(self) -> int | None:
        """The highest registered shard id (None for an empty table), in O(log shards)."""
        with self._lock:
            return self._conn.execute("SELECT max(shard_id) FROM shards").fetchone()[0]

    def retired_shards(self) -> int:
        """How many shard ids below the highest were retired by `compact` (ids are never reused), in one
        short query: a reader compares it with its last value to learn that shard files were deleted."""
        with self._lock:
            count, top = self._conn.execute("SELECT count(*), max(shard_id) FROM shards").fetchone()
        return 0 if top is None else top + 1 - count

    def registered(self, shard_ids: Iterable[int]) -> set[int]:
        """The ids among `shard_ids` that the `shards` table still lists."""
        unique = list(dict.fromkeys(shard_ids))
        found: set[int] = set()
        with self._lock:
            for i in range(0, len(unique), _SQL_CHUNK):
                chunk = unique[i : i + _SQL_CHUNK]
                marks = ",".join("?" * len(chunk))
                found.update(r[0] for r in self._conn.execute(
                    f"SELECT shard_id FROM shards WHERE shard_id IN ({marks})", chunk))
        return found

    def live_rows_by_shard(self) -> dict[int, int]:
        """`{shard_id: rows the index points at}` (a shard's other rows are garbage); for `compact`."""
        with self._lock:
            return dict(self._conn.execute("SELECT shard_id, count(*) FROM passages GROUP BY shard_id"))

    def shard(self, shard_id: int) -> ShardRecord:
        """One registered shard's record (KeyError when the index does not list it)."""
        with self._lock:
            row = self._conn.execute(
                "SELECT shard_id, name, rows, bytes, sha256 FROM shards WHERE shard_id = ?", (shard_id,)
            ).fetchone()
        if row is None:
            raise KeyError(shard_id)
        return ShardRecord(*row)

    def passages_by_shard(self) -> Iterator[tuple[str, int, int, int]]:
        """Every `(id, shard_id, row, crc32)`, grouped by shard then row (for verify)."""
        with self._lock:
            rows = self._conn.execute("SELECT id, shard_id, row, crc32 FROM passages ORDER BY shard_id, row").fetchall()
        yield from rows

    def integrity_problems(self) -> list[str]:
        with self._lock:
            result = [r[0] for r in self._conn.execute("PRAGMA integrity_check")]
        return [] if result == ["ok"] else result

    # --- the commit -----------------------------------------------------------------------------------------

    def commit(
        self,
        shards: list[ShardRecord],
        rows: Iterable[tuple[str, int, int, int]],
        replace: bool,
        retire: Collection[int] = (),
    ) -> None:
        """Register new shards and their rows in ONE transaction: all of it becomes visible, or none.

        Args:
            shards: the new shard files (already renamed into place and fsynced).
            rows: `(id, shard_id, row, crc32)`; an id already present is repointed when `replace`,
                which the writer has checked (it holds the lock), else the insert fails.
            replace: allow repointing existing ids (their old rows become garbage).
            retire: shard ids to unregister in the same transaction (`compact`: every id they held has been
                repointed by `rows`). The transaction is rolled back if an id still points at one of them.
        """
        verb = "INSERT INTO passages (id, shard_id, row, crc32) VALUES (?, ?, ?, ?)"
        if replace:
            # UPDATE-on-conflict keeps the id's rowid, so `ids()` order stays insertion order.
            verb += " ON CONFLICT(id) DO UPDATE SET shard_id=excluded.shard_id, row=excluded.row, crc32=excluded.crc32"
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(
                    "INSERT INTO shards (shard_id, name, rows, bytes, sha256) VALUES (?, ?, ?, ?, ?)",
                    [(s.shard_id, s.name, s.rows, s.bytes, s.sha256) for s in shards],
                )
                self._conn.executemany(verb, rows)
                retire = list(retire)
                for i in range(0, len(retire), _SQL_CHUNK):
                    chunk = retire[i : i + _SQL_CHUNK]
                    marks = ",".join("?" * len(chunk))
                    left = self._conn.execute(
                        f"SELECT count(*) FROM passages WHERE shard_id IN ({marks})", chunk).fetchone()[0]
                    if left:
                        raise StoreError(f"gradient store {self.path.parent}: {left} passage(s) still point at "
                                         "shards being retired; nothing was changed (a bug: please report it)")
                    self._conn.execute(f"DELETE FROM shards WHERE shard_id IN ({marks})", chunk)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
