"""Shared fixtures: the real data folder, the bundled model, a tiny random learner."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only public data folder (`../shared/data` beside the repo; REGRAD_DATA_DIR overrides)."""
    path = Path(os.environ.get("REGRAD_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))
    assert path.is_dir(), f"shared data folder {path} is missing; set REGRAD_DATA_DIR"
    return path


@pytest.fixture(scope="session")
def bundled_model_dir() -> Path:
    """The prepared bundled SmolLM2 folder (converted once; `make test` prepares it first)."""
    from models import prepare_model

    return prepare_model()


def make_tiny_base(seed: int = 0, dtype: str = "float32"):
    """(model, tokenizer): the random 4-layer Llama of `make_tiny_learner`, the same weights for the same seed."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from models import prepare_model

    tokenizer = AutoTokenizer.from_pretrained(prepare_model())
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config).eval().to(getattr(torch, dtype))
    model.config._attn_implementation = "eager"
    return model, tokenizer


def make_tiny_learner(step_size_mode: str = "tie", seed: int = 0, randomize_b: bool = True, dtype: str = "float32"):
    """A random 4-layer Llama with the real tokenizer: fast, no download (`dtype`: its base weights)."""
    import torch

    from models import Learner, LearnerConfig

    model, tokenizer = make_tiny_base(seed, dtype)
    learner_config = LearnerConfig(
        base_model="tiny-random-llama", layers=[2, 3], r=4, lora_alpha=8,
        step_size_mode=step_size_mode, max_passage_tokens=64, name="tiny",
    )
    learner = Learner.from_model(model, tokenizer, learner_config)
    if randomize_b:  # a trained-looking learner: B != 0 so every gradient block is non-zero
        with torch.no_grad():
            for name, tensor in learner.lora_tensors().items():
                if name.endswith("lora_B"):
                    tensor.normal_(0, 0.2)
    return learner


@pytest.fixture()
def tiny_learner():
    return make_tiny_learner()


@pytest.fixture(scope="session")
def tiny_learner_factory():
    """`make_tiny_learner(step_size_mode=..., seed=..., randomize_b=...)` for tests that need variants."""
    return make_tiny_learner


@pytest.fixture(scope="session")
def real_learner():
    """The untrained learner on the real bundled model (shared by integration tests; never mutate it)."""
    from models import Learner, load_preset

    return Learner.create(load_preset("smollm2-135m-instruct"))


PASSAGES = [
    "Shirley Temple\nShirley Temple Black was an American actress who served as US Chief of Protocol.",
    "Kiss and Tell\nKiss and Tell is a 1945 American comedy film starring then 17-year-old Shirley Temple.",
    "Meet Corliss Archer\nMeet Corliss Archer, a program from radio's Golden Age, ran from 1943 to 1956.",
    "Paris\nParis is the capital and most populous city of France.",
    "A",
]


@pytest.fixture()
def passages() -> list[str]:
    return list(PASSAGES)
