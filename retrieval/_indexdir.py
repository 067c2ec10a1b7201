"""The small JSON file that says which backend and settings built an index folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

from retrieval.errors import IndexMismatchError, IndexNotFoundError

__all__ = ["INFO_FILE", "read_info", "write_info", "prepare_dir"]

INFO_FILE = "regrad_index.json"
FORMAT_VERSION = 1


def read_info(path: Path, backend: str) -> dict | None:
    """The folder's index info, None when there is none; refuses another backend's folder."""
    info_path = path / INFO_FILE
    if not info_path.is_file():
        return None
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise IndexMismatchError(
            f"{info_path} is unreadable ({error}); rebuild the index with `regrad index`"
        ) from error
    if info.get("backend") != backend:
        raise IndexMismatchError(
            f"{path} holds a {info.get('backend')!r} index, not {backend!r}; "
            f"open it with --backend {info.get('backend')} or choose another folder"
        )
    if info.get("format_version") != FORMAT_VERSION:
        raise IndexMismatchError(
            f"{path} has index format {info.get('format_version')!r}, this regrad reads {FORMAT_VERSION}; "
            "rebuild it with `regrad index`"
        )
    return info


def write_info(path: Path, backend: str, **settings: object) -> dict:
    """Write the info file atomically (temp file, fsync, rename)."""
    info = {"backend": backend, "format_version": FORMAT_VERSION, **settings}
    tmp = path / f".{INFO_FILE}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(info, handle, indent=2)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path / INFO_FILE)
    return info


def prepare_dir(path: Path, backend: str, create_if_missing: bool) -> dict | None:
    """Check an index folder before opening it: its info, or None when a new index should be created."""
    info = read_info(path, backend) if path.is_dir() else None
    if info is not None:
        return info
    if not create_if_missing:
        raise IndexNotFoundError(
            str(path),
            f"no {backend} index at {path}; build one with `regrad index --index {path} --corpus FILE`",
        )
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise IndexMismatchError(
            f"{path} exists and is not a regrad index (no {INFO_FILE}); choose a new or empty folder"
        )
    path.mkdir(parents=True, exist_ok=True)
    return None
