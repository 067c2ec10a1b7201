"""Greedy decoding of a running batch that rows join and leave at every step.

`BatchDecoder` is iteration-level scheduling's model half (Orca, vLLM): the batch is not fixed when
it starts. At any step, new rows are prefilled and join (their KV cache rows, attention mask and
LoRA row adapters are appended to the running batch's), and a row that has finished leaves at once
(its cache row and adapter are dropped). Each row's adapter (its own LoRA weights, folded once
when it was prepared) sits in a slot of the batch's `RowAdapterBank`: joining writes only the new
rows, leaving moves at most one row per row that left, and a step reads the slots in place. Batch
generation (`generate_answers`) is the special case where every row joins at step 0.

    decoder = BatchDecoder(learner)
    decoder.join(["a", "b"], batch, adapters, max_new_tokens=[12, 12])   # prefill, first tokens
    while decoder:
        for key, token_ids in decoder.step():                              # one token per live row
            ...                                                            # row `key` finished
        # other rows may join here, mid-generation

What keeps a step cheap on a CPU: the LM head runs on each row's last position only; attention is
SDPA for the duration of each call (the learner loads with eager attention, which meta-training's
gradient of a gradient needs); padding columns no live row needs are trimmed when rows leave.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from models.errors import ModelError
from models.packed_attention import PACKED_ATTENTION, PackedLayout, packed_layout, register_packed_attention
from models.row_bank import RowAdapterBank, fill_order
from models.row_lora import PackedRows, RowAdapters

__all__ = ["BatchDecoder", "prefill", "stop_token_ids", "end_of_turn_id", "attention_implementation", "word_starts"]


@dataclass
class _Row:
    key: Hashable
    max_new_tokens: int
    stop_bias: float = 0.0               # added to the end-of-answer tokens' logits after the first token
    tokens: list[int] = field(default_factory=list)


@dataclass
class _Pending:
    """A row that joined a running batch and waits to be prefilled inside the next steps, a chunk of
    its prompt at a time (the whole prompt when it fits the step's budget)."""

    row: _Row
    prompt: torch.Tensor                 # (T,) its prompt's tokens, no padding
    adapters: RowAdapters | None         # its own, as a batch of this one row
    done: int = 0                        # prompt tokens prefilled by earlier steps
    kv: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)   # their keys, values per layer

    @property
    def left(self) -> int:
        return self.prompt.numel() - self.done


