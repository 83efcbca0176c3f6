"""The cost ledger: one row per request, hit or miss, and the reports over it.

Rows are queued by the request path and written in batches by a background thread, one
transaction per batch, so a request never waits on the disk for accounting. A clean
shutdown writes everything queued; a crash can lose the rows of the last flush interval
(``ledger.flush_interval_ms``), never a row already written (SQLite, WAL mode).

``LedgerStore`` is the storage interface: SQLite in the data directory is the embedded
default; a fleet can put a server database behind the same few methods.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass, fields
from operator import attrgetter
from pathlib import Path
from typing import NamedTuple, Protocol

log = logging.getLogger("semcached.ledger")

GROUPS = ("user", "feature", "tenant", "model", "tier", "namespace", "day", "kind")


class Row(NamedTuple):
    """One request. A tuple, because one is made per request (a frozen dataclass's
    constructor cost a tenth of an exact hit's handler) and SQLite takes it as it is."""

    ts_ms: int
    tenant: str
    user: str
    feature: str
    namespace: str
    model: str  # "<provider>/<model>"; on a hit, the model that made the cached answer
    tier: str
    kind: str  # exact | semantic | miss
    similarity: float
    prompt_tokens: int
    completion_tokens: int
    tokens_estimated: bool  # the provider reported no usage: about 4 characters a token
    cost_usd: float | None  # what this request spent upstream; None: the model has no price
    cost_avoided_usd: float | None  # on a hit: what answering it upstream would cost today
    latency_ms: float
    attempts: int


@dataclass(frozen=True)
class ReportRow:
    key: str
    requests: int
    exact_hits: int
    semantic_hits: int
    misses: int
    spend_usd: float
    savings_usd: float
    unknown_cost: int  # requests whose model has no price

    @property
    def hit_rate(self) -> float:
        return (self.exact_hits + self.semantic_hits) / self.requests if self.requests else 0.0

    @property
    def savings_pct(self) -> float:
        total = self.spend_usd + self.savings_usd
        return 100 * self.savings_usd / total if total else 0.0


@dataclass(frozen=True)
class Report:
    by: str
    since_ms: int
    rows: list[ReportRow]  # most spend first
    total: ReportRow


class LedgerStore(Protocol):
    def write(self, rows: list[Row]) -> None: ...
    def prune(self, before_ms: int, limit: int) -> int: ...
    def report(self, by: str, since_ms: int, limit: int) -> Report: ...
    def spend(self, scope: str, since_ms: int) -> dict[str, float]: ...
    def close(self) -> None: ...


_COLUMNS = list(Row._fields)
_HOUR_MS = 3_600_000
# Old rows are deleted this many at a time (~10 ms), a few chunks a pass, so the thread
# soon goes back to writing new rows (a crash loses only what it has not written) and a
# shutdown waits for one pass at most; a backlog (a first prune) takes passes in a row.
_PRUNE_CHUNK = 10_000
_PRUNE_CHUNKS_A_PASS = 5
_PRUNE_EVERY_S = 600.0
# Per hour and group: requests, exact hits, semantic hits, misses, spend, savings, unpriced.
_SUMS = ["requests", "exact_hits", "semantic_hits", "misses", "spend_usd", "savings_usd", "unknown_cost"]
_SUMS_DDL = ", ".join(f"{c} REAL NOT NULL" for c in _SUMS)


def _key(r: Row, by: str) -> str:
    if by == "day":
        return _day(r.ts_ms // _HOUR_MS)
    return str(getattr(r, by))


def _day(hour: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(hour * 3600))


# A row's place in every grouping at once (the day follows from the hour): most rows of a
# batch share it (the same tenant, user, feature, model and kind), so they are summed once
# per place.
_PLACE = tuple(by for by in GROUPS if by != "day")
_place = attrgetter(*_PLACE)


def _unpriced(r: Row) -> bool:
    return r.cost_usd is None if r.kind == "miss" else r.cost_avoided_usd is None


def _contribution(kind: str, requests: float, spend: float, savings: float, unpriced: float) -> tuple[float, ...]:
    """What ``requests`` rows of one kind add to the sums (in _SUMS order)."""
    return (requests, requests * (kind == "exact"), requests * (kind == "semantic"), requests * (kind == "miss"),
            spend, savings, unpriced)


_TYPES = {"ts_ms": "INTEGER", "similarity": "REAL", "prompt_tokens": "INTEGER",
          "completion_tokens": "INTEGER", "tokens_estimated": "INTEGER", "cost_usd": "REAL",
          "cost_avoided_usd": "REAL", "latency_ms": "REAL", "attempts": "INTEGER"}


class SQLiteLedger:
    def __init__(self, path: Path, readonly: bool = False) -> None:
        self.path = path
        if readonly:
            if not path.exists():
                raise FileNotFoundError(f"no ledger at {path}")
            self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        else:
            self._db = sqlite3.connect(path, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL: a crash loses no committed batch
            columns = ", ".join(f"{c} {_TYPES.get(c, 'TEXT')}" for c in _COLUMNS)
            self._db.execute(f"CREATE TABLE IF NOT EXISTS requests ({columns})")
            self._db.execute("CREATE INDEX IF NOT EXISTS requests_ts ON requests (ts_ms)")
            for by in GROUPS:
                self._db.execute(f"CREATE TABLE IF NOT EXISTS hourly_{by} (hour INTEGER, key TEXT, {_SUMS_DDL}, "
                                 "PRIMARY KEY (hour, key)) WITHOUT ROWID")
            self._db.commit()
        self._lock = threading.Lock()

    def write(self, rows: list[Row]) -> None:
        """The rows, and in the same transaction the hourly sums of every grouping, so
        a report reads a few thousand sums instead of millions of rows."""
        marks = ", ".join("?" for _ in _COLUMNS)
        places: dict[tuple[int, tuple[str, ...]], list[float]] = {}
        for r in rows:
            key = (r.ts_ms // _HOUR_MS, _place(r))
            acc = places.get(key)
            if acc is None:
                acc = places[key] = [0.0] * 4
            acc[0] += 1
            acc[1] += r.cost_usd or 0.0
            acc[2] += r.cost_avoided_usd or 0.0
            acc[3] += _unpriced(r)
        sums: dict[tuple[str, int, str], list[float]] = {}
        for (hour, place), totals in places.items():
            keys = dict(zip(_PLACE, map(str, place)), day=_day(hour))
            contribution = _contribution(keys["kind"], *totals)
            for by in GROUPS:
                acc = sums.setdefault((by, hour, keys[by]), [0.0] * 7)
                for i, value in enumerate(contribution):
                    acc[i] += value
        with self._lock, self._db:
            self._db.executemany(f"INSERT INTO requests VALUES ({marks})", rows)
            for by in GROUPS:
                self._db.executemany(
                    f"INSERT INTO hourly_{by} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (hour, key) DO UPDATE "
                    f"SET {', '.join(f'{c} = {c} + excluded.{c}' for c in _SUMS)}",
                    [(hour, key, *acc) for (b, hour, key), acc in sums.items() if b == by])

    def prune(self, before_ms: int, limit: int) -> int:
        """Deletes up to ``limit`` rows from before a time (their hourly sums stay), in one
        transaction; returns how many. Freed pages are reused by later rows: the file stops
        growing."""
        with self._lock, self._db:
            return self._db.execute("DELETE FROM requests WHERE rowid IN (SELECT rowid FROM requests "
                                    "WHERE ts_ms < ? LIMIT ?)", (before_ms, limit)).rowcount

    def report(self, by: str, since_ms: int, limit: int) -> Report:
        rows = sorted((ReportRow(key, int(n), int(exact), int(semantic), int(misses), spend, savings, int(unpriced))
                       for key, (n, exact, semantic, misses, spend, savings, unpriced)
                       in self._grouped(by, since_ms).items()),
                      key=lambda r: (-r.spend_usd, -r.requests))
        total = ReportRow("total", *(sum(getattr(r, f.name) for r in rows) for f in fields(ReportRow)[1:]))
        return Report(by, since_ms, rows[:limit] if limit else rows, total)

    def spend(self, scope: str, since_ms: int) -> dict[str, float]:
        """Spend per user, feature or tenant since a time (budgets reload it at start)."""
        if scope not in ("user", "feature", "tenant"):
            raise ValueError(scope)
        return {key: sums[4] for key, sums in self._grouped(scope, since_ms).items()}

    def _grouped(self, by: str, since_ms: int) -> dict[str, list[float]]:
        """Sums per group since a time: whole hours from the hourly table, the part
        hour before them from the rows themselves."""
        if by not in GROUPS:
            raise ValueError(f"cannot group by {by!r}; use one of {', '.join(GROUPS)}")
        first_hour = -(-since_ms // _HOUR_MS)
        out: dict[str, list[float]] = {}
        with self._lock:
            whole = self._db.execute(f"SELECT key, {', '.join(f'TOTAL({c})' for c in _SUMS)} FROM hourly_{by} "
                                     "WHERE hour >= ? GROUP BY key", (first_hour,)).fetchall()
            part = self._db.execute("SELECT * FROM requests WHERE ts_ms >= ? AND ts_ms < ?",
                                    (since_ms, first_hour * _HOUR_MS)).fetchall()
        for key, *values in whole:
            out[str(key)] = list(values)
        for raw in part:
            r = Row(*raw)
            acc = out.setdefault(_key(r, by), [0.0] * 7)
            for i, value in enumerate(_contribution(r.kind, 1, r.cost_usd or 0.0, r.cost_avoided_usd or 0.0,
                                                     _unpriced(r))):
                acc[i] += value
        return out

    def close(self) -> None:
        with self._lock:
            self._db.close()


class Ledger:
    """Queues rows and writes them in batches on a thread of its own."""

    def __init__(self, store: LedgerStore, flush_interval_ms: int, keep_rows_days: int = 0) -> None:
        self.store = store
        self._interval = flush_interval_ms / 1000
        self._keep_ms = keep_rows_days * 24 * _HOUR_MS
        self._pruned_at = -_PRUNE_EVERY_S  # prune at the first flush after start
        self._queue: list[Row] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ledger", daemon=True)
        self._thread.start()

    def record(self, row: Row) -> None:
        with self._lock:
            self._queue.append(row)

    def flush(self) -> None:
        with self._lock:
            rows, self._queue = self._queue, []
        if rows:
            try:
                self.store.write(rows)
            except Exception as e:  # a full disk, a locked file: keep the rows for the next try
                log.error("could not write %d ledger rows (will retry): %s", len(rows), e)
                with self._lock:
                    self._queue[:0] = rows

    def prune(self) -> bool:
        """One pass over the rows older than ``keep_rows_days`` (none when it is 0).
        Returns whether all of them are gone."""
        if not self._keep_ms:
            return True
        before = now_ms() - self._keep_ms
        try:
            for _ in range(_PRUNE_CHUNKS_A_PASS):
                if self.store.prune(before, _PRUNE_CHUNK) < _PRUNE_CHUNK:
                    return True
                if self._stop.is_set():
                    break
        except Exception as e:  # a locked or full disk: rows stay until the next try
            log.error("could not delete old ledger rows (will retry): %s", e)
        return False

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.flush()
            if time.monotonic() - self._pruned_at >= _PRUNE_EVERY_S and self.prune():
                self._pruned_at = time.monotonic()  # else: the next pass after the next flush

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.flush()
        self.store.close()


def now_ms() -> int:
    return int(time.time() * 1000)
