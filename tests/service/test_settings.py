"""Settings: environment, .env, precedence, and the documented example file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from cli.commands.serve import build_settings
from cli.main import build_parser
from offline_tools.errors import UsageError
from service.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def test_env_example_names_only_real_settings_and_loads():
    text = (REPO / ".env.example").read_text()
    names = re.findall(r"^#?\s*REGRAD_([A-Z_]+)=", text, re.MULTILINE)
    assert set(name.lower() for name in names) <= set(Settings.model_fields)
    assert {"checkpoint", "store", "api_key", "max_batch", "missing_gradients"} <= {n.lower() for n in names}
    settings = Settings(_env_file=REPO / ".env.example")
    assert (settings.max_batch, settings.missing_gradients, settings.api_key) == (8, "compute", None)


def test_environment_beats_env_file_and_flags_beat_both(tmp_path, monkeypatch):
    env_file = tmp_path / ".env"
    env_file.write_text("REGRAD_MAX_BATCH=4\nREGRAD_STORE=/from/file\nREGRAD_PORT=9000\n")
    monkeypatch.setenv("REGRAD_MAX_BATCH", "16")
    assert Settings(_env_file=env_file).max_batch == 16
    args = build_parser().parse_args(["serve", "--env-file", str(env_file), "--store", "/from/flag"])
    settings = build_settings(args, port=None)
    assert (settings.max_batch, str(settings.store), settings.port) == (16, "/from/flag", 9000)


def test_bad_settings_name_the_field():
    with pytest.raises(ValidationError, match="max_batch"):
        Settings(_env_file=None, max_batch=0)
    with pytest.raises(ValidationError, match="composition"):
        Settings(_env_file=None, composition="softmax:-1")
    assert Settings(_env_file=None, composition="sum").engine_config().composition == "sum"
    for bad in (-0.5, 21.0, float("nan")):
        with pytest.raises(ValidationError, match="stop_bias"):
            Settings(_env_file=None, stop_bias=bad)
    for bad in (0, 9):
        with pytest.raises(ValidationError, match="beams"):
            Settings(_env_file=None, beams=bad)
    args = build_parser().parse_args(["serve", "--env-file", "/dev/null", "--max-batch", "0"])
    with pytest.raises(UsageError, match="max_batch"):
        build_settings(args)


# --- which learner is served --------------------------------------------------------------------

SHIPPED = REPO / "checkpoints" / "regrad-smollm2-135m"


def test_plain_serve_serves_the_shipped_learner(tmp_path):
    args = build_parser().parse_args(["serve", "--env-file", "/dev/null", "--store", str(tmp_path / "s"),
                                      "--index", str(tmp_path / "i")])
    settings = build_settings(args)
    assert settings.checkpoint is None and settings.untrained is False
    assert settings.engine_config().checkpoint == SHIPPED


def test_untrained_only_when_asked_and_with_a_warning(caplog):
    args = build_parser().parse_args(["serve", "--env-file", "/dev/null", "--untrained"])
    settings = build_settings(args)
    with caplog.at_level("WARNING", logger="regrad.engine"):
        assert settings.engine_config().checkpoint is None
    assert "UNTRAINED" in caplog.text


def test_untrained_and_a_checkpoint_exclude_each_other(tmp_path):
    args = build_parser().parse_args(["serve", "--env-file", "/dev/null", "--untrained", "--checkpoint", str(tmp_path)])
    with pytest.raises(UsageError, match="untrained"):
        build_settings(args)


def test_a_missing_shipped_learner_says_what_to_pass(monkeypatch):
    from engine import settings as settings_module
    from models.errors import ModelNotFoundError

    monkeypatch.setattr(settings_module, "shipped_checkpoint", lambda: None)
    with pytest.raises(ModelNotFoundError, match="--checkpoint.*--untrained"):
        Settings(_env_file=None).engine_config()


@pytest.mark.integration
def test_the_default_engine_has_the_shipped_fingerprint(tmp_path):
    import json

    from engine.core import Engine

    settings = Settings(_env_file=None, store=tmp_path / "store", index=str(tmp_path / "index"), device="cpu")
    engine = Engine.from_config(settings.engine_config())
    try:
        assert engine.fingerprint == json.loads((SHIPPED / "learner.json").read_text())["fingerprint"]
        assert engine.store.fingerprint == engine.fingerprint
    finally:
        engine.close()


def test_every_engine_setting_reaches_the_engine_config(tmp_path):
    """Each EngineConfig field is set from its Setting (a non-default value goes through), except the ones
    with no setting, which keep EngineConfig's default: a renamed field cannot be dropped silently."""
    import dataclasses

    from engine.config import EngineConfig

    values = dict(checkpoint=tmp_path, preset="tiny-preset", store=tmp_path / "store", retriever_backend="hybrid",
                  index="idx", es_url="http://es:9200", es_timeout_s=3.5, es_max_retries=4, device="cpu",
                  dtype="float32", torch_threads=3, missing_gradients="skip", write_back=True,
                  composition="softmax:0.2", relevance_cache_mb=64, stop_bias=2.5, beams=4)
    without_setting = {"encode_batch_size"}
    assert set(values) | without_setting == {f.name for f in dataclasses.fields(EngineConfig)}
    config = Settings(_env_file=None, **values).engine_config()
    defaults = EngineConfig()
    for name, value in values.items():
        assert getattr(config, name) == value and getattr(defaults, name) != value, name
    for name in without_setting:
        assert getattr(config, name) == getattr(defaults, name), name


def test_in_process_evaluation_reads_the_engine_settings_without_the_http_service(tmp_path):
    """`regrad evaluate --in-process` builds its settings from the engine's class: the same REGRAD_* names
    and flags as `regrad serve`, and no import of the HTTP service (FastAPI) on the way."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from cli.main import build_parser\n"
        "from cli.commands.serve import build_settings\n"
        "args = build_parser().parse_args(['evaluate', '--in-process', '--data', 'x.jsonl', '--output', 'p.jsonl',"
        " '--env-file', '/dev/null', '--max-batch', '3'])\n"
        "s = build_settings(args, engine_only=True)\n"
        "print(type(s).__module__, s.max_batch, s.composition, 'service' in sys.modules, 'fastapi' in sys.modules)\n"
    )
    env = {"PATH": "/usr/bin:/bin", "REGRAD_COMPOSITION": "sum", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                         check=True).stdout.split()
    assert out == ["engine.settings", "3", "sum", "False", "False"]


@pytest.mark.parametrize(("budget", "ahead", "expected"), [(512, True, (512, True)), (64, False, (64, False)),
                                                           (0, True, (None, False))])
def test_the_continuous_schedulers_settings_reach_it(tiny_learner, tmp_path, budget, ahead, expected):
    """REGRAD_PREFILL_BUDGET_TOKENS and REGRAD_WORK_AHEAD reach the scheduler the app starts (a tiny
    real engine; 0 turns the budget off, and work ahead with it)."""
    from fastapi.testclient import TestClient

    from engine.core import Engine
    from retrieval.passage import Passage
    from retrieval.tantivy_backend import TantivyRetriever
    from service.app import create_app

    retriever = TantivyRetriever(tmp_path / "index")
    retriever.add([Passage("p0", "Veltoria", "Veltoria is an island nation.")])
    settings = Settings(_env_file=None, prefill_budget_tokens=budget, work_ahead=ahead)
    app = create_app(settings, engine_factory=lambda _: Engine(tiny_learner, retriever, None))
    with TestClient(app):
        scheduler = app.state.batcher._scheduler
        assert (scheduler.prefill_budget_tokens, scheduler._work_ahead_on) == expected
