"""Durability end to end: kill -9 under load loses nothing acknowledged, a torn log tail is
dropped with a warning, a corrupt snapshot is refused, expired entries stay gone."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest

from conftest import ServerProcess
from semcached.fake_llm import FakeLLM
from semcached import Client, SemcachedError, _core


PARAPHRASE = "what's the way to reset my password"  # asked at target_precision 0: plumbing, not the verifier


def restart(old: ServerProcess, tmp_path: Path, provider_url: str) -> ServerProcess:
    """A new server process on the same data directory."""
    return ServerProcess(tmp_path, provider_url, data_dir=old.data_dir)


def test_kill_9_under_load_loses_no_acknowledged_store(tmp_path: Path, fake_llm: FakeLLM) -> None:
    server = ServerProcess(tmp_path / "a", fake_llm.base_url)
    acknowledged: dict[str, int] = {}
    stop = threading.Event()

    def load(worker: int) -> None:
        with Client(server.target, namespace="durable") as c:
            for i in range(100_000):
                if stop.is_set():
                    return
                prompt = f"worker {worker} question number {i}"
                try:
                    acknowledged[prompt] = c.store(prompt, f"answer {worker}/{i}").entry_id
                except SemcachedError:
                    return  # the server died under this call: not acknowledged

    workers = [threading.Thread(target=load, args=(w,)) for w in range(4)]
    for w in workers:
        w.start()
    time.sleep(2.0)
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait()
    stop.set()
    for w in workers:
        w.join()
    assert len(acknowledged) > 20, "the load did not get going"

    again = restart(server, tmp_path / "b", fake_llm.base_url)
    try:
        with Client(again.target, namespace="durable") as c:
            for prompt, entry_id in acknowledged.items():
                r = c.lookup(prompt)
                worker, i = prompt.split()[1], prompt.split()[-1]
                assert (r.kind, r.entry_id, r.response) == ("exact", entry_id, f"answer {worker}/{i}")
            # Semantic search works on the rebuilt index too.
            assert c.lookup("question number 3 from worker 1", target_precision=0.0).kind in ("semantic", "exact")
    finally:
        again.stop()
        server.stop()


def test_restart_keeps_entries_drops_expired_and_reuses_a_snapshot(tmp_path: Path, fake_llm: FakeLLM) -> None:
    server = ServerProcess(tmp_path / "a", fake_llm.base_url)
    with Client(server.target) as c:
        kept = c.store("How do I reset my password?", "Settings → Security → Reset.")
        c.store("Is the office open today?", "Yes, until 6pm.", ttl_seconds=1)
        gone = c.store("Where is the cafeteria?", "Floor 2.")
        c.invalidate(entry_id=gone.entry_id)
    assert server.stop() == 0  # clean shutdown writes a snapshot
    assert (server.data_dir / "snapshot.bin").is_file()
    time.sleep(1.1)
    again = restart(server, tmp_path / "b", fake_llm.base_url)
    try:
        with Client(again.target) as c:
            r = c.lookup(PARAPHRASE, target_precision=0.0)
            assert (r.kind, r.entry_id) == ("semantic", kept.entry_id)
            assert not c.lookup("Is the office open today?").hit
            assert not c.lookup("Where is the cafeteria?").hit
            assert c.store("New question?", "New answer.").entry_id > gone.entry_id
    finally:
        again.stop()


def test_the_asyncio_loop_serves_and_shuts_down_cleanly(tmp_path: Path, fake_llm: FakeLLM) -> None:
    """asyncio's own loop, the alternative to uvloop (the default, which every other test runs on)."""
    server = ServerProcess(tmp_path, fake_llm.base_url, config="[server]\nevent_loop = 'asyncio'\n")
    try:
        with Client(server.target) as c:
            stored = c.store("How do I reset my password?", "Settings → Security → Reset.")
            r = c.lookup(PARAPHRASE, target_precision=0.0)
            assert (r.kind, r.entry_id) == ("semantic", stored.entry_id)
            assert c.lookup("how do i reset my PASSWORD?").kind == "exact"
    finally:
        assert server.stop() == 0


def test_torn_log_tail_is_dropped_with_a_warning(tmp_path: Path, fake_llm: FakeLLM) -> None:
    server = ServerProcess(tmp_path / "a", fake_llm.base_url)
    with Client(server.target) as c:
        c.store("What is our refund window?", "30 days.")
    server.proc.send_signal(signal.SIGKILL)  # no shutdown snapshot: the log holds the entry
    server.stop()
    segment = sorted(server.data_dir.glob("wal-*.log"))[-1]
    with open(segment, "ab") as f:
        f.write(b"\x40\x00\x00\x00torn")
    again = restart(server, tmp_path / "b", fake_llm.base_url)
    try:
        with Client(again.target) as c:
            assert c.lookup("What is our refund window?").response == "30 days."
        log = again.log.read_text()
        assert "recovery:" in log and "dropped 8 bytes" in log
    finally:
        again.stop()


def test_corrupt_snapshot_is_refused_with_exit_2(tmp_path: Path, fake_llm: FakeLLM) -> None:
    server = ServerProcess(tmp_path / "a", fake_llm.base_url)
    with Client(server.target) as c:
        c.store("What is our refund window?", "30 days.")
    server.stop()
    snapshot = server.data_dir / "snapshot.bin"
    data = bytearray(snapshot.read_bytes())
    data[-10] ^= 0xFF
    snapshot.write_bytes(bytes(data))
    with pytest.raises(RuntimeError, match="exited with status 2"):
        restart(server, tmp_path / "b", fake_llm.base_url)
    assert "snapshot.bin is corrupt" in (tmp_path / "b" / "server.log").read_text()


FULL_DISK = """
import resource, signal, sys
from semcached import _core
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))
store = _core.Store(1000, sys.argv[1])
stored = 0
try:
    for i in range(10_000):
        store.insert("ns", f"question {i}", "x" * 500, bytes(256), "m")
        stored += 1
except OSError as e:
    print(stored, e)
"""


def test_a_full_disk_refuses_the_write_and_corrupts_nothing(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", FULL_DISK, str(tmp_path / "d")],
                            capture_output=True, text=True, timeout=60)
    stored_text, _, message = result.stdout.partition(" ")
    stored = int(stored_text)
    assert 10 < stored < 10_000 and "could not append to" in message
    reopened = _core.Store(1000, str(tmp_path / "d"))
    assert reopened.recovery[2] == []  # the failed write left no torn record behind
    assert len(reopened) == stored
    assert reopened.get_exact("ns", f"question {stored - 1}") is not None
    reopened.insert("ns", "after the disk was freed", "ok", bytes(256), "m")
