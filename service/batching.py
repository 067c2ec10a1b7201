"""Batching bookkeeping. Two schedulers with one interface (`submit`, `run_exclusive`, `queued`):

* `ContinuousBatcher` (the default, `REGRAD_SCHEDULER=continuous`): the engine's iteration-level
  scheduler; a request joins the running generation at the next decode step (see its class).
* `MicroBatcher` (`REGRAD_SCHEDULER=static`): requests that arrive together are answered by one
  call on one thread, and a batch lasts as long as its longest answer. Described below.

Pure bookkeeping (vLLM's split): a queue, a batch size limit and a gathering window. The batcher
never touches weights; it hands a list of items (row i = the i-th request) to a `process` function
and runs it on its single worker thread, which is also where every other model call goes
(`run_exclusive`), so the model is only ever used from one thread.

Meaning, as a plain loop:

    while True:
        wait for the first request
        wait until `max_batch` requests are queued or `max_wait_ms` passed since the first arrived
            (or since the previous batch ended, if that was later)
        rows = up to `max_batch` queued requests whose clients are still waiting
        outcomes = process(rows)            # on the worker thread
        give outcome i to the client of row i (a client that left is skipped)
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

__all__ = ["MicroBatcher", "ContinuousBatcher", "Batched", "QueueFullError", "BatcherStoppedError"]

T = TypeVar("T")
R = TypeVar("R")


class QueueFullError(Exception):
    """More requests are waiting than the queue allows; the client should retry later."""

    def __init__(self, queued: int, max_queue: int) -> None:
        super().__init__(
            f"request queue is full: {queued} requests waiting, limit {max_queue}; "
            "retry after a moment or raise REGRAD_MAX_QUEUE"
        )
        self.queued = queued
        self.max_queue = max_queue


class BatcherStoppedError(Exception):
    """The service is shutting down; the request was not run."""


@dataclass(frozen=True)
class Batched(Generic[R]):
    """The outcome of one request and how it was batched."""

    result: R
    queue_ms: float     # from submit to the start of its batch
    batch_size: int     # requests run together with it, itself included


@dataclass
class _Pending(Generic[T]):
    item: T
    future: asyncio.Future
    enqueued_s: float = field(default_factory=time.perf_counter)


class MicroBatcher(Generic[T, R]):
    """Gathers submitted items into batches for `process`, run on one dedicated worker thread.

    Args:
        process: called with the items of one batch (row order = list order); returns one outcome per
            item, either a result or an exception instance for that item alone. If it raises, every
            item of the batch gets that exception.
        max_batch: most items per call of `process`.
        max_wait_ms: how long the first item of a batch waits for others.
        max_queue: most items waiting; `submit` raises QueueFullError beyond it.
        on_batch: called with each batch size (metrics).

    Example:
        batcher = MicroBatcher(engine.answer_outcomes, max_batch=8, max_wait_ms=10)
        await batcher.start()
        batched = await batcher.submit(request)   # Batched(result, queue_ms, batch_size)
        await batcher.stop()
    """

    def __init__(
        self,
        process: Callable[[list[T]], Sequence[R | BaseException]],
        *,
        max_batch: int = 8,
        max_wait_ms: float = 10.0,
        max_queue: int = 256,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"`max_batch` must be >= 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"`max_wait_ms` must be >= 0, got {max_wait_ms}")
        self._process = process
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self._on_batch = on_batch
        self._pending: collections.deque[_Pending[T]] = collections.deque()
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._stopping = False

    @property
    def queued(self) -> int:
        return len(self._pending)

    @property
    def is_running(self) -> bool:
        return self._worker is not None and not self._worker.done()

    async def start(self) -> None:
        """Start the worker task and its thread (call from the event loop that will submit)."""
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="regrad-model")
        self._stopping = False
        self._worker = asyncio.create_task(self._run(), name="regrad-batcher")

    async def stop(self) -> None:
        """Refuse new items, fail the waiting ones, let a running batch finish, stop the thread."""
        self._stopping = True
        while self._pending:
            pending = self._pending.popleft()
            if not pending.future.done():
                pending.future.set_exception(BatcherStoppedError("the service is shutting down; retry"))
        if self._wakeup is not None:
            self._wakeup.set()
        if self._worker is not None:
            # The worker exits after its current batch, whose clients still get their answers.
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        if self._executor is not None:
            await asyncio.to_thread(self._executor.shutdown, True)
        self._worker = self._executor = None

    async def submit(self, item: T, on_token: Callable[[int], None] | None = None) -> Batched[R]:
        """Queue one item and wait for its outcome (raises the item's exception, if any).

        `on_token` is accepted for the interface's sake and never called: a static batch's answers
        come whole, so a stream gets its answer in one piece at the end."""
        if self._stopping or self._wakeup is None:
            raise BatcherStoppedError("the service is not running (starting or shutting down); retry")
        if len(self._pending) >= self.max_queue:
            raise QueueFullError(len(self._pending), self.max_queue)
        pending: _Pending[T] = _Pending(item, asyncio.get_running_loop().create_future())
        self._pending.append(pending)
        self._wakeup.set()
        # If this coroutine is cancelled (client gone), the future is cancelled too and its row is
        # dropped before the batch starts, or its outcome is discarded after: the batch runs on.
        return await pending.future

    async def run_exclusive(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run `fn(*args, **kwargs)` on the worker thread, between batches (for other model work)."""
        if self._executor is None:
            raise BatcherStoppedError("the service is not running (starting or shutting down); retry")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    async def _gather(self) -> list[_Pending[T]]:
        """Wait for a first item, then for a full batch or the end of the first item's window."""
        assert self._wakeup is not None
        free_since_s = time.perf_counter()
        while not self._pending:
            if self._stopping:
                return []
            self._wakeup.clear()
            await self._wakeup.wait()
        # The window opens when the first item arrived, or when the worker became free if that was
        # later: items that queued behind a running batch then wait for the clients of that batch,
        # who send their next requests a moment after their answers. Without this a batch that once
        # split (5 + 3) stays split, since the 3 queued items are always past their deadline.
        deadline_s = max(self._pending[0].enqueued_s, free_since_s) + self.max_wait_s
        while len(self._pending) < self.max_batch and not self._stopping:
            remaining_s = deadline_s - time.perf_counter()
            if remaining_s <= 0:
                break
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining_s)
            except TimeoutError:
                break
        batch: list[_Pending[T]] = []
        while self._pending and len(batch) < self.max_batch:
            pending = self._pending.popleft()
            if not pending.future.done():  # a cancelled future = a client that left
                batch.append(pending)
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            batch = await self._gather()
            if not batch:
                continue
            started_s = time.perf_counter()
            if self._on_batch is not None:
                self._on_batch(len(batch))
            items = [pending.item for pending in batch]
            try:
                outcomes = list(await loop.run_in_executor(self._executor, self._process, items))
                if len(outcomes) != len(batch):
                    raise RuntimeError(
                        f"batch process returned {len(outcomes)} outcomes for {len(batch)} items"
                    )
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the whole batch failed: every row gets the error
                outcomes = [error] * len(batch)
            for pending, outcome in zip(batch, outcomes, strict=True):
                if pending.future.done():
                    continue
                if isinstance(outcome, BaseException):
                    pending.future.set_exception(outcome)
                else:
                    queue_ms = (started_s - pending.enqueued_s) * 1000.0
                    pending.future.set_result(Batched(outcome, queue_ms, len(batch)))



