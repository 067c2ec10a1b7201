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
    args = build_parser().parse_args(["serve", "--env-file", "/dev/null", "--max-batch", "0"])
    with pytest.raises(UsageError, match="max_batch"):
        build_settings(args)