class BatchDecoder:
    """A running greedy batch with a KV cache; rows join (`join`) and leave (`step`, `leave`).

    Args:
        learner: the learner whose model decodes (its weights are only read).
        prefill_budget_tokens: None: rows that join are prefilled at once, in a forward of their own,
            which stalls the running rows. A number: rows that join a running batch are prefilled in
            the next steps' forwards, packed after the running rows' next tokens, at most this many
            prompt tokens per step, in the order they joined (vLLM's chunked prefill): a prompt
            longer than what is left of the budget is prefilled a chunk per step, so that no step
            stalls the running rows for more than the budget's tokens.
        slots: None: the first adapted rows' bank becomes the batch's, growing as rows join (one
            generation). A number: the decoder keeps a bank of its own with this many slots for its
            whole life (a server's `max_rows`): no growth copies, and joining rows fold their adapters
            straight into its free slots (`join_bank`).
    """

    def __init__(self, learner, *, prefill_budget_tokens: int | None = None, slots: int | None = None) -> None:
        if prefill_budget_tokens is not None and prefill_budget_tokens < 1:
            raise ValueError(f"`prefill_budget_tokens` must be >= 1 or None, got {prefill_budget_tokens}")
        if slots is not None and slots < 1:
            raise ValueError(f"`slots` must be >= 1 or None, got {slots}")
        self.learner = learner
        self.prefill_budget_tokens = prefill_budget_tokens
        if prefill_budget_tokens is not None:
            register_packed_attention()
        self.slots = slots
        self._join_start: int | None = None             # `join_bank`'s first free slot
        self._pending: list[_Pending] = []              # joined, to be prefilled inside the next step
        base = learner.model.get_base_model()
        self._base, self._decoder, self._head = base, base.get_decoder(), base.get_output_embeddings()
        self._cache_kw = _cache_keyword(self._decoder)
        self._stops = stop_token_ids(learner.tokenizer)
        self._stop_tensor: torch.Tensor | None = None
        self._rows: list[_Row] = []
        self._cache = None                               # DynamicCache, batch = live rows
        self._attention: torch.Tensor | None = None      # (n, T) 1 = real token, left-padded
        self._next: torch.Tensor | None = None           # (n,) each row's next token, not yet emitted
        self._bank: RowAdapterBank | None = None         # the adapted live rows' own LoRA weights, in slots
        self._off: list[int] = []                        # live rows whose LoRA is switched off (base model)
        self._adapters: RowAdapters | None = None        # this step's view of both (None: no row adapted)
        self.emitted: list[tuple[Hashable, int]] = []    # (key, token) each row emitted in the last step

    def __len__(self) -> int:
        return len(self._rows) + len(self._pending)

    @property
    def prefill_tokens(self) -> int:
        """Prompt tokens of rows joined and not yet prefilled (the next step takes up to the budget)."""
        return sum(p.left for p in self._pending)

    @property
    def keys(self) -> list[Hashable]:
        return [row.key for row in self._rows] + [p.row.key for p in self._pending]

    def join_bank(self) -> RowAdapterBank | None:
        """The bank that rows about to `join` should fold their adapters into (`prepare_rows(..., bank=)`):
        this decoder's own free slots when it keeps its own (`slots`), so that joining copies nothing;
        None when joining rows bring a bank of their own (no `slots`, or a packed join, whose waiting
        rows keep their views until the next step). Join next: a leave or another join in between
        moves or overwrites the free slots (join then refuses the rows)."""
        if self.slots is None or self._joins_packed():
            self._join_start = None
            return None
        self._join_start = self._own_bank().count
        return self._bank

    @torch.no_grad()
    def join(self, keys: Sequence[Hashable], batch: dict[str, torch.Tensor], adapters: RowAdapters | None,
             max_new_tokens: Sequence[int], stop_bias: Sequence[float] | None = None) -> None:
        """Prefill new rows (left-padded `input_ids`/`attention_mask`, their own `adapters` or None)
        and append them to the running batch; their first token is emitted by the next `step`.
        `stop_bias` (one per row; None: 0 for all): added to the logits of the end-of-answer tokens at
        each of the row's decoding steps after its first token where its best token would begin a new
        word, so that a positive bias ends an answer between words where ending it was nearly as likely
        as going on (an answer always has a first token; `_pick`)."""
        if not keys:
            return
        biases = [0.0] * len(keys) if stop_bias is None else [float(b) for b in stop_bias]
        if len(keys) != batch["input_ids"].shape[0] or len(keys) != len(max_new_tokens) or len(keys) != len(biases):
            raise ValueError("join needs one key, one max_new_tokens and one stop_bias per batch row")
        if any(n < 1 for n in max_new_tokens):
            raise ValueError(f"max_new_tokens must be >= 1, got {list(max_new_tokens)}")
        if not all(math.isfinite(b) for b in biases):
            raise ValueError(f"stop_bias must be finite, got {biases}")
        if self._joins_packed():                                   # prefilled inside the next step
            for i, (key, n, b) in enumerate(zip(keys, max_new_tokens, biases)):
                prompt = batch["input_ids"][i][batch["attention_mask"][i].bool()]
                self._pending.append(_Pending(_Row(key, int(n), b), prompt, _one_row(adapters, i)))
            return
        with self.learner.using_rows(adapters):
            hidden, cache = prefill(self.learner, batch)      # SDPA for its duration
        next_token = self._head(hidden[:, -1]).argmax(-1)                        # (m,): first tokens, no bias
        new_rows = [_Row(key, int(n), b) for key, n, b in zip(keys, max_new_tokens, biases)]
        self._append(new_rows, cache, batch["attention_mask"], next_token, adapters)

    def _append(self, new_rows: list[_Row], cache, mask: torch.Tensor, next_token: torch.Tensor,
                adapters: RowAdapters | None) -> None:
        """Prefilled rows (their cache, left-padded attention mask, next tokens and adapters) join the
        running batch after its rows, both left-padded to one width."""
        self._add_adapters(adapters, len(self._rows))
        if not self._rows:
            self._rows, self._cache, self._attention, self._next = new_rows, cache, mask, next_token
            self._adapters = self._step_adapters()
            return
        width = max(self._attention.shape[1], mask.shape[1])
        self._attention = torch.cat([_pad_left(self._attention, width, 1), _pad_left(mask, width, 1)])
        for old, new in zip(self._cache.layers, cache.layers, strict=True):
            old.keys = torch.cat([_pad_left(old.keys, width, 2), _pad_left(new.keys, width, 2)])
            old.values = torch.cat([_pad_left(old.values, width, 2), _pad_left(new.values, width, 2)])
        self._next = torch.cat([self._next, next_token])
        self._rows += new_rows
        self._adapters = self._step_adapters()

    @torch.no_grad()
    def step(self, on_emit: Callable[[list[tuple[Hashable, int]], list[tuple[Hashable, list[int]]]], None]
             | None = None) -> list[tuple[Hashable, list[int]]]:
        """Emit each live row's next token (listed in `emitted`, for streaming); rows that finished
        leave (returned with all their tokens); the others run one decoder step together.
        `on_emit(emitted, finished)`, if given, is called before that forward, so that a server hands
        out the tokens and the finished answers one forward sooner than `step` returns them."""
        self.emitted = []
        if not self._rows:
            if self._pending:                      # the running rows all left: prefill the waiting ones
                self._decode_packed(self._take_pending())
            return []
        if self._stop_tensor is None:
            self._stop_tensor = torch.tensor(sorted(self._stops), device=self._next.device)
        finished_mask = torch.isin(self._next, self._stop_tensor)
        finished: list[tuple[Hashable, list[int]]] = []
        keep: list[int] = []
        for i, (row, token, stop) in enumerate(zip(self._rows, self._next.tolist(), finished_mask.tolist())):
            row.tokens.append(token)
            self.emitted.append((row.key, token))
            if stop or len(row.tokens) >= row.max_new_tokens:
                finished.append((row.key, row.tokens))
            else:
                keep.append(i)
        if finished:
            self._keep(keep)
        if on_emit is not None:
            on_emit(self.emitted, finished)
        if self._pending:
            self._decode_packed(self._take_pending())
        elif self._rows:
            self._decode_one()
        return finished

    def leave(self, keys: Sequence[Hashable]) -> None:
        """Drop rows before they finish (their clients left): their cache rows and adapters go."""
        gone = set(keys)
        self._pending = [p for p in self._pending if p.row.key not in gone]
        if gone & {row.key for row in self._rows}:
            self._keep([i for i, row in enumerate(self._rows) if row.key not in gone])

    # ------------------------------------------------------------------ internals
    def _add_adapters(self, adapters: RowAdapters | None, offset: int) -> None:
        """Joining rows' adapters (batch rows from `offset` on) into the running batch's: a bank that
        `prepare_rows` just built is taken over as it is when no adapted row is live, else its rows are
        copied into free slots."""
        if adapters is None:
            return
        if adapters.has_off_rows:
            self._off += [int(row) + offset for row in adapters.off.tolist()]
        if not adapters.rows.numel():
            return
        bank = adapters.bank
        start, self._join_start = self._join_start, None
        if bank is not None and bank is self._bank and self.slots is not None:   # folded into our free slots
            if start is None or self._bank.count != start:
                raise ModelError("the decoder's rows changed after join_bank(); prepare the joining rows again")
            self._bank.take([int(row) + offset for row in adapters.rows.tolist()])
            return
        if self.slots is not None:                     # copied into our own slots
            if bank is not None and bank.count == adapters.rows.numel():
                self._own_bank().append(bank, offset)
            else:
                self._own_bank().write_adapters(adapters, offset)
            return
        if bank is not None and not bank.claimed and bank.count == adapters.rows.numel() and \
                (self._bank is None or not self._bank.count):
            bank.claimed = True
            bank.shift(offset)
            self._bank = bank
            return
        if self._bank is None:
            self._bank = RowAdapterBank(self.learner.lora_tensors(), capacity=int(adapters.rows.numel()))
        if bank is not None and bank.count == adapters.rows.numel():
            self._bank.append(bank, offset)
        else:
            self._bank.write_adapters(adapters, offset)

    def _joins_packed(self) -> bool:
        """Rows joining now wait to be prefilled inside the next step (a budget, and rows running)."""
        return self.prefill_budget_tokens is not None and bool(self._rows)

    def _own_bank(self) -> RowAdapterBank:
        """This decoder's bank of `slots` slots (made on first use, kept when every row has left)."""
        if self._bank is None:
            self._bank = RowAdapterBank(self.learner.lora_tensors(), capacity=self.slots or 1)
        return self._bank

    def _step_adapters(self) -> RowAdapters | None:
        off = torch.tensor(self._off, dtype=torch.long, device=self._next.device) if self._off else None
        if self._bank is not None and self._bank.count:
            return self._bank.adapters(len(self._rows), off)
        return RowAdapters.switched_off(off, len(self._rows)) if off is not None else None

    def _keep(self, keep: list[int]) -> None:
        """Only rows `keep` (ascending) stay; the last rows move into the places of rows that left
        (`fill_order`, as the adapter bank fills its slots: fewest copies, slots stay aligned)."""
        if not keep:
            self._rows, self._cache, self._attention, self._next, self._adapters = [], None, None, None, None
            self._off = []
            if self._bank is not None:
                self._bank.keep([])
            return
        order = fill_order(len(self._rows), keep)
        index = torch.tensor(order, device=self._next.device)
        self._rows = [self._rows[i] for i in order]
        self._cache.batch_select_indices(index)
        self._attention, self._next = self._attention[index], self._next[index]
        if self._bank is not None:
            self._bank.keep(order)
        position = {old: new for new, old in enumerate(order)}
        self._off = sorted(position[row] for row in self._off if row in position)
        self._adapters = self._step_adapters()
        # Columns that are padding in every live row (left by rows with longer prompts) go.
        first = int(self._attention.any(0).int().argmax())
        if first > 0:
            self._attention = self._attention[:, first:]
            for layer in self._cache.layers:
                layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]

    def _decode_one(self) -> None:
        self._attention = torch.cat([self._attention, self._attention.new_ones(len(self._rows), 1)], dim=1)
        position = self._attention.sum(-1, keepdim=True) - 1                          # (n, 1)
        with attention_implementation(self._base, "sdpa"), self.learner.using_rows(self._adapters):
            out = self._decoder(input_ids=self._next[:, None], attention_mask=self._attention,
                                position_ids=position, use_cache=True, **{self._cache_kw: self._cache})
        self._next = self._pick(self._head(out.last_hidden_state[:, -1]), len(self._rows))

    def _pick(self, logits: torch.Tensor, running: int) -> torch.Tensor:
        """Each row's greedy next token. The first `running` rows (the live rows, in order, each past its
        first token) have their `stop_bias` added to the end-of-answer tokens' logits first, where their
        best token would begin a new word: a bias ends an answer between words ("7 | beehives"), never
        inside a word or a number ("88 | 1", "a pew | ter")."""
        biases = [row.stop_bias for row in self._rows[:running]]
        if any(biases):
            logits = logits.float()
            starts = word_starts(self.learner.tokenizer, logits.shape[-1]).to(logits.device)
            at_word = starts[logits[:running].argmax(-1)]                           # (running,)
            bias = torch.tensor(biases, dtype=torch.float32, device=logits.device) * at_word
            logits[:running, self._stop_tensor.to(logits.device)] += bias[:, None]
        return logits.argmax(-1)


    def _take_pending(self) -> list[tuple[_Pending, int]]:
        """The prompt chunks this step prefills: (waiting row, tokens), in order, within the token
        budget; the last one may be part of its prompt (the rest goes in the next steps)."""
        chunks, budget = [], self.prefill_budget_tokens
        for pending in self._pending:
            if budget <= 0:
                break
            length = min(pending.left, budget)
            chunks.append((pending, length))
            budget -= length
        return chunks

    def _decode_packed(self, chunks: list[tuple[_Pending, int]]) -> None:
        """One forward for the running rows' next tokens and the waiting rows' prompt chunks, packed
        into one sequence (batch 1): each token attends to its own row's cache and tokens only, part by
        part (`models.packed_attention`; the 4-D mask says the same to any other attention), each part
        runs its own row adapters (`PackedRows`). A chunk's earlier tokens' keys (`_Pending.kv`) go
        into the packed cache after the running rows'. Then the cache is the batch's again, the rows
        whose prompts are complete appended, every row has its next token, and a row whose prompt is
        not complete keeps its keys for the next step."""
        n, device = len(self._rows), self.learner.device
        width_old = self._attention.shape[1] if n else 0
        prefixes = [pending.done for pending, _ in chunks]
        lengths = [length for _, length in chunks]
        running = n * width_old                                           # the running rows' cached keys
        cached, total = running + sum(prefixes), n + sum(lengths)       # K cached keys, L new tokens
        mask = torch.zeros(total, cached + total, dtype=torch.bool, device=device)
        if n:
            own = torch.zeros(n, n, width_old, dtype=torch.bool, device=device)
            rows = torch.arange(n, device=device)
            own[rows, rows] = self._attention.bool()
            mask[:n, :running] = own.view(n, running)                   # its own cache row
            mask[rows, cached + rows] = True                            # and its new token
        start, earlier = n, running
        for prefix, length in zip(prefixes, lengths):                   # a chunk: its earlier tokens, then causal
            mask[start : start + length, earlier : earlier + prefix] = True
            mask[start : start + length, cached + start : cached + start + length] = torch.ones(
                length, length, dtype=torch.bool, device=device).tril()
            start, earlier = start + length, earlier + prefix
        running_ids = [self._next] if n else []
        running_positions = [self._attention.sum(-1)] if n else []       # each row's next position
        input_ids = torch.cat(running_ids + [p.prompt[p.done : p.done + length] for p, length in chunks])[None]
        positions = torch.cat(running_positions + [torch.arange(p.done, p.done + length, device=device)
                                                   for p, length in chunks])[None]                 # (1, L)
        parts = ((n, 1, self._adapters),) if n else ()
        parts += tuple((1, length, p.adapters) for p, length in chunks)
        kwargs = {}
        old = [(layer.keys, layer.values) for layer in self._cache.layers] if n else []
        if n or cached:
            cache = self._cache if n else DynamicCache()
            for i in range(len(self._decoder.layers)):
                keys = [p.kv[i][0] for p, _ in chunks if p.done]
                values = [p.kv[i][1] for p, _ in chunks if p.done]
                if n:                                                    # (n, h, W, d) → (1, h, n·W, d)
                    k, v = old[i]
                    keys.insert(0, k.transpose(0, 1).reshape(1, k.shape[1], running, k.shape[-1]))
                    values.insert(0, v.transpose(0, 1).reshape(1, v.shape[1], running, v.shape[-1]))
                    layer = self._cache.layers[i]
                    layer.keys, layer.values = _joined(keys), _joined(values)
                else:
                    cache.update(_joined(keys), _joined(values), i)
            kwargs[self._cache_kw] = cache
        layout = PackedLayout(n, width_old, self._attention.bool() if n else None, tuple(lengths), tuple(prefixes))
        with attention_implementation(self._base, PACKED_ATTENTION), packed_layout(layout), \
                self.learner.using_rows(PackedRows(parts)):
            out = self._decoder(input_ids=input_ids, attention_mask=mask[None, None], position_ids=positions,
                                use_cache=True, **kwargs)
        cache = getattr(out, self._cache_kw)
        complete = [length == p.left for p, length in chunks]
        ends, end = list(range(n)), n
        for length, whole in zip(lengths, complete):
            end += length
            if whole:
                ends.append(end - 1)
        joined = [p for (p, _), whole in zip(chunks, complete) if whole]
        width = max(([width_old + 1] if n else []) + [p.prompt.numel() for p in joined], default=0)
        kept: list[list[torch.Tensor]] = [[] for _ in chunks]           # unfinished chunks' keys, values per layer
        for i, layer in enumerate(cache.layers):                         # back to (n + m, h, width, d)
            for attribute in ("keys", "values"):
                packed = getattr(layer, attribute)[0]                    # (h, K + L, d)
                parts_kv = []
                if n:
                    new = packed[:, cached : cached + n].transpose(0, 1).unsqueeze(2)             # (n, h, 1, d)
                    parts_kv.append(_pad_left(torch.cat([old[i][attribute == "values"], new], dim=2), width, 2))
                earlier, start = running, cached + n
                for c, ((p, length), whole) in enumerate(zip(chunks, complete)):
                    tokens = _joined([packed[:, earlier : earlier + p.done], packed[:, start : start + length]],
                                     dim=1)[None]                                              # (1, h, done + l, d)
                    if whole:
                        parts_kv.append(_pad_left(tokens, width, 2))
                    else:                                               # its own copy: the step's cache goes
                        kept[c].append(tokens if p.done else tokens.clone())
                    earlier, start = earlier + p.done, start + length
                setattr(layer, attribute, torch.cat(parts_kv) if parts_kv else None)
        for c, ((p, length), whole) in enumerate(zip(chunks, complete)):
            p.done += length
            if not whole:                                               # (keys, values) per layer, for the next step
                p.kv = list(zip(kept[c][0::2], kept[c][1::2]))
        self._pending = [p for p in self._pending if p.left]
        if not n and not joined:                                        # nothing decodes yet: only chunks ran
            return
        self._next = self._pick(self._head(out.last_hidden_state[0, ends]), n)                    # (n + m,)
        masks = [_pad_left(torch.cat([self._attention, self._attention.new_ones(n, 1)], dim=1), width, 1)] if n else []
        masks += [_pad_left(torch.ones(1, p.prompt.numel(), dtype=torch.long, device=device), width, 1) for p in joined]
        self._attention, self._cache = torch.cat(masks), cache
        for offset, pending in enumerate(joined, start=n):
            self._add_adapters(pending.adapters, offset)
        self._rows += [p.row for p in joined]
        self._adapters = self._step_adapters()


