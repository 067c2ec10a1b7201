"""Atomic text output for the offline jobs: a file is replaced whole or not at all."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

__all__ = ["atomic_text"]


@contextmanager
def atomic_text(path: str | os.PathLike) -> Iterator[TextIO]:
    """Write `path` through a temp file in its folder (created if missing), fsync it, then rename it
    over `path`; on any error the temp file is removed and `path` is left as it was.

    Example:
        with atomic_text("out/predictions.jsonl") as handle:
            handle.write(line)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
