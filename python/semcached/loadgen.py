"""Load generation for `semcached bench` and benchmarks/suite.py.

A workload of questions whose right answers are known: a thousand how-to questions
(verb x noun x place), asked again verbatim (exact hits), as paraphrases (semantic hits,
or misses where the cache is unsure), and new questions (misses, answered by an upstream),
with Zipfian popularity. A served answer is right when it answers the question the asked
one came from: a paraphrase of "reset my password in the mobile app" served the cached
answer for "... in the web dashboard" is a wrong hit, and counts against precision.

Load comes from client processes of their own, closed-loop (each worker sends its next
request when the last is answered) or open-loop (requests sent at a fixed rate, Poisson
arrivals, latency counted from when each was due, so a slow server cannot hide its queue).
Any system that answers a question through ``Target.ask`` can be driven the same way.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
from collections import Counter
import multiprocessing
import os
import random
import re
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import grpc
import numpy as np

from semcached.fake_llm import API_KEY
from semcached.local_server import LocalServer
from semcached.v1 import semcached_pb2 as pb
from semcached.v1 import semcached_pb2_grpc as pb_grpc

VERBS = ["reset", "change", "recover", "update", "delete", "export", "verify", "link", "unlock", "rename"]
NOUNS = ["password", "email address", "billing details", "profile photo", "API key", "phone number",
         "shipping address", "username", "security questions", "payment card"]
PLACES = ["mobile app", "web dashboard", "desktop client", "admin console", "partner portal",
          "support site", "team workspace", "developer console", "billing page", "settings page"]
PARAPHRASES = ["What's the way to {v} my {n} in the {p}?", "In the {p}, how can I {v} my {n}?",
               "I want to {v} my {n} using the {p}. How?"]
# New questions: six of these and a serial number each, so two new questions share few
# words and none is a near neighbour of another (a cache serving one for another is wrong).
WORDS = ("apple anchor bridge candle canyon castle cedar comet coral desert dragon eagle engine "
         "falcon feather forest fossil galaxy garden glacier granite harbor helmet island jungle "
         "kettle ladder lantern lemon magnet marble meadow mirror monsoon needle ocean orchid "
         "oyster palace parrot pebble pepper piano pillow planet pocket prism quartz rabbit "
         "radar river rocket saddle saffron salmon satellite scarf shadow spider statue "
         "summit tiger tunnel valley velvet violin volcano walnut whistle willow window zebra").split()
PATHS = ("exact", "semantic", "miss")
MAX_ENTRIES = len(VERBS) * len(NOUNS) * len(PLACES)
NAMESPACE = "bench"


def _slots(i: int) -> dict[str, str]:
    return {"v": VERBS[i % 10], "n": NOUNS[(i // 10) % 10], "p": PLACES[(i // 100) % 10]}


def question(i: int) -> str:
    return "How do I {v} my {n} in the {p}?".format(**_slots(i))


def paraphrase(i: int, variant: int) -> str:
    return PARAPHRASES[variant % len(PARAPHRASES)].format(**_slots(i))


def _word(w: str) -> re.Pattern[str]:
    return re.compile(rf"\b{re.escape(w)}\b")


_SLOT_WORDS = [[(w, _word(w)) for w in words] for words in (VERBS, NOUNS, PLACES)]


def slots_of(text: str) -> tuple[str, ...] | None:
    """The (verb, noun, place) a question or an answer is about: answers repeat their
    question (the fake upstream's do), and a cached answer made for a paraphrase that
    missed is as right as one made for the seeded question. None: a new question."""
    found = []
    for words in _SLOT_WORDS:
        hits = [w for w, pattern in words if pattern.search(text)]
        if len(hits) != 1:
            return None
        found.append(hits[0])
    return tuple(found)


@dataclass(frozen=True)
class Workload:
    entries: int = 1000  # seeded questions, at most MAX_ENTRIES
    mix: tuple[float, float, float] = (0.6, 0.25, 0.15)  # exact, semantic, miss
    zipf: float = 1.0  # popularity exponent over the seeded questions

    def requests(self, seed: int) -> Iterator[tuple[str, str, int]]:
        """Endless (path, text, source) triples; source -1 for a new question."""
        rng = random.Random(seed)
        weights = list(itertools.accumulate(1 / (k + 1) ** self.zipf for k in range(self.entries)))
        order = list(range(self.entries))
        random.Random(7).shuffle(order)  # popularity unrelated to the slot pattern
        for n in itertools.count():
            path = rng.choices(PATHS, weights=self.mix)[0]
            if path == "miss":
                yield path, f"{' '.join(rng.sample(WORDS, 6))} {seed}-{n}?", -1
                continue
            i = order[rng.choices(range(self.entries), cum_weights=weights)[0]]
            yield path, question(i) if path == "exact" else paraphrase(i, rng.randrange(3)), i


class Target(Protocol):
    """One system under load. ``ask`` (a plain or an async method) returns the kind of
    answer ("exact", "semantic", "miss": from upstream) and its text. Plain ones are
    called from a thread per worker; async ones from one event loop per client process."""

    def ask(self, text: str) -> tuple[str, str] | Awaitable[tuple[str, str]]: ...
    def close(self) -> None | Awaitable[None]: ...


class SemcachedTarget:
    """semcached's Complete RPC: a hit from the cache or a call upstream, stored. Async:
    threads of blocking stubs cost the client process more CPU than the server spends."""

    def __init__(self, address: str, tier: str = "cheap") -> None:
        self.address = address
        self._tier = tier
        self._channel: grpc.aio.Channel | None = None

    async def ask(self, text: str) -> tuple[str, str]:
        if self._channel is None:  # made on the event loop that uses it
            self._channel = grpc.aio.insecure_channel(self.address)
        stub = pb_grpc.SemanticCacheStub(self._channel)
        r = await stub.Complete(pb.CompleteRequest(namespace=NAMESPACE, tier=self._tier,
                                                   messages=[pb.Message(role="user", content=text)]), timeout=60)
        return pb.HitKind.Name(r.kind).removeprefix("HIT_KIND_").lower(), r.text

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()


class _Asker:
    """Calls a target's ``ask`` from the event loop: awaited, or on one of ``threads``."""

    def __init__(self, target: Target, threads: int) -> None:
        self.target = target
        self._pool = None if inspect.iscoroutinefunction(target.ask) else ThreadPoolExecutor(threads)

    async def __call__(self, text: str) -> tuple[str, str]:
        if self._pool is None:
            return await cast(Awaitable[tuple[str, str]], self.target.ask(text))
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, cast(Callable[[str], tuple[str, str]], self.target.ask), text)

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
        closing = self.target.close()
        if inspect.isawaitable(closing):
            await closing


