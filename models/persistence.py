"""A learner on disk, and its fingerprint: `learner.safetensors` (LoRA A/B + step sizes) and `learner.json`
(config, layout, base-model identity, fingerprint), written atomically and checked when read. No pickle.

The fingerprint is a sha256 over the base model's identity, the preset, the layout and every weight: a
passage gradient is valid only for the learner with that value. `Learner.save`, `Learner.load`,
`Learner.read_meta` and `Learner.fingerprint` are the public entry points; they call these functions.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from models.base import resolve_model_path
from models.errors import LearnerMismatchError, ModelError

if TYPE_CHECKING:
    from torch import nn

__all__ = ["LEARNER_JSON", "LEARNER_WEIGHTS", "FORMAT_VERSION", "WEIGHTS_DTYPES", "base_identity", "config_sha256",
           "fingerprint", "state_tensors", "round_lora_weights", "save", "read_meta", "require_same_preset",
           "load_weights"]

LEARNER_JSON = "learner.json"
LEARNER_WEIGHTS = "learner.safetensors"
FORMAT_VERSION = 1
# How `save` may store the LoRA tensors: float16 and bfloat16 take the same bytes, and float16 keeps 3 more
# mantissa bits (LoRA weights are far inside its range), so it rounds 8x less (docs/results.md, rule 22a's reads).
WEIGHTS_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# Config keys that say where or how a model was loaded, not what it is: excluded from the identity,
# so the same learner has the same fingerprint in any cache folder, dtype or transformers version.
_VOLATILE_CONFIG_KEYS = {"_name_or_path", "transformers_version", "dtype", "torch_dtype", "use_cache",
                         "_attn_implementation", "_attn_implementation_autoset", "attn_implementation"}


def config_sha256(model) -> str:
    config = {k: v for k, v in model.config.to_dict().items() if k not in _VOLATILE_CONFIG_KEYS}
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def base_identity(name: str, model) -> dict:
    """What identifies the base model: its name, its architecture config, and the size of its weight files."""
    identity = {"name": name, "config_sha256": config_sha256(model)}
    try:
        source = resolve_model_path(name)
    except ModelError:
        source = None
    if isinstance(source, Path):
        identity["weights_bytes"] = sum(p.stat().st_size for p in sorted(source.glob("*.safetensors")))
    return identity


def state_tensors(learner: nn.Module) -> dict[str, torch.Tensor]:
    """What a checkpoint holds, by name: `lora.<layout name>` and `step_size.<name>`."""
    state = {f"lora.{name}": t for name, t in learner.lora_tensors().items()}
    state.update({f"step_size.{name}": p for name, p in learner.step_sizes.items()})
    return state


def fingerprint(learner: nn.Module) -> str:
    """sha256 over base-model identity, preset and weights: a gradient is valid only for this value."""
    h = hashlib.sha256()
    h.update(json.dumps(learner.base_identity, sort_keys=True).encode())
    h.update(json.dumps(learner.config.to_dict(), sort_keys=True).encode())
    h.update(json.dumps(learner.layout.to_json()).encode())
    for name, tensor in state_tensors(learner).items():
        h.update(name.encode())
        h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def round_lora_weights(learner: nn.Module, dtype: torch.dtype) -> None:
    """Round the LoRA tensors in place to the values `dtype` can hold (they stay float32).

    A learner saved with `weights_dtype="bfloat16"` (or "float16") is rounded first, so the fingerprint
    recorded is that of the weights `load` gives back, and gradients computed before and after saving
    agree. A value float16 cannot hold (beyond ±65504) is refused before anything is rounded.
    """
    if dtype == torch.float16:
        limit = torch.finfo(torch.float16).max
        for name, t in learner.lora_tensors().items():
            if not bool(t.detach().abs().le(limit).all()):
                raise ModelError(f"LoRA tensor {name} holds values float16 cannot store (beyond ±{limit:g}); "
                                 "save it in bfloat16 or float32 (`regrad export --weights-dtype bfloat16`)")
    with torch.no_grad():
        for t in learner.lora_tensors().values():
            t.copy_(t.to(dtype))


def save(learner: nn.Module, directory: str | os.PathLike, *, weights_dtype: str = "float32") -> Path:
        """Write learner.safetensors + learner.json atomically (temp files, then rename).

        `weights_dtype="bfloat16"` or `"float16"` stores the LoRA tensors in half the bytes (a shipped
        learner; float16 rounds 8x less); it rounds this learner's LoRA weights in place first
        (`round_lora_weights`). Step sizes stay float32. Loading reads any of the three.
        """
        from safetensors.torch import save_file

        if weights_dtype not in WEIGHTS_DTYPES:
            raise ModelError(f"weights_dtype must be one of {sorted(WEIGHTS_DTYPES)}, got {weights_dtype!r}")
        lora_dtype = WEIGHTS_DTYPES[weights_dtype]
        if lora_dtype != torch.float32:
            round_lora_weights(learner, lora_dtype)
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().to("cpu", lora_dtype if k.startswith("lora.") else torch.float32).contiguous()
                   for k, v in state_tensors(learner).items()}
        meta = {
            "format_version": FORMAT_VERSION,
            "fingerprint": fingerprint(learner),
            "config": learner.config.to_dict(),
            "base_model": learner.base_identity,
            "layout": learner.layout.to_json(),
            "dim": learner.layout.dim,
            "weights_dtype": weights_dtype,
            **({"composition": learner.composition} if learner.composition else {}),
            **({"beams": learner.beams} if learner.beams else {}),
        }
        for filename, write in (
            (LEARNER_WEIGHTS, lambda p: save_file(tensors, str(p), metadata={"fingerprint": meta["fingerprint"]})),
            (LEARNER_JSON, lambda p: p.write_text(json.dumps(meta, indent=2))),
        ):
            fd, tmp = tempfile.mkstemp(prefix=f".{filename}.", dir=directory)
            os.close(fd)
            write(Path(tmp))
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, directory / filename)
        return directory

def read_meta(directory: str | os.PathLike) -> dict:
    path = Path(directory) / LEARNER_JSON
    if not path.is_file():
        raise LearnerMismatchError(f"{path} does not exist: not a learner checkpoint folder")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise LearnerMismatchError(f"{path} is not valid JSON ({e}); the checkpoint is damaged") from e

def require_same_preset(learner: nn.Module, directory: str | os.PathLike, why: str) -> None:
    """Refuse the checkpoint in `directory` if its preset or base model is not this learner's."""
    meta = read_meta(directory)
    if meta.get("config") != learner.config.to_dict() or meta.get("base_model") != learner.base_identity:
        raise LearnerMismatchError(
            f"{Path(directory) / LEARNER_JSON}: preset {meta.get('config', {}).get('name')!r} on "
            f"{meta.get('base_model', {}).get('name')!r}, not {learner.config.name!r} on "
            f"{learner.base_identity.get('name')!r}; {why}"
        )

