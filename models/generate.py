"""Prompts and batched generation.

Prompts use the tokenizer's chat template (never hand-written markup). The instruction depends
on the answer type (`short`, `yes_no`, `choice`) and on whether passages are in the prompt.
Generation is greedy for a whole batch at once; each row carries its own adaptation (or none).
The answer is read from the generated tokens only, cut at the first newline, then normalised.
"""

from __future__ import annotations

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
    from models.adapt import row_deltas

    tok = learner.tokenizer
    prompts = [build_prompt(tok, r.question, r.answer_type, r.choices, r.context) for r in requests]
    batch = tok(prompts, add_special_tokens=False, padding=True, return_tensors="pt", padding_side="left")
    batch = {k: v.to(learner.device) for k, v in batch.items()}

    deltas = None
    if any(r.gradient is not None and r.gamma != 0 for r in requests):
        dim = learner.layout.dim
        grads = torch.stack([
            r.gradient.to(learner.device, torch.float32) if r.gradient is not None else torch.zeros(dim)
            for r in requests
        ]).to(learner.device)                                                    # (n, D)
        gammas = torch.tensor([float(r.gamma) if r.gradient is not None else 0.0 for r in requests],
                              device=learner.device)                             # (n,)
        deltas = row_deltas(grads, learner.step_size_vector().detach(), gammas)  # (n, D)

    stop_ids = [tok.eos_token_id]
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    if isinstance(im_end, int) and im_end != tok.unk_token_id and im_end not in stop_ids:
        stop_ids.append(im_end)
    with learner.adapted_rows(deltas):
        output = learner.model.generate(
            **batch, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
            temperature=None, top_p=None, top_k=None,
            eos_token_id=stop_ids, pad_token_id=tok.pad_token_id,
            stop_strings=["\n"], tokenizer=tok,
        )
    generated = output[:, batch["input_ids"].shape[1] :]                        # answer tokens only
    texts = tok.batch_decode(generated, skip_special_tokens=True)
    if return_raw:
        return texts
    return [normalize_answer_type(t, r.answer_type, r.choices) for t, r in zip(texts, requests)]
