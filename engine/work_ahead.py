"""A newcomer's model work done before it joins the decoding rows, a budget at a time between steps.

Some requests bring model work that their join would otherwise run whole, freezing every decoding
row's stream for as long:
  * a request weighed by `likelihood` reads each passage's scoring prompt with the base model
    (about 150 tokens a passage: `models/relevance.py`);
  * a request with its own `passages`, or whose retrieved passages the store lacks, computes their
    gradients, a forward and a backward each (counted as `BACKWARD_COST` x its tokens).
The continuous scheduler instead does that work ahead, into the engine's caches (the relevance
cache, the gradient cache), at most `budget_tokens` tokens' work between two decode steps (one
item over it only after a step that did none), oldest newcomer first. It admits a newcomer once
what is left of its work fits the step's budget, and its join does that rest. With nothing left,
its join finds everything in the caches: the scoring's question pass is all that runs, and no
backward. Where no cache can hold the work, the engine reports none, and the join does it. Work
done once and gone again (evicted from a full cache before the join) is not done twice ahead: the
join does it.

    ahead = WorkAhead(engine, budget_tokens=512)
    done: set = set()                  # one per newcomer, kept by the caller
    while ahead.left(row, done) > 512:   # model thread, between two decode steps
        ahead.run_slice([(row, done)])    # then its join does the rest (at most the budget)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["WorkAhead"]

Item = tuple[str, str]   # (kind, key): ("prompt", relevance cache key) or ("gradient", passage id)


class WorkAhead:
    """The `engine`'s work ahead for its rows (`cold_passage_prompts`, `cold_gradients`) and
    the slices that do it (`warm_passage_prompts`, `warm_gradients`). Model thread only."""

    def __init__(self, engine, budget_tokens: int) -> None:
        if budget_tokens < 1:
            raise ValueError(f"`budget_tokens` must be >= 1, got {budget_tokens}")
        self.engine = engine
        self.budget_tokens = budget_tokens

    def left(self, row, done: set[Item]) -> int:
        """Tokens of the row's work still to do ahead (not in the caches, not done once): 0 for none."""
        return sum(cost for item, (cost, _) in self._cold(row).items() if item not in done)

    def run_slice(self, rows: Sequence[tuple[Any, set[Item]]], budget_tokens: int | None = None, *,
                  at_least_one: bool = True) -> bool:
        """Do up to `budget_tokens` (default: this one's) tokens of these rows' work, in their order (with
        `at_least_one`, the first item whatever its cost), and add what was done for each row to its
        `done` set. Whether anything ran; an error propagates (nothing is recorded)."""
        budget = self.budget_tokens if budget_tokens is None else budget_tokens
        work, taken = self._slice(rows, budget, at_least_one)
        prompts = {key: payload for (kind, key), payload in work.items() if kind == "prompt"}
        texts = {key: payload for (kind, key), payload in work.items() if kind == "gradient"}
        if prompts:
            self.engine.warm_passage_prompts(prompts)
        if texts:
            self.engine.warm_gradients(texts)
        for done, item in taken:
            done.add(item)
        return bool(work)

    def _cold(self, row) -> dict[Item, tuple[int, Any]]:
        """Each item of the row's work not in the caches: its cost in tokens and what runs it."""
        work: dict[Item, tuple[int, Any]] = {
            ("prompt", key): (len(ids), ids) for key, ids in self.engine.cold_passage_prompts(row).items()}
        for pid, cold in self.engine.cold_gradients(row).items():
            work[("gradient", pid)] = (cold.cost, cold.text)
        return work

    def _slice(self, rows: Sequence[tuple[Any, set[Item]]], budget_tokens: int,
               at_least_one: bool) -> tuple[dict[Item, Any], list[tuple[set[Item], Item]]]:
        """(this slice's items and what runs each; each item's row's `done` set), within the budget."""
        work: dict[Item, Any] = {}
        taken: list[tuple[set[Item], Item]] = []
        tokens = 0
        for row, done in rows:
            for item, (cost, payload) in self._cold(row).items():
                if item in done:
                    continue
                if item not in work:
                    if (work or not at_least_one) and tokens + cost > budget_tokens:
                        return work, taken
                    work[item], tokens = payload, tokens + cost
                taken.append((done, item))
        return work, taken
