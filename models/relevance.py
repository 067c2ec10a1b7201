"""How well each passage explains a question: the base model's likelihood of the question given it.

    ℓ(q | p) = (1/|q|) Σ_j log P_base(q_j | prompt(p), q_<j)

with prompt(p) = "Passage: {title}. {text}\\nPlease write a question based on this passage.\\nQuestion:"
and the learner's LoRA switched off (the `*_base` modes' switch), so the score is the base model's and
does not move with the learner. Ranking passages by how likely they make the question is UPR (Sachan
et al., 2022, "Improving Passage Retrieval with Zero-Shot Question Generation"). It reads meaning that
BM25 cannot: for "What is the birth year of X?" the sentence "X was born in 1931" makes the question
likelier than "X is a ferry captain by profession", although BM25 ranks the second higher. Its scale
is a log-probability (nats a token), the same on every corpus and retrieval backend.

    question_likelihoods(learner, [("Who founded the Ralford Lyceum?", [p1, p2, p3])])   # e.g. [[-1.9, -3.4, -3.6]]

Two passes. The passage's prompt does not depend on the question, so its KV cache is computed once
(the *prefix* pass, every prompt token but the last) and, given a `TensorCache`, kept by the hash of
its tokens; the *question* pass runs only the prompt's last token and the question's tokens against
it. With the cache warm a request costs its questions' tokens, not its passages' (a passage of 124
tokens is about 8 of 9 tokens of a pair). A server warms that cache ahead of a request
(`passage_prompts` and `warm_prompts`), a few prompts between two decode steps, so that the rows
already decoding never wait for a whole request's prefix pass (`engine.scheduler`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import torch
import torch.nn.functional as F

from models.row_lora import RowAdapters
from models.tensor_cache import TensorCache

if TYPE_CHECKING:
    from models.learner import Learner

__all__ = ["question_likelihoods", "passage_prompts", "warm_prompts", "relevance_prompt", "MAX_PASSAGE_TOKENS"]

MAX_PASSAGE_TOKENS = 256   # a longer passage is scored on its first 256 tokens
_BATCH_PAIRS = 16          # prompts, or (question, passage) pairs, per forward, at most
_PAD_SLACK = 0.1           # and a forward's padded tokens at most 10 % over its real ones


class _Text(Protocol):
    title: str
    text: str


def relevance_prompt(passage: _Text) -> tuple[str, str]:
    """The text before the passage's (truncated) body and the text after it."""
    title = passage.title.strip()
    before = "Passage: " + (f"{title}. " if title else "")
    return before, "\nPlease write a question based on this passage.\nQuestion:"


def passage_prompts(learner: Learner, passages: Sequence[_Text], *,
                    max_passage_tokens: int = MAX_PASSAGE_TOKENS) -> list[tuple[str, list[int]]]:
    """(cache key, token ids) of each passage's relevance prompt, in order: what the scoring's prefix
    pass reads, and the key its KV is kept under in a `TensorCache` (no torch work)."""
    tokenizer = learner.tokenizer
    dtype = str(learner.model.get_base_model().dtype)    # in every key: the KV is the base model's
    prompts = []
    for passage in passages:
        before, after = relevance_prompt(passage)
        body = tokenizer(passage.text, add_special_tokens=False).input_ids[:max_passage_tokens]
        ids = (tokenizer(before, add_special_tokens=False).input_ids + body
               + tokenizer(after, add_special_tokens=False).input_ids)
        prompts.append((_prompt_key(dtype, ids), ids))
    return prompts


@torch.inference_mode()
def warm_prompts(learner: Learner, prompts: dict[str, list[int]], cache: TensorCache) -> None:
    """Run the prefix pass over `prompts` (key → ids, from `passage_prompts`) and keep each one's KV in
    `cache`, so that a later `question_likelihoods` with that cache runs their questions alone. A server
    calls it between decode steps, a few prompts at a time, instead of scoring whole at a join."""
    for key, entry in _prefix_passes(learner, prompts).items():
        cache.put(key, entry)


