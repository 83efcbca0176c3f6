"""SemanticCache servicer: translates proto <-> engine calls, and errors into statuses."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError

from semcached import validation
from semcached.accounting import Accounting, Context
from semcached.budgets import Who
from semcached.completion import CacheControls, Completions
from semcached.engine import Engine
from semcached.errors import FailedPrecondition, InvalidArgument, SemcachedError
from semcached.ledger import GROUPS, Report, ReportRow, now_ms
from semcached.providers import Request
from semcached.results import CompletionResult, LookupResult
from semcached.v1 import semcached_pb2 as pb
from semcached.v1 import semcached_pb2_grpc as pb_grpc

log = logging.getLogger("semcached.server")

KIND_TO_PROTO = {"exact": pb.HIT_KIND_EXACT, "semantic": pb.HIT_KIND_SEMANTIC, "miss": pb.HIT_KIND_MISS}

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Handler = Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]]


class _Undecodable:
    """Stands in for a request whose bytes did not parse (invalid UTF-8 in a string field,
    a truncated message), so the handler can answer INVALID_ARGUMENT instead of gRPC's
    opaque UNKNOWN."""

    def __init__(self, error: DecodeError) -> None:
        self.error = error


def _lenient(parse: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError as e:
            return _Undecodable(e)

    return deserialize


def register(servicer: SemanticCacheServicer, server: grpc.aio.Server) -> None:
    """Adds the service to a server, with every method's request parsed leniently."""
    service = pb.DESCRIPTOR.services_by_name["SemanticCache"]
    handlers = {
        method.name: (grpc.unary_stream_rpc_method_handler if method.server_streaming
                      else grpc.unary_unary_rpc_method_handler)(
            getattr(servicer, method.name),
            request_deserializer=_lenient(getattr(pb, method.input_type.name).FromString),
            response_serializer=getattr(pb, method.output_type.name).SerializeToString,
        )
        for method in service.methods
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))


def _statuses(handler: Handler[Req, Resp]) -> Handler[Req, Resp]:
    """Engine errors become their gRPC status; anything else is INTERNAL, logged once."""

    @functools.wraps(handler)
    async def wrapper(self: Any, request: Req, context: grpc.aio.ServicerContext) -> Resp:
        if isinstance(request, _Undecodable):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"the request is not a valid {handler.__name__}Request: {request.error}")
        try:
            return await handler(self, request, context)
        except SemcachedError as e:
            await context.abort(e.code, e.message)
        except Exception:
            log.exception("%s failed", handler.__name__)
            await context.abort(grpc.StatusCode.INTERNAL,
                                f"{handler.__name__} failed inside the server; see its log")
        raise AssertionError("context.abort returns only by raising")

    return wrapper


def _match(result: LookupResult) -> pb.Match | None:
    if not result.hit:
        return None
    return pb.Match(entry_id=result.entry_id, matched_prompt=result.matched_prompt,
                    similarity=result.similarity, verifier_score=result.verifier_score,
                    metadata=result.metadata or None,  # filling a map field costs microseconds even empty
                    created_unix_ms=result.created_unix_ms,
                    expires_unix_ms=result.expires_unix_ms)


def _optional(message: Any, field: str) -> Any:
    return getattr(message, field) if message.HasField(field) else None


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def _completion(request: pb.CompleteRequest) -> tuple[Request, CacheControls]:
    upstream = Request(
        messages=[(m.role, m.content) for m in request.messages],
        temperature=_optional(request, "temperature"), top_p=_optional(request, "top_p"),
        max_tokens=_optional(request, "max_tokens"),
        tools=validation.json_field("tools_json", request.tools_json, list),
        response_format=validation.json_field("response_format_json", request.response_format_json, dict),
    )
    controls = CacheControls(
        no_cache=request.no_cache, no_store=request.no_store,
        ttl_seconds=_optional(request, "ttl_seconds"), max_age_seconds=_optional(request, "max_age_seconds"),
        min_similarity=_optional(request, "min_similarity"),
        target_precision=_optional(request, "target_precision"),
        cache_high_temperature=request.cache_high_temperature,
    )
    return upstream, controls


