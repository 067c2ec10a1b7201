"""A LoRA linear layer whose batch rows may each carry their own adapter.

Modelled on vLLM's LoRA layers and its punica wrapper: the per-step row metadata (each adapted
row's LoRA deltas and which batch rows they belong to) is set *once per step* on a
`RowAdapterSlot` shared by every layer of a learner; each layer's `forward` reads its own entry.
The math is `models/adapt.py`'s (`lora_row_correction`):

    y   = W x + s * (B A x + c)                     # W frozen, A/B the shared LoRA, s = alpha / r
    c_i = dB_i (A x_i + dA_i x_i) + B (dA_i x_i)   for an adapted batch row i, else 0
        = (dB_i A_i + B dA_i) x_i                  with A_i = A + dA_i

Serving gives the rows' own weights instead of their deltas (`RowAdapters.folded`, built once per
row in a `models.row_bank.RowAdapterBank`): an adapted row's LoRA output is then B_i A_i x_i, two
batched matmuls (`row_lora_output`), and a batch whose rows are all adapted skips the shared LoRA.

A row may also be *switched off* (`RowAdapters.off`): its whole LoRA term is dropped, so it runs the
base model (`y = W x`, bit for bit) in the same batch as adapted rows (the `*_base` modes).

`RowLoraLinear` replaces peft's `lora.Linear` in the model and keeps its children (`base_layer`,
`lora_A`, `lora_B`), so parameter names, saved weights and peft's initialisation are unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from models.adapt import lora_row_correction, row_lora_output
from models.errors import ModelError

__all__ = ["PackedRows", "RowAdapters", "RowAdapterSlot", "RowLoraLinear"]


@dataclass(frozen=True)
class RowAdapters:
    """The adapted rows of one batch: per layer, each adapted row's LoRA deltas `(dA, dB)`, or its
    own weights `(A_i, B_i)` when `folded`.

    Args:
        deltas: layer name → `(dA (m, r, d_in), dB (m, d_out, r))`.
        rows: (m,) the batch rows they belong to, ascending (a bank's: distinct, in slot order); a
            batch row not listed is unadapted (its output is the shared LoRA's, bit for bit).
        batch_size: rows in the batch, adapted or not.
        off: ascending batch rows whose LoRA is switched off entirely (the base model answers them);
            never also in `rows`. None or empty: none.
        folded: `deltas` hold each adapted row's own weights `(A_i, B_i)`, not `(dA_i, dB_i)` (serving).
        aligned: entry j belongs to batch row j for every row of the batch (None: `rows` is
            ascending, so this is whether every row is adapted). A bank's rows may be in any order.
        bank: the `RowAdapterBank` whose slots the folded weights are views of, if any.
    """

    deltas: dict[str, tuple[torch.Tensor, torch.Tensor]]
    rows: torch.Tensor
    batch_size: int
    off: torch.Tensor | None = None
    folded: bool = False
    aligned: bool | None = None
    bank: Any = None

    @classmethod
    def from_flat(cls, flat: torch.Tensor, rows: torch.Tensor, batch_size: int,
                  split: Callable[[torch.Tensor], dict[str, torch.Tensor]],
                  off: torch.Tensor | None = None) -> RowAdapters:
        views = split(flat)
        names = {name.rsplit(".", 1)[0] for name in views}
        deltas = {name: (views[f"{name}.lora_A"], views[f"{name}.lora_B"]) for name in sorted(names)}
        return cls(deltas, rows, batch_size, off=off)

    @classmethod
    def switched_off(cls, off: torch.Tensor, batch_size: int) -> RowAdapters:
        """A batch where no row is adapted and rows `off` (ascending) run without any LoRA."""
        return cls({}, off.new_zeros(0), batch_size, off=off)

    @property
    def covers_every_row(self) -> bool:
        """Entry j is batch row j's, for every row: the layers need not gather or scatter rows."""
        if self.aligned is not None:
            return self.aligned
        return self.rows.numel() == self.batch_size  # rows are ascending and distinct: 0..n-1

    @property
    def has_off_rows(self) -> bool:
        return self.off is not None and self.off.numel() > 0

    @property
    def all_off(self) -> bool:
        """Every row of the batch runs the base model: a layer skips its LoRA entirely."""
        return self.has_off_rows and self.off.numel() == self.batch_size and not self.rows.numel()


@dataclass(frozen=True)
class PackedRows:
    """The row metadata of a packed forward: one sequence (batch 1) whose tokens are parts laid end to
    end, each part a batch of its own (`rows` rows of `tokens` tokens, its own `RowAdapters` or None).
    Continuous batching's fused step: the running rows' next tokens (one part, `rows` = live rows,
    `tokens` = 1) followed by each joining row's prompt (a part of one row).
    """

    parts: tuple[tuple[int, int, RowAdapters | None], ...]   # (rows, tokens, adapters) per part


class RowAdapterSlot:
    """The row metadata of the current step, shared by all `RowLoraLinear` layers of one learner."""

    def __init__(self) -> None:
        self.current: RowAdapters | PackedRows | None = None

    @contextlib.contextmanager
    def use(self, adapters: RowAdapters | PackedRows | None) -> Iterator[None]:
        """Forwards inside the block adapt the rows of `adapters` (None: no row is adapted)."""
        previous, self.current = self.current, adapters
        try:
            yield
        finally:
            self.current = previous


class RowLoraLinear(nn.Module):
    """`base(x) + s * (lora_B(lora_A(x)) + row correction)`, the correction read from the slot
    (or, for folded rows, `base(x) + s * B_i A_i x`).

    Built from peft's `lora.Linear` (adapter `default`, no dropout); takes over its modules.
    """

    def __init__(self, name: str, peft_layer: nn.Module, slot: RowAdapterSlot) -> None:
        super().__init__()
        self.name = name
        self.base_layer = peft_layer.base_layer
        self.lora_A = peft_layer.lora_A          # ModuleDict {"default": Linear(d_in, r)}
        self.lora_B = peft_layer.lora_B          # ModuleDict {"default": Linear(r, d_out)}
        self.scaling = float(peft_layer.scaling["default"])
        self.slot = slot                         # a plain attribute: not a submodule, no parameters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base_layer(x)                                   # W x, in the base dtype
        rows = self.slot.current
        if isinstance(rows, RowAdapters) and rows.all_off and rows.batch_size == x.shape[0]:
            return result                      # the base model alone (the relevance scoring, `*_base` batches)
        x = x.to(self.lora_A["default"].weight.dtype)                 # LoRA runs in fp32
        if isinstance(rows, PackedRows):                              # (1, L, d_in): parts of their own
            if x.shape[0] != 1 or x.shape[1] != sum(n * t for n, t, _ in rows.parts):
                raise ModelError(f"a packed forward of {tuple(x.shape[:2])} tokens does not match its parts "
                                 f"{[(n, t) for n, t, _ in rows.parts]}")
            pieces, start = [], 0
            for n, t, adapters in rows.parts:
                part = x[0, start : start + n * t].view(n, t, x.shape[-1])              # (n, t, d_in)
                pieces.append(self._lora(part, adapters).reshape(n * t, -1))
                start += n * t
            lora = torch.cat(pieces)[None]                                                # (1, L, d_out)
        else:
            lora = self._lora(x, rows)
        # One rounding to the base dtype, after the LoRA part is complete (as peft, and as when a
        # row's adapted weights are written into lora_A/lora_B: the reference's in-place way).
        return (result + lora * self.scaling).to(result.dtype)

    def _lora(self, x: torch.Tensor, rows: RowAdapters | None) -> torch.Tensor:
        """The LoRA term of a batch `x` (n, T, d_in), fp32, before the scaling s: each row's own."""
        lora_A, lora_B = self.lora_A["default"], self.lora_B["default"]
        if rows is not None and rows.batch_size != x.shape[0]:
            raise ModelError(f"batch has {x.shape[0]} rows but its row adapters were built for {rows.batch_size}")
        if rows is not None and rows.folded and rows.rows.numel():     # each row's own weights (serving)
            A_rows, B_rows = rows.deltas[self.name]
            if rows.covers_every_row:                                 # no row runs the shared LoRA
                lora = row_lora_output(x, A_rows, B_rows)
            else:
                index = rows.rows
                lora = lora_B(lora_A(x)).index_copy(0, index, row_lora_output(x.index_select(0, index), A_rows,
                                                                               B_rows))
        else:
            ax = lora_A(x)                                            # A x
            lora = lora_B(ax)                                         # B A x, shared by every row
            if rows is not None and rows.rows.numel():
                dA, dB = rows.deltas[self.name]
                if rows.covers_every_row:
                    lora = lora + lora_row_correction(x, ax, dA, dB, lora_B.weight)
                else:                                                 # only the adapted rows pay
                    index = rows.rows
                    correction = lora_row_correction(x.index_select(0, index), ax.index_select(0, index), dA, dB,
                                                     lora_B.weight)
                    lora = lora.index_add(0, index, correction)
        if rows is not None and rows.has_off_rows:                  # the base model's rows: no LoRA at all
            lora = lora.index_fill(0, rows.off, 0.0)
        return lora

    def extra_repr(self) -> str:
        return f"name={self.name!r}, scaling={self.scaling}"
