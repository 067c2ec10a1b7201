"""A passage's update kept out of the task adapter's own subspace (`LearnerConfig.doc_update = "orthogonal"`).

The learner's LoRA (A: r × d_in, B: d_out × r) is the *task* adapter: meta-training makes it answer
questions. A passage's update δA = −α ⊙ ∇_A, δB = −α ⊙ ∇_B changes the weight by B δA + δB A (first
order). Under `orthogonal`, every passage gradient is projected before it is stored or applied:

    ∇_A ← ∇_A (I − P_A)     its rows out of the span of A's rows (the inputs the task adapter reads)
    ∇_B ← (I − P_B) ∇_B     its columns out of the span of B's columns (the outputs it writes)

so a passage's weight change, B δA + δB A, never acts inside the task adapter's own block
(outputs in B's span from inputs in A's span): summed over k passages, the passages cannot pile
up more of the task behaviour there. This is the "hard" variant of orthogonal task/document
subspaces for parametric RAG (Orthogonal Subspace Decomposition, arXiv 2604.26768), applied to
ReGrad's one-step document updates rather than to separately trained document LoRAs.

The bases come from the learner's current weights (an SVD; directions with a singular value below
1e-6 of the largest are not a subspace, so an untrained B = 0 removes nothing) and are held constant
within a meta-training step (no gradient through the SVD), as the task LoRA is frozen while the
paper's document LoRAs train. The projection is linear, so a sum of projected gradients is the
projection of the sum, and a store of projected rows serves weighted sums unchanged.
"""

from __future__ import annotations

import torch

__all__ = ["task_bases", "project_tensor", "project_flat"]

_RANK_TOL = 1e-6


def _basis(matrix: torch.Tensor) -> torch.Tensor:
    """Orthonormal columns spanning `matrix`'s column space, (rows, rank) float32."""
    u, s, _ = torch.linalg.svd(matrix.detach().float(), full_matrices=False)
    if s.numel() == 0 or float(s[0]) == 0.0:
        return u[:, :0]
    return u[:, s > s[0] * _RANK_TOL]


def task_bases(learner) -> dict[str, torch.Tensor]:
    """Per layout tensor, the orthonormal basis a passage gradient is projected away from: for
    `…lora_A` the span of A's rows (d_in, rank), for `…lora_B` the span of B's columns (d_out, rank)."""
    return {name: _basis(w.T if name.endswith("lora_A") else w) for name, w in learner.lora_tensors().items()}


def project_tensor(name: str, grad: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """`grad` (..., *shape of tensor `name`) with its component in `basis`'s span removed (out of place,
    differentiable w.r.t. `grad`)."""
    q = basis.to(grad.device, grad.dtype)
    if name.endswith("lora_A"):                     # (..., r, d_in): rows out of A's row space
        return grad - (grad @ q) @ q.T
    return grad - q @ (q.T @ grad)                  # (..., d_out, r): columns out of B's column space


def project_flat(learner, flat: torch.Tensor) -> torch.Tensor:
    """Flat gradients (..., D) projected tensor by tensor, in place; returns `flat`."""
    bases = task_bases(learner)
    with torch.no_grad():
        for name, view in learner.layout.split(flat).items():
            view.copy_(project_tensor(name, view, bases[name]))
    return flat
