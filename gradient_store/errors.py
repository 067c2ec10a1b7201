"""Errors raised by `gradient_store/`.

Every message names the thing (store path, shard, passage id), the value found, what was
expected, and then the fix. Counts and lists also sit on attributes so callers need not parse text.
"""

from __future__ import annotations

__all__ = [
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


class StoreError(Exception):
    """Base class for gradient store errors."""

    # What `regrad` exits with for this family (cli/main.py reads it; the codes are ExitStatus in
    # offline_tools/errors.py, which this layer cannot import).
    exit_status = 1  # ERROR


class StoreFormatError(StoreError):
    """A directory is not a gradient store, or its manifest/index cannot be read."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"gradient store {path}: {message}")
        self.path = str(path)


class StoreExistsError(StoreError):
    """`GradientStore.create` was pointed at a directory that already holds a store (or other files)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"gradient store {path}: {message}")
        self.path = str(path)


class StoreLockedError(StoreError):
    """Another writer holds the store's lock for longer than the caller was willing to wait."""

    def __init__(self, path: str, timeout_s: float) -> None:
        super().__init__(
            f"gradient store {path}: another writer holds {path}/writer.lock (waited {timeout_s:g} s); "
            "only one writer may append at a time: wait for it to finish or raise `lock_timeout_s`"
        )
        self.path = str(path)
        self.timeout_s = timeout_s


class FingerprintMismatchError(StoreError):
    """The store was built for another learner: its gradients are meaningless for this one."""

    exit_status = 4  # ExitStatus.MISMATCH

    def __init__(self, path: str, expected: str, found: str) -> None:
        super().__init__(
            f"gradient store {path} was built for learner fingerprint {found[:16]}…, "
            f"expected {expected[:16]}… (the loaded learner); gradients are only valid for the weights they "
            "were computed with: re-encode the passages with `regrad encode` for this learner, "
            "or open the store that matches it"
        )
        self.path = str(path)
        self.expected = expected
        self.found = found


class StoreMismatchError(StoreError):
    """Two stores of one learner that still cannot be combined: another codec or parameter layout."""

    exit_status = 4  # ExitStatus.MISMATCH

    def __init__(self, path: str, what: str, expected: object, found: object, fix: str) -> None:
        super().__init__(f"gradient store {path} has {what} {found!r}, expected {expected!r}; {fix}")
        self.path = str(path)
        self.what = what
        self.expected = expected
        self.found = found


class InvalidAppendError(StoreError, ValueError):
    """Ids or vectors handed to `append` are malformed: wrong shape, non-finite values, non-string ids."""


class UnknownCodecError(StoreError, ValueError):
    """A codec name that is not one of `CODECS` (`fp32`, `bf16`, `int8`, `lowrank4`)."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"`codec` must be one of {known}, got {name!r}; bf16 is the default")
        self.name = name
        self.known = known


class DuplicateIdError(StoreError):
    """`append(..., on_duplicate="error")` met ids that are already stored (or repeated in the batch)."""

    def __init__(self, path: str, ids: list[str]) -> None:
        shown = ", ".join(repr(i) for i in ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
        super().__init__(
            f"gradient store {path}: {len(ids)} passage id(s) already stored or repeated in the batch: "
            f"{shown}; "
            'pass on_duplicate="skip" to keep the stored rows or on_duplicate="replace" to overwrite them'
        )
        self.path = str(path)
        self.ids = list(ids)


class CorruptShardError(StoreError):
    """A shard (or some of its rows) no longer matches its recorded checksum.

    Attributes:
        shard: shard file name, e.g. ``shard-00003.safetensors``.
        ids: passage ids whose rows failed their CRC32 (empty when the whole shard is unreadable).
    """

    exit_status = 5  # ExitStatus.CORRUPT

    def __init__(self, path: str, shard: str, reason: str, ids: list[str] | None = None) -> None:
        ids = list(ids or [])
        which = ""
        if ids:
            which = f" (passage ids: {', '.join(repr(i) for i in ids[:5])}{' …' if len(ids) > 5 else ''})"
        super().__init__(
            f"gradient store {path}: shard {shard} is corrupt: {reason}{which}; "
            f"run `regrad store verify {path}` "
            "for a full report, then re-encode the affected passages (or restore the shard from a backup)"
        )
        self.path = str(path)
        self.shard = shard
        self.reason = reason
        self.ids = ids