class ContinuousBatcher:
    """`MicroBatcher`'s interface over the engine's iteration-level scheduler
    (`engine.scheduler.ContinuousScheduler`): a request joins the running generation at the next
    decode step and leaves it the step it finishes. `max_wait_ms` is how long a newcomer that
    cannot fill the free rows alone waits for company while other rows decode (one prefill for several);
    `prefill_budget_tokens` (None: off) prefills newcomers inside the running rows' next decode steps,
    and with `work_ahead` does their scoring and computed gradients (own passages, store misses)
    ahead, between steps;
    `on_token_gap` gets the seconds between two of the running rows' tokens, at every step (metrics).

    The queue bound is this class's: `submit` raises QueueFullError when `max_queue` requests are
    already waiting for a row. A cancelled `submit` (client gone) withdraws the request; if it was
    decoding, its row leaves the batch at the next step.
    """

    def __init__(self, *, max_batch: int = 8, max_wait_ms: float = 10.0, max_queue: int = 256,
                 on_batch: Callable[[int], None] | None = None,
                 on_joined_running: Callable[[int], None] | None = None,
                 prefill_budget_tokens: int | None = None, work_ahead: bool = True,
                 on_token_gap: Callable[[float], None] | None = None) -> None:
        from engine.scheduler import ContinuousScheduler

        def on_join(live_rows: int, joined_running: int) -> None:
            if on_batch is not None:
                on_batch(live_rows)
            if on_joined_running is not None and joined_running:
                on_joined_running(joined_running)

        self.max_batch = max_batch
        self.max_queue = max_queue
        self._scheduler = ContinuousScheduler(max_rows=max_batch, join_wait_ms=max_wait_ms, on_join=on_join,
                                              prefill_budget_tokens=prefill_budget_tokens, on_token_gap=on_token_gap,
                                              work_ahead=work_ahead)
        self._started = False

    @property
    def live(self) -> int:
        """Rows decoding now."""
        return self._scheduler.live

    @property
    def queued(self) -> int:
        return self._scheduler.waiting

    @property
    def is_running(self) -> bool:
        return self._started and self._scheduler.is_running

    @property
    def engine(self):
        return self._scheduler.engine

    async def start(self, build: Callable[[], Any]) -> None:
        """Start the scheduler; `build()` makes the engine on its model thread."""
        await asyncio.to_thread(self._scheduler.start, build)
        self._started = True

    async def stop(self) -> None:
        """Refuse new requests, fail the waiting ones, let the decoding rows finish."""
        self._started = False
        await asyncio.to_thread(self._scheduler.stop)

    async def submit(self, item: Any, on_token: Callable[[int], None] | None = None) -> Batched:
        """Queue one question and wait for its answer (raises its exception, if any). `on_token(id)`
        is called with each token as it is decoded, on the model thread (see `ContinuousScheduler.submit`)."""
        from engine.scheduler import SchedulerStoppedError

        if not self._started:
            raise BatcherStoppedError("the service is not running (starting or shutting down); retry")
        if self._scheduler.waiting >= self.max_queue:
            raise QueueFullError(self._scheduler.waiting, self.max_queue)
        try:
            answer = await asyncio.wrap_future(self._scheduler.submit(item, on_token))
        except SchedulerStoppedError as error:
            raise BatcherStoppedError(str(error)) from error
        return Batched(answer, answer.timings_ms.queue, answer.batch_size)

    async def run_exclusive(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run `fn(*args, **kwargs)` on the model thread, between two decode steps."""
        from engine.scheduler import SchedulerStoppedError

        try:
            return await asyncio.wrap_future(self._scheduler.run_exclusive(fn, *args, **kwargs))
        except SchedulerStoppedError as error:
            raise BatcherStoppedError(str(error)) from error
