"""Typed results, shared by the engine (in-process use) and the clients (over gRPC)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

HitKind = Literal["exact", "semantic", "miss"]


@dataclass(frozen=True)
class LookupResult:
    kind: HitKind
    response: str = ""
    similarity: float = 0.0
    # The verifier's probability that the cached question asks the same; 1.0 for exact
    # hits, 0.0 when no verifier ran.
    verifier_score: float = 0.0
    entry_id: int = 0
    matched_prompt: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    created_unix_ms: int = 0
    expires_unix_ms: int = 0

    @property
    def hit(self) -> bool:
        return self.kind != "miss"


@dataclass(frozen=True)
class StoreResult:
    entry_id: int
    expires_unix_ms: int
    embedding_model: str


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class CompletionResult:
    text: str
    kind: HitKind
    model: str
    usage: Usage
    finish_reason: str
    similarity: float = 0.0
    entry_id: int = 0
    matched_prompt: str = ""
    verifier_score: float = 0.0
    # The tier that answered ("" when the request named a model), why, and the upstream
    # attempts it took (0 on a hit).
    tier: str = ""
    route_reason: str = ""
    attempts: int = 0
    # On a hit, the cached entry's metadata and times, as for Lookup.
    metadata: dict[str, str] = field(default_factory=dict)
    created_unix_ms: int = 0
    expires_unix_ms: int = 0

    @property
    def hit(self) -> bool:
        return self.kind != "miss"


@dataclass(frozen=True)
class FeedbackResult:
    """The entry's feedback so far, and its namespace's target precision now."""

    right: int
    wrong: int
    removed: bool  # the entry was removed: wrong too often, never right
    target_precision: float


@dataclass(frozen=True)
class NamespaceStats:
    entries: int
    bytes: int
    # The target in force (configured, raised by wrong feedback) and the share of true
    # duplicates the calibration says is still served at it.
    target_precision: float = 0.0
    expected_recall: float = 0.0
    feedback_right: int = 0
    feedback_wrong: int = 0


@dataclass(frozen=True)
class Stats:
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
    bytes: int
    max_bytes: int  # 0: unbounded
    namespaces: dict[str, NamespaceStats]
    feedback_right: int = 0
    feedback_wrong: int = 0
    verifier: str = ""  # the verifier's model id, or "none"
    embedding_cache_hits: int = 0
    embedding_cache_misses: int = 0
