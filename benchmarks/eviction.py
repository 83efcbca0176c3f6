"""Eviction policies on a Zipfian trace with one-off scans mixed in, through the real core.

    python benchmarks/eviction.py --keys 100000 --requests 1000000 --alpha 0.9

Each request is an exact lookup; a miss stores the entry (as a cache in front of an LLM
does). Every ``--scan-every`` requests a scan of ``--scan-length`` keys that are never asked
again passes through (a batch job, a crawler). Reports the hit rate of each policy at each
cache size, over all requests and over the Zipfian requests alone. Writes JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from semcached import _core


def trace(keys: int, requests: int, alpha: float, scan_every: int, scan_length: int,
          seed: int) -> tuple[list[str], list[bool]]:
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, keys + 1) ** alpha
    popular = rng.choice(keys, size=requests, p=weights / weights.sum())
    prompts: list[str] = []
    is_scan: list[bool] = []
    scans = 0
    for i, k in enumerate(popular):
        if scan_every and i % scan_every == 0 and i:
            prompts.extend(f"scan {scans} item {j}" for j in range(scan_length))
            is_scan.extend([True] * scan_length)
            scans += 1
        prompts.append(f"question {k}")
        is_scan.append(False)
    return prompts, is_scan


def replay(policy: str, capacity: int, prompts: list[str], is_scan: list[bool]) -> dict[str, Any]:
    store = _core.Store(capacity, policy=policy)
    hits = zipf_hits = zipf_requests = 0
    start = time.perf_counter()
    for prompt, scan in zip(prompts, is_scan):
        hit = store.get_exact("ns", prompt) is not None
        if not hit:
            store.insert("ns", prompt, "answer", b"", "m")
        hits += hit
        if not scan:
            zipf_requests += 1
            zipf_hits += hit
    return {"policy": policy, "capacity": capacity,
            "hit_rate": round(hits / len(prompts), 4),
            "zipf_hit_rate": round(zipf_hits / zipf_requests, 4),
            "seconds": round(time.perf_counter() - start, 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--keys", type=int, default=100_000)
    p.add_argument("--requests", type=int, default=1_000_000)
    p.add_argument("--alpha", type=float, default=0.9)
    p.add_argument("--scan-every", type=int, default=20_000)
    p.add_argument("--scan-length", type=int, default=5_000)
    p.add_argument("--capacities", default="0.01,0.05,0.1", help="fractions of --keys")
    p.add_argument("--json", default="benchmarks/results/eviction.json")
    args = p.parse_args()
    prompts, is_scan = trace(args.keys, args.requests, args.alpha, args.scan_every, args.scan_length, 1)
    print(f"{len(prompts)} requests ({sum(is_scan)} in scans), {args.keys} keys, alpha {args.alpha}")
    print(f"{'capacity':>9} {'policy':>7} {'hit rate':>9} {'zipf only':>10}")
    rows = []
    for fraction in (float(f) for f in args.capacities.split(",")):
        capacity = max(1, int(args.keys * fraction))
        for policy in ("lru", "s3fifo"):
            r = replay(policy, capacity, prompts, is_scan)
            rows.append(r)
            print(f"{capacity:>9} {policy:>7} {r['hit_rate']:>9.4f} {r['zipf_hit_rate']:>10.4f}", flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"settings": vars(args), "results": rows}, indent=2))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
