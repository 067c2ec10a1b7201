"""Errors the engine raises for a caller's input (the service maps them to HTTP statuses)."""

from __future__ import annotations

__all__ = ["EngineError", "DocumentConflictError"]


class EngineError(Exception):
    """Base class of errors raised by `engine/`."""

    # What `regrad` exits with for this family (cli/main.py reads it; the codes are ExitStatus in
    # offline_tools/errors.py, which this layer cannot import).
    exit_status = 1  # ERROR


class DocumentConflictError(EngineError):
    """A document reused an id that already holds a different passage."""

    def __init__(self, ids: list[str]) -> None:
        shown = ", ".join(repr(i) for i in ids[:5]) + (" …" if len(ids) > 5 else "")
        super().__init__(
            f"{len(ids)} document id(s) already hold different text: {shown}; "
            "send a new id for changed text (ids are immutable), or omit `id` to derive one from the content"
        )
        self.ids = list(ids)
