"""The native store through its Python binding: semantics and thread safety."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from semcached import _core


def vec(*xs: float) -> bytes:
    return np.array(xs, dtype="<f4").tobytes()


def test_exact_tier_matches_the_normal_form() -> None:
    store = _core.Store(100)
    entry_id = store.insert("ns", "How do I reset my PASSWORD?", "Settings.", vec(0.1, 0.2), "m",
                            {"source": "docs"}, None)
    hit = store.get_exact("ns", "  how do i reset   my password? ")
    assert hit is not None and hit.id == entry_id
    assert (hit.response, hit.metadata, hit.hits, hit.expires_ms) == ("Settings.", {"source": "docs"}, 1, None)
    assert store.get_exact("other", "how do i reset my password?") is None
    assert store.get_exact("ns", "how do i reset my password") is None  # punctuation counts
    assert _core.normalize("Ｃａｆé\u00a0 Menu") == "café menu"


def test_ttl_is_enforced_on_read() -> None:
    store = _core.Store(100)
    entry_id = store.insert("ns", "q", "a", vec(0.0), "m", None, 0)
    assert store.get(entry_id) is None  # a zero TTL expires at once
    assert store.counters()["expirations"] == 1
    assert store.take_removed() == [("ns", entry_id, "m", "expired")]


def test_lru_cap_and_removal_log() -> None:
    store = _core.Store(2)
    a = store.insert("ns", "a", "A", vec(1.0), "m")
    b = store.insert("ns", "b", "B", vec(1.0), "m")
    assert store.get(a, count_hit=True) is not None
    store.insert("ns", "c", "C", vec(1.0), "m")
    assert store.get(b) is None and store.get(a) is not None
    assert store.take_removed() == [("ns", b, "m", "evicted")]
    assert len(store) == 2 and store.max_entries == 2
    assert store.vector(a) == [1.0]
    with pytest.raises(ValueError, match="float32 bytes"):
        store.insert("ns", "d", "D", b"abc", "m")
    with pytest.raises(ValueError, match="vector has 2 dimensions"):
        store.insert("ns", "d", "D", vec(1.0, 2.0), "m")


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        _core.Store(0)
    with pytest.raises(ValueError, match="empty"):
        _core.Store().insert("ns", " \t", "a", b"", "m")
    with pytest.raises(OverflowError):
        _core.Store().insert("ns", "q", "a", b"", "m", None, -1)


def test_threads_hammering_the_store_keep_it_consistent() -> None:
    store = _core.Store(300)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(3000):
                prompt = f"question {(i * 13 + t) % 500}"
                op = i % 6
                if op < 2:
                    store.insert(f"ns{t % 3}", prompt, "answer", vec(*[float(i)] * 8), "m",
                                 {"t": str(t)}, 5 if i % 4 == 0 else None)
                elif op == 2:
                    store.get_exact(f"ns{t % 3}", prompt)
                elif op == 3:
                    store.expire()
                elif op == 4:
                    store.remove_prompt("ns1", prompt)
                else:
                    store.take_removed()
        except BaseException as e:  # surfaced below: an "already borrowed" would land here
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    store.check_invariants()
    counters = store.counters()
    assert counters["inserts"] == 8 * 1000
    assert len(store) <= 300
    assert sum(store.namespace_sizes().values()) == len(store)


def test_a_byte_bound_holds_under_a_long_mixed_load() -> None:
    import random

    bound = 2 * 1024 * 1024
    store = _core.Store(1_000_000, max_bytes=bound, namespace_max_bytes=bound // 2)
    rng = random.Random(7)
    vector = np.ones(384, dtype="<f4").tobytes()
    for i in range(30_000):
        op = rng.random()
        namespace = f"ns{rng.randrange(4)}#p{rng.randrange(3)}"
        prompt = f"question {rng.randrange(5_000)}"
        if op < 0.6:
            store.insert(namespace, prompt, "x" * rng.randrange(1, 4096), vector, "m",
                         None, rng.choice([None, 1, 60_000]))
        elif op < 0.85:
            store.get_exact(namespace, prompt)
        elif op < 0.95:
            store.remove_prompt(namespace, prompt)
        else:
            store.expire()
        if i % 500 == 0:
            assert store.bytes <= bound
            assert all(size <= bound // 2 for _, _, size in store.group_usage())
    store.check_invariants()
    assert store.bytes > bound // 2  # the load did fill it
    assert sorted(name for name, _, _ in store.group_usage()) == ["ns0", "ns1", "ns2", "ns3"]
    with pytest.raises(ValueError, match="more than the"):
        store.insert("ns0", "huge", "x" * bound, vector, "m")
    with pytest.raises(ValueError, match="policy must be"):
        _core.Store(policy="random")
