"""`regrad export` on the real bundled model: a bf16 copy that loads, with its run record beside it."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from PIL import Image

from cli.main import main


def test_export_writes_a_loadable_bf16_learner_with_its_run_record(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                  real_learner) -> None:
    from models import Learner

    run = tmp_path / "run"
    real_learner.save(run / "best")  # untrained, fp32 (saving in fp32 leaves the shared learner as it is)
    (run / "training_log.jsonl").write_text('{"event": "validation", "step": 0}\n')
    Image.new("RGBA", (320, 80), "#1f77b4").save(run / "training_curves.png")  # as a run before compact plots
    assert main(["export", "--checkpoint", str(run / "best"), "--output", str(tmp_path / "shipped")]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["weights_dtype"] == "bfloat16"
    assert report["copied"] == ["training_log.jsonl.gz", "training_curves.png"]
    with Image.open(tmp_path / "shipped" / "training_curves.png") as plot:
        assert plot.mode == "P" and plot.size == (320, 80)  # copied as a palette PNG
    source = (run / "best" / "learner.safetensors").stat().st_size
    exported = (tmp_path / "shipped" / "learner.safetensors").stat().st_size
    assert exported < 0.51 * source
    loaded = Learner.load(tmp_path / "shipped", expect_fingerprint=report["fingerprint"])
    assert loaded.fingerprint == report["fingerprint"]
    log = gzip.decompress((tmp_path / "shipped" / "training_log.jsonl.gz").read_bytes())
    assert log == (run / "training_log.jsonl").read_bytes()


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
    assert [gzip.decompress((soup / s["record"] / "training_log.jsonl.gz").read_bytes()) for s in sources] == [
        b'{"run": "a"}\n', b'{"run": "b"}\n']


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


def test_export_of_a_warm_started_run_keeps_its_lineage(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                       real_learner) -> None:
    """A run trained with --init-from an exported soup: the export names the soup's fingerprint
    (init.json) and carries the soup's own record (soup.json, runs/<i>/) under init/."""
    soup = tmp_path / "soup"
    (soup / "runs" / "1").mkdir(parents=True)
    real_learner.save(soup)
    (soup / "soup.json").write_text('{"checkpoints": []}\n')
    (soup / "runs" / "1" / "training_log.jsonl").write_text('{"run": 1}\n')
    (soup / "COMMAND.md").write_text("not part of a record\n")
    run = tmp_path / "run"
    real_learner.save(run / "best")
    (run / "train_args.json").write_text(json.dumps({"init_from": str(soup)}))
    (run / "training_log.jsonl").write_text('{"run": 3}\n')
    out = tmp_path / "shipped"
    assert main(["export", "--checkpoint", str(run / "best"), "--output", str(out)]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["copied"] == ["training_log.jsonl.gz", "train_args.json", "init.json", "init/"]
    init = json.loads((out / "init.json").read_text())
    assert init["fingerprint"] == json.loads((soup / "learner.json").read_text())["fingerprint"]
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == ["init.json", "init/runs/1/training_log.jsonl.gz", "init/soup.json", "learner.json",
                     "learner.safetensors", "train_args.json", "training_log.jsonl.gz"]
    assert gzip.decompress((out / "init" / "runs" / "1" / "training_log.jsonl.gz").read_bytes()) == b'{"run": 1}\n'
    # Averaged with the learner it started from: that one's record is the warm run's init/, not copied twice.
    both = tmp_path / "both"
    assert main(["export", "--checkpoint", str(run / "best"), "--checkpoint", str(soup), "--output", str(both)]) == 0
    capsys.readouterr()
    entries = json.loads((both / "soup.json").read_text())["checkpoints"]
    assert [(e["record"], e["copied"] == []) for e in entries] == [("runs/1", False), ("runs/1/init", True)]
    assert (both / "runs" / "1" / "init" / "soup.json").is_file() and not (both / "runs" / "2").exists()
