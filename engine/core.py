"""The QA engine: retrieve → gradients (store sums + one batched backward for misses) → one generation.

Used by the HTTP service (through the batcher, on its single model thread), in-process by
`regrad evaluate --in-process`, and by the serving benchmark. Shared weights are never written:
each request's knowledge reaches the model as a per-row adaptation (`models.generate_answers`).
What each mode does is read from `engine.modes.MODES`.

Example:
    engine = Engine.from_config(EngineConfig(index="artifacts/index", store="artifacts/store"))
    [answer] = engine.answer_batch([Question("Who wrote Hamlet?", mode="regrad")])
    print(answer.answer, [p.id for p in answer.passages])
    engine.close()
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch

from engine.composition import DEFAULT_COMPOSITION, Composition
from engine.config import DEFAULT_RELEVANCE_CACHE_MB, EngineConfig
from engine.errors import DocumentConflictError
from engine.gradient_cache import GradientCache
from engine.modes import ModeSpec, mode_spec
from engine.types import Answer, Document, DocumentsResult, PassageHit, Question, StageTimings, check_beams
from gradient_store.errors import StoreLockedError
from models import AnswerRequest as GenerationRequest
from models import Learner, format_passage, generate_answers, load_preset, passage_gradients
from models.base import resolve_device, resolve_dtype
from models.gradients import passage_token_counts
from models.relevance import passage_prompts, question_likelihoods, warm_prompts
from models.tensor_cache import TensorCache
from retrieval.passage import Passage, normalize_whitespace, passage_id

__all__ = ["Engine", "ColdGradient", "open_store"]

logger = logging.getLogger("regrad.engine")


BACKWARD_COST = 3   # a passage's gradient (forward and backward) costs about 3 forwards of its tokens


class ColdGradient(NamedTuple):
    """A passage whose gradient is computed for its request (`Engine.cold_gradients`)."""

    text: str     # the passage as the learner reads it (`format_passage`)
    cost: int     # its forward and backward, in forward tokens (`BACKWARD_COST` x its tokens)


@dataclass
class _Row:
    """One question's state through the pipeline (row i of the batch)."""

    request: Question
    mode: ModeSpec
    passages: list[Passage] = field(default_factory=list)   # given passages: id = content hash
    sources: list[str | None] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)  # each passage's weight in the combination
    gradient: torch.Tensor | None = None
    missing: list[int] = field(default_factory=list)   # passages whose gradient is not stored
    error: BaseException | None = None
    generation: GenerationRequest | None = None        # what the decoder was given (continuous)
    relevance_prompts: list[tuple[str, list[int]]] | None = None   # its passages' scoring prompts, once read
    cold_gradients: dict[str, ColdGradient] | None = None   # its passages' gradients to compute, once read
    answer: str = ""
    retrieve_s: float = 0.0
    gradients_s: float = 0.0


