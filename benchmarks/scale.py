"""Scale: the engine with 10k, 100k and 1M entries in one namespace.

    .venv/bin/python benchmarks/scale.py --sizes 10000,100000,1000000

For each size, in a fresh process (so its memory is its own): stores the entries through
the engine's store and indexes (the path a Store request takes after its embedding),
builds the hnswlib graph the background sweep would build, then measures lookup latency
*excluding the embedding* (`Engine._candidates`: graph or exact-scan search, reading the
candidate entries, the feedback check; then the exact tier's `get_exact`), the resident
memory, and a restart (open the store from its snapshot, load the saved graph).

Vectors are synthetic: 384-d unit vectors in clusters (a center per 50 entries, members
at cosine ~0.9 to it), because embedding 1M questions takes ~50 minutes on 2 cores and the
costs measured here do not depend on what the vectors mean. Query vectors are perturbed
copies of stored ones, so searches find near neighbours as real paraphrases do.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from semcached.local_server import rss_mib

ROOT = Path(__file__).resolve().parent.parent
DIM = 384


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def vectors(n: int, rng: np.random.Generator) -> np.ndarray:
    centers = unit(rng.standard_normal((n // 50 + 1, DIM)))
    members = centers[np.arange(n) // 50] + 0.5 * unit(rng.standard_normal((n, DIM))) * 0.9
    return unit(members)


def measure(n: int, queries: int) -> dict[str, Any]:
    from semcached.config import Config
    from semcached.engine import Decision, Engine

    rng = np.random.default_rng(n)
    with tempfile.TemporaryDirectory(prefix="semcached-scale-") as tmp:
        config = Config()
        config.server.data_dir = tmp
        config.storage.fsync = "interval"
        config.cache.max_bytes = 0
        config.cache.max_entries = max(n, 1000)
        engine = Engine.from_config(config)
        base = rss_mib()
        data = vectors(n, rng)
        response = "answer " + "x" * 200
        model = engine.model_id
        start = time.perf_counter()
        for i in range(n):
            entry_id = engine.store.insert("ns", f"How do I do thing number {i} in the product?", response,
                                           data[i].tobytes(), model, {}, None)
            engine.indexes.added("ns", model, entry_id, data[i])
        engine.store.sync()
        insert_s = time.perf_counter() - start
        start = time.perf_counter()
        engine.indexes.build_pending()
        build_s = time.perf_counter() - start
        picks = rng.integers(0, n, queries)
        asked = unit(data[picks] + 0.25 * unit(rng.standard_normal((queries, DIM))))
        del data  # the benchmark's own copy is not the server's memory
        gc.collect()
        rss = rss_mib()
        decision = Decision(min_similarity=0.5, threshold=0.0)
        found, ms = 0, []
        for i in range(queries):
            t = time.perf_counter()
            candidates = engine._candidates("ns", asked[i], decision)
            ms.append((time.perf_counter() - t) * 1000)
            found += bool(candidates) and candidates[0][0].prompt.endswith(f" {picks[i]} in the product?")
        exact_ms = []
        for i in picks[:queries]:
            t = time.perf_counter()
            engine.store.get_exact("ns", f"How do I do thing number {i} in the product?")
            exact_ms.append((time.perf_counter() - t) * 1000)

        start = time.perf_counter()
        engine.snapshot()
        snapshot_s = time.perf_counter() - start
        engine.embedder.close()
        del engine
        gc.collect()  # the store (and its data directory's lock) goes with the engine
        start = time.perf_counter()
        reopened = Engine.from_config(config)  # store from the snapshot, graph from its file
        restart_s = time.perf_counter() - start
        graphs = reopened.indexes.sizes()
        reopened.embedder.close()
        ms.sort()
        exact_ms.sort()
        return {
            "entries": n, "insert_s": round(insert_s, 2), "inserts_per_s": round(n / insert_s),
            "graph_build_s": round(build_s, 1),
            "rss_mib": round(rss, 1), "rss_over_empty_mib": round(rss - base, 1),
            "bytes_per_entry": round((rss - base) * 2**20 / n),
            "search": graphs,
            "lookup_ms_p50": round(statistics.median(ms), 4),
            "lookup_ms_p99": round(ms[int(len(ms) * 0.99)], 4),
            "nearest_is_source": round(found / queries, 4),
            "exact_ms_p50": round(statistics.median(exact_ms), 4),
            "snapshot_s": round(snapshot_s, 1), "restart_s": round(restart_s, 1),
        }


def _measure(args: tuple[int, int]) -> dict[str, Any]:
    return measure(*args)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="10000,100000,1000000")
    p.add_argument("--queries", type=int, default=2000)
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "scale.json")
    args = p.parse_args()
    report: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                              "runs": []}
    print("| entries | insert/s | graph build s | RSS MiB | bytes/entry | lookup p50 ms | p99 ms "
          "| exact p50 ms | restart s |\n|---|---|---|---|---|---|---|---|---|")
    for n in (int(s) for s in args.sizes.split(",")):
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            r = pool.apply(_measure, ((n, args.queries),))
        report["runs"].append(r)
        print(f"| {n:,} | {r['inserts_per_s']:,} | {r['graph_build_s']} | {r['rss_mib']} | {r['bytes_per_entry']:,} "
              f"| {r['lookup_ms_p50']} | {r['lookup_ms_p99']} | {r['exact_ms_p50']} | {r['restart_s']} |", flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
