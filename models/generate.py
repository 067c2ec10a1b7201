"""Prompts and batched generation.

Prompts use the tokenizer's chat template (never hand-written markup). The instruction depends
on the answer type (`short`, `yes_no`, `choice`) and on whether passages are in the prompt.
Generation is greedy for a whole batch at once; each row carries its own adaptation (or none).
The answer is read from the generated tokens only, cut at the first newline, then normalised.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import re
import string
from dataclasses import dataclass, field

import torch

__all__ = ["AnswerRequest", "build_prompt", "build_messages", "generate_answers", "normalize_answer_type",
           "ANSWER_TYPES", "LETTERS"]

ANSWER_TYPES = ("short", "yes_no", "choice")
LETTERS = string.ascii_uppercase[:5]

_INSTRUCTIONS = {
    "short": "Answer the question with a short phrase or a single word. Do not write a sentence.",
    "yes_no": "Answer the question with 'yes' or 'no' only.",
    "choice": "Answer with the letter of the correct option only.",
}


@dataclass
class AnswerRequest:
    """One question to answer. `gradient` is a summed flat gradient (D,) or None (no adaptation)."""

    question: str
    answer_type: str = "short"
    choices: list[str] | None = None
    context: list[tuple[str, str]] | None = None   # (title, text) passages shown in the prompt
    gradient: torch.Tensor | None = field(default=None, repr=False)
    gamma: float = 1.0


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
        if not choices or not 2 <= len(choices) <= len(LETTERS):
            raise ValueError(f"`choices` must hold 2..{len(LETTERS)} options for answer_type 'choice'")
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
def generate_answers(learner, requests: list[AnswerRequest], max_new_tokens: int = 20,
                     return_raw: bool = False) -> list[str]:
    """Greedy answers for a batch of requests in ONE generation; row i uses its own adaptation.

    Example:
        >>> generate_answers(learner, [AnswerRequest("What is the capital of France?")])
        ['Paris']
    """
    if not requests:
        return []
    tok = learner.tokenizer
    batch, deltas = _prepare(learner, requests)
    with learner.adapted_rows(deltas):
        token_ids = _greedy(learner, batch, max_new_tokens, _stop_token_ids(tok))
    texts = tok.batch_decode(token_ids, skip_special_tokens=True)
    if return_raw:
        return texts
    return [normalize_answer_type(t, r.answer_type, r.choices) for t, r in zip(texts, requests)]


def _prepare(learner, requests: list[AnswerRequest]) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """Left-padded prompts and the rows' deltas −γ_i α ⊙ g_i (None when no row is adapted)."""
    from models.adapt import row_deltas

    tok = learner.tokenizer
    prompts = [build_prompt(tok, r.question, r.answer_type, r.choices, r.context) for r in requests]
    batch = tok(prompts, add_special_tokens=False, padding=True, return_tensors="pt", padding_side="left")
    batch = {k: v.to(learner.device) for k, v in batch.items()}
    if not any(r.gradient is not None and r.gamma != 0 for r in requests):
        return batch, None
    dim = learner.layout.dim
    grads = torch.stack([
        r.gradient.to(learner.device, torch.float32) if r.gradient is not None
        else torch.zeros(dim, device=learner.device)
        for r in requests
    ])                                                                           # (n, D)
    gammas = torch.tensor([float(r.gamma) if r.gradient is not None else 0.0 for r in requests],
                          device=learner.device)                                 # (n,)
    return batch, row_deltas(grads, learner.step_size_vector().detach(), gammas)  # (n, D)


@torch.no_grad()
def next_token_logits(learner, requests: list[AnswerRequest]) -> torch.Tensor:
    """The logits of each request's first answer token, (n, V), exactly as `generate_answers` computes
    them before its first greedy pick (same prompts, padding, attention and per-row deltas)."""
    batch, deltas = _prepare(learner, requests)
    with learner.adapted_rows(deltas):
        hidden = _prefill(learner, batch)[0]
    return learner.model.get_base_model().get_output_embeddings()(hidden[:, -1]).float()


