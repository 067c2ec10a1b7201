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


def test_export_of_several_runs_is_their_average_with_each_run_record(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                      real_learner) -> None:
    import torch
    from safetensors.torch import load_file

    from models import Learner

    real_learner.save(tmp_path / "a" / "best")
    (tmp_path / "a" / "training_log.jsonl").write_text('{"run": "a"}\n')
    other = Learner.load(tmp_path / "a" / "best")
    with torch.no_grad():   # a second "run": other LoRA weights and step sizes
        for t in other.trainable_parameters():
            t.add_(torch.randn_like(t) * 0.05)
    other.save(tmp_path / "b" / "best")
    (tmp_path / "b" / "training_log.jsonl").write_text('{"run": "b"}\n')
    del other

    soup = tmp_path / "soup"
    assert main(["export", "--checkpoint", str(tmp_path / "a" / "best"), "--checkpoint", str(tmp_path / "b" / "best"),
                 "--output", str(soup), "--weights-dtype", "float32"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    a, b, mean = (load_file(str(d / "learner.safetensors"))
                  for d in (tmp_path / "a" / "best", tmp_path / "b" / "best", soup))
    assert set(mean) == set(a)
    for name in a:   # LoRA A, LoRA B and every step size: the elementwise mean
        torch.testing.assert_close(mean[name], (a[name] + b[name]) / 2)
    assert any(not torch.equal(mean[n], a[n]) for n in a if n.endswith("lora_B"))
    assert Learner.load(soup, expect_fingerprint=report["fingerprint"]).fingerprint == report["fingerprint"]
    sources = json.loads((soup / "soup.json").read_text())["checkpoints"]
    assert [s["fingerprint"] for s in sources] == [json.loads((tmp_path / r / "best" / "learner.json").read_text())
                                                  ["fingerprint"] for r in "ab"]
    assert [(soup / s["record"] / "training_log.jsonl").read_text() for s in sources] == ['{"run": "a"}\n',
                                                                                           '{"run": "b"}\n']


def test_export_refuses_to_average_learners_of_different_presets(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                 real_learner) -> None:
    real_learner.save(tmp_path / "a")
    real_learner.save(tmp_path / "b")
    meta = json.loads((tmp_path / "b" / "learner.json").read_text())
    meta["config"]["name"] = "another-preset"
    (tmp_path / "b" / "learner.json").write_text(json.dumps(meta))
    assert main(["export", "--checkpoint", str(tmp_path / "a"), "--checkpoint", str(tmp_path / "b"),
                 "--output", str(tmp_path / "soup")]) != 0
    err = capsys.readouterr().err
    assert "another-preset" in err and "one preset" in err
    assert not (tmp_path / "soup").exists()