@torch.inference_mode()
def question_likelihoods(learner: Learner, requests: Sequence[tuple[str, Sequence[_Text]]], *,
                         max_passage_tokens: int = MAX_PASSAGE_TOKENS,
                         cache: TensorCache | None = None) -> list[list[float]]:
    """ℓ(question | passage) for every passage of every (question, passages) pair, in order.

    The base model runs (the learner's LoRA off for every row) in batched forwards of `_BATCH_PAIRS`,
    grouped by length: one pass over the passage prompts that `cache` does not hold (all of them
    without a cache), then one over the questions. A question with no tokens scores 0.0."""
    tokenizer = learner.tokenizer
    prompts: dict[str, list[int]] = {}                   # key → prompt ids, one per distinct prompt
    pairs: list[tuple[str, list[int]]] = []              # (prompt key, question ids) per passage
    for question, passages in requests:
        text = question.strip()
        question_ids = tokenizer(" " + text, add_special_tokens=False).input_ids if text else []
        for key, ids in passage_prompts(learner, passages, max_passage_tokens=max_passage_tokens):
            prompts[key] = ids
            pairs.append((key, question_ids))
    kv: dict[str, torch.Tensor] = {}
    for key in prompts:
        if cache is not None and (entry := cache.get(key)) is not None:
            kv[key] = entry
    computed = _prefix_passes(learner, {key: ids for key, ids in prompts.items() if key not in kv})
    for key, entry in computed.items():
        kv[key] = entry
        if cache is not None:
            cache.put(key, entry)
    scores = [0.0] * len(pairs)
    # Grouped by question length first (the question tokens are what runs), then by cached width.
    scored = sorted((i for i, (_, q) in enumerate(pairs) if q),
                    key=lambda i: (-len(pairs[i][1]), -kv[pairs[i][0]].shape[3]))
    for chunk in _length_groups(scored, [len(pairs[i][1]) for i in scored]):
        items = [(kv[pairs[i][0]], [prompts[pairs[i][0]][-1], *pairs[i][1]]) for i in chunk]
        for i, score in zip(chunk, _question_pass(learner, items), strict=True):
            scores[i] = score
    out, at = [], 0
    for _, passages in requests:
        out.append(scores[at:at + len(passages)])
        at += len(passages)
    return out


