"""Logging for every `regrad` command: one stderr handler on the root logger, plain or JSON lines.

`regrad [--log-level LEVEL] [--log-format plain|json] COMMAND ...` (the two flags are accepted after
the command too) or `REGRAD_LOG_LEVEL` / `REGRAD_LOG_FORMAT`; a flag wins over the variable. The
default level is `info` for `regrad serve` (a server's log is its only output) and `warning` for
the other commands (their report is what they print; `--log-level info` shows the library's
progress lines, e.g. the engine's "model on cpu, ...").

The level applies to regrad's own loggers (`regrad.*`: engine, service, access, retrieval,
gradient_store; `offline_tools.*`) and uvicorn's; every other library logs at `warning` and
above only, so `info` does not turn on httpx's or Elasticsearch's per-request lines. Python
warnings (`warnings.warn`, e.g. transformers' FutureWarnings) go through the same handler, on
the `py.warnings` logger.

Standard library only: every command configures logging, so this module must not pull in
FastAPI or torch. Records carrying a `request_id` attribute (the service's access lines and the
records its `RequestIdFilter` stamps) show it; `regrad serve` adds that filter to the handler.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "LEVELS",
    "FORMATS",
    "LEVEL_ENV",
    "FORMAT_ENV",
    "JsonFormatter",
    "PlainFormatter",
    "configure_logging",
    "add_handler_filter",
    "resolve_level",
    "resolve_format",
]

LEVELS = ("critical", "error", "warning", "info", "debug")
FORMATS = ("plain", "json")
LEVEL_ENV = "REGRAD_LOG_LEVEL"
FORMAT_ENV = "REGRAD_LOG_FORMAT"

# Loggers that take the configured level; everything else is held at WARNING or above.
OWN_LOGGERS = ("regrad", "offline_tools", "uvicorn")
_RETRY_NOISE = ("elastic_transport",)
# uvicorn's own loggers: whatever configured them before (its default dictConfig adds handlers and
# turns propagation off) is undone, so their lines reach the root handler and its format.
_UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")

# Attributes every LogRecord has; anything else on a record came from `extra=` or a filter.
_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
# Extras that are presentation only (uvicorn's ANSI-coloured copy of the message).
_IGNORED_EXTRAS = frozenset({"color_message"})


def _choice(value: str | None, allowed: tuple[str, ...], source: str) -> str | None:
    if value is None or not value.strip():
        return None
    value = value.strip().lower()
    if value not in allowed:
        raise ValueError(f"{source}={value!r}: choose from {', '.join(allowed)}")
    return value


def resolve_level(flag: str | None, command: str | None) -> str:
    """The flag, else `REGRAD_LOG_LEVEL`, else `info` for `serve` and `warning` for other commands.

    Raises:
        ValueError: `REGRAD_LOG_LEVEL` holds something that is not a level.
    """
    return (
        _choice(flag, LEVELS, "--log-level")
        or _choice(os.environ.get(LEVEL_ENV), LEVELS, LEVEL_ENV)
        or ("info" if command == "serve" else "warning")
    )


def resolve_format(flag: str | None) -> str:
    """The flag, else `REGRAD_LOG_FORMAT`, else `plain`.

    Raises:
        ValueError: `REGRAD_LOG_FORMAT` is neither `plain` nor `json`.
    """
    return _choice(flag, FORMATS, "--log-format") or _choice(os.environ.get(FORMAT_ENV), FORMATS, FORMAT_ENV) or "plain"


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {
        key: value
        for key, value in vars(record).items()
        if key not in _RECORD_ATTRIBUTES and key not in _IGNORED_EXTRAS and not key.startswith("_")
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (ISO 8601, UTC), level, logger, message, request_id (when
    known), the record's other `extra=` fields (an access line's method, path, status, duration_ms,
    client) and `exception` (the formatted traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage().rstrip("\n"),  # py.warnings messages end with a newline
        }
        extras = _extras(record)
        request_id = extras.pop("request_id", None)
        if request_id is not None:  # only when known
            line["request_id"] = request_id
        for key, value in extras.items():
            line.setdefault(key, value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        # default=str: an extra that JSON cannot encode is written as its str(), never dropped or fatal.
        return json.dumps(line, ensure_ascii=False, default=str)


class PlainFormatter(logging.Formatter):
    """`2026-01-31 12:00:00,123 INFO regrad.access [<request id>]: message`; no brackets without an id."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(request_part)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = record.message.rstrip("\n")  # py.warnings messages end with a newline
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        request_id = getattr(record, "request_id", None)
        record.request_part = f" [{request_id}]" if request_id else ""
        try:
            return super().format(record)
        finally:
            del record.request_part  # the record goes on to other handlers (pytest's, say) unchanged


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is at the time of the record (as `logging.lastResort` does),
    so a replaced stderr (pytest's capture, a redirect) gets the lines, never a closed stream."""

    def __init__(self, level: int = logging.NOTSET) -> None:
        logging.Handler.__init__(self, level)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:  # StreamHandler.setStream; the stream is always sys.stderr
        pass


def _our_handlers() -> list[logging.Handler]:
    return [h for h in logging.getLogger().handlers if getattr(h, "_regrad_handler", False)]


def configure_logging(level: str = "warning", fmt: str = "plain") -> logging.Handler:
    """Install (or replace) regrad's root handler, set the levels, route `warnings` through it.

    Idempotent: a second call replaces the first one's handler instead of adding another, and leaves
    handlers that others installed (pytest's capture, an embedding application's) alone.

    Returns:
        The handler (so a caller can add a filter, as `regrad serve` does for request ids).
    """
    if level not in LEVELS:
        raise ValueError(f"log level {level!r}: choose from {', '.join(LEVELS)}")
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r}: choose from {', '.join(FORMATS)}")
    numeric = logging.getLevelName(level.upper())
    root = logging.getLogger()
    for old in _our_handlers():
        root.removeHandler(old)
        old.close()
    handler = _StderrHandler()
    handler._regrad_handler = True  # type: ignore[attr-defined]
    handler.setFormatter(JsonFormatter() if fmt == "json" else PlainFormatter())
    root.addHandler(handler)
    root.setLevel(max(numeric, logging.WARNING))
    for name in _UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(logging.NOTSET)
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(numeric)
    # The Elasticsearch transport logs a WARNING with a full traceback per failed attempt; the
    # retriever turns the last failure into one clear error (503 / exit 6), so those show at debug only.
    for name in _RETRY_NOISE:
        logging.getLogger(name).setLevel(numeric if numeric <= logging.DEBUG else logging.ERROR)
    # Re-arm, in case something (a `warnings.catch_warnings` block) restored the original hook after
    # an earlier call: `captureWarnings(True)` alone is a no-op once it has been called.
    logging.captureWarnings(False)
    logging.captureWarnings(True)
    return handler


def add_handler_filter(record_filter: logging.Filter) -> None:
    """Add a filter to the handler `configure_logging` installed (nothing if it was not called)."""
    for handler in _our_handlers():
        handler.addFilter(record_filter)
