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

    @property
    def hit(self) -> bool:
        return self.kind != "miss"


@dataclass(frozen=True)
class NamespaceStats:
    entries: int
    bytes: int


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
