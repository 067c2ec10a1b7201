"""The `regrad` command line: one small module per subcommand in `cli/commands/`.

Each command module exposes `register(subparsers)`, which adds its parser and sets
`func=run` (a function of the parsed args returning an exit code). `main()` turns every
known domain error into one `regrad: error: ...` line and a named exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from engine import __version__
from offline_tools.errors import ExitStatus

__all__ = ["main", "build_parser", "COMMANDS"]

# Order = order in `regrad --help`.
COMMANDS = ["model", "synth", "index", "search", "augment", "train", "encode", "store", "serve", "evaluate", "score"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="regrad", description="Retrievable Gradients: knowledge applied as per-request LoRA updates."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--traceback", action="store_true", help="re-raise errors with a full traceback")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module_name = f"cli.commands.{name}"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name != module_name:  # a real missing dependency inside the command: surface it
                raise
            continue  # command not built in this checkout
        module.register(subparsers)
    return parser


# Domain error bases of the library packages, by (module, class name): checking the exception's
# MRO by name means printing an error never imports torch (6-9 s on a loaded machine).
_KNOWN_ERROR_BASES = {
    ("offline_tools.errors", "RegradError"),
    ("gradient_store.errors", "StoreError"),
    ("models.errors", "ModelError"),
    ("retrieval.errors", "RetrievalError"),
}


def _is_known(error: BaseException) -> bool:
    return any((cls.__module__, cls.__name__) in _KNOWN_ERROR_BASES for cls in type(error).__mro__)


def _exit_status_of(error: BaseException) -> int:
    status = getattr(error, "exit_status", None)
    if status is not None:
        return int(status)
    name = type(error).__name__
    if "Mismatch" in name or "Fingerprint" in name:
        return ExitStatus.MISMATCH
    if "Corrupt" in name or "Checksum" in name:
        return ExitStatus.CORRUPT
    if "Unavailable" in name or "Connection" in name:
        return ExitStatus.UNAVAILABLE
    return ExitStatus.ERROR


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("regrad: interrupted", file=sys.stderr)
        return ExitStatus.INTERRUPTED
    except Exception as error:
        if args.traceback or not _is_known(error):
            raise
        print(f"regrad: error: {error}", file=sys.stderr)
        return _exit_status_of(error)


if __name__ == "__main__":
    sys.exit(main())