def _prefill(learner, batch: dict[str, torch.Tensor]):
    """The decoder over the left-padded prompts with a KV cache: (last hidden states, cache)."""
    decoder = learner.model.get_base_model().get_decoder()
    attention = batch["attention_mask"]
    positions = (attention.cumsum(-1) - 1).clamp(min=0)                  # (n, T)
    cache_kw = _cache_keyword(decoder)
    with _attention_implementation(learner.model.get_base_model(), "sdpa"):
        out = decoder(input_ids=batch["input_ids"], attention_mask=attention, position_ids=positions, use_cache=True)
    return out.last_hidden_state, getattr(out, cache_kw)


@functools.lru_cache(maxsize=8)
def _stop_token_ids(tok) -> frozenset[int]:
    """End-of-turn tokens and every token whose text holds a newline (computed once per tokenizer)."""
    stops = {tok.eos_token_id}
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    if isinstance(im_end, int) and im_end != tok.unk_token_id:
        stops.add(im_end)
    # Every token whose text holds a newline ends the answer (answers are one line).
    vocab_ids = range(len(tok))
    stops.update(i for i, text in zip(vocab_ids, tok.batch_decode([[i] for i in vocab_ids])) if "\n" in text)
    return frozenset(i for i in stops if i is not None)


def _greedy(learner, batch: dict[str, torch.Tensor], max_new_tokens: int, stop_ids: frozenset[int]) -> list[list[int]]:
    """Greedy decoding with a KV cache, where a row that has finished leaves the batch.

    Three things make this faster than HF `generate` for short answers, most of all on a CPU:
      * a row that has finished leaves the batch (HF keeps it until the longest answer ends);
      * the LM head runs on each row's last position only, as one 2-D matmul (the prompt's other
        positions never need logits; greedy argmax is unchanged by any final logit scaling);
      * attention is SDPA for the duration of the call (the learner loads with eager attention,
        which meta-training's gradient of a gradient needs; generation takes no gradient).
    """
    base = learner.model.get_base_model()
    decoder, head = base.get_decoder(), base.get_output_embeddings()
    attention = batch["attention_mask"]                                   # (n, T) left-padded
    cache_kw = _cache_keyword(decoder)
    with _attention_implementation(base, "sdpa"):
        hidden, cache = _prefill(learner, batch)
        next_token = head(hidden[:, -1]).argmax(-1)                        # (n,)
        active = torch.arange(next_token.shape[0], device=next_token.device)  # row of each live sequence
        stops = torch.tensor(sorted(stop_ids), device=next_token.device)
        generated: list[list[int]] = [[] for _ in range(next_token.shape[0])]
        for step in range(max_new_tokens):
            for row, token in zip(active.tolist(), next_token.tolist()):
                generated[row].append(token)
            finished = torch.isin(next_token, stops)
            if step == max_new_tokens - 1 or bool(finished.all()):
                break
            if bool(finished.any()):
                keep = (~finished).nonzero().squeeze(1)
                cache.batch_select_indices(keep)
                learner.keep_rows(keep)
                attention, active, next_token = attention[keep], active[keep], next_token[keep]
            attention = torch.cat([attention, attention.new_ones(attention.shape[0], 1)], dim=1)
            position = attention.sum(-1, keepdim=True) - 1                # (n_live, 1)
            out = decoder(input_ids=next_token[:, None], attention_mask=attention, position_ids=position,
                          use_cache=True, **{cache_kw: cache})
            next_token = head(out.last_hidden_state[:, -1]).argmax(-1)
    return generated


def _cache_keyword(decoder) -> str:
    """The KV cache's argument (and output) name: `cache` in recent transformers, `past_key_values` before."""
    return _cache_keyword_of(type(decoder))


@functools.lru_cache(maxsize=8)
def _cache_keyword_of(decoder_class: type) -> str:
    """Read once per decoder class, not on every request."""
    return "cache" if "cache" in inspect.signature(decoder_class.forward).parameters else "past_key_values"


@contextlib.contextmanager
def _attention_implementation(model, name: str):
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
