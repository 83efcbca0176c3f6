"""Core benchmarks: the Rust store against a pure-Python equivalent, memory per entry,
restart time, and exact scan against hnswlib by scope size (with hnswlib's recall).

    python benchmarks/core.py --entries 100000 --scan-sizes 1000,5000,20000,100000

Random unit vectors stand in for embeddings (384-d by default): the costs measured here do
not depend on what the vectors mean, and recall on random vectors is a pessimistic bound
(real embeddings cluster, which graph search likes). Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import gc
import heapq
import json
import platform
import statistics
import tempfile
import time
import unicodedata
from collections import OrderedDict
from pathlib import Path
from typing import Any

import hnswlib
import numpy as np

from semcached import _core
from semcached.index import EF_CONSTRUCTION, EF_SEARCH, M, Indexes


class PythonStore:
    """What the core does, in plain Python: dict exact map, OrderedDict LRU, expiry heap."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self.entries: dict[int, tuple[str, str, str, list[float], float | None]] = {}
        self.exact: dict[tuple[str, str], int] = {}
        self.lru: OrderedDict[int, None] = OrderedDict()
        self.expiry: list[tuple[float, int]] = []
        self.next_id = 1

    @staticmethod
    def normalize(prompt: str) -> str:
        return " ".join(unicodedata.normalize("NFKC", prompt).lower().split())

    def insert(self, namespace: str, prompt: str, response: str, vector: list[float],
               ttl_s: float | None) -> int:
        key = (namespace, self.normalize(prompt))
        if key in self.exact:
            self.remove(self.exact[key])
        entry_id, self.next_id = self.next_id, self.next_id + 1
        expires = time.time() + ttl_s if ttl_s is not None else None
        self.entries[entry_id] = (namespace, key[1], response, vector, expires)
        self.exact[key] = entry_id
        self.lru[entry_id] = None
        if expires is not None:
            heapq.heappush(self.expiry, (expires, entry_id))
        while len(self.entries) > self.max_entries:
            self.remove(next(iter(self.lru)))
        return entry_id

    def get_exact(self, namespace: str, prompt: str) -> str | None:
        entry_id = self.exact.get((namespace, self.normalize(prompt)))
        if entry_id is None:
            return None
        entry = self.entries[entry_id]
        if entry[4] is not None and entry[4] <= time.time():
            self.remove(entry_id)
            return None
        self.lru.move_to_end(entry_id)
        return entry[2]

    def remove(self, entry_id: int) -> None:
        entry = self.entries.pop(entry_id, None)
        if entry is not None:
            del self.exact[(entry[0], entry[1])]
            del self.lru[entry_id]

    def expire(self) -> int:
        now, count = time.time(), 0
        while self.expiry and self.expiry[0][0] <= now:
            _, entry_id = heapq.heappop(self.expiry)
            entry = self.entries.get(entry_id)
            if entry is not None and entry[4] is not None and entry[4] <= now:
                self.remove(entry_id)
                count += 1
        return count


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def unit_rows(n: int, dim: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows


def ops_per_second(fn: Any, items: list[Any]) -> float:
    start = time.perf_counter()
    for item in items:
        fn(*item)
    return len(items) / (time.perf_counter() - start)


def compare_with_python(n: int, dim: int) -> dict[str, Any]:
    """Store, exact lookup and expiry in both implementations, in the same run."""
    rows = unit_rows(min(n, 2000), dim, 1)
    # Each side gets the vector in its natural form: float32 bytes for the core (what the
    # engine passes), a list the dict keeps a reference to for Python.
    vectors = [row.tobytes() for row in rows]
    lists = [row.tolist() for row in rows]
    response = "r" * 500
    results: dict[str, Any] = {}
    makers = {
        "rust": (lambda: _core.Store(n + 1),
                 lambda s, i, ttl_ms: s.insert("ns", f"Question number {i}?", response,
                                               vectors[i % len(vectors)], "m", None, ttl_ms)),
        "python": (lambda: PythonStore(n + 1),
                   lambda s, i, ttl_ms: s.insert("ns", f"Question number {i}?", response,
                                                 lists[i % len(lists)], ttl_ms and ttl_ms / 1000)),
    }
    for name, (make, insert) in makers.items():
        r: dict[str, float] = {}
        store = make()
        r["store_per_s"] = ops_per_second(lambda i: insert(store, i, None), [(i,) for i in range(n)])
        lookups = [("ns", f"QUESTION  number {i}?") for i in range(n)]
        r["exact_lookup_per_s"] = ops_per_second(store.get_exact, lookups)  # type: ignore[attr-defined]
        store = make()
        for i in range(n):
            insert(store, i, 1)
        time.sleep(0.05)  # every entry's 1 ms TTL is up
        start = time.perf_counter()
        expired = store.expire()  # type: ignore[attr-defined]
        r["expire_per_s"] = expired / (time.perf_counter() - start)
        assert expired == n, (name, expired)
        results[name] = {k: round(v) for k, v in r.items()}
    results["ratio_rust_over_python"] = {
        k: round(results["rust"][k] / results["python"][k], 2) for k in results["rust"]}
    return results


def memory_per_entry(n: int, dim: int, response_bytes: int) -> dict[str, Any]:
    gc.collect()
    before = rss_bytes()
    store = _core.Store(n + 1)
    row = unit_rows(1, dim, 2)[0]
    response = "r" * response_bytes
    start = time.perf_counter()
    for i in range(n):
        row[i % dim] += 1e-3  # distinct vectors, no per-entry Python allocation kept
        store.insert("ns", f"How do I do thing number {i} in the product?", response, row.tobytes(), "m")
    seconds = time.perf_counter() - start
    after = rss_bytes()
    result = {"entries": n, "dim": dim, "response_bytes": response_bytes,
              "bytes_per_entry": round((after - before) / n),
              "accounted_bytes_per_entry": round(store.bytes / n),
              "insert_seconds": round(seconds, 1)}
    del store
    return result


def restart_time(n: int, dim: int, response_bytes: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="semcached-core-bench-") as tmp:
        store = _core.Store(n + 1, tmp, "interval")
        row = unit_rows(1, dim, 3)[0].tobytes()
        response = "r" * response_bytes
        for i in range(n):
            store.insert("ns", f"How do I do thing number {i}?", response, row, "m")
        store.sync()
        start = time.perf_counter()
        del store
        replay = _core.Store(n + 1, tmp, "interval")
        replay_s = time.perf_counter() - start
        start = time.perf_counter()
        replay.snapshot()
        snapshot_s = time.perf_counter() - start
        del replay
        start = time.perf_counter()
        loaded = _core.Store(n + 1, tmp, "interval")
        load_s = time.perf_counter() - start
        assert len(loaded) == n
        size = sum(p.stat().st_size for p in Path(tmp).iterdir())
    return {"entries": n, "open_by_log_replay_s": round(replay_s, 2), "snapshot_write_s": round(snapshot_s, 2),
            "open_from_snapshot_s": round(load_s, 2), "disk_bytes": size}


def graph_restart(n: int, dim: int) -> dict[str, Any]:
    """Restart of one large scope: building its hnswlib graph against loading the saved one."""
    with tempfile.TemporaryDirectory(prefix="semcached-graph-bench-") as tmp:
        store = _core.Store(n + 1, f"{tmp}/data", "interval")
        for i, row in enumerate(unit_rows(n, dim, 7)):
            store.insert("ns", f"q{i}", "a", row.tobytes(), "m")
        start = time.perf_counter()
        indexes = Indexes(store, directory=Path(tmp) / "graphs")
        assert indexes.rebuild() == (0, 1)
        build_s = time.perf_counter() - start
        start = time.perf_counter()
        store.snapshot()
        indexes.save()
        save_s = time.perf_counter() - start
        del store, indexes
        start = time.perf_counter()
        store = _core.Store(n + 1, f"{tmp}/data", "interval")
        open_s = time.perf_counter() - start
        start = time.perf_counter()
        assert Indexes(store, directory=Path(tmp) / "graphs").rebuild() == (1, 0)
        load_s = time.perf_counter() - start
    return {"vectors": n, "graph_build_s": round(build_s, 1), "snapshot_and_graph_save_s": round(save_s, 1),
            "store_open_s": round(open_s, 1), "graph_load_s": round(load_s, 1)}


def scan_vs_hnswlib(sizes: list[int], dim: int, queries: int) -> list[dict[str, Any]]:
    """Median query latency of the Rust exact scan and of hnswlib (shipped settings) by
    scope size, and hnswlib's recall@1/@10 with the exact scan as the oracle."""
    rows_out = []
    for n in sizes:
        data = unit_rows(n, dim, 4)
        store = _core.Store(n + 1)
        for i in range(n):
            store.insert("ns", f"q{i}", "a", data[i].tobytes(), "m")
        ids = np.arange(1, n + 1)
        graph = hnswlib.Index(space="ip", dim=dim)
        graph.init_index(max_elements=n, ef_construction=EF_CONSTRUCTION, M=M)
        start = time.perf_counter()
        graph.add_items(data, ids, num_threads=-1)
        build_s = time.perf_counter() - start
        graph.set_ef(EF_SEARCH)
        # Queries near stored vectors, as paraphrases are near their originals.
        noise = unit_rows(queries, dim, 5) * 0.5
        qs = data[np.random.default_rng(6).integers(0, n, queries)] + noise
        qs /= np.linalg.norm(qs, axis=1, keepdims=True)
        scan_t, graph_t, hit1, hit10 = [], [], 0, 0
        for q in qs:
            raw = q.astype("<f4").tobytes()
            t = time.perf_counter()
            exact = store.search("ns", "m", raw, 10)
            scan_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            labels, _ = graph.knn_query(q.reshape(1, -1), k=10, num_threads=1)
            graph_t.append(time.perf_counter() - t)
            truth = [entry_id for entry_id, _ in exact]
            hit1 += int(labels[0][0] == truth[0])
            hit10 += len(set(labels[0].tolist()) & set(truth))
        rows_out.append({
            "vectors": n, "exact_scan_ms": round(statistics.median(scan_t) * 1000, 4),
            "hnswlib_ms": round(statistics.median(graph_t) * 1000, 4),
            "hnswlib_recall_at_1": round(hit1 / queries, 4),
            "hnswlib_recall_at_10": round(hit10 / (10 * queries), 4),
            "hnswlib_build_s": round(build_s, 2),
        })
        print("  ", rows_out[-1], flush=True)
        del store, graph
    return rows_out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--entries", type=int, default=100_000, help="entries for the speed comparison")
    p.add_argument("--memory-entries", type=int, default=100_000, help="entries for memory per entry and restart time")
    p.add_argument("--scan-sizes", default="1000,2000,5000,10000,20000,50000,100000")
    p.add_argument("--queries", type=int, default=300)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--response-bytes", type=int, default=500)
    p.add_argument("--graph-entries", type=int, default=100_000, help="vectors for the graph restart")
    p.add_argument("--skip", default="", help="comma-separated parts to skip: speed,memory,restart,graph,scan")
    p.add_argument("--json", default="benchmarks/results/core.json")
    args = p.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    report: dict[str, Any] = {"machine": {"python": platform.python_version(), "platform": platform.platform()},
                              "settings": vars(args)}
    if "speed" not in skip:
        report["speed"] = compare_with_python(args.entries, args.dim)
        print("ops/s:", json.dumps(report["speed"], indent=1), flush=True)
    if "memory" not in skip:
        report["memory"] = memory_per_entry(args.memory_entries, args.dim, args.response_bytes)
        print("memory:", report["memory"], flush=True)
    if "restart" not in skip:
        report["restart"] = restart_time(args.memory_entries, args.dim, args.response_bytes)
        print("restart:", report["restart"], flush=True)
    if "graph" not in skip:
        report["graph_restart"] = graph_restart(args.graph_entries, args.dim)
        print("graph restart:", report["graph_restart"], flush=True)
    if "scan" not in skip:
        print("exact scan vs hnswlib (M=%d, ef_construction=%d, ef=%d):" % (M, EF_CONSTRUCTION, EF_SEARCH))
        report["scan_vs_hnswlib"] = scan_vs_hnswlib([int(s) for s in args.scan_sizes.split(",")],
                                                    args.dim, args.queries)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
