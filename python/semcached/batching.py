"""Micro-batching of model inferences across concurrent requests, and a small LRU.

ONNX Runtime runs a batch of 16 short texts in far less time than 16 single runs (on the
2-core machine of BENCHMARKS.md: 371 against 248 embeddings/s), so requests that arrive
while the workers are busy wait for the next batch instead of each running alone. A
request arriving at an idle server runs at once: batching adds no wait at low load.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Generic, TypeVar

X = TypeVar("X")
Y = TypeVar("Y")
K = TypeVar("K")
V = TypeVar("V")

# Largest batch one inference takes: past ~32 short texts per call the per-item cost
# stops falling and the batch's latency only grows.
MAX_BATCH = 32


class Batcher(Generic[X, Y]):
    """Runs ``run(items) -> results`` on ``pool`` for batches of items submitted from the
    event loop. At most ``workers`` batches are in flight; each takes an equal share of
    what is waiting (one worker taking a whole burst would leave the other cores idle)."""

    def __init__(self, pool: Executor, workers: int, run: Callable[[list[X]], Sequence[Y]]) -> None:
        self._pool = pool
        self._workers = workers
        self._run = run
        self._pending: list[tuple[X, asyncio.Future[Y]]] = []
        self._running = 0
        # Called with each batch's inference seconds (a metrics histogram).
        self.observe: Callable[[float], None] | None = None

    async def submit(self, items: Sequence[X]) -> list[Y]:
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in items]
        self._pending.extend(zip(items, futures))
        if self._running < self._workers:
            self._running += 1
            loop.create_task(self._drain())
        return list(await asyncio.gather(*futures))

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                size = min(MAX_BATCH, -(-len(self._pending) // self._workers))
                batch, self._pending = self._pending[:size], self._pending[size:]
                started = time.perf_counter()
                try:
                    results = await loop.run_in_executor(self._pool, self._run, [x for x, _ in batch])
                except Exception as e:  # a failed batch fails its own requests only
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(e)
                    continue
                if self.observe is not None:
                    self.observe(time.perf_counter() - started)
                for (_, future), result in zip(batch, results):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._running -= 1


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
