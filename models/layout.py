"""The flat gradient layout: which LoRA tensor sits where in a flat vector.

Plain data on purpose: the gradient store persists `to_json()` and never imports `models`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["ParamLayout", "LayoutEntry"]


@dataclass(frozen=True)
class LayoutEntry:
    name: str            # e.g. "layers.15.mlp.gate_proj.lora_A"
    shape: tuple[int, ...]
    offset: int          # first element of this tensor in the flat vector

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


class ParamLayout:
    """An ordered list of named tensors laid end to end in one flat float vector of length `dim`.

    Order: layers ascending, then target modules in preset order, then `lora_A` before `lora_B`.
    """

    def __init__(self, named_shapes: list[tuple[str, tuple[int, ...]]]) -> None:
        entries, offset = [], 0
        for name, shape in named_shapes:
            entry = LayoutEntry(name, tuple(int(s) for s in shape), offset)
            entries.append(entry)
            offset += entry.numel
        self.entries: list[LayoutEntry] = entries
        self.dim: int = offset
        self._by_name = {e.name: e for e in entries}

    def __len__(self) -> int:
        return len(self.entries)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ParamLayout) and self.to_json() == other.to_json()

    def __getitem__(self, name: str) -> LayoutEntry:
        return self._by_name[name]

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.entries]

    def to_json(self) -> list[dict]:
        return [{"name": e.name, "shape": list(e.shape), "offset": e.offset} for e in self.entries]

    @classmethod
    def from_json(cls, data: list[dict]) -> ParamLayout:
        layout = cls([(d["name"], tuple(d["shape"])) for d in data])
        if [d["offset"] for d in data] != [e.offset for e in layout.entries]:
            raise ValueError("layout offsets are not contiguous in the given order")
        return layout

    def split(self, flat):
        """Views of a flat `[..., dim]` tensor as `{name: [..., *shape]}` (no copy)."""
        lead = tuple(flat.shape[:-1])
        return {e.name: flat[..., e.offset : e.offset + e.numel].view(*lead, *e.shape) for e in self.entries}

    def flatten(self, tensors: dict) -> object:
        """Concatenate `{name: [..., *shape]}` into one `[..., dim]` tensor in layout order."""
        import torch

        parts = []
        for e in self.entries:
            t = tensors[e.name]
            lead = t.shape[: t.dim() - len(e.shape)]
            parts.append(t.reshape(*lead, e.numel))
        return torch.cat(parts, dim=-1)