@dataclass
class Sample:
    path: str
    kind: str
    ms: float
    right: bool | None  # for hits: whether the answer was for the asked question's source
    late: bool = False  # answered after the run's end: in the latencies, not the throughput


def _judge(path: str, source: int, kind: str, answer: str) -> bool | None:
    if kind == "miss":
        return None
    return source >= 0 and slots_of(answer) == slots_of(question(source))


def drive(make: Callable[[], Target], workload: Workload, seed: int, workers: int, duration: float,
          rate: float = 0.0) -> tuple[list[Sample], Counter[str]]:
    """Closed loop with ``workers`` workers, or with ``rate`` > 0 open loop at that many
    requests per second (Poisson). Returns the samples, and the errors by message."""
    return asyncio.run(_drive(make(), workload, seed, workers, duration, rate))


async def _drive(target: Target, workload: Workload, seed: int, workers: int, duration: float,
                 rate: float) -> tuple[list[Sample], Counter[str]]:
    ask = _Asker(target, workers)
    samples: list[Sample] = []
    errors: Counter[str] = Counter()
    stream = workload.requests(seed)
    stop_at = time.perf_counter() + duration

    async def one(path: str, text: str, source: int, started: float) -> None:
        try:
            kind, answer = await ask(text)
        except Exception as e:
            errors[_error_text(e)] += 1
            return
        done = time.perf_counter()
        samples.append(Sample(path, kind, (done - started) * 1000, _judge(path, source, kind, answer),
                              late=done > stop_at))

    async def closed() -> None:
        while time.perf_counter() < stop_at:
            path, text, source = next(stream)
            await one(path, text, source, time.perf_counter())

    try:
        if rate:
            rng = random.Random(~seed)  # not the workload's sequence
            at = time.perf_counter()
            tasks = []
            while at < stop_at:
                path, text, source = next(stream)
                tasks.append(asyncio.create_task(one(path, text, source, at)))
                at += rng.expovariate(rate)
                await asyncio.sleep(max(0.0, at - time.perf_counter()))
            await asyncio.gather(*tasks)
        else:
            await asyncio.gather(*(closed() for _ in range(workers)))
    finally:
        await ask.close()
    return samples, errors


