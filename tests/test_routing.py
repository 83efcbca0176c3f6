"""Routing over the fake providers: retries, Retry-After, fallbacks, the circuit breaker,
Anthropic, the classifier, cache controls, streaming, and routing config refused at start."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from conftest import ServerProcess, routing_config
from semcached.fake_llm import FakeLLM
from semcached import AsyncClient, Client, CompletionResult, SemcachedError
from semcached.classify import Classifier
from semcached.routing import Breaker


# Tests that make a model fail name a model of their own: the server is shared, and
# failures open that model's circuit for everyone.


def ask(question: str, system: str | None = None) -> list[dict[str, str]]:
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]


def test_retries_with_backoff_then_answers(client: Client, fake_llm: FakeLLM, namespace: str) -> None:
    q = f"Flaky [fail-first=2] ({namespace})"
    r = client.complete(ask(q), model="fake/gpt-4o-mini")
    assert (r.kind, r.attempts, r.model) == ("miss", 3, "fake/gpt-4o-mini")
    assert fake_llm.calls[q] == 3


def test_retry_after_is_honoured(client: Client, namespace: str) -> None:
    started = time.monotonic()  # backoff alone would pause 10-20 ms here
    r = client.complete(ask(f"Busy [fail-first=1] [retry-after=0.15] ({namespace})"), model="fake/gpt-4o-mini")
    assert r.attempts == 2 and time.monotonic() - started >= 0.15


def test_fallback_then_breaker_then_recovery(client: Client, fake_llm: FakeLLM, namespace: str) -> None:
    first = client.complete(ask(f"Q1 ({namespace})"), tier="flaky")
    # The primary failed its 3 attempts (503), the fallback (Anthropic) answered.
    assert (first.model, first.attempts, first.tier) == ("fake-claude/claude-haiku", 4, "flaky")
    assert first.route_reason == "tier named by the request"
    down_calls = fake_llm.model_calls["down-model"]
    second = client.complete(ask(f"Q2 ({namespace})"), tier="flaky")
    # Three consecutive failures opened the primary's circuit: it is skipped.
    assert (second.model, second.attempts) == ("fake-claude/claude-haiku", 1)
    assert fake_llm.model_calls["down-model"] == down_calls
    time.sleep(2.1)  # the cooldown: one trial call goes to the primary again
    client.complete(ask(f"Q3 ({namespace})"), tier="flaky")
    assert fake_llm.model_calls["down-model"] == down_calls + 1


def test_a_retry_after_longer_than_backoff_max_moves_to_the_fallback(client: Client, namespace: str) -> None:
    started = time.monotonic()  # the primary answers 429 with Retry-After: 30
    r = client.complete(ask(f"Limited ({namespace})"), tier="limited")
    assert (r.model, r.attempts) == ("fake-claude/claude-haiku", 2)
    assert time.monotonic() - started < 5


def test_anthropic_messages_api(client: Client, fake_llm: FakeLLM, namespace: str) -> None:
    q = f"Explain tides ({namespace})"
    r = client.complete(ask(q, system="You are terse."), model="fake-claude/claude-sonnet", max_tokens=200)
    assert r.text == f"answer to: {q} (as You are terse.) [claude-sonnet]"
    assert (r.model, r.finish_reason) == ("fake-claude/claude-sonnet", "stop")
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
    assert fake_llm.last_body["max_tokens"] == 200 and fake_llm.last_body["system"] == "You are terse."


def test_malformed_provider_answers_are_unavailable(client: Client, namespace: str) -> None:
    with pytest.raises(SemcachedError) as e:
        client.complete(ask(f"Garbage [malformed] ({namespace})"), model=f"fake/{namespace}")
    assert e.value.code == grpc.StatusCode.UNAVAILABLE


def test_the_classifier_routes_and_says_why(client: Client, namespace: str) -> None:
    code = client.complete(ask(f"Write a Python function that parses ISO dates ({namespace})"))
    assert (code.tier, code.route_reason) == ("code", "rule: a programming task")
    assert code.model == "fake-claude/claude-sonnet"
    hard = client.complete(ask(f"Compare Raft and Paxos for a metadata store ({namespace})"))
    assert hard.tier == "hard" and hard.route_reason.startswith("rule:")
    cheap = client.complete(ask(f"What's the capital of Peru? ({namespace})"))
    assert cheap.tier == "cheap" and cheap.route_reason.startswith("nearest exemplars: cheap")
    # Routed answers are cached under "auto": asking again is a hit, with its tier.
    again = client.complete(ask(f"What's the capital of Peru? ({namespace})"))
    assert (again.kind, again.tier, again.attempts) == ("exact", "cheap", 0)


def test_classifier_rules_and_exemplars_without_a_server() -> None:
    classifier = Classifier(["cheap", "standard", "hard", "code"], "standard", [], None)
    assert classifier.classify("Traceback (most recent call last):\n  File x", None).tier == "code"
    assert classifier.classify("Think step by step: is 91 prime?", None).tier == "hard"
    assert classifier.classify("x " * 1000, None).tier == "hard"
    assert classifier.classify("hello there", None) .reason == "no rule matched: the default tier"
    only_two = Classifier(["cheap", "standard"], "standard", [], None)  # rules for absent tiers are off
    assert only_two.classify("Write a Python script", None).tier == "standard"


def test_cache_controls(client: Client, fake_llm: FakeLLM, namespace: str) -> None:
    q = f"Controls ({namespace})"
    m = "fake/gpt-4o-mini"
    assert client.complete(ask(q), model=m, no_store=True).kind == "miss"
    assert client.complete(ask(q), model=m).kind == "miss"  # nothing was stored
    assert client.complete(ask(q), model=m).kind == "exact"
    assert client.complete(ask(q), model=m, no_cache=True).kind == "miss"  # looked past the cache
    assert fake_llm.calls[q] == 3
    time.sleep(1.1)
    assert client.complete(ask(q), model=m, max_age_seconds=1).kind == "miss"  # too old
    assert client.complete(ask(q), model=m, max_age_seconds=60).kind == "exact"  # the fresh one


def test_hot_sampling_bypasses_the_cache_unless_asked(client: Client, fake_llm: FakeLLM, namespace: str) -> None:
    q = f"Write a surprising poem ({namespace})"
    m = "fake/gpt-4o-mini"
    for _ in range(2):
        assert client.complete(ask(q), model=m, temperature=1.5).kind == "miss"
    client.complete(ask(q), model=m, temperature=1.5, cache_high_temperature=True)
    assert client.complete(ask(q), model=m, temperature=1.5, cache_high_temperature=True).kind == "exact"
    assert fake_llm.calls[q] == 3


def collect(pieces: list[str | CompletionResult]) -> tuple[str, CompletionResult]:
    *text, done = pieces
    assert isinstance(done, CompletionResult) and all(isinstance(t, str) for t in text)
    return "".join(str(t) for t in text), done


@pytest.mark.parametrize("model", ["fake/gpt-4o-mini", "fake-claude/claude-haiku"])
def test_streaming_miss_then_replayed_hit(client: Client, fake_llm: FakeLLM, namespace: str, model: str) -> None:
    q = f"Stream me a sentence about the sea ({namespace})"
    pieces = list(client.complete_stream(ask(q), model=model))
    text, done = collect(pieces)
    assert len(pieces) > 3 and text == done.text == f"answer to: {q} [{model.split('/')[1]}]"
    assert (done.kind, done.model, done.finish_reason) == ("miss", model, "stop")
    assert done.usage.completion_tokens > 0
    text2, hit = collect(list(client.complete_stream(ask(q), model=model)))
    assert (hit.kind, text2) == ("exact", text)
    assert fake_llm.calls[q] == 1


def test_truncated_streams_are_not_stored(client: Client, fake_llm: FakeLLM, namespace: str) -> None:
    q = f"Long stream [truncate] ({namespace})"
    for _ in range(2):
        _, done = collect(list(client.complete_stream(ask(q), model="fake/gpt-4o-mini")))
        assert (done.kind, done.finish_reason) == ("miss", "length")
    assert fake_llm.calls[q] == 2


def test_cancelling_a_stream_cancels_upstream_and_stores_nothing(
        server: ServerProcess, fake_llm: FakeLLM, namespace: str) -> None:
    q = f"Drip slowly please, word by word by word by word [drip=0.2] ({namespace})"
    user = f"leaver-{namespace}"

    async def run() -> None:
        async with AsyncClient(server.target, namespace=namespace) as c:
            stream = c.complete_stream(ask(q), model="fake/gpt-4o-mini", user=user)
            first = await stream.__anext__()
            assert isinstance(first, str)
            await stream.aclose()  # the client goes away mid-stream

    asyncio.run(run())
    deadline = time.monotonic() + 5
    while not fake_llm.disconnects[q] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert fake_llm.disconnects[q] == 1  # the upstream connection was closed
    with Client(server.target, namespace=namespace) as c:
        # Nothing was stored (a Lookup without the model would look in another partition).
        assert c.complete(ask(q), model="fake/gpt-4o-mini").kind == "miss"
        # What the provider generated before the client left is billed: it is spent.
        deadline = time.monotonic() + 5
        while not (rows := [r for r in c.report("user").rows if r.key == user]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert rows and rows[0].misses == 1 and rows[0].spend_usd > 0


def test_identical_streams_in_flight_share_one_upstream_call(
        server: ServerProcess, fake_llm: FakeLLM, namespace: str) -> None:
    q = f"Drip for everyone, word by word by word [drip=0.05] ({namespace})"
    expected = f"answer to: {q} [gpt-4o-mini]"

    async def run() -> None:
        async with AsyncClient(server.target, namespace=namespace) as c:
            async def stream(wait: float) -> list[str | CompletionResult]:
                await asyncio.sleep(wait)
                return [p async for p in c.complete_stream(ask(q), model="fake/gpt-4o-mini")]

            async def complete() -> CompletionResult:
                await asyncio.sleep(0.2)
                return await c.complete(ask(q), model="fake/gpt-4o-mini")

            first, second, plain = await asyncio.gather(stream(0), stream(0.2), complete())
            for pieces in (first, second):  # a reader gets the pieces so far, then the rest
                text, done = collect(pieces)
                assert (text, done.text, done.kind) == (expected, expected, "miss")
            assert plain.text == expected

    asyncio.run(run())
    assert fake_llm.calls[q] == 1


def test_a_shared_stream_goes_on_when_its_starter_leaves(
        server: ServerProcess, fake_llm: FakeLLM, namespace: str) -> None:
    q = f"Drip on after I leave, word by word by word [drip=0.05] ({namespace})"

    async def run() -> None:
        async with AsyncClient(server.target, namespace=namespace) as c:
            starter = c.complete_stream(ask(q), model="fake/gpt-4o-mini")
            assert isinstance(await starter.__anext__(), str)
            reader = asyncio.ensure_future(c.complete(ask(q), model="fake/gpt-4o-mini"))
            await asyncio.sleep(0.2)
            await starter.aclose()  # the one that started the call goes away
            assert (await reader).text == f"answer to: {q} [gpt-4o-mini]"

    asyncio.run(run())
    with Client(server.target, namespace=namespace) as c:
        assert c.complete(ask(q), model="fake/gpt-4o-mini").kind == "exact"  # the whole answer was stored
    assert fake_llm.calls[q] == 1


def test_a_shared_stream_closes_upstream_when_its_last_reader_leaves(
        server: ServerProcess, fake_llm: FakeLLM, namespace: str) -> None:
    q = f"Drip until we both leave, word by word by word by word [drip=0.2] ({namespace})"

    async def run() -> None:
        async with AsyncClient(server.target, namespace=namespace) as c:
            starter = c.complete_stream(ask(q), model="fake/gpt-4o-mini")
            assert isinstance(await starter.__anext__(), str)
            reader = c.complete_stream(ask(q), model="fake/gpt-4o-mini")
            assert isinstance(await reader.__anext__(), str)  # the piece so far
            await starter.aclose()
            await asyncio.sleep(0.3)
            assert not fake_llm.disconnects[q]  # one still follows it
            await reader.aclose()

    asyncio.run(run())
    deadline = time.monotonic() + 5
    while not fake_llm.disconnects[q] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert fake_llm.disconnects[q] == 1 and fake_llm.calls[q] == 1


def test_breaker_opens_cools_down_and_half_opens() -> None:
    now = [0.0]
    b = Breaker(failures=2, cooldown=10, clock=lambda: now[0])
    b.failed()
    assert b.allows()
    b.failed()
    assert not b.allows() and b.open
    now[0] = 11
    assert b.allows()  # the trial
    assert not b.allows()  # only one trial at a time
    b.failed()
    assert not b.allows()
    now[0] = 22
    assert b.allows()
    b.release()  # the trial's caller gave up (its deadline, a bad request): the next may try
    assert b.allows()
    b.succeeded()
    assert b.allows() and b.allows()


@pytest.mark.parametrize("extra,env,words", [
    ('[tiers]\nx = ["nowhere/model"]\n', {}, "tiers.x names provider 'nowhere', which is not configured"),
    ('[tiers]\nx = []\n', {}, "tiers.x must list at least one"),
    ('[routing]\ndefault_tier = "gold"\n', {}, "routing.default_tier must be one of the tiers"),
    ('[providers.p]\nkind = "cohere"\n', {}, "providers.p.kind must be 'openai' or 'anthropic'"),
    ("", {"FAKE_ANTHROPIC_KEY": ""}, "provider 'fake-claude' has no API key: set the environment variable FAKE_ANTHROPIC_KEY"),
])
def test_bad_routing_config_is_refused_at_start(tmp_path: Path, fake_llm: FakeLLM, extra: str,
                                                env: dict[str, str], words: str) -> None:
    config = tmp_path / "c.toml"
    base = routing_config(fake_llm.base_url)
    if extra.startswith("[tiers]"):
        base = base.replace("[tiers]\n", extra)
    elif extra.startswith("[routing]"):
        base = base.replace("[routing]\n", extra)
    config.write_text(base + (extra if extra.startswith("[providers") else ""))
    import os
    result = subprocess.run(
        [sys.executable, "-m", "semcached", "serve", "--config", str(config), "--port", "0",
         "--data-dir", str(tmp_path / "data")],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "FAKE_OPENAI_KEY": "k", "FAKE_ANTHROPIC_KEY": "k", **env})
    assert result.returncode == 2, result.stderr
    assert words in result.stderr
