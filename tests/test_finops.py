"""Money: prices and cost arithmetic, ledger rows for hits and misses, reports (RPC and
CLI), budgets under concurrent load, unknown prices, and metrics scraped over HTTP."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from conftest import ServerProcess
from semcached.local_server import free_port
from semcached.fake_llm import FakeLLM
from semcached import AsyncClient, Client, SemcachedError
from semcached.budgets import Budgets, Who
from semcached.config import BudgetSettings, ConfigError
from semcached.pricing import Price, Prices

# The fake answers "answer to: <q> [<model>]"; usage: words of q + 5, words of the answer.
M = "fake/gpt-4o-mini"  # priced as gpt-4o-mini: $0.15 / $0.60 per 1M tokens


def ask(q: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": q}]


def fake_cost(q: str, model: str = "gpt-4o-mini", price: Price = Price(0.15, 0.60)) -> float:
    prompt = len(q.split()) + 5
    completion = len(f"answer to: {q} [{model}]".split())
    return (prompt * price.input + completion * price.output) / 1e6


def test_prices_match_by_provider_name_and_prefix(caplog: pytest.LogCaptureFixture) -> None:
    prices = Prices.load({"my-model": {"input": 1.0, "output": 2.0}})
    assert prices.price("gpt-4o") == Price(2.50, 10.00, 1.25, 1.25, 5.00)
    assert prices.price("openai/gpt-4o-2024-08-06") == prices.price("gpt-4o")
    assert prices.price("openai/gpt-4o-mini").input == 0.15  # the longer name wins
    assert prices.price("anthropic/claude-3-5-sonnet-latest").output == 15.00
    assert prices.price("groq/llama-3.1-70b-versatile") == Price(0.59, 0.79, 0.59, 0.295, 0.395)
    assert prices.price("groq/llama-3.1-8b-instant").input == 0.05
    assert prices.price("claude-3-haiku").cost(1_000_000, 1_000_000) == pytest.approx(1.50)
    assert prices.price("my-model").cost(5250, 400) == pytest.approx((5250 * 1.0 + 400 * 2.0) / 1e6)
    assert prices.price("gpt-4o").cost(5250, 400) == pytest.approx(0.017125)  # by hand
    assert prices.price("gpt-4o").cost(5250, 400, batch=True) == pytest.approx(0.0085625)
    with caplog.at_level(logging.WARNING):
        assert prices.price("acme/mystery-1") is None
        assert prices.price("acme/mystery-1") is None
    assert sum("no price for model 'acme/mystery-1'" in r.message for r in caplog.records) == 1
    with pytest.raises(ConfigError, match="prices.bad needs output"):
        Prices.load({"bad": {"input": 1.0}})
    with pytest.raises(ConfigError, match="prices.neg.input must be a non-negative number"):
        Prices.load({"neg": {"input": -1, "output": 1}})


def test_cost_calculator_cli() -> None:
    result = subprocess.run([sys.executable, "-m", "semcached", "cost", "--model", "gpt-4o", "--input-tokens",
                             "5250", "--output-tokens", "400", "--requests-per-month", "100000",
                             "--compare", "claude-3-haiku", "gpt-4o-mini"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line.split() for line in result.stdout.splitlines()[2:]}
    assert lines["gpt-4o"][1:3] == ["0.017125", "1,712.50"]
    assert lines["claude-3-haiku"][1:4] == ["0.001813", "181.25", "1,531.25"]  # 5250×0.25 + 400×1.25
    assert lines["gpt-4o-mini"][1:4] == ["0.001027", "102.75", "1,609.75"]
    unknown = subprocess.run([sys.executable, "-m", "semcached", "cost", "--model", "nope", "--input-tokens", "1",
                              "--output-tokens", "1"], capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 2 and "no price for model 'nope'" in unknown.stderr


def test_budget_arithmetic_reserve_settle_and_periods() -> None:
    import datetime as dt
    budgets = Budgets({"b": BudgetSettings("user", "*", "day", 1.0, "reject")}, None)
    now = dt.datetime(2026, 12, 3, 15, 0, tzinfo=dt.UTC)
    r1, over = budgets.reserve(Who(user="ann"), 0.6, now)
    assert not over
    _, over = budgets.reserve(Who(user="ann"), 0.6, now)
    assert over and over[0].resets == dt.datetime(2026, 12, 4, tzinfo=dt.UTC)
    assert not budgets.reserve(Who(user="bob"), 0.6, now)[1]  # "*": each user has their own
    budgets.settle(r1, 0.1)  # the real cost was lower: room again
    assert not budgets.reserve(Who(user="ann"), 0.6, now)[1]
    assert not budgets.reserve(Who(user="ann"), 0.6, dt.datetime(2026, 12, 4, 0, 1, tzinfo=dt.UTC))[1]  # new day


@pytest.fixture
def finops_server(tmp_path: Path, fake_llm: FakeLLM) -> Iterator[ServerProcess]:
    metrics_port = free_port()
    proc = ServerProcess(tmp_path, fake_llm.base_url, config=f"""
