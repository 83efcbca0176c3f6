"""Complete and CompleteStream: the cache in front of the router.

The cache key of an answer is its scope plus its question. The scope is the namespace and
a partition hash of everything besides the last user turn that changes the answer: the
model or tier asked for (or "auto" when the classifier routes), the system prompt and
earlier turns, tools, response format, and sampling parameters. So the same question
under another system prompt, model, conversation, tool set or namespace is a miss.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from semcached import _core, validation
from semcached.accounting import Accounting, Context
from semcached.budgets import Reservation, Who
from semcached.classify import SHIPPED_EXEMPLARS, Classifier, load_exemplars
from semcached.embed import Embedding
from semcached.engine import PARTITION_SEPARATOR, Decision, Engine
from semcached.errors import DeadlineExceeded, SemcachedError
from semcached.providers import Answer, Request, connect
from semcached.results import CompletionResult, LookupResult, Usage
from semcached.routing import Route, Router

log = logging.getLogger("semcached.completion")
# A hit replayed as a stream goes out in pieces of about this many characters.
REPLAY_PIECE = 64
_NO_EMBEDDING = Embedding(np.zeros(0, dtype=np.float32), False)


@dataclass(frozen=True)
class CacheControls:
    no_cache: bool = False  # do not look up (the answer is still stored unless no_store)
    no_store: bool = False
    ttl_seconds: int | None = None
    max_age_seconds: int | None = None  # only serve entries younger than this
    min_similarity: float | None = None
    target_precision: float | None = None
    # Cache even when sampling hotter than routing.max_cacheable_temperature.
    cache_high_temperature: bool = False


@dataclass(frozen=True)
class _Plan:
    """One validated Complete: where its answer is cached, and whether to read or write."""

    namespace: str
    scope: str
    question: str
    request: Request
    model: str
    tier: str
    decision: Decision
    ttl: int | None
    read: bool
    write: bool


class Completions:
    def __init__(self, engine: Engine, router: Router, accounting: Accounting) -> None:
        self.engine = engine
        self.router = router
        self.accounting = accounting
        self._inflight: dict[tuple[str, str], asyncio.Task[Answer]] = {}
        self._feeds: dict[tuple[str, str], _Feed] = {}  # of the in-flight calls that stream

    @classmethod
    def build(cls, engine: Engine, accounting: Accounting) -> Completions:
        """The providers with keys, the classifier (its exemplars embedded once, here),
        and the router over them, as configured."""
        config = engine.config
        providers, missing = connect(config.providers, config.required_providers)
        classifier = None
        if config.routing.classifier != "off":
            paths = [SHIPPED_EXEMPLARS]
            if config.routing.exemplars:
                paths.append(Path(config.routing.exemplars).expanduser())
            exemplars = load_exemplars(paths)
            vectors = None
            if config.routing.classifier == "rules+embedding":
                vectors = engine.embedder.embedder.embed([text for text, _ in exemplars])
            classifier = Classifier(list(config.tiers), config.routing.default_tier, exemplars, vectors)
        return cls(engine, Router(config, providers, missing, classifier), accounting)

    async def close(self, grace: float = 10.0) -> None:
        """Waits (up to ``grace`` seconds) for the upstream calls still in flight, whose
        answers are paid for, then closes the provider clients."""
        pending = list(self._inflight.values())
        if pending:
            await asyncio.wait(pending, timeout=grace)
        await self.router.close()

    async def complete(self, namespace: str, request: Request, *, model: str = "", tier: str = "",
                       controls: CacheControls = CacheControls(), who: Who = Who(),
                       deadline: float | None = None) -> CompletionResult:
        """From the cache, or from the routed model once per distinct in-flight miss.
        ``deadline`` (time.monotonic) bounds this caller's wait and the retries."""
        started = time.perf_counter()
        plan = self._plan(namespace, request, model, tier, controls)
        ctx = Context(plan.namespace, who, started)
        hit, embedding = await self._lookup(plan)
        if hit is not None:
            result = _from_hit(hit)
            self.accounting.completed(ctx, result, plan.request, hit.metadata, None, shared=False)
            return result
        key = (plan.scope, _core.normalize(plan.question))
        shared = plan.write and key in self._inflight
        reservation = None
        try:
            feed = None
            if shared:  # another request is already paying for this answer
                task = self._inflight[key]
                feed = self._feeds.get(key)
            else:
                asked = self._route(plan, embedding)
                route, reservation = self.accounting.admit(self.router, asked, plan.request, who, plan.question)
                if route is not asked:  # downgraded by a budget: not the answer this key stands for
                    plan = dataclasses.replace(plan, write=False)
                if not plan.write:  # nothing to share: a fresh answer was asked for
                    task = asyncio.get_running_loop().create_task(self._call(route, plan.request, deadline))
                else:
                    # The shared call outlives any one caller's deadline (bounded by the
                    # provider timeouts and attempts): its answer is cached for the next.
                    task = self._single_flight(key, self._fill(plan, route, embedding))
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                with self._reading(key, feed, task):
                    answer = await asyncio.wait_for(asyncio.shield(task), remaining)
            except (TimeoutError, asyncio.CancelledError) as gone:
                if not shared and not plan.write:
                    task.cancel()  # nobody else wants this answer and it will not be cached
                elif not shared:  # the call goes on without this caller: account for it when it ends
                    task.add_done_callback(functools.partial(self._account_late, ctx, plan.request, reservation))
                    reservation = None
                if isinstance(gone, asyncio.CancelledError):
                    raise
                if task.cancelling() or task.cancelled():  # this caller was the last to follow a stream
                    raise DeadlineExceeded("the deadline passed while the upstream call was in flight") from None
                raise DeadlineExceeded("the deadline passed while the upstream call was in flight; "
                                       "its answer will be cached for the next request") from None
        except BaseException:
            self.accounting.failed(reservation)
            raise
        result = _from_answer(answer)
        self.accounting.completed(ctx, result, plan.request, {}, reservation, shared=shared)
        return result

    def _account_late(self, ctx: Context, request: Request, reservation: Reservation | None,
                      task: asyncio.Task[Answer]) -> None:
        with self._released_on_error(reservation):
            if task.cancelled() or task.exception() is not None:
                self.accounting.failed(reservation)
            else:
                self.accounting.completed(ctx, _from_answer(task.result()), request, {}, reservation, shared=False)

    @contextlib.contextmanager
    def _released_on_error(self, reservation: Reservation | None) -> Iterator[None]:
        """For accounting in a done callback: an error there reaches only the loop's
        handler, and the budget would hold the reservation for the rest of its period."""
        try:
            yield
        except Exception:
            log.exception("could not account a finished upstream call; its budget reservation is released")
            self.accounting.failed(reservation)

    async def stream(self, namespace: str, request: Request, *, model: str = "", tier: str = "",
                     controls: CacheControls = CacheControls(), who: Who = Who(),
                     deadline: float | None = None) -> AsyncGenerator[str | CompletionResult, None]:
        """Text pieces as they come, then the CompletionResult. A hit is replayed in
        pieces; only a complete, successful stream is stored. Identical misses in flight
        share one upstream call, streamed or not: a stream that joins one gets the pieces
        so far, then the rest as they come (a stream that joins a call that does not
        stream gets the whole answer in pieces once it is ready). Closing the iterator
        (the client went away) closes the upstream stream, unless another request is
        following it."""
        started = time.perf_counter()
        plan = self._plan(namespace, request, model, tier, controls)
        ctx = Context(plan.namespace, who, started)
        hit, embedding = await self._lookup(plan)
        if hit is not None:
            for start in range(0, len(hit.response), REPLAY_PIECE):
                yield hit.response[start:start + REPLAY_PIECE]
            result = _from_hit(hit)
            self.accounting.completed(ctx, result, plan.request, hit.metadata, None, shared=False)
            yield result
            return
        key = (plan.scope, _core.normalize(plan.question))
        task = self._inflight.get(key) if plan.write else None
        if task is not None:  # another request is already paying for this answer
            feed = self._feeds.get(key)
            with self._reading(key, feed, task):
                async for piece in _follow(feed, task):
                    yield piece
            result = _from_answer(task.result())
            self.accounting.completed(ctx, result, plan.request, {}, None, shared=True)
            yield result
            return
        asked = self._route(plan, embedding)
        route, reservation = self.accounting.admit(self.router, asked, plan.request, who, plan.question)
        if route is not asked:  # downgraded by a budget: not the answer this key stands for
            plan = dataclasses.replace(plan, write=False)
        feed = _Feed()
        if plan.write:
            # A shared call is not bound by its starter's deadline (as in complete): the
            # starter's going away at its deadline closes it if nobody else follows it.
            task = self._single_flight(key, self._fill_stream(plan, route, embedding, feed, None))
            self._feeds[key] = feed
            task.add_done_callback(lambda _: self._forget(key, feed))
        else:
            task = asyncio.get_running_loop().create_task(
                self._fill_stream(plan, route, embedding, feed, deadline))
        # This request pays, whether it follows the call to its end or not.
        task.add_done_callback(functools.partial(self._account_stream, ctx, plan.request, reservation, feed))
        task.add_done_callback(lambda _: feed.wake())  # its readers see the end (or the error)
        with self._reading(key, feed, task):
            async for piece in _follow(feed, task):
                yield piece
        yield _from_answer(task.result())

    @contextlib.contextmanager
    def _reading(self, key: tuple[str, str], feed: _Feed | None, task: asyncio.Task[Answer]) -> Iterator[None]:
        """A request following an in-flight call. When the last request following a
        stream leaves before its end, the upstream stream is closed (and forgotten first,
        so that nobody joins a call being closed). A call that does not stream (feed
        None) goes on without its callers: its answer is cached for the next."""
        if feed is None:
            yield
            return
        feed.readers += 1
        try:
            yield
        finally:
            feed.readers -= 1
            if not feed.readers and not task.done():
                self._forget(key, task)
                self._forget(key, feed)
                task.cancel()

    def _forget(self, key: tuple[str, str], call: asyncio.Task[Answer] | _Feed) -> None:
        """Removes an in-flight call (or its feed) from the maps, unless a newer call for
        the same key has taken its place."""
        found = self._inflight if isinstance(call, asyncio.Task) else self._feeds
        if found.get(key) is call:
            del found[key]

    def _account_stream(self, ctx: Context, request: Request, reservation: Reservation | None, feed: _Feed,
                        task: asyncio.Task[Answer]) -> None:
        with self._released_on_error(reservation):
            if not task.cancelled() and task.exception() is None:
                self.accounting.completed(ctx, _from_answer(task.result()), request, {}, reservation, shared=False)
            elif feed.texts:  # cut short: the provider bills what it generated before the end
                self.accounting.cut_short(ctx, feed.model, feed.tier, request, "".join(feed.texts),
                                          feed.attempts, reservation)
            else:
                self.accounting.failed(reservation)

    async def _fill_stream(self, plan: _Plan, route: Route, embedding: Embedding, feed: _Feed,
                           deadline: float | None) -> Answer:
        generation = self.engine.generation(plan.namespace)
        finish, usage = "", Usage()
        feed.model, feed.tier = route.targets[0].name, route.tier
        try:
            async for delta in self.router.stream(route, plan.request, deadline):
                feed.model = delta.model or feed.model
                feed.attempts = delta.attempts or feed.attempts
                if delta.finish_reason:
                    finish, usage = delta.finish_reason, delta.usage
                if delta.text:
                    feed.push(delta.text)
        except BaseException as e:
            self._upstream(route.targets[0].name, error=isinstance(e, SemcachedError))
            raise
        self._upstream(feed.model, error=False)
        answer = Answer("".join(feed.texts), feed.model, usage, finish, feed.attempts, route.tier, route.reason)
        if plan.write and _worth_keeping(answer):
            await self._store(plan, answer, embedding, generation)
        return answer

    # -- internals --------------------------------------------------------------------

    def _plan(self, namespace: str, request: Request, model: str, tier: str,
              controls: CacheControls) -> _Plan:
        engine = self.engine
        name = validation.namespace(namespace)
        conversation = validation.messages(request.messages, engine.config.cache.max_prompt_bytes)
        validation.sampling(request.temperature, request.top_p, request.max_tokens)
        decision = engine.decision(name, controls.min_similarity, controls.target_precision,
                                   validation.max_age_seconds(controls.max_age_seconds))
        ttl = validation.ttl_seconds(controls.ttl_seconds)
        hot = (request.temperature or 0.0) > engine.config.routing.max_cacheable_temperature
        cacheable = not hot or controls.cache_high_temperature
        scope = name + PARTITION_SEPARATOR + partition(request, model, tier)
        return _Plan(name, scope, conversation[-1][1], request, model, tier, decision, ttl,
                     read=cacheable and not controls.no_cache, write=cacheable and not controls.no_store)

    async def _lookup(self, plan: _Plan) -> tuple[LookupResult | None, Embedding]:
        """A hit (with no embedding: none was needed), or the question's embedding."""
        if plan.read:
            found = await self.engine.find(plan.scope, plan.question, plan.decision)
            self.engine.count(found.result)
            if found.result.hit:
                return found.result, _NO_EMBEDDING
            if found.embedding is not None:
                return None, found.embedding
        return None, await self.engine.embedder.embed(plan.question)

    def _route(self, plan: _Plan, embedding: Embedding) -> Route:
        route = self.router.route(plan.model, plan.tier, plan.question,
                                  embedding.vector if embedding.whole else None)
        log.info("miss in %s: %s (%s)", plan.namespace, route.tier or route.targets[0].name, route.reason)
        return route

    def _single_flight(self, key: tuple[str, str], fill: Coroutine[Any, Any, Answer]) -> asyncio.Task[Answer]:
        """One upstream call (and one store) per distinct in-flight miss. It runs in a
        task of its own, so a caller that goes away does not fail the others waiting."""
        task = asyncio.get_running_loop().create_task(fill)
        self._inflight[key] = task
        # Leaves the map only once the answer is stored, so a request arriving in
        # between finds the entry or the task, never neither.
        def done(t: asyncio.Task[Answer]) -> None:
            self._forget(key, t)
            if not t.cancelled():
                t.exception()  # retrieved: a failure is its waiters' to report

        task.add_done_callback(done)
        return task

    async def _fill(self, plan: _Plan, route: Route, embedding: Embedding) -> Answer:
        generation = self.engine.generation(plan.namespace)
        answer = await self._call(route, plan.request, None)
        if _worth_keeping(answer):
            await self._store(plan, answer, embedding, generation)
        return answer

    async def _call(self, route: Route, request: Request, deadline: float | None) -> Answer:
        try:
            answer = await self.router.complete(route, request, deadline)
        except Exception:
            self._upstream(route.targets[0].name, error=True)
            raise  # errors are never cached
        self._upstream(answer.model, error=False, seconds=answer.upstream_ms / 1000)
        return answer

    def _upstream(self, model: str, error: bool, seconds: float | None = None) -> None:
        self.engine.count_upstream(error)
        metrics = self.accounting.metrics
        if metrics is not None:
            metrics.upstream.labels(metrics.model(model), "error" if error else "ok").inc()
            if seconds is not None:
                metrics.latency.labels("upstream").observe(seconds)

    async def _store(self, plan: _Plan, answer: Answer, embedding: Embedding, generation: int | None) -> None:
        meta = {"model": answer.model, "tier": answer.tier,
                "prompt_tokens": str(answer.usage.prompt_tokens),
                "completion_tokens": str(answer.usage.completion_tokens)}
        try:
            # Not stored if the namespace was invalidated meanwhile: do not put it back.
            await self.engine.insert(plan.scope, plan.question, answer.text, embedding, plan.ttl, meta,
                                     generation=None if generation is None else (plan.namespace, generation))
        except SemcachedError as e:
            # The answer was paid for: return it even when caching it failed.
            log.error("could not cache an answer in %s: %s", plan.namespace, e)


