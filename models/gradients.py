"""Passage gradients: ∇ of a passage's next-token loss w.r.t. the LoRA tensors, as flat vectors.

One function formats a passage (`format_passage`), and one tokenises it (`tokenize_passages`),
for training, encoding and serving alike, so the stored gradients are exactly the ones the
learner was meta-trained to use (the reference used different text and lengths in each).

Each passage's loss is the mean cross-entropy over its own tokens; the per-passage losses are
*summed* over a batch. Hence Σ_i ∇L_i = ∇ Σ_i L_i: `summed_gradient` is one backward.
Per-passage gradients also come from one batched backward: row i gets its own zero delta dθ_i
(`Learner.adapted_rows`), and ∂(Σ_j L_j)/∂dθ_i = ∇L_i.

A learner with `doc_update = "orthogonal"` gets its gradients projected out of the task LoRA's own
subspace here (`models/doc_subspace.py`), so every store, sum and served update holds the projected ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from models.doc_subspace import project_flat

__all__ = ["format_passage", "tokenize_passages", "passage_token_counts", "passage_losses", "passage_gradients",
           "summed_gradient"]


def format_passage(title: str, text: str) -> str:
    """The one canonical, rank-independent passage text: title line, then body ("" if no body)."""
    title, text = (title or "").strip(), (text or "").strip()
    if not text:
        return ""  # nothing to learn; "" passages gave NaN gradients in the authors' research code
    return f"{title}\n{text}" if title else text


def _passage_ids(learner, passages: list[str]) -> list[list[int]]:
    """Token ids of each passage, truncated to the preset's `max_passage_tokens` (no special tokens)."""
    return learner.tokenizer(list(passages), add_special_tokens=False, truncation=True,
                             max_length=learner.config.max_passage_tokens)["input_ids"]


def passage_token_counts(learner, passages: Sequence[str]) -> list[int]:
    """How many tokens of each passage a gradient reads (truncated to `max_passage_tokens`)."""
    return [len(ids) for ids in _passage_ids(learner, list(passages))] if passages else []


def _pad_right(learner, ids: list[list[int]]) -> dict[str, torch.Tensor]:
    batch = learner.tokenizer.pad({"input_ids": ids}, padding=True, return_tensors="pt", padding_side="right")
    return {k: v.to(learner.device) for k, v in batch.items()}


def tokenize_passages(learner, passages: list[str]) -> dict[str, torch.Tensor]:
    """Right-padded ids truncated to the preset's `max_passage_tokens` (no special tokens)."""
    return _pad_right(learner, _passage_ids(learner, passages))


def passage_losses(learner, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-passage mean next-token loss, (n,). A passage with < 2 tokens has loss 0 (no NaN).

    The LM head (576 x 49k for SmolLM2) runs only on real, non-padding positions: padding would
    otherwise cost as much as text, twice over in the meta-training double backward.
    """
    causal_lm = learner.model.get_base_model()
    hidden = causal_lm.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    valid = batch["attention_mask"][:, 1:].bool()                           # (n, T-1) positions with a target
    logits = causal_lm.lm_head(hidden[:, :-1][valid])                       # (N_valid, V)
    token_loss = F.cross_entropy(logits.float(), batch["input_ids"][:, 1:][valid], reduction="none")  # (N_valid,)
    rows = torch.arange(valid.shape[0], device=valid.device)[:, None].expand_as(valid)[valid]        # (N_valid,)
    total = torch.zeros(valid.shape[0], device=token_loss.device, dtype=token_loss.dtype).index_add(0, rows, token_loss)
    return total / valid.sum(dim=1).clamp(min=1).to(total.dtype)


def summed_gradient(learner, passages: list[str]) -> torch.Tensor:
    """Σ_i ∇L_i over `passages` in one batched forward/backward, flat (D,) float32 on CPU."""
    if not passages:
        return torch.zeros(learner.layout.dim)
    params = list(learner.lora_tensors().values())
    with torch.enable_grad():
        loss = passage_losses(learner, tokenize_passages(learner, passages)).sum()
        grads = torch.autograd.grad(loss, params, allow_unused=True)
    flat = [
        (g if g is not None else torch.zeros_like(p)).reshape(-1)
        for g, p in zip(grads, params)
    ]
    return _as_learned(learner, torch.cat(flat).float().cpu())


def _as_learned(learner, flat: torch.Tensor) -> torch.Tensor:
    """Gradients (..., D) as this learner applies them: projected under `doc_update = "orthogonal"`."""
    return project_flat(learner, flat) if learner.config.doc_update == "orthogonal" else flat


def passage_gradients(learner, passages: list[str], batch_size: int = 8) -> torch.Tensor:
    """Per-passage gradients (N, D) float32 on CPU, `batch_size` passages per backward.

    Passages are batched in order of length, so a batch pads little (padding is pure waste on a
    CPU); the rows come back in the order given.
    """
    out = torch.empty(len(passages), learner.layout.dim)
    if not passages:
        return out
    ids = _passage_ids(learner, passages)                      # tokenised once, batched by length
    order = sorted(range(len(passages)), key=lambda i: len(ids[i]))
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = _pad_right(learner, [ids[i] for i in rows])
        deltas = torch.zeros(len(rows), learner.layout.dim, device=learner.device, requires_grad=True)
        with torch.enable_grad(), learner.adapted_rows(deltas):
            loss = passage_losses(learner, batch).sum()
            (grad,) = torch.autograd.grad(loss, deltas)
        out[rows] = grad.float().cpu()
    return _as_learned(learner, out)
