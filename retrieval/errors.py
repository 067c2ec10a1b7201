"""Errors raised by `retrieval/`: each names the thing, the value, the limit, then the fix.

Structured fields (paths, line numbers, counts) live on attributes, not only in the message,
so callers (the CLI, the service) can map them without parsing text.
"""

from __future__ import annotations

__all__ = [
    "RetrievalError",
    "RetrieverConfigError",
    "CorpusFormatError",
    "IndexNotFoundError",
    "IndexLockedError",
    "IndexMismatchError",
    "BackendUnavailableError",
    "BackendError",
    "IndexingError",
]


class RetrievalError(Exception):
    """Base class for retrieval errors."""

    # What `regrad` exits with for this family (cli/main.py reads it; the codes are ExitStatus in
    # offline_tools/errors.py, which this layer cannot import).
    exit_status = 1  # ERROR


class RetrieverConfigError(RetrievalError, ValueError):
    """A `RetrieverConfig` field has a bad value; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"`{field}` {message}")
        self.field = field


class CorpusFormatError(RetrievalError):
    """A corpus file is malformed at `line` (1-based; None when the whole file is wrong)."""

    exit_status = 3  # ExitStatus.INPUT

    def __init__(self, path: str, line: int | None, message: str) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.line = line
        self.reason = message


class IndexNotFoundError(RetrievalError):
    """The index folder or Elasticsearch index does not exist."""

    exit_status = 3  # ExitStatus.INPUT

    def __init__(self, index: str, message: str) -> None:
        super().__init__(message)
        self.index = index


class IndexLockedError(RetrievalError):
    """Another writer (in this or another process) holds the index's write lock."""

    def __init__(self, index: str, waited_s: float) -> None:
        super().__init__(
            f"index {index} is locked by another writer (waited {waited_s:.0f} s); "
            "wait for the other `regrad index` or service write to finish, or raise `lock_timeout_s`"
        )
        self.index = index
        self.waited_s = waited_s


class IndexMismatchError(RetrievalError):
    """The folder holds an index of another backend or format version."""

    exit_status = 4  # ExitStatus.MISMATCH


class BackendUnavailableError(RetrievalError):
    """The search backend (Elasticsearch) cannot be reached or is overloaded; the service maps it to 503.

    Attributes:
        url: the backend address.
        retry_after_s: a suggested wait before retrying.
    """

    exit_status = 6  # ExitStatus.UNAVAILABLE

    def __init__(self, url: str, reason: str, retry_after_s: float = 5.0) -> None:
        super().__init__(
            f"search backend at {url} is unavailable: {reason}; check that Elasticsearch is running and "
            f"reachable (`curl {url}`), or pass the right `--es-url` / `REGRAD_ES_URL`"
        )
        self.url = url
        self.reason = reason
        self.retry_after_s = retry_after_s


class BackendError(RetrievalError):
    """The backend answered with an error that is not an outage (bad request, mapping conflict)."""

    def __init__(self, url: str, status: int | None, message: str) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


class IndexingError(RetrievalError):
    """Bulk indexing finished with fewer documents in the index than were sent.

    Attributes:
        index: the index name.
        sent: actions sent; created / updated: documents the backend reported; failed: rejected actions.
        expected: documents the index should hold; actual: documents it holds.
        errors: the first few per-document errors the backend returned.
    """

    def __init__(
        self,
        index: str,
        *,
        sent: int,
        created: int,
        updated: int,
        failed: int,
        expected: int,
        actual: int,
        errors: list[dict] | None = None,
    ) -> None:
        first = f"; first error: {errors[0]}" if errors else ""
        super().__init__(
            f"index {index} holds {actual} documents but {expected} were expected "
            f"({sent} sent: {created} created, {updated} updated, {failed} failed){first}; "
            "Elasticsearch stops accepting writes when a disk passes its flood-stage watermark: check "
            "`GET _cat/allocation?v`, free disk space, then re-run `regrad index` (it resumes by id)"
        )
        self.index = index
        self.sent = sent
        self.created = created
        self.updated = updated
        self.failed = failed
        self.expected = expected
        self.actual = actual
        self.errors = list(errors or [])
