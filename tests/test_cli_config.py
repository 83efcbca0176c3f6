"""Configuration file, environment overrides, CLI exit codes, the data-dir lock, and
graceful shutdown of a real server process."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import ServerProcess
from semcached.fake_llm import FakeLLM
from semcached import Client
from semcached import config as configuration
from semcached.config import ConfigError


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "semcached", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[cache]\nmin_similarity = 0.8\nmax_entries = 10\n[server]\nport = 6000\n")
    config = configuration.load(path, environ={"SEMCACHED_CACHE_MIN_SIMILARITY": "0.85"})
    assert (config.cache.min_similarity, config.cache.max_entries, config.server.port) == (0.85, 10, 6000)
    assert configuration.replace(config, server__port=7000).server.port == 7000
    defaults = configuration.load(None, environ={}).cache
    assert (defaults.min_similarity, defaults.target_precision, defaults.verifier) == (0.80, 0.95, "default")


@pytest.mark.parametrize("text,words", [
    ("[cache]\nmin_similarity = 2.0\n", "cache.min_similarity must be in [0, 1]"),
    ("[cache]\nmax_entries = 'lots'\n", "cache.max_entries must be an integer"),
    ("[cache]\nmax_entris = 5\n", "unknown key cache.max_entris"),
    ("[caches]\n", "unknown section [caches]"),
    ("[cache\n", "not valid TOML"),
    ("[server]\nport = 70000\n", "server.port must be in 1..65535"),
    ("[cache]\ntarget_precision = 1.0\n", "cache.target_precision must be in [0, 1)"),
    ("[namespaces.a]\ntarget_precision = 1.5\n", "namespaces.a.target_precision must be in [0, 1)"),
    ("[cache]\nverifier = '/nowhere'\n", "cache.verifier must be 'default', 'none' or an existing folder"),
    ("[ledger]\nkeep_rows_days = -1\n", "ledger.keep_rows_days must not be negative"),
    ("[server]\nevent_loop = 'tokio'\n", "server.event_loop must be 'uvloop' or 'asyncio'"),
])
def test_bad_config_is_refused_with_the_key_named(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        configuration.load(path, environ={})
    assert words in str(e.value)


def test_namespace_tables_set_per_namespace_bounds(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[cache]\neviction = 'lru'\n[namespaces.tenant-a]\nmax_entries = 2\nmax_bytes = 100000\n")
    config = configuration.load(path, environ={})
    assert config.cache.eviction == "lru"
    assert (config.namespaces["tenant-a"].max_entries, config.namespaces["tenant-a"].max_bytes) == (2, 100000)
    path.write_text("[namespaces.'bad name']\nmax_entries = 2\n")
    with pytest.raises(ConfigError, match="invalid namespace"):
        configuration.load(path, environ={})
    path.write_text("[namespaces.ok]\nmax_entrys = 2\n")
    with pytest.raises(ConfigError, match="unknown key namespaces.ok.max_entrys"):
        configuration.load(path, environ={})


def test_bad_environment_value_is_refused() -> None:
    with pytest.raises(ConfigError, match="SEMCACHED_CACHE_MAX_ENTRIES: cache.max_entries must be an integer"):
        configuration.load(None, environ={"SEMCACHED_CACHE_MAX_ENTRIES": "many"})


def test_cli_exits_2_with_a_message_on_bad_config(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[cache]\nmin_similarity = -1\n")
    result = run_cli("serve", "--config", str(path), "--data-dir", str(tmp_path / "d"))
    assert result.returncode == 2
    assert "semcached: error: config key cache.min_similarity must be in [0, 1]" in result.stderr
    missing = run_cli("serve", "--config", str(tmp_path / "nope.toml"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    model = run_cli("serve", "--data-dir", str(tmp_path / "d"), "--port", "0",
                    "--config", str(_config(tmp_path, '[embedding]\nmodel = "/no/such/model"\n')))
    assert model.returncode == 2 and "neither a known model" in model.stderr


def test_models_list_and_pull_are_idempotent() -> None:
    listed = run_cli("models", "list")
    assert listed.returncode == 0 and "all-MiniLM-L6-v2-int8" in listed.stdout
    pulled = run_cli("models", "pull")
    assert pulled.returncode == 0 and "installed in" in pulled.stdout
    unknown = run_cli("models", "pull", "no-such-model")
    assert unknown.returncode == 2 and "unknown model 'no-such-model'" in unknown.stderr


def test_second_server_on_the_same_data_dir_is_refused(server: ServerProcess) -> None:
    result = run_cli("serve", "--port", "0", "--data-dir", str(server.data_dir))
    assert result.returncode == 2
    assert f"data directory {server.data_dir} is in use by semcached pid {server.proc.pid}" in result.stderr


def test_sigterm_lets_in_flight_requests_finish(tmp_path: Path, fake_llm: FakeLLM) -> None:
    proc = ServerProcess(tmp_path, fake_llm.base_url)
    outcome: dict[str, object] = {}

    def slow_call() -> None:
        with Client(proc.target) as c:
            try:
                outcome["text"] = c.complete([{"role": "user", "content": "Slow [slow=1.5] graceful"}]).text
            except Exception as e:
                outcome["error"] = e

    caller = threading.Thread(target=slow_call)
    caller.start()
    time.sleep(0.5)  # the call is now waiting on the provider
    assert proc.stop() == 0
    caller.join()
    assert str(outcome.get("text")).startswith("answer to: Slow [slow=1.5] graceful"), outcome
    log = proc.log.read_text()
    assert "shutting down" in log and "stopped" in log


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "extra.toml"
    path.write_text(text)
    return path
