"""`index.sqlite`: passage id → (shard, row, CRC32), and the shard table. Its transaction is the commit point.

The `shards` table is the store's only shard list (name, rows, bytes, sha256 of every shard file);
`verify` checks the files against it.

WAL mode lets readers (other processes, or the same process through another connection) look rows
up while a writer commits; a reader always sees whole commits.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

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

    def commit(self, shards: list[ShardRecord], rows: Iterable[tuple[str, int, int, int]], replace: bool) -> None:
        """Register new shards and their rows in ONE transaction: all of it becomes visible, or none.

        Args:
            shards: the new shard files (already renamed into place and fsynced).
            rows: `(id, shard_id, row, crc32)`; an id already present is repointed when `replace`,
                which the writer has checked (it holds the lock), else the insert fails.
            replace: allow repointing existing ids (their old rows become garbage).
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
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
