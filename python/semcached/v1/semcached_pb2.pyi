from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HitKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HIT_KIND_UNSPECIFIED: _ClassVar[HitKind]
    HIT_KIND_MISS: _ClassVar[HitKind]
    HIT_KIND_EXACT: _ClassVar[HitKind]
    HIT_KIND_SEMANTIC: _ClassVar[HitKind]
HIT_KIND_UNSPECIFIED: HitKind
HIT_KIND_MISS: HitKind
HIT_KIND_EXACT: HitKind
HIT_KIND_SEMANTIC: HitKind

class Match(_message.Message):
    __slots__ = ("entry_id", "matched_prompt", "similarity", "verifier_score", "metadata", "created_unix_ms", "expires_unix_ms")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    MATCHED_PROMPT_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    VERIFIER_SCORE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    entry_id: int
    matched_prompt: str
    similarity: float
    verifier_score: float
    metadata: _containers.ScalarMap[str, str]
    created_unix_ms: int
    expires_unix_ms: int
    def __init__(self, entry_id: _Optional[int] = ..., matched_prompt: _Optional[str] = ..., similarity: _Optional[float] = ..., verifier_score: _Optional[float] = ..., metadata: _Optional[_Mapping[str, str]] = ..., created_unix_ms: _Optional[int] = ..., expires_unix_ms: _Optional[int] = ...) -> None: ...

class LookupRequest(_message.Message):
    __slots__ = ("namespace", "prompt", "min_similarity", "target_precision", "user", "feature", "tenant")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    MIN_SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    TARGET_PRECISION_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    prompt: str
    min_similarity: float
    target_precision: float
    user: str
    feature: str
    tenant: str
    def __init__(self, namespace: _Optional[str] = ..., prompt: _Optional[str] = ..., min_similarity: _Optional[float] = ..., target_precision: _Optional[float] = ..., user: _Optional[str] = ..., feature: _Optional[str] = ..., tenant: _Optional[str] = ...) -> None: ...

class LookupResponse(_message.Message):
    __slots__ = ("kind", "response", "match")
    KIND_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    MATCH_FIELD_NUMBER: _ClassVar[int]
    kind: HitKind
    response: str
    match: Match
    def __init__(self, kind: _Optional[_Union[HitKind, str]] = ..., response: _Optional[str] = ..., match: _Optional[_Union[Match, _Mapping]] = ...) -> None: ...

class StoreRequest(_message.Message):
    __slots__ = ("namespace", "prompt", "response", "ttl_seconds", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    prompt: str
    response: str
    ttl_seconds: int
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, namespace: _Optional[str] = ..., prompt: _Optional[str] = ..., response: _Optional[str] = ..., ttl_seconds: _Optional[int] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class StoreResponse(_message.Message):
    __slots__ = ("entry_id", "expires_unix_ms", "embedding_model")
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_MODEL_FIELD_NUMBER: _ClassVar[int]
    entry_id: int
    expires_unix_ms: int
    embedding_model: str
    def __init__(self, entry_id: _Optional[int] = ..., expires_unix_ms: _Optional[int] = ..., embedding_model: _Optional[str] = ...) -> None: ...

class Message(_message.Message):
    __slots__ = ("role", "content")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    role: str
    content: str
    def __init__(self, role: _Optional[str] = ..., content: _Optional[str] = ...) -> None: ...

class CompleteRequest(_message.Message):
    __slots__ = ("namespace", "messages", "model", "user", "feature", "min_similarity", "ttl_seconds", "target_precision", "tier", "temperature", "top_p", "max_tokens", "tools_json", "response_format_json", "no_cache", "no_store", "max_age_seconds", "cache_high_temperature", "tenant")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    MIN_SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TARGET_PRECISION_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOOLS_JSON_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FORMAT_JSON_FIELD_NUMBER: _ClassVar[int]
    NO_CACHE_FIELD_NUMBER: _ClassVar[int]
    NO_STORE_FIELD_NUMBER: _ClassVar[int]
    MAX_AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CACHE_HIGH_TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    messages: _containers.RepeatedCompositeFieldContainer[Message]
    model: str
    user: str
    feature: str
    min_similarity: float
    ttl_seconds: int
    target_precision: float
    tier: str
    temperature: float
    top_p: float
    max_tokens: int
    tools_json: str
    response_format_json: str
    no_cache: bool
    no_store: bool
    max_age_seconds: int
    cache_high_temperature: bool
    tenant: str
    def __init__(self, namespace: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[Message, _Mapping]]] = ..., model: _Optional[str] = ..., user: _Optional[str] = ..., feature: _Optional[str] = ..., min_similarity: _Optional[float] = ..., ttl_seconds: _Optional[int] = ..., target_precision: _Optional[float] = ..., tier: _Optional[str] = ..., temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., max_tokens: _Optional[int] = ..., tools_json: _Optional[str] = ..., response_format_json: _Optional[str] = ..., no_cache: _Optional[bool] = ..., no_store: _Optional[bool] = ..., max_age_seconds: _Optional[int] = ..., cache_high_temperature: _Optional[bool] = ..., tenant: _Optional[str] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("prompt_tokens", "completion_tokens", "total_tokens")
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    def __init__(self, prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., total_tokens: _Optional[int] = ...) -> None: ...