def _error_text(e: Exception) -> str:
    if isinstance(e, grpc.RpcError):
        return f"{e.code().name}: {e.details()}"
    return f"{type(e).__name__}: {e}"[:200]


def _drive_process(args: tuple[Callable[[], Target], Workload, int, int, float, float]) -> tuple[list[Sample], Counter[str]]:
    return drive(*args)


def run(make: Callable[[], Target], workload: Workload, *, concurrency: int, duration: float,
        processes: int = 2, rate: float = 0.0, seed: int = 1) -> dict[str, Any]:
    """Load from ``processes`` client processes (``make`` must pickle: a class or a
    functools.partial of one); returns throughput, latency by path, hit precision."""
    processes = max(1, min(processes, concurrency))
    shares = [concurrency // processes + (p < concurrency % processes) for p in range(processes)]
    jobs = [(make, workload, seed * 1000 + p, share, duration, rate / processes) for p, share in enumerate(shares)]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        parts = pool.map(_drive_process, jobs)
    samples = [s for part, _ in parts for s in part]
    return summarize(samples, sum((e for _, e in parts), Counter()), duration, concurrency, rate)


def _percentiles(ms: list[float]) -> dict[str, float]:
    if not ms:
        return {}
    a = np.array(ms)
    return {f"p{q}": round(float(np.percentile(a, q)), 3) for q in (50, 90, 99, 99.9)}


def summarize(samples: list[Sample], errors: Counter[str], duration: float, concurrency: int,
              rate: float) -> dict[str, Any]:
    served = [s for s in samples if s.kind != "miss"]
    right = sum(bool(s.right) for s in served)
    by_path = {}
    for path in PATHS:
        mine = [s for s in samples if s.path == path]
        kinds: dict[str, int] = {}
        for s in mine:
            kinds[s.kind] = kinds.get(s.kind, 0) + 1
        by_path[path] = {"requests": len(mine), "kinds": kinds, "wrong_hits": sum(s.right is False for s in mine),
                         **_percentiles([s.ms for s in mine])}
    return {
        "mode": "open" if rate else "closed", "concurrency": concurrency, "rate": rate,
        "duration_s": duration, "requests": len(samples), "errors": sum(errors.values()),
        "error_kinds": dict(errors.most_common(5)),
        "throughput_rps": round(sum(not s.late for s in samples) / duration, 1),
        "latency_ms": _percentiles([s.ms for s in samples]),
        "hits": len(served), "hit_rate": round(len(served) / len(samples), 4) if samples else 0.0,
        "hit_precision": round(right / len(served), 4) if served else 1.0,
        "wrong_hits": len(served) - right,
        "by_path": by_path,
    }


def seed(make: Callable[[], Target], workload: Workload, concurrency: int = 32) -> float:
    """Asks every seeded question once (each a miss, answered upstream and stored);
    returns the seconds it took."""
    async def go() -> None:
        ask = _Asker(make(), concurrency)
        todo = iter(range(workload.entries))

        async def work() -> None:
            for i in todo:
                await ask(question(i))

        try:
            await asyncio.gather(*(work() for _ in range(concurrency)))
        except Exception as e:
            raise RuntimeError(f"seeding failed: {_error_text(e)}") from None
        finally:
            await ask.close()

    start = time.perf_counter()
    asyncio.run(go())
    return time.perf_counter() - start


# -- a semcached server of its own, against a local fake upstream -----------------------------

UPSTREAM_KEY_ENV = "SEMCACHED_BENCH_UPSTREAM_KEY"


def bench_server(data_dir: Path, upstream_url: str, config: str = "") -> LocalServer:
    """A server whose every tier is the fake upstream at ``upstream_url``, plus ``config``."""
    routing = (f'[providers.fake]\nkind = "openai"\nbase_url = "{upstream_url}"\napi_key_env = "{UPSTREAM_KEY_ENV}"\n'
               '[tiers]\n' + "".join(f'{t} = ["fake/bench-model"]\n' for t in ("cheap", "standard", "hard", "code")))
    return LocalServer(data_dir, routing + config,
                       env={UPSTREAM_KEY_ENV: API_KEY, "SEMCACHED_SERVER_LOG_LEVEL": "warning"})


def measured(server: LocalServer, load: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``load``'s result with the server's CPU (cores busy on average) and memory added."""
    cpu, start = server.cpu_seconds(), time.perf_counter()
    result = load()
    result["server_cpu_cores"] = round((server.cpu_seconds() - cpu) / (time.perf_counter() - start), 2)
    result["server_rss_mib"] = round(server.rss_mib(), 1)
    return result


def markdown(rows: list[tuple[str, dict[str, Any]]]) -> str:
    """One line per run: throughput, latency percentiles, hits, precision, server load."""
    out = ["| run | mode | conc. | req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | hit rate | hit precision "
           "| errors | server CPU | RSS MiB |", "|" + "---|" * 13]
    for name, r in rows:
        lat = r["latency_ms"]
        out.append(f"| {name} | {r['mode']}{' ' + str(r['rate']) + '/s' if r['rate'] else ''} | {r['concurrency']} "
                   f"| {r['throughput_rps']} | {lat.get('p50', '')} | {lat.get('p90', '')} | {lat.get('p99', '')} "
                   f"| {lat.get('p99.9', '')} | {r['hit_rate']:.1%} | {r['hit_precision']:.1%} | {r['errors']} "
                   f"| {r.get('server_cpu_cores', '')} | {r.get('server_rss_mib', '')} |")
    return "\n".join(out)


def paths_markdown(rows: list[tuple[str, dict[str, Any]]]) -> str:
    out = ["| run | path | requests | answered as | wrong hits | p50 ms | p99 ms | p99.9 ms |", "|" + "---|" * 8]
    for name, r in rows:
        for path, p in r["by_path"].items():
            out.append(f"| {name} | {path} | {p['requests']} | {p['kinds']} | {p['wrong_hits']} | {p.get('p50', '')} "
                       f"| {p.get('p99', '')} | {p.get('p99.9', '')} |")
    return "\n".join(out)


def bench(workload: Workload, *, duration: float, concurrency: int, processes: int, rate: float,
          upstream_latency_ms: float, config: str = "", log: Callable[[str], None] = print) -> dict[str, Any]:
    """`semcached bench`: a server of its own against a fake upstream on 127.0.0.1, seeded,
    then the workload closed-loop (and open-loop at ``rate`` when given)."""
    import functools
    import tempfile

    from semcached.fake_llm import FakeLLM

    upstream = FakeLLM(delay_s=upstream_latency_ms / 1000)
    report: dict[str, Any] = {
        "machine": {"cpus": len(os.sched_getaffinity(0)), "python": sys.version.split()[0]},
        "workload": {"entries": workload.entries, "mix": dict(zip(PATHS, workload.mix)), "zipf": workload.zipf,
                     "upstream_latency_ms": upstream_latency_ms}, "runs": {}}
    with tempfile.TemporaryDirectory(prefix="semcached-bench-") as tmp:
        server = bench_server(Path(tmp) / "data", upstream.base_url, config)
        try:
            make = functools.partial(SemcachedTarget, server.target)
            report["seed_s"] = round(seed(make, workload), 2)
            log(f"seeded {workload.entries} questions in {report['seed_s']} s")
            report["runs"]["closed"] = measured(server, lambda: run(
                make, workload, concurrency=concurrency, duration=duration, processes=processes))
            if rate:
                report["runs"]["open"] = measured(server, lambda: run(
                    make, workload, concurrency=concurrency, duration=duration, processes=processes, rate=rate,
                    seed=2))  # other new questions than the closed run's (those are cached now)
        finally:
            server.stop()
            upstream.close()
    rows = list(report["runs"].items())
    report["markdown"] = markdown(rows) + "\n\n" + paths_markdown(rows)
    return report
