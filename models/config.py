"""Learner configuration: which LoRA tensors exist and how they are adapted.

Building a config never imports torch. JSON presets in `models/presets/` load into
`LearnerConfig`; `__post_init__` rejects bad values naming the field.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal

from models.errors import ModelError

__all__ = ["LearnerConfig", "load_preset", "list_presets", "STEP_SIZE_MODES", "DOC_UPDATES", "BUNDLED_MODEL"]

STEP_SIZE_MODES = ("tie", "same", "fix", "full")
DOC_UPDATES = ("shared", "orthogonal")   # models/doc_subspace.py
BUNDLED_MODEL = "smollm2-135m-instruct"
_DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class LearnerConfig:
    """Args:
    base_model: bundled name (`smollm2-135m-instruct`), a local Hugging Face folder, or a hub id.
    target_modules: module name suffixes that get LoRA, e.g. `["gate_proj", "up_proj", "down_proj"]`.
    layers: decoder layer indices whose target modules get LoRA (the reference uses the upper half).
    r: LoRA rank.
    lora_alpha: LoRA alpha; the LoRA output is scaled by `lora_alpha / r`.
    step_size_mode: `tie` one learnable step size per tensor (paper default), `same` one for all,
        `fix` a constant `init_step_size`, `full` one per element.
    init_step_size: initial value of every step size (the reference's `init_alpha`).
    max_passage_tokens: passages are truncated to this many tokens, in training, encoding and serving alike.
    dtype: dtype of the frozen base weights (`float32` on CPU; `bfloat16` on GPUs). LoRA stays float32.
    name: the preset's name (informational; part of the fingerprint).
    doc_update: `shared` (the paper's: a passage's gradient moves every direction of the LoRA) or
        `orthogonal` (each passage gradient projected out of the task LoRA's own subspace before it is
        stored or applied: `models/doc_subspace.py`). Written to learner.json only when not `shared`,
        so learners saved before it existed keep their fingerprints.
    """

    base_model: str = BUNDLED_MODEL
    target_modules: list[str] = field(default_factory=lambda: ["gate_proj", "up_proj", "down_proj"])
    layers: list[int] = field(default_factory=list)
    r: int = 8
    lora_alpha: int = 16
    step_size_mode: Literal["tie", "same", "fix", "full"] = "tie"
    init_step_size: float = 0.01
    max_passage_tokens: int = 256
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    name: str = "custom"
    doc_update: Literal["shared", "orthogonal"] = "shared"

    def __post_init__(self) -> None:
        if self.step_size_mode not in STEP_SIZE_MODES:
            raise ModelError(f"`step_size_mode` must be one of {STEP_SIZE_MODES}, got {self.step_size_mode!r}")
        if self.doc_update not in DOC_UPDATES:
            raise ModelError(f"`doc_update` must be one of {DOC_UPDATES}, got {self.doc_update!r}")
        if self.dtype not in _DTYPES:
            raise ModelError(f"`dtype` must be one of {_DTYPES}, got {self.dtype!r}")
        if not isinstance(self.r, int) or self.r < 1:
            raise ModelError(f"`r` must be a positive integer, got {self.r!r}")
        if self.lora_alpha <= 0:
            raise ModelError(f"`lora_alpha` must be positive, got {self.lora_alpha!r}")
        if not self.target_modules:
            raise ModelError("`target_modules` must name at least one module, got []")
        if not self.layers or any((not isinstance(i, int)) or i < 0 for i in self.layers):
            raise ModelError(f"`layers` must be a non-empty list of layer indices >= 0, got {self.layers!r}")
        if self.max_passage_tokens < 8:
            raise ModelError(f"`max_passage_tokens` must be >= 8, got {self.max_passage_tokens!r}")
        self.layers = sorted(set(self.layers))

    @property
    def scaling(self) -> float:
        return self.lora_alpha / self.r

    def to_dict(self) -> dict:
        data = asdict(self)
        if data["doc_update"] == "shared":   # the default, and every learner saved before the field existed
            del data["doc_update"]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> LearnerConfig:
        data = dict(data)
        if "layers" in data and isinstance(data["layers"], dict):  # {"start": a, "stop": b} shorthand
            data["layers"] = list(range(data["layers"]["start"], data["layers"]["stop"]))
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ModelError(f"unknown learner config field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**data)


def list_presets() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("models.presets").iterdir() if p.name.endswith(".json"))


def load_preset(name_or_path: str) -> LearnerConfig:
    """Load a preset by name (`smollm2-135m-instruct`, `llama-3.2-1b-instruct`, ...) or from a JSON file.

    Example:
        >>> load_preset("smollm2-135m-instruct").r
        8
    """
    path = Path(name_or_path)
    if path.suffix == ".json" and path.is_file():
        text = path.read_text()
    else:
        candidate = resources.files("models.presets").joinpath(f"{name_or_path}.json")
        if not candidate.is_file():
            raise ModelError(f"unknown preset {name_or_path!r}; known presets: {list_presets()} (or a .json path)")
        text = candidate.read_text()
    return LearnerConfig.from_dict(json.loads(text))
