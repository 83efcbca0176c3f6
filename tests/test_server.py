"""End to end over a real port: the cache tiers, TTL, invalidation, isolation, stats."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from conftest import ServerProcess
from semcached import AsyncClient, Client, InvalidArgument, NotFound

PASSWORD_Q = "How do I reset my password?"
PASSWORD_A = "Settings → Security → Reset."
# Tests of the semantic tier's plumbing ask at target_precision 0 (serve the nearest
# candidate whatever the verifier says); test_verifier.py tests the decision itself.
PARAPHRASE = "what's the way to reset my password"


def test_exact_hit_skips_the_embedding_and_ignores_case_and_spacing(client: Client) -> None:
    stored = client.store(PASSWORD_Q, PASSWORD_A, ttl_seconds=3600, metadata={"source": "faq"})
    r = client.lookup("  how do I reset   my PASSWORD? ")
    assert (r.hit, r.kind, r.response, r.similarity) == (True, "exact", PASSWORD_A, 1.0)
    assert (r.entry_id, r.matched_prompt, r.metadata) == (stored.entry_id, PASSWORD_Q, {"source": "faq"})
    assert stored.embedding_model.startswith("all-MiniLM-L6-v2-int8@")
    assert r.expires_unix_ms == pytest.approx(time.time() * 1000 + 3_600_000, abs=60_000)


def test_paraphrase_is_a_semantic_hit(client: Client) -> None:
    client.store(PASSWORD_Q, PASSWORD_A, ttl_seconds=3600)
    r = client.lookup(PARAPHRASE, target_precision=0.0)
    assert (r.hit, r.kind, r.response, r.matched_prompt) == (True, "semantic", PASSWORD_A, PASSWORD_Q)
    assert 0.9 <= r.similarity < 1.0


def test_unrelated_question_misses(client: Client) -> None:
    client.store(PASSWORD_Q, PASSWORD_A)
    r = client.lookup("What is the boiling point of water at sea level?")
    assert (r.hit, r.kind, r.response, r.entry_id) == (False, "miss", "", 0)


def test_prompts_longer_than_the_embedding_window_are_exact_only(client: Client) -> None:
    preamble = " ".join(f"Clause {i} of the contract says the supplier shall deliver on time." for i in range(60))
    client.store(preamble + " Question: summarize the contract.", "A summary.")
    r = client.lookup(preamble + " Question: translate the contract into French.")
    assert r.kind == "miss"  # same first 256 tokens, different question: never a semantic hit
    assert client.lookup(preamble + " Question: summarize the contract.").kind == "exact"


def test_min_similarity_is_honoured(client: Client) -> None:
    client.store(PASSWORD_Q, PASSWORD_A)
    assert not client.lookup(PARAPHRASE, target_precision=0.0, min_similarity=0.99).hit
    assert client.lookup(PARAPHRASE, target_precision=0.0, min_similarity=0.5).hit


def test_ttl_expiry_removes_the_entry_from_both_tiers(client: Client, namespace: str) -> None:
    client.store(PASSWORD_Q, PASSWORD_A, ttl_seconds=1)
    assert client.lookup(PASSWORD_Q).kind == "exact"
    time.sleep(1.3)
    assert client.lookup(PASSWORD_Q).kind == "miss"
    assert client.lookup(PARAPHRASE, target_precision=0.0).kind == "miss"
    assert namespace not in client.stats().namespaces  # reclaimed by the sweep


def test_restoring_a_prompt_replaces_its_answer(client: Client) -> None:
    first = client.store(PASSWORD_Q, "old answer")
    second = client.store(PASSWORD_Q.upper(), "new answer")
    assert second.entry_id != first.entry_id
    assert client.lookup(PASSWORD_Q).response == "new answer"
    assert client.lookup(PARAPHRASE, target_precision=0.0).response == "new answer"


def test_invalidate_by_id_prompt_and_all(client: Client) -> None:
    a = client.store(PASSWORD_Q, PASSWORD_A)
    client.store("How do I delete my account?", "Settings → Account → Delete.")
    client.store("How do I change my email address?", "Settings → Profile → Email.")
    assert client.invalidate(entry_id=a.entry_id) == 1
    assert client.invalidate(entry_id=a.entry_id) == 0
    assert not client.lookup(PARAPHRASE, target_precision=0.0).hit
    assert client.invalidate(prompt="how do I delete my account?") == 1
    assert not client.lookup("How do I delete my account?").hit
    assert client.invalidate(all=True) == 1
    assert not client.lookup("How do I change my email address?").hit


def test_namespaces_are_isolated(server: ServerProcess, client: Client, namespace: str) -> None:
    stored = client.store(PASSWORD_Q, PASSWORD_A)
    other = f"{namespace}-other"
    assert not client.lookup(PASSWORD_Q, namespace=other).hit
    assert not client.lookup(PARAPHRASE, target_precision=0.0, namespace=other).hit
    # An id from another namespace cannot be invalidated through this one.
    assert client.invalidate(entry_id=stored.entry_id, namespace=other) == 0
    assert client.invalidate(all=True, namespace=other) == 0
    assert client.lookup(PASSWORD_Q).hit


def test_stats_count_hits_misses_and_entries(client: Client, namespace: str) -> None:
    before = client.stats()
    client.store(PASSWORD_Q, PASSWORD_A)
    client.lookup(PASSWORD_Q)
    client.lookup(PARAPHRASE, target_precision=0.0)
    client.lookup("Which planet is the largest?")
    after = client.stats()
    assert after.exact_hits - before.exact_hits == 1
    assert after.semantic_hits - before.semantic_hits == 1
    assert after.misses - before.misses == 1
    assert after.stores - before.stores == 1
    assert after.namespaces[namespace].entries == 1
    assert 384 * 4 < after.namespaces[namespace].bytes < 4096
    assert after.bytes >= after.namespaces[namespace].bytes and after.max_bytes == 2 * 1024**3
    assert after.embedding_model == client.store("q2", "a2").embedding_model
    assert after.embedding_cache_misses > before.embedding_cache_misses
    again = client.stats()
    client.lookup(PARAPHRASE, target_precision=0.0)  # its embedding is remembered
    last = client.stats()
    assert (last.embedding_cache_hits - again.embedding_cache_hits,
            last.embedding_cache_misses - again.embedding_cache_misses) == (1, 0)


def test_feedback_over_the_wire(client: Client, namespace: str) -> None:
    stored = client.store("How do I convert Celsius to Fahrenheit?", "F = C × 9/5 + 32")
    asked = "How do I convert Fahrenheit to Celsius?"
    forced = client.lookup(asked, target_precision=0.0)
    assert forced.entry_id == stored.entry_id and 0 <= forced.verifier_score < 1
    result = client.feedback(stored.entry_id, correct=False, prompt=asked)
    assert (result.right, result.wrong, result.removed) == (0, 1, False)
    assert result.target_precision == pytest.approx(0.95)
    assert client.lookup(asked, target_precision=0.0).kind == "miss"
    stats = client.stats()
    assert stats.namespaces[namespace].feedback_wrong == 1 and stats.feedback_wrong >= 1
    assert stats.verifier.startswith("verifier-minilm-l6-qqp@")
    assert stats.namespaces[namespace].target_precision == pytest.approx(0.95)
    with pytest.raises(NotFound, match="no entry"):
        client.feedback(stored.entry_id + 10_000, correct=True)
    with pytest.raises(InvalidArgument, match="needs the prompt"):
        client.feedback(stored.entry_id, correct=False)


def test_async_client(server: ServerProcess, namespace: str) -> None:
    async def run() -> None:
        async with AsyncClient(server.target, namespace=namespace) as c:
            await c.store(PASSWORD_Q, PASSWORD_A)
            hits = await asyncio.gather(*(c.lookup(PARAPHRASE, target_precision=0.0) for _ in range(8)))
            assert all(h.kind == "semantic" for h in hits)
            assert (await c.lookup(PASSWORD_Q)).kind == "exact"
            assert await c.invalidate(all=True) == 1
            assert (await c.stats()).entries >= 0

    asyncio.run(run())


def test_health_and_reflection(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "semcached.v1.SemanticCache"):
            status = health.Check(health_pb2.HealthCheckRequest(service=service)).status
            assert status == health_pb2.HealthCheckResponse.SERVING
        services = ProtoReflectionDescriptorDatabase(channel).get_services()
        assert {"semcached.v1.SemanticCache", "grpc.health.v1.Health"} <= set(services)