def load_weights(learner: nn.Module, directory: str | os.PathLike, expect_fingerprint: str | None = None) -> None:
    """Load weights saved by `save` into this learner, checking layout and fingerprint."""
    from safetensors.torch import load_file

    directory = Path(directory)
    meta = read_meta(directory)
    if meta.get("layout") != learner.layout.to_json():
        raise LearnerMismatchError(
            f"{directory / LEARNER_JSON}: parameter layout ({len(meta.get('layout', []))} tensors, "
            f"D={meta.get('dim')}) does not match this learner ({len(learner.layout)} tensors, D={learner.layout.dim})"
        )
    weights = directory / LEARNER_WEIGHTS
    if not weights.is_file():
        raise LearnerMismatchError(f"{weights} does not exist")
    tensors = load_file(str(weights))
    state = state_tensors(learner)
    if set(tensors) != set(state):
        missing, extra = sorted(set(state) - set(tensors)), sorted(set(tensors) - set(state))
        raise LearnerMismatchError(f"{weights}: missing tensors {missing[:3]}, unexpected {extra[:3]}")
    with torch.no_grad():
        for name, t in state.items():
            t.copy_(tensors[name].to(t.device, t.dtype))
    actual = fingerprint(learner)
    if actual != meta.get("fingerprint"):
        raise LearnerMismatchError(
            f"{weights}: fingerprint {actual[:12]}… does not match {meta.get('fingerprint', '')[:12]}… recorded in "
            f"{LEARNER_JSON} (different base model, preset, or damaged weights)"
        )
    if expect_fingerprint is not None and actual != expect_fingerprint:
        raise LearnerMismatchError(
            f"learner in {directory} has fingerprint {actual[:12]}…, expected {expect_fingerprint[:12]}…"
        )
