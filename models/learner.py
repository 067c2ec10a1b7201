"""The learner: a frozen base model, LoRA (peft) on the preset's modules, and learnable step sizes.

Saved as `learner.safetensors` (LoRA A/B + step sizes) and `learner.json` (config, layout,
base-model identity, fingerprint). Loading refuses a file whose fingerprint or layout does not
match. No pickle anywhere.

Per-request adaptation never mutates shared weights: `with learner.adapted_rows(deltas):` makes
row i of the next forward passes use A + dA_i, B + dB_i (see `models/adapt.py`): every LoRA layer
is a `models.row_lora.RowLoraLinear`, which reads the step's row metadata from the learner's slot.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from models.base import load_base_model, resolve_model_path
from models.config import LearnerConfig
from models.errors import LearnerMismatchError, ModelError
from models.layout import ParamLayout
from models.row_lora import RowAdapters, RowAdapterSlot, RowLoraLinear

__all__ = ["Learner", "LEARNER_JSON", "LEARNER_WEIGHTS"]

LEARNER_JSON = "learner.json"
LEARNER_WEIGHTS = "learner.safetensors"
FORMAT_VERSION = 1
WEIGHTS_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}  # how `save` may store LoRA


# Config keys that say where or how a model was loaded, not what it is: excluded from the identity,
# so the same learner has the same fingerprint in any cache folder, dtype or transformers version.
_VOLATILE_CONFIG_KEYS = {"_name_or_path", "transformers_version", "dtype", "torch_dtype", "use_cache",
                         "_attn_implementation", "_attn_implementation_autoset", "attn_implementation"}


def _config_sha256(model) -> str:
    config = {k: v for k, v in model.config.to_dict().items() if k not in _VOLATILE_CONFIG_KEYS}
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def _base_identity(name: str, model) -> dict:
    """What identifies the base model: its name, its architecture config, and the size of its weight files."""
    identity = {"name": name, "config_sha256": _config_sha256(model)}
    try:
        source = resolve_model_path(name)
    except ModelError:
        source = None
    if isinstance(source, Path):
        identity["weights_bytes"] = sum(p.stat().st_size for p in sorted(source.glob("*.safetensors")))
    return identity


class Learner(nn.Module):
    """LoRA + step sizes on a frozen base model.

    Example:
        >>> learner = Learner.create(load_preset("smollm2-135m-instruct"))
        >>> learner.layout.dim
        760320
    """

    def __init__(self, model, tokenizer, config: LearnerConfig, base_identity: dict) -> None:
        super().__init__()
        from peft import LoraConfig, get_peft_model

        self.config = config
        # How the passage gradients are combined when served (`engine.composition`: "sum" or "softmax:T"),
        # the combination the learner was meta-trained with; None = never said. Metadata in learner.json,
        # not part of the fingerprint (the gradients a store holds do not depend on it).
        self.composition: str | None = None
        self.tokenizer = tokenizer
        self.base_identity = base_identity
        module_paths = self._target_paths(model, config)
        peft_config = LoraConfig(
            r=config.r,
            lora_alpha=config.lora_alpha,
            lora_dropout=0.0,
            bias="none",
            target_modules=[path for _, path in module_paths],
            # A: Kaiming-uniform, B: zeros (peft's default). The untrained learner is then the base
            # model exactly, and the first gradients reach B (dL/dB = s * g_y (A x)^T ≠ 0) even
            # though dL/dA = s * B^T g_y x^T = 0.
            init_lora_weights=True,
        )
        self.model = get_peft_model(model, peft_config, autocast_adapter_dtype=True)
        self.model.eval()
        # LoRA weights live in float32 even when the base is bf16.
        self.lora_modules: dict[str, nn.Module] = {}
        named = dict(self.model.named_modules())
        shapes = []
        for short, path in module_paths:
            module = next(m for n, m in named.items() if n.endswith(path) and hasattr(m, "lora_A"))
            module.lora_A["default"].float()
            module.lora_B["default"].float()
            self.lora_modules[short] = module
            shapes.append((f"{short}.lora_A", tuple(module.lora_A["default"].weight.shape)))
            shapes.append((f"{short}.lora_B", tuple(module.lora_B["default"].weight.shape)))
        self.layout = ParamLayout(shapes)
        self.step_sizes = self._make_step_sizes()
        # Each peft LoRA layer becomes an explicit row-adapted layer (same children, same names).
        self.row_slot = RowAdapterSlot()
        for short, _path in module_paths:
            peft_layer = self.lora_modules[short]
            parent_path, _, attribute = next(n for n, m in named.items() if m is peft_layer).rpartition(".")
            row_layer = RowLoraLinear(short, peft_layer, self.row_slot)
            setattr(self.model.get_submodule(parent_path), attribute, row_layer)
            self.lora_modules[short] = row_layer

    # ----------------------------------------------------------------- construction
    @staticmethod
    def _target_paths(model, config: LearnerConfig) -> list[tuple[str, str]]:
        names = [n for n, _ in model.named_modules()]
        n_layers = model.config.num_hidden_layers
        bad = [i for i in config.layers if i >= n_layers]
        if bad:
            raise ModelError(f"`layers` {bad} do not exist: the base model has {n_layers} layers (0..{n_layers - 1})")
        found = []
        for i in config.layers:
            for target in config.target_modules:
                matches = [n for n in names if f"layers.{i}." in n and n.endswith(f".{target}")]
                if len(matches) != 1:
                    raise ModelError(
                        f"target module {target!r} of layer {i} matched {len(matches)} modules; "
                        "use a name such as gate_proj, up_proj, down_proj, q_proj"
                    )
                path = matches[0]
                short = path[path.index("layers.") :]
                found.append((short, path))
        return found

    def _make_step_sizes(self) -> nn.ParameterDict:
        mode, init = self.config.step_size_mode, float(self.config.init_step_size)
        params = nn.ParameterDict()
        if mode == "tie":
            for e in self.layout.entries:
                params[e.name.replace(".", "-")] = nn.Parameter(torch.tensor(init))
        elif mode == "same":
            params["all"] = nn.Parameter(torch.tensor(init))
        elif mode == "full":
            for e in self.layout.entries:
                params[e.name.replace(".", "-")] = nn.Parameter(torch.full(e.shape, init))
        # `fix`: no parameters; the constant comes from the config (the authors' research code crashes here).
        return params

    @classmethod
    def from_model(cls, model, tokenizer, config: LearnerConfig, *, base_identity: dict | None = None) -> Learner:
        """Wrap an already loaded (frozen) base model, e.g. a tiny random Llama in tests."""
        for p in model.parameters():
            p.requires_grad_(False)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        identity = base_identity or {"name": config.base_model, "config_sha256": _config_sha256(model)}
        return cls(model, tokenizer, config, identity)

    @classmethod
    def create(cls, config: LearnerConfig, *, device: str = "cpu", dtype: str | None = None, seed: int = 0) -> Learner:
        """An untrained learner for `config` (LoRA B = 0, step sizes = init)."""
        model, tokenizer = load_base_model(config.base_model, dtype=dtype or config.dtype, device="cpu")
        torch.manual_seed(seed)
        learner = cls(model, tokenizer, config, _base_identity(config.base_model, model))
        return learner.to(device)

    # ----------------------------------------------------------------- properties
    @property
    def device(self) -> torch.device:
        return next(iter(self.lora_modules.values())).lora_A["default"].weight.device

    def lora_tensors(self) -> dict[str, nn.Parameter]:
        """The LoRA parameters in layout order, keyed by layout name."""
        out = {}
        for short, module in self.lora_modules.items():
            out[f"{short}.lora_A"] = module.lora_A["default"].weight
            out[f"{short}.lora_B"] = module.lora_B["default"].weight
        return out

    def step_size_tensors(self) -> dict[str, torch.Tensor]:
        """alpha per layout tensor, broadcastable to that tensor's shape (a scalar in `tie`/`same`/`fix`)."""
        mode = self.config.step_size_mode
        if mode == "fix":
            fixed = torch.tensor(float(self.config.init_step_size), device=self.device)
            return {e.name: fixed for e in self.layout.entries}
        if mode == "same":
            return {e.name: self.step_sizes["all"] for e in self.layout.entries}
        return {e.name: self.step_sizes[e.name.replace(".", "-")] for e in self.layout.entries}

    def step_size_vector(self) -> torch.Tensor:
        """alpha expanded to the flat layout, (D,), differentiable w.r.t. the step-size parameters."""
        alphas = self.step_size_tensors()
        return torch.cat([alphas[e.name].expand(e.shape).reshape(e.numel) for e in self.layout.entries])

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.lora_tensors().values()) + list(self.step_sizes.parameters())

    @property
    def fingerprint(self) -> str:
        """sha256 over base-model identity, preset and weights: a gradient is valid only for this value."""
        h = hashlib.sha256()
        h.update(json.dumps(self.base_identity, sort_keys=True).encode())
        h.update(json.dumps(self.config.to_dict(), sort_keys=True).encode())
        h.update(json.dumps(self.layout.to_json()).encode())
        for name, tensor in self._state_tensors().items():
            h.update(name.encode())
            h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        return h.hexdigest()

    # ----------------------------------------------------------------- per-row adaptation
    def row_adapters(self, deltas: torch.Tensor | dict[str, torch.Tensor], rows: torch.Tensor | None = None,
                     batch_size: int | None = None) -> RowAdapters:
        """The row metadata for a batch: adapted row j uses LoRA weights + `deltas[j]`.

        Args:
            deltas: flat (m, D), or per tensor `{layout name: (m, *shape)}` (meta-training: slicing a
                flat (m, D) vector into 60 views costs a full zero-fill per view in backward).
            rows: (m,) ascending batch rows the deltas belong to; default all rows, 0..m-1.
            batch_size: rows in the batch; default m.
        """
        if isinstance(deltas, dict):
            m = next(iter(deltas.values())).shape[0]
        elif deltas.dim() != 2 or deltas.shape[1] != self.layout.dim:
            raise ModelError(f"deltas must be (n, {self.layout.dim}), got {tuple(deltas.shape)}")
        else:
            m = deltas.shape[0]
        device = self.device if isinstance(deltas, dict) else deltas.device
        rows = torch.arange(m, device=device) if rows is None else rows.to(device)
        if rows.numel() != m:
            raise ModelError(f"{m} row deltas were given for {rows.numel()} rows")
        size = m if batch_size is None else batch_size
        if not isinstance(deltas, dict):  # views of one flat tensor, no copy
            return RowAdapters.from_flat(deltas, rows, size, self.layout.split)
        views = {short: (deltas[f"{short}.lora_A"], deltas[f"{short}.lora_B"]) for short in self.lora_modules}
        return RowAdapters(views, rows, size)

    def row_weights(self, gradients: Sequence[torch.Tensor], gammas: Sequence[float], rows: Sequence[int],
                    batch_size: int, off: torch.Tensor | None = None) -> RowAdapters:
        """Row adapters for serving: adapted row j (batch row `rows[j]`) gets its own LoRA weights
        W - gammas[j] * alpha ⊙ gradients[j], folded once into a `RowAdapterBank` (no flat delta, no
        per-step scaling). Not differentiable: meta-training uses `row_adapters`.

        Args:
            gradients: flat summed gradients, each (D,).    gammas: one scale per row.
            rows: ascending batch rows they belong to.    batch_size: rows in the batch.
            off: ascending batch rows whose LoRA is switched off (base model), or None.
        """
        from models.row_bank import RowAdapterBank

        bank = RowAdapterBank(self.lora_tensors(), capacity=len(gradients))
        bank.write(gradients, gammas, rows, self.step_size_tensors(), self.layout)
        return bank.adapters(batch_size, off)

    def using_rows(self, adapters: RowAdapters | None):
        """Context: forwards inside it adapt the rows of `adapters` (set once per step; None = none)."""
        return self.row_slot.use(adapters)

    @contextlib.contextmanager
    def adapted_rows(self, deltas: torch.Tensor | dict[str, torch.Tensor] | None):
        """Within the block, row i of every forward uses LoRA weights + `deltas[i]` (flat (n, D), or
        per tensor as in `row_adapters`). `None` means no adaptation. Shared weights are never written.
        """
        with self.using_rows(None if deltas is None else self.row_adapters(deltas)):
            yield

    @contextlib.contextmanager
    def patched_in_place(self, delta: torch.Tensor):
        """The reference's way (test oracle and benchmark baseline only): write A+dA, B+dB into the
        shared weights, then restore them. Not thread-safe; never used by the service."""
        views = self.layout.split(delta.to(self.device))
        tensors = self.lora_tensors()
        backup = {name: t.detach().clone() for name, t in tensors.items()}
        try:
            with torch.no_grad():
                for name, t in tensors.items():
                    t.add_(views[name].to(t.dtype))
            yield
        finally:
            with torch.no_grad():
                for name, t in tensors.items():
                    t.copy_(backup[name])

    # ----------------------------------------------------------------- save / load
    def _state_tensors(self) -> dict[str, torch.Tensor]:
        state = {f"lora.{name}": t for name, t in self.lora_tensors().items()}
        state.update({f"step_size.{name}": p for name, p in self.step_sizes.items()})
        return state

    def round_lora_weights(self, dtype: torch.dtype) -> None:
        """Round the LoRA tensors in place to the values `dtype` can hold (they stay float32).

        A learner saved with `weights_dtype="bfloat16"` is rounded first, so the fingerprint recorded
        is that of the weights `load` gives back, and gradients computed before and after saving agree.
        """
        with torch.no_grad():
            for t in self.lora_tensors().values():
                t.copy_(t.to(dtype))

    def save(self, directory: str | os.PathLike, *, weights_dtype: str = "float32") -> Path:
        """Write learner.safetensors + learner.json atomically (temp files, then rename).

        `weights_dtype="bfloat16"` stores the LoRA tensors in half the bytes (a shipped learner); it
        rounds this learner's LoRA weights in place first (`round_lora_weights`). Step sizes stay
        float32. Loading reads either.
        """
        from safetensors.torch import save_file

        if weights_dtype not in WEIGHTS_DTYPES:
            raise ModelError(f"weights_dtype must be one of {sorted(WEIGHTS_DTYPES)}, got {weights_dtype!r}")
        lora_dtype = WEIGHTS_DTYPES[weights_dtype]
        if lora_dtype != torch.float32:
            self.round_lora_weights(lora_dtype)
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().to("cpu", lora_dtype if k.startswith("lora.") else torch.float32).contiguous()
                   for k, v in self._state_tensors().items()}
        meta = {
            "format_version": FORMAT_VERSION,
            "fingerprint": self.fingerprint,
            "config": self.config.to_dict(),
            "base_model": self.base_identity,
            "layout": self.layout.to_json(),
            "dim": self.layout.dim,
            "weights_dtype": weights_dtype,
            **({"composition": self.composition} if self.composition else {}),
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

    @staticmethod
    def read_meta(directory: str | os.PathLike) -> dict:
        path = Path(directory) / LEARNER_JSON
        if not path.is_file():
            raise LearnerMismatchError(f"{path} does not exist: not a learner checkpoint folder")
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise LearnerMismatchError(f"{path} is not valid JSON ({e}); the checkpoint is damaged") from e

    def require_same_preset(self, directory: str | os.PathLike, why: str) -> None:
        """Refuse the checkpoint in `directory` if its preset or base model is not this learner's."""
        meta = self.read_meta(directory)
        if meta.get("config") != self.config.to_dict() or meta.get("base_model") != self.base_identity:
            raise LearnerMismatchError(
                f"{Path(directory) / LEARNER_JSON}: preset {meta.get('config', {}).get('name')!r} on "
                f"{meta.get('base_model', {}).get('name')!r}, not {self.config.name!r} on "
                f"{self.base_identity.get('name')!r}; {why}"
            )

    def load_weights(self, directory: str | os.PathLike, expect_fingerprint: str | None = None) -> None:
        """Load weights saved by `save` into this learner, checking layout and fingerprint."""
        from safetensors.torch import load_file

        directory = Path(directory)
        meta = self.read_meta(directory)
        if meta.get("layout") != self.layout.to_json():
            raise LearnerMismatchError(
                f"{directory / LEARNER_JSON}: parameter layout ({len(meta.get('layout', []))} tensors, "
                f"D={meta.get('dim')}) does not match this learner ({len(self.layout)} tensors, D={self.layout.dim})"
            )
        weights = directory / LEARNER_WEIGHTS
        if not weights.is_file():
            raise LearnerMismatchError(f"{weights} does not exist")
        tensors = load_file(str(weights))
        state = self._state_tensors()
        if set(tensors) != set(state):
            missing, extra = sorted(set(state) - set(tensors)), sorted(set(tensors) - set(state))
            raise LearnerMismatchError(f"{weights}: missing tensors {missing[:3]}, unexpected {extra[:3]}")
        with torch.no_grad():
            for name, t in state.items():
                t.copy_(tensors[name].to(t.device, t.dtype))
        actual = self.fingerprint
        if actual != meta.get("fingerprint"):
            raise LearnerMismatchError(
                f"{weights}: fingerprint {actual[:12]}… does not match {meta.get('fingerprint', '')[:12]}… recorded in "
                f"{LEARNER_JSON} (different base model, preset, or damaged weights)"
            )
        if expect_fingerprint is not None and actual != expect_fingerprint:
            raise LearnerMismatchError(
                f"learner in {directory} has fingerprint {actual[:12]}…, expected {expect_fingerprint[:12]}…"
            )

    @classmethod
    def load(
        cls, directory: str | os.PathLike, *, device: str = "cpu", dtype: str | None = None,
        expect_fingerprint: str | None = None,
    ) -> Learner:
        """Load a checkpoint folder written by `save`."""
        meta = cls.read_meta(directory)
        config = LearnerConfig.from_dict(meta["config"])
        learner = cls.create(config, device="cpu", dtype=dtype)
        if learner.base_identity != meta.get("base_model"):
            raise LearnerMismatchError(
                f"{Path(directory) / LEARNER_JSON} was trained on base model {meta.get('base_model')}, "
                f"but {config.base_model!r} resolves to {learner.base_identity}"
            )
        learner.load_weights(directory, expect_fingerprint=expect_fingerprint)
        learner.composition = meta.get("composition")
        return learner.to(device)

    @classmethod
    def load_average(
        cls, directories: list[str | os.PathLike], *, device: str = "cpu", dtype: str | None = None,
    ) -> Learner:
        """The elementwise mean of several checkpoints of one preset: a uniform model soup.

        LoRA A, LoRA B and the step sizes are each averaged (not the products B·A). Every checkpoint
        is checked as `load` checks one (layout, fingerprint) and must share the first one's preset
        and base model. Soups of independently meta-trained runs from the same initialisation
        answer better than either run (docs/results.md); the result has a fingerprint of its own.
        """
        directories = [Path(d) for d in directories]
        if not directories:
            raise ModelError("no checkpoint to average")
        learner = cls.load(directories[0], dtype=dtype)
        state = learner._state_tensors()
        total = {name: t.detach().clone() for name, t in state.items()}
        for directory in directories[1:]:
            learner.require_same_preset(directory, f"only learners of one preset and base model can be averaged "
                                                   f"(the first is {directories[0]})")
            learner.load_weights(directory)
            for name, t in state.items():
                total[name] += t.detach()
        with torch.no_grad():
            for name, t in state.items():
                t.copy_(total[name] / len(directories))
        return learner.to(device)
