"""Service settings: the engine's (`engine.settings.EngineSettings`) plus the HTTP service's own, read
from `REGRAD_*` environment variables and `.env`."""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator

from engine.settings import SHIPPED_LEARNER, EngineSettings, MissingGradientPolicy, shipped_checkpoint

__all__ = ["Settings", "MissingGradientPolicy", "SHIPPED_LEARNER", "shipped_checkpoint"]


class Settings(EngineSettings):
    """Everything `regrad serve` needs: the engine's settings (see `EngineSettings`) and these; each field
    is the env variable `REGRAD_<NAME>`.

    Args:
        max_queue: most requests waiting for the model; more are refused with 503 + Retry-After.
        api_key: when set, /answer and /documents require `Authorization: Bearer <key>` or `X-API-Key`.
        max_question_chars: longest accepted question, in characters.
        max_documents: most documents in one POST /documents.
        max_document_chars: longest accepted document text, in characters.
        retry_after_s: the `Retry-After` a 503 carries.
        host, port: where `regrad serve` listens.
    """

    max_queue: int = Field(256, ge=1, description="most requests waiting; more get 503")
    api_key: SecretStr | None = Field(None, description="require this key on /answer and /documents")
    max_question_chars: int = Field(2000, ge=1, le=20_000, description="longest accepted question")
    max_documents: int = Field(64, ge=1, description="most documents per POST /documents")
    max_document_chars: int = Field(20_000, ge=1, description="longest accepted document text")
    retry_after_s: int = Field(5, ge=1, description="Retry-After seconds on 503")
    host: str = Field("127.0.0.1", description="listen address")
    port: int = Field(8000, ge=0, le=65535, description="listen port")

    @model_validator(mode="after")
    def _check_placeholder_key(self) -> Settings:
        # A key copied verbatim from .env.example would look like protection while being public.
        if self.api_key is not None and self.api_key.get_secret_value() in {"", "changeme", "change-me"}:
            raise ValueError(
                "`api_key` is a placeholder; set REGRAD_API_KEY to a real secret or leave it unset"
            )
        return self