class Engine:
    """Retriever + gradient store + learner, answering batches of requests.

    Args:
        learner: the loaded learner (its weights are only read).
        retriever: a `retrieval` backend (`search_many`, `get`, `add`, `count`, `close`).
        store: an open `GradientStore` for this learner, or None (every gradient is a miss).
        missing_gradients: `compute` (one batched backward for the misses) or `skip`.
        write_back: append computed gradients to the store (the caller's given passages: only when
            their question asks, `Question.write_back`).
        encode_batch_size: passages per backward when computing gradients.
        composition: how a request's passage gradients are combined when it does not say.
        stop_bias: added to the end-of-answer tokens' logits after an answer's first token when a request
            does not say (`models.decoding.BatchDecoder.join`).
        beams: beam search's width when a request does not say (1: greedy; `models.beam`).
        gradient_cache: keeps computed gradients in memory by passage id (content hash for given
            passages); default a `GradientCache()`.
        relevance_cache: keeps each passage prompt's KV cache for the `likelihood` composition's
            scoring (`models.relevance`), so a passage asked about again scores its question alone;
            default `DEFAULT_RELEVANCE_CACHE_MB` MiB of it.
        store_lock_timeout_s: how long `add_documents` waits for the store's writer lock, which another
            process may hold (another replica's add: milliseconds; a `regrad encode` run: hours). It
            waits on the model thread, so it is short; past it, StoreLockedError (HTTP 503).
    """

    def __init__(
        self,
        learner: Learner,
        retriever,
        store=None,
        *,
        missing_gradients: str = "compute",
        write_back: bool = False,
        encode_batch_size: int = 8,
        composition: Composition = DEFAULT_COMPOSITION,
        gradient_cache: GradientCache | None = None,
        relevance_cache: TensorCache | None = None,
        store_lock_timeout_s: float = 2.0,
        stop_bias: float = 0.0,
        beams: int = 1,
    ) -> None:
        if missing_gradients not in ("compute", "skip"):
            raise ValueError(f"`missing_gradients` must be 'compute' or 'skip', got {missing_gradients!r}")
        if encode_batch_size < 1:
            raise ValueError(f"`encode_batch_size` must be >= 1, got {encode_batch_size}")
        self.learner = learner
        self.retriever = retriever
        self.store = store
        self.missing_gradients = missing_gradients
        self.write_back = write_back
        self.encode_batch_size = encode_batch_size
        self.composition = composition
        check_beams(beams)
        if beams > 1 and stop_bias:
            raise ValueError("`stop_bias` applies to greedy decoding only: set it to 0 with `beams` > 1")
        self.stop_bias = stop_bias
        self.beams = beams
        self.gradient_cache = gradient_cache if gradient_cache is not None else GradientCache()
        self.relevance_cache = (relevance_cache if relevance_cache is not None
                                else TensorCache(DEFAULT_RELEVANCE_CACHE_MB * 2**20))
        self.store_lock_timeout_s = store_lock_timeout_s
        self.fingerprint = learner.fingerprint  # computed once: it hashes every LoRA weight

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_config(cls, config: EngineConfig) -> Engine:
        """Load the learner, open the retriever and the store (created for the learner if missing)."""
        from retrieval import RetrieverConfig, open_retriever

        if config.torch_threads is not None:
            torch.set_num_threads(config.torch_threads)
        device = resolve_device(config.device)
        dtype = resolve_dtype(config.dtype, device)
        logger.info("model on %s, base weights in %s", device, dtype or "the preset's dtype")
        if config.checkpoint is not None:
            learner = Learner.load(config.checkpoint, device=device, dtype=dtype)
        else:
            logger.warning(
                "no REGRAD_CHECKPOINT: serving an UNTRAINED learner from preset %r (not meta-trained)",
                config.preset,
            )
            learner = Learner.create(load_preset(config.preset), device=device, dtype=dtype)
        retriever = open_retriever(
            RetrieverConfig(
                backend=config.retriever_backend,
                index=config.index_name,
                es_url=config.es_url,
                es_request_timeout_s=config.es_timeout_s,
                es_max_retries=config.es_max_retries,
                device=device,
            )
        )
        try:
            store = open_store(config.store, learner) if config.store is not None else None
        except BaseException:
            retriever.close()
            raise
        return cls(
            learner,
            retriever,
            store,
            missing_gradients=config.missing_gradients,
            write_back=config.write_back,
            encode_batch_size=config.encode_batch_size,
            composition=_served_composition(config.composition or learner.composition),
            relevance_cache=TensorCache(config.relevance_cache_mb * 2**20),
            stop_bias=config.stop_bias,
            beams=_served_beams(config, learner),
        )

    def close(self) -> None:
        """Close the retriever (the Elasticsearch client) and the store. Idempotent."""
        for resource in (self.retriever, self.store):
            if resource is not None:
                try:
                    resource.close()
                except Exception:  # closing must not hide the shutdown of the other resource
                    logger.exception("closing %s failed", type(resource).__name__)

    # ----------------------------------------------------------------- answering
    def answer_batch(self, requests: Sequence[Question]) -> list[Answer]:
        """Answer a batch: one search per distinct top_k, store sums, one backward for the misses,
        one generation (each row its own length limit). Raises the first per-request error, if any."""
        outcomes = self.answer_outcomes(requests)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return outcomes  # type: ignore[return-value]

    def answer_outcomes(self, requests: Sequence[Question]) -> list[Answer | BaseException]:
        """Like `answer_batch`, but a request whose stage failed gets its exception in its slot and
        the others still get answers (e.g. closed_book rows while the retriever is down)."""
        started_s = time.perf_counter()
        rows = [_Row(request, mode_spec(request.mode)) for request in requests]
        retrieve_s = self._retrieve(rows)
        gradients_s = self._gradients(rows)
        generate_s = self._generate(rows)
        timings = StageTimings(
            retrieve=retrieve_s * 1000.0, gradients=gradients_s * 1000.0, generate=generate_s * 1000.0,
            total=(time.perf_counter() - started_s) * 1000.0,
        )
        return [row.error if row.error is not None else self.answer_of(row, timings, len(rows)) for row in rows]

    # ----------------------------------------------------------------- stages (the continuous scheduler's)
    def begin(self, requests: Sequence[Question]) -> list[_Row]:
        """Stage 1, no torch work (the scheduler runs it on another thread, beside the decoding rows):
        retrieve, and read the stored gradients into the store's cache (`GradientStore.prefetch`: the
        file pages and each row's CRC32, which `complete`'s sum on the model thread then skips). A row
        whose retrieval failed carries its `error`."""
        rows = [_Row(request, mode_spec(request.mode)) for request in requests]
        retrieve_s = self._retrieve(rows)
        self._prefetch(rows)
        for row in rows:
            row.retrieve_s = retrieve_s
        return rows

    def _prefetch(self, rows: list[_Row]) -> None:
        if self.store is None:
            return
        ids = [p.id for row in rows if row.error is None and row.mode.gradients for p in row.passages]
        if not ids:
            return
        try:
            self.store.prefetch(ids)
        except Exception:  # the sum on the model thread reads them again and decides
            logger.exception("prefetching %d stored gradients failed", len(ids))

    def complete(self, rows: list[_Row]) -> None:
        """Stage 2, on the model thread: sum the stored gradients, and compute the missing ones in
        one batched backward (or skip them, per `missing_gradients`).

        The store sums are torch work, so they run here too: on a CPU, torch work driven from a
        second thread makes a second OpenMP pool, and with two pools on two cores every op of the
        model thread ran ~1.9x slower (docs/benchmarks.md)."""
        started_s = time.perf_counter()
        self._stored_gradients(rows)
        self._missing_gradients([row for row in rows if row.error is None and row.missing])
        gradients_s = time.perf_counter() - started_s
        for row in rows:
            row.gradients_s = gradients_s

    def cold_passage_prompts(self, row: _Row) -> dict[str, list[int]]:
        """The relevance prompts (cache key → token ids) that `complete` would prefill to score this
        row: its passages' prompts not in the relevance cache. Empty when its weights read no
        likelihood, or when the cache is off (nothing warmed could be kept). Model thread: the row's
        prompts are tokenized on the first call and kept on it."""
        if not self._reads_likelihood(row) or self.relevance_cache.max_bytes == 0:
            return {}
        if row.relevance_prompts is None:
            row.relevance_prompts = passage_prompts(self.learner, row.passages)
        return {key: ids for key, ids in row.relevance_prompts if key not in self.relevance_cache}

    def cold_gradients(self, row: _Row) -> dict[str, ColdGradient]:
        """This row's passages whose gradient `complete` would compute now (in neither the store nor the
        gradient cache), by id, with its text and cost: the caller's own passages and retrieved passages
        the store lacks alike. Empty under `missing_gradients` skip, for a mode without gradients, and
        when the cache cannot hold all of the row's passages at once (worked ahead, they would be
        evicted before its join). Model thread: which were cold is read on the first call and kept on
        the row (they are `computed` for it); only those are tokenized."""
        if row.error is not None or not row.mode.gradients or self.missing_gradients != "compute":
            return {}
        if row.cold_gradients is None:
            fits = len(row.passages) * self.learner.layout.dim * 4 <= self.gradient_cache.max_bytes // 2  # fp32
            texts = {} if not fits else {
                p.id: format_passage(p.title, p.text) for p in row.passages if not self._has_gradient(p.id)}
            row.cold_gradients = {
                pid: ColdGradient(text, BACKWARD_COST * n)
                for (pid, text), n in zip(texts.items(), passage_token_counts(self.learner, list(texts.values())),
                                          strict=True)}
        return {pid: cold for pid, cold in row.cold_gradients.items() if pid not in self.gradient_cache}

    def warm_gradients(self, texts: dict[str, str]) -> None:
        """Compute these passages' gradients (id → text, from `cold_gradients`) into the gradient cache,
        so that `complete` reads them instead of running their backward. Model thread."""
        vectors = passage_gradients(self.learner, list(texts.values()), batch_size=self.encode_batch_size)
        for pid, vector in zip(texts, vectors, strict=True):
            self.gradient_cache.put(pid, vector)

    def _has_gradient(self, pid: str) -> bool:
        if pid in self.gradient_cache:
            return True
        try:
            return self.store is not None and pid in self.store
        except Exception:   # the store is unreadable: `complete` decides
            return False

    def warm_passage_prompts(self, prompts: dict[str, list[int]]) -> None:
        """Prefill these relevance prompts (from `cold_passage_prompts`) into the relevance cache, so
        that `complete` scores their rows' questions alone. Model thread, between decode steps."""
        warm_prompts(self.learner, prompts, self.relevance_cache)

    def answer_of(self, row: _Row, timings: StageTimings, batch_size: int) -> Answer:
        """The row's `Answer` (its `answer` text already set)."""
        gradients = row.mode.gradients
        weights = row.weights if gradients else [None] * len(row.passages)
        given = row.request.passages if row.request.passages is not None and row.mode.retrieve else None
        shown_ids = [g.id or p.id for g, p in zip(given, row.passages, strict=True)] if given else None
        return Answer(
            answer=row.answer,
            mode=row.request.mode,
            passages=[
                PassageHit(id=shown_ids[i] if shown_ids else p.id, title=p.title, score=float(p.score),
                           gradient=source if gradients else None, weight=weight)
                for i, (p, source, weight) in enumerate(zip(row.passages, row.sources, weights, strict=True))
            ],
            timings_ms=timings,
            learner=self.fingerprint,
            batch_size=batch_size,
            composition=str(self.composition_of(row.request)) if gradients else None,
            passage_texts=[p.text for p in row.passages],
        )

    def composition_of(self, request: Question) -> Composition:
        """The request's own composition, or the engine's default."""
        return request.composition or self.composition

    def stop_bias_of(self, request: Question) -> float:
        """The request's own stop bias, or the engine's default."""
        return self.stop_bias if request.stop_bias is None else request.stop_bias

    def beams_of(self, request: Question) -> int:
        """The request's own beam width, or the engine's default."""
        return self.beams if request.beams is None else request.beams

    def _retrieve(self, rows: list[_Row]) -> float:
        """Top-k passages per row; one `search_many` per distinct top_k (so a batched row gets
        exactly the passages it would get alone). A failure marks only the rows that needed it."""
        started_s = time.perf_counter()
        by_k: dict[int, list[_Row]] = {}
        for row in rows:
            if row.mode.retrieve and row.request.passages is not None:  # the caller's, instead of a search
                row.passages = [
                    Passage(id=passage_id(g.title, g.text), title=g.title, text=g.text, score=g.score or 0.0)
                    for g in row.request.passages
                ]
                row.sources = [None] * len(row.passages)
            elif row.mode.retrieve:
                by_k.setdefault(row.request.top_k, []).append(row)
        for k, group in by_k.items():
            try:
                queries = [row.request.retrieval_query or row.request.question for row in group]
                hits = self.retriever.search_many(queries, k)
            except Exception as error:  # BackendUnavailableError → 503 for these rows only
                for row in group:
                    row.error = error
                continue
            for row, passages in zip(group, hits, strict=True):
                row.passages = list(passages)[:k]
                row.sources = [None] * len(row.passages)
        return time.perf_counter() - started_s

    def _gradients(self, rows: list[_Row]) -> float:
        """Summed gradient per gradient-mode row: stored rows summed by the store, misses computed in
        one batched backward (or skipped), optionally written back."""
        started_s = time.perf_counter()
        self._stored_gradients(rows)
        self._missing_gradients([row for row in rows if row.error is None and row.missing])
        return time.perf_counter() - started_s

    def _stored_gradients(self, rows: list[_Row]) -> None:
        """Each gradient-mode row's stored gradients, combined with the row's weights (one vector op
        per row in the store); the others are listed in `row.missing`."""
        likelihoods = self._likelihoods(rows)
        for row in rows:
            if row.error is not None or not row.mode.gradients:
                continue
            ids = [p.id for p in row.passages]
            scores = likelihoods[id(row)] if id(row) in likelihoods else _scores(row)
            row.weights = self.composition_of(row.request).weights(scores)
            stored_sum, stored_ids = self._stored_sum(ids, row.weights)
            row.gradient = stored_sum
            row.sources = ["stored" if pid in stored_ids else "missing" for pid in ids]
            row.missing = [i for i, pid in enumerate(ids) if pid not in stored_ids]

    def _likelihoods(self, rows: list[_Row]) -> dict[int, list[float]]:
        """ℓ(question | passage) for each passage of every row whose composition is `likelihood`, in
        one batched scoring (by `id(row)`); the question is the text the passages were retrieved for."""
        chosen = [row for row in rows if self._reads_likelihood(row)]
        if not chosen:
            return {}
        try:
            scores = question_likelihoods(
                self.learner, [(row.request.retrieval_query or row.request.question, row.passages) for row in chosen],
                cache=self.relevance_cache)
        except Exception as error:  # e.g. out of memory: these rows fail, the others still answer
            logger.exception("scoring %d rows' passages failed", len(chosen))
            for row in chosen:
                row.error = error
            return {}
        return {id(row): row_scores for row, row_scores in zip(chosen, scores, strict=True)}

    def _reads_likelihood(self, row: _Row) -> bool:
        """The row's weights come from the likelihood scoring (one passage needs no weighing)."""
        return (row.error is None and row.mode.gradients and len(row.passages) > 1
                and self.composition_of(row.request).needs_likelihood)

    def _missing_gradients(self, rows: list[_Row]) -> None:
        if self.missing_gradients != "compute" or not rows:
            return
        try:
            self._compute_misses(rows, [row.missing for row in rows])
        except Exception as error:  # e.g. out of memory: these rows fail, the others still answer
            logger.exception("computing missing gradients failed")
            for row in rows:
                row.error = error

    def _stored_sum(self, ids: list[str], weights: list[float]) -> tuple[torch.Tensor | None, set[str]]:
        """(weighted sum of the stored gradients or None, ids that contributed). A corrupt row counts as
        missing, and so does every id when the store cannot be read at all (it is a cache)."""
        if self.store is None or not ids:
            return None, set()
        try:
            vector, found, _missing = self.store.sum(ids, on_corrupt="missing", weights=weights)
        except Exception:
            logger.exception("reading %d gradients from the store failed; treating them as missing", len(ids))
            return None, set()
        found = set(found)
        return (vector if found else None), found

    def _compute_misses(self, rows: list[_Row], missing_by_row: list[list[int]]) -> None:
        """The misses' gradients in one batched backward, each kept in the in-memory gradient cache (by
        id: a content hash for given passages) and read from it the next time. Written back to the
        store where asked: retrieved passages under `write_back`, given ones when their question says
        `write_back`."""
        unique: dict[str, Passage] = {}
        wanted: set[str] = set()  # ids to write back
        for row, missing in zip(rows, missing_by_row, strict=True):
            asks = row.request.write_back if row.request.passages is not None else self.write_back
            for i in missing:
                pid = row.passages[i].id
                unique.setdefault(pid, row.passages[i])
                if asks:
                    wanted.add(pid)
        if not unique:
            return
        vectors = {pid: v for pid in unique if (v := self.gradient_cache.get(pid)) is not None}
        cached = set(vectors)
        ids = [pid for pid in unique if pid not in cached]
        if ids:
            texts = [format_passage(unique[pid].title, unique[pid].text) for pid in ids]
            computed = passage_gradients(self.learner, texts, batch_size=self.encode_batch_size)  # (N, D)
            for pid, vector in zip(ids, computed, strict=True):
                vectors[pid] = vector
                self.gradient_cache.put(pid, vector)
        for row, missing in zip(rows, missing_by_row, strict=True):
            if not missing:
                continue
            weights = torch.tensor([row.weights[i] for i in missing])
            chosen = torch.stack([vectors[row.passages[i].id] for i in missing])           # (m, D)
            summed = (chosen * weights.to(chosen.dtype)[:, None]).sum(dim=0)               # (D,)
            row.gradient = summed if row.gradient is None else row.gradient + summed
            for i in missing:
                pid = row.passages[i].id
                ahead = row.cold_gradients is not None and pid in row.cold_gradients   # computed for it, warmed
                row.sources[i] = "cached" if pid in cached and not ahead else "computed"
        write = [pid for pid in unique if pid in wanted]
        if write and self.store is not None:
            self._write_back(write, torch.stack([vectors[pid] for pid in write]))

    def _write_back(self, ids: list[str], vectors: torch.Tensor) -> None:
        """Append computed gradients if the store's writer lock is free now: this runs on the model
        thread, which must not wait for another process's writer (a `regrad encode` holds it for hours)."""
        try:
            with self.store.writer(on_duplicate="skip", lock_timeout_s=0.0) as writer:
                writer.append(ids, vectors)
        except StoreLockedError:
            logger.info("not writing %d computed gradients back: another process is writing the store", len(ids))
        except Exception:  # the store is a cache here: a failed write must not fail the answer
            logger.exception("writing %d computed gradients back to the store failed", len(ids))

    def _generate(self, rows: list[_Row]) -> float:
        """One `generate_answers` call for the batch; each row its own adaptation and length limit."""
        started_s = time.perf_counter()
        group = [row for row in rows if row.error is None]
        if not group:
            return 0.0
        try:
            answers = generate_answers(self.learner, [self.generation_request(row) for row in group],
                                       max_new_tokens=[row.request.max_new_tokens for row in group],
                                       stop_bias=[self.stop_bias_of(row.request) for row in group],
                                       beams=[self.beams_of(row.request) for row in group])
        except Exception as error:
            for row in group:
                row.error = error
        else:
            for row, answer in zip(group, answers, strict=True):
                row.answer = answer
        return time.perf_counter() - started_s

    def generation_request(self, row: _Row) -> GenerationRequest:
        """What the decoder needs for this row: prompt parts and the summed gradient (or none)."""
        request = row.request
        context = None
        if row.mode.context:
            context = [(p.title, self._clip(p.text)) for p in row.passages]
        return GenerationRequest(
            question=request.question,
            answer_type=request.answer_type,
            choices=list(request.choices) if request.choices else None,
            context=context,
            gradient=row.gradient if row.mode.gradients else None,
            gamma=request.gamma,
            base=row.mode.base,
        )

    def _clip(self, text: str) -> str:
        """A passage in the prompt gets the same token budget as its gradient (so 20 long passages
        cannot overflow the model's context)."""
        max_tokens = self.learner.config.max_passage_tokens
        if len(text) <= max_tokens * 2:  # a token is >= 2 characters nearly always: skip tokenising
            return text
        ids = self.learner.tokenizer(text, add_special_tokens=False, truncation=True, max_length=max_tokens)
        return self.learner.tokenizer.decode(ids["input_ids"])

    # ----------------------------------------------------------------- documents
    def add_documents(self, documents: Sequence[Document]) -> DocumentsResult:
        """Compute and store the gradients of new passages, then index them. Idempotent per id: a
        document already present with the same text is left alone (its gradient is stored if it
        was missing); the same id with other text raises DocumentConflictError.

        Several processes may serve one store and index (replicas on one host). The gradients are
        computed first, outside any lock; then, holding the store's writer lock (which every
        process's `add_documents` takes), the ids are checked again, the gradients committed and the
        passages indexed, so that two processes adding one id with different texts cannot leave the
        store holding one text's gradient and the index the other's. Raises StoreLockedError when
        another writer (a `regrad encode` run) holds the lock past `store_lock_timeout_s`.
        """
        started_s = time.perf_counter()
        passages: dict[str, Passage] = {}
        ids: list[str] = []
        conflicts: list[str] = []
        for document in documents:
            pid = document.id or passage_id(document.title, document.text)
            passage = Passage(id=pid, title=document.title, text=document.text)
            ids.append(pid)
            if pid in passages and not _same_passage(passages[pid], passage):
                conflicts.append(pid)
            passages.setdefault(pid, passage)
        new = self._new_passages(passages, conflicts)  # refuses a conflict before the costly encode

        encode_started_s = time.perf_counter()
        stored = 0
        if self.store is None:
            index_started_s = time.perf_counter()
            if new:
                self.retriever.add(new)
        else:
            unstored = [p for pid, p in passages.items() if not self.store.contains(pid)]
            vectors = None
            if unstored:
                vectors = passage_gradients(
                    self.learner, [format_passage(p.title, p.text) for p in unstored], self.encode_batch_size
                )
            index_started_s = time.perf_counter()
            with self.store.writer(on_duplicate="skip", lock_timeout_s=self.store_lock_timeout_s) as writer:
                new = self._new_passages(passages)  # again: another process may have added since
                if vectors is not None:
                    stored = writer.append([p.id for p in unstored], vectors)
                # Gradients first, then the index: a question that finds a new passage finds its gradient.
                writer.commit()
                if new:
                    self.retriever.add(new)
        done_s = time.perf_counter()
        return DocumentsResult(
            ids=ids,
            added=len(new),
            existing=len(passages) - len(new),
            gradients_stored=stored,
            learner=self.fingerprint,
            timings_ms={
                "lookup": (encode_started_s - started_s) * 1000.0,
                "gradients": (index_started_s - encode_started_s) * 1000.0,
                "index": (done_s - index_started_s) * 1000.0,
                "total": (done_s - started_s) * 1000.0,
            },
        )

    def _new_passages(self, passages: dict[str, Passage], conflicts: Sequence[str] = ()) -> list[Passage]:
        """The passages the index lacks; DocumentConflictError for ids it holds with other text (and for
        `conflicts`, ids given twice with different texts)."""
        existing = {p.id: p for p in self.retriever.get(list(passages))}
        conflicts = [*conflicts, *(pid for pid, p in existing.items() if not _same_passage(p, passages[pid]))]
        if conflicts:
            raise DocumentConflictError(sorted(set(conflicts)))
        return [p for pid, p in passages.items() if pid not in existing]

    # ----------------------------------------------------------------- health
    def readiness(self) -> dict[str, str]:
        """`ok` or the problem, per component: model, retriever, store."""
        components = {"model": "ok"}
        try:
            self.retriever.count()
            components["retriever"] = "ok"
        except Exception as error:
            components["retriever"] = f"{type(error).__name__}: {error}"
        if self.store is None:
            components["store"] = "ok"
        else:
            try:
                self.store.probe()  # a query on index.sqlite: the store is open and readable
                found = self.store.fingerprint
                components["store"] = (
                    "ok" if found == self.fingerprint else f"store fingerprint {found[:12]}… != learner's"
                )
            except Exception as error:
                components["store"] = f"{type(error).__name__}: {error}"
        return components


