"""`regrad export --peft`: the learner's LoRA as a standard PEFT adapter that peft loads onto the base model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli.main import main
from tests.conftest import make_tiny_base, make_tiny_learner


@pytest.fixture()
def tiny_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, object]:
    """A tiny learner saved with `Learner.save`; loading it builds its in-memory base model again."""
    learner = make_tiny_learner()
    learner.save(tmp_path / "best")
    monkeypatch.setattr("models.learner.load_base_model", lambda name, dtype="float32", device="cpu": make_tiny_base())
    return tmp_path / "best", learner


def test_peft_adapter_gives_the_learners_logits_with_no_gradients(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                  tiny_checkpoint) -> None:
    import torch
    from peft import PeftModel
    from safetensors import safe_open

    checkpoint, learner = tiny_checkpoint
    out = tmp_path / "adapter"
    assert main(["export", "--checkpoint", str(checkpoint), "--peft", str(out)]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    assert report["fingerprint"] == learner.fingerprint and report["weights_dtype"] == "float32"
    config = json.loads((out / "adapter_config.json").read_text())
    assert (config["peft_type"], config["r"], config["lora_alpha"]) == ("LORA", 4, 8)
    assert config["base_model_name_or_path"] == "tiny-random-llama"
    with safe_open(str(out / "adapter_model.safetensors"), "pt") as f:
        names = list(f.keys())
    assert len(names) == 2 * len(learner.lora_modules)   # A and B of each LoRA layer; no step sizes
    assert all(".lora_A.weight" in n or ".lora_B.weight" in n for n in names)

    base, tokenizer = make_tiny_base()
    peft_model = PeftModel.from_pretrained(base, str(out)).eval()
    ids = tokenizer(["Who was Shirley Temple?", "The capital of France is"], return_tensors="pt",
                    padding=True).input_ids
    with torch.no_grad():
        expected = learner.model(input_ids=ids).logits
        got = peft_model(input_ids=ids).logits
        plain = make_tiny_base()[0](input_ids=ids).logits
    assert not torch.allclose(plain, expected, atol=1e-3)   # the LoRA changes the logits...
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)   # ...and the adapter carries it exactly


def test_peft_export_refuses_a_folder_that_is_not_empty(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                        tiny_checkpoint) -> None:
    checkpoint, _ = tiny_checkpoint
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "notes.txt").write_text("mine")
    assert main(["export", "--checkpoint", str(checkpoint), "--peft", str(tmp_path / "adapter")]) != 0
    assert "not an empty folder" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "adapter").iterdir()] == ["notes.txt"]


def test_peft_and_output_together_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["export", "--checkpoint", "run/best", "--peft", str(tmp_path / "a"), "--output", str(tmp_path / "b")])
    assert exit_.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
