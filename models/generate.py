"""Prompts and batched generation.

Prompts use the tokenizer's chat template (never hand-written markup). The instruction depends
on the answer type (`short`, `yes_no`, `choice`) and on whether passages are in the prompt.
Generation is greedy (`models.decoding.BatchDecoder`); each row carries its own adaptation (or
none). The answer is read from the generated tokens only, cut at the first newline, then normalised.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from models.beam import ROWS, BeamBatch
from models.decoding import BatchDecoder, prefill
from models.row_lora import RowAdapters
from models.vocab import ANSWER_TYPES, CHOICE_LETTERS, MAX_CHOICES, MIN_CHOICES

__all__ = ["AnswerRequest", "build_prompt", "build_messages", "generate_answers", "beam_answers", "prepare_beam_rows",
           "normalize_answer_type", "prepare_rows", "answer_text", "next_token_logits", "ANSWER_TYPES", "LETTERS"]

LETTERS = CHOICE_LETTERS

_INSTRUCTIONS = {
    "short": "Answer the question with a short phrase or a single word. Do not write a sentence.",
    "yes_no": "Answer the question with 'yes' or 'no' only.",
    "choice": "Answer with the letter of the correct option only.",
}


@dataclass
class AnswerRequest:
    """One question to answer. `gradient` is a summed flat gradient (D,) or None (no adaptation);
    `base` runs the row on the base model, the learner's LoRA switched off for it alone."""

    question: str
    answer_type: str = "short"
    choices: list[str] | None = None
    context: list[tuple[str, str]] | None = None   # (title, text) passages shown in the prompt
    gradient: torch.Tensor | None = field(default=None, repr=False)
    gamma: float = 1.0
    base: bool = False

    def __post_init__(self) -> None:
        if self.base and self.gradient is not None:
            raise ValueError("a base-model row carries no gradient: its LoRA is switched off")


def build_messages(question: str, answer_type: str = "short", choices: list[str] | None = None,
                   context: list[tuple[str, str]] | None = None) -> list[dict[str, str]]:
    if answer_type not in ANSWER_TYPES:
        raise ValueError(f"`answer_type` must be one of {ANSWER_TYPES}, got {answer_type!r}")
    instruction = _INSTRUCTIONS[answer_type]
    if context:
        passages = "\n\n".join(
            f"Passage {i + 1}: {title}\n{text}" if title else f"Passage {i + 1}: {text}"
            for i, (title, text) in enumerate(context)
        )
        system = f"Answer the question according to the context.\n\nContext:\n{passages}\n\n{instruction}"
    else:
        system = instruction
    user = question.strip()
    if answer_type == "choice":
        if not choices or not MIN_CHOICES <= len(choices) <= MAX_CHOICES:
            raise ValueError(f"`choices` must hold {MIN_CHOICES}..{MAX_CHOICES} options for answer_type 'choice'")
        user += "\n" + "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(choices))
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def build_prompt(tokenizer, question: str, answer_type: str = "short", choices: list[str] | None = None,
                 context: list[tuple[str, str]] | None = None) -> str:
    """The chat-templated prompt text, ending where the assistant's answer starts."""
    messages = build_messages(question, answer_type, choices, context)
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def normalize_answer_type(text: str, answer_type: str, choices: list[str] | None = None) -> str:
    """Cut at the first newline and reduce to a yes/no word or an option letter where relevant."""
    text = text.split("\n", 1)[0].strip()
    if answer_type == "yes_no":
        match = re.search(r"\b(yes|no)\b", text, flags=re.IGNORECASE)
        return match.group(1).lower() if match else text
    if answer_type == "choice":
        n = len(choices) if choices else len(LETTERS)
        letters = LETTERS[:n]
        match = re.match(rf"^\(?([{letters}])\b", text) or re.search(rf"\b([{letters}])[.)]", text)
        if match:
            return match.group(1)
        lowered = text.lower().strip(" .")
        for i, choice in enumerate(choices or []):
            if lowered and lowered == choice.lower().strip(" ."):
                return letters[i]
        return text
    return text


@torch.no_grad()
def generate_answers(learner, requests: list[AnswerRequest], max_new_tokens: int | Sequence[int] = 20,
                     return_raw: bool = False, stop_bias: float | Sequence[float] = 0.0,
                     beams: int | Sequence[int] = 1) -> list[str]:
    """Answers for a batch of requests; row i uses its own adaptation, its own length limit
    (`max_new_tokens`: one for all rows, or one per row), its own `stop_bias` (added to the end-of-answer
    tokens' logits after the first token: `BatchDecoder.join`) and its own `beams` (one for all rows, or
    one per row): rows at 1 are decoded greedily in ONE generation, the others by beam search of their
    width (`beam_answers`, where `stop_bias` does not apply).

    Example:
        >>> generate_answers(learner, [AnswerRequest("What is the capital of France?")])
        ['Paris']
    """
    if not requests:
        return []
    limits = [max_new_tokens] * len(requests) if isinstance(max_new_tokens, int) else list(max_new_tokens)
    biases = [stop_bias] * len(requests) if isinstance(stop_bias, (int, float)) else list(stop_bias)
    widths = [beams] * len(requests) if isinstance(beams, int) else list(beams)
    if not len(limits) == len(biases) == len(widths) == len(requests):
        raise ValueError("generate_answers needs one max_new_tokens, stop_bias and beams per request (or one for all)")
    token_ids: dict[int, list[int]] = {}
    for width in sorted(set(widths) - {1}):
        rows = [i for i, w in enumerate(widths) if w == width]
        found = beam_answers(learner, [requests[i] for i in rows], width, [limits[i] for i in rows])
        token_ids.update(zip(rows, found))
    greedy = [i for i, w in enumerate(widths) if w == 1]
    if greedy:
        batch, adapters = prepare_rows(learner, [requests[i] for i in greedy])
        decoder = BatchDecoder(learner)
        decoder.join(greedy, batch, adapters, [limits[i] for i in greedy], [biases[i] for i in greedy])
        while decoder:
            token_ids.update(decoder.step())
    return [answer_text(learner.tokenizer, token_ids[i], r, raw=return_raw) for i, r in enumerate(requests)]