def _prefix_passes(learner: Learner, prompts: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    """Each prompt's KV (every token but the last), in forwards grouped by length, longest first."""
    keys = sorted(prompts, key=lambda k: -len(prompts[k]))
    kv: dict[str, torch.Tensor] = {}
    for chunk in _length_groups(keys, [len(prompts[k]) for k in keys]):
        for key, entry in zip(chunk, _prefix_pass(learner, [prompts[k][:-1] for k in chunk]), strict=True):
            kv[key] = entry
    return kv


def _length_groups(items: list, lengths: list[int]) -> list[list]:
    """`items`, sorted by `lengths` descending, cut into forwards of at most `_BATCH_PAIRS` whose padding
    to their first (longest) item stays within `_PAD_SLACK` of their real tokens. On a CPU a token costs
    about the same in a forward of 1 or of 16, so padding is the waste: HotpotQA passage prompts of
    98-180 tokens in one forward of 16 ran 32 % padding and took 1.26x the grouped forwards' time."""
    groups: list[list] = []
    start = 0
    while start < len(items):
        end, real = start + 1, lengths[start]
        while (end < len(items) and end - start < _BATCH_PAIRS
               and lengths[start] * (end + 1 - start) <= (1 + _PAD_SLACK) * (real + lengths[end])):
            real += lengths[end]
            end += 1
        groups.append(items[start:end])
        start = end
    return groups


def _prompt_key(dtype: str, ids: list[int]) -> str:
    """The cache key of a prompt: its tokens and the base weights' dtype."""
    digest = hashlib.blake2b(dtype.encode(), digest_size=16)
    digest.update(torch.tensor(ids, dtype=torch.int64).numpy().tobytes())
    return digest.hexdigest()


def _prefix_pass(learner: Learner, prefixes: list[list[int]]) -> list[torch.Tensor]:
    """Each prefix's KV cache, `(layers, 2, kv_heads, len, head_dim)`, from one right-padded forward.

    No attention mask: with right padding and causal attention a real token never sees a pad (pads
    only follow it), so the plain causal kernel gives the real positions exactly what a mask would."""
    from models.decoding import _cache_keyword, attention_implementation

    device = learner.device
    input_ids = torch.zeros((len(prefixes), max(map(len, prefixes))), dtype=torch.long, device=device)
    for i, ids in enumerate(prefixes):
        input_ids[i, : len(ids)] = torch.tensor(ids, device=device)
    causal_lm = learner.model.get_base_model()
    decoder = causal_lm.get_decoder()
    with _base_rows(learner, len(prefixes)), attention_implementation(causal_lm, "sdpa"):
        out = decoder(input_ids=input_ids, use_cache=True)
    layers = getattr(out, _cache_keyword(decoder)).layers
    return [torch.stack([torch.stack([layer.keys[i, :, : len(ids)], layer.values[i, :, : len(ids)]])
                         for layer in layers]) for i, ids in enumerate(prefixes)]


def _question_pass(learner: Learner, items: list[tuple[torch.Tensor, list[int]]]) -> list[float]:
    """Mean log-probability of each item's tokens after the first, given its cached prefix.

    Each item is (prefix KV, [the prompt's last token, *question ids]). Prefixes are left-padded to
    one width and the tokens right-padded, under a mask; positions continue each row's own prefix.
    The LM head runs on the predicting positions only (the vocabulary is 49k wide)."""
    from transformers import DynamicCache

    from models.decoding import _cache_keyword, attention_implementation

    device = learner.device
    n, width = len(items), max(entry.shape[3] for entry, _ in items)
    length = max(len(tokens) for _, tokens in items)
    input_ids = torch.zeros((n, length), dtype=torch.long, device=device)
    attention = torch.zeros((n, width + length), dtype=torch.long, device=device)
    positions = torch.zeros((n, length), dtype=torch.long, device=device)
    for i, (entry, tokens) in enumerate(items):
        cached = entry.shape[3]
        input_ids[i, : len(tokens)] = torch.tensor(tokens, device=device)
        attention[i, width - cached : width + len(tokens)] = 1
        positions[i] = torch.arange(cached, cached + length, device=device)
    padded = torch.stack([F.pad(entry, (0, 0, width - entry.shape[3], 0)) for entry, _ in items], dim=2)
    past = DynamicCache(ddp_cache_data=[(layer[0], layer[1]) for layer in padded])   # (n, heads, width, dim) each
    causal_lm = learner.model.get_base_model()
    decoder = causal_lm.get_decoder()
    with _base_rows(learner, n), attention_implementation(causal_lm, "sdpa"):
        hidden = decoder(input_ids=input_ids, attention_mask=attention, position_ids=positions,
                         use_cache=True, **{_cache_keyword(decoder): past}).last_hidden_state
    # Position t predicts token t + 1; the question's tokens are 1 .. len - 1.
    target = torch.zeros_like(input_ids, dtype=torch.bool)
    for i, (_, tokens) in enumerate(items):
        target[i, 1 : len(tokens)] = True
    predictors = torch.roll(target, -1, dims=1)
    logits = causal_lm.get_output_embeddings()(hidden[predictors]).float()                # (N, V)
    token_lp = logits.log_softmax(-1).gather(1, input_ids[target][:, None])[:, 0]          # (N,)
    rows = torch.arange(n, device=device)[:, None].expand_as(target)[target]
    total = torch.zeros(n, device=device).index_add(0, rows, token_lp)
    return (total / target.sum(dim=1).clamp(min=1)).tolist()


def _base_rows(learner: Learner, n: int):
    """Every row of an n-row forward switched off: the LoRA layers run the base weights alone."""
    return learner.using_rows(RowAdapters.switched_off(torch.arange(n, device=learner.device), n))
