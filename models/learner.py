"""The learner: a frozen base model, LoRA (peft) on the preset's modules, and learnable step sizes.

Its parts are modules of their own: building the adapter (`models/lora_setup.py`: peft's LoRA, the
row-adapted layers, the step sizes), the learner on disk with its fingerprint (`models/persistence.py`:
`learner.safetensors` + `learner.json`, checked when read, no pickle) and averaging checkpoints
(`models/averaging.py`). This class holds the weights and is the entry point to all three.

Per-request adaptation never mutates shared weights: `with learner.adapted_rows(deltas):` makes
row i of the next forward passes use A + dA_i, B + dB_i (see `models/adapt.py`): every LoRA layer
is a `models.row_lora.RowLoraLinear`, which reads the step's row metadata from the learner's slot.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from models import persistence
from models.averaging import average_into
from models.base import load_base_model
from models.config import LearnerConfig
from models.errors import LearnerMismatchError, ModelError
from models.lora_setup import make_step_sizes, wrap_with_lora
from models.persistence import LEARNER_JSON, LEARNER_WEIGHTS, base_identity, config_sha256
from models.row_lora import RowAdapters, RowAdapterSlot

__all__ = ["Learner", "LEARNER_JSON", "LEARNER_WEIGHTS"]



class Learner(nn.Module):
    """LoRA + step sizes on a frozen base model.

    Example:
        >>> learner = Learner.create(load_preset("smollm2-135m-instruct"))
        >>> learner.layout.dim
        760320
    """

    def __init__(self, model, tokenizer, config: LearnerConfig, base_identity: dict) -> None:
        super().__init__()
        self.config = config
        # How the passage gradients are combined when served (`engine.composition`: "sum", "softmax:T" or
        # "likelihood:T"): the combination the learner was meta-trained with, or the one `regrad export
        # --composition` set; None = never said. Metadata in learner.json, not part of the fingerprint (the
        # gradients a store holds do not depend on it).
        self.composition: str | None = None
        # The beam width it is served with (`models.beam`: 1 = greedy), as `regrad export --beams` set it;
        # None = never said (greedy). Metadata in learner.json too, not part of the fingerprint.
        self.beams: int | None = None
        self.tokenizer = tokenizer
        self.base_identity = base_identity
        self.row_slot = RowAdapterSlot()
        self.model, layers, self.layout = wrap_with_lora(model, config, self.row_slot)
        self.lora_modules: dict[str, nn.Module] = dict(layers)
        self.step_sizes = make_step_sizes(config, self.layout)

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_model(cls, model, tokenizer, config: LearnerConfig, *, base_identity: dict | None = None) -> Learner:
        """Wrap an already loaded (frozen) base model, e.g. a tiny random Llama in tests."""
        for p in model.parameters():
            p.requires_grad_(False)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        identity = base_identity or {"name": config.base_model, "config_sha256": config_sha256(model)}
        return cls(model, tokenizer, config, identity)

    @classmethod
    def create(cls, config: LearnerConfig, *, device: str = "cpu", dtype: str | None = None, seed: int = 0) -> Learner:
        """An untrained learner for `config` (LoRA B = 0, step sizes = init)."""
        model, tokenizer = load_base_model(config.base_model, dtype=dtype or config.dtype, device="cpu")
        torch.manual_seed(seed)
        learner = cls(model, tokenizer, config, base_identity(config.base_model, model))
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
        return persistence.fingerprint(self)

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
                    batch_size: int, off: torch.Tensor | None = None, bank=None) -> RowAdapters:
        """Row adapters for serving: adapted row j (batch row `rows[j]`) gets its own LoRA weights
        W - gammas[j] * alpha ⊙ gradients[j], folded once into a `RowAdapterBank` (no flat delta, no
        per-step scaling). Not differentiable: meta-training uses `row_adapters`.

        Args:
            gradients: flat summed gradients, each (D,).    gammas: one scale per row.
            rows: ascending batch rows they belong to.    batch_size: rows in the batch.
            off: ascending batch rows whose LoRA is switched off (base model), or None.
            bank: fold into this `RowAdapterBank`'s free slots instead of a new bank, without taking them
                (`RowAdapterBank.fold_free`): a decoder's own slots (`BatchDecoder.join_bank`).
        """
        from models.row_bank import RowAdapterBank

        if bank is not None:
            start = bank.fold_free(gradients, gammas, self.step_size_tensors(), self.layout)
            index = torch.tensor([int(r) for r in rows], dtype=torch.long, device=self.device)
            return bank.free_view(start, len(gradients), index, batch_size, off)
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

    # ----------------------------------------------------------------- save / load (models/persistence.py)
    def save(self, directory: str | os.PathLike, *, weights_dtype: str = "float32") -> Path:
        """Write learner.safetensors + learner.json atomically; `weights_dtype="bfloat16"` stores the LoRA
        tensors in half the bytes, rounding this learner's LoRA weights in place first."""
        return persistence.save(self, directory, weights_dtype=weights_dtype)

    @staticmethod
    def read_meta(directory: str | os.PathLike) -> dict:
        """The learner.json of a checkpoint folder."""
        return persistence.read_meta(directory)

    def require_same_preset(self, directory: str | os.PathLike, why: str) -> None:
        """Refuse the checkpoint in `directory` if its preset or base model is not this learner's."""
        persistence.require_same_preset(self, directory, why)

    def load_weights(self, directory: str | os.PathLike, expect_fingerprint: str | None = None) -> None:
        """Load weights saved by `save` into this learner, checking layout and fingerprint."""
        persistence.load_weights(self, directory, expect_fingerprint)

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
        learner.beams = meta.get("beams")
        return learner.to(device)

    @classmethod
    def load_average(
        cls, directories: Sequence[str | os.PathLike], *, device: str = "cpu", dtype: str | None = None,
    ) -> Learner:
        """The elementwise mean of several checkpoints of one preset, a uniform model soup
        (`models/averaging.py`)."""
        directories = [Path(d) for d in directories]
        if not directories:
            raise ModelError("no checkpoint to average")
        learner = cls.load(directories[0], dtype=dtype)
        average_into(learner, directories[0], directories[1:])
        return learner.to(device)
