"""The micro-batcher's bookkeeping: batch limits, the gathering window, errors, clients that leave."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from service.batching import BatcherStoppedError, MicroBatcher, QueueFullError


class Recorder:
    """A `process` function that records each batch and the thread it ran on.

    With `hold=True` batches block on the worker thread until the test calls `release()`: tests
    drive what is queued while a batch runs by events, not by sleeping and hoping.
    """

    def __init__(self, delay_s: float = 0.0, fail_items: frozenset = frozenset(), hold: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.threads: set[int] = set()
        self.delay_s = delay_s
        self.fail_items = fail_items
        self.started = threading.Event()
        self._gate = threading.Event()
        if not hold:
            self._gate.set()

    def release(self) -> None:
        self._gate.set()

    async def wait_started(self) -> None:
        """Until the first batch is running on the worker thread (fails instead of hanging)."""
        assert await asyncio.to_thread(self.started.wait, 10), "no batch started"

    def __call__(self, items: list[int]) -> list:
        self.started.set()
        self.threads.add(threading.get_ident())
        self.batches.append(list(items))
        assert self._gate.wait(10), "the batch was held for 10 s: the test failed or never released it"
        time.sleep(self.delay_s)
        return [ValueError(f"bad {i}") if i in self.fail_items else i * 10 for i in items]


def run(coro, *held: Recorder):
    try:
        return asyncio.run(coro)
    finally:
        for recorder in held:  # a failed test must not leave the worker thread blocked
            recorder.release()


def test_concurrent_items_share_batches_up_to_max_batch_on_one_thread():
    recorder = Recorder(delay_s=0.02)

    async def main():
        batcher = MicroBatcher(recorder, max_batch=4, max_wait_ms=50)
        await batcher.start()
        results = await asyncio.gather(*(batcher.submit(i) for i in range(10)))
        await batcher.stop()
        return results

    results = run(main())
    assert [r.result for r in results] == [i * 10 for i in range(10)]  # row i -> outcome i
    assert all(len(batch) <= 4 for batch in recorder.batches)
    assert sorted(i for batch in recorder.batches for i in batch) == list(range(10))
    # Exact, and not from timing: gather() queues all ten submits in one pass of the event loop,
    # before the worker wakes, and full batches never wait for the clock (the 50 ms window only
    # closes the last, partial batch).
    assert [len(batch) for batch in recorder.batches] == [4, 4, 2]
    assert len(recorder.threads) == 1 and threading.get_ident() not in recorder.threads
    assert {r.batch_size for r in results} == {4, 2}


def test_lone_item_waits_at_most_max_wait():
    recorder = Recorder()

    async def main():
        batcher = MicroBatcher(recorder, max_batch=8, max_wait_ms=30)
        await batcher.start()
        started = time.perf_counter()
        result = await batcher.submit(1)
        elapsed_s = time.perf_counter() - started
        await batcher.stop()
        return result, elapsed_s

    result, elapsed_s = run(main())
    assert result.result == 10 and result.batch_size == 1
    assert 0.025 <= elapsed_s < 1.0
    assert result.queue_ms >= 25


def test_per_item_errors_stay_with_their_item_and_batch_errors_reach_all():
    async def main():
        batcher = MicroBatcher(Recorder(fail_items=frozenset({2})), max_batch=8, max_wait_ms=20)
        await batcher.start()
        outcomes = await asyncio.gather(*(batcher.submit(i) for i in range(4)), return_exceptions=True)
        await batcher.stop()

        def explode(items):
            raise RuntimeError("model fell over")

        broken = MicroBatcher(explode, max_batch=8, max_wait_ms=20)
        await broken.start()
        failures = await asyncio.gather(*(broken.submit(i) for i in range(3)), return_exceptions=True)
        await broken.stop()
        return outcomes, failures

    outcomes, failures = run(main())
    assert isinstance(outcomes[2], ValueError) and "bad 2" in str(outcomes[2])
    assert [o.result for i, o in enumerate(outcomes) if i != 2] == [0, 10, 30]
    assert all(isinstance(f, RuntimeError) for f in failures)


def test_client_that_leaves_does_not_break_the_batch():
    recorder = Recorder(hold=True)

    async def main():
        batcher = MicroBatcher(recorder, max_batch=8, max_wait_ms=20)
        await batcher.start()
        tasks = [asyncio.create_task(batcher.submit(i)) for i in range(4)]
        await recorder.wait_started()                       # the batch is running (held) on the worker
        tasks[1].cancel()                                   # client 1 disconnects mid-batch
        # One that leaves while still queued: its row is dropped before the next batch starts.
        queued = asyncio.create_task(batcher.submit(99))
        await asyncio.sleep(0)
        queued.cancel()
        recorder.release()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        after = await batcher.submit(5)                     # the worker is still alive
        await batcher.stop()
        return results, after

    results, after = run(main(), recorder)
    assert isinstance(results[1], asyncio.CancelledError)
    assert [results[i].result for i in (0, 2, 3)] == [0, 20, 30]
    assert after.result == 50
    assert all(99 not in batch for batch in recorder.batches)


def test_queue_limit_and_stop_refuse_with_clear_errors():
    recorder = Recorder(hold=True)

    async def main():
        batcher = MicroBatcher(recorder, max_batch=1, max_wait_ms=0, max_queue=2)
        await batcher.start()
        first = asyncio.create_task(batcher.submit(0))
        await recorder.wait_started()  # item 0 is running (held); the queue is empty again
        waiting = [asyncio.create_task(batcher.submit(i)) for i in (1, 2)]
        await asyncio.sleep(0)
        with pytest.raises(QueueFullError) as full:
            await asyncio.wait_for(batcher.submit(3), 1)  # refused at once, not queued
        recorder.release()  # stop() fails 1 and 2 before it yields: the worker cannot take them
        await batcher.stop()
        # Bounded: an item stop() forgot would otherwise hang the test instead of failing it.
        leftovers = await asyncio.wait_for(asyncio.gather(first, *waiting, return_exceptions=True), 10)
        with pytest.raises(BatcherStoppedError):
            await batcher.submit(4)
        return full.value, leftovers

    full, leftovers = run(main(), recorder)
    assert (full.queued, full.max_queue) == (2, 2)
    assert "2 requests waiting, limit 2" in str(full)
    assert leftovers[0].result == 0  # the running batch finished
    assert all(isinstance(x, BatcherStoppedError) for x in leftovers[1:])


def test_run_exclusive_uses_the_model_thread():
    recorder = Recorder()

    async def main():
        batcher = MicroBatcher(recorder, max_batch=2, max_wait_ms=0)
        await batcher.start()
        await batcher.submit(1)
        ident = await batcher.run_exclusive(threading.get_ident)
        await batcher.stop()
        return ident

    assert {run(main())} == recorder.threads


def test_items_queued_behind_a_batch_wait_for_its_clients_to_come_back():
    """A batch that once split must not stay split: the window reopens when the worker is free.

    Driven by events: the first batch is held on the worker until 99, queued behind it, is past its
    own window; then it is released and its clients send their next requests at once. Only the
    clients' turnaround (a few event-loop passes, no sleep) has to fit in the 400 ms window.
    """
    recorder = Recorder(hold=True)
    window_s = 0.4

    async def client(batcher: MicroBatcher, i: int) -> None:
        for round_ in range(2):
            await batcher.submit(i * 10 + round_)

    async def main():
        batcher = MicroBatcher(recorder, max_batch=4, max_wait_ms=window_s * 1000)
        await batcher.start()
        group = [asyncio.create_task(client(batcher, i)) for i in range(3)]
        await recorder.wait_started()           # the first batch (3 items) is running, held
        late = asyncio.create_task(batcher.submit(99))
        await asyncio.sleep(window_s + 0.1)     # 99's own window has passed while it queued
        assert batcher.queued == 1
        recorder.release()
        await asyncio.gather(*group, late)
        await batcher.stop()

    run(main(), recorder)
    # Before the fix: [3], then 99 alone (its deadline had passed while it queued), then [3].
    assert [len(batch) for batch in recorder.batches] == [3, 4]
    assert 99 in recorder.batches[1]