class _Feed:
    """The text of one upstream stream so far, for every request that follows it."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.model, self.tier, self.attempts = "", "", 0
        self.readers = 0  # requests following it now (a stream closes with its last)
        self._changed = asyncio.Event()

    def push(self, text: str) -> None:
        self.texts.append(text)
        self.wake()

    def wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def changed(self) -> None:
        await self._changed.wait()


async def _follow(feed: _Feed | None, task: asyncio.Task[Answer]) -> AsyncIterator[str]:
    """The pieces of an in-flight call: as they come from a stream, or in one go from a
    call that does not stream. Ends when the call has ended; its error is raised here."""
    if feed is not None:
        sent = 0
        while True:
            while sent < len(feed.texts):
                sent += 1
                yield feed.texts[sent - 1]
            if task.done():
                break
            await feed.changed()
    answer = await asyncio.shield(task)
    if feed is None:
        for start in range(0, len(answer.text), REPLAY_PIECE):
            yield answer.text[start:start + REPLAY_PIECE]


def _worth_keeping(answer: Answer) -> bool:
    """A truncated or empty answer (a stream of tool calls only) is not served again."""
    return answer.finish_reason != "length" and bool(answer.text.strip())


def partition(request: Request, model: str, tier: str) -> str:
    """A hash of everything besides the question that changes the answer."""
    route = f"model:{model}" if model else f"tier:{tier}" if tier else "auto"
    blob = json.dumps([route, request.messages[:-1], request.tools, request.response_format,
                       request.temperature, request.top_p, request.max_tokens],
                      ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _from_hit(hit: LookupResult) -> CompletionResult:
    return CompletionResult(
        text=hit.response, kind=hit.kind, model=hit.metadata.get("model", ""), usage=Usage(),
        finish_reason="cache", similarity=hit.similarity, entry_id=hit.entry_id,
        matched_prompt=hit.matched_prompt, verifier_score=hit.verifier_score,
        tier=hit.metadata.get("tier", ""), route_reason="cache hit", metadata=hit.metadata,
        created_unix_ms=hit.created_unix_ms, expires_unix_ms=hit.expires_unix_ms)


def _from_answer(answer: Answer) -> CompletionResult:
    return CompletionResult(text=answer.text, kind="miss", model=answer.model, usage=answer.usage,
                            finish_reason=answer.finish_reason, tier=answer.tier,
                            route_reason=answer.route_reason, attempts=answer.attempts)