class CompleteResponse(_message.Message):
    __slots__ = ("text", "kind", "model", "usage", "match", "finish_reason", "tier", "route_reason", "attempts")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    MATCH_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    ROUTE_REASON_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    text: str
    kind: HitKind
    model: str
    usage: Usage
    match: Match
    finish_reason: str
    tier: str
    route_reason: str
    attempts: int
    def __init__(self, text: _Optional[str] = ..., kind: _Optional[_Union[HitKind, str]] = ..., model: _Optional[str] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., match: _Optional[_Union[Match, _Mapping]] = ..., finish_reason: _Optional[str] = ..., tier: _Optional[str] = ..., route_reason: _Optional[str] = ..., attempts: _Optional[int] = ...) -> None: ...

class CompleteChunk(_message.Message):
    __slots__ = ("delta", "done")
    DELTA_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    delta: str
    done: CompleteResponse
    def __init__(self, delta: _Optional[str] = ..., done: _Optional[_Union[CompleteResponse, _Mapping]] = ...) -> None: ...

class InvalidateRequest(_message.Message):
    __slots__ = ("namespace", "entry_id", "prompt", "all")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    entry_id: int
    prompt: str
    all: bool
    def __init__(self, namespace: _Optional[str] = ..., entry_id: _Optional[int] = ..., prompt: _Optional[str] = ..., all: _Optional[bool] = ...) -> None: ...

class InvalidateResponse(_message.Message):
    __slots__ = ("removed",)
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    removed: int
    def __init__(self, removed: _Optional[int] = ...) -> None: ...

class FeedbackRequest(_message.Message):
    __slots__ = ("namespace", "entry_id", "prompt", "correct")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    CORRECT_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    entry_id: int
    prompt: str
    correct: bool
    def __init__(self, namespace: _Optional[str] = ..., entry_id: _Optional[int] = ..., prompt: _Optional[str] = ..., correct: _Optional[bool] = ...) -> None: ...

class FeedbackResponse(_message.Message):
    __slots__ = ("right", "wrong", "removed", "target_precision")
    RIGHT_FIELD_NUMBER: _ClassVar[int]
    WRONG_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    TARGET_PRECISION_FIELD_NUMBER: _ClassVar[int]
    right: int
    wrong: int
    removed: bool
    target_precision: float
    def __init__(self, right: _Optional[int] = ..., wrong: _Optional[int] = ..., removed: _Optional[bool] = ..., target_precision: _Optional[float] = ...) -> None: ...

class ReportRequest(_message.Message):
    __slots__ = ("by", "since_seconds", "top")
    BY_FIELD_NUMBER: _ClassVar[int]
    SINCE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TOP_FIELD_NUMBER: _ClassVar[int]
    by: str
    since_seconds: int
    top: int
    def __init__(self, by: _Optional[str] = ..., since_seconds: _Optional[int] = ..., top: _Optional[int] = ...) -> None: ...

class ReportRow(_message.Message):
    __slots__ = ("key", "requests", "exact_hits", "semantic_hits", "misses", "hit_rate", "spend_usd", "savings_usd", "savings_pct", "unknown_cost")
    KEY_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    EXACT_HITS_FIELD_NUMBER: _ClassVar[int]
    SEMANTIC_HITS_FIELD_NUMBER: _ClassVar[int]
    MISSES_FIELD_NUMBER: _ClassVar[int]
    HIT_RATE_FIELD_NUMBER: _ClassVar[int]
    SPEND_USD_FIELD_NUMBER: _ClassVar[int]
    SAVINGS_USD_FIELD_NUMBER: _ClassVar[int]
    SAVINGS_PCT_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_COST_FIELD_NUMBER: _ClassVar[int]
    key: str
    requests: int
    exact_hits: int
    semantic_hits: int
    misses: int
    hit_rate: float
    spend_usd: float
    savings_usd: float
    savings_pct: float
    unknown_cost: int
    def __init__(self, key: _Optional[str] = ..., requests: _Optional[int] = ..., exact_hits: _Optional[int] = ..., semantic_hits: _Optional[int] = ..., misses: _Optional[int] = ..., hit_rate: _Optional[float] = ..., spend_usd: _Optional[float] = ..., savings_usd: _Optional[float] = ..., savings_pct: _Optional[float] = ..., unknown_cost: _Optional[int] = ...) -> None: ...