def _complete_response(result: CompletionResult) -> pb.CompleteResponse:
    match = None
    if result.hit:
        match = pb.Match(entry_id=result.entry_id, matched_prompt=result.matched_prompt,
                         similarity=result.similarity, verifier_score=result.verifier_score,
                         metadata=result.metadata, created_unix_ms=result.created_unix_ms,
                         expires_unix_ms=result.expires_unix_ms)
    usage = pb.Usage(prompt_tokens=result.usage.prompt_tokens,
                     completion_tokens=result.usage.completion_tokens,
                     total_tokens=result.usage.total_tokens)
    return pb.CompleteResponse(text=result.text, kind=KIND_TO_PROTO[result.kind], model=result.model,
                               usage=usage, match=match, finish_reason=result.finish_reason,
                               tier=result.tier, route_reason=result.route_reason,
                               attempts=result.attempts)


class SemanticCacheServicer(pb_grpc.SemanticCacheServicer):
    def __init__(self, engine: Engine, completions: Completions, accounting: Accounting) -> None:
        self.engine = engine
        self.completions = completions
        self.accounting = accounting

    @_statuses
    async def Lookup(self, request: pb.LookupRequest, context: grpc.aio.ServicerContext) -> pb.LookupResponse:
        ctx = Context(validation.namespace(request.namespace), _who(request), time.perf_counter())
        result = await self.engine.lookup(ctx.namespace, request.prompt,
                                          _optional(request, "min_similarity"),
                                          _optional(request, "target_precision"))
        self.accounting.looked_up(ctx, result)
        if self.accounting.metrics is not None:
            self.accounting.metrics.latency.labels("lookup").observe(time.perf_counter() - ctx.started)
        return pb.LookupResponse(kind=KIND_TO_PROTO[result.kind], response=result.response,
                                 match=_match(result))

    @_statuses
    async def Store(self, request: pb.StoreRequest, context: grpc.aio.ServicerContext) -> pb.StoreResponse:
        result = await self.engine.store_entry(
            request.namespace, request.prompt, request.response,
            _optional(request, "ttl_seconds"), dict(request.metadata))
        return pb.StoreResponse(entry_id=result.entry_id, expires_unix_ms=result.expires_unix_ms,
                                embedding_model=result.embedding_model)

    @_statuses
    async def Complete(self, request: pb.CompleteRequest, context: grpc.aio.ServicerContext) -> pb.CompleteResponse:
        upstream, controls = _completion(request)
        result = await self.completions.complete(request.namespace, upstream, model=request.model,
                                                 tier=request.tier, controls=controls, who=_who(request),
                                                 deadline=_deadline(context))
        return _complete_response(result)

    async def CompleteStream(self, request: pb.CompleteRequest,
                             context: grpc.aio.ServicerContext) -> AsyncIterator[pb.CompleteChunk]:
        if isinstance(request, _Undecodable):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"the request is not a valid CompleteRequest: {request.error}")
        try:
            upstream, controls = _completion(request)
            pieces = self.completions.stream(request.namespace, upstream, model=request.model,
                                             tier=request.tier, controls=controls, who=_who(request),
                                             deadline=_deadline(context))
            async with contextlib.aclosing(pieces):  # closed at once when the client goes away
                async for piece in pieces:
                    if isinstance(piece, str):
                        yield pb.CompleteChunk(delta=piece)
                    else:
                        yield pb.CompleteChunk(done=_complete_response(piece))
        except SemcachedError as e:
            await context.abort(e.code, e.message)
        except Exception:
            log.exception("CompleteStream failed")
            await context.abort(grpc.StatusCode.INTERNAL, "CompleteStream failed inside the server; see its log")

    @_statuses
    async def Invalidate(self, request: pb.InvalidateRequest, context: grpc.aio.ServicerContext) -> pb.InvalidateResponse:
        target = request.WhichOneof("target")
        if target == "all" and not request.all:
            raise InvalidArgument("invalidate needs exactly one of entry_id, prompt, all; all=false selects nothing")
        removed = await self.engine.invalidate(
            request.namespace,
            entry_id=request.entry_id if target == "entry_id" else None,
            prompt=request.prompt if target == "prompt" else None,
            all=target == "all",
        )
        return pb.InvalidateResponse(removed=removed)

    @_statuses
    async def Stats(self, request: pb.StatsRequest, context: grpc.aio.ServicerContext) -> pb.StatsResponse:
        s = await self.engine.stats()
        return pb.StatsResponse(
            entries=s.entries, max_entries=s.max_entries, exact_hits=s.exact_hits,
            semantic_hits=s.semantic_hits, misses=s.misses, stores=s.stores,
            evictions=s.evictions, expirations=s.expirations, invalidations=s.invalidations,
            upstream_calls=s.upstream_calls, upstream_errors=s.upstream_errors,
            embedding_model=s.embedding_model, bytes=s.bytes, max_bytes=s.max_bytes,
            namespaces={k: pb.NamespaceStats(entries=v.entries, bytes=v.bytes,
                                             target_precision=v.target_precision,
                                             expected_recall=v.expected_recall,
                                             feedback_right=v.feedback_right,
                                             feedback_wrong=v.feedback_wrong)
                        for k, v in s.namespaces.items()},
            feedback_right=s.feedback_right, feedback_wrong=s.feedback_wrong, verifier=s.verifier,
            embedding_cache_hits=s.embedding_cache_hits, embedding_cache_misses=s.embedding_cache_misses,
        )

    @_statuses
    async def Feedback(self, request: pb.FeedbackRequest, context: grpc.aio.ServicerContext) -> pb.FeedbackResponse:
        r = await self.engine.record_feedback(request.namespace, request.entry_id, request.correct,
                                              request.prompt or None)
        if self.accounting.metrics is not None:
            self.accounting.metrics.feedback.labels(str(request.correct).lower()).inc()
        return pb.FeedbackResponse(right=r.right, wrong=r.wrong, removed=r.removed,
                                   target_precision=r.target_precision)

    @_statuses
    async def Report(self, request: pb.ReportRequest, context: grpc.aio.ServicerContext) -> pb.ReportResponse:
        ledger = self.accounting.ledger
        if ledger is None:
            raise FailedPrecondition("the ledger is off (ledger.enabled = false)")
        if request.by not in GROUPS:
            raise InvalidArgument(f"by must be one of {', '.join(GROUPS)}, got {request.by!r}")
        if not 0 <= request.since_seconds <= validation.MAX_TTL_SECONDS:
            raise InvalidArgument(f"since_seconds must be between 0 and {validation.MAX_TTL_SECONDS}, "
                                  f"got {request.since_seconds}")
        since = now_ms() - request.since_seconds * 1000 if request.since_seconds else 0

        def report() -> Report:
            ledger.flush()  # the rows still queued belong in the report
            return ledger.store.report(request.by, since, request.top)

        result = await asyncio.get_running_loop().run_in_executor(None, report)
        return pb.ReportResponse(by=result.by, rows=[_report_row(r) for r in result.rows],
                                 total=_report_row(result.total))


def _who(request: pb.CompleteRequest | pb.LookupRequest) -> Who:
    return _checked_who(request.user, request.feature, request.tenant)


@functools.lru_cache(maxsize=4096)
def _checked_who(user: str, feature: str, tenant: str) -> Who:
    # Most requests name the same few users and features: check and build each once.
    return Who(*validation.who(user, feature, tenant))


def _report_row(r: ReportRow) -> pb.ReportRow:
    return pb.ReportRow(key=r.key, requests=r.requests, exact_hits=r.exact_hits,
                        semantic_hits=r.semantic_hits, misses=r.misses, hit_rate=r.hit_rate,
                        spend_usd=r.spend_usd, savings_usd=r.savings_usd, savings_pct=r.savings_pct,
                        unknown_cost=r.unknown_cost)
