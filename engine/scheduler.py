"""Iteration-level (continuous) scheduling: requests join the running generation at the next decode
step and leave it the step they finish, each row with its own adapter (Orca, vLLM, S-LoRA).

Two threads. The model is only ever used from the model thread.

    staging thread (no torch work, runs beside decoding):
        take newcomers; retrieve their passages (`Engine.begin`)
        hand them to the model thread (at most `max_rows` staged ahead)

    model thread:
        while running:
            run queued exclusive work (e.g. POST /documents), between two steps
            rows whose client left (future cancelled) leave the batch
            if rows are free and newcomers are staged and ready (what is left of their work ahead
            fits the step's budget; and they fill the free rows, or the oldest has waited
            `join_wait_ms`), or nothing is decoding:
                sum their stored gradients, compute the missing ones in one backward (`Engine.complete`)
                prefill them together with their adapters; they join the running batch
            a slice of the staged newcomers' work ahead within what the joins and the next step's
            prefill leave of the budget (scoring prompts into the relevance cache, the gradients
            of their own passages and of store misses into the gradient cache)
            one decode step for every live row (each token goes to its row's `on_token`, if any);
            a finished row leaves, its future resolves
            one step of the running beam searches (requests with `beams` > 1: `models.beam.BeamBatch`,
            which they joined as greedy newcomers join the batch); a search that ended resolves its future

What stalls the decoding rows, and for how long: a newcomer's prefill (with `prefill_budget_tokens`,
at most that many prompt tokens inside one decode step, a longer prompt over several; without, one
forward over its whole prompt), its store sum (milliseconds), its `likelihood` scoring and, for a
caller's own passages or a store miss, their gradients' backward. With a budget, the scoring's
prompts and those gradients are done ahead, at most that many tokens' work between two steps, and
the newcomer joins once what is left fits the budget (with nothing left its join runs only the
scoring's question pass); without, all of it runs at the join (`engine/work_ahead.py`). Retrieval
never stalls them.

Every torch op runs on the model thread, the engine's construction included (`start(build)`): on
a CPU, torch driven from two threads makes two OpenMP pools, and on a 2-core machine every op then
ran ~1.9x slower (docs/benchmarks.md).
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any

from engine.errors import EngineError
from engine.types import Answer, Question, StageTimings
from engine.work_ahead import WorkAhead

__all__ = ["ContinuousScheduler", "SchedulerStoppedError"]

logger = logging.getLogger("regrad.scheduler")


class SchedulerStoppedError(EngineError):
    """The scheduler is not running (not started, or shutting down); the request was not run."""


@dataclass
class _Job:
    key: int
    question: Question
    future: Future
    submitted_s: float
    row: Any = None              # the engine's row, once staged
    staged_s: float = 0.0
    joined_s: float = 0.0
    batch_size: int = 0          # live rows right after it joined, itself included
    on_token: Callable[[int], None] | None = None   # called on the model thread with each emitted token
    ready: bool = False          # may join decoding rows: none of its work ahead left (`_check_ready`)
    left_tokens: int | None = None   # else the tokens of its work left (`WorkAhead.left`); None: unread
    done_ahead: set[tuple[str, str]] = field(default_factory=set)   # its work done ahead once (`WorkAhead`)


class ContinuousScheduler:
    """Answers `Question`s with continuous batching on an `Engine`.

    Args:
        engine: the engine (`begin`, `complete`, `generation_request`, `answer_of`, `learner`), or
            None when `start(build)` builds it on the model thread.
        max_rows: most rows decoding together (`REGRAD_MAX_BATCH`).
        join_wait_ms: while rows are decoding, staged newcomers fewer than the free rows wait up to
            this long for company, so that several are prefilled in one forward (a prompt alone
            costs several times its share of a batched prefill on a CPU); `REGRAD_MAX_WAIT_MS`.
        on_join: called each time rows join, with the live row count after the join and how many of
            the joining rows joined a generation already running (metrics).
        prefill_budget_tokens: None: newcomers are prefilled in a forward of their own, which stalls
            the decoding rows. A number: newcomers that join running rows are prefilled inside the
            next decode steps' forwards, at most this many prompt tokens per step, a longer prompt
            a chunk per step (`BatchDecoder`; `REGRAD_PREFILL_BUDGET_TOKENS`).
        on_token_gap: called on the model thread with the seconds between two consecutive decode
            steps that emitted tokens to rows already decoding: the gap every running stream saw
            between two of its tokens, newcomers' prefills, store sums and scoring included (metrics).
        work_ahead: with a prefill budget, a newcomer's model work that its join would run whole
            (a `likelihood` request's passage scoring prompts; the gradients of a request's own
            passages and of retrieved passages the store lacks)
            is done ahead into the engine's caches, at most the budget's tokens between two decode
            steps, and it joins once what is left fits the budget (`REGRAD_WORK_AHEAD`). False: done
            whole at its join, stalling the decoding rows for as long (the way before;
            `bench/work_ahead_bench.py` compares them).

    Example:
        scheduler = ContinuousScheduler(engine, max_rows=8)
        scheduler.start()
        answer = scheduler.submit(Question("Who wrote Hamlet?")).result()
        scheduler.stop()
    """

    def __init__(self, engine=None, *, max_rows: int = 8, join_wait_ms: float = 0.0,
                 on_join: Callable[[int, int], None] | None = None, prefill_budget_tokens: int | None = None,
                 on_token_gap: Callable[[float], None] | None = None, work_ahead: bool = True) -> None:
        if max_rows < 1:
            raise ValueError(f"`max_rows` must be >= 1, got {max_rows}")
        if prefill_budget_tokens is not None and prefill_budget_tokens < 1:
            raise ValueError(f"`prefill_budget_tokens` must be >= 1 or None, got {prefill_budget_tokens}")
        self.prefill_budget_tokens = prefill_budget_tokens
        self._ahead: WorkAhead | None = None   # made with the engine, on the model thread
        self._work_ahead_on = work_ahead and prefill_budget_tokens is not None
        self._ahead_deferred = False           # the last step's slice was put off (its next item did not fit)
        if join_wait_ms < 0:
            raise ValueError(f"`join_wait_ms` must be >= 0, got {join_wait_ms}")
        self.engine = engine
        self.max_rows = max_rows
        self.join_wait_s = join_wait_ms / 1000.0
        self._on_join = on_join
        self._on_token_gap = on_token_gap
        self._emitting: tuple[set, float] = (set(), 0.0)   # rows that emitted last, and when (token gaps)
        self._lock = threading.Condition()
        self._incoming: collections.deque[_Job] = collections.deque()   # submitted, not staged
        self._staged: collections.deque[_Job] = collections.deque()     # staged, waiting for a row
        self._exclusive: collections.deque[tuple[Callable[[], Any], Future]] = collections.deque()
        self._live: dict[int, _Job] = {}
        self._beams: Any = None      # the model thread's running beam searches (`models.beam.BeamBatch`)
        self._keys = itertools.count()
        self._running = False
        self._threads: list[threading.Thread] = []
        self.joined_running = 0      # rows that joined while other rows were decoding (mid-generation)

    # ------------------------------------------------------------------ public
    @property
    def waiting(self) -> int:
        """Requests submitted and not yet decoding."""
        with self._lock:
            return len(self._incoming) + len(self._staged)

    @property
    def live(self) -> int:
        """Rows decoding now."""
        return len(self._live)

    @property
    def is_running(self) -> bool:
        return self._running and all(t.is_alive() for t in self._threads)

    def start(self, build: Callable[[], Any] | None = None) -> None:
        """Start the threads. `build()`, if given, makes the engine on the model thread first (so the
        model is loaded by the thread that will run it); its error, if any, is raised here."""
        if build is None and self.engine is None:
            raise ValueError("ContinuousScheduler needs an engine, or start(build) to make one")
        built = threading.Event()
        failure: list[BaseException] = []

        def model_thread() -> None:
            try:
                if build is not None:
                    self.engine = build()
            except BaseException as error:
                failure.append(error)
                return
            finally:
                built.set()
            self._model_loop()

        self._running = True
        model = threading.Thread(target=model_thread, name="regrad-model", daemon=True)
        model.start()
        built.wait()
        if failure:
            self._running = False
            model.join()
            raise failure[0]
        staging = threading.Thread(target=self._stage_loop, name="regrad-staging", daemon=True)
        staging.start()
        self._threads = [staging, model]

    def stop(self, timeout_s: float = 60.0) -> None:
        """Refuse new requests, fail the waiting ones, let the decoding rows finish, stop the threads."""
        with self._lock:
            self._running = False
            waiting = list(self._incoming) + list(self._staged)
            self._incoming.clear()
            self._staged.clear()
            self._lock.notify_all()
        for job in waiting:
            _fail(job.future, SchedulerStoppedError("the service is shutting down; retry"))
        for thread in self._threads:
            thread.join(timeout_s)
        self._threads = []

    def submit(self, question: Question, on_token: Callable[[int], None] | None = None) -> Future:
        """Queue a question; the future resolves to its `Answer` (or its error). Cancel the future to
        withdraw it: a decoding row then leaves the batch at the next step.

        `on_token(token_id)`, if given, is called with each token the row emits, as it is decoded, on
        the model thread (keep it short: hand the token to another thread or loop); the stop token
        that ends the row is included."""
        future: Future = Future()
        with self._lock:
            if not self._running:
                raise SchedulerStoppedError("the scheduler is not running (starting or shutting down); retry")
            self._incoming.append(_Job(next(self._keys), question, future, time.perf_counter(), on_token=on_token))
            self._lock.notify_all()
        return future

    def run_exclusive(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future:
        """Run `fn(*args, **kwargs)` on the model thread between two decode steps."""
        future: Future = Future()
        with self._lock:
            if not self._running:
                raise SchedulerStoppedError("the scheduler is not running (starting or shutting down); retry")
            self._exclusive.append((lambda: fn(*args, **kwargs), future))
            self._lock.notify_all()
        return future

    # ------------------------------------------------------------------ staging thread
    def _stage_loop(self) -> None:
        while True:
            with self._lock:
                while self._running and (not self._incoming or len(self._staged) >= self.max_rows):
                    self._lock.wait()
                if not self._running:
                    return
                room = self.max_rows - len(self._staged)
                jobs = [self._incoming.popleft() for _ in range(min(room, len(self._incoming)))]
            jobs = [job for job in jobs if not job.future.cancelled()]  # clients that left
            if not jobs:
                continue
            try:
                rows = self.engine.begin([job.question for job in jobs])
            except Exception as error:  # a bug or a backend failure not caught per row
                logger.exception("staging %d requests failed", len(jobs))
                for job in jobs:
                    _fail(job.future, error)
                continue
            with self._lock:
                for job, row in zip(jobs, rows, strict=True):
                    job.row, job.staged_s = row, time.perf_counter()
                    if row.error is not None:            # e.g. the retriever is down: answer at once
                        _fail(job.future, row.error)
                    elif not self._running:
                        _fail(job.future, SchedulerStoppedError("the service is shutting down; retry"))
                    else:
                        self._staged.append(job)
                self._lock.notify_all()

    # ------------------------------------------------------------------ model thread
    def _model_loop(self) -> None:
        from models.beam import BeamBatch
        from models.decoding import BatchDecoder

        decoder = BatchDecoder(self.engine.learner, prefill_budget_tokens=self.prefill_budget_tokens,
                               slots=self.max_rows)
        self._beams = BeamBatch(self.engine.learner)
        if self._work_ahead_on:
            self._ahead = WorkAhead(self.engine, self.prefill_budget_tokens)
        while True:
            with self._lock:
                while self._running and not (self._live or self._staged or self._exclusive):
                    self._lock.wait()
                if not self._running and not self._live and not self._exclusive:
                    return
                exclusive = list(self._exclusive)
                self._exclusive.clear()
                staged = list(self._staged)
            self._check_ready(staged)
            with self._lock:
                joining = self._admitted()
                if joining:
                    self._lock.notify_all()  # the staging thread may stage more
            for fn, future in exclusive:
                _run_into(future, fn)
            gone = [key for key, job in self._live.items() if job.future.cancelled()]
            if gone:
                decoder.leave(gone)
                self._beams.leave(gone)
                for key in gone:
                    del self._live[key]
            if joining:
                self._join(decoder, joining)
            if not self._live:
                continue
            if self._ahead is not None:
                self._work_ahead(min(decoder.prefill_tokens, self.prefill_budget_tokens) + _work_left(joining))
            try:
                decoder.step(on_emit=self._emit)
                if self._beams:
                    self._searched(self._beams.step())
            except Exception as error:  # e.g. out of memory: every live row fails, the loop goes on
                logger.exception("a decode step failed; failing %d rows", len(self._live))
                for job in self._live.values():
                    _fail(job.future, error)
                self._live.clear()
                decoder = BatchDecoder(self.engine.learner, prefill_budget_tokens=self.prefill_budget_tokens,
                               slots=self.max_rows)
                self._beams = BeamBatch(self.engine.learner)
                self._emitting = (set(), 0.0)
                continue

    def _emit(self, emitted: list[tuple[Any, int]], finished: list[tuple[Any, list[int]]]) -> None:
        """Called by the decoder between a step's tokens and its forward: the tokens go to their
        streams and the finished rows' answers to their clients before the next forward runs."""
        self._token_gap(emitted, finished)
        self._stream(emitted)
        for key, token_ids in finished:
            job = self._live.pop(key)
            try:
                self._finish(job, token_ids)
            except Exception as error:   # e.g. decoding its text: this request fails, the others decode on
                logger.exception("finishing a request failed")
                _fail(job.future, error)

    def _token_gap(self, emitted: list[tuple[Any, int]], finished: list[tuple[Any, list[int]]]) -> None:
        """Report the seconds since the last tokens, if a row that emitted then emits now (a stream
        waited that long for its next token; a newcomer's first token and idle time are no gap)."""
        keys, now = {key for key, _ in emitted}, time.perf_counter()
        before, then = self._emitting
        if keys & before and self._on_token_gap is not None:
            try:
                self._on_token_gap(now - then)
            except Exception:
                logger.exception("the token-gap callback failed")
        self._emitting = (keys - {key for key, _ in finished}, now)

    def _stream(self, emitted: list[tuple[Any, int]]) -> None:
        """Hand each emitted token to its row's `on_token`, if any (a failing callback is logged, the
        row decodes on)."""
        for key, token in emitted:
            job = self._live.get(key)
            if job is None or job.on_token is None or job.future.cancelled():
                continue
            try:
                job.on_token(token)
            except Exception:
                logger.exception("a token callback failed; the row decodes on without it")
                job.on_token = None

    def _admitted(self) -> list[_Job]:
        """The staged newcomers that join now (under the lock), in order: when no row is decoding, all
        that fit; else the ready ones (`_check_ready`) and those whose work left fits in what is left
        of the budget (their joins do it: `_work_left`), when they fill the free rows or the
        oldest of them has waited `join_wait_ms`; else none yet."""
        room = self.max_rows - len(self._live)
        if room <= 0 or not self._staged:
            return []
        if not self._live or not self._running:
            return [self._staged.popleft() for _ in range(min(room, len(self._staged)))]
        ready, allowance = [], self.prefill_budget_tokens or 0
        for job in self._staged:
            if len(ready) == room:
                break
            if job.ready or self._ahead is None:
                ready.append(job)
            elif job.left_tokens is not None and job.left_tokens <= allowance:   # its join does the rest
                allowance -= job.left_tokens
                ready.append(job)
        if not ready or (len(ready) < room and time.perf_counter() - ready[0].staged_s < self.join_wait_s):
            return []
        chosen = {id(job) for job in ready}
        self._staged = collections.deque(job for job in self._staged if id(job) not in chosen)
        return ready

    # ------------------------------------------------------------------ a newcomer's work, ahead of its join
    def _check_ready(self, staged: list[_Job]) -> None:
        """Mark the staged jobs that may join rows already decoding (model thread, outside the lock):
        all of them without work ahead (no budget, or `work_ahead` off), else those with none of
        their work left to do ahead (`engine.work_ahead`); the others' work left, in tokens."""
        for job in staged:
            if job.ready:
                continue
            try:
                job.left_tokens = 0 if self._ahead is None else self._ahead.left(job.row, job.done_ahead)
                job.ready = job.left_tokens == 0
            except Exception:   # its join does the work, or fails it there
                logger.exception("reading a request's work ahead failed")
                job.ready = True

    def _work_ahead(self, spent: int) -> None:
        """One slice of the staged jobs' work ahead, oldest first, between two decode steps, within what
        this iteration's joins and the next step's prefill (`spent` tokens) leave of the budget. When
        the next item does not fit the slice is put off, but not twice in a row: after a step that
        did none it takes one item whatever its cost (so that joins at every step cannot starve the
        work). A withdrawn job's work is not done: it is ready, and leaves at its join."""
        with self._lock:
            waiting = [job for job in self._staged if not job.ready]
        for job in waiting:
            if job.future.cancelled():
                job.ready = True
        waiting = [job for job in waiting if not job.ready]
        if not waiting:
            self._ahead_deferred = False
            return
        try:
            ran = self._ahead.run_slice([(job.row, job.done_ahead) for job in waiting],
                                        budget_tokens=max(self.prefill_budget_tokens - spent, 0),
                                        at_least_one=self._ahead_deferred)
        except Exception:   # e.g. out of memory: their joins do the work, or fail them there
            logger.exception("working ahead for %d staged requests failed", len(waiting))
            for job in waiting:
                job.ready = True
            ran = True
        self._ahead_deferred = not ran

    def _join(self, decoder, jobs: list[_Job]) -> None:
        from models.generate import prepare_rows

        jobs = [job for job in jobs if not job.future.cancelled()]
        self.engine.complete([job.row for job in jobs])
        ready = []
        for job in jobs:
            if job.row.error is not None:
                _fail(job.future, job.row.error)
            else:
                ready.append(job)
        greedy, searched = [], []
        for job in ready:
            (searched if self.engine.beams_of(job.question) > 1 else greedy).append(job)
        if searched:
            self._join_search(searched)
        ready = greedy
        if not ready:
            return
        try:
            requests = [self.engine.generation_request(job.row) for job in ready]
            batch, adapters = prepare_rows(self.engine.learner, requests, bank=decoder.join_bank())
            decoder.join([job.key for job in ready], batch, adapters,
                         [job.question.max_new_tokens for job in ready],
                         [self.engine.stop_bias_of(job.question) for job in ready])
        except Exception as error:
            logger.exception("prefilling %d joining rows failed", len(ready))
            for job in ready:
                _fail(job.future, error)
            return
        joined_running = len(ready) if self._live else 0
        self.joined_running += joined_running
        self._go_live(ready, requests)
        if self._on_join is not None:
            self._on_join(len(self._live), joined_running)

    def _join_search(self, jobs: list[_Job]) -> None:
        """Beam-search jobs (`beams` > 1) join the running beam searches (`models.beam.BeamBatch`), beside
        the greedy batch: a request's beams share its adapter and reorder their cache rows every step,
        which the greedy batch's slots do not. Each loop runs one step of each, so a search costs the
        greedy rows one forward a step, not its whole length (and searches batch as greedy rows do)."""
        from models.generate import prepare_beam_rows

        widths = [self.engine.beams_of(job.question) for job in jobs]
        try:
            requests = [self.engine.generation_request(job.row) for job in jobs]
            self._beams.join([job.key for job in jobs], *prepare_beam_rows(self.engine.learner, requests, widths),
                             widths, [job.question.max_new_tokens for job in jobs])
        except Exception as error:
            logger.exception("starting the beam search of %d requests failed", len(jobs))
            for job in jobs:
                _fail(job.future, error)
            return
        self._go_live(jobs, requests)

    def _go_live(self, jobs: list[_Job], requests: list) -> None:
        """Jobs that joined (the greedy batch or the beam searches) are live, with their generation requests."""
        joined_s = time.perf_counter()
        for job, request in zip(jobs, requests, strict=True):
            job.joined_s, job.row.generation = joined_s, request
            self._live[job.key] = job
        for job in jobs:
            job.batch_size = len(self._live)

    def _searched(self, ended: list[tuple[Any, list[int]]]) -> None:
        """Searches that ended answer their clients; a streamed one gets its answer's tokens at once, then
        an end-of-turn token."""
        from models.decoding import end_of_turn_id

        end = end_of_turn_id(self.engine.learner.tokenizer)
        for key, token_ids in ended:
            job = self._live.pop(key)
            if job.on_token is not None and not job.future.cancelled():
                try:
                    for token in [*token_ids, end]:
                        job.on_token(token)
                except Exception:
                    logger.exception("a token callback failed; the answer is still returned")
            try:
                self._finish(job, token_ids)
            except Exception as error:
                logger.exception("finishing a request failed")
                _fail(job.future, error)

    def _finish(self, job: _Job, token_ids: list[int]) -> None:
        from models.generate import answer_text

        row = job.row
        row.answer = answer_text(self.engine.learner.tokenizer, token_ids, row.generation)
        done_s = time.perf_counter()
        retrieve_ms, gradients_ms = row.retrieve_s * 1000.0, row.gradients_s * 1000.0
        timings = StageTimings(
            queue=max(0.0, (job.joined_s - job.submitted_s) * 1000.0 - retrieve_ms - gradients_ms),
            retrieve=retrieve_ms,
            gradients=gradients_ms,
            generate=(done_s - job.joined_s) * 1000.0,
            total=(done_s - job.submitted_s) * 1000.0,
        )
        answer: Answer = self.engine.answer_of(row, timings, job.batch_size)
        _resolve(job.future, answer)


def _work_left(jobs: list[_Job]) -> int:
    """Tokens of work ahead that these jobs' joins do: what was left of it when they were admitted."""
    return sum(job.left_tokens or 0 for job in jobs if not job.ready)


def _resolve(future: Future, value: Any) -> None:
    try:
        if not future.cancelled():
            future.set_result(value)
    except InvalidStateError:  # cancelled in between: the client left
        pass


def _fail(future: Future, error: BaseException) -> None:
    try:
        if not future.cancelled():
            future.set_exception(error)
    except InvalidStateError:
        pass


def _run_into(future: Future, fn: Callable[[], Any]) -> None:
    try:
        result = fn()
    except Exception as error:
        _fail(future, error)
    else:
        _resolve(future, result)