def _scores(row: _Row) -> list[float | None]:
    """The scores the composition weighs: the retriever's, or the caller's own (None where not given,
    so that unscored passages are weighted equally)."""
    if row.request.passages is not None and row.mode.retrieve:
        return [g.score for g in row.request.passages]
    return [p.score for p in row.passages]


def _served_beams(config: EngineConfig, learner: Learner) -> int:
    """The configured beam width, else the learner's own (greedy under a stop bias, which beams do not take)."""
    if config.beams is not None:
        return config.beams
    return 1 if config.stop_bias else (learner.beams or 1)


def _served_composition(spec: str | None) -> Composition:
    """The configured composition, else the one the learner was meta-trained with, else the default.
    A bad spec is a ValueError in words (`Composition.parse`)."""
    return Composition.parse(spec) if spec else DEFAULT_COMPOSITION


def _same_passage(a: Passage, b: Passage) -> bool:
    return normalize_whitespace(a.title) == normalize_whitespace(b.title) and normalize_whitespace(
        a.text
    ) == normalize_whitespace(b.text)


def open_store(path: Path, learner: Learner):
    """Open the gradient store at `path` for this learner, creating it when the folder has none."""
    from gradient_store import GradientStore

    path = Path(path)
    if (path / "manifest.json").is_file():
        return GradientStore.open(path, expect_fingerprint=learner.fingerprint)
    return GradientStore.create(path, layout=learner.layout.to_json(), fingerprint=learner.fingerprint)
