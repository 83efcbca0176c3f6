"""Micro-batching of model inferences across concurrent requests, and a small LRU.

ONNX Runtime runs a batch of 16 short texts in far less time than 16 single runs (on the
2-core machine of BENCHMARKS.md: 371 against 248 embeddings/s), so requests that arrive
while the workers are busy wait for the next batch instead of each running alone. A
request arriving at an idle server runs at once: batching adds no wait at low load.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

X = TypeVar("X")
Y = TypeVar("Y")
K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")

# Largest batch one inference takes: past ~32 short texts per call the per-item cost
# stops falling and the batch's latency only grows.
MAX_BATCH = 32
# While another worker is busy (the server is under load), a worker that finds fewer than
# FILL items waiting gives them up to WINDOW_S to become more: requests arrive one by one
# under load, and batches of one cost a third more per item than batches of eight. An
# idle server never waits.
FILL = 8
WINDOW_S = 0.002
# The smallest share a worker leaves queued for the next one to finish (see take):
# below it, a batch costs more per item than the wait it saves.
MIN_SHARE = 4

Job = Callable[[], None]


class Workers:
    """One thread per core, taking work from one queue: plain calls first, then batches
    from the batchers. A thread that finishes a batch takes the next one at once, without
    waiting for the event loop to hand it over (that wait left the cores idle a fifth of
    the time under load)."""

    def __init__(self, threads: int, name: str) -> None:
        self.threads = threads
        self._cv = threading.Condition()
        self._calls: deque[_Call] = deque()
        self._batchers: list[Batcher[Any, Any]] = []
        self._closed = False
        self._busy = 0
        self._pool = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(threads)]
        for thread in self._pool:
            thread.start()

    def call(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Runs ``fn(*args)`` on a worker; the future resolves on the calling loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        job = _Call(functools.partial(fn, *args), loop, future)
        self._submit(lambda: self._calls.append(job))
        return future

    def _submit(self, enqueue: Callable[[], None]) -> None:
        with self._cv:
            if self._closed:
                raise RuntimeError("the workers are closed")
            enqueue()
            self._cv.notify()

    def _take(self) -> tuple[Job | None, float | None]:
        """The next job, or None and how long to wait before a batch may be taken short."""
        if self._calls:
            return self._calls.popleft(), None
        wait: float | None = None
        for batcher in self._batchers:
            if not batcher.pending:
                continue
            hold = batcher.hold(self._busy)
            if hold <= 0:
                self._batchers.append(self._batchers.pop(self._batchers.index(batcher)))  # take turns
                return batcher.take(self.threads - self._busy), None
            wait = hold if wait is None else min(wait, hold)
        return None, wait

    def _work(self) -> None:
        while True:
            with self._cv:
                while True:
                    if self._closed:
                        return
                    job, wait = self._take()
                    if job is not None:
                        break
                    self._cv.wait(wait)
                self._busy += 1
                if self._calls or any(b.pending for b in self._batchers):
                    self._cv.notify()  # the rest of a shared burst is another idle worker's
            try:
                job()
            finally:
                with self._cv:
                    self._busy -= 1
                    self._cv.notify()  # a worker holding a short batch may take it now

    def close(self) -> None:
        """Stops the threads after the jobs they are running; queued work fails with
        RuntimeError (its callers' loops may still be waiting for it)."""
        with self._cv:
            self._closed = True
            calls, self._calls = list(self._calls), deque()
            for batcher in self._batchers:
                batcher.fail(RuntimeError("the workers are closed"))
            self._cv.notify_all()
        for job in calls:
            job.cancel()
        for thread in self._pool:
            thread.join()


class _Call:
    """A plain call queued for a worker, and the future its caller awaits."""

    def __init__(self, fn: Callable[[], Any], loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any]) -> None:
        self.fn, self.loop, self.future = fn, loop, future

    def __call__(self) -> None:
        try:
            result = self.fn()
        except BaseException as e:  # delivered to the caller, as an executor would
            _deliver(self.loop, functools.partial(_settle, self.future, None, e))
        else:
            _deliver(self.loop, functools.partial(_settle, self.future, result, None))

    def cancel(self) -> None:
        _deliver(self.loop, functools.partial(_settle, self.future, None, RuntimeError("the workers are closed")))


