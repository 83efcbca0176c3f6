"""Complete: a miss reaches the fake provider once, hits never do; errors are mapped and
never cached; the cache key covers the model and the conversation before the question."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from conftest import ServerProcess
from fake_openai import FakeOpenAI
from semcached import AsyncClient, Client, SemcachedError


def ask(question: str, system: str | None = None) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": "user", "content": question}]


def test_miss_calls_the_provider_once_then_serves_from_cache(
        client: Client, fake_openai: FakeOpenAI, namespace: str) -> None:
    q = f"What is the capital of France? ({namespace})"
    first = client.complete(ask(q), model="gpt-4o-mini")
    assert (first.kind, first.model, first.finish_reason) == ("miss", "gpt-4o-mini", "stop")
    assert first.text == f"answer to: {q}"
    assert first.usage.prompt_tokens > 0 and first.usage.total_tokens == (
        first.usage.prompt_tokens + first.usage.completion_tokens)
    again = client.complete(ask(q), model="gpt-4o-mini")
    assert (again.kind, again.text, again.model, again.usage.total_tokens) == ("exact", first.text, "gpt-4o-mini", 0)
    paraphrase = client.complete(ask(f"what's the capital of France? ({namespace})"), model="gpt-4o-mini")
    assert (paraphrase.kind, paraphrase.text) == ("semantic", first.text)
    assert fake_openai.calls[q] == 1
    # Lookup sees the same entries only through Complete's own partition, not the bare namespace.
    assert not client.lookup(q).hit


def test_each_distinct_question_reaches_the_provider_exactly_once(
        client: Client, fake_openai: FakeOpenAI, namespace: str) -> None:
    questions = [f"{topic} ({namespace})?" for topic in
                 ("How tall is Mount Everest", "Who wrote Hamlet", "What is photosynthesis")]
    before = fake_openai.total_calls()
    for _ in range(3):
        for q in questions:
            client.complete(ask(q), model="gpt-4o-mini")
    assert fake_openai.total_calls() - before == 3
    assert all(fake_openai.calls[q] == 1 for q in questions)


@pytest.mark.parametrize("change", ["system", "model", "earlier turn", "namespace"])
def test_what_changes_the_answer_changes_the_key(
        client: Client, fake_openai: FakeOpenAI, namespace: str, change: str) -> None:
    q = f"Summarize our refund policy ({namespace})"
    client.complete(ask(q, system="You are terse."), model="gpt-4o-mini")
    if change == "system":
        r = client.complete(ask(q, system="You are a pirate."), model="gpt-4o-mini")
    elif change == "model":
        r = client.complete(ask(q, system="You are terse."), model="gpt-4o")
    elif change == "earlier turn":
        history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
        r = client.complete([{"role": "system", "content": "You are terse."}, *history,
                             {"role": "user", "content": q}], model="gpt-4o-mini")
    else:
        r = client.complete(ask(q, system="You are terse."), model="gpt-4o-mini",
                            namespace=f"{namespace}-b")
    assert r.kind == "miss"
    assert fake_openai.calls[q] == 2


def test_concurrent_identical_misses_share_one_upstream_call(
        server: ServerProcess, fake_openai: FakeOpenAI, namespace: str) -> None:
    q = f"Explain the CAP theorem [slow=0.5] ({namespace})"

    async def run() -> list[str]:
        async with AsyncClient(server.target, namespace=namespace) as c:
            results = await asyncio.gather(*(c.complete(ask(q), model="m") for _ in range(20)))
            return [r.text for r in results]

    texts = asyncio.run(run())
    assert len(set(texts)) == 1 and len(texts) == 20
    assert fake_openai.calls[q] == 1


@pytest.mark.parametrize("status,code", [
    (500, grpc.StatusCode.UNAVAILABLE),
    (503, grpc.StatusCode.UNAVAILABLE),
    (429, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (400, grpc.StatusCode.INVALID_ARGUMENT),
    (404, grpc.StatusCode.NOT_FOUND),
    (403, grpc.StatusCode.PERMISSION_DENIED),
])
def test_provider_errors_are_mapped_and_never_cached(
        client: Client, fake_openai: FakeOpenAI, namespace: str, status: int,
        code: grpc.StatusCode) -> None:
    q = f"Fail please [status={status}] ({namespace})"
    for attempt in (1, 2):
        with pytest.raises(SemcachedError) as e:
            client.complete(ask(q), model="gpt-4o-mini")
        assert e.value.code == code
        assert f"HTTP {status}" in e.value.message and "gpt-4o-mini" in e.value.message
        assert fake_openai.calls[q] == attempt  # the error was not cached
    assert not client.lookup(q).hit


def test_provider_timeout_is_deadline_exceeded(client: Client, fake_openai: FakeOpenAI, namespace: str) -> None:
    q = f"Take your time [slow=4] ({namespace})"  # the server's provider timeout is 3 s
    with pytest.raises(SemcachedError) as e:
        client.complete(ask(q))
    assert e.value.code == grpc.StatusCode.DEADLINE_EXCEEDED


def test_a_caller_giving_up_fails_no_one_else_and_the_answer_is_still_cached(
        server: ServerProcess, fake_openai: FakeOpenAI, namespace: str) -> None:
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
    assert text == f"answer to: {q}"
    assert fake_openai.calls[q] == 1
    with Client(server.target, namespace=namespace) as c:
        assert c.complete(ask(q)).kind == "exact"


def test_invalidate_during_an_upstream_call_is_not_undone(
        server: ServerProcess, fake_openai: FakeOpenAI, namespace: str) -> None:
    q = f"Slow fill [slow=0.8] ({namespace})"

    async def run() -> None:
        async with AsyncClient(server.target, namespace=namespace) as c:
            pending = asyncio.ensure_future(c.complete(ask(q)))
            await asyncio.sleep(0.3)
            await c.invalidate(all=True)
            assert (await pending).kind == "miss"
            assert (await c.complete(ask(q))).kind == "miss"  # the stale fill was not cached

    asyncio.run(run())
    assert fake_openai.calls[q] == 2


def test_truncated_answers_are_not_cached(client: Client, fake_openai: FakeOpenAI, namespace: str) -> None:
    q = f"Write a long essay [truncate] ({namespace})"
    assert client.complete(ask(q)).finish_reason == "length"
    assert client.complete(ask(q)).kind == "miss"
    assert fake_openai.calls[q] == 2


def test_provider_connection_failure_is_unavailable(tmp_path, namespace: str) -> None:  # type: ignore[no-untyped-def]
    from conftest import free_port
    dead = f"http://127.0.0.1:{free_port()}/v1"
    proc = ServerProcess(tmp_path, dead)
    try:
        with Client(proc.target, namespace=namespace) as c, pytest.raises(SemcachedError) as e:
            c.complete(ask("Anyone there?"))
        assert e.value.code == grpc.StatusCode.UNAVAILABLE
        assert "could not reach the provider" in e.value.message
        assert "sk-test" not in e.value.message
    finally:
        proc.stop()


def test_without_a_key_complete_is_failed_precondition_but_hits_still_work(
        tmp_path, fake_openai: FakeOpenAI, namespace: str) -> None:  # type: ignore[no-untyped-def]
    proc = ServerProcess(tmp_path, fake_openai.base_url, env={"OPENAI_API_KEY": ""})
    try:
        with Client(proc.target, namespace=namespace) as c:
            with pytest.raises(SemcachedError) as e:
                c.complete(ask("Hello?"))
            assert e.value.code == grpc.StatusCode.FAILED_PRECONDITION
            assert "OPENAI_API_KEY" in e.value.message
    finally:
        proc.stop()
    assert "no LLM provider key" in proc.log.read_text()