@functools.lru_cache(maxsize=8)
def word_starts(tok, size: int) -> torch.Tensor:
    """(size,) bool: whether token i's text begins with whitespace, i.e. starts a new word (ids past the
    tokenizer's, a padded head's, are False). Decoded once per tokenizer (half a second for 49k ids)."""
    texts = tok.batch_decode([[i] for i in range(min(size, len(tok)))])
    mask = torch.zeros(size, dtype=torch.bool)
    mask[: len(texts)] = torch.tensor([text[:1].isspace() for text in texts], dtype=torch.bool)
    return mask


def _one_row(adapters: RowAdapters | None, i: int) -> RowAdapters | None:
    """Batch row `i`'s adapters, as a batch of that one row (None: it runs the shared LoRA)."""
    if adapters is None:
        return None
    one = torch.zeros(1, dtype=torch.long, device=adapters.rows.device)
    if adapters.has_off_rows and i in adapters.off.tolist():
        return RowAdapters.switched_off(one, 1)
    rows = adapters.rows.tolist()
    if i not in rows:
        return None
    j = rows.index(i)
    deltas = {name: (A[j : j + 1], B[j : j + 1]) for name, (A, B) in adapters.deltas.items()}
    return RowAdapters(deltas, one, 1, off=None, folded=adapters.folded, aligned=True if adapters.folded else None)


