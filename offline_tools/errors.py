"""CLI-facing errors and exit codes (httpie-style: every exit code has a name)."""

from __future__ import annotations

import importlib
from enum import IntEnum
from types import ModuleType

__all__ = ["ExitStatus", "RegradError", "UsageError", "InputFileError", "MissingExtraError", "import_extra"]


class ExitStatus(IntEnum):
    SUCCESS = 0
    ERROR = 1
    USAGE = 2
    INPUT = 3          # a file the user named is missing or malformed
    MISMATCH = 4       # checkpoint / store / preset do not belong together
    CORRUPT = 5        # a store or index failed verification
    UNAVAILABLE = 6    # a backend (Elasticsearch, a server) cannot be reached
    INTERRUPTED = 130  # Ctrl-C


class RegradError(Exception):
    """An error the user can fix; `main()` prints it as one line without a traceback."""

    exit_status: ExitStatus = ExitStatus.ERROR

    def __init__(self, message: str, *, exit_status: ExitStatus | None = None) -> None:
        super().__init__(message)
        if exit_status is not None:
            self.exit_status = exit_status


class UsageError(RegradError):
    exit_status = ExitStatus.USAGE


class InputFileError(RegradError):
    """A named input file is missing or malformed; `path` and `line` say where."""

    exit_status = ExitStatus.INPUT

    def __init__(self, path: str, message: str, line: int | None = None) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.line = line


class MissingExtraError(RegradError):
    """A command needs a package from one of regrad's optional extras (pyproject.toml), not installed."""

    def __init__(self, what: str, module: str, extra: str) -> None:
        super().__init__(f"{what} needs `{module}`, which is not installed: pip install 'regrad[{extra}]'")
        self.module = module
        self.extra = extra


def import_extra(module: str, extra: str, what: str) -> ModuleType:
    """Import `module` from the optional extra `extra`, or raise `MissingExtraError` naming the install.

    Example:
        >>> matplotlib = import_extra("matplotlib", "train", "the training plots")  # doctest: +SKIP
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is None or e.name.split(".")[0] != module.split(".")[0]:
            raise  # something the extra's package itself needs: not ours to rename
        raise MissingExtraError(what, module, extra) from e
