"""Beam search over row-adapted answers: the likeliest whole answer, where greedy takes the likeliest token.

A passage gradient teaches a value, but greedy decoding commits to one token at a time and can end an
answer a token early ("75" for "755") or wander off it ("tinsy tiki" for "tin chess set") where the
adapted model gives the whole gold answer the higher probability (`bench/miss_margins.py` measures how
often: docs/results.md, rule 29). `models.generate.beam_answers` keeps `width` hypotheses a request and returns
the one with the highest summed log-probability, its end-of-answer token included (no length penalty:
a short answer that ends cleanly beats a long one that does not).

Each request is prefilled once, with its own row adapter; its cache rows are then repeated `width`
times (every beam of a request shares its adapter, so the beams never need their adapters moved, only
their cache rows reordered). Each request stops as soon as its best finished answer beats every live
beam (log-probabilities only fall) or at its `max_new_tokens`, when a finished answer wins over the
live ones, as greedy's truncated answer would, and its rows leave the batch.

`BeamBatch` holds the running searches: requests join it at any step and leave it when they end, as
greedy rows join and leave a `models.decoding.BatchDecoder` (whose cache, adapters and row moves it
reuses). The continuous scheduler runs one beside its greedy batch; `models.generate.beam_answers`
runs its requests a few at a time (`ROWS` beams a forward) through one.

A polar answer keeps greedy's first token. Where the likeliest first token is a yes or a no
(`polar_token_ids`), all that follows a bare "yes" or "no" is its end token, so a search would choose
between them by how surely the model stops after each, not by which it believes: on a HotpotQA
validation question, "no" then the end scored -0.711 and "yes" then the end -0.708, and the search
turned greedy's right "no" wrong (docs/results.md, rule 30). Such a request searches only what follows
its first token.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import torch

from models.decoding import BatchDecoder, _Row, prefill
from models.row_bank import fill_order

__all__ = ["BeamBatch", "polar_token_ids", "ROWS"]

POLAR_WORDS = ("yes", "no")

ROWS = 16   # beams in one forward: requests run width-per-ROWS at a time (each beam holds a folded adapter)


@dataclass
class _Search:
    """One request's search: its beams' scores and tokens (beam b is the batch row keyed (key, b))."""

    key: Hashable
    width: int
    limit: int
    scores: list[float]
    tokens: list[list[int]]
    finished: list[tuple[float, list[int]]] = field(default_factory=list)
    steps: int = 0


class BeamBatch(BatchDecoder):
    """Running beam searches that requests join at any step and leave when their best answer is found:
    continuous batching for beams (`engine.scheduler` runs one beside its greedy batch).

    A request of width W is W rows of the batch, keyed (its key, b), that share its adapter: each step
    reorders cache rows within a request only, so adapters never move. Rows join after one prefill a
    request (its first tokens' log-probabilities, the polar rule applied, repeated W times) and leave
    together when the request ends. `step()` picks every request's next beams from the last forward's
    log-probabilities, lets the ended requests leave, and runs the next forward for the others."""

    def __init__(self, learner) -> None:
        super().__init__(learner)
        self._polar = polar_token_ids(learner.tokenizer)
        self._searches: dict[Hashable, _Search] = {}
        self._logp: torch.Tensor | None = None           # (rows, V): each row's next-token log-probabilities

    def __len__(self) -> int:
        return len(self._searches)

    @property
    def keys(self) -> list[Hashable]:
        return list(self._searches)

    @torch.no_grad()
    def join(self, keys: Sequence[Hashable], batch: dict[str, torch.Tensor], adapters, beam_adapters,
             widths: Sequence[int], max_new_tokens: Sequence[int]) -> None:
        """Requests join: `batch`, `adapters` one row a request, `beam_adapters` one row a beam (request i's
        adapter repeated `widths[i]` times, in order), as `models.generate.prepare_beam_rows` builds them."""
        if not keys:
            return
        if not len(keys) == len(widths) == len(max_new_tokens) == batch["input_ids"].shape[0]:
            raise ValueError("join needs one key, one width and one max_new_tokens per batch row")
        if any(w < 1 for w in widths) or any(n < 1 for n in max_new_tokens):
            raise ValueError(f"widths and max_new_tokens must be >= 1, got {list(widths)}, {list(max_new_tokens)}")
        if set(keys) & set(self._searches):
            raise ValueError("a key already searching joined again")
        with self.learner.using_rows(adapters):
            hidden, cache = prefill(self.learner, batch)
        logp = torch.log_softmax(self._head(hidden[:, -1]).float(), -1)
        _keep_polar_first_tokens(logp, self._polar)
        index = torch.repeat_interleave(torch.arange(len(keys), device=logp.device),
                                        torch.tensor(list(widths), device=logp.device))
        cache.batch_select_indices(index)
        rows = [_Row((key, b), int(n)) for key, w, n in zip(keys, widths, max_new_tokens) for b in range(w)]
        for key, w, n in zip(keys, widths, max_new_tokens):
            self._searches[key] = _Search(key, int(w), int(n), [0.0] + [-math.inf] * (w - 1), [[] for _ in range(w)])
        logp = logp[index]
        self._logp = torch.cat([self._logp, logp]) if self._rows else logp
        self._append(rows, cache, batch["attention_mask"][index], torch.zeros_like(index), beam_adapters)

    def leave(self, keys: Sequence[Hashable]) -> None:
        """Drop searches before they end (their clients left)."""
        gone = set(keys) & set(self._searches)
        for key in gone:
            del self._searches[key]
        if gone:
            self._drop(gone)

    @torch.no_grad()
    def step(self) -> list[tuple[Hashable, list[int]]]:  # type: ignore[override]
        """Every request's next beams; the requests that ended leave, returned with their best answer's
        token ids (its stop token left out); the others run one forward together."""
        if not self._rows:
            return []
        place = {row.key: i for i, row in enumerate(self._rows)}
        parents = list(range(len(self._rows)))
        next_token = [0] * len(self._rows)
        ended: list[tuple[Hashable, list[int]]] = []
        for search in self._searches.values():
            rows = [place[(search.key, b)] for b in range(search.width)]
            best = self._advance(search, rows, parents, next_token)
            if best is not None:
                ended.append((search.key, best))
        if parents != list(range(len(parents))):          # beams took their parents' cache rows
            index = torch.tensor(parents, device=self._next.device)
            self._cache.batch_select_indices(index)
            self._attention = self._attention[index]
        self._next = torch.tensor(next_token, device=self._next.device)
        if ended:
            for key, _ in ended:
                del self._searches[key]
            self._drop({key for key, _ in ended})
        if self._rows:
            self._decode_one()
        return ended

    def _advance(self, search: _Search, rows: list[int], parents: list[int], next_token: list[int]) -> list[int] | None:
        """One step of one search, from its rows' log-probabilities: its best answer if it ended, else None
        (its beams' parents and next tokens written into `parents` and `next_token`)."""
        logp = self._logp[rows]                                                        # (W, V)
        total = (torch.tensor(search.scores, device=logp.device)[:, None] + logp).view(-1)
        top_scores, top_index = total.topk(min(search.width * (len(self._stops) + 1), total.numel()))
        live = []
        for score, index in zip(top_scores.tolist(), top_index.tolist()):
            if score == -math.inf or len(live) == search.width:
                break
            beam, token = divmod(index, logp.shape[-1])
            if token in self._stops:
                search.finished.append((score, search.tokens[beam]))
            else:
                live.append((score, beam, token))
        search.steps += 1
        ended = search.steps >= search.limit
        if search.finished and (not live or max(s for s, _ in search.finished) >= live[0][0] or ended):
            return max(search.finished, key=lambda pair: pair[0])[1]
        if ended or not live:   # the limit with no finished answer: the likeliest truncated one
            return search.tokens[live[0][1]] + [live[0][2]] if live else []
        tokens = []
        for b in range(search.width):
            score, beam, token = live[b] if b < len(live) else (-math.inf, live[0][1], live[0][2])
            search.scores[b] = score
            parents[rows[b]] = rows[beam]
            next_token[rows[b]] = token
            tokens.append(search.tokens[beam] + [token])
        search.tokens = tokens
        return None

    def _drop(self, keys: set) -> None:
        """The rows of the requests `keys` leave the batch; the others move as `_keep` moves them, their
        log-probabilities with them."""
        keep = [i for i, row in enumerate(self._rows) if row.key[0] not in keys]
        if keep:
            self._logp = self._logp[torch.tensor(fill_order(len(self._rows), keep), device=self._logp.device)]
        self._keep(keep)

    def _pick(self, logits: torch.Tensor, running: int) -> torch.Tensor:
        """After a forward: every row's next-token log-probabilities, for the next `step`'s choice."""
        self._logp = torch.log_softmax(logits.float(), -1)
        return self._next


def _keep_polar_first_tokens(logp: torch.Tensor, polar: frozenset[int]) -> None:
    """In place: a row whose likeliest first token is polar may start with that token only."""
    first = logp.argmax(-1)
    for i in [i for i, token in enumerate(first.tolist()) if token in polar]:
        kept = logp[i, first[i]].clone()
        logp[i] = -math.inf
        logp[i, first[i]] = kept


@functools.lru_cache(maxsize=8)
def polar_token_ids(tok) -> frozenset[int]:
    """The tokens that are a whole yes or no by themselves ("Yes", " no", "NO", ...), once per tokenizer."""
    variants = {form for word in POLAR_WORDS for case in (word, word.capitalize(), word.upper())
                for form in (case, " " + case)}
    ids = (tok.encode(form, add_special_tokens=False) for form in sorted(variants))
    return frozenset(found[0] for found in ids if len(found) == 1)
