"""Logging: one configured handler for every command and the server (plain or JSON lines), the
engine's and uvicorn's lines through it, a request id in each access line and response header.

Model-free: the engine is the `FakeEngine` double; servers are real uvicorn on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import logging
import logging.config
import os
import re
import sys
import threading
import time
import types
import warnings
from collections.abc import Iterator, Sequence

import httpx
import pytest
import uvicorn

from cli import logs
from cli.main import main
from engine import Question
from service.app import RequestIdFilter, create_app
from service.settings import Settings

from .conftest import FakeEngine, free_port, running_server

HEX_ID = re.compile(r"[0-9a-f]{32}")
engine_logger = logging.getLogger("regrad.engine")


@pytest.fixture(autouse=True)
def _restore_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Undo what `configure_logging` (and uvicorn's Config) change in the process-wide logging state."""
    monkeypatch.delenv(logs.LEVEL_ENV, raising=False)
    monkeypatch.delenv(logs.FORMAT_ENV, raising=False)
    root = logging.getLogger()
    ours = [h for h in root.handlers if getattr(h, "_regrad_handler", False)]
    root_level = root.level
    names = ("regrad", "offline_tools", "uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
    saved = {name: (lg.level, list(lg.handlers), lg.propagate) for name in names for lg in [logging.getLogger(name)]}
    yield
    logging.captureWarnings(False)
    for handler in [h for h in root.handlers if getattr(h, "_regrad_handler", False)]:
        root.removeHandler(handler)
    for handler in ours:
        root.addHandler(handler)
    root.setLevel(root_level)
    for name, (level, handlers, propagate) in saved.items():
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.handlers[:] = handlers
        logger.propagate = propagate


def _json_lines(err: str) -> list[dict]:
    """Every non-empty stderr line as JSON (json.loads raises on a line that is not one object)."""
    lines = [json.loads(line) for line in err.splitlines() if line.strip()]
    for line in lines:
        assert isinstance(line, dict) and {"time", "level", "logger", "message"} <= line.keys(), line
    return lines


def test_json_format_is_one_parseable_object_per_record_warnings_included(capsys: pytest.CaptureFixture) -> None:
    logging.config.dictConfig(uvicorn.config.LOGGING_CONFIG)  # as an earlier uvicorn.Config in-process would
    logs.configure_logging("info", "json")
    logging.getLogger("uvicorn.error").info("Started server process")
    engine_logger.info("model on %s, base weights in %s", "cpu", "float32")
    logging.getLogger("regrad.gradient_store").warning("first line\nsecond line")
    try:
        raise ValueError("bad row")
    except ValueError:
        logging.getLogger("regrad.service").exception("unhandled error")
    logging.getLogger("httpx").info("HTTP Request: GET http://x 200")  # a library's INFO: held back
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("`old_arg` is deprecated", FutureWarning, stacklevel=1)

    lines = _json_lines(capsys.readouterr().err)
    assert [(line["logger"], line["level"]) for line in lines] == [
        ("uvicorn.error", "INFO"),  # uvicorn's own handlers are gone: its lines come through ours
        ("regrad.engine", "INFO"),
        ("regrad.gradient_store", "WARNING"),
        ("regrad.service", "ERROR"),
        ("py.warnings", "WARNING"),  # through the configured handler, not Python's last-resort one
    ]
    assert lines[1]["message"] == "model on cpu, base weights in float32" and "request_id" not in lines[1]
    assert lines[2]["message"] == "first line\nsecond line"
    assert "ValueError: bad row" in lines[3]["exception"]
    assert "FutureWarning: `old_arg` is deprecated" in lines[4]["message"]


def test_every_command_takes_level_and_format_from_flags_or_env(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, tmp_path
) -> None:
    missing = str(tmp_path / "absent.jsonl")  # `regrad score` fails fast on it, after logging is set up

    def emitted_after(argv: list[str]) -> str:
        main(argv)
        capsys.readouterr()
        engine_logger.info("model on cpu")
        engine_logger.warning("store is behind")
        engine_logger.error("store is gone")
        return capsys.readouterr().err

    # Default for a command other than serve: warning, plain.
    err = emitted_after(["score", missing])
    assert "model on cpu" not in err and "WARNING regrad.engine: store is behind" in err

    # The environment: info, JSON.
    monkeypatch.setenv(logs.LEVEL_ENV, "INFO")
    monkeypatch.setenv(logs.FORMAT_ENV, "json")
    lines = _json_lines(emitted_after(["score", missing]))
    assert [line["message"] for line in lines] == ["model on cpu", "store is behind", "store is gone"]

    # Flags win over the environment, given before or after the command.
    err = emitted_after(["--log-format", "plain", "score", missing, "--log-level", "error"])
    assert err.splitlines()[-1].endswith("ERROR regrad.engine: store is gone") and "store is behind" not in err
    err = emitted_after(["--log-level", "error", "score", missing])
    assert "store is behind" not in err and json.loads(err)["message"] == "store is gone"

    # A bad variable is a usage error, not a silent default.
    monkeypatch.setenv(logs.LEVEL_ENV, "loud")
    with pytest.raises(SystemExit) as exit_info:
        main(["score", missing])
    assert exit_info.value.code == 2 and "REGRAD_LOG_LEVEL='loud'" in capsys.readouterr().err


def test_request_id_is_echoed_or_generated_in_header_and_access_line(
    fake_engine: FakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="regrad.access")
    caplog.handler.addFilter(RequestIdFilter())  # as `regrad serve` does on its handler
    app = create_app(Settings(_env_file=None, scheduler="static"), engine_factory=lambda _: fake_engine)

    async def boom() -> None:
        raise RuntimeError("boom")

    app.add_api_route("/boom", boom, methods=["GET"])
    with running_server(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        echoed = client.get("/healthz", headers={"X-Request-ID": "client-id.7"})
        generated = client.get("/healthz")
        forged = client.get("/healthz", headers={"X-Request-ID": "two words"})  # not a plain token: replaced
        failed = client.get("/boom")

    assert echoed.status_code == generated.status_code == forged.status_code == 200
    assert echoed.headers["X-Request-ID"] == "client-id.7"
    ids = [r.headers["X-Request-ID"] for r in (generated, forged, failed)]
    assert all(HEX_ID.fullmatch(i) for i in ids) and len(set(ids)) == 3

    access = [r for r in caplog.records if r.name == "regrad.access"]
    assert [(r.method, r.path, r.status, r.request_id) for r in access] == [
        ("GET", "/healthz", 200, "client-id.7"),
        ("GET", "/healthz", 200, ids[0]),
        ("GET", "/healthz", 200, ids[1]),
        ("GET", "/boom", 500, ids[2]),
    ]
    assert all(isinstance(r.duration_ms, float) and r.duration_ms >= 0 for r in access)
    assert json.loads(logs.JsonFormatter().format(access[0]))["request_id"] == "client-id.7"
    assert "[client-id.7]: " in logs.PlainFormatter().format(access[0])
    # A line logged while the request was handled carries its id (the contextvar + RequestIdFilter),
    # and the 500 of an unhandled error still has the header.
    [unhandled] = [r for r in caplog.records if r.getMessage() == "unhandled error"]
    assert failed.status_code == 500 and unhandled.request_id == ids[2]


class _ChattyEngine(FakeEngine):
    """FakeEngine that logs on "regrad.engine" like the real one: at start-up and while answering."""

    @classmethod
    def from_config(cls, config) -> _ChattyEngine:
        engine_logger.info("model on cpu, base weights in the preset's dtype")
        return cls()

    def answer_outcomes(self, requests: Sequence[Question]) -> list:
        engine_logger.info("answering %d question(s)", len(requests))
        return super().answer_outcomes(requests)


@contextlib.contextmanager
def _serve_through_cli(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> Iterator[tuple[str, dict]]:
    """`regrad <argv> serve` with the engine stubbed and `uvicorn.run` replaced by a real uvicorn server
    in a thread, started with the options `serve` passed; yields the base URL and those options."""
    started: list[tuple[uvicorn.Server, threading.Thread, dict]] = []

    def run_in_thread(app, **options) -> None:
        server = uvicorn.Server(uvicorn.Config(app, **options))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        started.append((server, thread, options))

    stub = types.ModuleType("engine.core")
    stub.Engine = _ChattyEngine  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "engine.core", stub)
    monkeypatch.setenv("REGRAD_SCHEDULER", "static")  # the stub offers the static interface only
    monkeypatch.setattr(uvicorn, "run", run_in_thread)
    port = free_port()
    assert main([*argv, "--port", str(port), "--env-file", os.devnull]) == 0
    [(server, thread, options)] = started
    deadline = time.monotonic() + 120
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", options
    finally:
        server.should_exit = True
        thread.join(timeout=60)


def test_serve_logs_engine_service_uvicorn_and_access_lines_in_one_json_format(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    with (
        _serve_through_cli(monkeypatch, ["--log-format", "json", "serve"]) as (url, options),
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        answer = client.post("/answer", json={"question": "Who?", "mode": "closed_book"},
                             headers={"X-Request-ID": "req-42"})
    assert answer.status_code == 200 and answer.headers["X-Request-ID"] == "req-42"
    assert options["log_config"] is None and options["access_log"] is False

    lines = _json_lines(capsys.readouterr().err)  # every line, uvicorn's included, is a JSON object
    said = {(line["logger"], line["message"]) for line in lines}
    # The engine's INFO lines are printed (serve's default level is info): at start-up and per batch.
    assert ("regrad.engine", "model on cpu, base weights in the preset's dtype") in said
    assert ("regrad.engine", "answering 1 question(s)") in said
    assert any(logger == "regrad.service" and message.startswith("regrad service ready") for logger, message in said)
    assert ("uvicorn.error", "Application startup complete.") in said
    [access] = [line for line in lines if line["logger"] == "regrad.access"]
    assert access["request_id"] == "req-42" and access["level"] == "INFO"
    assert (access["method"], access["path"], access["status"]) == ("POST", "/answer", 200)
    assert isinstance(access["duration_ms"], float) and access["duration_ms"] >= 0
    assert not any(line["logger"] == "uvicorn.access" for line in lines)  # no duplicate access line
