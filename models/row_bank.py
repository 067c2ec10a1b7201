"""A running batch's per-row adapters in slots: vLLM's stacked LoRA buffers, for one batch.

Per LoRA tensor (a layout name) one buffer `(capacity, *shape)`; slot s holds one adapted row's own
weights, folded once when the row joins (`models.adapt.fold_row_weight`):

    for each joining row i with summed gradient g_i:       # write(): into the next free slot
        for each LoRA tensor W (every layer's A and B):
            slot[W] = W - gamma_i * alpha_W * g_i[W]       # alpha and gamma folded in here, once
    a row leaves:                                          # keep(): the last live slot moves into
        its slot is freed                                  #   its hole (one row copied, not the batch)
    each step:                                             # adapters(): views slots[:count], no copy

Slots 0..count-1 are live and `rows[s]` is the batch row of slot s. A row's slot never depends on
the batch's other rows, so a row's weights are the same alone and in any batch. When the batch
fills the holes its leaving rows left the same way (`fill_order`), a batch whose rows all carry an
adapter keeps slot s = batch row s, and a step reads the slots as they are.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from models.adapt import fold_row_weight
from models.errors import ModelError
from models.row_lora import RowAdapters

__all__ = ["RowAdapterBank", "fill_order"]


def fill_order(size: int, kept: Sequence[int]) -> list[int]:
    """The order of the `kept` (ascending) of `size` items after the others leave: an item keeps its
    place when that place still exists, and the places freed below it are filled by the kept items
    beyond the new end, in ascending order (the fewest moves)."""
    kept_set, new_size = set(kept), len(kept)
    movers = iter(k for k in kept if k >= new_size)
    return [i if i in kept_set else next(movers) for i in range(new_size)]


class RowAdapterBank:
    """Stacked per-row LoRA weights of one batch (see the module docstring).

    Args:
        weights: the learner's LoRA tensors `{layout name: W}` (float32), in layout order.
        capacity: slots allocated at first; the bank grows (doubling) when rows outnumber them.
    """

    def __init__(self, weights: dict[str, torch.Tensor], capacity: int = 8) -> None:
        self.weights = {name: w.detach() for name, w in weights.items()}
        self.capacity = max(1, capacity)
        self.slots = {name: w.new_empty((self.capacity, *w.shape)) for name, w in self.weights.items()}
        self.rows: list[int] = []          # slot s → its batch row
        self.claimed = False               # a decoder took this bank over as its own (BatchDecoder.join)

    @property
    def count(self) -> int:
        return len(self.rows)

    # ------------------------------------------------------------------ writing rows
    @torch.no_grad()
    def write(self, gradients: Sequence[torch.Tensor], gammas: Sequence[float], rows: Sequence[int],
              step_sizes: dict[str, torch.Tensor], layout) -> None:
        """Fold rows into the next free slots: row j's weights W - gammas[j] * alpha_W * gradients[j][W].

        Args:
            gradients: flat summed gradients, each (D,) in `layout`'s order.
            gammas: one scale per row.    rows: the batch row of each.
            step_sizes: alpha per layout name, a scalar or the tensor's shape (`Learner.step_size_tensors`).
            layout: the learner's `ParamLayout`.
        """
        if not (len(gradients) == len(gammas) == len(rows)):
            raise ModelError(f"{len(gradients)} gradients, {len(gammas)} gammas and {len(rows)} rows: "
                             "give one of each per row")
        self.fold_free(gradients, gammas, step_sizes, layout)
        self.rows += [int(row) for row in rows]

    @torch.no_grad()
    def fold_free(self, gradients: Sequence[torch.Tensor], gammas: Sequence[float],
                  step_sizes: dict[str, torch.Tensor], layout) -> int:
        """Fold rows into the free slots from `count` on, without taking them: they stay free (a later
        write may overwrite them) until `take` gives them batch rows. Returns the first slot written.
        A decoder's joining rows fold straight into its own slots this way (`BatchDecoder.join_bank`)."""
        start = self.count
        if not gradients:
            return start
        self._reserve(start + len(gradients))
        entries = layout.entries
        device = next(iter(self.weights.values())).device
        gamma_t = torch.tensor([float(g) for g in gammas], dtype=torch.float32, device=device)     # (m,)
        scalar = all(step_sizes[e.name].numel() == 1 for e in entries)
        if scalar:  # tie / same / fix: one float per tensor and row, as float32 rounds gamma * alpha
            alpha = torch.stack([step_sizes[e.name].detach().reshape(()) for e in entries]).float()  # (E,)
            scales = [row.unbind(0) for row in -(gamma_t[:, None] * alpha[None, :])]               # (m, E)
        for j, gradient in enumerate(gradients):
            if gradient.shape != (layout.dim,):
                raise ModelError(f"a row's gradient must be ({layout.dim},), got {tuple(gradient.shape)}")
            flat = gradient.to(device, torch.float32)
            for k, e in enumerate(entries):
                grad = flat[e.offset : e.offset + e.numel].view(e.shape)
                scale = scales[j][k] if scalar else -(gamma_t[j] * step_sizes[e.name].detach())
                fold_row_weight(self.weights[e.name], grad, scale, self.slots[e.name][start + j])
        return start

    def take(self, rows: Sequence[int]) -> None:
        """The next `len(rows)` free slots (folded by `fold_free`) become live, for batch rows `rows`."""
        if self.count + len(rows) > self.capacity:
            raise ModelError(f"{len(rows)} rows taken with {self.capacity - self.count} free slots")
        self.rows += [int(row) for row in rows]

    def free_view(self, start: int, m: int, rows: torch.Tensor, batch_size: int,
                  off: torch.Tensor | None = None) -> RowAdapters:
        """Folded-but-free slots `start..start+m-1` as the adapters of a batch of their own (entry j is
        batch row `rows[j]`, ascending): what a joining batch's prefill reads before `take`."""
        deltas = {short: (self.slots[f"{short}.lora_A"][start : start + m],
                          self.slots[f"{short}.lora_B"][start : start + m]) for short in self._shorts()}
        return RowAdapters(deltas, rows, batch_size, off=off, folded=True, bank=self)

    @torch.no_grad()
    def write_adapters(self, adapters: RowAdapters, offset: int) -> None:
        """Rows given as `RowAdapters` into the next free slots, their batch rows shifted by `offset`:
        folded weights are copied, deltas (`Learner.row_adapters`) folded as W + delta."""
        m = int(adapters.rows.numel())
        self._reserve(self.count + m)
        start = self.count
        for short, (dA, dB) in adapters.deltas.items():
            for name, given in ((f"{short}.lora_A", dA), (f"{short}.lora_B", dB)):
                target = self.slots[name][start : start + m]
                if adapters.folded:
                    target.copy_(given)
                else:
                    torch.add(self.weights[name], given.detach(), out=target)
        self.rows += [int(r) + offset for r in adapters.rows.tolist()]

    @torch.no_grad()
    def append(self, other: RowAdapterBank, offset: int) -> None:
        """Copy `other`'s live rows into the next free slots, their batch rows shifted by `offset`."""
        if other.slots.keys() != self.slots.keys():
            raise ModelError("row adapters of two different learners cannot share a batch")
        m = other.count
        self._reserve(self.count + m)
        start = self.count
        for name, buffer in self.slots.items():
            buffer[start : start + m].copy_(other.slots[name][:m])
        self.rows += [r + offset for r in other.rows]

    def shift(self, offset: int) -> None:
        """Every row's batch row moves by `offset` (the rows now follow `offset` others)."""
        self.rows = [r + offset for r in self.rows]

    # ------------------------------------------------------------------ rows leaving
    @torch.no_grad()
    def keep(self, order: Sequence[int]) -> None:
        """The batch became its rows `order` (old batch rows, in their new order): rows not in it
        free their slots; each hole below the new count takes the last live slots' rows (`fill_order`)."""
        position = {row: new for new, row in enumerate(order)}
        live = [s for s, row in enumerate(self.rows) if row in position]
        placement = fill_order(self.count, live)                    # new slot → old slot
        moves = [(new, old) for new, old in enumerate(placement) if new != old]
        if len(moves) == 1:
            new, old = moves[0]
            for buffer in self.slots.values():
                buffer[new].copy_(buffer[old])
        elif moves:
            device = next(iter(self.slots.values())).device
            targets = torch.tensor([new for new, _ in moves], device=device)
            sources = torch.tensor([old for _, old in moves], device=device)
            for buffer in self.slots.values():
                buffer.index_copy_(0, targets, buffer.index_select(0, sources))
        self.rows = [position[self.rows[old]] for old in placement]

    # ------------------------------------------------------------------ a step's view
    def adapters(self, batch_size: int, off: torch.Tensor | None = None) -> RowAdapters:
        """This step's row metadata: views of the live slots (no copy), and the batch's off rows."""
        m = self.count
        deltas = {short: (self.slots[f"{short}.lora_A"][:m], self.slots[f"{short}.lora_B"][:m])
                  for short in self._shorts()}
        device = next(iter(self.slots.values())).device
        rows = torch.tensor(self.rows, dtype=torch.long, device=device)
        aligned = self.rows == list(range(batch_size))
        return RowAdapters(deltas, rows, batch_size, off=off, folded=True, aligned=aligned, bank=self)

    # ------------------------------------------------------------------ internals
    def _shorts(self) -> list[str]:
        return [name.removesuffix(".lora_A") for name in self.slots if name.endswith(".lora_A")]

    def _reserve(self, needed: int) -> None:
        if needed <= self.capacity:
            return
        capacity = max(needed, 2 * self.capacity)
        m = self.count
        for name, buffer in self.slots.items():
            grown = buffer.new_empty((capacity, *buffer.shape[1:]))
            grown[:m].copy_(buffer[:m])
            self.slots[name] = grown
        self.capacity = capacity
