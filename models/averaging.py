"""Averaging learners: the elementwise mean of several checkpoints of one preset, a uniform model soup.

LoRA A, LoRA B and the step sizes are each averaged (not the products B·A). Every checkpoint is checked as
loading one is (layout, fingerprint) and must share the first one's preset and base model. Soups of
independently meta-trained runs from the same initialisation answer better than either run
(docs/results.md); the result has a fingerprint of its own. `Learner.load_average` is the entry point.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from models.persistence import load_weights, require_same_preset, state_tensors

if TYPE_CHECKING:
    from torch import nn

__all__ = ["average_into"]


def average_into(learner: nn.Module, first: str | os.PathLike, others: Sequence[str | os.PathLike]) -> None:
    """Make `learner`, which holds the checkpoint `first`, the mean of it and `others`."""
    state = state_tensors(learner)
    total = {name: t.detach().clone() for name, t in state.items()}
    for directory in map(Path, others):
        require_same_preset(learner, directory, f"only learners of one preset and base model can be averaged "
                                                f"(the first is {first})")
        load_weights(learner, directory)
        for name, t in state.items():
            total[name] += t.detach()
    with torch.no_grad():
        for name, t in state.items():
            t.copy_(total[name] / (1 + len(others)))
