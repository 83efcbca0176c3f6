"""Spending limits per user, feature or tenant, per UTC day or month.

Before a miss goes upstream, its cost is estimated (prompt tokens at about 4 characters
each, plus max_tokens or RESERVED_OUTPUT_TOKENS of output, at the first model's price)
and reserved against every budget that applies; the answer's real cost then replaces the
reservation. Checking and reserving happen in one step on the event loop, so a burst of
concurrent requests sees each other's reservations: a budget is overshot by at most the
difference between one request's estimate and its real cost. Hits never count.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from semcached.config import BudgetSettings
from semcached.errors import ResourceExhausted
from semcached.ledger import LedgerStore


@dataclass(frozen=True)
class Who:
    user: str = ""
    feature: str = ""
    tenant: str = ""


@dataclass
class Reservation:
    """What one request holds against its budgets until it settles."""

    amount: float
    keys: list[tuple[str, str, int]] = field(default_factory=list)  # (budget, who, period start)


@dataclass(frozen=True)
class Over:
    """A budget the request would exceed."""

    name: str
    settings: BudgetSettings
    spent: float
    resets: dt.datetime

    def message(self, who: str) -> str:
        per = {"day": "daily", "month": "monthly"}[self.settings.period]
        return (f"budget {self.name!r} ({self.settings.scope} {who}, {per}) "
                f"is ${self.settings.limit_usd:g}; ${self.spent:.6f} is spent or reserved; "
                f"it resets at {self.resets:%Y-%m-%dT%H:%M:%SZ}")


def period_start(period: str, now: dt.datetime) -> dt.datetime:
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return day if period == "day" else day.replace(day=1)


def period_end(period: str, start: dt.datetime) -> dt.datetime:
    if period == "day":
        return start + dt.timedelta(days=1)
    return (start.replace(day=28) + dt.timedelta(days=4)).replace(day=1)


class Budgets:
    def __init__(self, settings: dict[str, BudgetSettings], ledger: LedgerStore | None) -> None:
        self.settings = settings
        self._spent: dict[tuple[str, str, int], float] = {}
        now = dt.datetime.now(dt.UTC)
        if ledger is not None:  # what this period spent before a restart still counts
            for name, b in settings.items():
                start = period_start(b.period, now)
                for who, spent in ledger.spend(b.scope, int(start.timestamp() * 1000)).items():
                    self._spent[(name, who, int(start.timestamp()))] = spent

    def reserve(self, who: Who, estimate: float, now: dt.datetime | None = None,
                skip: frozenset[str] = frozenset()) -> tuple[Reservation, list[Over]]:
        """Reserves ``estimate`` against every budget for ``who`` (but those in
        ``skip``), or lists those it would exceed and reserves nothing: the caller
        rejects, or downgrades and reserves again skipping the downgrading budgets."""
        now = now or dt.datetime.now(dt.UTC)
        keys, over = [], []
        for name, b in self.settings.items():
            if name in skip:
                continue
            value = getattr(who, b.scope)
            if b.key != "*" and value != b.key:
                continue
            start = period_start(b.period, now)
            key = (name, value, int(start.timestamp()))
            spent = self._spent.get(key, 0.0)
            if spent + estimate > b.limit_usd:
                over.append(Over(name, b, spent, period_end(b.period, start)))
            keys.append(key)
        if over:
            return Reservation(0.0), over
        for key in keys:
            self._spent[key] = self._spent.get(key, 0.0) + estimate
        return Reservation(estimate, keys), []

    def settle(self, reservation: Reservation, cost: float) -> None:
        """Replaces the reservation by the real cost (0 when the call failed)."""
        for key in reservation.keys:
            self._spent[key] = self._spent.get(key, 0.0) - reservation.amount + cost
        reservation.keys = []


def reject(over: list[Over], who: Who) -> ResourceExhausted:
    first = over[0]
    return ResourceExhausted(first.message(getattr(who, first.settings.scope) or "(unnamed)"))
