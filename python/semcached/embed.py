"""Sentence embeddings with ONNX Runtime + tokenizers: pooled, L2-normalized, batched.

One ONNX session with a single intra-op thread is shared by a pool of worker threads, so
N concurrent batches use N cores without oversubscribing them. Concurrent requests are
batched opportunistically (see ``BatchingEmbedder``): a request that arrives while the
workers are busy joins the next batch, so batching adds no wait at low load.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from semcached.models import ModelFolder, file_sha256

# Largest batch one inference takes: past ~32 short sentences per call the per-item
# cost stops falling and the batch's latency only grows.
MAX_BATCH = 32
T = TypeVar("T")


class Embedder:
    """Thread-safe: ``embed`` may be called from many threads at once."""

    def __init__(self, folder: ModelFolder, max_tokens: int = 256) -> None:
        self.pooling = folder.pooling
        # The model id recorded with every vector: name plus the weights' hash, so a
        # changed file under the same name never mixes with vectors of the old one.
        self.model_id = f"{folder.name}@{file_sha256(folder.path / 'model.onnx')[:12]}"
        self._tokenizer = Tokenizer.from_file(str(folder.path / "tokenizer.json"))
        self._tokenizer.enable_truncation(max_length=max_tokens)
        self._tokenizer.enable_padding()
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self._session = ort.InferenceSession(
            str(folder.path / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        self._inputs = {i.name for i in self._session.get_inputs()}
        missing = {"input_ids", "attention_mask"} - self._inputs
        if missing:
            raise ValueError(f"{folder.path / 'model.onnx'} lacks inputs {sorted(missing)}")
        self._output = _token_states_output(self._session)
        self.max_tokens = max_tokens
        self.dim = int(self.embed(["dimension probe"]).shape[1])

    def embed(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) float32 rows of unit length."""
        return self.embed_checked(texts)[0]

    def embed_checked(self, texts: list[str]) -> tuple[np.ndarray, list[bool]]:
        """The rows, and for each text whether it fit in ``max_tokens`` whole. A text cut
        short is embedded by its head only, so two long texts that differ only after the
        cut would look identical: such vectors must not decide a semantic hit."""
        encodings = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        states = self._session.run([self._output], feeds)[0]
        if self.pooling == "cls":
            pooled = states[:, 0, :]
        else:
            weights = mask[:, :, None].astype(np.float32)
            pooled = (states * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        whole = [sum(e.attention_mask) < self.max_tokens for e in encodings]
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32), whole


def _token_states_output(session: ort.InferenceSession) -> str:
    outputs = session.get_outputs()
    for o in outputs:
        if o.name in ("last_hidden_state", "token_embeddings"):
            return str(o.name)
    for o in outputs:
        if len(o.shape) == 3:
            return str(o.name)
    raise ValueError("the model has no rank-3 output (token states) to pool")


def default_threads(configured: int) -> int:
    return configured or max(1, len(os.sched_getaffinity(0)))


@dataclass(frozen=True)
class Embedding:
    vector: np.ndarray
    # False when the text was cut at max_tokens: then the vector is not trusted for hits.
    whole: bool


class BatchingEmbedder:
    """Runs embeddings on worker threads, batching requests that arrive while busy."""

    def __init__(self, embedder: Embedder, threads: int) -> None:
        self.embedder = embedder
        self._workers = threads
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="embed")
        self._pending: list[tuple[str, asyncio.Future[Embedding]]] = []
        self._running = 0
        # Called with each batch's inference seconds (the metrics' embedding histogram).
        self.observe: Callable[[float], None] | None = None

    @property
    def model_id(self) -> str:
        return self.embedder.model_id

    async def embed(self, text: str) -> Embedding:
        future: asyncio.Future[Embedding] = asyncio.get_running_loop().create_future()
        self._pending.append((text, future))
        if self._running < self._workers:
            self._running += 1
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                # An equal share for each worker: one worker taking a whole burst would
                # leave the other cores idle.
                size = min(MAX_BATCH, -(-len(self._pending) // self._workers))
                batch, self._pending = self._pending[:size], self._pending[size:]
                texts = [text for text, _ in batch]
                started = time.perf_counter()
                try:
                    vectors, whole = await loop.run_in_executor(self._pool, self.embedder.embed_checked, texts)
                except Exception as e:  # a failed batch fails its own requests only
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(e)
                    continue
                if self.observe is not None:
                    self.observe(time.perf_counter() - started)
                for (_, future), vector, fits in zip(batch, vectors, whole):
                    if not future.done():
                        future.set_result(Embedding(vector, fits))
        finally:
            self._running -= 1

    def run_sync(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Runs ``fn`` on the embedding pool (for work that goes with an embedding)."""
        return asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
