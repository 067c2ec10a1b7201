"""The meta-learning objective, for one task or a whole meta-batch at once.

For each task t (a question, its answer and its k passages):

    G_t    = Σ_i w_i ∇θ NTP(passage_i; θ)          inner gradient (create_graph for second order)
    δ_t    = −α ⊙ G_t                              learnable per-tensor step sizes α
    loss_t = CE(answer tokens | prompt; θ + δ_t)    outer loss, blind or with passages in the prompt

Under `doc_update = "orthogonal"` each G_t is projected out of θ's own subspace before α
(`models/doc_subspace.py`; the bases held constant within the step), as encoding and serving do.

The weights w are the serving composition's (`engine.composition`): all 1 for the plain sum,
k · softmax(s / (s_max · T)) over the task's retrieval scores, or k · softmax(ℓ / T) over the base
model's likelihood of the question given each passage, with T fixed or learned with θ and α
(`task_weights`), so the learner is trained on the combination it is served with.

`task_deltas` + `outer_losses` do a whole meta-batch in two batched forwards: every passage of
every task is one row with its own zero delta (∂L_i/∂dθ_i at 0 = ∇θ L_i, identically in θ, so
the second-order terms are right), and every task's prompt is one row adapted by its own δ_t
(`Learner.adapted_rows`, the path serving uses); that pays on a GPU. `inner_delta` + `outer_loss`
are the same objective one task at a time, faster on a CPU, where padding short passages to the
longest costs more than batching saves (bench/train_bench.py).
The LM head runs on target positions only (a prompt's other positions never need logits).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.composition import likelihood_weights, softmax_weights, weighable
from models import build_prompt, format_passage
from models.decoding import TURN_END, end_of_turn_id
from models.doc_subspace import project_tensor, task_bases
from models.gradients import _pad_right, _passage_ids, passage_losses, tokenize_passages
from offline_tools.datasets.augmented import AugmentedRecord

__all__ = [
    "task_passages", "task_weights", "task_likelihoods", "answer_target", "prompt_and_target", "inner_delta",
    "outer_loss", "task_deltas", "outer_losses", "answer_logits",
]


def _kept_passages(record: AugmentedRecord, top_k: int) -> list:
    return [p for p in record.passages[:top_k] if format_passage(p.title, p.text).strip()]


def _kept(record: AugmentedRecord, top_k: int) -> list[tuple[str, float]]:
    return [(format_passage(p.title, p.text), p.score) for p in _kept_passages(record, top_k)]


def task_passages(record: AugmentedRecord, top_k: int) -> list[str]:
    """The k passages of a task in the one canonical format; empty passages are skipped."""
    return [text for text, _ in _kept(record, top_k)]


def task_weights(record: AugmentedRecord, top_k: int, temperature: torch.Tensor | float | None,
                 likelihoods: list[float] | None = None, total: float | None = None) -> torch.Tensor | None:
    """The weights of `task_passages` (P,) at `temperature`, as served: the softmax composition over
    the retrieval scores, or, given `likelihoods` (`task_likelihoods`), the likelihood composition
    k · softmax(ℓ / T); with `total`, rescaled to sum to it (a lone passage weighs `total`). None for
    the plain sum (no temperature, or fewer than two passages or no positive score under the softmax,
    and no `total`)."""
    device = temperature.device if isinstance(temperature, torch.Tensor) else None
    if temperature is None:
        return None
    if likelihoods is not None and len(likelihoods) >= 2:
        weights = likelihood_weights(torch.tensor(likelihoods, device=device), temperature)
    elif likelihoods is None and weighable(scores := [score for _, score in _kept(record, top_k)]):
        weights = softmax_weights(torch.tensor(scores, device=device), temperature)
    else:
        weights = None
    if total is None:
        return weights
    count = len(task_passages(record, top_k))
    if count == 0:
        return None
    if weights is None:
        return torch.full((count,), float(total) / count, device=device)
    return weights * (float(total) / count)


def task_likelihoods(learner, records: list[AugmentedRecord], top_k: int) -> list[list[float]]:
    """ℓ(question | passage) for each of `task_passages` of every record (`models.relevance`: the base
    model's, the LoRA off, no gradient), for the likelihood composition."""
    from models.relevance import question_likelihoods

    return question_likelihoods(learner, [(r.question, _kept_passages(r, top_k)) for r in records])


def answer_target(record: AugmentedRecord) -> str:
    return record.answers[0]


def _context(record: AugmentedRecord, top_k: int, blind: bool) -> list[tuple[str, str]] | None:
    return None if blind else [(p.title, p.text) for p in record.passages[:top_k]]


def prompt_and_target(learner, record: AugmentedRecord, blind: bool, top_k: int,
                      end_token: str = TURN_END) -> tuple[list[int], list[int]]:
    """Token ids of the chat prompt (ending where the answer starts) and of answer + `end_token`."""
    tok = learner.tokenizer
    prompt = build_prompt(tok, record.question, record.answer_type, record.choices, _context(record, top_k, blind))
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    target_ids = tok(answer_target(record), add_special_tokens=False)["input_ids"] + [end_of_turn_id(tok, end_token)]
    return prompt_ids, target_ids


# ---------------------------------------------------------------- one task at a time
def inner_delta(learner, passages: list[str], create_graph: bool,
                weights: torch.Tensor | None = None) -> torch.Tensor | None:
    """−α ⊙ Σ_i w_i ∇NTP(passage_i), flat (1, D) (w = 1 when `weights` is None); differentiable
    w.r.t. θ, α and the weights when create_graph."""
    if not passages:
        return None
    named = learner.lora_tensors()
    params = list(named.values())
    losses = passage_losses(learner, tokenize_passages(learner, passages))
    total = losses.sum() if weights is None else (losses * weights.to(losses.dtype)).sum()
    grads = torch.autograd.grad(total, params, create_graph=create_graph, allow_unused=True)
    grads = [g if g is not None else torch.zeros_like(p) for g, p in zip(grads, params)]
    bases = _bases(learner)
    if bases is not None:
        grads = [project_tensor(name, g, bases[name]) for name, g in zip(named, grads)]
    flat = torch.cat([g.reshape(-1) for g in grads])
    return (-learner.step_size_vector() * flat)[None]


def _bases(learner) -> dict[str, torch.Tensor] | None:
    """The task subspaces a passage gradient is projected away from, or None (`doc_update = "shared"`)."""
    return task_bases(learner) if learner.config.doc_update == "orthogonal" else None


def outer_loss(
    learner, record: AugmentedRecord, deltas: torch.Tensor | None, blind: bool, top_k: int,
    end_token: str = TURN_END,
) -> torch.Tensor:
    """CE over the answer tokens (answer + end-of-turn) of one task's prompt, with row deltas applied."""
    return outer_losses(learner, [record], deltas, blind, top_k, end_token)[0]


# ---------------------------------------------------------------- a meta-batch at once
def task_deltas(learner, tasks: list[list[str]], create_graph: bool,
                weights: list[torch.Tensor | None] | None = None) -> dict[str, torch.Tensor]:
    """δ_t = −α ⊙ G_t for every task, per layout tensor {name: (T, *shape)}, from one batched
    forward/backward over all passages. A task without passages gets δ_t = 0; `weights[t]` weights
    task t's passage gradients (None: all 1).

    Per tensor, not one flat (T, D) vector: backward through 60 slices of a flat vector zero-fills a
    full (T, D) tensor per slice, which was ~40% of a second-order step on a CPU.
    """
    layout = learner.layout
    owners = [t for t, passages in enumerate(tasks) for _ in passages]
    texts = [p for passages in tasks for p in passages]
    if not texts:
        return {e.name: torch.zeros(len(tasks), *e.shape, device=learner.device) for e in layout.entries}
    batch = _pad_right(learner, _passage_ids(learner, texts))
    zeros = {e.name: torch.zeros(len(texts), *e.shape, device=learner.device, requires_grad=True)
             for e in layout.entries}
    with learner.adapted_rows(zeros):
        losses = passage_losses(learner, batch)
    grads = torch.autograd.grad(losses.sum(), list(zeros.values()), create_graph=create_graph)
    index = torch.tensor(owners, device=learner.device)
    per_passage = None
    if weights is not None and any(w is not None for w in weights):
        per_passage = torch.cat([w.to(learner.device) if w is not None else torch.ones(len(p), device=learner.device)
                                 for w, p in zip(weights, tasks)])                  # (P,)
    alphas = learner.step_size_tensors()
    bases = _bases(learner)
    deltas = {}
    for (name, leaf), grad in zip(zeros.items(), grads):                           # grad: (P, *shape)
        if bases is not None:
            grad = project_tensor(name, grad, bases[name])
        if per_passage is not None:
            grad = grad * per_passage.to(grad.dtype).view(-1, *([1] * (grad.dim() - 1)))
        summed = torch.zeros(len(tasks), *leaf.shape[1:], device=grad.device, dtype=grad.dtype)
        summed = summed.index_add(0, index, grad)
        deltas[name] = -alphas[name] * summed                                        # (T, *shape)
    return deltas


def answer_logits(
    learner, records: list[AugmentedRecord], deltas: torch.Tensor | dict[str, torch.Tensor] | None,
    blind: bool, top_k: int, end_token: str = TURN_END,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
    """The logits that predict each task's answer tokens, in one right-padded forward; row t uses δ_t.

    Returns (logits (N, V), their targets (N,), the task of each (N,), answer lengths per task).
    The first row of task t is the logit of its first answer token, the one generation picks first.
    """
    pairs = [prompt_and_target(learner, r, blind, top_k, end_token) for r in records]
    batch = _pad_right(learner, [p + t for p, t in pairs])
    causal_lm = learner.model.get_base_model()
    with learner.adapted_rows(deltas):
        hidden = causal_lm.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    # Position j predicts token j + 1: the answer's tokens are predicted from the n positions before them.
    where = [(t, len(p) - 1 + j) for t, (p, target) in enumerate(pairs) for j in range(len(target))]
    row_idx = torch.tensor([t for t, _ in where], device=hidden.device)
    pos_idx = torch.tensor([j for _, j in where], device=hidden.device)
    logits = causal_lm.lm_head(hidden[row_idx, pos_idx])                                  # (N, V)
    return logits, batch["input_ids"][row_idx, pos_idx + 1], row_idx, [len(t) for _, t in pairs]


def outer_losses(
    learner, records: list[AugmentedRecord], deltas: torch.Tensor | dict[str, torch.Tensor] | None,
    blind: bool, top_k: int, end_token: str = TURN_END,
) -> torch.Tensor:
    """Each task's mean CE over its answer tokens, (T,), in one right-padded forward; row t uses δ_t."""
    logits, targets, task_of, lengths = answer_logits(learner, records, deltas, blind, top_k, end_token)
    token_loss = F.cross_entropy(logits.float(), targets, reduction="none")
    total = torch.zeros(len(records), device=token_loss.device, dtype=token_loss.dtype)
    total = total.index_add(0, task_of, token_loss)
    return total / torch.tensor(lengths, device=total.device, dtype=total.dtype)