def _joined(tensors: list[torch.Tensor], dim: int = 2) -> torch.Tensor:
    """`torch.cat` of the non-empty tensors, without a copy when there is only one."""
    parts = [t for t in tensors if t.shape[dim]] or tensors[:1]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=dim)


def _pad_left(tensor: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    """Zero-pad `tensor` on the left of `dim` to `width` (a mask: 0 = padding; a cache: masked out)."""
    missing = width - tensor.shape[dim]
    if missing == 0:
        return tensor
    pad = [0, 0] * (tensor.dim() - 1 - dim) + [missing, 0]
    return F.pad(tensor, pad)


def prefill(learner, batch: dict[str, torch.Tensor]):
    """The decoder over left-padded prompts with a KV cache: (last hidden states, cache).
    Row adapters, if any, are whatever `learner.using_rows` set around the call."""
    decoder = learner.model.get_base_model().get_decoder()
    attention = batch["attention_mask"]
    positions = (attention.cumsum(-1) - 1).clamp(min=0)                  # (n, T)
    cache_kw = _cache_keyword(decoder)
    with attention_implementation(learner.model.get_base_model(), "sdpa"):
        out = decoder(input_ids=batch["input_ids"], attention_mask=attention, position_ids=positions, use_cache=True)
    return out.last_hidden_state, getattr(out, cache_kw)


TURN_END, TURN_START = "<|im_end|>", "<|im_start|>"   # the chat template's (ChatML) turn markers


def _marker_id(tok, marker: str) -> int | None:
    """The id of a special marker token, or None where the tokenizer lacks it."""
    token = tok.convert_tokens_to_ids(marker)
    return token if isinstance(token, int) and token != tok.unk_token_id else None


def end_of_turn_id(tok, marker: str = TURN_END) -> int:
    """The token a training target ends with: the chat template's `<|im_end|>` where the tokenizer has
    it, else its eos. Named, not read from `eos_token`, because a converted tokenizer's eos depends on
    the transformers version that converted it: the learner trained on an H100 (run 8, transformers
    5.17) learned to end its answers with `<|im_start|>`, those before it (and this machine's
    tokenizer) with `<|im_end|>`. Another `marker` names another token (`regrad train --answer-end`),
    which the tokenizer must have (ValueError)."""
    token = _marker_id(tok, marker)
    if token is not None:
        return token
    if marker != TURN_END:
        raise ValueError(f"the tokenizer has no token {marker!r}")
    return tok.eos_token_id


@functools.lru_cache(maxsize=8)
def stop_token_ids(tok) -> frozenset[int]:
    """End-of-turn tokens and every token whose text holds a newline (computed once per tokenizer).

    A turn ends at `<|im_end|>`, and at `<|im_start|>` too: the next turn's start is never part of
    this answer. The shipped learner (run 8) ends its answers with `<|im_start|>` and then a newline
    (`end_of_turn_id` says why), so stopping at it saves each of its answers a decode step (and keeps
    text a model might write after it, such as a role name, out of the answer)."""
    stops = {tok.eos_token_id, _marker_id(tok, TURN_END), _marker_id(tok, TURN_START)}
    # Every token whose text holds a newline ends the answer (answers are one line).
    vocab_ids = range(len(tok))
    stops.update(i for i, text in zip(vocab_ids, tok.batch_decode([[i] for i in vocab_ids])) if "\n" in text)
    return frozenset(i for i in stops if i is not None)


def _cache_keyword(decoder) -> str:
    """The KV cache's argument (and output) name: `cache` in recent transformers, `past_key_values` before."""
    return _cache_keyword_of(type(decoder))


@functools.lru_cache(maxsize=8)
def _cache_keyword_of(decoder_class: type) -> str:
    """Read once per decoder class, not on every request."""
    return "cache" if "cache" in inspect.signature(decoder_class.forward).parameters else "past_key_values"


@contextlib.contextmanager
def attention_implementation(model, name: str):
    """Use attention implementation `name` inside the block (where the architecture has it), then
    restore the model's own."""
    previous = model.config._attn_implementation
    switched = False
    if previous != name:
        try:
            model.set_attn_implementation(name)
            switched = True
        except (ValueError, ImportError):  # not available for this architecture: keep its own
            pass
    try:
        yield
    finally:
        if switched:
            model.set_attn_implementation(previous)
