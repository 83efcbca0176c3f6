"""The load-test suite, side by side in one run on this machine (BENCHMARKS.md).

    make bench            # or: .venv/bin/python benchmarks/suite.py [--duration 10]

1. Ceilings (benchmarks/ceilings.py): semcached's exact hits against a bare gRPC server,
   and its semantic lookups (embedding cache off, so every lookup runs the model) against
   ONNX Runtime alone, with the verifier on and off.
2. The mixed workload (semcached.loadgen: exact repeats, paraphrases, new questions,
   Zipfian popularity; misses answered by a local fake upstream after
   --upstream-latency-ms) against:
   - semcached (Complete over gRPC), closed loop, then open loop at half its throughput;
   - semcached with the exact tier off;
   - GPTCache in-process (same model, its hnswlib + sqlite stores; gptcache_side.py);
   - GPTCache's own HTTP server (in a venv of its own: it pins openai==0.28.1).
   Each reports throughput, latency percentiles per path, hit rate and hit precision
   (hits answering another question than the one asked are wrong).

Writes benchmarks/results/suite.json and suite.md. All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import functools
import http.client
import json
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai

from semcached import loadgen
from semcached.embed import Embedder
from semcached.fake_llm import API_KEY
from semcached.loadgen import (SemcachedTarget, Workload, drive, markdown, measured, paths_markdown,
                               question, run)
from semcached.local_server import free_port
from semcached.models import models_dir, resolve

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import gptcache_side  # noqa: E402

GPTCACHE_VENV = ROOT / ".venv-gptcache"
GPTCACHE_SERVER_PACKAGES = ["gptcache==0.1.44", "sqlalchemy", "fastapi", "uvicorn", "openai==0.28.1",
                            "hnswlib", "onnxruntime", "tokenizers", "numpy"]


class _Upstream:
    """The fake upstream through the official SDK, as an application on a miss calls it."""

    def __init__(self, url: str) -> None:
        self.client = openai.OpenAI(base_url=url, api_key=API_KEY, max_retries=0)

    def answer(self, text: str) -> str:
        r = self.client.chat.completions.create(model="bench-model", messages=[{"role": "user", "content": text}])
        return r.choices[0].message.content or ""


class _GPTCache:
    """GPTCache as an application uses it: get; on a miss the upstream, then put."""

    def __init__(self, upstream_url: str) -> None:
        self.upstream = _Upstream(upstream_url)

    def get(self, text: str) -> Any: ...
    def put(self, text: str, answer: str) -> None: ...

    def ask(self, text: str) -> tuple[str, str]:
        answer = self.get(text)
        if answer is not None:
            return "hit", str(answer)
        answer = self.upstream.answer(text)
        self.put(text, answer)
        return "miss", answer

    def close(self) -> None:
        pass


class GPTCacheTarget(_GPTCache):
    """GPTCache in this process."""

    def __init__(self, data_dir: Path, upstream_url: str, min_cosine: float) -> None:
        from gptcache import Cache

        super().__init__(upstream_url)
        folder = resolve("all-MiniLM-L6-v2-int8", models_dir(""), "mean")
        self.embedder = Embedder(folder)
        self.cache = Cache()
        gptcache_side.setup_cache(self.cache, data_dir, lambda text: self.embedder.embed([text])[0],
                                  self.embedder.dim, min_cosine, max_size=1_000_000)

    def get(self, text: str) -> Any:
        from gptcache.adapter.api import get

        return get(text, cache_obj=self.cache)

    def put(self, text: str, answer: str) -> None:
        from gptcache.adapter.api import put

        put(text, answer, cache_obj=self.cache)


class GPTCacheHTTPTarget(_GPTCache):
    """GPTCache's HTTP server: POST /get, POST /put."""

    def __init__(self, port: int, upstream_url: str) -> None:
        super().__init__(upstream_url)
        self.port = port
        self._local = threading.local()

    def _post(self, path: str, body: dict[str, str]) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"GPTCache {path}: HTTP {response.status}: {data[:200]!r}")
        return json.loads(data)

    def get(self, text: str) -> Any:
        return self._post("/get", {"prompt": text}).get("answer")

    def put(self, text: str, answer: str) -> None:
        self._post("/put", {"prompt": text, "answer": answer})


def seed_gptcache(target: _GPTCache, workload: Workload) -> None:
    """Puts every seeded question with its upstream answer, without asking first: asked
    in order, a question would be served its already stored neighbour's answer (cosine
    0.9 between "reset" and "change my password ...") and not be stored, and GPTCache's
    sqlite store fails concurrent puts at times ("database is locked"). So answers are
    fetched concurrently and put one at a time (set-up, not measured)."""
    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(target.upstream.answer, [question(i) for i in range(workload.entries)]))
    for i, answer in enumerate(answers):
        target.put(question(i), answer)


