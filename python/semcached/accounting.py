"""Money: what each request cost or saved (ledger rows, metrics), and budgets before a
miss goes upstream."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from semcached.budgets import Budgets, Reservation, Who, reject
from semcached.config import Config, ConfigError, data_dir
from semcached.ledger import Ledger, Row, SQLiteLedger, now_ms
from semcached.metrics import Metrics
from semcached.pricing import RESERVED_OUTPUT_TOKENS, Prices, estimate_tokens
from semcached.providers import Request
from semcached.results import CompletionResult, LookupResult
from semcached.routing import Route, Router

log = logging.getLogger("semcached.accounting")


@dataclass(frozen=True)
class Context:
    """Who asked, where, and when the request started (time.perf_counter)."""

    namespace: str
    who: Who
    started: float


class Accounting:
    def __init__(self, prices: Prices, ledger: Ledger | None, budgets: Budgets,
                 metrics: Metrics | None) -> None:
        self.prices = prices
        self.ledger = ledger
        self.budgets = budgets
        self.metrics = metrics

    @classmethod
    def from_config(cls, config: Config, store: Callable[[], tuple[int, int]]) -> Accounting:
        """The price table (with the config's overrides), the ledger in the data
        directory, budgets reloaded from it, and metrics when a port is set."""
        prices = Prices.load(config.prices)
        ledger = None
        if config.ledger.enabled:
            try:
                ledger = Ledger(SQLiteLedger(data_dir(config) / "ledger.db"), config.ledger.flush_interval_ms,
                                config.ledger.keep_rows_days)
            except sqlite3.Error as e:
                raise ConfigError(f"cannot open the ledger {data_dir(config) / 'ledger.db'}: {e}") from None
        budgets = Budgets(config.budgets, ledger.store if ledger else None)
        metrics = None
        if config.server.metrics_port:
            known = {entry for models in config.tiers.values() for entry in models}
            metrics = Metrics(known, set(config.tiers), store)
        return cls(prices, ledger, budgets, metrics)

    def close(self) -> None:
        if self.ledger is not None:
            self.ledger.close()

    # -- before a miss goes upstream -----------------------------------------------------

    def admit(self, router: Router, route: Route, request: Request, who: Who,
              question: str) -> tuple[Route, Reservation]:
        """Reserves the estimated cost against the budgets; over one, rejects or moves
        the request to the cheapest tier, as the budget says."""
        reservation, over = self.budgets.reserve(who, self._estimate(route, request))
        if not over:
            return route, reservation
        if any(o.settings.action == "reject" for o in over):
            raise reject([o for o in over if o.settings.action == "reject"], who)
        cheapest = self.cheapest_tier(router)
        downgraded = router.route("", cheapest, question, None)
        reason = f"budget {over[0].name!r} exceeded: downgraded to the cheapest tier, {cheapest}"
        downgraded = Route(downgraded.tier, downgraded.targets, reason)
        # The downgrading budgets have had their say; the others (and the spend) still count.
        reservation, still_over = self.budgets.reserve(who, self._estimate(downgraded, request),
                                                       skip=frozenset(o.name for o in over))
        if still_over:
            raise reject(still_over, who)
        log.info("%s (%s)", reason, over[0].message(getattr(who, over[0].settings.scope)))
        return downgraded, reservation

    def cheapest_tier(self, router: Router) -> str:
        def cost(tier: str) -> float:
            price = self.prices.price(router.tiers[tier][0].name)
            return price.input + price.output if price else float("inf")

        return min(router.tiers, key=cost)

    def _estimate(self, route: Route, request: Request) -> float:
        price = self.prices.price(route.targets[0].name)
        if price is None:
            return 0.0  # unknown price: a budget cannot be enforced on it (warned once)
        prompt = sum(estimate_tokens(content) for _, content in request.messages)
        return price.cost(prompt, request.max_tokens or RESERVED_OUTPUT_TOKENS)

    # -- after a request ---------------------------------------------------------------

    def completed(self, ctx: Context, result: CompletionResult, request: Request,
                  hit_metadata: Mapping[str, str], reservation: Reservation | None, shared: bool) -> None:
        """Records a Complete; ``shared``: it waited on another request's upstream call."""
        prompt, completion, estimated = result.usage.prompt_tokens, result.usage.completion_tokens, False
        cost: float | None = 0.0
        avoided: float | None = None
        if result.hit:
            avoided = self._avoided(result.model, hit_metadata, result.matched_prompt, result.text)
        else:
            if prompt == 0 and completion == 0:  # the provider reported no usage
                prompt = sum(estimate_tokens(c) for _, c in request.messages)
                completion, estimated = estimate_tokens(result.text), True
            price = self.prices.price(result.model)
            full = price.cost(prompt, completion) if price else None
            cost, avoided = (0.0, full) if shared else (full, None)
        if reservation is not None:
            self.budgets.settle(reservation, cost or 0.0)
        self._row(ctx, result.model, result.tier, result.kind, result.similarity, prompt, completion,
                  estimated, cost, avoided, result.attempts, "complete")

    def looked_up(self, ctx: Context, result: LookupResult) -> None:
        model = result.metadata.get("model", "")
        avoided = self._avoided(model, result.metadata, result.matched_prompt, result.response) if result.hit else None
        self._row(ctx, model, result.metadata.get("tier", ""), result.kind, result.similarity,
                  0, 0, False, 0.0, avoided, 0, "lookup")

    def cut_short(self, ctx: Context, model: str, tier: str, request: Request, text: str, attempts: int,
                  reservation: Reservation | None) -> None:
        """Records a stream that stopped before its end (the client went away, or the
        upstream failed mid-answer): the provider bills the prompt and what it generated.
        Its usage comes only with the last chunk, so both are estimated from the texts."""
        prompt = sum(estimate_tokens(c) for _, c in request.messages)
        completion = estimate_tokens(text)
        price = self.prices.price(model)
        cost = price.cost(prompt, completion) if price else None
        if reservation is not None:
            self.budgets.settle(reservation, cost or 0.0)
        self._row(ctx, model, tier, "miss", 0.0, prompt, completion, True, cost, None, attempts, "complete")

    def failed(self, reservation: Reservation | None) -> None:
        if reservation is not None:
            self.budgets.settle(reservation, 0.0)

    def _avoided(self, model: str, metadata: Mapping[str, str], prompt: str, response: str) -> float | None:
        """What answering upstream would cost today: the cached answer's model and token
        counts (estimated from the texts when the entry has none), at today's price."""
        price = self.prices.price(model) if model else None
        if price is None:
            return None
        try:
            tokens = int(metadata["prompt_tokens"]), int(metadata["completion_tokens"])
        except (KeyError, ValueError):
            tokens = estimate_tokens(prompt), estimate_tokens(response)
        return price.cost(*tokens)

    def _row(self, ctx: Context, model: str, tier: str, kind: str, similarity: float, prompt: int,
             completion: int, estimated: bool, cost: float | None, avoided: float | None,
             attempts: int, rpc: str) -> None:
        latency = (time.perf_counter() - ctx.started) * 1000
        if self.ledger is not None:
            self.ledger.record(Row(now_ms(), ctx.who.tenant, ctx.who.user, ctx.who.feature, ctx.namespace,
                                   model, tier, kind, similarity, prompt, completion, estimated, cost,
                                   avoided, latency, attempts))
        if self.metrics is not None:
            m = self.metrics
            m.requests.labels(rpc, kind).inc()
            label, tier_label = m.model(model), m.tier(tier)
            if cost:
                m.spend.labels(label, tier_label).inc(cost)
            if avoided:
                m.savings.labels(label, tier_label).inc(avoided)
