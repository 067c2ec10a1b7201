"""`regrad export` on the real bundled model: a bf16 copy that loads, with its run record beside it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli.main import main


def test_export_writes_a_loadable_bf16_learner_with_its_run_record(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                  real_learner) -> None:
    from models import Learner

    run = tmp_path / "run"
    real_learner.save(run / "best")  # untrained, fp32 (saving in fp32 leaves the shared learner as it is)
    (run / "training_log.jsonl").write_text('{"event": "validation", "step": 0}\n')
    assert main(["export", "--checkpoint", str(run / "best"), "--output", str(tmp_path / "shipped")]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["weights_dtype"] == "bfloat16" and report["copied"] == ["training_log.jsonl"]
    source = (run / "best" / "learner.safetensors").stat().st_size
    exported = (tmp_path / "shipped" / "learner.safetensors").stat().st_size
    assert exported < 0.51 * source
    loaded = Learner.load(tmp_path / "shipped", expect_fingerprint=report["fingerprint"])
    assert loaded.fingerprint == report["fingerprint"]
    assert (tmp_path / "shipped" / "training_log.jsonl").read_text() == (run / "training_log.jsonl").read_text()


def test_export_refuses_to_overwrite_its_own_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                       real_learner) -> None:
    real_learner.save(tmp_path / "best")
    before = (tmp_path / "best" / "learner.safetensors").read_bytes()
    assert main(["export", "--checkpoint", str(tmp_path / "best"), "--output", str(tmp_path / "best")]) != 0
    assert "new folder" in capsys.readouterr().err
    assert (tmp_path / "best" / "learner.safetensors").read_bytes() == before
