"""Side by side in one run: semcached against the ceilings it cannot beat on this machine.

    .venv/bin/python benchmarks/ceilings.py [--duration 5] [--repeats 3] [--concurrency 16] [--processes 1]

* Exact hits against a bare gRPC server: a grpc.aio server in a process of its own that
  answers every Lookup with the same pre-serialized LookupResponse (no parsing, no work):
  the floor of any Python gRPC service, on asyncio's own loop and on uvloop (semcached's
  default loop, which speeds up the bare server too). The same client processes, the same
  requests, drive both and semcached's exact tier in turn, ``--repeats`` times each,
  alternating (this machine's speed drifts by ±5% over minutes); each ratio is the median
  of the runs' ratios, and the runs shown are the median ones.
* Semantic lookups against ONNX Runtime alone: the same model, the same session layout
  (one 1-thread session shared by one thread per core), at batch sizes 1 to 32, before
  and after semcached's runs (averaged). Two ceilings: the best batch, and the batch
  that the same concurrency allows (16 texts in flight on 2 threads: 8 each). semcached's
  semantic lookups at the same concurrency, with its embedding cache off (every lookup
  runs the model, as in the ceiling), are compared to it: with the verifier off (the same
  model work as the ceiling: one embedding per lookup) and on (a cross-encoder pass per
  candidate on top, where a candidate is above min_similarity).

Writes benchmarks/results/ceilings.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadtest import query, run_path, seed, start_server, stored_prompt  # noqa: E402

from semcached.embed import Embedder, default_threads  # noqa: E402
from semcached.local_server import free_port  # noqa: E402
from semcached.models import models_dir, resolve  # noqa: E402
from semcached.v1 import semcached_pb2 as pb  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def echo_server(port: int, loop: str) -> None:
    """A Lookup that answers a fixed hit, as cheaply as grpc.aio allows."""
    answer = pb.LookupResponse(kind=pb.HIT_KIND_EXACT, response="answer " + "x" * 200,
                               match=pb.Match(entry_id=1, matched_prompt=stored_prompt(1),
                                              similarity=1.0)).SerializeToString()

    async def lookup(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return answer

    async def serve() -> None:
        server = grpc.aio.server()
        handler = grpc.unary_unary_rpc_method_handler(lookup)  # bytes in, bytes out
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "semcached.v1.SemanticCache", {"Lookup": handler}),))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    if loop == "uvloop":
        import uvloop

        uvloop.run(serve())
    else:
        asyncio.run(serve())


def onnx_ceiling(duration: float) -> dict[str, Any]:
    folder = resolve("all-MiniLM-L6-v2-int8", models_dir(""), "mean")
    embedder = Embedder(folder)
    workers = default_threads(0)
    texts = [query("semantic", i, None) for i in range(1000)]  # type: ignore[arg-type]
    results = {}
    for batch in (1, 4, 8, 16, 32):
        stop = time.perf_counter() + duration
        counts = [0] * workers

        def work(w: int) -> None:
            i = w * 97
            while time.perf_counter() < stop:
                embedder.embed(texts[i % 900:i % 900 + batch])
                counts[w] += batch
                i += batch

        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(work, range(workers)))
        results[batch] = round(sum(counts) / duration, 1)
    best = max(results, key=lambda b: results[b])
    return {"threads": workers, "embeddings_per_s_by_batch": results, "best_batch": best,
            "best_embeddings_per_s": results[best]}


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return sorted(runs, key=lambda r: r["throughput_rps"])[len(runs) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3, help="alternating bare-server / exact-hit runs")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--entries", type=int, default=1000)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "ceilings.json")
    parser.add_argument("--echo-server", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--echo-loop", default="asyncio", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.echo_server:
        echo_server(args.echo_server, args.echo_loop)
        return
    result: dict[str, Any] = {"machine": {"cores": len(os.sched_getaffinity(0)), "python": sys.version.split()[0]}}
    if args.duration <= 0 or args.repeats < 1:
        parser.error("--duration must be positive and --repeats at least 1")
    # The bare server on asyncio's own loop (the floor as first defined) and on uvloop
    # (semcached's default loop, which makes the bare server faster too).
    loops = ("asyncio", "uvloop")
    ports = {loop: free_port() for loop in loops}
    echoes = [subprocess.Popen([sys.executable, __file__, "--echo-server", str(ports[loop]), "--echo-loop", loop])
              for loop in loops]
    pair_ratios: dict[str, list[float]] = {}
    try:
        for port in ports.values():
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                grpc.channel_ready_future(channel).result(timeout=30)
        with tempfile.TemporaryDirectory(prefix="semcached-ceilings-") as tmp:
            server = start_server(tmp)
            try:
                seed(server.target, 0, args.entries)
                for c in (1, args.concurrency):
                    runs: dict[str, list[dict[str, Any]]] = {"echo": [], "echo_uvloop": [], "exact": []}
                    for _ in range(args.repeats):
                        for name, target in (("echo", f"127.0.0.1:{ports['asyncio']}"),
                                             ("echo_uvloop", f"127.0.0.1:{ports['uvloop']}"),
                                             ("exact", server.target)):
                            runs[name].append(run_path(target, "exact", c, args.duration, args.entries,
                                                       args.processes))
                    for name in ("echo", "echo_uvloop"):
                        pair_ratios[f"exact_vs_{name}_c{c}"] = [round(x["throughput_rps"] / e["throughput_rps"], 3)
                                                                for e, x in zip(runs[name], runs["exact"])]
                    for name, measured in runs.items():
                        result[f"{name}_c{c}"] = _median_run(measured)
            finally:
                server.stop()
    finally:
        for echo in echoes:
            echo.terminate()
            echo.wait()
    # Measured before and after semcached's semantic runs, and averaged: the machine's
    # speed drifts over minutes, and the ratio should not depend on which came first.
    onnx = [onnx_ceiling(args.duration)]
    for name, verifier in (("semantic", "default"), ("semantic_verifier_off", "none")):
        os.environ.update(SEMCACHED_EMBEDDING_CACHE_ENTRIES="0", SEMCACHED_CACHE_VERIFIER=verifier)
        with tempfile.TemporaryDirectory(prefix="semcached-ceilings-") as tmp:
            server = start_server(tmp)
            try:
                seed(server.target, 0, args.entries)
                result[f"{name}_c{args.concurrency}"] = run_path(server.target, "semantic", args.concurrency,
                                                                 args.duration, args.entries, args.processes)
            finally:
                server.stop()
    onnx.append(onnx_ceiling(args.duration))
    c = args.concurrency
    by_batch = {b: round(sum(o["embeddings_per_s_by_batch"][b] for o in onnx) / len(onnx), 1)
                for b in onnx[0]["embeddings_per_s_by_batch"]}
    # c texts in flight over the threads: batches of c / threads (the largest measured size up to it)
    same = max(b for b in by_batch if b <= max(1, c // onnx[0]["threads"]))
    result["onnx"] = {"threads": onnx[0]["threads"], "embeddings_per_s_by_batch": by_batch,
                      "runs": onnx, "best_embeddings_per_s": max(by_batch.values()),
                      "same_concurrency_batch": same, "same_concurrency_embeddings_per_s": by_batch[same]}
    result["exact_pair_ratios"] = pair_ratios
    ratios = {
        **{name: statistics.median(values) for name, values in pair_ratios.items()},
        **{f"{name}_c{c}_vs_onnx_{which}": round(result[f"{name}_c{c}"]["throughput_rps"]
                                                  / result["onnx"][f"{which}_embeddings_per_s"], 3)
           for name in ("semantic", "semantic_verifier_off") for which in ("best", "same_concurrency")},
    }
    result["ratios"] = ratios
    print("| what | concurrency | req/s | p50 ms | p99 ms |\n|---|---|---|---|---|")
    for key in ("echo_c1", "echo_uvloop_c1", "exact_c1", f"echo_c{c}", f"echo_uvloop_c{c}", f"exact_c{c}",
                f"semantic_c{c}", f"semantic_verifier_off_c{c}"):
        r = result[key]
        print(f"| {key.rsplit('_', 1)[0]} | {r['concurrency']} | {r['throughput_rps']} | {r['p50_ms']} | {r['p99_ms']} |")
    print(f"ONNX Runtime alone: {result['onnx']['embeddings_per_s_by_batch']} embeddings/s by batch size")
    print(f"ratios: {ratios}; semantic hit kinds seen: {result[f'semantic_c{c}']['kinds']}, verifier off: "
          f"{result[f'semantic_verifier_off_c{c}']['kinds']}")
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
