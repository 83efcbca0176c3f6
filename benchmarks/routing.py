"""Routing: the classifier's accuracy and cost on labelled prompts, and what the routing
layer adds to a miss besides the provider's own time.

    .venv/bin/python benchmarks/routing.py [--data benchmarks/data/routing-eval.jsonl] [--requests 300]

* Accuracy: each prompt of the labelled file (JSON lines {"text", "tier"}, none of them an
  exemplar) is embedded with the default model and classified; it prints accuracy overall
  and per tier, the confusion matrix, and how many were decided by a rule.
* Cost: classify() per prompt, excluding the embedding (a miss already has it from the
  cache lookup).
* Routing overhead: sequential calls to a local fake OpenAI-compatible server (the test
  suite's, on 127.0.0.1), once straight through the SDK and once through the router
  (route, breaker, retry loop, error mapping); the difference of the medians is what the
  router adds. Then full Complete misses in-process: total time minus the provider's time
  is what semcached adds to a miss (embedding, lookup, classifier, routing, store).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import openai

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from semcached.fake_llm import API_KEY, FakeLLM  # noqa: E402

from semcached import config as configuration  # noqa: E402
from semcached.accounting import Accounting  # noqa: E402
from semcached.budgets import Budgets  # noqa: E402
from semcached.completion import Completions  # noqa: E402
from semcached.engine import Engine  # noqa: E402
from semcached.pricing import Prices  # noqa: E402
from semcached.providers import Request  # noqa: E402


def ms(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    return {"p50": round(statistics.median(values) * 1000, 3),
            "p99": round(values[min(len(values) - 1, int(len(values) * 0.99))] * 1000, 3)}


async def accuracy(completions: Completions, rows: list[tuple[str, str]]) -> dict[str, object]:
    classifier = completions.router.classifier
    assert classifier is not None
    vectors = completions.engine.embedder.embedder.embed([text for text, _ in rows])
    confusion: Counter[tuple[str, str]] = Counter()
    by_rule = 0
    costs = []
    for (text, truth), vector in zip(rows, vectors):
        started = time.perf_counter()
        decision = classifier.classify(text, vector)
        costs.append(time.perf_counter() - started)
        confusion[(truth, decision.tier)] += 1
        by_rule += decision.reason.startswith("rule:")
    tiers = sorted({tier for _, tier in rows})
    right = sum(n for (truth, got), n in confusion.items() if truth == got)
    embed_costs = []
    for text, _ in rows[:100]:
        started = time.perf_counter()
        completions.engine.embedder.embedder.embed([text])
        embed_costs.append(time.perf_counter() - started)
    return {
        "prompts": len(rows), "accuracy": round(right / len(rows), 4),
        "per_tier": {t: round(confusion[(t, t)] / sum(n for (truth, _), n in confusion.items() if truth == t), 4)
                     for t in tiers},
        "confusion": {truth: {got: confusion[(truth, got)] for got in tiers} for truth in tiers},
        "decided_by_rule": by_rule,
        "classify_ms": ms(costs),
        "embedding_ms_for_reference": ms(embed_costs),
    }


async def overhead(completions: Completions, fake: FakeLLM, requests: int) -> dict[str, object]:
    direct = openai.AsyncOpenAI(api_key=API_KEY, base_url=fake.base_url, max_retries=0)
    router = completions.router
    route = router.route("bench/gpt-4o-mini", "", "", None)
    request = Request([("user", "warm up")])
    sdk, routed = [], []
    for i in range(requests):  # interleaved, so drift on a noisy machine hits both alike
        body = Request([("user", f"question {i}")])
        started = time.perf_counter()
        await direct.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": f"q {i}"}])
        sdk.append(time.perf_counter() - started)
        started = time.perf_counter()
        await router.complete(route, body, None)
        routed.append(time.perf_counter() - started)
    await router.complete(route, request, None)
    await direct.close()
    totals, added = [], []
    for i in range(requests):
        messages = [("user", f"What is the population of city number {i} in the survey?")]
        started = time.perf_counter()
        result = await completions.complete("bench", Request(messages), model="bench/gpt-4o-mini")
        total = time.perf_counter() - started
        assert result.kind == "miss"
        totals.append(total)
    # upstream time of the answering attempt, from the router's own measurement
    for i in range(requests):
        messages = [("user", f"Which river flows through town number {i} on the map?")]
        started = time.perf_counter()
        answer = await router.complete(route, Request(messages), None)
        added.append(time.perf_counter() - started - answer.upstream_ms / 1000)
    return {
        "requests": requests, "sdk_direct_ms": ms(sdk), "through_router_ms": ms(routed),
        "router_added_ms_p50": round((statistics.median(routed) - statistics.median(sdk)) * 1000, 3),
        "router_outside_provider_call_ms": ms(added),
        "complete_miss_total_ms": ms(totals),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT / "benchmarks" / "data" / "routing-eval.jsonl")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "routing.json")
    args = parser.parse_args()
    rows = [(r["text"], r["tier"]) for r in map(json.loads, args.data.read_text().splitlines()) if r]
    fake = FakeLLM()
    with tempfile.TemporaryDirectory() as tmp:
        config_file = Path(tmp) / "c.toml"
        os.environ["BENCH_FAKE_KEY"] = API_KEY
        config_file.write_text(f'[providers.bench]\nkind = "openai"\nbase_url = "{fake.base_url}"\n'
                               'api_key_env = "BENCH_FAKE_KEY"\n'
                               '[tiers]\ncheap = ["bench/llama-3.1-8b"]\nstandard = ["bench/gpt-4o-mini"]\n'
                               'hard = ["bench/gpt-4o"]\ncode = ["bench/claude-sonnet"]\n'
                               f'[server]\ndata_dir = "{tmp}/data"\n[storage]\nfsync = "interval"\n')

        async def run() -> dict[str, Any]:
            engine = Engine.from_config(configuration.load(config_file))
            completions = Completions.build(engine, Accounting(Prices.load(), None, Budgets({}, None), None))
            try:
                return {"classifier": await accuracy(completions, rows),
                        "overhead": await overhead(completions, fake, args.requests)}
            finally:
                await completions.close()
                await engine.close()

        result = asyncio.run(run())
    fake.close()
    c, o = result["classifier"], result["overhead"]
    print(f"classifier: {c['accuracy']:.1%} right on {c['prompts']} prompts "
          f"({c['decided_by_rule']} by a rule); per tier {c['per_tier']}")
    print(f"  classify p50 {c['classify_ms']['p50']} ms p99 {c['classify_ms']['p99']} ms "
          f"(the embedding it reuses: p50 {c['embedding_ms_for_reference']['p50']} ms)")
    print(f"  confusion (row: labelled, column: chosen): {c['confusion']}")
    print(f"routing: SDK straight p50 {o['sdk_direct_ms']['p50']} ms, through the router "
          f"p50 {o['through_router_ms']['p50']} ms: +{o['router_added_ms_p50']} ms; "
          f"outside the provider call p50 {o['router_outside_provider_call_ms']['p50']} ms")
    print(f"a whole Complete miss p50 {o['complete_miss_total_ms']['p50']} ms "
          f"p99 {o['complete_miss_total_ms']['p99']} ms")
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
