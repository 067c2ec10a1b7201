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
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import torch

from models.row_lora import RowAdapters

if TYPE_CHECKING:
    from models.learner import Learner

__all__ = ["question_likelihoods", "relevance_prompt", "MAX_PASSAGE_TOKENS"]

MAX_PASSAGE_TOKENS = 256   # a longer passage is scored on its first 256 tokens
_BATCH_PAIRS = 16          # (question, passage) pairs per forward


class _Text(Protocol):
    title: str
    text: str


def relevance_prompt(passage: _Text) -> tuple[str, str]:
    """The text before the passage's (truncated) body and the text after it."""
    title = passage.title.strip()
    before = "Passage: " + (f"{title}. " if title else "")
    return before, "\nPlease write a question based on this passage.\nQuestion:"


@torch.inference_mode()
def question_likelihoods(learner: Learner, requests: Sequence[tuple[str, Sequence[_Text]]], *,
                         max_passage_tokens: int = MAX_PASSAGE_TOKENS) -> list[list[float]]:
    """ℓ(question | passage) for every passage of every (question, passages) pair, in order.

    All pairs run in batched forwards of the base model (the learner's LoRA off for every row), right
    padded, `_BATCH_PAIRS` at a time, grouped by length. A question with no tokens scores 0.0 for
    each passage."""
    tokenizer = learner.tokenizer
    sequences: list[tuple[list[int], int]] = []          # (token ids, where the question starts)
    for question, passages in requests:
        text = question.strip()
        question_ids = tokenizer(" " + text, add_special_tokens=False).input_ids if text else []
        for passage in passages:
            before, after = relevance_prompt(passage)
            body = tokenizer(passage.text, add_special_tokens=False).input_ids[:max_passage_tokens]
            prefix = (tokenizer(before, add_special_tokens=False).input_ids + body
                      + tokenizer(after, add_special_tokens=False).input_ids)
            sequences.append((prefix + question_ids, len(prefix)))
    # Longest first, so that each forward pads its pairs to nearly their own length.
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i][0]))
    scores = [0.0] * len(sequences)
    for start in range(0, len(order), _BATCH_PAIRS):
        chunk = order[start : start + _BATCH_PAIRS]
        for i, score in zip(chunk, _score_chunk(learner, [sequences[i] for i in chunk]), strict=True):
            scores[i] = score
    out, at = [], 0
    for _, passages in requests:
        out.append(scores[at:at + len(passages)])
        at += len(passages)
    return out


def _score_chunk(learner: Learner, sequences: list[tuple[list[int], int]]) -> list[float]:
    """One right-padded forward; the LM head runs on the question's positions only (the vocabulary is
    49k wide: on every position of a 16 x 300 batch its logits alone would be half a GB).

    No attention mask: with right padding and causal attention a real token never sees a pad (pads
    only follow it), so the plain causal kernel gives the real positions exactly what a mask would.
    Every row is switched off, so the LoRA layers run the base weights alone (`RowLoraLinear`)."""
    from models.decoding import attention_implementation

    device = learner.device
    width = max(len(ids) for ids, _ in sequences)
    input_ids = torch.zeros((len(sequences), width), dtype=torch.long, device=device)
    for i, (ids, _) in enumerate(sequences):
        input_ids[i, : len(ids)] = torch.tensor(ids, device=device)
    causal_lm = learner.model.get_base_model()
    everyone = torch.arange(len(sequences), device=device)
    with learner.using_rows(RowAdapters.switched_off(everyone, len(sequences))), \
            attention_implementation(causal_lm, "sdpa"):
        hidden = causal_lm.get_decoder()(input_ids=input_ids).last_hidden_state
    # Position t predicts token t + 1: the question's tokens [start, end) are predicted from [start - 1, end - 1).
    target = torch.zeros_like(input_ids, dtype=torch.bool)
    for i, (ids, start) in enumerate(sequences):
        target[i, start : len(ids)] = True
    predictors = torch.roll(target, -1, dims=1)
    logits = causal_lm.get_output_embeddings()(hidden[predictors]).float()                # (N, V)
    token_lp = logits.log_softmax(-1).gather(1, input_ids[target][:, None])[:, 0]          # (N,)
    rows = everyone[:, None].expand_as(target)[target]
    total = torch.zeros(len(sequences), device=device).index_add(0, rows, token_lp)
    counts = target.sum(dim=1)
    return torch.where(counts > 0, total / counts.clamp(min=1), 0.0).tolist()
