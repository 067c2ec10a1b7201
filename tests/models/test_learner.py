import json

import pytest
import torch

from models import LearnerConfig, LearnerMismatchError, ModelError, list_presets, load_preset


def test_presets_load_and_bundled_gradient_fits_the_budget():
    assert {"smollm2-135m-instruct", "llama-3.2-1b-instruct", "llama-3.2-3b-instruct",
            "llama-3.1-8b-instruct"} <= set(list_presets())
    cfg = load_preset("smollm2-135m-instruct")
    assert cfg.layers == list(range(15, 30)) and cfg.r == 8
    # LoRA on gate/up/down: (r*576 + 1536*r) * 3 per layer
    dim = (cfg.r * 576 + 1536 * cfg.r) * 3 * len(cfg.layers)
    assert dim * 2 <= 3_000_000  # bf16 bytes per passage gradient
    llama1b = load_preset("llama-3.2-1b-instruct")
    assert (llama1b.r, llama1b.layers[0], llama1b.layers[-1]) == (16, 8, 15)


@pytest.mark.parametrize("field,value", [("step_size_mode", "bogus"), ("r", 0), ("layers", []), ("dtype", "int4")])
def test_bad_config_names_the_field(field, value):
    kwargs = {"layers": [1], field: value}
    with pytest.raises(ModelError, match=f"`{field}`"):
        LearnerConfig(**kwargs)


@pytest.mark.parametrize("mode", ["tie", "same", "fix", "full"])
def test_every_step_size_mode_works(tiny_learner_factory, mode, passages):
    from models import summed_gradient

    learner = tiny_learner_factory(step_size_mode=mode)
    alpha = learner.step_size_vector()
    assert alpha.shape == (learner.layout.dim,)
    assert torch.allclose(alpha, torch.full_like(alpha, learner.config.init_step_size))
    n_step_params = sum(p.numel() for p in learner.step_sizes.parameters())
    expected = {"tie": len(learner.layout), "same": 1, "fix": 0, "full": learner.layout.dim}[mode]
    assert n_step_params == expected
    g = summed_gradient(learner, passages[:2])  # `fix` crashes here in the reference
    assert torch.isfinite(g).all()


def test_save_load_roundtrip_and_fingerprint(tiny_learner_factory, tmp_path):
    learner = tiny_learner_factory(seed=1)
    fp = learner.fingerprint
    learner.save(tmp_path / "ckpt")
    meta = json.loads((tmp_path / "ckpt" / "learner.json").read_text())
    assert meta["fingerprint"] == fp and meta["dim"] == learner.layout.dim

    other = tiny_learner_factory(seed=1, randomize_b=False)  # same architecture, different weights
    assert other.fingerprint != fp
    other.load_weights(tmp_path / "ckpt", expect_fingerprint=fp)
    assert other.fingerprint == fp
    for name, t in learner.lora_tensors().items():
        assert torch.equal(t, other.lora_tensors()[name])


def test_bf16_save_halves_the_lora_bytes_and_loads_what_was_fingerprinted(tiny_learner_factory, tmp_path, passages):
    from safetensors import safe_open

    from models import summed_gradient

    learner = tiny_learner_factory(seed=3)
    exact = {name: t.detach().clone() for name, t in learner.lora_tensors().items()}
    learner.save(tmp_path / "fp32")
    learner.save(tmp_path / "bf16", weights_dtype="bfloat16")
    meta = json.loads((tmp_path / "bf16" / "learner.json").read_text())
    assert meta["weights_dtype"] == "bfloat16" and meta["fingerprint"] == learner.fingerprint
    with safe_open(str(tmp_path / "bf16" / "learner.safetensors"), "pt") as f:
        names = f.keys()
        dtypes = {k: f.get_slice(k).get_dtype() for k in names}
    assert {d for k, d in dtypes.items() if k.startswith("lora.")} == {"BF16"}
    assert {d for k, d in dtypes.items() if k.startswith("step_size.")} == {"F32"}
    size = {d: (tmp_path / d / "learner.safetensors").stat().st_size for d in ("fp32", "bf16")}
    assert size["bf16"] < size["fp32"]
    # saving rounded the learner itself, so what it computes now is what the loaded copy computes
    for name, t in learner.lora_tensors().items():
        assert torch.equal(t, exact[name].to(torch.bfloat16).float()) and t.dtype == torch.float32
    loaded = tiny_learner_factory(seed=3, randomize_b=False)
    loaded.load_weights(tmp_path / "bf16", expect_fingerprint=meta["fingerprint"])
    assert torch.equal(summed_gradient(loaded, passages[:2]), summed_gradient(learner, passages[:2]))
    with pytest.raises(ModelError, match="weights_dtype"):
        learner.save(tmp_path / "x", weights_dtype="int8")


