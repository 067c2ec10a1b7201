"""How a request's passage gradients are combined before gamma: the plain sum, or weighted by retrieval score.

With k passages of scores s_1..s_k (s_max the highest),

    sum:      g = Σ_i g_i
    softmax:  g = Σ_i w_i g_i,   w = k · softmax(s / (s_max · T))

The scores are divided by the request's own top score, so one temperature T travels across corpora
and backends (a BM25 score's scale depends on the corpus and the query; the ratio to the top hit far
less). The weights sum to k, so the applied magnitude stays that of the plain sum: the learner's step
sizes are calibrated to a sum of about k gradients. As T grows the weights tend to 1 (the sum); as it
shrinks, to k on the top passage alone. Passages without a score (a caller's own), or a top score
that is not positive, are weighted equally (the sum).

    Composition.parse("softmax:0.1").weights([30.0, 12.0, 11.5])   # ≈ [3.0, 0.0, 0.0]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where it is used: the CLI and the HTTP schemas read this module
    import torch

__all__ = ["Composition", "COMPOSITION_KINDS", "DEFAULT_TEMPERATURE", "DEFAULT_COMPOSITION", "softmax_weights",
           "weighable"]

COMPOSITION_KINDS = ("sum", "softmax")
# The served default (chosen on dev splits only: docs/results.md, "Composition").
DEFAULT_TEMPERATURE = 0.4


@dataclass(frozen=True)
class Composition:
    """The combination of a request's passage gradients.

    Args:
        kind: `sum` (every passage weight 1) or `softmax` (weights from the retrieval scores).
        temperature: softmax temperature over the scores divided by the request's top score (> 0).
    """

    kind: str = "softmax"
    temperature: float = DEFAULT_TEMPERATURE

    def __post_init__(self) -> None:
        if self.kind not in COMPOSITION_KINDS:
            raise ValueError(f"composition must be one of {', '.join(COMPOSITION_KINDS)}, got {self.kind!r}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"composition temperature must be finite and > 0, got {self.temperature}")

    @classmethod
    def parse(cls, text: str) -> Composition:
        """`sum`, `softmax` (the default temperature) or `softmax:T`; ValueError in words otherwise."""
        kind, _, temperature = text.strip().partition(":")
        if not temperature:
            return cls(kind)
        try:
            value = float(temperature)
        except ValueError:
            raise ValueError(f"composition temperature must be a number, got {temperature!r} in {text!r}") from None
        return cls(kind, value)

    def __str__(self) -> str:
        return "sum" if self.kind == "sum" else f"softmax:{self.temperature:g}"

    def weights(self, scores: Sequence[float | None]) -> list[float]:
        """One weight per passage, in order; they sum to len(scores)."""
        if self.kind == "sum" or not weighable(scores):
            return [1.0] * len(scores)
        import torch

        return softmax_weights(torch.tensor(scores, dtype=torch.float64), self.temperature).tolist()


def weighable(scores: Sequence[float | None]) -> bool:
    """Whether the softmax applies: two or more finite scores, the top one positive; otherwise every
    passage weighs 1 (serving and the meta-training inner step alike)."""
    if len(scores) < 2 or any(s is None or not math.isfinite(s) for s in scores):
        return False
    return max(scores) > 0  # type: ignore[type-var]


def softmax_weights(scores: torch.Tensor, temperature: torch.Tensor | float) -> torch.Tensor:
    """k · softmax(s / (s_max · T)) over one request's k scores (s_max > 0); differentiable in T, so
    meta-training can learn the temperature with the rest of the inner step."""
    import torch

    return scores.numel() * torch.softmax(scores / (scores.max() * temperature), dim=0)


DEFAULT_COMPOSITION = Composition()
