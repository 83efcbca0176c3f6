"""Which model answers a miss, and how we keep getting an answer when providers misbehave.

A request names a model ("<provider>/<model>", or a model listed in a tier), or a tier,
or neither (then the classifier picks the tier). A tier is an ordered list of models: the
primary, then fallbacks. Each model gets up to ``routing.max_attempts`` tries with
exponential backoff and full jitter (or the provider's Retry-After) on rate limits,
server errors, connection errors and timeouts; then the next model. A per-model circuit
breaker skips a model that keeps failing for a cooling-off period. The caller's deadline
bounds all of it: no attempt starts that could not finish in time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from semcached.classify import Classifier
from semcached.config import Config
from semcached.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument, SemcachedError, Unavailable
from semcached.providers import Answer, Delta, Provider, Request, UpstreamError

log = logging.getLogger("semcached.routing")
T = TypeVar("T")


@dataclass(frozen=True)
class Target:
    provider: str
    model: str

    @property
    def name(self) -> str:
        return f"{self.provider}/{self.model}"


@dataclass(frozen=True)
class Route:
    tier: str  # "" when the request named a model
    targets: tuple[Target, ...]
    reason: str


class Breaker:
    """Closed until ``failures`` consecutive failures; then open for ``cooldown`` seconds;
    then one trial call (half-open) decides whether it closes or opens again."""

    def __init__(self, failures: int, cooldown: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._limit, self._cooldown, self._clock = failures, cooldown, clock
        self._failures = 0
        self._open_until = 0.0
        self._trial = False

    def allows(self) -> bool:
        if self._failures < self._limit:
            return True
        if self._clock() < self._open_until or self._trial:
            return False
        self._trial = True  # half-open: this caller is the trial
        return True

    @property
    def open(self) -> bool:
        return self._failures >= self._limit and self._clock() < self._open_until

    def succeeded(self) -> None:
        self._failures, self._trial = 0, False

    def release(self) -> None:
        """Ends a half-open trial that neither succeeded nor failed (the caller gave up)."""
        self._trial = False

    def failed(self) -> None:
        self._failures += 1
        self._trial = False
        if self._failures >= self._limit:
            self._open_until = self._clock() + self._cooldown


class Router:
    def __init__(self, config: Config, providers: dict[str, Provider], missing: dict[str, str],
                 classifier: Classifier | None) -> None:
        self.config = config
        self.providers = providers
        self.missing = missing  # provider -> why it is not usable (no key)
        self.classifier = classifier
        self.tiers = {name: tuple(Target(*entry.split("/", 1)) for entry in models)
                      for name, models in config.tiers.items()}
        self._breakers: dict[str, Breaker] = {}

    def route(self, model: str, tier: str, question: str, vector: np.ndarray | None) -> Route:
        """The models to try for a request, in order, and why."""
        if model and tier:
            raise InvalidArgument("name a model or a tier, not both")
        if model:
            return Route("", (self._target(model),), "model named by the request")
        if tier:
            if tier not in self.tiers:
                raise InvalidArgument(f"unknown tier {tier!r}; configured: {', '.join(self.tiers)}")
            return Route(tier, self.tiers[tier], "tier named by the request")
        default = self.config.routing.default_tier
        if self.classifier is None:
            return Route(default, self.tiers[default], "classifier off: the default tier")
        decision = self.classifier.classify(question, vector)
        return Route(decision.tier, self.tiers[decision.tier], decision.reason)

    def _target(self, model: str) -> Target:
        provider, _, name = model.partition("/")
        if name and provider in self.config.providers:
            return Target(provider, name)
        for targets in self.tiers.values():
            for target in targets:
                if target.model == model:
                    return target
        raise InvalidArgument(f"unknown model {model!r}: name it \"<provider>/<model>\" "
                              f"(providers: {', '.join(self.config.providers)}) or use a model of a tier")

    async def complete(self, route: Route, request: Request, deadline: float | None) -> Answer:
        """An answer from the first model of the route that gives one."""

        async def call(provider: Provider, model: str, timeout: float) -> Answer:
            return await provider.complete(request, model, timeout)

        answer, _, attempts, upstream_s = await self._run(route, deadline, call)
        return dataclasses.replace(answer, attempts=attempts, tier=route.tier, route_reason=route.reason,
                                   upstream_ms=upstream_s * 1000)

    async def stream(self, route: Route, request: Request, deadline: float | None) -> AsyncIterator[Delta]:
        """Deltas from the first model that starts answering. Retries and fallbacks
        happen only before the first delta; a stream that breaks after it fails."""

        async def first(provider: Provider, model: str, timeout: float) -> tuple[Delta, AsyncIterator[Delta]]:
            it = provider.stream(request, model, timeout).__aiter__()
            try:
                return await it.__anext__(), it
            except StopAsyncIteration:
                raise UpstreamError(FailedPrecondition("the provider sent an empty stream"), True) from None

        (delta, rest), target, attempts, _ = await self._run(route, deadline, first)
        breaker = self._breaker(target)
        try:
            yield dataclasses.replace(delta, model=target.name, attempts=attempts)
            async for delta in rest:
                yield delta
        except UpstreamError as e:
            breaker.failed()
            raise e.error from None
        finally:
            await rest.aclose()  # type: ignore[attr-defined]

    async def _run(self, route: Route, deadline: float | None,
                   call: Callable[[Provider, str, float], Awaitable[T]]) -> tuple[T, Target, int, float]:
        settings = self.config.routing
        usable = [t for t in route.targets if t.provider in self.providers]
        if not usable:
            reasons = "; ".join(sorted({self.missing.get(t.provider, t.provider) for t in route.targets}))
            raise FailedPrecondition(f"no model of {route.tier or 'the request'} can be called: {reasons}")
        failures: list[str] = []
        attempts = 0
        last: SemcachedError | None = None
        for target in usable:
            breaker = self._breaker(target)
            if not breaker.allows():
                failures.append(f"{target.name}: circuit open")
                continue
            provider = self.providers[target.provider]
            try:
                for attempt in range(settings.max_attempts):
                    timeout = provider.settings.timeout_seconds
                    cut_by_deadline = False
                    if deadline is not None:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            raise DeadlineExceeded(f"the deadline passed after {attempts} upstream attempts"
                                                   + (f" ({'; '.join(failures)})" if failures else ""))
                        cut_by_deadline = left < timeout
                        timeout = min(timeout, left)
                    attempts += 1
                    started = time.monotonic()
                    try:
                        result = await call(provider, target.model, timeout)
                    except UpstreamError as e:
                        last = e.error
                        failures.append(f"{target.name}: {e.error.message}")
                        log.warning("attempt %d on %s failed: %s", attempt + 1, target.name, e.error.message)
                        if isinstance(e.error, InvalidArgument):
                            raise e.error from None  # the request itself is bad: no model will take it
                        if isinstance(e.error, DeadlineExceeded) and cut_by_deadline:
                            # The caller's deadline, not the model, ran out: not the model's failure.
                            raise DeadlineExceeded(f"the deadline passed during attempt {attempts} on "
                                                   f"{target.name}") from None
                        if not e.retryable:
                            breaker.succeeded()  # reachable, it refuses (auth, unknown model)
                            break  # so try the next one
                        breaker.failed()
                        if attempt + 1 == settings.max_attempts or not breaker.allows():
                            break
                        backoff = self._backoff(attempt)
                        pause = backoff if e.retry_after is None else e.retry_after
                        if pause > settings.backoff_max_ms / 1000:
                            break  # asked to wait longer than we would: the fallback may answer now
                        if deadline is not None and time.monotonic() + pause >= deadline:
                            break  # no time to wait here: the fallback may still answer in time
                        await asyncio.sleep(pause)
                        continue
                    breaker.succeeded()
                    return result, target, attempts, time.monotonic() - started
            finally:
                breaker.release()  # a trial left by a deadline, a bad request or a cancellation
        message = "; ".join(failures[-6:])
        if last is None:  # every circuit open: they are failing now and will be retried later
            raise Unavailable(f"every model of {route.tier or 'the request'} is failing: {message}")
        raise type(last)(f"no model answered after {attempts} attempts: {message}")

    def _backoff(self, attempt: int) -> float:
        r = self.config.routing
        ceiling = min(r.backoff_max_ms, r.backoff_initial_ms * 2 ** attempt) / 1000
        return random.uniform(ceiling / 2, ceiling)  # jitter: bursts of retries spread out

    def _breaker(self, target: Target) -> Breaker:
        breaker = self._breakers.get(target.name)
        if breaker is None:
            r = self.config.routing
            breaker = self._breakers[target.name] = Breaker(r.breaker_failures, r.breaker_cooldown_seconds)
        return breaker

    async def close(self) -> None:
        for provider in self.providers.values():
            await provider.close()
