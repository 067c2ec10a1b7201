"""How a request's passage gradients are combined before gamma: the plain sum, or weighted by relevance.

With k passages of retrieval scores s_1..s_k (s_max the highest),

    sum:         g = Σ_i g_i
    softmax:     g = Σ_i w_i g_i,   w = k · softmax(s / (s_max · T))
    likelihood:  g = Σ_i w_i g_i,   w = k · softmax(ℓ / T)

where ℓ_i is the base model's mean log-probability of the question's tokens given passage i
(`models.relevance`: how well the passage explains the question, UPR). BM25 matches words: for
"What is the birth year of X?" it may rank "X is a ferry captain" above "X was born in 1931", and
then weighs the fact asked for down. ℓ reads the meaning, scores a caller's own passages too, and
is a log-probability, the same scale on every corpus and backend; it costs one batched forward of
the base model over the k passages and the question (docs/benchmarks.md).

The scores are divided by the request's own top score, so one temperature T travels across corpora
and backends (a BM25 score's scale depends on the corpus and the query; the ratio to the top hit far
less). The weights sum to k, so the applied magnitude stays that of the plain sum: the learner's step
sizes are calibrated to a sum of about k gradients. `KIND:T:M` makes them sum to M at every k
instead (`softmax` and `likelihood`): a learner trained at k = 3 then takes the step it was trained to
take whatever k a request asks for (a lone passage weighs M, not 1; docs/results.md, rule 22a).
As T grows the weights tend to 1 (the sum); as it shrinks, to k (or M) on the top passage alone.
Under `softmax`, passages without a score (a caller's own), or a top score that is not positive,
are weighted equally (the sum).

    Composition.parse("softmax:0.1").weights([30.0, 12.0, 11.5])       # ≈ [3.0, 0.0, 0.0]
    Composition.parse("likelihood:0.5").weights([-1.1, -1.3, -2.6])    # ≈ [1.74, 1.17, 0.09]
    Composition.parse("likelihood:0.2:3").weights([-1.0])              # [3.0]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where it is used: the CLI and the HTTP schemas read this module
    import torch

__all__ = ["Composition", "COMPOSITION_KINDS", "DEFAULT_TEMPERATURE", "DEFAULT_TEMPERATURES", "DEFAULT_COMPOSITION",
           "likelihood_weights", "softmax_weights", "weighable"]

COMPOSITION_KINDS = ("sum", "softmax", "likelihood")
# Each kind's temperature when a spec names none (chosen on dev splits only: docs/results.md, "Composition";
# likelihood: rule 10, "Relevance from the base model").
DEFAULT_TEMPERATURES = {"sum": 1.0, "softmax": 0.4, "likelihood": 0.2}
DEFAULT_TEMPERATURE = DEFAULT_TEMPERATURES["softmax"]


@dataclass(frozen=True)
class Composition:
    """The combination of a request's passage gradients.

    Args:
        kind: `sum` (every passage weight 1), `softmax` (weights from the retrieval scores) or
            `likelihood` (weights from the base model's likelihood of the question given each passage).
        temperature: the softmax's temperature (> 0); None: the kind's default (`DEFAULT_TEMPERATURES`).
        total: what the weights sum to (> 0; `softmax` and `likelihood`); None: the number of passages.
    """

    kind: str = "softmax"
    temperature: float = None  # type: ignore[assignment]  # set from the kind when None
    total: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in COMPOSITION_KINDS:
            raise ValueError(f"composition must be one of {', '.join(COMPOSITION_KINDS)}, got {self.kind!r}")
        if self.temperature is None:
            object.__setattr__(self, "temperature", DEFAULT_TEMPERATURES[self.kind])
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"composition temperature must be finite and > 0, got {self.temperature}")
        if self.total is not None:
            if self.kind == "sum":
                raise ValueError("the plain sum has no weights' total to set; use softmax:T:M or likelihood:T:M")
            if not (math.isfinite(self.total) and self.total > 0):
                raise ValueError(f"composition total must be finite and > 0, got {self.total}")

    @classmethod
    def parse(cls, text: str) -> Composition:
        """`sum`, `softmax` or `likelihood` (the kind's default temperature), `softmax:T` / `likelihood:T`,
        or `softmax:T:M` / `likelihood:T:M` (weights summing to M); ValueError in words otherwise."""
        kind, _, rest = text.strip().partition(":")
        if not rest:
            return cls(kind)
        temperature, _, total = rest.partition(":")
        return cls(kind, _number(temperature, "temperature", text), _number(total, "total", text) if total else None)

    def __str__(self) -> str:
        if self.kind == "sum":
            return "sum"
        return f"{self.kind}:{self.temperature:g}" + ("" if self.total is None else f":{self.total:g}")

    @property
    def needs_likelihood(self) -> bool:
        """The weights read the question's likelihood given each passage, not the retrieval scores."""
        return self.kind == "likelihood"

    def weights(self, scores: Sequence[float | None]) -> list[float]:
        """One weight per passage, in order; they sum to len(scores), or to `total` when set. `scores`: the
        retrieval scores (`softmax`) or the question's log-likelihoods given each passage (`likelihood`)."""
        import torch

        if self.kind == "likelihood" and len(scores) > 1 and all(s is not None and math.isfinite(s) for s in scores):
            weights = likelihood_weights(torch.tensor(scores, dtype=torch.float64), self.temperature).tolist()
        elif self.kind != "softmax" or not weighable(scores):
            weights = [1.0] * len(scores)
        else:
            weights = softmax_weights(torch.tensor(scores, dtype=torch.float64), self.temperature).tolist()
        if self.total is None or not scores:
            return weights
        return [w * self.total / len(scores) for w in weights]


def _number(text: str, what: str, spec: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"composition {what} must be a number, got {text!r} in {spec!r}") from None


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


def likelihood_weights(likelihoods: torch.Tensor, temperature: torch.Tensor | float) -> torch.Tensor:
    """k · softmax(ℓ / T) over one request's k log-likelihoods: no per-request rescaling (a
    log-probability has one scale everywhere); differentiable in T, as `softmax_weights`."""
    import torch

    return likelihoods.numel() * torch.softmax(likelihoods / temperature, dim=0)


DEFAULT_COMPOSITION = Composition()
