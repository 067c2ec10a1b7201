"""A LoRA linear layer whose batch rows may each carry their own adapter.

Modelled on vLLM's LoRA layers and its punica wrapper: the per-step row metadata (each adapted
row's stacked projections and which batch rows they belong to) is set *once per step* on a
`RowAdapterSlot` shared by every layer of a learner; each layer's `forward` reads its own entry.
The math is `models/adapt.py`'s, written out where it runs:

    y   = W x + s * (B A x + c)                     # W frozen, A/B the shared LoRA, s = alpha / r
    c_i = (dB_i A_i + B dA_i) x_i   for an adapted batch row i, else 0

`RowLoraLinear` replaces peft's `lora.Linear` in the model and keeps its children (`base_layer`,
`lora_A`, `lora_B`), so parameter names, saved weights and peft's initialisation are unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from models.adapt import lora_row_correction
from models.errors import ModelError

__all__ = ["RowAdapters", "RowAdapterSlot", "RowLoraLinear"]


@dataclass(frozen=True)
class RowAdapters:
    """The adapted rows of one batch: per layer, `(down, up)` stacked for those rows only.

    Args:
        stacks: layer name → `(down (m, 2r, d_in), up (m, d_out, 2r))` from `stack_row_adapters`.
        rows: (m,) the batch rows they belong to, ascending; a batch row not listed is unadapted
            (its output is the shared LoRA's, bit for bit).
        batch_size: rows in the batch, adapted or not.
    """

    stacks: dict[str, tuple[torch.Tensor, torch.Tensor]]
    rows: torch.Tensor
    batch_size: int

    @property
    def covers_every_row(self) -> bool:
        return self.rows.numel() == self.batch_size  # rows are ascending and distinct: 0..n-1

    def select(self, keep: torch.Tensor) -> RowAdapters:
        """The adapters of batch rows `keep` (ascending), renumbered 0..len(keep)-1: rows that leave."""
        new_index = torch.full((self.batch_size,), -1, dtype=torch.long, device=self.rows.device)
        new_index[keep.to(self.rows.device)] = torch.arange(keep.numel(), device=self.rows.device)
        mapped = new_index[self.rows]
        kept = (mapped >= 0).nonzero().squeeze(1)
        return RowAdapters(
            {name: (down[kept], up[kept]) for name, (down, up) in self.stacks.items()},
            mapped[kept],
            int(keep.numel()),
        )

    def extend(self, other: RowAdapters) -> RowAdapters:
        """This batch followed by `other`'s rows: rows that join."""
        stacks = {
            name: (torch.cat([down, other.stacks[name][0]]), torch.cat([up, other.stacks[name][1]]))
            for name, (down, up) in self.stacks.items()
        }
        return RowAdapters(stacks, torch.cat([self.rows, other.rows + self.batch_size]),
                           self.batch_size + other.batch_size)

    @staticmethod
    def unadapted(batch_size: int, like: RowAdapters) -> RowAdapters:
        """A batch of `batch_size` rows none of which is adapted (shaped like `like`, for `extend`)."""
        return RowAdapters(
            {name: (down[:0], up[:0]) for name, (down, up) in like.stacks.items()},
            like.rows[:0],
            batch_size,
        )


class RowAdapterSlot:
    """The row metadata of the current step, shared by all `RowLoraLinear` layers of one learner."""

    def __init__(self) -> None:
        self.current: RowAdapters | None = None

    @contextlib.contextmanager
    def use(self, adapters: RowAdapters | None) -> Iterator[None]:
        """Forwards inside the block adapt the rows of `adapters` (None: no row is adapted)."""
        previous, self.current = self.current, adapters
        try:
            yield
        finally:
            self.current = previous


class RowLoraLinear(nn.Module):
    """`base(x) + s * (lora_B(lora_A(x)) + row correction)`, the correction read from the slot.

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
        lora_A, lora_B = self.lora_A["default"], self.lora_B["default"]
        x = x.to(lora_A.weight.dtype)                                 # LoRA runs in fp32
        lora = lora_B(lora_A(x))                                      # B A x, shared by every row
        rows = self.slot.current
        if rows is not None and rows.batch_size != x.shape[0]:
            raise ModelError(f"batch has {x.shape[0]} rows but its row adapters were built for {rows.batch_size}")
        if rows is not None and rows.rows.numel():
            down, up = rows.stacks[self.name]
            if rows.covers_every_row:
                lora = lora + lora_row_correction(x, down, up, 1.0)
            else:                                                     # only the adapted rows pay
                correction = lora_row_correction(x.index_select(0, rows.rows), down, up, 1.0)
                lora = lora.index_add(0, rows.rows, correction)
        # One rounding to the base dtype, after the LoRA part is complete (as peft, and as when a
        # row's adapted weights are written into lora_A/lora_B: the reference's in-place way).
        return (result + lora * self.scaling).to(result.dtype)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, scaling={self.scaling}"
