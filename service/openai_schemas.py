"""Bodies of the OpenAI-compatible endpoints (/v1/models, /v1/chat/completions).

Unlike POST /answer, unknown fields are ignored, not refused: OpenAI clients send fields regrad has
no use for (temperature, top_p, user, seed, ...). regrad's own knobs ride along as extra body fields
(`extra_body=` in the openai client): any field of `AnswerRequest` but the question, the length
limit and `stream` (those come from `messages`, `max_tokens` and `stream`), e.g. mode, top_k, gamma,
answer_type, choices, passages, include_text, write_back, and `composition` where the engine has it.
Errors have OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.schemas import MAX_NEW_TOKENS_CEILING, AnswerRequest

__all__ = [
    "ChatMessage",
    "ChatCompletionRequest",
    "ModelCard",
    "ModelList",
    "OpenAIError",
    "OpenAIErrorResponse",
    "FORWARDED_FIELDS",
]

# The AnswerRequest fields that /v1 fills itself; every other one may come as an extra body field.
_OWN_FIELDS = {"question", "max_new_tokens", "stream"}
FORWARDED_FIELDS = tuple(name for name in AnswerRequest.model_fields if name not in _OWN_FIELDS)


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")


class ChatMessage(_Lenient):
    """One message; only the last `user` message is read (its text parts, for a list of parts)."""

    role: str
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "\n".join(str(part.get("text", "")) for part in self.content if part.get("type") == "text")
        return self.content or ""


class ChatCompletionRequest(_Lenient):
    """POST /v1/chat/completions. `model` is echoed, not checked (one learner is served)."""

    model: str | None = Field(None, description="ignored: the served learner answers (see /v1/models)")
    messages: list[ChatMessage] = Field(..., min_length=1, description="the last user message is the question")
    stream: bool = Field(False, description="server-sent events of chat.completion.chunk, then `data: [DONE]`")
    max_tokens: int | None = Field(None, ge=1, description=f"answer length limit (capped at {MAX_NEW_TOKENS_CEILING})")
    max_completion_tokens: int | None = Field(None, ge=1, description="same as max_tokens; wins over it")
    n: int | None = Field(None, ge=1, le=1, description="one choice only")

    def question(self) -> str | None:
        """The text of the last user message (None without one)."""
        for message in reversed(self.messages):
            if message.role == "user":
                return message.text()
        return None

    def forwarded(self) -> dict[str, Any]:
        """regrad's own extra body fields, for AnswerRequest."""
        return {name: value for name, value in (self.model_extra or {}).items() if name in FORWARDED_FIELDS}

    def max_new_tokens(self) -> int | None:
        limit = self.max_completion_tokens or self.max_tokens
        return None if limit is None else min(limit, MAX_NEW_TOKENS_CEILING)


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "regrad"
    learner: str = Field(..., description="the learner's fingerprint")
    modes: list[str] = Field(..., description="values of the `mode` extra body field")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class OpenAIError(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | int | None = None


class OpenAIErrorResponse(BaseModel):
    error: OpenAIError
