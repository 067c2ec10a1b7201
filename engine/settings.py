"""The engine's settings: the `REGRAD_*` environment variables and `.env` entries that say which learner,
store, retriever and scheduler to build, read by pydantic-settings.

`regrad serve` reads them through the service's `Settings`, which adds the HTTP ones; `regrad evaluate
--in-process` reads these alone, so it builds an engine without the HTTP service.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from engine.composition import Composition
from engine.config import DEFAULT_RELEVANCE_CACHE_MB, EngineConfig
from engine.types import MAX_BEAMS, MAX_STOP_BIAS

__all__ = ["EngineSettings", "MissingGradientPolicy", "SHIPPED_LEARNER", "shipped_checkpoint"]

logger = logging.getLogger("regrad.engine")

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


class EngineSettings(BaseSettings):
    """What builds the engine and its scheduler; each field is the env variable `REGRAD_<NAME>`.

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
        prefill_budget_tokens: `continuous` only. N (default 512): newcomers that join decoding rows
            are prefilled inside the next decode steps' forwards (packed with the rows' next tokens;
            attention part by part), at most N prompt tokens per step, a longer prompt a chunk per
            step (vLLM's chunked prefill); a newcomer's `likelihood` scoring prompts and own passages'
            gradients are done ahead, at most N tokens' work between two steps, before it joins. 0: a
            newcomer's prompt is prefilled whole in a forward of its own, and its scoring and gradients
            run at its join, which stalls the rows decoding.
        work_ahead: `continuous` with a prefill budget only. True (default): a newcomer's `likelihood`
            scoring and computed gradients (own passages, store misses) are done ahead of its join,
            into the engine's caches, a budget's work between two decode steps, so that no stream
            waits for all of it at once (it costs some throughput: docs/benchmarks.md). False: at its
            join.
        missing_gradients: `compute` (one batched backward for the misses) or `skip` (answer without them).
        write_back: write computed gradients back to the store (the store as a cache).
        composition: how a request's passage gradients are combined when it does not say: `sum`,
            `softmax` or `softmax:T` (weights from the retrieval scores), `likelihood` or `likelihood:T`
            (weights from the base model's likelihood of the question given each passage), either
            with `:M` to make the weights sum to M at every k; unset = the learner's own, else the
            engine's default.
        relevance_cache_mb: memory (MiB) for the passage prompts' KV caches the `likelihood` scoring
            keeps, least recently used first out: a passage scored again runs only the question's
            tokens (0: keep none).
        stop_bias: added to the end-of-answer tokens' logits after an answer's first token when a request
            does not say (> 0 ends answers sooner; 0: plain greedy decoding).
        beams: beam search's width when a request does not say (1: greedy decoding; `models.beam`); unset =
            the learner's own (learner.json `beams`, which `regrad export --beams` writes; the shipped learner
            has none), else 1.
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
    prefill_budget_tokens: int = Field(512, ge=0, le=1_000_000, description="continuous: most prompt tokens "
                                       "prefilled inside one decode step, longer prompts in chunks, and most "
                                       "tokens of newcomers' scoring and gradient work between two steps "
                                       "(0: off)")
    work_ahead: bool = Field(True, description="continuous, with a prefill budget: do newcomers' likelihood "
                             "scoring and computed gradients (own passages, store misses) ahead, a budget at a "
                             "time between two decode steps (false: at their join)")
    missing_gradients: Literal["compute", "skip"] = Field("compute", description="compute | skip")
    write_back: bool = Field(False, description="store gradients computed for misses")
    composition: str | None = Field(None, description="default combination: sum | softmax[:T[:M]] | likelihood[:T[:M]]")
    relevance_cache_mb: int = Field(DEFAULT_RELEVANCE_CACHE_MB, ge=0, le=1_000_000,
                                    description="MiB of passage prompt KV kept for the likelihood scoring (0: none)")
    stop_bias: float = Field(0.0, ge=0, le=MAX_STOP_BIAS, allow_inf_nan=False,
                             description="default bias on ending an answer after its first token (0: none)")
    beams: int | None = Field(None, ge=1, le=MAX_BEAMS,
                              description="default beam width (1: greedy decoding); unset = the learner's own, else 1")

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
    def _checkpoint_or_untrained(self) -> EngineSettings:
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
        config = EngineConfig(   # every field by name: a field added to either side is mapped here or nowhere
            checkpoint=self.resolved_checkpoint(),
            preset=self.preset,
            store=self.store,
            retriever_backend=self.retriever_backend,
            index=self.index,
            es_url=self.es_url,
            es_timeout_s=self.es_timeout_s,
            es_max_retries=self.es_max_retries,
            device=self.device,
            dtype=self.dtype,
            torch_threads=self.torch_threads,
            missing_gradients=self.missing_gradients,
            write_back=self.write_back,
            composition=self.composition,
            relevance_cache_mb=self.relevance_cache_mb,
            stop_bias=self.stop_bias,
            beams=self.beams,
            # encode_batch_size: EngineConfig's default (no setting)
        )
        if config.checkpoint is None:
            logger.warning(
                "serving an UNTRAINED learner from preset %r (`untrained` is set): its gradients were "
                "never meta-trained to help; leave it unset to serve the shipped learner", self.preset,
            )
        return config
