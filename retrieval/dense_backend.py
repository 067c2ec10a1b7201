"""Dense retrieval: sentence embeddings in a faiss index, passages in SQLite, all in one folder.

Folder layout:
    regrad_index.json   backend, embedder (name, folder, pooling/normalise/prompts), dimension, faiss kind
    passages.sqlite     row (faiss id, never reused) -> id, title, text
    vectors.faiss       faiss IndexIDMap2 over `flat` (exact inner product), `ivf<n>` or `hnsw<M>`

The score is the inner product of the query and passage embeddings: cosine similarity when the
model normalises (a Normalize module, as the bundled all-MiniLM-L6-v2 has). Passages are embedded
with the model's document prompt, queries with its query prompt (`Embedder`). SQLite is the
source of truth: a vector whose row is gone (replaced or deleted) is filtered out at search
time, which is how HNSW (no removal in faiss) supports replace and delete.

Writes: one writer at a time per folder (an `fcntl` lock file, across processes). The faiss file
is replaced atomically (temp file, rename) and SQLite commits after it, so a reader never sees a
half-written index; readers notice a new faiss file by its identity (inode, size, mtime) and reload.
Embedding runs outside every lock.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

try:
    import faiss
except ModuleNotFoundError as e:  # the `dense` extra
    raise ModuleNotFoundError("the dense and hybrid backends need faiss: pip install 'regrad[dense]'",
                              name=e.name) from e

from retrieval._indexdir import prepare_dir, write_info
from retrieval.config import RetrieverConfig
from retrieval.embedder import Embedder, bundled_embedder_path, passage_embedding_text
from retrieval.errors import IndexLockedError, IndexMismatchError, RetrievalError
from retrieval.passage import Passage
from retrieval.validation import check_k, check_passage, clean_text

try:  # POSIX only; elsewhere, writers in separate processes are not excluded (one process is fine).
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["DenseRetriever", "build_faiss_index"]

VECTORS_FILE = "vectors.faiss"
PASSAGES_FILE = "passages.sqlite"
LOCK_FILE = "write.lock"
BATCH = 256  # passages embedded and written together
SAVE_EVERY = 50_000  # passages between faiss saves during a long add
IVF_NPROBE = 16  # cells searched per query for ivf<n> (recall vs speed)


def build_faiss_index(kind: str, dim: int) -> faiss.Index:
    """An empty inner-product index of `kind` (`flat`, `ivf<nlist>`, `hnsw<M>`) wrapped in an id map."""
    if kind == "flat":
        base = faiss.IndexFlatIP(dim)
    elif kind.startswith("ivf"):
        base = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, int(kind[3:]), faiss.METRIC_INNER_PRODUCT)
        base.nprobe = min(IVF_NPROBE, int(kind[3:]))
    elif kind.startswith("hnsw"):
        base = faiss.IndexHNSWFlat(dim, int(kind[4:]), faiss.METRIC_INNER_PRODUCT)
    else:
        raise RetrievalError(f"unknown dense index kind {kind!r}; use flat, ivf<nlist> or hnsw<M>")
    return faiss.IndexIDMap2(base)


class DenseRetriever:
    """Cosine-similarity search over passage embeddings (see the module docstring).

    Args:
        path: the index folder (created when missing and `create_if_missing`).
        embedder: a loaded `Embedder` (shared with the hybrid backend); None = build one from the args.
        embedder_path, device, embed_batch_size, embed_max_tokens: used when `embedder` is None;
            embedder_path None = the folder recorded when the index was built, else the bundled model.
        dense_index: faiss index kind for a NEW index (an existing one keeps its own).
        create_if_missing: create an empty index instead of raising `IndexNotFoundError`.
        lock_timeout_s: how long a write waits for another writer.
    """

    backend = "dense"

    def __init__(
        self,
        path: str | Path,
        *,
        embedder: Embedder | None = None,
        embedder_path: str | None = None,
        device: str = "cpu",
        embed_batch_size: int = 64,
        embed_max_tokens: int | None = None,
        dense_index: str = "flat",
        create_if_missing: bool = True,
        lock_timeout_s: float = 30.0,
    ) -> None:
        self.path = Path(path)
        self.lock_timeout_s = lock_timeout_s
        info = prepare_dir(self.path, self.backend, create_if_missing)
        if embedder is None and embedder_path is None and info is not None:
            embedder_path = info.get("embedder_path")  # the folder this index was built with (None: bundled)
            if embedder_path is not None and not Path(embedder_path).is_dir():
                raise IndexMismatchError(
                    f"{self.path} was built with the embedder folder {embedder_path}, which is gone; "
                    "pass the same model's folder as `embedder_path` (--embedder) or rebuild"
                )
        self.embedder = embedder or Embedder(embedder_path, device=device, max_tokens=embed_max_tokens,
                                             batch_size=embed_batch_size)
        settings = self.embedder.settings.describe()
        if info is None:
            info = write_info(self.path, self.backend, embedder=self.embedder.name, dim=self.embedder.dim,
                              embedder_path=_recorded_path(self.embedder.path), embedder_settings=settings,
                              faiss_index=dense_index)
        recorded = info.get("embedder_settings")  # absent in indexes built before it was recorded
        if (info.get("dim") != self.embedder.dim or info.get("embedder") != self.embedder.name
                or (recorded is not None and recorded != settings)):
            raise IndexMismatchError(
                f"{self.path} was built with embedder {info.get('embedder')!r} (dim {info.get('dim')}, "
                f"{recorded or 'settings not recorded'}), not {self.embedder.name!r} (dim {self.embedder.dim}, "
                f"{settings}); use the same `embedder_path` (--embedder) or rebuild"
            )
        self.index_kind = str(info.get("faiss_index", "flat"))
        self._lock = threading.RLock()  # guards the faiss object and the SQLite connection
        self._db = sqlite3.connect(self.path / PASSAGES_FILE, check_same_thread=False, timeout=lock_timeout_s)
        with self._db:
            self._db.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS passages (row INTEGER PRIMARY KEY AUTOINCREMENT, "
                "id TEXT UNIQUE NOT NULL, title TEXT NOT NULL, text TEXT NOT NULL)"
            )
        self._faiss: faiss.Index | None = None
        self._faiss_identity: tuple | None = None
        self._load_vectors()

    @classmethod
    def from_config(cls, config: RetrieverConfig, path: str | Path | None = None,
                    embedder: Embedder | None = None) -> DenseRetriever:
        return cls(
            path or config.index, embedder=embedder, embedder_path=config.embedder_path, device=config.device,
            embed_batch_size=config.embed_batch_size, embed_max_tokens=config.embed_max_tokens,
            dense_index=config.dense_index, create_if_missing=config.create_if_missing,
            lock_timeout_s=config.lock_timeout_s,
        )

    # -- reading --------------------------------------------------------------------------------

    def search(self, query: str, k: int = 10) -> list[Passage]:
        return self.search_many([query], k)[0]

    def search_many(self, queries: Sequence[str], k: int = 10) -> list[list[Passage]]:
        check_k(k)
        results: list[list[Passage]] = [[] for _ in queries]
        todo = [i for i, q in enumerate(queries) if isinstance(q, str) and q.strip()]
        if not todo:
            return results
        vectors = self.embedder.embed_queries([queries[i] for i in todo])  # with the query prompt
        with self._lock:
            self._load_vectors()
            index = self._faiss
            stale = index.ntotal - self._count_rows()  # replaced/deleted vectors still in faiss (HNSW)
            fetch = min(index.ntotal, k + max(stale, 0))
            if fetch == 0:
                return results
            scores, rows = index.search(vectors, fetch)  # (n_queries, fetch) each
            found = self._rows_to_passages({int(r) for r in rows.ravel() if r >= 0})
        for slot, i in enumerate(todo):
            hits = []
            for score, row in zip(scores[slot], rows[slot], strict=True):
                passage = found.get(int(row))
                if passage is not None:
                    hits.append(Passage(passage.id, passage.title, passage.text, float(score)))
                    if len(hits) == k:
                        break
            results[i] = hits
        return results

    def get(self, ids: Sequence[str]) -> list[Passage]:
        wanted = list(dict.fromkeys(clean_text(i) for i in ids))
        found: dict[str, Passage] = {}
        with self._lock:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start:start + 500]
                marks = ",".join("?" * len(chunk))
                for pid, title, text in self._db.execute(
                    f"SELECT id, title, text FROM passages WHERE id IN ({marks})", chunk
                ):
                    found[pid] = Passage(pid, title, text)
        return [found[i] for i in wanted if i in found]

    def count(self) -> int:
        with self._lock:
            return self._count_rows()

    # -- writing --------------------------------------------------------------------------------

    def add(self, passages: Iterable[Passage]) -> int:
        with self.writing() as writer:
            batch: list[Passage] = []
            for passage in passages:
                batch.append(passage)
                if len(batch) == BATCH:
                    writer.add_batch(batch)
                    batch = []
            writer.add_batch(batch)
        return writer.sent

    def delete(self, ids: Sequence[str]) -> int:
        with self.writing() as writer:
            return writer.delete(ids)

    @contextlib.contextmanager
    def writing(self) -> Iterator[_DenseWriter]:
        """Hold the folder's write lock; `add_batch` embeds and upserts; saves and commits on exit."""
        with self._file_lock():
            with self._lock:
                self._load_vectors()  # another process may have written since we loaded
            writer = _DenseWriter(self)
            try:
                yield writer
                writer.flush()
            except BaseException:
                with self._lock:
                    self._db.rollback()
                    self._faiss_identity = None  # drop in-memory vectors of the failed write
                    self._load_vectors()
                raise

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None  # type: ignore[assignment]
            self._faiss = None

    # -- helpers --------------------------------------------------------------------------------

    def _count_rows(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM passages").fetchone()[0])

    def _rows_to_passages(self, rows: set[int]) -> dict[int, Passage]:
        found: dict[int, Passage] = {}
        rows_list = sorted(rows)
        for start in range(0, len(rows_list), 500):
            chunk = rows_list[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for row, pid, title, text in self._db.execute(
                f"SELECT row, id, title, text FROM passages WHERE row IN ({marks})", chunk
            ):
                found[row] = Passage(pid, title, text)
        return found

    def _vectors_identity(self) -> tuple | None:
        try:
            stat = os.stat(self.path / VECTORS_FILE)
        except FileNotFoundError:
            return None
        return (stat.st_ino, stat.st_size, stat.st_mtime_ns)

    def _load_vectors(self) -> None:
        """(Re)load the faiss file when it changed on disk; a new index when there is none."""
        identity = self._vectors_identity()
        if self._faiss is not None and identity == self._faiss_identity:
            return
        if identity is None:
            self._faiss = build_faiss_index(self.index_kind, self.embedder.dim)
        else:
            self._faiss = faiss.read_index(str(self.path / VECTORS_FILE))
            base = faiss.downcast_index(self._faiss.index)
            if hasattr(base, "nprobe"):
                base.nprobe = min(IVF_NPROBE, base.nlist)
        self._faiss_identity = identity

    def _save_vectors(self) -> None:
        tmp = self.path / f".{VECTORS_FILE}.tmp"
        faiss.write_index(self._faiss, str(tmp))
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, self.path / VECTORS_FILE)
        self._faiss_identity = self._vectors_identity()

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        if fcntl is None:
            yield
            return
        with open(self.path / LOCK_FILE, "a+") as handle:
            started = time.monotonic()
            while True:
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    waited = time.monotonic() - started
                    if waited >= self.lock_timeout_s:
                        raise IndexLockedError(str(self.path), waited) from None
                    time.sleep(0.05)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _recorded_path(path: Path) -> str | None:
    """The embedder folder to record in the index: None for the bundled model (found again by package)."""
    try:
        if path.resolve() == bundled_embedder_path().resolve():
            return None
    except RetrievalError:
        pass
    return str(path.resolve())


class _DenseWriter:
    """Embeds and upserts batches for a `DenseRetriever` that holds its write lock."""

    def __init__(self, retriever: DenseRetriever) -> None:
        self._r = retriever
        self.sent = 0
        self._unsaved = 0

    def add_batch(self, passages: Sequence[Passage]) -> None:
        if not passages:
            return
        for offset, passage in enumerate(passages):
            check_passage(passage, self.sent + offset)
        latest = {clean_text(p.id): p for p in passages}  # a repeated id within the batch: last wins
        batch = list(latest.values())
        # With the document prompt; outside the locks.
        vectors = self._r.embedder.embed_documents([passage_embedding_text(p) for p in batch])
        r = self._r
        with r._lock:
            self._remove(list(latest))
            if not r._faiss.is_trained:
                nlist = faiss.downcast_index(r._faiss.index).nlist
                if len(vectors) < nlist:
                    raise RetrievalError(
                        f"dense index {r.index_kind} needs at least {nlist} passages in its first batch to "
                        f"train, got {len(vectors)}; use `dense_index=flat` or a smaller nlist"
                    )
                r._faiss.train(vectors)
            rows = []
            for pid, passage in latest.items():
                cursor = r._db.execute(
                    "INSERT INTO passages (id, title, text) VALUES (?, ?, ?)",
                    (pid, clean_text(passage.title), clean_text(passage.text)),
                )
                rows.append(cursor.lastrowid)
            r._faiss.add_with_ids(vectors, np.asarray(rows, dtype=np.int64))
        self.sent += len(passages)
        self._unsaved += len(passages)
        if self._unsaved >= SAVE_EVERY:
            self.flush()

    def delete(self, ids: Sequence[str]) -> int:
        with self._r._lock:
            return self._remove([clean_text(i) for i in dict.fromkeys(ids)])

    def _remove(self, ids: list[str]) -> int:
        r = self._r
        rows = []
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            rows += [row for (row,) in r._db.execute(f"SELECT row FROM passages WHERE id IN ({marks})", chunk)]
        if rows:
            with contextlib.suppress(RuntimeError):  # HNSW cannot remove: the stale vector is filtered
                r._faiss.remove_ids(np.asarray(rows, dtype=np.int64))
            r._db.executemany("DELETE FROM passages WHERE row = ?", [(row,) for row in rows])
        return len(rows)

    def flush(self) -> None:
        """Save the faiss file, then commit SQLite (so a committed row always has its vector)."""
        with self._r._lock:
            self._r._save_vectors()
            self._r._db.commit()
        self._unsaved = 0
