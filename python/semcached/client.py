"""Python clients: ``Client`` (blocking) and ``AsyncClient`` (asyncio), over gRPC.

Both check their inputs before sending with the server's own rules (semcached.validation),
so a bad argument raises the same exception with the same status code on either side, and
both turn gRPC errors into the exceptions of semcached.errors.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from typing import Any, TypedDict, Unpack

import grpc

from semcached import validation
from semcached.errors import InvalidArgument, SemcachedError, from_status
from semcached.ledger import GROUPS, Report, ReportRow
from semcached.results import (
    CompletionResult,
    FeedbackResult,
    HitKind,
    LookupResult,
    NamespaceStats,
    Stats,
    StoreResult,
    Usage,
)
from semcached.v1 import semcached_pb2 as pb
from semcached.v1 import semcached_pb2_grpc as pb_grpc

DEFAULT_TARGET = "127.0.0.1:50051"
_KIND: dict[int, HitKind] = {pb.HIT_KIND_EXACT: "exact", pb.HIT_KIND_SEMANTIC: "semantic",
                             pb.HIT_KIND_MISS: "miss"}
Messages = Iterable[Mapping[str, str]]


class CompleteOptions(TypedDict, total=False):
    """Keyword arguments of complete and complete_stream (all optional)."""

    model: str  # "<provider>/<model>"; or
    tier: str  # a configured tier; neither: the classifier picks
    user: str  # who asked, for which feature and tenant (ledger, budgets)
    feature: str
    tenant: str
    temperature: float
    top_p: float
    max_tokens: int
    tools: list[dict[str, Any]]
    response_format: dict[str, Any]
    no_cache: bool
    no_store: bool
    ttl_seconds: int
    max_age_seconds: int
    min_similarity: float
    target_precision: float
    cache_high_temperature: bool


_OPTION_DEFAULTS: dict[str, Any] = {
    "model": "", "tier": "", "user": "", "feature": "", "tenant": "", "temperature": None, "top_p": None,
    "max_tokens": None, "tools": None, "response_format": None, "no_cache": False, "no_store": False,
    "ttl_seconds": None, "max_age_seconds": None, "min_similarity": None, "target_precision": None,
    "cache_high_temperature": False,
}


def _options(given: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(given) - set(_OPTION_DEFAULTS)
    if unknown:
        raise InvalidArgument(f"unknown option(s) {', '.join(sorted(unknown))}; "
                              f"known: {', '.join(_OPTION_DEFAULTS)}")
    return {**_OPTION_DEFAULTS, **given}


# -- requests: validated here, with the server's rules --------------------------------

def _lookup_request(namespace: str, prompt: str, min_similarity: float | None,
                    target_precision: float | None, who: Mapping[str, str]) -> pb.LookupRequest:
    validation.text("prompt", prompt)
    validation.who(who["user"], who["feature"], who["tenant"])
    return pb.LookupRequest(namespace=validation.namespace(namespace), prompt=prompt,
                            min_similarity=validation.min_similarity(min_similarity),
                            target_precision=validation.target_precision(target_precision), **who)


def _report_request(by: str, since_seconds: int, top: int) -> pb.ReportRequest:
    if by not in GROUPS:
        raise InvalidArgument(f"by must be one of {', '.join(GROUPS)}, got {by!r}")
    if since_seconds < 0 or top < 0:
        raise InvalidArgument("since_seconds and top must not be negative")
    return pb.ReportRequest(by=by, since_seconds=since_seconds, top=top)


def _report(r: pb.ReportResponse, since_seconds: int) -> Report:
    def row(x: pb.ReportRow) -> ReportRow:
        return ReportRow(x.key, x.requests, x.exact_hits, x.semantic_hits, x.misses, x.spend_usd,
                         x.savings_usd, x.unknown_cost)

    return Report(r.by, since_seconds, [row(x) for x in r.rows], row(r.total))


def _store_request(namespace: str, prompt: str, response: str, ttl_seconds: int | None,
                   metadata: Mapping[str, str] | None) -> pb.StoreRequest:
    validation.text("prompt", prompt)
    validation.text("response", response)
    return pb.StoreRequest(namespace=validation.namespace(namespace), prompt=prompt,
                           response=response, ttl_seconds=validation.ttl_seconds(ttl_seconds),
                           metadata=validation.metadata(metadata or {}))


def _complete_request(namespace: str, messages: Messages, options: dict[str, Any]) -> pb.CompleteRequest:
    """``options``: the keyword arguments of Client.complete besides messages and namespace."""
    pairs = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
            raise InvalidArgument(f"messages[{i}] must be a mapping with 'role' and 'content'")
        pairs.append((m["role"], m["content"]))
    validation.messages(pairs)
    o = dict(options)
    validation.sampling(o["temperature"], o["top_p"], o["max_tokens"])
    validation.who(o["user"], o["feature"], o["tenant"])
    if o["model"] and o["tier"]:
        raise InvalidArgument("name a model or a tier, not both")
    tools, response_format = o.pop("tools"), o.pop("response_format")
    return pb.CompleteRequest(
        namespace=validation.namespace(namespace),
        messages=[pb.Message(role=r, content=c) for r, c in pairs],
        tools_json=json.dumps(tools) if tools is not None else "",
        response_format_json=json.dumps(response_format) if response_format is not None else "",
        **{**o, "min_similarity": validation.min_similarity(o["min_similarity"]),
           "ttl_seconds": validation.ttl_seconds(o["ttl_seconds"]),
           "max_age_seconds": validation.max_age_seconds(o["max_age_seconds"]),
           "target_precision": validation.target_precision(o["target_precision"])})


def _feedback_request(namespace: str, entry_id: int, correct: bool, prompt: str | None) -> pb.FeedbackRequest:
    if entry_id <= 0:
        raise InvalidArgument(f"entry_id must be positive, got {entry_id}")
    if prompt:
        validation.text("prompt", prompt)
    elif not correct:
        raise InvalidArgument("wrong feedback needs the prompt the hit was served for")
    return pb.FeedbackRequest(namespace=validation.namespace(namespace), entry_id=entry_id,
                              prompt=prompt or "", correct=correct)


def _invalidate_request(namespace: str, entry_id: int | None, prompt: str | None,
                        all: bool) -> pb.InvalidateRequest:
    if sum((entry_id is not None, prompt is not None, all)) != 1:
        raise InvalidArgument("invalidate needs exactly one of entry_id, prompt, all")
    if prompt is not None:
        validation.text("prompt", prompt)
    if entry_id is not None and entry_id <= 0:
        raise InvalidArgument(f"entry_id must be positive, got {entry_id}")
    return pb.InvalidateRequest(namespace=validation.namespace(namespace), entry_id=entry_id,
                                prompt=prompt, all=all or None)


# -- responses --------------------------------------------------------------------------

def _lookup_result(r: pb.LookupResponse) -> LookupResult:
    m = r.match
    return LookupResult(kind=_KIND.get(r.kind, "miss"), response=r.response,
                        similarity=m.similarity, verifier_score=m.verifier_score, entry_id=m.entry_id,
                        matched_prompt=m.matched_prompt, metadata=dict(m.metadata),
                        created_unix_ms=m.created_unix_ms, expires_unix_ms=m.expires_unix_ms)


def _store_result(r: pb.StoreResponse) -> StoreResult:
    return StoreResult(entry_id=r.entry_id, expires_unix_ms=r.expires_unix_ms,
                       embedding_model=r.embedding_model)


def _completion_result(r: pb.CompleteResponse) -> CompletionResult:
    return CompletionResult(
        text=r.text, kind=_KIND.get(r.kind, "miss"), model=r.model,
        usage=Usage(r.usage.prompt_tokens, r.usage.completion_tokens),
        finish_reason=r.finish_reason, similarity=r.match.similarity,
        entry_id=r.match.entry_id, matched_prompt=r.match.matched_prompt,
        verifier_score=r.match.verifier_score, tier=r.tier, route_reason=r.route_reason,
        attempts=r.attempts, metadata=dict(r.match.metadata), created_unix_ms=r.match.created_unix_ms,
        expires_unix_ms=r.match.expires_unix_ms)


def _feedback_result(r: pb.FeedbackResponse) -> FeedbackResult:
    return FeedbackResult(right=r.right, wrong=r.wrong, removed=r.removed,
                          target_precision=r.target_precision)


def _stats(r: pb.StatsResponse) -> Stats:
    return Stats(
        entries=r.entries, max_entries=r.max_entries, exact_hits=r.exact_hits,
        semantic_hits=r.semantic_hits, misses=r.misses, stores=r.stores, evictions=r.evictions,
        expirations=r.expirations, invalidations=r.invalidations,
        upstream_calls=r.upstream_calls, upstream_errors=r.upstream_errors,
        embedding_model=r.embedding_model, bytes=r.bytes, max_bytes=r.max_bytes,
        namespaces={k: NamespaceStats(v.entries, v.bytes, v.target_precision, v.expected_recall,
                                      v.feedback_right, v.feedback_wrong)
                    for k, v in r.namespaces.items()},
        feedback_right=r.feedback_right, feedback_wrong=r.feedback_wrong, verifier=r.verifier,
        embedding_cache_hits=r.embedding_cache_hits, embedding_cache_misses=r.embedding_cache_misses)


def _error(e: grpc.RpcError) -> SemcachedError:
    return from_status(e.code(), e.details() or "")


class Client:
    """Blocking client. ``timeout`` (seconds) is each call's gRPC deadline."""

    def __init__(self, target: str = DEFAULT_TARGET, *, namespace: str = "",
                 timeout: float | None = 30.0) -> None:
        self.namespace = validation.namespace(namespace)
        self.timeout = timeout
        self._channel = grpc.insecure_channel(target)
        self._stub = pb_grpc.SemanticCacheStub(self._channel)

    def _call(self, method: Any, request: Any) -> Any:
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as e:
            raise _error(e) from None

    def lookup(self, prompt: str, *, namespace: str | None = None,
               min_similarity: float | None = None, target_precision: float | None = None,
               user: str = "", feature: str = "", tenant: str = "") -> LookupResult:
        request = _lookup_request(namespace or self.namespace, prompt, min_similarity, target_precision,
                                  {"user": user, "feature": feature, "tenant": tenant})
        return _lookup_result(self._call(self._stub.Lookup, request))

    def store(self, prompt: str, response: str, *, ttl_seconds: int | None = None,
              metadata: Mapping[str, str] | None = None,
              namespace: str | None = None) -> StoreResult:
        request = _store_request(namespace or self.namespace, prompt, response, ttl_seconds, metadata)
        return _store_result(self._call(self._stub.Store, request))

    def complete(self, messages: Messages, *, namespace: str | None = None,
                 **options: Unpack[CompleteOptions]) -> CompletionResult:
        """An answer from the cache or the routed model; see CompleteOptions."""
        request = _complete_request(namespace or self.namespace, messages, _options(options))
        return _completion_result(self._call(self._stub.Complete, request))

    def complete_stream(self, messages: Messages, *, namespace: str | None = None,
                        **options: Unpack[CompleteOptions]) -> Iterator[str | CompletionResult]:
        """Text pieces as they arrive, then the CompletionResult. Stop iterating (or
        close the generator) to cancel the call and the upstream request."""
        request = _complete_request(namespace or self.namespace, messages, _options(options))
        call = self._stub.CompleteStream(request, timeout=self.timeout)
        try:
            for chunk in call:
                yield _completion_result(chunk.done) if chunk.HasField("done") else chunk.delta
        except grpc.RpcError as e:
            raise _error(e) from None
        finally:
            call.cancel()

    def invalidate(self, *, entry_id: int | None = None, prompt: str | None = None,
                   all: bool = False, namespace: str | None = None) -> int:
        request = _invalidate_request(namespace or self.namespace, entry_id, prompt, all)
        return int(self._call(self._stub.Invalidate, request).removed)

    def feedback(self, entry_id: int, *, correct: bool, prompt: str | None = None,
                 namespace: str | None = None) -> FeedbackResult:
        """Reports whether the hit that served ``entry_id`` for ``prompt`` was right."""
        request = _feedback_request(namespace or self.namespace, entry_id, correct, prompt)
        return _feedback_result(self._call(self._stub.Feedback, request))

    def stats(self) -> Stats:
        return _stats(self._call(self._stub.Stats, pb.StatsRequest()))

    def report(self, by: str = "user", *, since_seconds: int = 0, top: int = 0) -> Report:
        """Requests, hits, spend and savings from the ledger, per ``by`` group."""
        request = _report_request(by, since_seconds, top)
        return _report(self._call(self._stub.Report, request), since_seconds)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient:
    """asyncio client with the same methods as ``Client``, as coroutines."""

    def __init__(self, target: str = DEFAULT_TARGET, *, namespace: str = "",
                 timeout: float | None = 30.0) -> None:
        self.namespace = validation.namespace(namespace)
        self.timeout = timeout
        self._channel = grpc.aio.insecure_channel(target)
        self._stub = pb_grpc.SemanticCacheStub(self._channel)

    async def _call(self, method: Any, request: Any) -> Any:
        try:
            return await method(request, timeout=self.timeout)
        except grpc.RpcError as e:
            raise _error(e) from None

    async def lookup(self, prompt: str, *, namespace: str | None = None,
                     min_similarity: float | None = None, target_precision: float | None = None,
                     user: str = "", feature: str = "", tenant: str = "") -> LookupResult:
        request = _lookup_request(namespace or self.namespace, prompt, min_similarity, target_precision,
                                  {"user": user, "feature": feature, "tenant": tenant})
        return _lookup_result(await self._call(self._stub.Lookup, request))

    async def store(self, prompt: str, response: str, *, ttl_seconds: int | None = None,
                    metadata: Mapping[str, str] | None = None,
                    namespace: str | None = None) -> StoreResult:
        request = _store_request(namespace or self.namespace, prompt, response, ttl_seconds, metadata)
        return _store_result(await self._call(self._stub.Store, request))

    async def complete(self, messages: Messages, *, namespace: str | None = None,
                       **options: Unpack[CompleteOptions]) -> CompletionResult:
        request = _complete_request(namespace or self.namespace, messages, _options(options))
        return _completion_result(await self._call(self._stub.Complete, request))

    async def complete_stream(self, messages: Messages, *, namespace: str | None = None,
                              **options: Unpack[CompleteOptions]) -> AsyncIterator[str | CompletionResult]:
        request = _complete_request(namespace or self.namespace, messages, _options(options))
        call = self._stub.CompleteStream(request, timeout=self.timeout)
        try:
            async for chunk in call:
                yield _completion_result(chunk.done) if chunk.HasField("done") else chunk.delta
        except grpc.RpcError as e:
            raise _error(e) from None
        finally:
            call.cancel()

    async def invalidate(self, *, entry_id: int | None = None, prompt: str | None = None,
                         all: bool = False, namespace: str | None = None) -> int:
        request = _invalidate_request(namespace or self.namespace, entry_id, prompt, all)
        return int((await self._call(self._stub.Invalidate, request)).removed)

    async def feedback(self, entry_id: int, *, correct: bool, prompt: str | None = None,
                       namespace: str | None = None) -> FeedbackResult:
        request = _feedback_request(namespace or self.namespace, entry_id, correct, prompt)
        return _feedback_result(await self._call(self._stub.Feedback, request))

    async def stats(self) -> Stats:
        return _stats(await self._call(self._stub.Stats, pb.StatsRequest()))

    async def report(self, by: str = "user", *, since_seconds: int = 0, top: int = 0) -> Report:
        request = _report_request(by, since_seconds, top)
        return _report(await self._call(self._stub.Report, request), since_seconds)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
