"""Vector search and the engine in-process: exact scan for small scopes, hnswlib for large
ones; removed entries are never returned, slots are reused, eviction and expiry reach it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from semcached import config as configuration
from semcached.engine import Engine
from semcached.errors import InvalidArgument
from semcached import _core
from semcached.index import INITIAL_CAPACITY, GraphIndex, Indexes


def unit_rows(n: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_index_grows_and_reuses_the_slots_of_removed_entries() -> None:
    index = GraphIndex(32)
    rows = unit_rows(INITIAL_CAPACITY + 500)
    for i, row in enumerate(rows):
        index.add(i + 1, row)
    capacity = index._index.get_max_elements()
    assert len(rows) <= capacity < 2 * INITIAL_CAPACITY and len(index) == len(rows)  # grown by quarters
    for i in range(1, 501):
        index.remove(i)
    assert all(entry_id > 500 for entry_id, _ in index.search(rows[0], 4))
    fresh = unit_rows(500, seed=1)
    for i, row in enumerate(fresh):
        index.add(10_000 + i, row)
    assert index._index.get_max_elements() == capacity  # reused, not grown
    top_id, similarity = index.search(fresh[7], 1)[0]
    assert top_id == 10_007 and similarity == pytest.approx(1.0, abs=1e-4)


def test_removal_before_add_is_not_resurrected() -> None:
    index = GraphIndex(32)
    index.remove(5)  # the store removed it before the add reached the index
    index.add(5, unit_rows(1)[0])
    assert len(index) == 0 and index.search(unit_rows(1)[0], 1) == []


def test_scopes_move_to_hnswlib_when_large_and_back_when_small() -> None:
    store = _core.Store(10_000)
    indexes = Indexes(store, exact_scan_max=50)
    rows = unit_rows(120)
    ids = []
    for i, row in enumerate(rows):
        entry_id = store.insert("big", f"q{i}", "a", row.tobytes(), "m")
        indexes.added("big", "m", entry_id, row)
        ids.append(entry_id)
        if i == 60:
            assert indexes.build_pending() == 1  # off the request path, as the sweep does
    store.insert("small", "q", "a", rows[0].tobytes(), "m")
    sizes = indexes.sizes()
    assert "hnswlib (120)" in sizes["big (m)"] and sizes["small (m)"] == "1 vectors, exact"
    # The graph agrees with the exact scan (its recall oracle) on every stored vector.
    for i in range(0, 120, 7):
        exact = store.search("big", "m", rows[i].astype("<f4").tobytes(), 1)
        assert indexes.search("big", "m", rows[i], 1)[0][0] == exact[0][0] == ids[i]
    for entry_id in ids[:100]:
        store.remove(entry_id)
        indexes.removed("big", "m", entry_id)
    assert indexes.sizes()["big (m)"] == "20 vectors, exact"
    top = indexes.search("big", "m", rows[110], 2)
    assert top[0][0] == ids[110] and top[0][1] == pytest.approx(1.0, abs=1e-5)
    assert all(entry_id in ids[100:] for entry_id, _ in top)


def test_saved_graphs_are_loaded_and_reconciled_after_a_restart(tmp_path: Path) -> None:
    rows = unit_rows(200)
    store = _core.Store(10_000, str(tmp_path / "data"))
    indexes = Indexes(store, exact_scan_max=50, directory=tmp_path / "graphs")
    ids = [store.insert("big", f"q{i}", "a", row.tobytes(), "m") for i, row in enumerate(rows[:150])]
    indexes.rebuild()
    assert indexes.save() == 1
    # Changes after the save: the reloaded graph must catch up with them.
    for entry_id in ids[:10]:
        store.remove(entry_id)
    ids += [store.insert("big", f"q{i}", "a", rows[i].tobytes(), "m") for i in range(150, 200)]
    store.snapshot()
    del store, indexes

    store = _core.Store(10_000, str(tmp_path / "data"))
    indexes = Indexes(store, exact_scan_max=50, directory=tmp_path / "graphs")
    assert indexes.rebuild() == (1, 0)  # loaded, not rebuilt
    assert indexes.sizes()["big (m)"] == "190 vectors, hnswlib (190)"
    for i in (0, 12, 160, 199):
        top = indexes.search("big", "m", rows[i], 1)
        assert (top[0][0] == ids[i]) if i >= 10 else (top[0][0] != ids[i])

    # A damaged graph file is rebuilt, never trusted.
    graph_file = next(p for p in (tmp_path / "graphs").iterdir() if p.suffix == ".hnsw")
    graph_file.write_bytes(graph_file.read_bytes()[:100])
    fresh = Indexes(store, exact_scan_max=50, directory=tmp_path / "graphs")
    assert fresh.rebuild() == (0, 1)
    assert fresh.search("big", "m", rows[160], 1)[0][0] == ids[160]


@pytest.fixture
def engine_config(tmp_path: Path) -> configuration.Config:
    config = configuration.load(None, environ={})
    config.cache.max_entries = 3
    config.server.data_dir = str(tmp_path / "data")
    return config


def test_engine_eviction_and_expiry_reach_the_index(engine_config: configuration.Config) -> None:
    async def run() -> None:
        engine = Engine.from_config(engine_config)
        try:
            await engine.store_entry("ns", "How do I reset my password?", "A1")
            for q in ("How do I delete my account?", "How do I change my email?",
                      "How do I enable two-factor authentication?"):
                await engine.store_entry("ns", q, "A")
            # The least recently used entry was evicted from the store and its index.
            assert (await engine.lookup("ns", "what's the way to reset my password")).kind == "miss"
            assert engine.store.vector_count("ns", engine.model_id) == 3
            await engine.store_entry("ns", "Where is my invoice?", "A", ttl_seconds=1)
            await asyncio.sleep(1.1)
            # Expired: never served, even before the sweep reclaims it.
            assert (await engine.lookup("ns", "where is my invoice")).kind == "miss"
            assert engine.sweep() == 1
            assert engine.store.vector_count("ns", engine.model_id) == 2
            assert await engine.invalidate("ns", all=True) == 2
            assert engine.indexes.sizes() == {}
        finally:
            await engine.close()

    asyncio.run(run())


def test_namespace_bounds_from_the_config_apply(engine_config: configuration.Config) -> None:
    engine_config.cache.max_entries = 100
    engine_config.namespaces["tight"] = configuration.NamespaceSettings(max_entries=2)
    engine_config.namespaces["small"] = configuration.NamespaceSettings(max_bytes=3000)

    async def run() -> None:
        engine = Engine.from_config(engine_config)
        try:
            for q in ("Where is my order?", "How do I return an item?", "Do you ship abroad?"):
                await engine.store_entry("tight", q, "A")
                await engine.store_entry("roomy", q, "A")
            stats = await engine.stats()
            assert (stats.namespaces["tight"].entries, stats.namespaces["roomy"].entries) == (2, 3)
            assert stats.evictions == 1
            with pytest.raises(InvalidArgument, match="more than the 3000-byte bound"):
                await engine.store_entry("small", "Q?", "x" * 3000)
        finally:
            await engine.close()

    asyncio.run(run())


def test_vectors_of_another_model_are_never_compared(engine_config: configuration.Config) -> None:
    async def run() -> None:
        engine = Engine.from_config(engine_config)
        try:
            vector = (await engine.embedder.embed("How do I reset my password?")).vector
            # An entry whose vector came from another model: exact tier only, never semantic.
            engine.store.insert("ns", "How do I reset my password?", "old", vector.tobytes(), "other-model@1")
            assert (await engine.lookup("ns", "what's the way to reset my password")).kind == "miss"
            assert (await engine.lookup("ns", "how do i reset my password?")).kind == "exact"
        finally:
            await engine.close()

    asyncio.run(run())
