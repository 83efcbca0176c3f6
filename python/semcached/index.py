"""Vector search per scope (namespace + embedding model): exact in Rust while a scope is
small, hnswlib once it is large.

Scopes are hard walls: each has its own vectors, so a search can never return another
namespace's entry, and vectors of different models are never compared. The entry store
holds every vector (contiguous per scope) and scans small scopes exactly; a scope that
grows past ``EXACT_SCAN_MAX`` gets an hnswlib graph built from those vectors, and drops it
again when it shrinks below half of that (the gap keeps a scope near the line from
rebuilding back and forth). The store stays the judge of what is live: a result is served
only after the store confirms the entry, so a graph that lags a removal never serves it.

Graphs are saved with the store's snapshots (see ``Indexes.save``), so a restart loads
them instead of re-inserting every vector; a loaded graph is reconciled with the recovered
store, and one that cannot be loaded is rebuilt: graphs are derived data, never the truth.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import uuid
from pathlib import Path

import hnswlib
import numpy as np

from semcached import _core

log = logging.getLogger("semcached.index")
MANIFEST = "manifest.json"

# Past this many vectors in a scope, hnswlib answers faster than the exact scan.
# benchmarks/core.py, 384-d, one core: scan 0.28 ms at 5k, 0.59 ms at 10k, 1.4 ms at 20k;
# hnswlib 0.26, 0.39, 0.47 ms. Below ~10k the two are within noise and the scan is exact.
EXACT_SCAN_MAX = 10_000
INITIAL_CAPACITY = 1024
# Graph degree and search breadth. benchmarks/recall.py on real question embeddings:
# ef=64 gave recall@1 0.994 at 79k vectors and 0.957 at 1M (0.25 / 0.20 ms); ef=128 gave
# 1.000 and 0.981 (0.42 / 0.34 ms). Next to a 6-8 ms embedding the extra 0.15 ms is cheap.
M = 16
EF_CONSTRUCTION = 200
EF_SEARCH = 128


class GraphIndex:
    """An hnswlib index that grows as it fills and reuses the slots of removed entries."""

    def __init__(self, dim: int, capacity: int = INITIAL_CAPACITY,
                 saved: Path | None = None) -> None:
        """A new graph, or the one saved at ``saved`` (see ``save``)."""
        self._index = hnswlib.Index(space="ip", dim=dim)
        if saved is None:
            self._index.init_index(
                max_elements=max(capacity, INITIAL_CAPACITY), ef_construction=EF_CONSTRUCTION,
                M=M, allow_replace_deleted=True,
            )
        else:
            self._index.load_index(str(saved), allow_replace_deleted=True)
        self._index.set_ef(EF_SEARCH)
        self._lock = threading.Lock()
        self._live: set[int] = set()
        self._deleted = 0
        # Removals that arrived before their add (a race between two store calls).
        self._removed_early: set[int] = set()
        if saved is not None:
            self._live = {int(i) for i in np.load(f"{saved}.ids.npy")}
            self._deleted = self._index.element_count - len(self._live)

    def __len__(self) -> int:
        return len(self._live)

    @property
    def capacity(self) -> int:
        return int(self._index.get_max_elements())

    def add(self, entry_id: int, vector: np.ndarray) -> None:
        with self._lock:
            if entry_id in self._removed_early:
                self._removed_early.discard(entry_id)
                return
            if entry_id in self._live:
                return  # a graph build already took it from the store
            reuse = self._deleted > 0
            if not reuse and self._index.element_count >= self._index.get_max_elements():
                self._index.resize_index(_headroom(self._index.get_max_elements()))
            self._index.add_items(vector.reshape(1, -1), [entry_id], replace_deleted=reuse,
                                  num_threads=1)
            if reuse:
                self._deleted -= 1
            self._live.add(entry_id)

    def add_many(self, entry_ids: list[int], vectors: np.ndarray) -> None:
        """Bulk insert (building a graph for a grown scope, or after a restart), on every core."""
        with self._lock:
            needed = self._index.element_count + len(entry_ids)
            if needed > self._index.get_max_elements():
                self._index.resize_index(max(needed, _headroom(self._index.get_max_elements())))
            self._index.add_items(vectors, entry_ids, num_threads=-1)
            self._live.update(entry_ids)

    def save(self, path: Path) -> None:
        """Writes the graph (``path``) and its live ids (``path`` + ".ids.npy"), durably."""
        with self._lock:
            self._index.save_index(str(path))
            np.save(f"{path}.ids.npy", np.fromiter(self._live, dtype=np.uint64, count=len(self._live)))
        for file in (path, Path(f"{path}.ids.npy")):
            with open(file, "rb+") as f:
                os.fsync(f.fileno())

    def reconcile(self, entry_ids: list[int], vectors: np.ndarray) -> tuple[int, int]:
        """Makes the graph hold exactly these entries; returns (added, removed)."""
        wanted = set(entry_ids)
        stale = self._live - wanted
        for entry_id in stale:
            self.remove(entry_id)
        missing = [i for i, entry_id in enumerate(entry_ids) if entry_id not in self._live]
        for i in missing:
            self.add(entry_ids[i], vectors[i])
        return len(missing), len(stale)

    def remove(self, entry_id: int) -> None:
        with self._lock:
            if entry_id not in self._live:
                self._removed_early.add(entry_id)
                return
            self._index.mark_deleted(entry_id)
            self._live.discard(entry_id)
            self._deleted += 1

    def search(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """Up to k (entry id, cosine similarity) pairs, most similar first."""
        with self._lock:
            k = min(k, len(self._live))
            while k > 0:
                try:
                    labels, distances = self._index.knn_query(vector.reshape(1, -1), k=k,
                                                              num_threads=1)
                    break
                except RuntimeError:
                    # Deleted slots can leave fewer than k reachable results: ask for fewer.
                    k -= 1
            else:
                return []
        return [(int(i), 1.0 - float(d)) for i, d in zip(labels[0], distances[0])]


class Indexes:
    """Every scope's search, over one entry store."""

    def __init__(self, store: _core.Store, exact_scan_max: int = EXACT_SCAN_MAX,
                 directory: Path | None = None) -> None:
        self.store = store
        self.exact_scan_max = exact_scan_max
        self.directory = directory  # where graphs are saved; None: never saved
        self._saving = threading.Lock()
        self._graphs: dict[tuple[str, str], GraphIndex] = {}
        # Scopes grown past the threshold whose graph the background work will build, and
        # those being built now (not queued again meanwhile).
        self._to_build: set[tuple[str, str]] = set()
        self._building: set[tuple[str, str]] = set()
        # Adds, removals and graph builds hold this lock, so a graph cannot be dropped
        # or replaced while a change is on its way into it; searches only look it up.
        self._lock = threading.Lock()

    def search(self, scope: str, model: str, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        graph = self._graphs.get((scope, model))
        if graph is None:
            return self.store.search(scope, model, vector.astype("<f4").tobytes(), k)
        return graph.search(vector, k)

    def added(self, scope: str, model: str, entry_id: int, vector: np.ndarray) -> None:
        """Called after the store took an entry with this vector."""
        with self._lock:
            graph = self._graphs.get((scope, model))
            if graph is not None:
                graph.add(entry_id, vector)
            elif ((scope, model) not in self._building
                  and self.store.vector_count(scope, model) > self.exact_scan_max):
                # Built off the request path (build_pending); the exact scan serves meanwhile.
                self._to_build.add((scope, model))

    def removed(self, scope: str, model: str, entry_id: int) -> None:
        """Called after the store dropped an entry."""
        with self._lock:
            graph = self._graphs.get((scope, model))
            if graph is None:
                return
            graph.remove(entry_id)
            if len(graph) < self.exact_scan_max // 2:
                del self._graphs[(scope, model)]  # small again: the exact scan serves it

    def rebuild(self) -> tuple[int, int]:
        """Gives every large scope its graph after a restart: the saved one, reconciled
        with the recovered store, or a new one. Returns (loaded, built)."""
        saved = self._read_manifest()
        loaded = built = 0
        with self._lock:
            for scope, model, count in self.store.vector_sets():
                if count <= self.exact_scan_max:
                    continue
                ids, raw = self.store.scope_vectors(scope, model)
                vectors = np.frombuffer(raw, dtype="<f4").reshape(len(ids), -1)
                entry = saved.get(_file_stem(scope, model))
                graph = self._load(entry, ids, vectors) if entry else None
                if graph is None:
                    graph = GraphIndex(vectors.shape[1], capacity=_headroom(len(ids)))
                    graph.add_many(ids, vectors)
                    built += 1
                else:
                    loaded += 1
                self._graphs[(scope, model)] = graph
        return loaded, built

    def save(self) -> int:
        """Saves every graph, then a manifest naming them (the commit point), then removes
        older files. Returns how many graphs were saved."""
        if self.directory is None:
            return 0
        with self._saving:  # a sweep's save and the shutdown's must not interleave
            return self._save(self.directory)

    def _save(self, directory: Path) -> int:
        directory.mkdir(parents=True, exist_ok=True)
        with self._lock:
            graphs = dict(self._graphs)
        manifest = {}
        for (scope, model), graph in graphs.items():
            stem = _file_stem(scope, model)
            file = f"{stem}-{uuid.uuid4().hex[:12]}.hnsw"  # never the name of a committed file
            graph.save(directory / file)
            manifest[stem] = {"scope": scope, "model": model, "file": file,
                              "bytes": (directory / file).stat().st_size}
        tmp = directory / f"{MANIFEST}.tmp"
        tmp.write_text(json.dumps(manifest, indent=1))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        tmp.replace(directory / MANIFEST)
        keep = {MANIFEST} | {m["file"] for m in manifest.values()} | {f"{m['file']}.ids.npy" for m in manifest.values()}
        for path in directory.iterdir():
            if path.name not in keep:
                path.unlink(missing_ok=True)
        return len(manifest)

    def _read_manifest(self) -> dict[str, dict[str, object]]:
        if self.directory is None or not (self.directory / MANIFEST).is_file():
            return {}
        try:
            manifest: dict[str, dict[str, object]] = json.loads((self.directory / MANIFEST).read_text())
            return manifest
        except (OSError, ValueError) as e:
            log.warning("ignoring the saved graphs (%s): they will be rebuilt", e)
            return {}

    def _load(self, entry: dict[str, object], ids: list[int], vectors: np.ndarray) -> GraphIndex | None:
        """The saved graph, caught up with the store; None (rebuild it) on any doubt."""
        assert self.directory is not None
        path = self.directory / str(entry["file"])
        try:
            if path.stat().st_size != entry["bytes"]:
                raise ValueError(f"{path} has {path.stat().st_size} bytes, the manifest says {entry['bytes']}")
            graph = GraphIndex(vectors.shape[1], saved=path)
            added, removed = graph.reconcile(ids, vectors)
        except (OSError, ValueError, RuntimeError) as e:
            log.warning("could not load a saved graph (%s): rebuilding it", e)
            return None
        log.info("loaded the graph of %s (%d vectors; %d added, %d removed since it was saved)",
                 entry["scope"], len(graph), added, removed)
        return graph

    def build_pending(self) -> int:
        """Builds the graphs of scopes that grew past the threshold, without holding the
        lock while building: adds and removals go on meanwhile, and the new graph catches
        up with the store before it takes over. Returns how many were built."""
        with self._lock:
            pending = self._to_build - self._graphs.keys()
            self._to_build = set()
            self._building = pending
        try:
            for scope, model in pending:
                ids, raw = self.store.scope_vectors(scope, model)
                if len(ids) <= self.exact_scan_max:
                    continue
                vectors = np.frombuffer(raw, dtype="<f4").reshape(len(ids), -1)
                graph = GraphIndex(vectors.shape[1], capacity=_headroom(len(ids)))
                graph.add_many(ids, vectors)
                with self._lock:
                    ids, raw = self.store.scope_vectors(scope, model)
                    graph.reconcile(ids, np.frombuffer(raw, dtype="<f4").reshape(len(ids), -1))
                    self._graphs[(scope, model)] = graph
        finally:
            with self._lock:
                self._building = set()
        return len(pending)

    def sizes(self) -> dict[str, str]:
        """How each scope is searched, for stats and tests."""
        with self._lock:
            graphs = {key: len(g) for key, g in self._graphs.items()}
        out = {}
        for scope, model, count in self.store.vector_sets():
            kind = f"hnswlib ({graphs[(scope, model)]})" if (scope, model) in graphs else "exact"
            out[f"{scope} ({model})"] = f"{count} vectors, {kind}"
        return out


def _headroom(n: int) -> int:
    """Slots for a graph of n vectors and its growth. hnswlib allocates every slot up
    front (~1.7 KB each at 384-d, M=16): doubling left a 1M-vector graph ~1.6 GB of empty
    slots; a quarter more costs a resize (a copy, milliseconds per 100k) more often."""
    return n + n // 4 + 1


def _file_stem(scope: str, model: str) -> str:
    """A file name for a scope's graph: scopes may hold characters a file name cannot."""
    return hashlib.sha256(f"{scope}\0{model}".encode()).hexdigest()[:24]
