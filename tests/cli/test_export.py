"""`regrad export` on the real bundled model: a float16 copy that loads, with its run record beside it."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from cli.main import main


def test_export_writes_a_loadable_float16_learner_with_its_run_record(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                  real_learner) -> None:
    from models import Learner

    run = tmp_path / "run"
    real_learner.save(run / "best")  # untrained, fp32 (saving in fp32 leaves the shared learner as it is)
    (run / "training_log.jsonl").write_text('{"event": "validation", "step": 0}\n')
    Image.new("RGBA", (320, 80), "#1f77b4").save(run / "training_curves.png")  # as a run before compact plots
    assert main(["export", "--checkpoint", str(run / "best"), "--output", str(tmp_path / "shipped")]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["weights_dtype"] == "float16"   # the default: bf16's bytes, rounded 8x less
    record = f"runs/{json.loads((run / 'best' / 'learner.json').read_text())['fingerprint'][:12]}"
    assert report["copied"] == ["lineage.json", f"{record}/training_log.jsonl.gz", f"{record}/training_curves.png"]
    with Image.open(tmp_path / "shipped" / record / "training_curves.png") as plot:
        assert plot.mode == "P" and plot.size == (320, 80)  # copied as a palette PNG
    source = (run / "best" / "learner.safetensors").stat().st_size
    exported = (tmp_path / "shipped" / "learner.safetensors").stat().st_size
    assert exported < 0.51 * source
    loaded = Learner.load(tmp_path / "shipped", expect_fingerprint=report["fingerprint"])
    assert loaded.fingerprint == report["fingerprint"]
    stored = load_file(str(tmp_path / "shipped" / "learner.safetensors"))
    assert {t.dtype for n, t in stored.items() if n.startswith("lora.")} == {torch.float16}
    assert {t.dtype for n, t in stored.items() if not n.startswith("lora.")} == {torch.float32}   # step sizes
    log = gzip.decompress((tmp_path / "shipped" / record / "training_log.jsonl.gz").read_bytes())
    assert log == (run / "training_log.jsonl").read_bytes()
    steps = json.loads((tmp_path / "shipped" / "lineage.json").read_text())["steps"]
    assert [(s["kind"], s.get("record")) for s in steps] == [("run", record), ("export", None)]
    assert steps[-1]["fingerprint"] == report["fingerprint"] and steps[-1]["of"] == [steps[0]["fingerprint"]]


def test_export_in_bfloat16_loads_what_it_fingerprinted(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                       real_learner) -> None:
    """`--weights-dtype bfloat16` (the shipped learner's, and the default before float16): same bytes."""
    from models import Learner

    real_learner.save(tmp_path / "best")   # fp32 (the shared learner stays as it is)
    assert main(["export", "--checkpoint", str(tmp_path / "best"), "--output", str(tmp_path / "bf16"),
                 "--weights-dtype", "bfloat16"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["weights_dtype"] == "bfloat16"
    assert json.loads((tmp_path / "bf16" / "lineage.json").read_text())["steps"][-1]["weights_dtype"] == "bfloat16"
    stored = load_file(str(tmp_path / "bf16" / "learner.safetensors"))
    assert {t.dtype for n, t in stored.items() if n.startswith("lora.")} == {torch.bfloat16}
    loaded = Learner.load(tmp_path / "bf16", expect_fingerprint=report["fingerprint"])
    assert loaded.fingerprint == report["fingerprint"] != real_learner.fingerprint   # rounded, not the fp32 one
    assert (tmp_path / "bf16" / "learner.safetensors").stat().st_size < 0.51 * (
        tmp_path / "best" / "learner.safetensors").stat().st_size


def test_export_dtype_names_are_the_learners_own() -> None:
    """The CLI's and the recipe's list (torch-free) is `models.persistence.WEIGHTS_DTYPES`, default first."""
    from models.persistence import WEIGHTS_DTYPES
    from offline_tools.training.export import EXPORT_DTYPES

    assert sorted(EXPORT_DTYPES) == sorted(WEIGHTS_DTYPES) and EXPORT_DTYPES[0] == "float16"


def test_export_refuses_in_words_what_float16_cannot_hold(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                          real_learner) -> None:
    """A LoRA value beyond ±65504 under the float16 default: exit 1, the remedy named, nothing written."""
    from models import Learner

    real_learner.save(tmp_path / "best")
    big = Learner.load(tmp_path / "best")
    with torch.no_grad():
        next(iter(big.lora_tensors().values())).view(-1)[0] = 1e6
    big.save(tmp_path / "big")
    del big
    assert main(["export", "--checkpoint", str(tmp_path / "big"), "--output", str(tmp_path / "out")]) == 1
    assert "--weights-dtype bfloat16" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_export_refuses_to_overwrite_its_own_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                       real_learner) -> None:
    real_learner.save(tmp_path / "best")
    before = (tmp_path / "best" / "learner.safetensors").read_bytes()
    assert main(["export", "--checkpoint", str(tmp_path / "best"), "--output", str(tmp_path / "best")]) != 0
    assert "new folder" in capsys.readouterr().err
    assert (tmp_path / "best" / "learner.safetensors").read_bytes() == before


def test_export_of_several_runs_is_their_average_with_each_run_record(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                      real_learner) -> None:
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
    steps = json.loads((soup / "lineage.json").read_text())["steps"]
    runs = [json.loads((tmp_path / r / "best" / "learner.json").read_text())["fingerprint"] for r in "ab"]
    assert [(s["kind"], s["fingerprint"]) for s in steps] == [("run", runs[0]), ("run", runs[1]),
                                                              ("average", report["fingerprint"])]
    assert steps[-1]["of"] == runs
    assert [gzip.decompress((soup / s["record"] / "training_log.jsonl.gz").read_bytes()) for s in steps[:2]] == [
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


def test_export_of_a_warm_started_run_keeps_its_lineage_flat(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                            real_learner) -> None:
    """A run trained with --init-from an exported learner: the export lists the start's own steps first, then
    the run (init_from: the start's fingerprint), then itself; every run's record side by side in runs/."""
    from models import Learner

    def trained(folder: Path, seed: int) -> None:   # a "run" of its own: other LoRA weights and step sizes
        real_learner.save(folder)
        learner = Learner.load(folder)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for t in learner.trainable_parameters():
                t.add_(torch.randn(t.shape, generator=generator) * 0.05)
        learner.save(folder)

    first = tmp_path / "first"
    trained(first / "best", 1)
    (first / "training_log.jsonl").write_text('{"run": 1}\n')
    start = tmp_path / "start"
    assert main(["export", "--checkpoint", str(first / "best"), "--output", str(start)]) == 0
    (start / "COMMAND.md").write_text("not part of a record\n")
    run = tmp_path / "run"
    trained(run / "best", 2)
    (run / "train_args.json").write_text(json.dumps({"init_from": str(start)}))
    (run / "training_log.jsonl").write_text('{"run": 3}\n')
    out = tmp_path / "shipped"
    assert main(["export", "--checkpoint", str(run / "best"), "--output", str(out)]) == 0
    capsys.readouterr()
    steps = json.loads((out / "lineage.json").read_text())["steps"]
    fingerprint = {name: json.loads((folder / "learner.json").read_text())["fingerprint"]
                   for name, folder in (("first", first / "best"), ("start", start), ("run", run / "best"),
                                        ("out", out))}
    assert [(s["kind"], s["fingerprint"]) for s in steps] == [
        ("run", fingerprint["first"]), ("export", fingerprint["start"]), ("run", fingerprint["run"]),
        ("export", fingerprint["out"])]
    assert steps[2]["init_from"] == fingerprint["start"] and steps[0]["init_from"] is None
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    first_record, run_record = steps[0]["record"], steps[2]["record"]
    assert files == sorted(["learner.json", "learner.safetensors", "lineage.json",
                            f"{first_record}/training_log.jsonl.gz", f"{run_record}/train_args.json",
                            f"{run_record}/training_log.jsonl.gz"])
    assert gzip.decompress((out / first_record / "training_log.jsonl.gz").read_bytes()) == b'{"run": 1}\n'
    # Averaged with the learner it started from: the start's steps and records appear once.
    both = tmp_path / "both"
    assert main(["export", "--checkpoint", str(run / "best"), "--checkpoint", str(start), "--output", str(both)]) == 0
    capsys.readouterr()
    both_steps = json.loads((both / "lineage.json").read_text())["steps"]
    assert [s["fingerprint"] for s in both_steps[:3]] == [s["fingerprint"] for s in steps[:3]]
    assert both_steps[-1]["kind"] == "average" and both_steps[-1]["of"] == [fingerprint["run"], fingerprint["start"]]
    assert sorted(p.name for p in (both / "runs").iterdir()) == sorted([first_record[5:], run_record[5:]])


# ------------------------------------------------------------------ --composition, on a tiny learner
@pytest.fixture()
def tiny_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tiny "run" whose best/ was meta-trained with `softmax:0.1369` (as run 8's was); loading it builds
    its in-memory base model again."""
    from tests.conftest import make_tiny_base, make_tiny_learner

    learner = make_tiny_learner()
    learner.composition = "softmax:0.1369"
    learner.save(tmp_path / "run" / "best")
    (tmp_path / "run" / "training_log.jsonl").write_text('{"event": "validation", "step": 0}\n')
    monkeypatch.setattr("models.learner.load_base_model", lambda name, dtype="float32", device="cpu": make_tiny_base())
    return tmp_path / "run" / "best"


def _export(capsys: pytest.CaptureFixture, *argv: str) -> dict:
    assert main(["export", *argv]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_export_composition_sets_the_served_default_and_leaves_the_fingerprint(
        tmp_path: Path, capsys: pytest.CaptureFixture, tiny_run: Path) -> None:
    from models import Learner

    plain = _export(capsys, "--checkpoint", str(tiny_run), "--output", str(tmp_path / "plain"))
    served = _export(capsys, "--checkpoint", str(tiny_run), "--output", str(tmp_path / "served"),
                     "--composition", " likelihood:0.20")
    meta = {name: json.loads((tmp_path / name / "learner.json").read_text()) for name in ("plain", "served")}
    # without the flag: the checkpoint's own, as before; with it: the flag's, in its canonical form
    assert meta["plain"]["composition"] == plain["composition"] == "softmax:0.1369"
    assert meta["served"]["composition"] == served["composition"] == "likelihood:0.2"
    # metadata only: the same weights, the same fingerprint
    assert served["fingerprint"] == plain["fingerprint"] == meta["served"]["fingerprint"]
    assert (tmp_path / "served" / "learner.safetensors").read_bytes() == \
        (tmp_path / "plain" / "learner.safetensors").read_bytes()
    loaded = Learner.load(tmp_path / "served", expect_fingerprint=served["fingerprint"])
    assert loaded.composition == "likelihood:0.2"
    steps = {name: json.loads((tmp_path / name / "lineage.json").read_text())["steps"] for name in ("plain", "served")}
    assert steps["served"][-1] == {**steps["plain"][-1], "composition": "likelihood:0.2"}
    assert "composition" not in steps["plain"][-1] and steps["served"][:-1] == steps["plain"][:-1]
    # an export of that export keeps its served composition unless told otherwise
    again = _export(capsys, "--checkpoint", str(tmp_path / "served"), "--output", str(tmp_path / "again"))
    assert again["composition"] == "likelihood:0.2" and again["fingerprint"] == served["fingerprint"]


def test_export_composition_of_an_average_replaces_the_first_checkpoints(
        tmp_path: Path, capsys: pytest.CaptureFixture, tiny_run: Path) -> None:
    from engine.composition import DEFAULT_TEMPERATURES
    from models import Learner

    other = Learner.load(tiny_run)
    other.composition = "sum"
    other.save(tmp_path / "other")
    both = ["--checkpoint", str(tiny_run), "--checkpoint", str(tmp_path / "other")]
    assert _export(capsys, *both, "--output", str(tmp_path / "soup"))["composition"] == "softmax:0.1369"
    report = _export(capsys, *both, "--output", str(tmp_path / "soup-served"), "--composition", "likelihood")
    written = f"likelihood:{DEFAULT_TEMPERATURES['likelihood']:g}"   # the kind's default temperature, written out
    assert report["composition"] == written
    last = json.loads((tmp_path / "soup-served" / "lineage.json").read_text())["steps"][-1]
    assert last["kind"] == "average" and last["composition"] == written


def test_export_beams_sets_the_served_width_and_leaves_the_fingerprint(
        tmp_path: Path, capsys: pytest.CaptureFixture, tiny_run: Path) -> None:
    """`--beams W` writes learner.json `beams` (and the lineage's last step); the weights and fingerprint are
    the plain export's; an export of it keeps it; a width out of range writes nothing."""
    from models import Learner

    plain = _export(capsys, "--checkpoint", str(tiny_run), "--output", str(tmp_path / "plain"))
    served = _export(capsys, "--checkpoint", str(tiny_run), "--output", str(tmp_path / "served"), "--beams", "4")
    assert plain["beams"] is None and "beams" not in json.loads((tmp_path / "plain" / "learner.json").read_text())
    assert served["beams"] == json.loads((tmp_path / "served" / "learner.json").read_text())["beams"] == 4
    assert served["fingerprint"] == plain["fingerprint"]
    assert Learner.load(tmp_path / "served").beams == 4
    assert json.loads((tmp_path / "served" / "lineage.json").read_text())["steps"][-1]["beams"] == 4
    assert _export(capsys, "--checkpoint", str(tmp_path / "served"), "--output", str(tmp_path / "again"))["beams"] == 4
    assert main(["export", "--checkpoint", str(tiny_run), "--output", str(tmp_path / "bad"), "--beams", "9"]) == 2
    assert "--beams 9: must be in 1..8" in capsys.readouterr().err and not (tmp_path / "bad").exists()


@pytest.mark.parametrize("spec, message", [
    ("likelyhood:0.2", "composition must be one of sum, softmax, likelihood, got 'likelyhood'"),
    ("likelihood:warm", "composition temperature must be a number, got 'warm'"),
    ("softmax:0", "composition temperature must be finite and > 0"),
])
def test_export_refuses_a_bad_composition_before_writing_anything(
        tmp_path: Path, capsys: pytest.CaptureFixture, tiny_run: Path, spec: str, message: str) -> None:
    assert main(["export", "--checkpoint", str(tiny_run), "--output", str(tmp_path / "out"),
                 "--composition", spec]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"regrad: error: --composition {spec}: ") and message in err, err
    assert "Traceback" not in err and not (tmp_path / "out").exists()
    assert main(["export", "--checkpoint", str(tiny_run), "--peft", str(tmp_path / "adapter"),
                 "--composition", "likelihood:0.2"]) == 2
    assert "a PEFT adapter has none" in capsys.readouterr().err and not (tmp_path / "adapter").exists()
