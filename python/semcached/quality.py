"""Hit quality on labelled pairs: would semcached serve a cached answer, and would it be right?

Input: JSON lines ``{"a": question, "b": question, "label": 1 if duplicates else 0}``.

* ``pairs`` mode: each pair alone in its own namespace (so only the hit decision is
  measured): ``a`` is stored, ``b`` is looked up. A hit is right when the pair is labelled
  a duplicate.
* ``replay`` mode: every ``a`` stored in one namespace, every ``b`` looked up, so near
  neighbours compete. Questions recur across pairs, so a hit is right when the matched
  prompt is ``b`` itself or a known duplicate of it (label-1 links, followed transitively).

Both run the real engine (exact tier, embedding, search, decision) in-process and report
precision of served hits, recall, and the curve over the decision's knob
(``min_similarity``), plus lookup latency.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from semcached import _core
from semcached import config as configuration
from semcached.config import ConfigError
from semcached.engine import Engine

THRESHOLDS = [round(0.80 + 0.01 * i, 2) for i in range(20)]
# Lookups in flight at once: enough for the embedder to batch.
CONCURRENCY = 32
LATENCY_SAMPLE = 200


@dataclass(frozen=True)
class Pair:
    a: str
    b: str
    label: int


@dataclass(frozen=True)
class Outcome:
    """One lookup: its hit kind and similarity at min_similarity 0, and whether serving
    the matched answer would be right."""

    kind: str
    similarity: float
    right: bool
    duplicate_exists: bool



def load_pairs(path: Path, limit: int | None = None) -> list[Pair]:
    pairs = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                pair = Pair(str(row["a"]), str(row["b"]), int(row["label"]))
            except (ValueError, KeyError, TypeError) as e:
                raise ConfigError(f"{path}:{number}: expected {{\"a\", \"b\", \"label\"}}: {e}") from None
            if pair.label not in (0, 1):
                raise ConfigError(f"{path}:{number}: label must be 0 or 1")
            if pair.a.strip() and pair.b.strip():
                pairs.append(pair)
            if limit is not None and len(pairs) >= limit:
                break
    if not pairs:
        raise ConfigError(f"{path} holds no pairs")
    return pairs


class Duplicates:
    """Classes of questions linked by label-1 pairs (union-find on normalized text)."""

    def __init__(self, pairs: list[Pair]) -> None:
        self._parent: dict[str, str] = {}
        for p in pairs:
            if p.label == 1:
                self._union(_core.normalize(p.a), _core.normalize(p.b))

    def key(self, x: str) -> str:
        """The class of a question: equal keys mean the same question or duplicates."""
        return self._find(_core.normalize(x))

    def same(self, x: str, y: str) -> bool:
        return self.key(x) == self.key(y)

    def _find(self, x: str) -> str:
        root = x
        while self._parent.get(root, root) != root:
            root = self._parent[root]
        while x != root:  # path compression
            self._parent[x], x = root, self._parent.get(x, x)
        return root

    def _union(self, x: str, y: str) -> None:
        rx, ry = self._find(x), self._find(y)
        if rx != ry:
            self._parent[rx] = ry


async def _gather_bounded(jobs: list[Any]) -> list[Any]:
    out = []
    for start in range(0, len(jobs), CONCURRENCY):
        out.extend(await asyncio.gather(*(job() for job in jobs[start:start + CONCURRENCY])))
    return out


async def run_pairs(engine: Engine, pairs: list[Pair]) -> list[Outcome]:
    async def one(i: int, p: Pair) -> Outcome:
        namespace = f"pair-{i}"
        await engine.store_entry(namespace, p.a, "answer")
        r = await engine.lookup(namespace, p.b, min_similarity=0.0)
        return Outcome(r.kind, r.similarity, p.label == 1, p.label == 1)

    return await _gather_bounded([lambda i=i, p=p: one(i, p) for i, p in enumerate(pairs)])


async def run_replay(engine: Engine, pairs: list[Pair]) -> list[Outcome]:
    duplicates = Duplicates(pairs)
    stored = list(dict.fromkeys(p.a for p in pairs))
    stored_classes = {duplicates.key(q) for q in stored}
    await _gather_bounded([lambda q=q: engine.store_entry("replay", q, "answer") for q in stored])

    async def one(p: Pair) -> Outcome:
        r = await engine.lookup("replay", p.b, min_similarity=0.0)
        right = r.hit and duplicates.same(r.matched_prompt, p.b)
        exists = duplicates.key(p.b) in stored_classes
        return Outcome(r.kind, r.similarity, right, exists)

    return await _gather_bounded([lambda p=p: one(p) for p in pairs])


def curve(outcomes: list[Outcome], thresholds: list[float]) -> list[dict[str, float]]:
    """At each min_similarity: what would be served, how much of it right, how much of
    what could be served right was."""
    possible = sum(o.duplicate_exists for o in outcomes)
    rows = []
    for t in thresholds:
        served = [o for o in outcomes if o.kind == "exact" or (o.kind == "semantic" and o.similarity >= t)]
        right = sum(o.right for o in served)
        rows.append({
            "min_similarity": t,
            "served": len(served),
            "precision": round(right / len(served), 4) if served else 1.0,
            "recall": round(right / possible, 4) if possible else 0.0,
        })
    return rows


async def latency_ms(engine: Engine, lookups: list[tuple[str, str]]) -> list[float]:
    """Lookups one at a time (the bulk runs concurrently, which measures throughput, not
    the latency one request sees)."""
    out = []
    for namespace, prompt in lookups:
        start = time.perf_counter()
        await engine.lookup(namespace, prompt, min_similarity=0.0)
        out.append((time.perf_counter() - start) * 1000)
    return sorted(out)


def report(outcomes: list[Outcome], ms: list[float], mode: str,
           default_threshold: float) -> dict[str, Any]:
    rows = curve(outcomes, sorted(set(THRESHOLDS + [default_threshold])))
    at_default = next(r for r in rows if r["min_similarity"] == default_threshold)
    return {
        "mode": mode,
        "lookups": len(outcomes),
        "duplicates": sum(o.duplicate_exists for o in outcomes),
        "at_default": at_default,
        "curve": rows,
        "lookup_ms_p50": round(statistics.median(ms), 3),
        "lookup_ms_p99": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 3),
    }


def evaluate(data: Path, mode: str, config_path: str | None = None,
             limit: int | None = None) -> dict[str, Any]:
    """Runs one mode over a file with the configured engine (embedding model, threshold)
    on a throwaway data directory."""
    pairs = load_pairs(data, limit)
    config = configuration.load(config_path)
    with tempfile.TemporaryDirectory(prefix="semcached-quality-") as tmp:
        config.server.data_dir = tmp
        config.storage.fsync = "interval"
        config.cache.default_ttl_seconds = 0
        config.cache.max_entries = max(config.cache.max_entries, 4 * len(pairs))
        config.cache.max_bytes = 0

        async def go() -> tuple[list[Outcome], list[float]]:
            engine = Engine.from_config(config)
            try:
                if mode == "pairs":
                    outcomes = await run_pairs(engine, pairs)
                    sample = [(f"pair-{i}", p.b) for i, p in enumerate(pairs[:LATENCY_SAMPLE])]
                else:
                    outcomes = await run_replay(engine, pairs)
                    sample = [("replay", p.b) for p in pairs[:LATENCY_SAMPLE]]
                # Served from the embedder's work again, not a cache: lookups store nothing.
                return outcomes, await latency_ms(engine, sample)
            finally:
                await engine.close()

        outcomes, ms = asyncio.run(go())
    result = report(outcomes, ms, mode, config.cache.min_similarity)
    result["data"] = str(data)
    result["embedding_model"] = config.embedding.model
    return result


def format_report(result: dict[str, Any]) -> str:
    lines = [f"{result['mode']}: {result['lookups']} lookups, {result['duplicates']} with a duplicate cached; "
             f"lookup p50 {result['lookup_ms_p50']} ms, p99 {result['lookup_ms_p99']} ms",
             f"{'min_similarity':>14} {'served':>7} {'precision':>9} {'recall':>7}"]
    for row in result["curve"]:
        mark = "  <- configured" if row["min_similarity"] == result["at_default"]["min_similarity"] else ""
        lines.append(f"{row['min_similarity']:>14.2f} {row['served']:>7} {row['precision']:>9.4f} "
                     f"{row['recall']:>7.4f}{mark}")
    return "\n".join(lines)
