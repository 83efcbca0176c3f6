"""semcached: a semantic cache server for LLM calls.

The public face of the package. The native core lives in ``semcached._core``; users
import from here.
"""

from semcached.client import AsyncClient, Client
from semcached.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    SemcachedError,
    Unauthenticated,
    Unavailable,
)
from semcached.results import (
    CompletionResult,
    FeedbackResult,
    LookupResult,
    NamespaceStats,
    Stats,
    StoreResult,
    Usage,
)

__all__ = [
    "AsyncClient",
    "Client",
    "CompletionResult",
    "FeedbackResult",
    "DeadlineExceeded",
    "FailedPrecondition",
    "InvalidArgument",
    "LookupResult",
    "NamespaceStats",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "SemcachedError",
    "Stats",
    "StoreResult",
    "Unauthenticated",
    "Unavailable",
    "Usage",
]
