"""Sentence embeddings with ONNX Runtime + tokenizers: pooled, L2-normalized, batched.

One ONNX session with a single intra-op thread is shared by a pool of worker threads, so
N concurrent batches use N cores without oversubscribing them. Concurrent requests are
batched (see ``batching.Batcher``): a request that arrives while the workers are busy
joins the next batch, so batching adds no wait at low load.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from semcached.batching import LRU, Batcher, Workers
from semcached.models import ModelFolder, file_sha256

# Each batch is tokenized on the worker thread that runs it: tokenizers' own thread pool
# would only compete with the other workers for the cores (its threads spin while they
# wait for work). Off, semantic lookups at c16 on 2 cores: +5-8% (554 -> 597 req/s,
# medians of three). An explicit setting of the variable is kept.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

T = TypeVar("T")
X = TypeVar("X")
Y = TypeVar("Y")


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
    """Embeds on worker threads, batching requests that arrive while they are busy, and
    remembers the embeddings of recent texts. Also runs the verifier's batches, and other
    work that goes with an embedding, on the same threads: one thread per core in all."""

    def __init__(self, embedder: Embedder, threads: int, cache_entries: int = 0) -> None:
        self.embedder = embedder
        self.threads = threads
        self._workers = Workers(threads, "embed")
        self._batcher: Batcher[str, tuple[np.ndarray, bool]] = Batcher(self._workers, self._embed)
        self.cache: LRU[str, Embedding] = LRU(cache_entries)
        self._pending: dict[str, asyncio.Future[Embedding]] = {}  # texts being embedded

    @property
    def model_id(self) -> str:
        return self.embedder.model_id

    @property
    def observe(self) -> Callable[[float], None] | None:
        return self._batcher.observe

    @observe.setter
    def observe(self, fn: Callable[[float], None] | None) -> None:
        self._batcher.observe = fn

    def batcher(self, run: Callable[[list[X]], Sequence[Y]]) -> Batcher[X, Y]:
        """A batcher for another model, sharing these threads."""
        return Batcher(self._workers, run)

    async def embed(self, text: str) -> Embedding:
        """Concurrent requests for the same text share one embedding: a burst of the same
        new question is embedded once, not once per request."""
        cached = self.cache.get(text)
        if cached is not None:
            return cached
        task = self._pending.get(text)
        if task is None:
            task = asyncio.ensure_future(self._embed_new(text))
            self._pending[text] = task
            task.add_done_callback(lambda done: self._settled(text, done))
        # Shielded: a caller that goes away (a cancelled RPC) must not cancel the others'.
        return await asyncio.shield(task)

    async def _embed_new(self, text: str) -> Embedding:
        [(vector, whole)] = await self._batcher.submit([text])
        embedding = Embedding(vector, whole)
        self.cache.put(text, embedding)
        return embedding

    def _settled(self, text: str, task: asyncio.Future[Embedding]) -> None:
        self._pending.pop(text, None)
        if not task.cancelled():
            task.exception()  # retrieved here too, in case every caller went away

    def _embed(self, texts: list[str]) -> list[tuple[np.ndarray, bool]]:
        vectors, whole = self.embedder.embed_checked(texts)
        # Copies: a row view would keep its whole batch alive in the cache.
        return [(v.copy(), w) for v, w in zip(vectors, whole)]

    def run_sync(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Runs ``fn`` on the embedding pool (for work that goes with an embedding)."""
        return self._workers.call(fn, *args)

    def close(self) -> None:
        self._workers.close()