def test_float16_save_takes_bf16s_bytes_and_rounds_less(tiny_learner_factory, tmp_path):
    """float16 stores the LoRA in bfloat16's bytes with 3 more mantissa bits: it loads exactly what was
    fingerprinted, and its rounding error is several times smaller than bfloat16's on the same weights."""
    from safetensors import safe_open

    exact = {n: t.detach().clone() for n, t in tiny_learner_factory(seed=5).lora_tensors().items()}
    saved = {}
    for dtype in ("bfloat16", "float16"):
        learner = tiny_learner_factory(seed=5)
        learner.save(tmp_path / dtype, weights_dtype=dtype)
        saved[dtype] = {n: t.detach().clone() for n, t in learner.lora_tensors().items()}
        loaded = tiny_learner_factory(seed=5, randomize_b=False)
        loaded.load_weights(tmp_path / dtype, expect_fingerprint=learner.fingerprint)
        for name, t in loaded.lora_tensors().items():
            assert torch.equal(t, saved[dtype][name])
    with safe_open(str(tmp_path / "float16" / "learner.safetensors"), "pt") as f:
        names = f.keys()
        assert {f.get_slice(k).get_dtype() for k in names if k.startswith("lora.")} == {"F16"}
    sizes = {d: (tmp_path / d / "learner.safetensors").stat().st_size for d in saved}
    assert abs(sizes["float16"] - sizes["bfloat16"]) < 64   # the same tensor bytes; the header names the dtype

    def error(dtype: str) -> float:
        off = sum(float((saved[dtype][n] - exact[n]).norm()) for n in exact)
        return off / sum(float(t.norm()) for t in exact.values())

    assert 0 < error("float16") < error("bfloat16") / 4


def test_float16_save_refuses_a_value_it_cannot_hold_and_writes_nothing(tiny_learner_factory, tmp_path):
    learner = tiny_learner_factory(seed=5)
    name, tensor = next(iter(learner.lora_tensors().items()))
    with torch.no_grad():
        tensor.view(-1)[0] = 1e6
    before = {n: t.detach().clone() for n, t in learner.lora_tensors().items()}
    with pytest.raises(ModelError, match=f"{name}.*float16 cannot store"):
        learner.save(tmp_path / "f16", weights_dtype="float16")
    assert not (tmp_path / "f16").exists()
    assert all(torch.equal(t, before[n]) for n, t in learner.lora_tensors().items())   # nothing rounded


def test_load_refuses_tampered_weights_and_wrong_fingerprint(tiny_learner_factory, tmp_path):
    from safetensors.torch import load_file, save_file

    learner = tiny_learner_factory()
    learner.save(tmp_path)
    with pytest.raises(LearnerMismatchError, match="expected"):
        tiny_learner_factory().load_weights(tmp_path, expect_fingerprint="0" * 64)
    tensors = load_file(str(tmp_path / "learner.safetensors"))
    first = next(iter(tensors))
    tensors[first] = tensors[first] + 1
    save_file(tensors, str(tmp_path / "learner.safetensors"))
    with pytest.raises(LearnerMismatchError, match="fingerprint"):
        tiny_learner_factory().load_weights(tmp_path)


def test_load_refuses_other_layout(tiny_learner_factory, tmp_path):
    tiny_learner_factory(step_size_mode="tie").save(tmp_path)
    with pytest.raises(LearnerMismatchError):
        tiny_learner_factory(step_size_mode="same").load_weights(tmp_path)
    with pytest.raises(LearnerMismatchError, match="does not exist"):
        tiny_learner_factory().load_weights(tmp_path / "nowhere")


def test_untrained_learner_is_the_base_model(tiny_learner_factory):
    learner = tiny_learner_factory(randomize_b=False)
    ids = learner.tokenizer(["Hello there"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        adapted = learner.model(input_ids=ids).logits
        for layer in learner.lora_modules.values():  # the frozen base layer alone, no LoRA term
            layer.forward = layer.base_layer.forward
        base = learner.model(input_ids=ids).logits
    assert torch.equal(adapted, base)


def test_fingerprint_ignores_where_the_base_model_was_loaded_from(tiny_learner_factory):
    from models.persistence import config_sha256 as _config_sha256

    base = tiny_learner_factory(seed=5).model.get_base_model()
    before = _config_sha256(base)
    base.config._name_or_path = "/some/other/cache/folder"
    base.config.use_cache = not base.config.use_cache
    assert _config_sha256(base) == before
    base.config.hidden_act = "gelu"  # the architecture itself does count
    assert _config_sha256(base) != before
