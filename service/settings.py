"""Service settings: one pydantic-settings class read from `REGRAD_*` environment variables and `.env`."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from engine.composition import Composition
from engine.config import EngineConfig

__all__ = ["Settings", "MissingGradientPolicy", "SHIPPED_LEARNER", "shipped_checkpoint"]

logger = logging.getLogger("regrad.service")

MissingGradientPolicy = Literal["compute", "skip"]

# The meta-trained learner the project ships (checkpoints/<name>); served when no checkpoint is given.
SHIPPED_LEARNER = "regrad-smollm2-135m"


def shipped_checkpoint() -> Path | None:
    """The shipped learner's folder: beside the source tree (a clone, an editable install), else under
    the working directory (the Docker image's /app); None when neither has it."""
    for root in (Path(__file__).resolve().parents[1], Path.cwd()):
        folder = root / "checkpoints" / SHIPPED_LEARNER
        if (folder / "learner.json").is_file() and (folder / "learner.safetensors").is_file():
            return folder
    return None


class Settings(BaseSettings):
    """Everything `regrad serve` needs; each field is the env variable `REGRAD_<NAME>`.

    Args:
        checkpoint: learner folder (learner.json + learner.safetensors); unset = the shipped
            meta-trained learner (`checkpoints/regrad-smollm2-135m`).
        untrained: serve an UNTRAINED learner built from `preset` instead (gradients are applied, but
            were never meta-trained to help); excludes `checkpoint`.
        preset: model preset used with `untrained`.
        store: gradient store folder; created for the learner if missing; unset = no store (every
            gradient is computed on demand, or skipped under `missing_gradients=skip`).
        retriever_backend: retrieval backend name (tantivy, elasticsearch, dense, hybrid).
        index: index folder (tantivy, dense) or index name (elasticsearch).
        es_url: Elasticsearch URL for the elasticsearch and hybrid backends.
        es_timeout_s, es_max_retries: Elasticsearch client limits; a search that fails them is a 503
            (short, so a client is told to retry instead of hanging while the cluster is down).
        device: `cpu`, `cuda` or `auto` (cuda when available).
        dtype: base model dtype; `auto` = bfloat16 where the device multiplies bf16 natively (CUDA
            with bf16, a CPU with AMX), else the preset's dtype. LoRA weights stay fp32 either way.
        torch_threads: CPU threads torch may use (set it when several processes share a machine).
        scheduler: `continuous` (a request joins the running generation at the next decode step and
            leaves it the step it finishes) or `static` (requests that arrive together form a batch
            that lasts as long as its longest answer).
        max_batch: most requests generated together (rows decoding at once, for `continuous`).
        max_wait_ms: how long a request waits for company: `static`, the first request of a batch
            for others to join it; `continuous`, newcomers too few to fill the free rows, while
            other rows decode, so that several are prefilled together.
        prefill_budget_tokens: `continuous` only. 0: a newcomer's prompt is prefilled in a forward of
            its own, which stalls the rows decoding. N: newcomers that join decoding rows are
            prefilled inside the next decode step's forward (packed with the rows' next tokens, as
            vLLM's chunked prefill), at most N prompt tokens per step.
        max_queue: most requests waiting for the model; more are refused with 503 + Retry-After.
        missing_gradients: `compute` (one batched backward for the misses) or `skip` (answer without them).
        write_back: write computed gradients back to the store (the store as a cache).
        composition: how a request's passage gradients are combined when it does not say: `sum`,
            `softmax` or `softmax:T` (weights from the retrieval scores); unset = the engine's default.
        api_key: when set, /answer and /documents require `Authorization: Bearer <key>` or `X-API-Key`.
        max_question_chars: longest accepted question, in characters.
        max_documents: most documents in one POST /documents.
        max_document_chars: longest accepted document text, in characters.
        retry_after_s: the `Retry-After` a 503 carries.
        host, port: where `regrad serve` listens.
    """

    model_config = SettingsConfigDict(
        env_prefix="REGRAD_", env_file=".env", env_ignore_empty=True, extra="ignore"
    )

    checkpoint: Path | None = Field(None, description="learner folder; unset = the shipped learner")
    untrained: bool = Field(False, description="serve an untrained learner from `preset` (no checkpoint)")
    preset: str = Field("smollm2-135m-instruct", description="model preset of an untrained learner")
    store: Path | None = Field(None, description="gradient store folder; created if missing")
    retriever_backend: str = Field("tantivy", description="tantivy | elasticsearch | dense | hybrid")
    index: str | None = Field(None, description="index folder (tantivy/dense) or ES index name")
    es_url: str = Field("http://localhost:9200", description="Elasticsearch URL")
    es_timeout_s: float = Field(10.0, gt=0, description="per-request Elasticsearch timeout")
    es_max_retries: int = Field(1, ge=0, description="Elasticsearch client retries before a 503")
    device: Literal["cpu", "cuda", "auto"] = Field("auto", description="cpu | cuda | auto")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="base model dtype")
    torch_threads: int | None = Field(None, ge=1, description="torch CPU threads; unset = torch's default")
    scheduler: Literal["continuous", "static"] = Field("continuous", description="continuous | static batching")
    max_batch: int = Field(8, ge=1, le=256, description="most requests in one generation batch")
    max_wait_ms: float = Field(10.0, ge=0, le=10_000, description="batch gathering window, ms")
    prefill_budget_tokens: int = Field(0, ge=0, le=1_000_000,
                                       description="continuous: prompt tokens prefilled inside a decode step (0: off)")
    max_queue: int = Field(256, ge=1, description="most requests waiting; more get 503")
    missing_gradients: Literal["compute", "skip"] = Field("compute", description="compute | skip")
    write_back: bool = Field(False, description="store gradients computed for misses")
    composition: str | None = Field(None, description="default gradient combination: sum | softmax | softmax:T")
    api_key: SecretStr | None = Field(None, description="require this key on /answer and /documents")
    max_question_chars: int = Field(2000, ge=1, le=20_000, description="longest accepted question")
    max_documents: int = Field(64, ge=1, description="most documents per POST /documents")
    max_document_chars: int = Field(20_000, ge=1, description="longest accepted document text")
    retry_after_s: int = Field(5, ge=1, description="Retry-After seconds on 503")
    host: str = Field("127.0.0.1", description="listen address")
    port: int = Field(8000, ge=0, le=65535, description="listen port")

    @field_validator("retriever_backend")
    @classmethod
    def _lower_backend(cls, value: str) -> str:
        return value.strip().lower()

    @field_validator("composition")
    @classmethod
    def _known_composition(cls, value: str | None) -> str | None:
        if value is not None:
            Composition.parse(value)  # ValueError in words: a settings error naming the field
        return value

    @model_validator(mode="after")
    def _check_placeholder_key(self) -> Settings:
        # A key copied verbatim from .env.example would look like protection while being public.
        if self.api_key is not None and self.api_key.get_secret_value() in {"", "changeme", "change-me"}:
            raise ValueError(
                "`api_key` is a placeholder; set REGRAD_API_KEY to a real secret or leave it unset"
            )
        return self

    @model_validator(mode="after")
    def _checkpoint_or_untrained(self) -> Settings:
        if self.untrained and self.checkpoint is not None:
            raise ValueError(
                f"`untrained` is set and so is `checkpoint` ({self.checkpoint}); keep one of them"
            )
        return self

    def resolved_checkpoint(self) -> Path | None:
        """The learner folder to serve: `checkpoint`, else the shipped learner; None with `untrained`.

        Raises:
            ModelNotFoundError: no checkpoint given and the shipped learner is not found.
        """
        if self.checkpoint is not None or self.untrained:
            return self.checkpoint
        shipped = shipped_checkpoint()
        if shipped is None:
            from models.errors import ModelNotFoundError

            raise ModelNotFoundError(
                f"no checkpoint given and the shipped learner checkpoints/{SHIPPED_LEARNER} is not beside "
                f"the source nor under {Path.cwd()}; pass --checkpoint DIR (REGRAD_CHECKPOINT), or "
                "--untrained (REGRAD_UNTRAINED=true) for a learner that was never meta-trained"
            )
        return shipped

    def engine_config(self) -> EngineConfig:
        """The engine's part of these settings, the checkpoint resolved (`resolved_checkpoint`)."""
        names = {f.name for f in dataclasses.fields(EngineConfig)} & set(type(self).model_fields)
        config = EngineConfig(**{name: getattr(self, name) for name in names})
        config.checkpoint = self.resolved_checkpoint()
        if config.checkpoint is None:
            logger.warning(
                "serving an UNTRAINED learner from preset %r (`untrained` is set): its gradients were "
                "never meta-trained to help; leave it unset to serve the shipped learner", self.preset,
            )
        return config
