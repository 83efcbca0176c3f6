"""Complete: a miss reaches the fake provider once, hits never do; errors are mapped and
never cached; the cache key covers everything besides the question that changes the answer."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from conftest import ServerProcess
from semcached.fake_llm import FakeLLM
from semcached import AsyncClient, Client, SemcachedError


def ask(question: str, system: str | None = None) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": "user", "content": question}]


def test_miss_calls_the_provider_once_then_serves_from_cache(
        client: Client, fake_llm: FakeLLM, namespace: str) -> None:
    q = f"What is the capital of France? ({namespace})"
    first = client.complete(ask(q), model="gpt-4o-mini")  # a model of a tier: its provider is known
    assert (first.kind, first.model, first.finish_reason) == ("miss", "fake/gpt-4o-mini", "stop")
    assert (first.attempts, first.route_reason) == (1, "model named by the request")
    assert first.text == f"answer to: {q} [gpt-4o-mini]"
    assert first.usage.prompt_tokens > 0 and first.usage.total_tokens == (
        first.usage.prompt_tokens + first.usage.completion_tokens)
    again = client.complete(ask(q), model="gpt-4o-mini")
    assert (again.kind, again.text, again.model, again.usage.total_tokens) == ("exact", first.text, "fake/gpt-4o-mini", 0)
    assert again.attempts == 0
    assert again.metadata["model"] == "fake/gpt-4o-mini" and again.created_unix_ms > 0
    paraphrase = client.complete(ask(f"what's the capital of France? ({namespace})"), model="gpt-4o-mini",
                                 target_precision=0.0)  # the nearest candidate: plumbing, not the verifier
    assert (paraphrase.kind, paraphrase.text) == ("semantic", first.text)
    assert fake_llm.calls[q] == 1
    # Lookup sees the same entries only through Complete's own partition, not the bare namespace.
    assert not client.lookup(q).hit


def test_each_distinct_question_reaches_the_provider_exactly_once(
        client: Client, fake_llm: FakeLLM, namespace: str) -> None:
    questions = [f"{topic} ({namespace})?" for topic in
                 ("How tall is Mount Everest", "Who wrote Hamlet", "What is photosynthesis")]
    before = fake_llm.total_calls()
    for _ in range(3):
        for q in questions:
            client.complete(ask(q), model="gpt-4o-mini")
    assert fake_llm.total_calls() - before == 3
    assert all(fake_llm.calls[q] == 1 for q in questions)


CHANGES: dict[str, dict[str, object]] = {
    "model": {"model": "fake/gpt-4o"},
    "tier": {"model": "", "tier": "standard"},
    "temperature": {"temperature": 0.2},
    "top_p": {"top_p": 0.5},
    "max_tokens": {"max_tokens": 50},
    "tools": {"tools": [{"type": "function", "function": {"name": "lookup_order", "parameters": {}}}]},
    "response_format": {"response_format": {"type": "json_object"}},
}


@pytest.mark.parametrize("change", ["system", "earlier turn", "namespace", *CHANGES])
def test_what_changes_the_answer_changes_the_key(
        client: Client, fake_llm: FakeLLM, namespace: str, change: str) -> None:
    q = f"Summarize our refund policy ({namespace})"
    base: dict[str, object] = {"model": "fake/gpt-4o-mini"}
    client.complete(ask(q, system="You are terse."), **base)  # type: ignore[arg-type]
    assert client.complete(ask(q, system="You are terse."), **base).kind == "exact"  # type: ignore[arg-type]
    if change == "system":
        r = client.complete(ask(q, system="You are a pirate."), **base)  # type: ignore[arg-type]
    elif change == "earlier turn":
        history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
        r = client.complete([{"role": "system", "content": "You are terse."}, *history,
                             {"role": "user", "content": q}], **base)  # type: ignore[arg-type]
    elif change == "namespace":
        r = client.complete(ask(q, system="You are terse."), namespace=f"{namespace}-b", **base)  # type: ignore[arg-type]
    else:
        r = client.complete(ask(q, system="You are terse."), **{**base, **CHANGES[change]})  # type: ignore[arg-type]
    assert r.kind == "miss"
    assert fake_llm.calls[q] == 2


def test_concurrent_identical_misses_share_one_upstream_call(
        server: ServerProcess, fake_llm: FakeLLM, namespace: str) -> None:
    q = f"Explain the CAP theorem [slow=0.5] ({namespace})"

    async def run() -> list[str]:
        async with AsyncClient(server.target, namespace=namespace) as c:
            results = await asyncio.gather(*(c.complete(ask(q), model="fake/m") for _ in range(50)))
            return [r.text for r in results]

    texts = asyncio.run(run())
    assert len(set(texts)) == 1 and len(texts) == 50
    assert fake_llm.calls[q] == 1


@pytest.mark.parametrize("status,code,attempts", [
    (500, grpc.StatusCode.UNAVAILABLE, 3),  # retried (routing.max_attempts), then failed
    (503, grpc.StatusCode.UNAVAILABLE, 3),
    (429, grpc.StatusCode.RESOURCE_EXHAUSTED, 3),
    (400, grpc.StatusCode.INVALID_ARGUMENT, 1),  # the request is bad: never retried
    (404, grpc.StatusCode.NOT_FOUND, 1),
    (403, grpc.StatusCode.PERMISSION_DENIED, 1),
])
def test_provider_errors_are_mapped_and_never_cached(
        client: Client, fake_llm: FakeLLM, namespace: str, status: int,
        code: grpc.StatusCode, attempts: int) -> None:
    q = f"Fail please [status={status}] ({namespace})"
    for request in (1, 2):
        with pytest.raises(SemcachedError) as e:
            # A model of its own per request: three failures open a model's circuit.
            client.complete(ask(q), model=f"fake/{namespace}-{request}")
        assert e.value.code == code
        assert f"HTTP {status}" in e.value.message and f"fake/{namespace}-{request}" in e.value.message
        assert fake_llm.calls[q] == attempts * request  # the error was not cached
    assert not client.lookup(q).hit


def test_a_failed_call_fails_every_waiter(server: ServerProcess, fake_llm: FakeLLM, namespace: str) -> None:
    q = f"Shared failure [slow=0.3] [status=400] ({namespace})"

    async def run() -> list[object]:
        async with AsyncClient(server.target, namespace=namespace) as c:
            return await asyncio.gather(*(c.complete(ask(q), model="fake/m") for _ in range(10)),
                                        return_exceptions=True)

    errors = asyncio.run(run())
    assert all(isinstance(e, SemcachedError) and e.code == grpc.StatusCode.INVALID_ARGUMENT for e in errors)
    assert fake_llm.calls[q] == 1


def test_the_deadline_bounds_retries_and_a_hanging_provider(server: ServerProcess, namespace: str) -> None:
    with Client(server.target, namespace=namespace, timeout=1.0) as c:
        started = time.monotonic()
        with pytest.raises(SemcachedError) as e:
            c.complete(ask(f"Anyone? ({namespace})"), model="fake/hang-model")
        assert e.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 2.5


def test_a_caller_giving_up_fails_no_one_else_and_the_answer_is_still_cached(
        server: ServerProcess, fake_llm: FakeLLM, namespace: str) -> None:
    q = f"Slow one [slow=1] ({namespace})"

    async def run() -> tuple[BaseException | None, str]:
        async with AsyncClient(server.target, namespace=namespace) as patient:
            impatient = AsyncClient(server.target, namespace=namespace, timeout=0.3)
            first = asyncio.ensure_future(impatient.complete(ask(q)))
            await asyncio.sleep(0.1)  # the impatient caller leads the upstream call
            second = await patient.complete(ask(q))
            error = (await asyncio.gather(first, return_exceptions=True))[0]
            await impatient.close()
            return (error if isinstance(error, BaseException) else None), second.text

    error, text = asyncio.run(run())
    assert isinstance(error, SemcachedError) and error.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert text.startswith(f"answer to: {q}")
    assert fake_llm.calls[q] == 1
    with Client(server.target, namespace=namespace) as c:
        assert c.complete(ask(q)).kind == "exact"


def test_invalidate_during_an_upstream_call_is_not_undone(
        server: ServerProcess, fake_llm: FakeLLM, namespace: str) -> None:
    q = f"Slow fill [slow=0.8] ({namespace})"

    async def run() -> None:
        async with AsyncClient(server.target, namespace=namespace) as c:
            pending = asyncio.ensure_future(c.complete(ask(q)))
            await asyncio.sleep(0.3)
            await c.invalidate(all=True)
            assert (await pending).kind == "miss"
            assert (await c.complete(ask(q))).kind == "miss"  # the stale fill was not cached

    asyncio.run(run())
    assert fake_llm.calls[q] == 2


def test_truncated_answers_are_not_cached(client: Client, fake_llm: FakeLLM, namespace: str) -> None:
    q = f"Write a long essay [truncate] ({namespace})"
    assert client.complete(ask(q)).finish_reason == "length"
    assert client.complete(ask(q)).kind == "miss"
    assert fake_llm.calls[q] == 2


def test_provider_connection_failure_is_unavailable(tmp_path, namespace: str) -> None:  # type: ignore[no-untyped-def]
    from semcached.local_server import free_port
    dead = f"http://127.0.0.1:{free_port()}/v1"
    proc = ServerProcess(tmp_path, dead)
    try:
        with Client(proc.target, namespace=namespace) as c, pytest.raises(SemcachedError) as e:
            c.complete(ask("Anyone there?"), model="fake/gpt-4o-mini")
        assert e.value.code == grpc.StatusCode.UNAVAILABLE
        assert "could not get an answer from fake/gpt-4o-mini" in e.value.message
        assert "after 3 attempts" in e.value.message
        assert "sk-test" not in e.value.message
    finally:
        proc.stop()


def test_without_keys_the_defaults_start_and_complete_names_the_variable(
        tmp_path, namespace: str) -> None:  # type: ignore[no-untyped-def]
    empty = {"OPENAI_API_KEY": "", "GROQ_API_KEY": "", "ANTHROPIC_API_KEY": ""}
    proc = ServerProcess(tmp_path, None, env=empty)
    try:
        with Client(proc.target, namespace=namespace) as c:
            with pytest.raises(SemcachedError) as e:
                c.complete(ask("Hello?"), tier="hard")
            assert e.value.code == grpc.StatusCode.FAILED_PRECONDITION
            assert "OPENAI_API_KEY" in e.value.message and "ANTHROPIC_API_KEY" in e.value.message
            c.store("Hello?", "cached")
            assert c.lookup("Hello?").kind == "exact"  # the cache works without any provider
    finally:
        proc.stop()
    assert "no LLM provider has a key" in proc.log.read_text()
