"""The backing LLM: any OpenAI-compatible endpoint, through the official ``openai`` SDK.

Provider failures become semcached errors with the gRPC code that says what happened
(UNAVAILABLE, DEADLINE_EXCEEDED, or the meaning of the provider's own 4xx); the API key
never appears in a message.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import openai

from semcached.config import ProviderConfig
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
from semcached.results import Usage

log = logging.getLogger("semcached.provider")

_BY_STATUS: dict[int, type[SemcachedError]] = {
    400: InvalidArgument,
    401: Unauthenticated,
    403: PermissionDenied,
    404: NotFound,
    408: DeadlineExceeded,
    413: InvalidArgument,
    422: InvalidArgument,
    429: ResourceExhausted,
}


@dataclass(frozen=True)
class Answer:
    text: str
    model: str
    usage: Usage
    finish_reason: str


class Provider:
    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        self._key = os.environ.get(config.api_key_env, "")
        self.base_url = config.base_url or os.environ.get("OPENAI_BASE_URL", "") or None
        self._client = (
            openai.AsyncOpenAI(
                api_key=self._key, base_url=self.base_url,
                timeout=config.timeout_seconds, max_retries=config.max_retries,
            )
            if self._key else None
        )

    @property
    def configured(self) -> bool:
        return self._client is not None

    async def complete(self, messages: list[tuple[str, str]], model: str) -> Answer:
        """One chat completion, bounded by the configured timeout and retries."""
        if self._client is None:
            raise FailedPrecondition(
                f"no LLM provider is configured: set {self.config.api_key_env} "
                "(and OPENAI_BASE_URL or [provider] base_url for a non-OpenAI endpoint)"
            )
        try:
            result = await self._client.chat.completions.create(
                model=model,
                messages=[{"role": role, "content": content} for role, content in messages],  # type: ignore[misc]
            )
        except openai.APITimeoutError:
            raise DeadlineExceeded(f"the provider did not answer in time for model {model!r}") from None
        except openai.APIConnectionError as e:
            raise Unavailable(f"could not reach the provider at {self._where()}: {self._redact(e)}") from None
        except openai.APIStatusError as e:
            cls = _BY_STATUS.get(e.status_code, Unavailable)
            raise cls(
                f"the provider answered HTTP {e.status_code} for model {model!r}: {self._redact(e)}"
            ) from None
        if not result.choices or result.choices[0].message.content is None:
            raise Unavailable(f"the provider returned no text for model {model!r}")
        choice = result.choices[0]
        usage = Usage(result.usage.prompt_tokens, result.usage.completion_tokens) if result.usage else Usage()
        return Answer(choice.message.content or "", result.model or model, usage,
                      choice.finish_reason or "")

    def _where(self) -> str:
        return self.base_url or "the OpenAI API"

    def _redact(self, error: Exception) -> str:
        message = getattr(error, "message", None) or str(error)
        return message.replace(self._key, "[redacted]") if self._key else message

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
