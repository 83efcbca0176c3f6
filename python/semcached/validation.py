"""Input rules shared by the client (checked before sending) and the engine.

Every failure is an InvalidArgument naming the field and the rule, so the caller gets the
same error whichever side caught it. Limits that depend on the server's configuration
(sizes) are checked by the engine only.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from semcached.errors import InvalidArgument

DEFAULT_NAMESPACE = "default"
NAMESPACE_RULE = "1-64 characters: letters, digits, '_', '-', '.', starting with a letter or digit"
_NAMESPACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
ROLES = ("system", "developer", "user", "assistant", "tool")
# Longer than any cache should keep an answer, and short enough that expiry times stay
# well inside int64 milliseconds everywhere (proto fields, the core's clock arithmetic).
MAX_TTL_SECONDS = 100 * 365 * 24 * 3600


def namespace_is_valid(value: str) -> bool:
    return _NAMESPACE.fullmatch(value) is not None


def namespace(value: str) -> str:
    """The namespace to use; empty means the default one."""
    if value == "":
        return DEFAULT_NAMESPACE
    if not namespace_is_valid(value):
        raise InvalidArgument(f"namespace {value!r} is invalid: {NAMESPACE_RULE}")
    return value


def text(field: str, value: str, max_bytes: int | None = None) -> str:
    """A prompt or response: not empty or whitespace-only, and within the size limit."""
    if not value.strip():
        raise InvalidArgument(f"{field} must not be empty or whitespace-only")
    return size(field, value, max_bytes)


def size(field: str, value: str, max_bytes: int | None) -> str:
    # A character is at most 4 bytes of UTF-8: most values need no encoding to check.
    if max_bytes is not None and len(value) * 4 > max_bytes:
        n = len(value.encode("utf-8"))
        if n > max_bytes:
            raise InvalidArgument(f"{field} is {n} bytes; the limit is {max_bytes} bytes")
    return value


def min_similarity(value: float | None) -> float | None:
    if value is None:
        return None
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise InvalidArgument(f"min_similarity must be a number in [0, 1], got {value}")
    return value


def target_precision(value: float | None) -> float | None:
    """None: the namespace's target. 0 serves the best candidate whatever its score."""
    if value is None:
        return None
    if math.isnan(value) or not 0.0 <= value < 1.0:
        raise InvalidArgument(f"target_precision must be a number in [0, 1), got {value}")
    return value


def ttl_seconds(value: int | None) -> int | None:
    """None or 0: the server's default TTL."""
    if value is None:
        return None
    if not 0 <= value <= MAX_TTL_SECONDS:
        raise InvalidArgument(
            f"ttl_seconds must be between 0 and {MAX_TTL_SECONDS} (100 years), got {value}")
    return value


def metadata(value: Mapping[str, str], max_bytes: int | None = None) -> dict[str, str]:
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise InvalidArgument("metadata keys and values must be strings")
    if any(k == "" for k in value):
        raise InvalidArgument("metadata keys must not be empty")
    if max_bytes is not None:
        n = sum(len(k.encode()) + len(v.encode()) for k, v in value.items())
        if n > max_bytes:
            raise InvalidArgument(f"metadata is {n} bytes; the limit is {max_bytes} bytes")
    return dict(value)


def messages(value: Sequence[tuple[str, str]],
             max_bytes: int | None = None) -> list[tuple[str, str]]:
    """A conversation as (role, content) pairs, ending with the user's question."""
    if not value:
        raise InvalidArgument("messages must not be empty")
    for i, (role, content) in enumerate(value):
        if role not in ROLES:
            raise InvalidArgument(
                f"messages[{i}].role {role!r} is unknown: use one of {', '.join(ROLES)}"
            )
        if role == "user":
            text(f"messages[{i}].content", content, max_bytes)
        else:
            size(f"messages[{i}].content", content, max_bytes)
    if value[-1][0] != "user":
        raise InvalidArgument(f"the last message must have role 'user', got {value[-1][0]!r}")
    return list(value)


def sampling(temperature: float | None, top_p: float | None, max_tokens: int | None) -> None:
    if temperature is not None and (math.isnan(temperature) or not 0.0 <= temperature <= 2.0):
        raise InvalidArgument(f"temperature must be a number in [0, 2], got {temperature}")
    if top_p is not None and (math.isnan(top_p) or not 0.0 < top_p <= 1.0):
        raise InvalidArgument(f"top_p must be a number in (0, 1], got {top_p}")
    if max_tokens is not None and not 1 <= max_tokens <= 1_000_000:
        raise InvalidArgument(f"max_tokens must be between 1 and 1000000, got {max_tokens}")


def json_field(name: str, value: str, kind: type) -> Any:
    """A JSON-encoded request field (tools: a list; response_format: an object); empty: None."""
    if not value:
        return None
    try:
        parsed = json.loads(value)
    except (ValueError, RecursionError) as e:
        raise InvalidArgument(f"{name} is not valid JSON: {e}") from None
    if not isinstance(parsed, kind):
        raise InvalidArgument(f"{name} must be a JSON {'array' if kind is list else 'object'}")
    if isinstance(parsed, list) and not all(isinstance(tool, dict) for tool in parsed):
        raise InvalidArgument(f"{name} must be an array of objects (tool definitions)")
    if isinstance(parsed, dict) and not isinstance(parsed.get("type", ""), str):
        raise InvalidArgument(f"{name}.type must be a string")
    return parsed


def max_age_seconds(value: int | None) -> int | None:
    """None or 0: any age."""
    if value is None or value == 0:
        return None
    if not 0 < value <= MAX_TTL_SECONDS:
        raise InvalidArgument(f"max_age_seconds must be between 0 and {MAX_TTL_SECONDS}, got {value}")
    return value


MAX_NAME_BYTES = 256


def who(user: str, feature: str, tenant: str) -> tuple[str, str, str]:
    """Accounting names: each becomes a ledger value and a budget key, so each is short."""
    for field, value in (("user", user), ("feature", feature), ("tenant", tenant)):
        size(field, value, MAX_NAME_BYTES)
    return user, feature, tenant