class ReportResponse(_message.Message):
    __slots__ = ("by", "rows", "total")
    BY_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    by: str
    rows: _containers.RepeatedCompositeFieldContainer[ReportRow]
    total: ReportRow
    def __init__(self, by: _Optional[str] = ..., rows: _Optional[_Iterable[_Union[ReportRow, _Mapping]]] = ..., total: _Optional[_Union[ReportRow, _Mapping]] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NamespaceStats(_message.Message):
    __slots__ = ("entries", "bytes", "target_precision", "expected_recall", "feedback_right", "feedback_wrong")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    TARGET_PRECISION_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_RECALL_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_RIGHT_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_WRONG_FIELD_NUMBER: _ClassVar[int]
    entries: int
    bytes: int
    target_precision: float
    expected_recall: float
    feedback_right: int
    feedback_wrong: int
    def __init__(self, entries: _Optional[int] = ..., bytes: _Optional[int] = ..., target_precision: _Optional[float] = ..., expected_recall: _Optional[float] = ..., feedback_right: _Optional[int] = ..., feedback_wrong: _Optional[int] = ...) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("entries", "max_entries", "exact_hits", "semantic_hits", "misses", "stores", "evictions", "expirations", "invalidations", "upstream_calls", "upstream_errors", "embedding_model", "namespaces", "bytes", "max_bytes", "feedback_right", "feedback_wrong", "verifier", "embedding_cache_hits", "embedding_cache_misses")
    class NamespacesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: NamespaceStats
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[NamespaceStats, _Mapping]] = ...) -> None: ...
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    MAX_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    EXACT_HITS_FIELD_NUMBER: _ClassVar[int]
    SEMANTIC_HITS_FIELD_NUMBER: _ClassVar[int]
    MISSES_FIELD_NUMBER: _ClassVar[int]
    STORES_FIELD_NUMBER: _ClassVar[int]
    EVICTIONS_FIELD_NUMBER: _ClassVar[int]
    EXPIRATIONS_FIELD_NUMBER: _ClassVar[int]
    INVALIDATIONS_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_CALLS_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_ERRORS_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_MODEL_FIELD_NUMBER: _ClassVar[int]
    NAMESPACES_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_RIGHT_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_WRONG_FIELD_NUMBER: _ClassVar[int]
    VERIFIER_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_CACHE_HITS_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_CACHE_MISSES_FIELD_NUMBER: _ClassVar[int]
    entries: int
    max_entries: int
    exact_hits: int
    semantic_hits: int
    misses: int
    stores: int
    evictions: int
    expirations: int
    invalidations: int
    upstream_calls: int
    upstream_errors: int
    embedding_model: str
    namespaces: _containers.MessageMap[str, NamespaceStats]
    bytes: int
    max_bytes: int
    feedback_right: int
    feedback_wrong: int
    verifier: str
    embedding_cache_hits: int
    embedding_cache_misses: int
    def __init__(self, entries: _Optional[int] = ..., max_entries: _Optional[int] = ..., exact_hits: _Optional[int] = ..., semantic_hits: _Optional[int] = ..., misses: _Optional[int] = ..., stores: _Optional[int] = ..., evictions: _Optional[int] = ..., expirations: _Optional[int] = ..., invalidations: _Optional[int] = ..., upstream_calls: _Optional[int] = ..., upstream_errors: _Optional[int] = ..., embedding_model: _Optional[str] = ..., namespaces: _Optional[_Mapping[str, NamespaceStats]] = ..., bytes: _Optional[int] = ..., max_bytes: _Optional[int] = ..., feedback_right: _Optional[int] = ..., feedback_wrong: _Optional[int] = ..., verifier: _Optional[str] = ..., embedding_cache_hits: _Optional[int] = ..., embedding_cache_misses: _Optional[int] = ...) -> None: ...
