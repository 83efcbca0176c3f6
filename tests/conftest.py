"""Fixtures: one real semcached server process on a free 127.0.0.1 port, talking to a fake
OpenAI-compatible provider (a real HTTP server) through the real openai SDK."""

from __future__ import annotations

import itertools
import re
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from semcached.fake_llm import ANTHROPIC_KEY, API_KEY, FakeLLM
from semcached import Client

_names = itertools.count()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


class ServerProcess:
    def __init__(self, tmp: Path, provider_url: str | None, config: str = "",
                 env: dict[str, str] | None = None, data_dir: Path | None = None) -> None:
        """``provider_url`` None: the embedded provider and tier defaults."""
        tmp.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.data_dir = data_dir or tmp / "data"
        config_file = tmp / "semcached.toml"
        config_file.write_text((routing_config(provider_url) if provider_url else "") + config)
        self.log = tmp / "server.log"
        self._log_file = open(self.log, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "semcached", "serve", "--port", str(self.port),
             "--data-dir", str(self.data_dir), "--config", str(config_file)],
            stdout=self._log_file, stderr=subprocess.STDOUT,
            env={**os.environ, "FAKE_OPENAI_KEY": API_KEY, "FAKE_ANTHROPIC_KEY": ANTHROPIC_KEY, **(env or {})},
        )
        try:
            self.wait_serving()
        except BaseException:
            self.stop()
            raise

    def wait_serving(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    self._log_file.flush()
                    raise RuntimeError(f"server exited {self.proc.returncode}: {self.log.read_text()}")
                try:
                    status = stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                    if status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.1)
        raise RuntimeError(f"server did not start: {self.log.read_text()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()
        return self.proc.returncode


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
