"""Hit quality on labelled pairs: would semcached serve a cached answer, and would it be right?

Input: JSON lines ``{"a": question, "b": question, "label": 1 if duplicates else 0}``.

* ``pairs`` mode: each pair alone in its own namespace (so only the hit decision is
  measured): ``a`` is stored, ``b`` is looked up. A hit is right when the pair is labelled
  a duplicate.
* ``replay`` mode: every ``a`` stored in one namespace, every ``b`` looked up, so near
  neighbours compete. Questions recur across pairs, so a hit is right when the matched
  prompt is ``b`` itself or a known duplicate of it (label-1 links, followed transitively).

Both run the real engine (exact tier, embedding, search, verifier) in-process and report
precision of served hits, recall, and the curve over the decision's knob
(``target_precision``, through the calibration) beside the curve of cosine alone
(``min_similarity``), plus lookup and verifier latency.

``calibrate`` turns pairs-mode outcomes on held-out labelled pairs into the calibration
file the verifier ships with (semcached/verifier/calibration.json).
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
from semcached.engine import VERIFIED, Engine
from semcached.verifier import Calibration
from semcached.verifier import curve as calibration_curve

THRESHOLDS = [round(0.80 + 0.01 * i, 2) for i in range(20)]
UNCALIBRATED = Calibration({"verifier": [], "cosine": []}, 0.0, "", "")
TARGETS = [round(0.80 + 0.01 * i, 2) for i in range(20)]
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
    """One lookup served whatever its verifier score (target_precision 0): its hit kind,
    similarity and score, and whether serving the matched answer would be right."""

    kind: str
    similarity: float
    verifier_score: float
    matched_prompt: str
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
        r = await engine.lookup(namespace, p.b, target_precision=0.0)
        return Outcome(r.kind, r.similarity, r.verifier_score, r.matched_prompt,
                       r.hit and p.label == 1, p.label == 1)

    return await _gather_bounded([lambda i=i, p=p: one(i, p) for i, p in enumerate(pairs)])


async def run_replay(engine: Engine, pairs: list[Pair]) -> list[Outcome]:
    duplicates = Duplicates(pairs)
    stored = list(dict.fromkeys(p.a for p in pairs))
    stored_classes = {duplicates.key(q) for q in stored}
    await _gather_bounded([lambda q=q: engine.store_entry("replay", q, "answer") for q in stored])

    async def one(p: Pair) -> Outcome:
        r = await engine.lookup("replay", p.b, target_precision=0.0)
        right = r.hit and duplicates.same(r.matched_prompt, p.b)
        exists = duplicates.key(p.b) in stored_classes
        return Outcome(r.kind, r.similarity, r.verifier_score, r.matched_prompt, right, exists)

    return await _gather_bounded([lambda p=p: one(p) for p in pairs])


def _row(outcomes: list[Outcome], served: list[Outcome]) -> dict[str, float]:
    possible = sum(o.duplicate_exists for o in outcomes)
    right = sum(o.right for o in served)
    return {"served": len(served),
            "precision": round(right / len(served), 4) if served else 1.0,
            "recall": round(right / possible, 4) if possible else 0.0}


def curve(outcomes: list[Outcome], thresholds: list[float]) -> list[dict[str, float]]:
    """Cosine alone: at each min_similarity, what would be served, how much of it right,
    how much of what could be served right was."""
    return [{"min_similarity": t, **_row(outcomes, [
        o for o in outcomes if o.kind == "exact" or (o.kind == "semantic" and o.similarity >= t)])}
        for t in thresholds]


def target_curve(outcomes: list[Outcome], calibration: Calibration, knob: str,
                 targets: list[float]) -> list[dict[str, float]]:
    """The product's knob: at each target_precision, the threshold the calibration picks
    and what serving at it gives on these outcomes."""
    rows = []
    for target in targets:
        threshold = calibration.setting(knob, target).threshold

        def value(o: Outcome) -> float:
            return o.verifier_score if knob == "verifier" else o.similarity

        served = [o for o in outcomes if o.kind == "exact" or (o.kind == "semantic" and value(o) >= threshold)]
        rows.append({"target_precision": target, "threshold": threshold, **_row(outcomes, served)})
    return rows


def calibrate(outcomes: list[Outcome], min_similarity: float, embedding_model: str,
              data: str) -> Calibration:
    """The calibration from pairs-mode outcomes on held-out pairs: semantic candidates
    ordered by verifier score and by cosine, with precision and recall at each cut."""
    candidates = [o for o in outcomes if o.kind == "semantic"]
    duplicates = sum(o.duplicate_exists for o in outcomes)
    return Calibration(
        curves={"verifier": calibration_curve([(o.verifier_score, o.right) for o in candidates], duplicates),
                "cosine": calibration_curve([(o.similarity, o.right) for o in candidates], duplicates)},
        min_similarity=min_similarity, embedding_model=embedding_model, data=data)


async def latency_ms(engine: Engine, lookups: list[tuple[str, str]]) -> dict[str, list[float]]:
    """Lookups one at a time (the bulk runs concurrently, which measures throughput, not
    the latency one request sees), and the verifier's share: one call on the matched
    question, and one on VERIFIED of them (the most a lookup scores)."""
    out: dict[str, list[float]] = {"lookup": [], "verifier_1": [], f"verifier_{VERIFIED}": []}
    for namespace, prompt in lookups:
        start = time.perf_counter()
        r = await engine.lookup(namespace, prompt, target_precision=0.0)
        out["lookup"].append((time.perf_counter() - start) * 1000)
        if engine.verifier is not None and r.hit:
            asked = (await engine.embedder.embed(prompt)).vector  # remembered from the lookup
            entry = engine.store.get(r.entry_id)
            for n in (1, VERIFIED):
                start = time.perf_counter()  # the combiner's priors count too
                priors = engine.priors(prompt, asked, [(entry, r.similarity)] * n) if entry else [0.0] * n
                engine.verifier.scores(prompt, [r.matched_prompt] * n, priors)
                out[f"verifier_{n}"].append((time.perf_counter() - start) * 1000)
    return {k: sorted(v) for k, v in out.items() if v}


def report(outcomes: list[Outcome], ms: dict[str, list[float]], mode: str, engine: Engine,
           default_target: float) -> dict[str, Any]:
    knob = "verifier" if engine.verifier else "cosine"
    rows = target_curve(outcomes, engine.calibration, knob, sorted(set(TARGETS + [default_target])))
    return {
        "mode": mode,
        "lookups": len(outcomes),
        "duplicates": sum(o.duplicate_exists for o in outcomes),
        "knob": knob,
        "at_default": next(r for r in rows if r["target_precision"] == default_target),
        "curve": rows,
        "cosine_curve": curve(outcomes, THRESHOLDS),
        "latency_ms": {name: {"p50": round(statistics.median(v), 3),
                              "p99": round(v[min(len(v) - 1, int(len(v) * 0.99))], 3)}
                       for name, v in ms.items()},
    }


def evaluate(data: Path, mode: str, config_path: str | None = None, limit: int | None = None,
             calibration_out: Path | None = None) -> dict[str, Any]:
    """Runs one mode over a file with the configured engine (embedding model, verifier,
    target precision) on a throwaway data directory; with ``calibration_out`` (pairs mode),
    writes the calibration measured on this file there first."""
    pairs = load_pairs(data, limit)
    config = configuration.load(config_path)
    with tempfile.TemporaryDirectory(prefix="semcached-quality-") as tmp:
        config.server.data_dir = tmp
        config.storage.fsync = "interval"
        config.cache.default_ttl_seconds = 0
        config.cache.max_entries = max(config.cache.max_entries, 4 * len(pairs))
        config.cache.max_bytes = 0

        async def go() -> dict[str, Any]:
            # Calibrating needs no calibration yet: lookups serve at target 0 whatever it says.
            engine = Engine.from_config(config, calibration=UNCALIBRATED if calibration_out else None)
            try:
                if mode == "pairs":
                    outcomes = await run_pairs(engine, pairs)
                    sample = [(f"pair-{i}", p.b) for i, p in enumerate(pairs[:LATENCY_SAMPLE])]
                else:
                    outcomes = await run_replay(engine, pairs)
                    sample = [("replay", p.b) for p in pairs[:LATENCY_SAMPLE]]
                if calibration_out is not None:
                    calibrated = calibrate(outcomes, config.cache.min_similarity, engine.model_id, data.name)
                    calibrated.save(calibration_out)
                    engine.calibration = calibrated  # report against it
                # Served from the embedder's work again, not a cache: lookups store nothing.
                ms = await latency_ms(engine, sample)
                return report(outcomes, ms, mode, engine, config.cache.target_precision)
            finally:
                await engine.close()

        result = asyncio.run(go())
    result["data"] = str(data)
    result["embedding_model"] = config.embedding.model
    return result


def format_report(result: dict[str, Any]) -> str:
    latency = ", ".join(f"{name} p50 {v['p50']} ms p99 {v['p99']} ms" for name, v in result["latency_ms"].items())
    lines = [f"{result['mode']}: {result['lookups']} lookups, {result['duplicates']} with a duplicate cached; "
             f"decided by {result['knob']}",
             f"latency: {latency}",
             f"{'target_precision':>16} {'threshold':>9} {'served':>7} {'precision':>9} {'recall':>7}"]
    for row in result["curve"]:
        mark = "  <- configured" if row["target_precision"] == result["at_default"]["target_precision"] else ""
        lines.append(f"{row['target_precision']:>16.2f} {row['threshold']:>9.4f} {row['served']:>7} "
                     f"{row['precision']:>9.4f} {row['recall']:>7.4f}{mark}")
    lines.append(f"cosine alone: {'min_similarity':>14} {'served':>7} {'precision':>9} {'recall':>7}")
    for row in result["cosine_curve"]:
        lines.append(f"{'':14}{row['min_similarity']:>14.2f} {row['served']:>7} {row['precision']:>9.4f} "
                     f"{row['recall']:>7.4f}")
    return "\n".join(lines)