def _deliver(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
    try:
        loop.call_soon_threadsafe(callback)
    except RuntimeError:
        pass  # the loop has closed: nobody waits for this any more


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller gave up (cancelled)
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


def _settle_all(futures: list[asyncio.Future[Any]], error: BaseException) -> None:
    for future in futures:
        _settle(future, None, error)


class Batcher(Generic[X, Y]):
    """Runs ``run(items) -> results`` on the workers for batches of the items submitted
    from event loops. A worker takes a share of what is waiting (one taking a whole
    burst would leave the other cores idle), at most MAX_BATCH."""

    def __init__(self, workers: Workers, run: Callable[[list[X]], Sequence[Y]]) -> None:
        self._workers = workers
        self._run = run
        self.pending: list[tuple[X, asyncio.Future[Y], asyncio.AbstractEventLoop]] = []
        self._since = 0.0  # when the oldest pending item arrived (about: a take leaves it)
        # Called on the loop with each batch's inference seconds (a metrics histogram).
        self.observe: Callable[[float], None] | None = None
        with workers._cv:
            workers._batchers.append(self)

    async def submit(self, items: Sequence[X]) -> list[Y]:
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Y]] = [loop.create_future() for _ in items]
        self._workers._submit(lambda: self._add([(x, f, loop) for x, f in zip(items, futures)]))
        return list(await asyncio.gather(*futures))

    def _add(self, items: list[tuple[X, asyncio.Future[Y], asyncio.AbstractEventLoop]]) -> None:
        if not self.pending:
            self._since = time.monotonic()
        self.pending.extend(items)

    def hold(self, busy: int) -> float:
        """Seconds to wait for more items before running a short batch (0: run now)."""
        if busy == 0 or len(self.pending) >= FILL:
            return 0.0
        return self._since + WINDOW_S - time.monotonic()

    def take(self, idle: int) -> Job:
        """A batch to run (called by a worker, under the workers' lock): an equal share
        of what waits among the ``idle`` workers and, when there is enough (MIN_SHARE
        items a share), one more share left queued for the worker that finishes next.
        The requests a worker has just answered need a round trip to the client and back
        before they are work again; without a queued share its core waited for them
        (~15% of the time at concurrency 16 on 2 cores; with it, 17-23% more lookups/s
        in a same-run A/B, see BENCHMARKS.md)."""
        waiting = len(self.pending)
        shares = idle + 1 if waiting >= MIN_SHARE * (idle + 1) else max(idle, 1)
        size = min(MAX_BATCH, -(-waiting // shares))
        batch, self.pending = self.pending[:size], self.pending[size:]
        return lambda: self._run_batch(batch)

    def _run_batch(self, batch: list[tuple[X, asyncio.Future[Y], asyncio.AbstractEventLoop]]) -> None:
        started = time.perf_counter()
        results: Sequence[Y] | None = None
        error: BaseException | None = None
        try:
            results = self._run([x for x, _, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"a batch of {len(batch)} gave {len(results)} results")
        except BaseException as e:  # a failed batch fails its own requests only
            error = e
        elapsed = time.perf_counter() - started
        for loop in {id(loop): loop for _, _, loop in batch}.values():
            mine = [(i, future) for i, (_, future, item_loop) in enumerate(batch) if item_loop is loop]
            _deliver(loop, functools.partial(self._finish, mine, results, error, elapsed))

    def _finish(self, mine: list[tuple[int, asyncio.Future[Y]]], results: Sequence[Y] | None,
                error: BaseException | None, elapsed: float) -> None:
        for i, future in mine:
            _settle(future, None if results is None else results[i], error)
        if self.observe is not None and error is None:
            self.observe(elapsed)

    def fail(self, error: BaseException) -> None:
        """Fails everything waiting (under the workers' lock, at close)."""
        for loop in {id(loop): loop for _, _, loop in self.pending}.values():
            mine = [future for _, future, item_loop in self.pending if item_loop is loop]
            _deliver(loop, functools.partial(_settle_all, mine, error))
        self.pending = []


class LRU(Generic[K, V]):
    """A bounded map that forgets the least recently used key. Not thread-safe: used from
    the event loop only."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[K, V] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: K) -> V | None:
        value = self._items.get(key)
        if value is None:
            self.misses += 1
            return None
        self.hits += 1
        self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        if self.capacity <= 0:
            return
        self._items[key] = value
        self._items.move_to_end(key)
        if len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)
