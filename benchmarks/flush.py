"""Lookups while Stores flush: exact lookups on one thread while writer threads store,
with fsync = "always" (every Store on the disk before it is acknowledged), through the
real core and a real data directory.

    python benchmarks/flush.py [--duration 5] [--writers 4] [--dir PATH]

A lookup must not wait for another request's disk flush: the store flushes outside its
lock, and one flush acknowledges every Store logged before it began (group commit).
Reports Stores/s and the lookups' latency percentiles; writes JSON. ``--dir`` puts the
data directory on the disk to measure (default: a temporary directory).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from semcached import _core

VECTOR = np.zeros(384, "<f4").tobytes()


def measure(data_dir: str, duration: float, writers: int, seeded: int = 1000) -> dict[str, Any]:
    store = _core.Store(data_dir=data_dir, fsync="always")
    for i in range(seeded):
        store.insert("ns", f"question {i}", "a" * 200, VECTOR, "m")
    stop_at = time.perf_counter() + duration
    stored = [0] * writers

    def write(t: int) -> None:
        while time.perf_counter() < stop_at:
            store.insert("ns", f"writer {t} question {stored[t]}", "a" * 200, VECTOR, "m")
            stored[t] += 1

    threads = [threading.Thread(target=write, args=(t,)) for t in range(writers)]
    for thread in threads:
        thread.start()
    latencies = []
    while time.perf_counter() < stop_at:
        started = time.perf_counter()
        store.get_exact("ns", f"question {len(latencies) % seeded}")
        latencies.append(time.perf_counter() - started)
        time.sleep(0.0002)  # a lookup every ~0.2 ms, as from a busy event loop
    for thread in threads:
        thread.join()
    ms = np.array(latencies) * 1000
    return {"writers": writers, "duration_s": duration, "stores_per_s": round(sum(stored) / duration, 1),
            "lookups": len(ms), **{f"lookup_p{p}_ms": round(float(np.percentile(ms, p)), 3) for p in (50, 99, 99.9)},
            "lookup_max_ms": round(float(ms.max()), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--dir", type=Path, help="parent of the data directory (default: a temporary one)")
    parser.add_argument("--json", type=Path, default=Path(__file__).resolve().parent / "results" / "flush.json")
    args = parser.parse_args()
    if not args.duration > 0 or args.writers < 0:
        parser.error("--duration must be above 0 and --writers at least 0")
    with tempfile.TemporaryDirectory(prefix="semcached-flush-", dir=args.dir) as tmp:
        result = measure(tmp, args.duration, args.writers)
    print(" ".join(f"{k}={v}" for k, v in result.items()))
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
