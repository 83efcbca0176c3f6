"""The server process: data directory lock, engine, gRPC (+ health, reflection), signals."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import signal
from pathlib import Path
from typing import IO

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from semcached.config import Config, ConfigError, data_dir
from semcached.accounting import Accounting
from semcached.completion import Completions
from semcached.engine import Engine
from semcached.server.servicer import SemanticCacheServicer, register
from semcached.v1 import semcached_pb2

log = logging.getLogger("semcached.server")

SERVICE_NAME = semcached_pb2.DESCRIPTOR.services_by_name["SemanticCache"].full_name


def lock_data_dir(path: Path) -> IO[str]:
    """Holds an exclusive lock on the data directory for the life of the process."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        handle = open(path / "LOCK", "a+")
    except OSError as e:
        raise ConfigError(f"cannot use data directory {path}: {e.strerror}") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        raise ConfigError(f"data directory {path} is in use by {holder}; "
                          "stop it or choose another --data-dir") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"semcached pid {os.getpid()}\n")
    handle.flush()
    return handle


async def serve(config: Config) -> None:
    """Runs until SIGTERM or SIGINT, then shuts down gracefully."""
    lock = lock_data_dir(data_dir(config))
    engine = Engine.from_config(config)
    accounting = Accounting.from_config(config, lambda: (len(engine.store), engine.store.bytes))
    completions = Completions.build(engine, accounting)
    server = grpc.aio.server(options=[
        ("grpc.max_receive_message_length", config.cache.max_response_bytes + (1 << 20)),
    ])
    register(SemanticCacheServicer(engine, completions, accounting), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    address = f"{config.server.host}:{config.server.port}"
    try:
        port = server.add_insecure_port(address)
    except RuntimeError:
        port = 0
    if port == 0:
        raise ConfigError(f"cannot listen on {address}: the port is in use or the host is invalid")

    await server.start()
    engine.start()
    if accounting.metrics is not None:
        engine.embedder.observe = accounting.metrics.latency.labels("embedding").observe
        cache = engine.embedder.cache
        accounting.metrics.watch_embedding_cache(lambda: (cache.hits, cache.misses))
        try:
            accounting.metrics.serve(config.server.host, config.server.metrics_port)
        except OSError as e:
            raise ConfigError(f"cannot serve metrics on port {config.server.metrics_port}: {e.strerror}") from None
    for name in (SERVICE_NAME, ""):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    for reason in completions.router.missing.values():
        log.warning("%s; its models are skipped", reason)
    if not completions.router.providers:
        log.warning("no LLM provider has a key: Complete answers only from the cache")
    log.info("semcached listening on %s:%d (embedding model %s, verifier %s, data dir %s, event loop %s)",
             config.server.host, port, engine.model_id,
             engine.verifier.model_id if engine.verifier else "none", data_dir(config),
             type(asyncio.get_running_loop()).__module__.split(".")[0])

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()

    log.info("shutting down: finishing in-flight requests (up to %.0f s)",
             config.server.shutdown_grace_seconds)
    await health_servicer.enter_graceful_shutdown()
    await server.stop(config.server.shutdown_grace_seconds)
    await completions.close(config.server.shutdown_grace_seconds)
    accounting.close()  # writes the queued ledger rows
    await engine.close()
    lock.close()
    log.info("stopped")
