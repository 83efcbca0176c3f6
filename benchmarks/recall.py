"""hnswlib recall on real embeddings: questions from a labelled-pairs file, embedded with the
default model, searched with the shipped graph settings against the exact scan.

    python benchmarks/recall.py --data ../shared/data/qqp/train.jsonl

Every distinct question is embedded once (cached in --cache), the graph holds all but a
held-out sample, and each held-out question is a query (a near neighbour of many stored
questions, as a real lookup is). Reports recall@1 and recall@10 at several ef values and
the median query time of both searches. Writes JSON.

``--copies N`` scales the set up: every stored question becomes N vectors, itself and N-1
perturbed copies (cosine about 0.93 to it), a stand-in for the paraphrases a large cache
holds; held-out questions stay the queries. It also times saving and loading the graph.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import hnswlib
import numpy as np

from semcached import _core, config, models
from semcached.embed import Embedder
from semcached.index import EF_CONSTRUCTION, EF_SEARCH, M


def questions(path: Path, limit: int) -> list[str]:
    seen: dict[str, None] = {}
    with open(path) as f:
        for line in f:
            pair = json.loads(line)
            for q in (pair["a"], pair["b"]):
                if q.strip():
                    seen.setdefault(q, None)
            if len(seen) >= limit:
                break
    return list(seen)[:limit]


def embed_all(texts: list[str], cache: Path) -> np.ndarray:
    if cache.is_file():
        vectors = np.load(cache)
        if len(vectors) == len(texts):
            return vectors
    settings = config.load(None)
    folder = models.resolve(settings.embedding.model, models.models_dir(settings.embedding.models_dir), "mean")
    embedder = Embedder(folder)
    from concurrent.futures import ThreadPoolExecutor
    batches = [texts[i:i + 32] for i in range(0, len(texts), 32)]
    with ThreadPoolExecutor(2) as pool:
        vectors = np.concatenate(list(pool.map(embedder.embed, batches)))
    np.save(cache, vectors)
    return vectors


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="JSONL of {a, b, label} pairs")
    p.add_argument("--limit", type=int, default=100_000, help="distinct questions to use")
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--efs", default="32,64,128")
    p.add_argument("--cache", default="/tmp/semcached-recall-vectors.npy")
    p.add_argument("--copies", type=int, default=1)
    p.add_argument("--json", default="benchmarks/results/recall.json")
    args = p.parse_args()
    texts = questions(Path(args.data), args.limit)
    start = time.perf_counter()
    vectors = embed_all(texts, Path(args.cache))
    print(f"{len(texts)} questions embedded in {time.perf_counter() - start:.0f} s")
    rng = np.random.default_rng(0)
    held = set(rng.choice(len(texts), size=args.queries, replace=False).tolist())
    stored = [i for i in range(len(texts)) if i not in held]
    base = vectors[stored]
    rows = [base]
    for copy in range(1, args.copies):
        noise = rng.standard_normal(base.shape).astype(np.float32) * 0.02
        rows.append(base + noise)
    data = np.concatenate(rows)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    store = _core.Store(len(data) + 1)
    ids = [store.insert("ns", f"{i}", "a", row.tobytes(), "m") for i, row in enumerate(data)]
    graph = hnswlib.Index(space="ip", dim=vectors.shape[1])
    graph.init_index(max_elements=len(data), ef_construction=EF_CONSTRUCTION, M=M)
    start = time.perf_counter()
    graph.add_items(data, ids, num_threads=-1)
    build_s = time.perf_counter() - start
    print(f"graph of {len(data)} vectors built in {build_s:.0f} s", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        graph.save_index(f"{tmp}/g.hnsw")
        save_s = time.perf_counter() - start
        start = time.perf_counter()
        hnswlib.Index(space="ip", dim=vectors.shape[1]).load_index(f"{tmp}/g.hnsw")
        load_s = time.perf_counter() - start
    queries = vectors[sorted(held)]
    truth, scan_t = [], []
    for q in queries:
        t = time.perf_counter()
        truth.append([entry_id for entry_id, _ in store.search("ns", "m", q.tobytes(), 10)])
        scan_t.append(time.perf_counter() - t)
    rows: list[dict[str, Any]] = []
    for ef in (int(e) for e in args.efs.split(",")):
        graph.set_ef(ef)
        hit1 = hit10 = 0
        graph_t = []
        for q, exact in zip(queries, truth):
            t = time.perf_counter()
            labels, _ = graph.knn_query(q.reshape(1, -1), k=10, num_threads=1)
            graph_t.append(time.perf_counter() - t)
            hit1 += int(labels[0][0] == exact[0])
            hit10 += len(set(labels[0].tolist()) & set(exact))
        rows.append({"ef": ef, "shipped": ef == EF_SEARCH, "recall_at_1": round(hit1 / len(queries), 4),
                     "recall_at_10": round(hit10 / (10 * len(queries)), 4),
                     "hnswlib_ms": round(statistics.median(graph_t) * 1000, 3)})
        print(rows[-1], flush=True)
    report = {"vectors": len(data), "questions": len(stored), "queries": len(queries),
              "graph_build_s": round(build_s, 1), "graph_save_s": round(save_s, 1),
              "graph_load_s": round(load_s, 1),
              "exact_scan_ms": round(statistics.median(scan_t) * 1000, 3), "by_ef": rows}
    print({k: v for k, v in report.items() if k != "by_ef"})
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
