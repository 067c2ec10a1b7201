"""Request and response bodies of the HTTP API (pydantic; unknown fields are refused with 422).

Each body maps onto the engine's dataclasses (`to_question`, `from_answer`, ...); the modes are the
engine's table (`engine.MODES`), not a list of this module's own.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from engine.composition import COMPOSITION_KINDS, DEFAULT_TEMPERATURES, Composition
from engine.modes import MODE_NAMES, MODES
from engine.types import (
    MAX_BEAMS,
    MAX_GIVEN_PASSAGES,
    MAX_STOP_BIAS,
    Answer,
    Document,
    DocumentsResult,
    GivenPassage,
    GradientSource,
    Question,
)
from models.vocab import MAX_CHOICES, MIN_CHOICES, AnswerType

__all__ = [
    "Mode",
    "AnswerType",
    "GradientSource",
    "MAX_TOP_K",
    "MAX_GAMMA",
    "MIN_CHOICES",
    "MAX_CHOICES",
    "CompositionIn",
    "AnswerRequest",
    "PassageIn",
    "MAX_GIVEN_PASSAGES",
    "PassageOut",
    "Timings",
    "AnswerResponse",
    "DocumentIn",
    "DocumentsRequest",
    "DocumentsResponse",
    "ErrorResponse",
]

Mode = Literal[MODE_NAMES]  # type: ignore[valid-type]  # the engine's table, read at import
_MODE_HELP = "; ".join(f"{name}: {spec.description}" for name, spec in MODES.items())
MAX_TOP_K = 20
MAX_GAMMA = 100.0  # far past any useful step (the shipped learner is tuned at 1); 1e30 gave empty answers
# Hard ceilings of the schema; the configured, usually lower, limits are checked by the routes.
QUESTION_CHARS_CEILING = 20_000
MAX_NEW_TOKENS_CEILING = 256
_NOT_BLANK = r"\S"  # JSON-schema patterns search: "contains a non-whitespace character"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CompositionIn(_Strict):
    """How the passages' gradients are combined (gradient modes). Also accepted as a string:
    `"sum"`, `"softmax"`, `"softmax:0.1"`, `"likelihood"`, `"likelihood:0.2"` or `"likelihood:0.2:3"`
    (weights summing to 3)."""

    kind: Literal[COMPOSITION_KINDS] = Field(  # type: ignore[valid-type]
        ..., description="sum: every passage weight 1; softmax: weights from the retrieval scores; likelihood: "
        "weights from the base model's likelihood of the question given each passage"
    )
    temperature: float | None = Field(
        None, gt=0, le=1000, allow_inf_nan=False,
        description="the softmax's temperature: over the retrieval scores divided by the request's top score "
        f"(softmax, default {DEFAULT_TEMPERATURES['softmax']:g}), or over the log-likelihoods (likelihood, default "
        f"{DEFAULT_TEMPERATURES['likelihood']:g})",
    )

    total: float | None = Field(
        None, gt=0, le=MAX_TOP_K, allow_inf_nan=False,
        description="what the weights sum to (softmax and likelihood), e.g. 3 for a learner trained at k = 3 "
        "whatever top_k the request asks for; default: the number of passages (the plain sum's magnitude)",
    )

    @model_validator(mode="after")
    def _total_needs_weights(self) -> CompositionIn:
        if self.total is not None and self.kind == "sum":
            raise ValueError("total: the plain sum has no weights' total to set; use softmax or likelihood")
        return self

    def to_composition(self) -> Composition:
        return Composition(self.kind, self.temperature, self.total)


# --- passages in and out, streaming (issue 25) -----------------------------------------------------
# Kept apart from AnswerRequest's own fields (a base class) so that the two evolve without touching
# each other; `to_question` maps them onto the engine's Question.

PASSAGE_TITLE_CHARS = 1000
PASSAGE_TEXT_CHARS_CEILING = 20_000  # the configured `max_document_chars` is checked by the route
PASSAGE_ID_CHARS = 256


class PassageIn(_Strict):
    """A passage the caller supplies instead of retrieval (its own retriever's hit)."""

    title: str = Field("", max_length=PASSAGE_TITLE_CHARS, description="passage title (may be empty)")
    text: str = Field(
        ..., min_length=1, max_length=PASSAGE_TEXT_CHARS_CEILING, description="passage text; not blank",
        json_schema_extra={"pattern": _NOT_BLANK},
    )
    id: str | None = Field(
        None, min_length=1, max_length=PASSAGE_ID_CHARS,
        description="echoed back; default the content hash (under which its gradient is cached)",
    )
    score: float | None = Field(None, allow_inf_nan=False, description="echoed back (default 0)")

    @field_validator("text")
    @classmethod
    def _text_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("text is empty or whitespace only; send the passage text")
        return value

    def to_given(self) -> GivenPassage:
        return GivenPassage(text=self.text, title=self.title, id=self.id, score=self.score)


class _PassagesAndStreaming(_Strict):
    """POST /answer's fields for caller passages, passage text in the answer and streaming."""

    passages: list[PassageIn] | None = Field(
        None, min_length=1, max_length=MAX_GIVEN_PASSAGES,
        description=f"1..{MAX_GIVEN_PASSAGES} passages used instead of retrieval (top_k is then ignored); "
        "their gradients are computed on demand and cached in memory by content hash",
    )
    write_back: bool = Field(
        False, strict=True, description="store the computed gradients of `passages` in the gradient store"
    )
    include_text: bool = Field(False, strict=True, description="return each passage's text")
    stream: bool = Field(
        False, strict=True,
        description="server-sent events: `token` events as decoded, one `answer` event, then `data: [DONE]`",
    )


_NOT_FOR_ENGINE = {"include_text", "stream"}  # AnswerRequest fields the engine's Question does not take


class AnswerRequest(_PassagesAndStreaming):
    """One question for POST /answer."""

    question: str = Field(
        ...,
        min_length=1,
        max_length=QUESTION_CHARS_CEILING,
        description="the question; not blank",
        json_schema_extra={"pattern": _NOT_BLANK},  # documented; checked by `_not_blank` (clearer message)
    )
    # strict: `true` or "3" are mistakes, not 1 and 3.
    top_k: int = Field(3, ge=1, le=MAX_TOP_K, strict=True, description="passages to retrieve (1..20)")
    gamma: float = Field(
        1.0, ge=0.0, le=MAX_GAMMA, allow_inf_nan=False, strict=True,
        description=f"gradient step scale; 0 <= gamma <= {MAX_GAMMA:g}",
    )
    mode: Mode = Field("regrad", description=_MODE_HELP)
    answer_type: AnswerType = Field("short", description="short | yes_no | choice")
    choices: list[Annotated[str, Field(json_schema_extra={"pattern": _NOT_BLANK})]] | None = Field(
        None,
        description="2..5 options, required when answer_type is 'choice'",
        max_length=MAX_CHOICES,
        validate_default=True,
    )
    max_new_tokens: int = Field(
        20, ge=1, le=MAX_NEW_TOKENS_CEILING, strict=True, description="generation length limit"
    )
    retrieval_query: str | None = Field(
        None,
        min_length=1,
        max_length=QUESTION_CHARS_CEILING,
        description="retrieve passages for this text instead of the question (the evaluation's shift "
        "control sends another question here); not blank",
        json_schema_extra={"pattern": _NOT_BLANK},
    )
    composition: CompositionIn | None = Field(
        None,
        description="how the passages' gradients are combined: {kind: sum|softmax|likelihood, temperature, total}, "
        "or the string sum, softmax, softmax:T, softmax:T:M, likelihood, likelihood:T or likelihood:T:M (weights "
        "summing to M); default: the server's (REGRAD_COMPOSITION, else the learner's own)",
    )
    stop_bias: float | None = Field(
        None, ge=0.0, le=MAX_STOP_BIAS, allow_inf_nan=False, strict=True,
        description=f"added to the end-of-answer tokens' logits after the answer's first token (0 <= stop_bias <= "
        f"{MAX_STOP_BIAS:g}; larger ends answers sooner: '7' rather than '7 beehives'); default: the server's "
        "(REGRAD_STOP_BIAS, default 0)",
    )
    beams: int | None = Field(
        None, ge=1, le=MAX_BEAMS, strict=True,
        description=f"1 = greedy decoding; 2..{MAX_BEAMS} = beam search keeping that many answers and returning the "
        "likeliest whole answer (summed log-probability, its end included), where greedy can end a value a token "
        "early ('75' for '755'); not with a stop_bias above 0; default: the server's (REGRAD_BEAMS, default 1)",
    )

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"question": "Who wrote Hamlet?", "top_k": 3, "mode": "regrad"}],
            # choices: required (2..5) for answer_type "choice", absent or empty otherwise.
            "if": {"properties": {"answer_type": {"const": "choice"}}, "required": ["answer_type"]},
            "then": {
                "required": ["choices"],
                "properties": {"choices": {"type": "array", "minItems": MIN_CHOICES, "maxItems": MAX_CHOICES}},
            },
            "else": {"properties": {"choices": {"anyOf": [{"type": "null"}, {"type": "array", "maxItems": 0}]}}},
        },
    )

    @field_validator("beams")
    @classmethod
    def _beams_without_stop_bias(cls, value: int | None, info: ValidationInfo) -> int | None:
        if (value or 1) > 1 and info.data.get("stop_bias"):
            raise ValueError("beam search takes no stop_bias: send stop_bias 0 (or leave it out) with beams above 1")
        return value

    def to_question(self) -> Question:
        """The engine's view of this request."""
        return Question(**{
            **self.model_dump(exclude=_NOT_FOR_ENGINE | {"composition"}),
            "choices": tuple(self.choices) if self.choices else None,
            "passages": tuple(p.to_given() for p in self.passages) if self.passages else None,
            "composition": self.composition.to_composition() if self.composition else None,
        })

    @field_validator("composition", mode="before")
    @classmethod
    def _composition_shorthand(cls, value: object) -> object:
        # "softmax:0.1" is the CLI's spelling too (`regrad evaluate --composition`).
        if isinstance(value, str):
            kind, temperature, total = ([*value.strip().split(":", 2), "", ""])[:3]
            return {"kind": kind, **({"temperature": temperature} if temperature else {}),
                    **({"total": total} if total else {})}
        return value

    @field_validator("question")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("question is empty or whitespace only; send the question text")
        return value

    @field_validator("retrieval_query")
    @classmethod
    def _query_not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("retrieval_query is empty or whitespace only; send a query text or leave it out")
        return value

    @field_validator("choices")
    @classmethod
    def _choices_match_type(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        # A field validator (not a model validator) so the 422 points at `choices` itself.
        answer_type = info.data.get("answer_type", "short")
        n_choices = len(value or [])
        if value is not None and any(not choice.strip() for choice in value):
            raise ValueError("an option is empty or whitespace only; give each option's text")
        if answer_type == "choice" and not MIN_CHOICES <= n_choices <= MAX_CHOICES:
            raise ValueError(
                f"answer_type 'choice' needs {MIN_CHOICES}..{MAX_CHOICES} choices, got {n_choices}"
            )
        if answer_type != "choice" and n_choices:
            raise ValueError(
                f"{n_choices} choices given for answer_type {answer_type!r}; "
                "send answer_type 'choice' or drop choices"
            )
        return value


class PassageOut(_Strict):
    """A retrieved (or given) passage and where its gradient came from."""

    id: str
    title: str
    score: float
    gradient: GradientSource | None = Field(
        None, description="stored | computed | cached | missing; null when the mode uses no gradients"
    )
    weight: float | None = Field(
        None, description="this passage's weight in the combined gradient; null when the mode uses no gradients"
    )
    text: str | None = Field(None, description="the passage text; only with `include_text: true`")


class Timings(_Strict):
    """Milliseconds per stage; stages run per batch, so batch-mates share them."""

    queue: float = 0.0
    retrieve: float = 0.0
    gradients: float = 0.0
    generate: float = 0.0
    total: float = 0.0


class AnswerResponse(_Strict):
    """The answer to one AnswerRequest."""

    answer: str
    mode: Mode
    passages: list[PassageOut]
    timings_ms: Timings
    learner: str = Field(..., description="fingerprint of the learner that answered")
    batch_size: int = Field(1, description="requests generated together with this one")
    composition: str | None = Field(
        None, description="the combination applied (sum, softmax:T, likelihood:T, or either with :M, the weights' "
        "total); null when the mode uses no gradients"
    )

    @classmethod
    def from_answer(cls, answer: Answer) -> AnswerResponse:
        fields = asdict(answer)
        texts = fields.pop("passage_texts", None) or [None] * len(answer.passages)
        fields["passages"] = [{**p, "text": t} for p, t in zip(fields["passages"], texts, strict=True)]
        return cls.model_validate(fields)

    def to_json(self, include_text: bool = False) -> dict:
        """The JSON body; passages carry `text` only when asked."""
        exclude = None if include_text else {"passages": {"__all__": {"text"}}}
        return self.model_dump(mode="json", exclude=exclude)


class DocumentIn(_Strict):
    """A passage to add at run time; without an id, one is derived from title and text."""

    id: str | None = Field(
        None, min_length=1, max_length=256, description="passage id; default: a hash of title and text"
    )
    title: str = Field("", max_length=1000)
    text: str = Field(
        ..., min_length=1, description="passage text; not blank", json_schema_extra={"pattern": _NOT_BLANK}
    )

    def to_document(self) -> Document:
        return Document(text=self.text, title=self.title, id=self.id)

    @field_validator("text")
    @classmethod
    def _text_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("text is empty or whitespace only; send the passage text")
        return value

    @field_validator("id")
    @classmethod
    def _id_not_blank(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or value != value.strip()):
            raise ValueError("id must be non-blank without leading or trailing whitespace")
        return value


class DocumentsRequest(_Strict):
    """Passages to index and encode (POST /documents)."""

    documents: list[DocumentIn] = Field(..., min_length=1)


class DocumentsResponse(_Strict):
    """What POST /documents did; repeating a request adds nothing (idempotent per id)."""

    ids: list[str] = Field(..., description="the id of each document, in request order")
    added: int = Field(..., description="documents newly indexed")
    existing: int = Field(..., description="documents already present with the same content")
    gradients_stored: int = Field(..., description="gradients written to the store")
    learner: str
    timings_ms: dict[str, float]

    @classmethod
    def from_result(cls, result: DocumentsResult) -> DocumentsResponse:
        return cls.model_validate(asdict(result))


class ErrorResponse(BaseModel):
    """Body of 401/409/503 errors."""

    detail: str
    component: str | None = None
