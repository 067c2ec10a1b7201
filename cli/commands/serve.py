"""`regrad serve`: run the HTTP service (uvicorn) with settings from REGRAD_* / .env and flags.

Logging is set up by `cli.main` (`--log-level`, `--log-format`, default `info`, see `cli/logs.py`);
uvicorn is started with `log_config=None`, so its lines go through that same handler and format, and
`access_log=False`, because the app writes its own access line (with the request id) on
`regrad.access`.
"""

from __future__ import annotations

import argparse

from offline_tools.errors import UsageError

__all__ = ["register", "run", "add_settings_arguments", "build_settings", "UVICORN_LOG_OPTIONS"]

NAME = "serve"

# flag dest → Settings field; a flag given on the command line overrides the environment.
_OVERRIDES = {
    "checkpoint": "checkpoint",
    "untrained": "untrained",
    "preset": "preset",
    "store": "store",
    "backend": "retriever_backend",
    "index": "index",
    "es_url": "es_url",
    "device": "device",
    "dtype": "dtype",
    "scheduler": "scheduler",
    "max_batch": "max_batch",
    "max_wait_ms": "max_wait_ms",
    "prefill_budget_tokens": "prefill_budget_tokens",
    "missing_gradients": "missing_gradients",
}


def add_settings_arguments(p: argparse.ArgumentParser) -> None:
    """The engine's settings as flags (shared by `serve` and `evaluate --in-process`)."""
    p.add_argument("--checkpoint",
                   help="learner folder (REGRAD_CHECKPOINT; unset = the shipped checkpoints/regrad-smollm2-135m)")
    p.add_argument("--untrained", action="store_true", default=None,
                   help="serve an UNTRAINED learner from --preset instead (REGRAD_UNTRAINED; logs a warning)")
    p.add_argument("--preset", help="model preset of an --untrained learner (REGRAD_PRESET)")
    p.add_argument("--store", help="gradient store folder, created if missing (REGRAD_STORE)")
    p.add_argument("--backend", choices=["tantivy", "elasticsearch", "dense", "hybrid"],
                   help="retriever backend (REGRAD_RETRIEVER_BACKEND, default tantivy)")
    p.add_argument("--index", help="index folder or Elasticsearch index name (REGRAD_INDEX)")
    p.add_argument("--es-url", help="Elasticsearch URL (REGRAD_ES_URL)")
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], help="REGRAD_DEVICE (default auto)")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], help="REGRAD_DTYPE")
    p.add_argument("--max-batch", type=int, help="most rows decoding together (REGRAD_MAX_BATCH)")
    p.add_argument("--max-wait-ms", type=float, help="how long a request waits for company (REGRAD_MAX_WAIT_MS)")
    p.add_argument("--prefill-budget-tokens", type=int, metavar="N",
                   help="continuous: prefill newcomers inside the next decode step, at most N prompt tokens per "
                   "step, and do their scoring and computed gradients ahead, at most N tokens' work between two "
                   "steps (default 512); "
                   "0 = in a forward of their own (REGRAD_PREFILL_BUDGET_TOKENS)")
    p.add_argument("--missing-gradients", choices=["compute", "skip"], help="REGRAD_MISSING_GRADIENTS")
    p.add_argument("--env-file", default=".env", help="settings file (default .env); REGRAD_* variables win")


def build_settings(args: argparse.Namespace, *, engine_only: bool = False, **extra):
    """Settings from the env file and environment, overridden by the flags that were given: the service's
    `Settings`, or with `engine_only` the engine's `EngineSettings` (no HTTP service imported)."""
    from pydantic import ValidationError

    if engine_only:
        from engine.settings import EngineSettings as Settings
    else:
        from service.settings import Settings

    given = {flag: getattr(args, flag, None) for flag in _OVERRIDES}
    overrides = {_OVERRIDES[flag]: value for flag, value in given.items() if value is not None}
    overrides.update({key: value for key, value in extra.items() if value is not None})
    try:
        return Settings(_env_file=args.env_file, **overrides)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in e['loc']) or 'settings'}: {e['msg']}" for e in error.errors()
        )
        raise UsageError(f"bad settings: {problems}; fix the REGRAD_* variable or flag") from error


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        NAME,
        help="run the HTTP service (POST /answer, /documents; /healthz, /readyz, /metrics, /docs)",
        description="Start the regrad API. Settings come from REGRAD_* environment variables and a .env "
        "file; the flags below override them. See docs/service.md.",
    )
    add_settings_arguments(p)
    p.add_argument("--scheduler", choices=["continuous", "static"],
                   help="continuous (join the running generation each step) or static batching (REGRAD_SCHEDULER)")
    p.add_argument("--host", help="listen address (REGRAD_HOST, default 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port (REGRAD_PORT, default 8000)")
    # --log-level / --log-format: added to every command by cli.main (REGRAD_LOG_LEVEL, default info here).
    p.set_defaults(func=run)


# uvicorn keeps its hands off logging: no dictConfig of its own (its loggers propagate to the root
# handler `cli.logs` installed, in the same format) and no access log (the app writes one per request).
UVICORN_LOG_OPTIONS = {"log_config": None, "access_log": False}


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from cli import logs
    from engine.core import Engine
    from service.app import RequestIdFilter, create_app

    logs.add_handler_filter(RequestIdFilter())  # lines logged while a request is handled carry its id

    settings = build_settings(args, host=args.host, port=args.port)
    # Built before the server starts, so a bad checkpoint, store or index is one `regrad: error:` line
    # (not a traceback inside uvicorn's start-up); the app's lifespan closes it on shut-down.
    engine = Engine.from_config(settings.engine_config())
    app = create_app(settings, engine_factory=lambda _: engine)
    uvicorn.run(app, host=settings.host, port=settings.port, **UVICORN_LOG_OPTIONS)
    return 0
