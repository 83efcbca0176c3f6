"""Fixtures: one real semcached server process on a free 127.0.0.1 port, talking to a fake
OpenAI-compatible provider (a real HTTP server) through the real openai SDK."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from semcached.fake_llm import ANTHROPIC_KEY, API_KEY, FakeLLM
from semcached.local_server import LocalServer
from semcached import Client

_names = itertools.count()


def routing_config(provider_url: str) -> str:
    """Two providers on the fake (OpenAI-compatible at provider_url, Anthropic beside it),
    tiers over them, and quick backoff and breaker settings so the tests run fast."""
    anthropic_url = provider_url.removesuffix("/v1")
    return f"""
[cache]
expire_interval_ms = 100
[providers.fake]
kind = "openai"
base_url = "{provider_url}"
api_key_env = "FAKE_OPENAI_KEY"
timeout_seconds = 3.0
[providers.fake-claude]
kind = "anthropic"
base_url = "{anthropic_url}"
api_key_env = "FAKE_ANTHROPIC_KEY"
timeout_seconds = 3.0
[tiers]
cheap = ["fake/llama-3.1-8b"]
standard = ["fake/gpt-4o-mini"]
hard = ["fake/gpt-4o", "fake-claude/claude-sonnet"]
code = ["fake-claude/claude-sonnet", "fake/gpt-4o"]
flaky = ["fake/down-model", "fake-claude/claude-haiku"]
limited = ["fake/ratelimited-model", "fake-claude/claude-haiku"]
[routing]
backoff_initial_ms = 20
backoff_max_ms = 200
breaker_failures = 3
breaker_cooldown_seconds = 2.0
"""


class ServerProcess(LocalServer):
    def __init__(self, tmp: Path, provider_url: str | None, config: str = "",
                 env: dict[str, str] | None = None, data_dir: Path | None = None) -> None:
        """``provider_url`` None: the embedded provider and tier defaults."""
        tmp.mkdir(parents=True, exist_ok=True)
        super().__init__(data_dir or tmp / "data", (routing_config(provider_url) if provider_url else "") + config,
                         env={"FAKE_OPENAI_KEY": API_KEY, "FAKE_ANTHROPIC_KEY": ANTHROPIC_KEY, **(env or {})},
                         log=tmp / "server.log", timeout=60)


@pytest.fixture(scope="session")
def fake_llm() -> Iterator[FakeLLM]:
    fake = FakeLLM()
    yield fake
    fake.close()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, fake_llm: FakeLLM) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("server"), fake_llm.base_url)
    yield proc
    proc.stop()


@pytest.fixture
def namespace(request: pytest.FixtureRequest) -> str:
    """A namespace of this test's own, so tests sharing the server never see each other."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", f"t{next(_names)}-{request.node.name}")[:64]


@pytest.fixture
def client(server: ServerProcess, namespace: str) -> Iterator[Client]:
    with Client(server.target, namespace=namespace) as c:
        yield c
