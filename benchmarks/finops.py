"""FinOps: a cost report from a workload run through a real server, and report speed on a
large ledger.

    .venv/bin/python benchmarks/finops.py [--requests 2000] [--ledger-rows 1000000]

* Workload: a server (temporary data directory, free port) in front of the test suite's
  fake OpenAI-compatible provider (127.0.0.1, usage-reporting answers); Complete requests
  from 3 features and 20 users, questions drawn with Zipf-like popularity from a pool
  (repeats become exact hits), routed by the classifier over tiers priced as gpt-4o-mini,
  gpt-4o and llama-3.1-8b on Groq. Prints `semcached report` by feature and by model:
  spend, savings (what the hits would have cost), savings %.
* Report speed: a synthetic ledger of --ledger-rows rows (one week, realistic columns),
  then each report grouping timed (median of 3).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from conftest import ServerProcess  # noqa: E402
from semcached.fake_llm import API_KEY, FakeLLM  # noqa: E402

from semcached import Client  # noqa: E402
from semcached.ledger import GROUPS, Row, SQLiteLedger, now_ms  # noqa: E402

TOPICS = ["reset my password", "export my invoices", "change the billing email", "cancel my subscription",
          "add a team member", "enable two-factor login", "download the mobile app", "connect Slack",
          "upgrade to the annual plan", "delete a project", "restore a deleted file", "change my timezone",
          "set up single sign-on", "get a refund", "increase the upload limit", "rotate an API key"]
ASKS = ["How do I {}?", "What are the steps to {}?", "Can you explain how to {}?", "Is it possible to {}?"]


def workload(target: str, requests: int, seed: int) -> None:
    rng = random.Random(seed)
    pool = [ask.format(topic) for topic in TOPICS for ask in ASKS]
    weights = [1 / (rank + 1) for rank in range(len(pool))]
    features = ["helpdesk", "onboarding", "billing"]
    with Client(target, namespace="support") as c:
        for _ in range(requests):
            q = rng.choices(pool, weights)[0]
            c.complete([{"role": "user", "content": q}], user=f"user{rng.randrange(20)}",
                       feature=rng.choice(features), tenant="acme", max_tokens=300)


def report(data_dir: Path, by: str) -> str:
    out = subprocess.run([sys.executable, "-m", "semcached", "report", "--by", by, "--since", "all",
                          "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=120)
    return out.stdout + out.stderr


def report_speed(rows: int, folder: Path) -> dict[str, float]:
    ledger = SQLiteLedger(folder / "ledger.db")
    rng = random.Random(7)
    start = now_ms() - 7 * 86400 * 1000
    models = ["openai/gpt-4o-mini", "openai/gpt-4o", "groq/llama-3.1-8b-instant", "anthropic/claude-3-5-sonnet"]
    batch = []
    for i in range(rows):
        kind = rng.choices(["exact", "semantic", "miss"], [3, 2, 5])[0]
        cost = rng.random() * 0.01 if kind == "miss" else 0.0
        batch.append(Row(start + i * 600, f"tenant{rng.randrange(10)}", f"user{rng.randrange(2000)}",
                         f"feature{rng.randrange(20)}", f"ns{rng.randrange(50)}", rng.choice(models),
                         rng.choice(["cheap", "standard", "hard", "code"]), kind, rng.random(), 500, 200,
                         False, cost, 0.0 if kind == "miss" else rng.random() * 0.01, 12.0, 1))
        if len(batch) == 50_000:
            ledger.write(batch)
            batch = []
    if batch:
        ledger.write(batch)
    timings = {}
    for by in GROUPS:
        runs = []
        for _ in range(3):
            started = time.perf_counter()
            ledger.report(by, 0, 10)
            runs.append(time.perf_counter() - started)
        timings[by] = round(statistics.median(runs) * 1000, 1)
    ledger.close()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--ledger-rows", type=int, default=1_000_000)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "finops.json")
    args = parser.parse_args()
    result: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="semcached-finops-") as tmp:
        fake = FakeLLM()
        os.environ["BENCH_FAKE_KEY"] = API_KEY
        config = (f'[providers.openai]\nkind = "openai"\nbase_url = "{fake.base_url}"\napi_key_env = "BENCH_FAKE_KEY"\n'
                  f'[providers.groq]\nkind = "openai"\nbase_url = "{fake.base_url}"\napi_key_env = "BENCH_FAKE_KEY"\n'
                  '[tiers]\ncheap = ["groq/llama-3.1-8b-instant"]\nstandard = ["openai/gpt-4o-mini"]\n'
                  'hard = ["openai/gpt-4o"]\ncode = ["openai/gpt-4o"]\n[storage]\nfsync = "interval"\n')
        server = ServerProcess(Path(tmp) / "server", None, config=config)
        started = time.perf_counter()
        try:
            workload(server.target, args.requests, seed=1)
        finally:
            server.stop()
            fake.close()
        elapsed = time.perf_counter() - started
        by_feature, by_model = report(server.data_dir, "feature"), report(server.data_dir, "model")
        print(f"{args.requests} Complete requests in {elapsed:.1f} s\n\nby feature:\n{by_feature}\nby model:\n{by_model}")
        out = subprocess.run([sys.executable, "-m", "semcached", "report", "--by", "model", "--since", "all",
                              "--format", "json", "--data-dir", str(server.data_dir)],
                             capture_output=True, text=True, timeout=120)
        result["workload"] = {"requests": args.requests, "seconds": round(elapsed, 1),
                              "report_by_model": json.loads(out.stdout)}
        if args.ledger_rows:
            timings = report_speed(args.ledger_rows, Path(tmp))
            print(f"report on a {args.ledger_rows:,}-row ledger, ms (median of 3): {timings}")
            result["report_ms"] = {"rows": args.ledger_rows, **timings}
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