[server]
metrics_port = {metrics_port}
[ledger]
flush_interval_ms = 50
[budgets.per-user]
scope = "user"
key = "*"
period = "day"
limit_usd = 0.001
action = "reject"
[budgets.bob]
scope = "user"
key = "bob"
period = "day"
limit_usd = 0.00005
action = "reject"
[budgets.summaries]
scope = "feature"
key = "summaries"
period = "month"
limit_usd = 0.0000001
action = "downgrade"
""")
    proc.metrics_port = metrics_port  # type: ignore[attr-defined]
    yield proc
    proc.stop()


def test_ledger_rows_report_and_metrics(finops_server: ServerProcess, fake_llm: FakeLLM) -> None:
    q = "How do refunds work for annual plans?"
    with Client(finops_server.target, namespace="shop") as c:
        miss = c.complete(ask(q), model=M, user="ann", feature="faq", tenant="acme")
        hit = c.complete(ask(q), model=M, user="ann", feature="faq", tenant="acme")
        assert (miss.kind, hit.kind) == ("miss", "exact")
        c.lookup(q, user="ann", feature="faq", tenant="acme")  # a Lookup miss: another partition
        unknown = c.complete(ask("Anything new?"), model="fake/mystery-model", user="cy")
        assert unknown.kind == "miss"
        by_user = {r.key: r for r in c.report("user").rows}
        report = c.report("user")
    expected = fake_cost(q)
    ann = by_user["ann"]
    assert (ann.requests, ann.exact_hits, ann.misses) == (3, 1, 2)
    assert ann.spend_usd == pytest.approx(expected)
    assert ann.savings_usd == pytest.approx(expected)  # the hit, at today's price
    assert ann.savings_pct == pytest.approx(50.0) and ann.hit_rate == pytest.approx(1 / 3)
    assert by_user["cy"].unknown_cost == 1 and by_user["cy"].spend_usd == 0
    assert report.total.requests == 4
    finops_server.stop()  # a clean shutdown writes every queued row
    db = sqlite3.connect(finops_server.data_dir / "ledger.db")
    rows = db.execute("SELECT tenant, user, feature, namespace, model, kind, prompt_tokens, completion_tokens, "
                      "cost_usd, cost_avoided_usd, attempts FROM requests WHERE user = 'ann' ORDER BY ts_ms").fetchall()
    prompt, completion = len(q.split()) + 5, len(f"answer to: {q} [gpt-4o-mini]".split())
    assert rows[0][:9] == ("acme", "ann", "faq", "shop", M, "miss", prompt, completion, pytest.approx(expected))
    assert rows[1][5] == "exact" and rows[1][8] == 0 and rows[1][9] == pytest.approx(expected)
    assert db.execute("SELECT cost_usd FROM requests WHERE user = 'cy'").fetchone() == (None,)
    assert "no price for model 'fake/mystery-model'" in finops_server.log.read_text()
    out = subprocess.run([sys.executable, "-m", "semcached", "report", "--by", "model", "--format", "json",
                          "--data-dir", str(finops_server.data_dir)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    models = {r["model"]: r for r in json.loads(out.stdout)["rows"]}
    assert models[M]["spend_usd"] == pytest.approx(expected) and models[M]["requests"] == 2
    table = subprocess.run([sys.executable, "-m", "semcached", "report", "--by", "day", "--since", "1d",
                            "--data-dir", str(finops_server.data_dir)], capture_output=True, text=True, timeout=60)
    assert table.returncode == 0 and "total" in table.stdout


def test_metrics_are_scraped_over_http(finops_server: ServerProcess) -> None:
    with Client(finops_server.target, namespace="m") as c:
        c.complete(ask("Metrics please?"), model=M, user="mo")
        c.complete(ask("Metrics please?"), model=M, user="mo")
        c.complete(ask("Unpriced?"), model="fake/elsewhere", user="mo")
        c.lookup("Metrics please?")
        entry = c.store("q", "a")
        c.feedback(entry.entry_id, correct=True)
    port = finops_server.metrics_port  # type: ignore[attr-defined]
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert 'semcached_requests_total{kind="miss",rpc="complete"} 2.0' in text
    assert 'semcached_requests_total{kind="exact",rpc="complete"} 1.0' in text
    assert f'semcached_spend_usd_total{{model="{M}",tier=""}}' in text  # a model of a tier: its own label
    assert f'semcached_upstream_calls_total{{model="{M}",result="ok"}} 1.0' in text
    assert 'semcached_upstream_calls_total{model="other",result="ok"} 1.0' in text  # bounded labels
    assert 'semcached_latency_seconds_bucket{le="0.005",stage="lookup"}' in text
    assert 'semcached_latency_seconds_count{stage="upstream"} 2.0' in text
    assert 'semcached_latency_seconds_count{stage="embedding"}' in text
    assert 'semcached_feedback_total{correct="true"} 1.0' in text
    assert "semcached_entries 3.0" in text
    assert 'semcached_embedding_cache_total{result="miss"}' in text


def test_budgets_reject_and_downgrade_under_concurrent_load(finops_server: ServerProcess) -> None:
    per_request = fake_cost("Burst question number 10 please?")  # about 1.2e-5

    async def burst() -> list[object]:
        async with AsyncClient(finops_server.target, namespace="b") as c:
            # max_tokens makes the reserved estimate close to the real cost (~1.3e-5).
            return await asyncio.gather(*(c.complete(ask(f"Burst question number {i} please?"), model=M,
                                                     user="bob", max_tokens=20)
                                          for i in range(10, 30)), return_exceptions=True)

    results = asyncio.run(burst())
    served = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, SemcachedError)]
    assert served and refused and len(served) + len(refused) == 20
    assert all(e.code == grpc.StatusCode.RESOURCE_EXHAUSTED for e in refused)
    message = refused[0].message
    assert "budget 'bob' (user bob, daily) is $5e-05; $0.0000" in message and "resets at" in message
    with Client(finops_server.target, namespace="b") as c:
        spent = c.report("user").rows
        bob = next(r for r in spent if r.key == "bob")
        assert bob.spend_usd <= 0.00005 + per_request  # overshoot: at most one request
        # A hit never counts: a question already answered is still served.
        answered = str(served[0].text).removeprefix("answer to: ").split(" [")[0]  # type: ignore[attr-defined]
        assert c.complete(ask(answered), model=M, user="bob", max_tokens=20).kind == "exact"
        down = c.complete(ask("Summarize the quarterly report"), tier="hard", feature="summaries", user="dee",
                          max_tokens=20)
        assert down.tier == "standard"  # the cheapest priced tier of the test config
        assert down.route_reason == "budget 'summaries' exceeded: downgraded to the cheapest tier, standard"
        # The cheaper answer is not cached as the hard tier's: a user within budget gets a real one.
        again = c.complete(ask("Summarize the quarterly report"), tier="hard", user="eve", max_tokens=20)
        assert (again.kind, again.tier) == ("miss", "hard")


def test_reports_combine_hourly_sums_with_the_part_hour(tmp_path: Path) -> None:
    from semcached.ledger import Row, SQLiteLedger

    def row(ts_ms: int, user: str, kind: str, cost: float | None, avoided: float | None) -> Row:
        return Row(ts_ms, "t", user, "f", "ns", "openai/gpt-4o", "hard", kind, 0.0, 10, 5, False,
                   cost, avoided, 1.0, 1)

    hour = 3_600_000
    ledger = SQLiteLedger(tmp_path / "ledger.db")
    ledger.write([row(10 * hour + 100, "ann", "miss", 1.0, None), row(10 * hour + 900, "ann", "exact", 0.0, 1.0),
                  row(10 * hour + 200, "ann", "miss", 2.0, None),  # summed with the first: same hour and names
                  row(11 * hour + 5, "bob", "miss", None, None), row(12 * hour, "ann", "semantic", 0.0, None)])
    ledger.write([row(12 * hour + 1, "ann", "miss", 0.5, None)])  # a second batch adds to the same hour
    everything = {r.key: r for r in ledger.report("user", 0, 0).rows}
    ann = everything["ann"]
    assert (ann.requests, ann.exact_hits, ann.semantic_hits, ann.misses) == (5, 1, 1, 3)
    assert (ann.spend_usd, ann.savings_usd, ann.unknown_cost) == (3.5, 1.0, 1)  # the semantic hit: unpriced
    kinds = {r.key: (r.requests, r.spend_usd) for r in ledger.report("kind", 0, 0).rows}
    assert kinds == {"miss": (4, 3.5), "exact": (1, 0.0), "semantic": (1, 0.0)}
    assert [(r.key, r.requests) for r in ledger.report("day", 0, 0).rows] == [("1970-01-01", 6)]
    assert everything["bob"].unknown_cost == 1
    # From the middle of hour 10: the rest of hour 10 comes from the rows, later hours from the sums.
    part = {r.key: r for r in ledger.report("user", 10 * hour + 500, 0).rows}
    assert (part["ann"].requests, part["ann"].spend_usd) == (3, 0.5)
    assert ledger.spend("user", 10 * hour + 500) == {"ann": 0.5, "bob": 0.0}
    assert [r.key for r in ledger.report("user", 0, 1).rows] == ["ann"]  # top 1 by spend
    with pytest.raises(ValueError, match="cannot group by"):
        ledger.report("prompt", 0, 0)


def test_old_rows_are_deleted_and_their_hourly_sums_kept(tmp_path: Path) -> None:
    from semcached.ledger import Ledger, Row, SQLiteLedger, now_ms

    day = 86_400_000
    now = now_ms()

    def row(ts_ms: int, cost: float) -> Row:
        return Row(ts_ms, "t", "ann", "f", "ns", "openai/gpt-4o", "hard", "miss", 0.0, 10, 5, False,
                   cost, None, 1.0, 1)

    store = SQLiteLedger(tmp_path / "ledger.db")
    store.write([row(now - 3 * day, 1.0), row(now - 2 * day, 2.0), row(now - 1000, 4.0)])
    ledger = Ledger(store, 10_000, keep_rows_days=1)
    try:
        assert ledger.prune()  # all gone in one pass
        # A backlog larger than a pass (50,000 rows) takes passes in a row, the thread
        # writing new rows in between.
        store.write([row(now - 2 * day - i, 0.0) for i in range(60_000)])
        assert not ledger.prune()
        assert ledger.prune()
        db = sqlite3.connect(tmp_path / "ledger.db")
        assert [r[0] for r in db.execute("SELECT cost_usd FROM requests")] == [4.0]
        db.close()
        # Reports over the deleted days still count them, from the hourly sums.
        ann = store.report("user", 0, 0).rows[0]
        assert (ann.requests, ann.spend_usd) == (60_003, 7.0)
    finally:
        ledger.close()
    keep_all = Ledger(SQLiteLedger(tmp_path / "other.db"), 10_000, keep_rows_days=0)
    keep_all.store.write([row(now - 300 * day, 1.0)])
    assert keep_all.prune()
    keep_all.close()
    assert sqlite3.connect(tmp_path / "other.db").execute("SELECT COUNT(*) FROM requests").fetchone() == (1,)
