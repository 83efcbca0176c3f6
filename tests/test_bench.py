"""The load-test suite does not rot: its workload's ground truth, its batching pieces, and
a tiny `semcached bench` run end to end (real server, real gRPC, fake upstream)."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from semcached.batching import LRU, Batcher, Workers
from semcached.loadgen import MAX_ENTRIES, Workload, paraphrase, question, slots_of, summarize, Sample


def test_every_question_and_its_paraphrases_share_one_topic() -> None:
    topics = {slots_of(question(i)) for i in range(MAX_ENTRIES)}
    assert len(topics) == MAX_ENTRIES and None not in topics
    for i in range(0, MAX_ENTRIES, 37):
        assert {slots_of(paraphrase(i, v)) for v in range(3)} == {slots_of(question(i))}
    assert slots_of("answer to: zebra quantum orbit pixel 3-1? [bench-model]") is None


def test_workload_follows_its_mix_and_popularity() -> None:
    requests = list(itertools.islice(Workload(entries=200, mix=(0.5, 0.3, 0.2)).requests(3), 20000))
    paths = Counter(path for path, _, _ in requests)
    assert abs(paths["exact"] / 20000 - 0.5) < 0.02 and abs(paths["miss"] / 20000 - 0.2) < 0.02
    sources = Counter(source for _, _, source in requests if source >= 0)
    top, *_, bottom = [n for _, n in sources.most_common()]
    assert top > 20 * bottom  # Zipfian: the most popular question dwarfs the least
    assert len({text for path, text, _ in requests if path == "miss"}) == paths["miss"]  # new each time


def test_summary_counts_wrong_hits_against_precision() -> None:
    samples = [Sample("exact", "exact", 1.0, True), Sample("semantic", "semantic", 2.0, False),
               Sample("semantic", "semantic", 3.0, True), Sample("miss", "miss", 9.0, None)]
    s = summarize(samples, errors=Counter({"UNAVAILABLE: down": 1}), duration=2.0, concurrency=1, rate=0.0)
    assert s["throughput_rps"] == 2.0 and s["errors"] == 1 and s["error_kinds"] == {"UNAVAILABLE: down": 1}
    assert s["hit_rate"] == 0.75 and s["hit_precision"] == round(2 / 3, 4) and s["wrong_hits"] == 1
    assert s["by_path"]["semantic"]["requests"] == 2 and s["by_path"]["semantic"]["wrong_hits"] == 1


def test_batcher_batches_concurrent_requests_and_fails_only_its_own() -> None:
    sizes: list[int] = []

    def run(items: list[int]) -> list[int]:
        sizes.append(len(items))
        if -1 in items:
            raise ValueError("bad item")
        return [x * 2 for x in items]

    async def go() -> None:
        workers = Workers(1, "test")
        try:
            batcher: Batcher[int, int] = Batcher(workers, run)
            # The worker is busy with a call while ten requests arrive: they run in two
            # batches, the second queued while the first runs (the share kept for the
            # worker that finishes next).
            blocked = workers.call(time.sleep, 0.2)
            results = await asyncio.gather(*(batcher.submit([i]) for i in range(10)))
            await blocked
            assert [r[0] for r in results] == [i * 2 for i in range(10)] and sizes == [5, 5]
            with pytest.raises(ValueError):
                await batcher.submit([-1])
            assert await batcher.submit([4, 5]) == [8, 10]
            with pytest.raises(ZeroDivisionError):
                await workers.call(lambda: 1 / 0)
        finally:
            workers.close()

    asyncio.run(go())


def test_lru_forgets_the_least_recently_used() -> None:
    lru: LRU[str, int] = LRU(2)
    lru.put("a", 1)
    lru.put("b", 2)
    assert lru.get("a") == 1
    lru.put("c", 3)
    assert lru.get("b") is None and lru.get("a") == 1 and lru.get("c") == 3 and len(lru) == 2
    off: LRU[str, int] = LRU(0)
    off.put("a", 1)
    assert off.get("a") is None


def test_bench_rejects_bad_options() -> None:
    for argv, message in ((["--mix", "1,2"], "--mix"), (["--concurrency", "0"], "--concurrency"),
                          (["--entries", "5000"], "--entries"), (["--duration", "nan"], "--duration"),
                          (["--target-precision", "1.5"], "--target-precision")):
        r = subprocess.run([sys.executable, "-m", "semcached", "bench", *argv], capture_output=True, text=True)
        assert r.returncode == 2 and message in r.stderr


def test_bench_smoke(tmp_path: Path) -> None:
    """A one-second run of each loop against a server of its own."""
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, "-m", "semcached", "bench", "--duration", "1", "--entries", "30",
                        "--concurrency", "4", "--processes", "1", "--upstream-latency-ms", "5",
                        "--rate", "20", "--json", str(out)], capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(out.read_text())
    closed, opened = report["runs"]["closed"], report["runs"]["open"]
    assert closed["requests"] > 0 and closed["errors"] == 0 and opened["mode"] == "open"
    assert closed["by_path"]["exact"]["kinds"].get("exact", 0) > 0  # seeded questions asked again hit
    assert closed["by_path"]["miss"]["kinds"] == {"miss": closed["by_path"]["miss"]["requests"]}
    assert 0 < closed["server_cpu_cores"] and closed["server_rss_mib"] > 0
    assert "| closed |" in r.stdout


def test_flush_benchmark_smoke(tmp_path: Path) -> None:
    """benchmarks/flush.py: writers store and a reader looks up through the real core."""
    out = tmp_path / "flush.json"
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "flush.py"
    r = subprocess.run([sys.executable, str(script), "--duration", "0.3", "--writers", "2", "--dir", str(tmp_path),
                        "--json", str(out)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["stores_per_s"] > 0 and result["lookups"] > 0 and result["lookup_p50_ms"] > 0


def test_a_burst_of_one_new_text_is_embedded_once() -> None:
    from semcached.config import Config
    from semcached.embed import BatchingEmbedder, Embedder
    from semcached.models import default_models_dir, resolve

    class Counting(Embedder):  # the real model, counting what it is given
        texts: list[str] = []

        def embed_checked(self, texts: list[str]) -> tuple[np.ndarray, list[bool]]:
            self.texts.extend(texts)
            return super().embed_checked(texts)

    embedder = Counting(resolve(Config().embedding.model, default_models_dir(), "mean"))
    embedder.texts.clear()  # the dimension probe

    async def go() -> None:
        batching = BatchingEmbedder(embedder, threads=1, cache_entries=0)  # no cache: only the de-duplication
        try:
            first = asyncio.ensure_future(batching.embed("How do I reset my password?"))
            followers = [asyncio.ensure_future(batching.embed("How do I reset my password?")) for _ in range(5)]
            await asyncio.sleep(0)
            followers[0].cancel()  # a follower that goes away does not disturb the others
            vectors = [await first] + [await f for f in followers[1:]]
            assert embedder.texts == ["How do I reset my password?"]
            assert all(v is vectors[0] for v in vectors)
            await batching.embed("How do I reset my password?")  # done and not cached: embedded again
            assert len(embedder.texts) == 2
        finally:
            batching.close()

    asyncio.run(go())
