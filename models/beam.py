"""Beam search over row-adapted answers: the likeliest whole answer, where greedy takes the likeliest token.

A passage gradient teaches a value, but greedy decoding commits to one token at a time and can end an
answer a token early ("75" for "755") or wander off it ("tinsy tiki" for "tin chess set") where the
adapted model gives the whole gold answer the higher probability (`bench/miss_margins.py` measures how
often: docs/results.md, rule 29). `models.generate.beam_answers` keeps `width` hypotheses a request and returns
the one with the highest summed log-probability, its end-of-answer token included (no length penalty:
a short answer that ends cleanly beats a long one that does not).

Each request is prefilled once, with its own row adapter; its cache rows are then repeated `width`
times (every beam of a request shares its adapter, so the beams never need their adapters moved, only
their cache rows reordered). Requests run a few at a time (`ROWS` beams a forward), each stopping as
soon as its best finished answer beats every live beam (log-probabilities only fall) or at its
`max_new_tokens`, when a finished answer wins over the live ones, as greedy's truncated answer would.

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

import torch

from models.decoding import _cache_keyword, attention_implementation, prefill, stop_token_ids

__all__ = ["search", "polar_token_ids", "ROWS"]

POLAR_WORDS = ("yes", "no")

ROWS = 16   # beams in one forward: requests run width-per-ROWS at a time (each beam holds a folded adapter)


@torch.no_grad()
def search(learner, batch: dict[str, torch.Tensor], adapters, beam_adapters, width: int,
           limits: list[int]) -> list[list[int]]:
    """Beam search of `width` for a chunk of requests: the token ids of each one's best answer (its stop token
    left out). `batch`, `adapters`: the requests' left-padded prompts and row adapters, one row a request;
    `beam_adapters`: the same adapters repeated `width` times, row i·width + b for beam b of request i (both
    as `models.generate.prepare_rows` builds them; `models.generate.beam_answers` is the entry point)."""
    n, stops = batch["input_ids"].shape[0], stop_token_ids(learner.tokenizer)
    base = learner.model.get_base_model()
    decoder, head = base.get_decoder(), base.get_output_embeddings()
    with learner.using_rows(adapters):
        hidden, cache = prefill(learner, batch)
    logp = torch.log_softmax(head(hidden[:, -1]).float(), -1)
    _keep_polar_first_tokens(logp, polar_token_ids(learner.tokenizer))
    logp = logp.repeat_interleave(width, 0)                                                # (n·w, V)
    cache.batch_repeat_interleave(width)
    attention = batch["attention_mask"].repeat_interleave(width, 0)
    vocab = logp.shape[-1]
    scores = torch.full((n, width), -math.inf)
    scores[:, 0] = 0.0                                   # one live beam a request at first
    tokens: list[list[list[int]]] = [[[] for _ in range(width)] for _ in range(n)]
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(n)]
    best: list[list[int] | None] = [None] * n
    next_token = torch.zeros(n * width, dtype=torch.long, device=attention.device)
    for step in range(max(limits)):
        total = (scores.to(logp.device)[:, :, None] + logp.view(n, width, vocab)).view(n, -1)
        # enough candidates for `width` live ones even if every beam's stop tokens rank above them
        top_scores, top_index = total.topk(min(width * (len(stops) + 1), total.shape[1]), dim=-1)
        parents = torch.arange(n * width, device=attention.device)
        for i in range(n):
            if best[i] is not None:
                continue
            live = []
            for score, index in zip(top_scores[i].tolist(), top_index[i].tolist()):
                if score == -math.inf or len(live) == width:
                    break
                beam, token = divmod(index, vocab)
                if token in stops:
                    finished[i].append((score, tokens[i][beam]))
                else:
                    live.append((score, beam, token))
            ended = step + 1 >= limits[i]
            if finished[i] and (not live or max(s for s, _ in finished[i]) >= live[0][0] or ended):
                best[i] = max(finished[i], key=lambda pair: pair[0])[1]
                continue
            if ended or not live:   # the limit with no finished answer: the likeliest truncated one
                best[i] = tokens[i][live[0][1]] + [live[0][2]] if live else []
                continue
            new_tokens = [list(tokens[i][0]) for _ in range(width)]
            for b in range(width):
                score, beam, token = live[b] if b < len(live) else (-math.inf, live[0][1], live[0][2])
                scores[i, b] = score
                parents[i * width + b] = i * width + beam
                new_tokens[b] = tokens[i][beam] + [token]
                next_token[i * width + b] = token
            tokens[i] = new_tokens
        if all(b is not None for b in best):
            break
        cache.batch_select_indices(parents)
        attention = torch.cat([attention[parents], attention.new_ones(n * width, 1)], dim=1)
        position = attention.sum(-1, keepdim=True) - 1
        with attention_implementation(base, "sdpa"), learner.using_rows(beam_adapters):
            out = decoder(input_ids=next_token[:, None], attention_mask=attention, position_ids=position,
                          use_cache=True, **{_cache_keyword(decoder): cache})
        logp = torch.log_softmax(head(out.last_hidden_state[:, -1]).float(), -1)
    return [b if b is not None else [] for b in best]


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
