"""The `regrad` command line: one small module per subcommand in `cli/commands/`.

Each command module exposes `register(subparsers)`, which adds its parser and sets
`func=run` (a function of the parsed args returning an exit code). `main()` configures logging
(`--log-level`, `--log-format`, before or after the command; see `cli/logs.py`), then turns every
known domain error into one `regrad: error: ...` line and a named exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from cli import logs
from engine import __version__
from offline_tools.errors import ExitStatus

__all__ = ["main", "build_parser", "COMMANDS"]

# Order = order in `regrad --help`.
COMMANDS = ["model", "synth", "index", "search", "augment", "train", "export", "encode", "store", "serve", "evaluate",
            "score"]


def add_logging_arguments(parser: argparse.ArgumentParser, *, default: object = None) -> None:
    """`--log-level` and `--log-format`; on a command's parser with `default=argparse.SUPPRESS`, so a
    flag given before the command is not reset by the command's parser when it is not repeated."""
    parser.add_argument(
        "--log-level", type=str.lower, choices=logs.LEVELS, default=default,
        help=f"log level ({logs.LEVEL_ENV}; default info for serve, warning for the other commands)",
    )
    parser.add_argument(
        "--log-format", type=str.lower, choices=logs.FORMATS, default=default,
        help=f"log lines on stderr: plain text or one JSON object per line ({logs.FORMAT_ENV}; default plain)",
    )


def _add_logging_arguments_to_command(parser: argparse.ArgumentParser) -> None:
    """The logging flags on a command and on its actions (`regrad store verify ... --log-level info`)."""
    add_logging_arguments(parser, default=argparse.SUPPRESS)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases map to the same parser
                _add_logging_arguments_to_command(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="regrad", description="Retrievable Gradients: knowledge applied as per-request LoRA updates."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--traceback", action="store_true", help="re-raise errors with a full traceback")
    add_logging_arguments(parser)
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
        _add_logging_arguments_to_command(subparsers.choices[name])
    return parser


# Domain error bases of the library packages, by (module, class name): checking the exception's
# MRO by name means printing an error never imports torch (6-9 s on a loaded machine). Each family
# carries its exit status on the class (`exit_status`), which `main` returns.
_KNOWN_ERROR_BASES = {
    ("offline_tools.errors", "RegradError"),
    ("gradient_store.errors", "StoreError"),
    ("models.errors", "ModelError"),
    ("retrieval.errors", "RetrievalError"),
    ("engine.errors", "EngineError"),
}


def _is_known(error: BaseException) -> bool:
    return any((cls.__module__, cls.__name__) in _KNOWN_ERROR_BASES for cls in type(error).__mro__)


def _exit_status_of(error: BaseException) -> int:
    return int(getattr(error, "exit_status", ExitStatus.ERROR))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        level = logs.resolve_level(args.log_level, args.command)
        log_format = logs.resolve_format(args.log_format)
    except ValueError as error:  # a bad REGRAD_LOG_LEVEL / REGRAD_LOG_FORMAT
        parser.error(str(error))
    logs.configure_logging(level, log_format)
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
