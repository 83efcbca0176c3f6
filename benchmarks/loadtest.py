"""Load test: drives a semcached server over gRPC with exact hits, semantic hits and misses.

By default it starts its own server (temporary data dir, free 127.0.0.1 port) so it can
also read the server's memory; ``--target`` drives a server that is already running.
Each path runs closed-loop at each chosen concurrency for ``--duration`` seconds, from
``--processes`` client processes. Prints a table and writes JSON. Traffic goes only to
the target, which must be on this machine.

    python benchmarks/loadtest.py --concurrency 1,16 --duration 10 --bulk 100000
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import multiprocessing
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from semcached.local_server import LocalServer
from semcached.v1 import semcached_pb2 as pb
from semcached.v1 import semcached_pb2_grpc as pb_grpc

VERBS = ["reset", "change", "recover", "update", "delete", "export", "verify", "link", "unlock", "rename"]
NOUNS = ["password", "email address", "billing details", "profile photo", "API key", "phone number",
         "shipping address", "username", "security questions", "payment card"]
PLACES = ["mobile app", "web dashboard", "desktop client", "admin console", "partner portal",
          "support site", "team workspace", "developer console", "billing page", "settings page"]
NAMESPACE = "loadtest"


def stored_prompt(i: int) -> str:
    v, n, p = VERBS[i % 10], NOUNS[(i // 10) % 10], PLACES[(i // 100) % 10]
    return f"How do I {v} my {n} in the {p}? (case {i // 1000})"


def query(path: str, i: int, rng: random.Random) -> str:
    if path == "exact":
        return stored_prompt(i).upper()  # same normal form, different bytes
    if path == "semantic":
        v, n, p = VERBS[i % 10], NOUNS[(i // 10) % 10], PLACES[(i // 100) % 10]
        return f"what's the way to {v} my {n} in the {p} (case {i // 1000})"
    words = rng.sample(["zebra", "quantum", "saffron", "glacier", "violin", "orbit", "lantern",
                        "meadow", "cobalt", "harbor", "pixel", "thunder"], 5)
    return f"{' '.join(words)} {rng.randrange(10**9)}?"


async def _drive(target: str, path: str, concurrency: int, duration: float, entries: int,
                 seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    latencies: list[float] = []
    kinds: dict[str, int] = {}
    errors = 0
    # Zipf-like popularity over the seeded entries: a few are asked far more than most.
    population = range(entries)
    cumulative = list(itertools.accumulate(1 / (k + 1) for k in population))
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.SemanticCacheStub(channel)
        stop_at = time.perf_counter() + duration

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < stop_at:
                i = rng.choices(population, cum_weights=cumulative)[0]
                request = pb.LookupRequest(namespace=NAMESPACE, prompt=query(path, i, rng))
                start = time.perf_counter()
                try:
                    response = await stub.Lookup(request, timeout=30)
                except grpc.RpcError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - start)
                kind = pb.HitKind.Name(response.kind).removeprefix("HIT_KIND_").lower()
                kinds[kind] = kinds.get(kind, 0) + 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {"latencies": latencies, "kinds": kinds, "errors": errors}


def _drive_process(args: tuple[str, str, int, float, int, int]) -> dict[str, Any]:
    return asyncio.run(_drive(*args))


def run_path(target: str, path: str, concurrency: int, duration: float, entries: int,
             processes: int) -> dict[str, Any]:
    processes = max(1, min(processes, concurrency))
    shares = [concurrency // processes + (p < concurrency % processes) for p in range(processes)]
    jobs = [(target, path, share, duration, entries, 1000 * p + concurrency)
            for p, share in enumerate(shares)]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        parts = pool.map(_drive_process, jobs)
    latencies = np.array(list(itertools.chain.from_iterable(p["latencies"] for p in parts)))
    kinds: dict[str, int] = {}
    for p in parts:
        for k, v in p["kinds"].items():
            kinds[k] = kinds.get(k, 0) + v
    ms = latencies * 1000 if len(latencies) else np.zeros(1)
    return {
        "path": path, "concurrency": concurrency, "requests": int(len(latencies)),
        "errors": sum(p["errors"] for p in parts),
        "throughput_rps": round(len(latencies) / duration, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "kinds": kinds,
    }


def seed(target: str, first: int, count: int, concurrency: int = 16) -> float:
    """Stores entries [first, first+count); returns the seconds it took."""
    async def go() -> None:
        async with grpc.aio.insecure_channel(target) as channel:
            stub = pb_grpc.SemanticCacheStub(channel)
            queue = iter(range(first, first + count))

            async def worker() -> None:
                for i in queue:
                    await stub.Store(pb.StoreRequest(namespace=NAMESPACE, prompt=stored_prompt(i),
                                                     response=f"answer {i} " + "x" * 200), timeout=60)

            await asyncio.gather(*(worker() for _ in range(concurrency)))

    start = time.perf_counter()
    asyncio.run(go())
    return time.perf_counter() - start


def start_server(data_dir: str) -> LocalServer:
    """A server with the embedded defaults, logging warnings only."""
    return LocalServer(Path(data_dir) / "data", env={"SEMCACHED_SERVER_LOG_LEVEL": "warning"})


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", help="host:port of a running server on this machine (default: start one)")
    p.add_argument("--concurrency", default="1,16", help="comma-separated concurrencies")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per path and concurrency")
    p.add_argument("--entries", type=int, default=1000, help="entries seeded for the hit paths")
    p.add_argument("--paths", default="exact,semantic,miss")
    p.add_argument("--processes", type=int, default=1, help="client processes")
    p.add_argument("--bulk", type=int, default=0, help="then store this many more entries and report time and memory")
    p.add_argument("--json", default="benchmarks/results/loadtest.json")
    args = p.parse_args()
    if args.target and not args.target.split(":")[0] in ("127.0.0.1", "localhost", "[::1]"):
        raise SystemExit("--target must be on this machine (127.0.0.1, localhost or [::1])")

    tmp = tempfile.TemporaryDirectory(prefix="semcached-bench-")
    server = None if args.target else start_server(tmp.name)
    target = args.target if server is None else server.target
    report: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                          "platform": platform.platform()},
                              "settings": vars(args), "runs": []}
    try:
        seed_s = seed(target, 0, args.entries)
        report["seed"] = {"entries": args.entries, "seconds": round(seed_s, 2)}
        print(f"seeded {args.entries} entries in {seed_s:.1f} s")
        print(f"{'path':9} {'conc':>4} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}  kinds")
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            for path in args.paths.split(","):
                r = run_path(target, path, concurrency, args.duration, args.entries, args.processes)
                report["runs"].append(r)
                print(f"{path:9} {concurrency:>4} {r['throughput_rps']:>9} {r['p50_ms']:>8} "
                      f"{r['p99_ms']:>8} {r['errors']:>6}  {r['kinds']}")
        if args.bulk:
            before = server.rss_mib() if server else float("nan")
            bulk_s = seed(target, args.entries, args.bulk)
            after = server.rss_mib() if server else float("nan")
            report["bulk"] = {"entries": args.bulk, "seconds": round(bulk_s, 1),
                              "stores_per_s": round(args.bulk / bulk_s, 1),
                              "rss_before_mib": round(before, 1), "rss_after_mib": round(after, 1),
                              "bytes_per_entry": round((after - before) * 2**20 / args.bulk)}
            print(f"stored {args.bulk} entries in {bulk_s:.1f} s ({args.bulk / bulk_s:.0f}/s); "
                  f"server RSS {before:.0f} -> {after:.0f} MiB")
    finally:
        if server:
            server.stop()
        tmp.cleanup()
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
