import subprocess
import sys
import time

import pytest
import torch


@pytest.mark.integration
def test_converted_weights_give_the_same_logits_as_the_gguf(bundled_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from models.base import bundled_gguf_path

    gguf = bundled_gguf_path()
    reference = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name).eval()
    converted = AutoModelForCausalLM.from_pretrained(bundled_model_dir).eval()
    tok = AutoTokenizer.from_pretrained(bundled_model_dir)
    ids = tok(["The capital of France is", "ReGrad stores gradients"], return_tensors="pt", padding=True)
    with torch.no_grad():
        a = reference(**ids).logits
        b = converted(**ids).logits
    assert torch.allclose(a, b, atol=1e-5), float((a - b).abs().max())


@pytest.mark.integration
def test_model_prepare_cli_is_idempotent_and_prints_the_folder(bundled_model_dir):
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "cli", "model", "prepare"],
                         capture_output=True, text=True, check=True)
    elapsed = time.perf_counter() - started
    folder = out.stdout.strip().splitlines()[-1]
    assert folder == str(bundled_model_dir)
    assert (bundled_model_dir / "config.json").is_file() and list(bundled_model_dir.glob("*.safetensors"))
    assert elapsed < 20  # a no-op: no GGUF conversion (which takes ~25 s here)


def test_unknown_model_name_is_a_clear_error():
    from models import ModelNotFoundError
    from models.base import resolve_model_path

    with pytest.raises(ModelNotFoundError, match="neither the bundled"):
        resolve_model_path("no-such-model")


def test_resolve_dtype_picks_bf16_only_where_it_is_native(monkeypatch):
    import models.base
    from models.base import resolve_dtype

    flags: set[str] = set()
    monkeypatch.setattr(models.base, "_cpu_flag", lambda flag: flag in flags)
    assert resolve_dtype("float32", "cpu") == "float32" and resolve_dtype("bfloat16", "cuda") == "bfloat16"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert resolve_dtype("auto", "cpu") == "bfloat16"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert resolve_dtype("auto", "cpu") is None   # the preset's own dtype
    flags.add("avx512_bf16")                      # e.g. AMD Zen 4/5: native bf16 without AMX
    assert resolve_dtype("auto", "cpu") == "bfloat16"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_dtype("auto", "cuda") is None
