"""The cache's request flow: exact tier, semantic tier (search, verifier, feedback).

Usable in-process without a server. The engine validates its inputs (the server's
servicer only translates), keeps the vector indexes in step with the entry store, and
counts what happened.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from semcached import _core, validation
from semcached import verifier as verification
from semcached.config import Config, ConfigError, data_dir
from semcached.embed import BatchingEmbedder, Embedder, Embedding, default_threads
from semcached.errors import InvalidArgument, NotFound, Unavailable
from semcached.feedback import Feedback
from semcached.index import Indexes
from semcached.models import models_dir, resolve
from semcached.verifier import Calibration, Scorer, Verifier
from semcached.results import (
    FeedbackResult,
    LookupResult,
    NamespaceStats,
    Stats,
    StoreResult,
)

log = logging.getLogger("semcached.engine")

# Candidates read from the index per lookup: more than one, so entries removed from the
# store but not yet from the index never hide a live neighbour, and the verifier can
# prefer the second-nearest question when it asks the same thing and the nearest does not.
CANDIDATES = 4
# Of those above min_similarity, the verifier reads the nearest this many: each costs
# about 5 ms of one core, and a third-nearest question is rarely the right one.
VERIFIED = 2
# Scopes up to this many vectors are searched on the event loop (an exact scan of 2,000
# takes ~0.15 ms, less than handing it to a worker thread and back); larger ones on the
# workers.
INLINE_SEARCH_MAX = 2000
# A scope for Complete is "<namespace>#<partition>"; '#' cannot occur in a namespace. The
# core counts a scope toward the bounds of the namespace before the '#' (store.rs group_of).
PARTITION_SEPARATOR = "#"


@dataclass(frozen=True)
class Decision:
    """How one lookup decides: candidates need ``min_similarity``; a hit needs the
    verifier's score (or, with the verifier off, the cosine) at ``threshold`` or above,
    and an entry created at ``min_created_ms`` or later."""

    min_similarity: float
    threshold: float
    min_created_ms: int = 0


@dataclass(frozen=True)
class Found:
    result: LookupResult
    embedding: Embedding | None  # computed for the semantic tier; reused to store a miss


class Engine:
    def __init__(self, config: Config, store: _core.Store, embedder: BatchingEmbedder,
                 verifier: Verifier | None, calibration: Calibration) -> None:
        self.config = config
        self.store = store
        self.embedder = embedder
        self.verifier = verifier
        self.scorer = None if verifier is None else Scorer(
            verifier, embedder.batcher(lambda pairs: verifier.probabilities(pairs).tolist()),
            config.embedding.cache_entries)
        self.calibration = calibration
        self.feedback = Feedback(data_dir(config) / "feedback.log", self._configured_target,
                                 lambda entry_id: store.get(entry_id) is not None)
        self.indexes = Indexes(store, directory=data_dir(config) / "graphs")
        self._counts: Counter[str] = Counter()
        # Bumped by every invalidation of a namespace, so a fill that started before it
        # (a provider call in flight) does not put back what was just removed. The lock
        # makes "check the generation, insert" and "bump, remove" atomic to each other.
        self._generation: Counter[str] = Counter()
        self._generation_lock = threading.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        # Sweeps, flushes, graph builds and snapshots run here, not on the embedding
        # threads: a snapshot of a large store takes seconds of one thread. Two threads,
        # so interval flushes go on while a sweep snapshots.
        self._background = ThreadPoolExecutor(2, thread_name_prefix="background")

    @classmethod
    def from_config(cls, config: Config, calibration: Calibration | None = None) -> Engine:
        """The engine over the store kept in the configured data directory (recovered
        from it when it holds one), with its vector indexes rebuilt. ``calibration``
        replaces the verifier's own (to measure a new one)."""
        folder = resolve(config.embedding.model, models_dir(config.embedding.models_dir),
                         config.embedding.pooling)
        embedder = Embedder(folder, config.embedding.max_tokens)
        threads = default_threads(config.embedding.threads)
        cache = config.cache
        try:
            store = _core.Store(
                cache.max_entries, str(data_dir(config)), config.storage.fsync,
                max_bytes=cache.max_bytes or None,
                namespace_max_entries=cache.namespace_max_entries or None,
                namespace_max_bytes=cache.namespace_max_bytes or None,
                policy=cache.eviction,
            )
            for name, limits in config.namespaces.items():
                store.set_namespace_limits(name, limits.max_entries or None, limits.max_bytes or None)
        except _core.CorruptDataError as e:
            raise ConfigError(str(e)) from None
        except OSError as e:
            raise ConfigError(f"cannot open the data directory: {e}") from None
        verifier, calibration = verification.load(cache.verifier, calibration)
        if calibration.embedding_model and calibration.embedding_model != embedder.model_id:
            log.warning("the hit calibration was measured with %s, not %s: target_precision is "
                        "approximate until you recalibrate (semcached eval-quality --calibrate)",
                        calibration.embedding_model, embedder.model_id)
        if verifier and verifier.combiner and verifier.combiner.embedding_model != embedder.model_id:
            log.warning("the verifier's combiner was fitted on %s vectors, not %s: it is not used "
                        "(the verifier's two orders are averaged instead)",
                        verifier.combiner.embedding_model, embedder.model_id)
            verifier.combiner = None
        _warn_unreachable(config, calibration, "verifier" if verifier else "cosine")
        engine = cls(config, store, BatchingEmbedder(embedder, threads, config.embedding.cache_entries), verifier, calibration)
        engine._recover()
        return engine

    def _recover(self) -> None:
        from_snapshot, replayed, warnings = self.store.recovery
        for warning in warnings:
            log.warning("recovery: %s", warning)
        self.indexes.rebuild()
        other_models = sum(n for _, model, n in self.store.vector_sets() if model != self.model_id)
        if from_snapshot or replayed:
            log.info("recovered %d entries (%d from the snapshot, %d log records replayed)",
                     len(self.store), from_snapshot, replayed)
        if other_models:
            log.warning("%d entries were embedded by another model than %s: exact hits only",
                        other_models, self.model_id)

    @property
    def model_id(self) -> str:
        return self.embedder.model_id

    # -- the public operations -------------------------------------------------------

    async def lookup(self, namespace: str, prompt: str, min_similarity: float | None = None,
                     target_precision: float | None = None) -> LookupResult:
        scope = validation.namespace(namespace)
        validation.text("prompt", prompt, self.config.cache.max_prompt_bytes)
        validation.min_similarity(min_similarity)
        validation.target_precision(target_precision)
        # An exact hit needs no semantic decision (a Lookup has no max age): the
        # cheapest answer the server gives skips the calibration and feedback reads.
        entry = self.store.get_exact(scope, prompt) if self.config.cache.exact_tier else None
        if entry is not None:
            return _result("exact", entry, 1.0, 1.0)
        found = await self.find(scope, prompt, self.decision(scope, min_similarity, target_precision),
                                exact_checked=True)
        self.count(found.result)
        return found.result

    async def store_entry(self, namespace: str, prompt: str, response: str,
                          ttl_seconds: int | None = None,
                          metadata: Mapping[str, str] | None = None) -> StoreResult:
        scope = validation.namespace(namespace)
        cache = self.config.cache
        validation.text("prompt", prompt, cache.max_prompt_bytes)
        validation.text("response", response, cache.max_response_bytes)
        ttl = validation.ttl_seconds(ttl_seconds)
        meta = validation.metadata(metadata or {}, cache.max_metadata_bytes)
        embedding = await self.embedder.embed(prompt)
        stored = await self.insert(scope, prompt, response, embedding, ttl, meta)
        assert stored is not None  # no generation given: always stored
        return stored

    async def invalidate(self, namespace: str, *, entry_id: int | None = None,
                         prompt: str | None = None, all: bool = False) -> int:
        """Removes one entry (by id or prompt) or all entries of a namespace, in every
        partition of it that Complete made. Returns how many were removed."""
        name = validation.namespace(namespace)
        targets = sum(x is not None and x is not False for x in (entry_id, prompt, all or None))
        if targets != 1:
            raise InvalidArgument("invalidate needs exactly one of entry_id, prompt, all")
        if prompt is not None:
            validation.text("prompt", prompt)
        if entry_id is not None and entry_id <= 0:
            raise InvalidArgument(f"entry_id must be positive, got {entry_id}")

        def remove() -> int:
            with self._generation_lock:
                self._generation[name] += 1
                return removals()

        def removals() -> int:
            scopes = [s for s in self.store.namespace_sizes() if _namespace_of(s) == name]
            removed = 0
            if entry_id is not None:
                entry = self.store.get(entry_id)
                # An id from another namespace is treated as absent: scopes are walls.
                if entry is not None and entry.namespace in scopes:
                    removed = int(self.store.remove(entry_id))
            for scope in scopes if entry_id is None else []:
                if all:
                    removed += self.store.clear_namespace(scope)
                elif prompt is not None:
                    removed += self.store.remove_prompt(scope, prompt) is not None
            return removed

        try:
            # Off the event loop: each removal is logged (and flushed) before it is applied.
            return await self.embedder.run_sync(remove)
        except OSError as e:
            raise Unavailable(f"the invalidation was not applied: {e}") from None
        finally:
            await self.embedder.run_sync(self._apply_removals)

    async def record_feedback(self, namespace: str, entry_id: int, correct: bool,
                              prompt: str | None = None) -> FeedbackResult:
        """An application's report on a served hit. Wrong reports need the prompt the
        hit was served for: questions like it are refused that entry from then on."""
        name = validation.namespace(namespace)
        if entry_id <= 0:
            raise InvalidArgument(f"entry_id must be positive, got {entry_id}")
        if prompt:
            validation.text("prompt", prompt, self.config.cache.max_prompt_bytes)
        elif not correct:
            raise InvalidArgument("wrong feedback needs the prompt the hit was served for")
        entry = self.store.get(entry_id)
        if entry is None or _namespace_of(entry.namespace) != name:
            raise NotFound(f"no entry {entry_id} in namespace {name!r}: it expired, was evicted "
                           "or invalidated, or belongs to another namespace")
        vector = None if correct or prompt is None else (await self.embedder.embed(prompt)).vector

        def record() -> FeedbackResult:
            verdict = self.feedback.record(name, entry_id, vector, correct, self._configured_target(name))
            removed = verdict.remove and self.store.remove(entry_id)
            self._apply_removals()
            return FeedbackResult(right=verdict.right, wrong=verdict.wrong, removed=bool(removed),
                                  target_precision=verdict.target_precision)

        try:
            return await self.embedder.run_sync(record)
        except OSError as e:
            raise Unavailable(f"the feedback was not recorded: {e}") from None

    async def stats(self) -> Stats:
        core = self.store.counters()
        usage = await self.embedder.run_sync(self.store.group_usage)  # O(namespaces): off the loop
        return Stats(
            entries=len(self.store), max_entries=self.store.max_entries,
            exact_hits=core["exact_hits"], semantic_hits=self._counts["semantic"],
            misses=self._counts["miss"], stores=core["inserts"],
            evictions=core["evictions"], expirations=core["expirations"],
            invalidations=core["invalidations"], upstream_calls=self._counts["upstream_calls"],
            upstream_errors=self._counts["upstream_errors"], embedding_model=self.model_id,
            bytes=self.store.bytes, max_bytes=self.config.cache.max_bytes,
            namespaces={name: self._namespace_stats(name, entries, size) for name, entries, size in usage},
            feedback_right=sum(right for right, _ in self.feedback.counts.values()),
            feedback_wrong=sum(wrong for _, wrong in self.feedback.counts.values()),
            verifier=self.verifier.model_id if self.verifier else "none",
            embedding_cache_hits=self.embedder.cache.hits, embedding_cache_misses=self.embedder.cache.misses,
        )

    def _namespace_stats(self, name: str, entries: int, size: int) -> NamespaceStats:
        target = self.feedback.target(name, self._configured_target(name))
        right, wrong = self.feedback.counts.get(name, (0, 0))
        expected = self.calibration.setting(self._knob, target).recall
        return NamespaceStats(entries, size, target_precision=target, expected_recall=expected,
                              feedback_right=right, feedback_wrong=wrong)

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Starts the background work: expiry sweeps, log flushes, snapshots."""
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._every(self.config.cache.expire_interval_ms, self.sweep))]
        if self.config.storage.fsync == "interval":
            self._tasks.append(loop.create_task(
                self._every(self.config.storage.fsync_interval_ms, self.store.sync)))

    async def close(self) -> None:
        """Stops background work, snapshots (so the next start replays no log), closes."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await asyncio.get_running_loop().run_in_executor(self._background, self.snapshot)
        except OSError as e:
            log.error("could not write the shutdown snapshot (the log still holds every entry): %s", e)
        self._background.shutdown(wait=True)
        self.embedder.close()
        self.feedback.close()

    async def _every(self, interval_ms: int, work: Callable[[], object]) -> None:
        while True:
            await asyncio.sleep(interval_ms / 1000)
            try:
                await asyncio.get_running_loop().run_in_executor(self._background, work)
            except Exception:
                log.exception("background %s failed; retrying next interval", work.__name__)

    def sweep(self) -> int:
        """Removes expired entries from the store and their vectors from the indexes, and
        snapshots when the log has grown past its bound."""
        expired = self.store.expire()
        self._apply_removals()
        self.indexes.build_pending()
        if self.store.log_bytes() > self._snapshot_threshold():
            self.snapshot()
        return expired

    def _snapshot_threshold(self) -> int:
        """The configured log size, or half the last snapshot if larger: a snapshot
        rewrites the whole store, so a big store snapshots after proportionally more log."""
        try:
            last = (data_dir(self.config) / "snapshot.bin").stat().st_size
        except OSError:
            last = 0
        return max(self.config.storage.snapshot_log_bytes, last // 2)

    def snapshot(self) -> None:
        """Snapshots the store, then saves the graphs so a restart need not rebuild them."""
        self.store.snapshot()
        self.indexes.save()

    # -- internals -------------------------------------------------------------------

    @property
    def _knob(self) -> str:
        return "verifier" if self.verifier else "cosine"

    def _configured_target(self, namespace: str) -> float:
        settings = self.config.namespaces.get(namespace)
        if settings is not None and settings.target_precision:
            return settings.target_precision
        return self.config.cache.target_precision

    def decision(self, namespace: str, min_similarity: float | None, target_precision: float | None,
                 max_age_seconds: int | None = None) -> Decision:
        floor = validation.min_similarity(min_similarity)
        target = validation.target_precision(target_precision)
        configured = self._configured_target(namespace) if target is None else target
        point = self.calibration.setting(self._knob, self.feedback.target(namespace, configured))
        oldest = int(time.time() * 1000) - max_age_seconds * 1000 if max_age_seconds else 0
        return Decision(self.config.cache.min_similarity if floor is None else floor, point.threshold, oldest)

    def generation(self, namespace: str) -> int:
        """Read before an upstream call; ``insert`` with it stores only if no
        invalidation of the namespace happened since."""
        return self._generation[namespace]

    def count_upstream(self, error: bool) -> None:
        self._counts["upstream_errors" if error else "upstream_calls"] += 1

    def count(self, result: LookupResult) -> None:
        if result.kind != "exact":  # exact hits are counted by the core
            self._counts[result.kind] += 1

    async def find(self, scope: str, prompt: str, decision: Decision, exact_checked: bool = False) -> Found:
        """``exact_checked``: the caller found no exact hit a moment ago (not asked again:
        each probe counts in the core's exact hit/miss counters)."""
        # The exact tier first: microseconds, no embedding (the core keeps the GIL for it).
        exact_tier = self.config.cache.exact_tier
        entry = self.store.get_exact(scope, prompt) if exact_tier and not exact_checked else None
        if entry is not None and entry.created_ms >= decision.min_created_ms:
            return Found(_result("exact", entry, 1.0, 1.0), None)
        embedding = await self.embedder.embed(prompt)
        if not embedding.whole:
            return Found(LookupResult(kind="miss"), embedding)
        result = await self._semantic(scope, prompt, embedding.vector, decision)
        if not result.hit:
            # The same question may have been stored while this one was embedded and
            # searched (a single-flight fill finishing): serve it rather than pay again.
            # No await follows before the caller checks the in-flight fills, so a miss
            # here finds the entry or the fill, never neither.
            entry = self.store.get_exact(scope, prompt) if exact_tier else None
            if entry is not None and entry.created_ms >= decision.min_created_ms:
                return Found(_result("exact", entry, 1.0, 1.0), embedding)
        return Found(result, embedding)

    async def _semantic(self, scope: str, prompt: str, vector: np.ndarray, decision: Decision) -> LookupResult:
        if self.store.vector_count(scope, self.model_id) <= INLINE_SEARCH_MAX:
            candidates = self._candidates(scope, vector, decision)
        else:
            candidates = await self.embedder.run_sync(self._candidates, scope, vector, decision)
        if not candidates:
            return LookupResult(kind="miss")
        if self.scorer is None:  # the nearest decides
            (entry, similarity), score = candidates[0], 0.0
            served = similarity >= decision.threshold
        elif same := _same_question(prompt, candidates):
            # The same question in the same normal form (reached with the exact tier off)
            # needs no verifier, which scores identical questions only about 0.9.
            (entry, similarity), score, served = same, 1.0, True
        else:
            scores = await self.scorer.scores(prompt, [entry.prompt for entry, _ in candidates],
                                              self.priors(prompt, vector, candidates), decision.threshold)
            reachable = [(s, i) for i, s in enumerate(scores) if s is not None]
            if not reachable:  # none could reach the threshold
                return LookupResult(kind="miss")
            score, best = max(reachable, key=lambda r: r[0])
            entry, similarity = candidates[best]
            served = score >= decision.threshold
        if not served or self.store.get(entry.id, count_hit=True) is None:
            return LookupResult(kind="miss")
        return _result("semantic", entry, similarity, score)

    def priors(self, prompt: str, vector: np.ndarray, candidates: list[tuple[_core.Entry, float]]) -> list[float]:
        """Each candidate's ``Combiner.prior`` (what the verifier's score weighs besides the
        cross-encoder): microseconds, on the loop."""
        combiner = self.verifier.combiner if self.verifier else None
        if combiner is None:
            return [0.0] * len(candidates)
        priors = []
        for entry, similarity in candidates:
            stored = self.store.vector(entry.id)
            # None: removed since it was read, and then never served (the store is read
            # again before serving), so any vector does.
            cached = vector if stored is None else np.asarray(stored, dtype=np.float32)
            priors.append(combiner.prior(prompt, entry.prompt, similarity, vector, cached))
        return priors

    def _candidates(self, scope: str, vector: np.ndarray, decision: Decision) -> list[tuple[_core.Entry, float]]:
        """The nearest live entries above min_similarity, nearest first: as many as the
        decision reads (the nearest alone without the verifier). Each is a copy of the
        whole entry out of the store, so no more are read."""
        wanted = 1 if self.scorer is None else VERIFIED
        candidates: list[tuple[_core.Entry, float]] = []
        for entry_id, similarity in self.indexes.search(scope, self.model_id, vector, CANDIDATES):
            if similarity < decision.min_similarity or len(candidates) == wanted:
                break
            entry = self.store.get(entry_id)
            if (entry is not None and entry.model == self.model_id
                    and entry.created_ms >= decision.min_created_ms
                    and not self.feedback.refused(entry_id, vector, similarity)):
                candidates.append((entry, min(similarity, 1.0)))
        return candidates

    async def insert(self, scope: str, prompt: str, response: str, embedding: Embedding,
                      ttl_seconds: int | None, metadata: dict[str, str],
                      generation: tuple[str, int] | None = None) -> StoreResult | None:
        """Stores an entry; with ``generation`` (namespace, value), only if no invalidation
        of that namespace happened since the value was read (then None)."""
        ttl = ttl_seconds or self.config.cache.default_ttl_seconds
        ttl_ms = ttl * 1000 if ttl else None
        # A prompt cut at max_tokens is kept for the exact tier only (no vector).
        vector = embedding.vector.astype("<f4").tobytes() if embedding.whole else b""

        def guarded() -> int | None:
            if generation is None:
                return store()
            with self._generation_lock:
                return store() if self._generation[generation[0]] == generation[1] else None

        def store() -> int:
            try:
                entry_id = self.store.insert(scope, prompt, response, vector,
                                             self.model_id, metadata, ttl_ms)
            except OSError as e:
                raise Unavailable(f"the entry was not stored: {e}") from None
            except ValueError as e:  # larger than a bound, or a vector of another size
                raise InvalidArgument(f"the entry was not stored: {e}") from None
            if embedding.whole:
                self.indexes.added(scope, self.model_id, entry_id, embedding.vector)
            self._apply_removals()  # what the insert replaced or evicted
            return entry_id

        entry_id = await self.embedder.run_sync(guarded)
        if entry_id is None:
            return None
        expires = int(time.time() * 1000) + ttl_ms if ttl_ms else 0
        return StoreResult(entry_id=entry_id, expires_unix_ms=expires,
                           embedding_model=self.model_id)

    def _apply_removals(self) -> None:
        for scope, entry_id, model, _reason in self.store.take_removed():
            self.indexes.removed(scope, model, entry_id)
            self.feedback.forget(entry_id)


def _result(kind: str, entry: _core.Entry, similarity: float, verifier_score: float) -> LookupResult:
    return LookupResult(
        kind=kind,  # type: ignore[arg-type]
        response=entry.response, similarity=similarity, verifier_score=verifier_score,
        entry_id=entry.id,
        matched_prompt=entry.prompt, metadata=entry.metadata,  # a new dict at each read
        created_unix_ms=entry.created_ms, expires_unix_ms=entry.expires_ms or 0,
    )


def _warn_unreachable(config: Config, calibration: Calibration, knob: str) -> None:
    """A target the calibration never reached serves (almost) no semantic hit: say so."""
    if not calibration.curves.get(knob):
        return  # measuring a new calibration
    targets = {"cache.target_precision": config.cache.target_precision}
    targets |= {f"namespaces.{n}.target_precision": s.target_precision
                for n, s in config.namespaces.items() if s.target_precision}
    for key, target in targets.items():
        point = calibration.setting(knob, target)
        if target > 0 and (point.precision < target or point.served < verification.MIN_SERVED):
            reachable = [p for p in calibration.curves[knob] if p.served >= verification.MIN_SERVED]
            best = max((p.precision for p in reachable), default=0.0)
            log.warning("%s = %.2f is above what the %s reached on its calibration data (%.2f at most): "
                        "semantic hits will be rare (expected recall %.4f); lower it to trade precision "
                        "for hits (see `semcached eval-quality`)", key, target, knob, best, point.recall)


def _same_question(prompt: str, candidates: list[tuple[_core.Entry, float]]) -> tuple[_core.Entry, float] | None:
    asked = _core.normalize(prompt)
    return next((c for c in candidates if _core.normalize(c[0].prompt) == asked), None)


def _namespace_of(scope: str) -> str:
    return scope.split(PARTITION_SEPARATOR, 1)[0]