@torch.no_grad()
def beam_answers(learner, requests: Sequence[AnswerRequest], width: int,
                 max_new_tokens: Sequence[int]) -> list[list[int]]:
    """The token ids of each request's best answer under beam search of `width` (its stop token left out;
    `models.beam`): requests run a few at a time, `models.beam.ROWS` beams a forward.

    Args:
        learner: the learner whose model decodes.
        requests: as `generate_answers` takes them (question, context, gradient, gamma, base).
        width: hypotheses kept per request (1 is greedy, bar ties).
        max_new_tokens: one limit per request.
    """
    if width < 1:
        raise ValueError(f"`width` must be >= 1, got {width}")
    if len(max_new_tokens) != len(requests) or any(n < 1 for n in max_new_tokens):
        raise ValueError("beam_answers needs one max_new_tokens >= 1 per request")
    per_forward = max(1, ROWS // width)
    found: dict[int, list[int]] = {}
    for start in range(0, len(requests), per_forward):
        keys = list(range(start, min(start + per_forward, len(requests))))
        beams = BeamBatch(learner)
        beams.join(keys, *prepare_beam_rows(learner, [requests[i] for i in keys], [width] * len(keys)),
                   [width] * len(keys), [max_new_tokens[i] for i in keys])
        while beams:
            found.update(beams.step())
    return [found[i] for i in range(len(requests))]


def prepare_beam_rows(learner, requests: Sequence[AnswerRequest], widths: Sequence[int]):
    """What `models.beam.BeamBatch.join` takes for `requests`: their prompts and row adapters, one row a
    request (for the prefill), and the adapters again, request i's repeated `widths[i]` times (its beams)."""
    batch, adapters = prepare_rows(learner, list(requests))
    _, beam_adapters = prepare_rows(learner, [r for r, w in zip(requests, widths, strict=True) for _ in range(w)])
    return batch, adapters, beam_adapters


def answer_text(tokenizer, token_ids: list[int], request: AnswerRequest, *, raw: bool = False) -> str:
    """The answer read from a row's generated tokens (cut at the first newline, normalised)."""
    text = tokenizer.decode(token_ids, skip_special_tokens=True)
    return text if raw else normalize_answer_type(text, request.answer_type, request.choices)


def prepare_rows(learner, requests: list[AnswerRequest],
                 bank=None) -> tuple[dict[str, torch.Tensor], RowAdapters | None]:
    """Left-padded prompts, and row adapters for the rows that carry a gradient (deltas −γ_i α ⊙ g_i)
    or run the base model (`base`: listed in `adapters.off`).

    A row without a gradient (or with γ = 0) gets no adapter at all: it is not in `adapters.rows`,
    and the LoRA layers leave its output unadapted, bit for bit (no zero gradient is built for it).
    An adapted row's adapter is its own LoRA weights, W - γ_i α ⊙ g_i, folded once
    (`Learner.row_weights`); a `BatchDecoder` that the rows join keeps them in its slots. With `bank`,
    they are folded into that bank's free slots instead (`BatchDecoder.join_bank`: no copy on joining).
    """
    tok = learner.tokenizer
    prompts = [build_prompt(tok, r.question, r.answer_type, r.choices, r.context) for r in requests]
    batch = tok(prompts, add_special_tokens=False, padding=True, return_tensors="pt", padding_side="left")
    batch = {k: v.to(learner.device) for k, v in batch.items()}
    base_rows = [i for i, r in enumerate(requests) if r.base]
    off = torch.tensor(base_rows, dtype=torch.long, device=learner.device) if base_rows else None
    adapted = [i for i, r in enumerate(requests) if r.gradient is not None and r.gamma != 0]
    if not adapted:
        return batch, (RowAdapters.switched_off(off, len(requests)) if off is not None else None)
    adapters = learner.row_weights([requests[i].gradient for i in adapted], [requests[i].gamma for i in adapted],
                                   adapted, len(requests), off, bank=bank)
    return batch, adapters


@torch.no_grad()
def next_token_logits(learner, requests: list[AnswerRequest]) -> torch.Tensor:
    """The logits of each request's first answer token, (n, V), exactly as `generate_answers` computes
    them before its first greedy pick (same prompts, padding, attention and row adapters)."""
    batch, adapters = prepare_rows(learner, requests)
    with learner.using_rows(adapters):
        hidden = prefill(learner, batch)[0]
    return learner.model.get_base_model().get_output_embeddings()(hidden[:, -1]).float()