def start_upstream(latency_ms: float) -> tuple[subprocess.Popen[str], str]:
    """The fake upstream in a process of its own: in this one it would take the GIL from
    the in-process GPTCache it answers."""
    code = ("import sys, time\nfrom semcached.fake_llm import FakeLLM\n"
            "fake = FakeLLM(delay_s=float(sys.argv[1]))\nprint(fake.base_url, flush=True)\ntime.sleep(1e9)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(latency_ms / 1000)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def wait_http(port: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"GPTCache's server did not answer on port {port} within {timeout:.0f} s")


def gptcache_server_venv() -> Path:
    python = GPTCACHE_VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {GPTCACHE_VENV} for GPTCache's server (PyPI)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(GPTCACHE_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *GPTCACHE_SERVER_PACKAGES], check=True)
    return python


def ceilings(duration: float) -> dict[str, Any]:
    out = HERE / "results" / "ceilings.json"
    subprocess.run([sys.executable, str(HERE / "ceilings.py"), "--duration", str(duration), "--json", str(out)],
                   check=True)
    return dict(json.loads(out.read_text()))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    p.add_argument("--concurrency", default="32,128",
                   help="closed-loop concurrencies; each system is compared at its best")
    p.add_argument("--processes", type=int, default=2, help="client processes for out-of-process targets")
    p.add_argument("--entries", type=int, default=1000)
    p.add_argument("--upstream-latency-ms", type=float, default=200.0)
    p.add_argument("--min-cosine", type=float, default=0.9, help="GPTCache's hit threshold (cosine)")
    p.add_argument("--skip", default="", help="comma-separated: ceilings,exact-off,open,gptcache,gptcache-http")
    p.add_argument("--out", type=Path, default=HERE / "results")
    args = p.parse_args()
    skip = set(args.skip.split(",")) - {""}
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    workload = Workload(args.entries)
    report: dict[str, Any] = {"settings": {k: str(v) for k, v in vars(args).items()}, "runs": {}, "best": {}}
    if "ceilings" not in skip:
        report["ceilings"] = ceilings(args.duration)
    upstream_proc, upstream_url = start_upstream(args.upstream_latency_ms)

    def closed_runs(system: str, load: Callable[[int], dict[str, Any]]) -> None:
        for c in concurrencies:
            report["runs"][f"{system} c{c}"] = r = load(c)
            print(f"{system} c{c}: {r['throughput_rps']} req/s, hit precision {r['hit_precision']}", flush=True)
        best = max(concurrencies, key=lambda c: report["runs"][f"{system} c{c}"]["throughput_rps"])
        report["best"][system] = {"concurrency": best, **report["runs"][f"{system} c{best}"]}

    try:
        with tempfile.TemporaryDirectory(prefix="semcached-suite-") as tmp:
            for system, config in (("semcached", ""), ("semcached, exact tier off", "[cache]\nexact_tier = false\n")):
                if system.endswith("off") and "exact-off" in skip:
                    continue
                server = loadgen.bench_server(Path(tmp) / system.replace(" ", "").replace(",", "-"), upstream_url,
                                              config)
                try:
                    make = functools.partial(SemcachedTarget, server.target)
                    loadgen.seed(make, workload)
                    closed_runs(system, lambda c: measured(server, lambda: run(
                        make, workload, concurrency=c, duration=args.duration, processes=args.processes, seed=c)))
                    if system == "semcached" and "open" not in skip:
                        rate = round(report["best"][system]["throughput_rps"] / 2)
                        report["runs"]["semcached, open loop"] = measured(server, lambda: run(
                            make, workload, concurrency=max(concurrencies), duration=args.duration,
                            processes=args.processes, rate=rate, seed=1))  # new questions unlike the closed runs'
                finally:
                    server.stop()
            if "gptcache" not in skip:
                target = GPTCacheTarget(Path(tmp) / "gptcache", upstream_url, args.min_cosine)
                seed_gptcache(target, workload)

                def in_process(c: int) -> dict[str, Any]:
                    samples, errors = drive(lambda: target, workload, c, c, args.duration)  # seed c, as the others
                    return loadgen.summarize(samples, errors, args.duration, c, 0.0)

                closed_runs("GPTCache in-process", in_process)
            if "gptcache-http" not in skip:
                python = gptcache_server_venv()
                port = free_port()
                folder = resolve("all-MiniLM-L6-v2-int8", models_dir(""), "mean")
                proc = subprocess.Popen([str(python), str(HERE / "gptcache_side.py"), str(port),
                                         str(Path(tmp) / "gptcache-http"), str(folder.path), str(args.min_cosine)])
                try:
                    wait_http(port)
                    make_http = functools.partial(GPTCacheHTTPTarget, port, upstream_url)
                    seed_gptcache(make_http(), workload)
                    closed_runs("GPTCache HTTP server", lambda c: run(
                        make_http, workload, concurrency=c, duration=args.duration, processes=args.processes, seed=c))
                finally:
                    proc.terminate()
                    proc.wait(timeout=30)
    finally:
        upstream_proc.terminate()
        upstream_proc.wait()
    rows = list(report["runs"].items())
    text = markdown(rows) + "\n\n" + paths_markdown(rows)
    if "semcached" in report["best"]:
        ours = report["best"]["semcached"]
        report["ratios"] = {
            f"semcached vs {system}": {"throughput": round(ours["throughput_rps"] / r["throughput_rps"], 2),
                                       "hit_precision": [ours["hit_precision"], r["hit_precision"]]}
            for system, r in report["best"].items() if system != "semcached" and r["throughput_rps"]}
        text += "\n\nEach system at its best concurrency:\n" + "\n".join(
            f"- {k}: {v['throughput']}x the throughput; hit precision {v['hit_precision'][0]:.1%} vs "
            f"{v['hit_precision'][1]:.1%}" for k, v in report["ratios"].items())
    if "ceilings" in report:
        text += "\n- ceilings: " + json.dumps(report["ceilings"]["ratios"])
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "suite.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "suite.md").write_text(text + "\n")
    print(f"wrote {args.out / 'suite.json'} and suite.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
