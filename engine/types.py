"""What goes into and comes out of the engine: plain dataclasses, no HTTP.

The service validates user input at its edge (pydantic schemas: 422s naming the field) and hands
the engine these; `Question` still refuses what the engine cannot run (ValueError), so a caller
without the web stack (in-process evaluation) gets the same refusal, in words.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from engine.composition import Composition
from engine.modes import mode_spec
from models.vocab import ANSWER_TYPES

__all__ = ["Question", "GivenPassage", "PassageHit", "StageTimings", "Answer", "Document", "DocumentsResult",
           "GradientSource", "MAX_GIVEN_PASSAGES", "MAX_STOP_BIAS", "MAX_BEAMS", "check_beams"]

# Where a passage's gradient came from; None when the mode uses no gradients (rag). `cached`: computed
# for an earlier question and kept in memory (`engine.gradient_cache`).
GradientSource = Literal["stored", "computed", "cached", "missing"]
MAX_GIVEN_PASSAGES = 20
MAX_BEAMS = 8   # beam search's widest (each beam folds its own copy of the row's adapter)


def check_beams(width: int, label: str = "beams") -> int:
    """`width` if it is a beam width this project serves (1..MAX_BEAMS), else ValueError("{label} {width}: ...");
    the one check behind a Question's, the engine's, `regrad export --beams` and a recipe's `beams = W`."""
    if not 1 <= width <= MAX_BEAMS:
        raise ValueError(f"{label} {width}: must be in 1..{MAX_BEAMS}")
    return width


MAX_STOP_BIAS = 20.0   # in logits: far past any useful bias (rule 25 read 1-4); 20 ends most answers at once


@dataclass(frozen=True)
class GivenPassage:
    """A passage the caller hands in with its question, used instead of retrieval.

    Its gradient is looked up and cached under its content hash (`retrieval.passage.passage_id`), not
    under `id`, which is only echoed back (callers' ids need not be unique across callers).
    """

    text: str
    title: str = ""
    id: str | None = None
    score: float | None = None


@dataclass(frozen=True)
class Question:
    """One question for the engine.

    Args:
        question: the question text.
        mode: a key of `engine.MODES`.
        top_k: passages to retrieve (retrieval modes).
        gamma: scale of the applied gradient sum (gradient modes).
        answer_type: `short`, `yes_no` or `choice` (then `choices` holds the options).
        max_new_tokens: generation length limit.
        retrieval_query: retrieve for this text instead of the question (the shift control).
        composition: how the passages' gradients are combined (gradient modes); None = the engine's default.
        stop_bias: added to the end-of-answer tokens' logits after the answer's first token (> 0 ends
            answers sooner, where ending was nearly as likely as going on); None = the engine's default.
        beams: 1 = greedy decoding; B > 1 = beam search keeping B answers, the one with the highest summed
            log-probability returned (`models.beam`; no stop bias then); None = the engine's default.
        passages: the caller's passages, used instead of retrieval by the modes that retrieve (top_k
            is then ignored); at most `MAX_GIVEN_PASSAGES`.
        write_back: store the gradients computed for `passages` (else they are only cached in memory).
    """

    question: str
    mode: str = "regrad"
    top_k: int = 3
    gamma: float = 1.0
    answer_type: str = "short"
    choices: tuple[str, ...] | None = None
    max_new_tokens: int = 20
    retrieval_query: str | None = None
    composition: Composition | None = None
    stop_bias: float | None = None
    beams: int | None = None
    passages: tuple[GivenPassage, ...] | None = None
    write_back: bool = False

    def __post_init__(self) -> None:
        mode_spec(self.mode)  # ValueError naming the known modes
        if not self.question.strip():
            raise ValueError("question is empty or whitespace only")
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if not (math.isfinite(self.gamma) and self.gamma >= 0):
            raise ValueError(f"gamma must be finite and >= 0, got {self.gamma}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.stop_bias is not None and not 0 <= self.stop_bias <= MAX_STOP_BIAS:   # NaN fails both
            raise ValueError(f"stop_bias must be in [0, {MAX_STOP_BIAS:g}], got {self.stop_bias}")
        if self.beams is not None:
            check_beams(self.beams)
        if (self.beams or 1) > 1 and self.stop_bias:
            raise ValueError("stop_bias applies to greedy decoding only: leave it out (or 0) with beams > 1")
        if self.answer_type not in ANSWER_TYPES:
            raise ValueError(f"answer_type must be one of {', '.join(ANSWER_TYPES)}, got {self.answer_type!r}")
        if (self.answer_type == "choice") != bool(self.choices):
            raise ValueError("choices are required for answer_type 'choice' and only then")
        if self.retrieval_query is not None and not self.retrieval_query.strip():
            raise ValueError("retrieval_query is empty or whitespace only")
        if self.passages is not None and not 1 <= len(self.passages) <= MAX_GIVEN_PASSAGES:
            raise ValueError(f"passages must hold 1..{MAX_GIVEN_PASSAGES} passages, got {len(self.passages)}")


@dataclass(frozen=True)
class PassageHit:
    """A retrieved passage, where its gradient came from and its weight in the combination (both
    None when the mode applies no gradients)."""

    id: str
    title: str
    score: float
    gradient: GradientSource | None = None
    weight: float | None = None


@dataclass(frozen=True)
class StageTimings:
    """Milliseconds per stage. `queue`: waiting for a batch (static) or a free row (continuous).
    Under static batching, batch-mates share the stage times."""

    queue: float = 0.0
    retrieve: float = 0.0
    gradients: float = 0.0
    generate: float = 0.0
    total: float = 0.0


@dataclass(frozen=True)
class Answer:
    """The engine's answer to one Question."""

    answer: str
    mode: str
    passages: list[PassageHit]
    timings_ms: StageTimings
    learner: str  # fingerprint of the learner that answered
    batch_size: int = 1
    composition: str | None = None  # the combination applied (gradient modes), e.g. "softmax:0.1"
    passage_texts: list[str] = field(default_factory=list, repr=False)  # of `passages`, in order


@dataclass(frozen=True)
class Document:
    """A passage to add at run time; without an id, one is derived from title and text."""

    text: str
    title: str = ""
    id: str | None = None


@dataclass(frozen=True)
class DocumentsResult:
    """What `Engine.add_documents` did; repeating the call adds nothing (idempotent per id)."""

    ids: list[str]
    added: int
    existing: int
    gradients_stored: int
    learner: str
    timings_ms: dict[str, float] = field(default_factory=dict)
