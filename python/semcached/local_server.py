"""A semcached server in a process of its own on a free 127.0.0.1 port, for the tests,
the benchmarks and ``semcached bench``: started with a config of its own, ready when its
gRPC health check says SERVING, stopped with SIGTERM (a clean shutdown) and killed only
if that hangs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mib(pid: int | str = "self") -> float:
    """Resident memory of a process on this machine (Linux /proc), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class LocalServer:
    def __init__(self, data_dir: Path, config: str = "", env: dict[str, str] | None = None,
                 log: Path | None = None, timeout: float = 90.0) -> None:
        """Starts ``semcached serve`` on ``data_dir`` with ``config`` (TOML text, written
        beside the data directory) and returns once it serves. ``log``: where its output
        goes (None: this process's). Raises RuntimeError, with the log when there is one,
        if it exits or does not serve within ``timeout`` seconds."""
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.log = log
        data_dir.mkdir(parents=True, exist_ok=True)
        config_file = data_dir.parent / f"{data_dir.name}.toml"
        config_file.write_text(config, encoding="utf-8")
        self._log_file: IO[str] | None = open(log, "w") if log else None
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "semcached", "serve", "--port", str(self.port),
             "--data-dir", str(data_dir), "--config", str(config_file)],
            stdout=self._log_file, stderr=subprocess.STDOUT if log else None, env={**os.environ, **(env or {})})
        try:
            self.wait_serving(timeout)
        except BaseException:
            self.stop()
            raise

    def _output(self) -> str:
        if self._log_file is None or self.log is None:
            return "(its output went to this process's)"
        self._log_file.flush()
        return self.log.read_text()

    def wait_serving(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"the semcached server exited with status {self.proc.returncode}: "
                                       f"{self._output()}")
                try:
                    status = stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                    if status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.1)
        raise RuntimeError(f"the semcached server did not serve within {timeout:.0f} s: {self._output()}")

    def cpu_seconds(self) -> float:
        """CPU time the server process has used (user and system)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mib(self) -> float:
        return rss_mib(self.proc.pid)

    def stop(self) -> int:
        """Its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return self.proc.returncode
