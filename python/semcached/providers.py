"""Backing LLMs through their official SDKs: ``openai`` for every OpenAI-compatible
endpoint (OpenAI, Groq, Together, vLLM, Ollama, llama.cpp) and ``anthropic`` for Claude.

A provider makes one attempt per call (the SDKs' own retries are off: the router retries,
backs off, honours Retry-After and falls back across models). Failures come back as
``UpstreamError``: the semcached error a caller should see, whether another attempt may
succeed, and how long the provider asked us to wait. API keys never appear in messages.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anthropic
import openai

from semcached.config import ConfigError, ProviderSettings
from semcached.errors import (
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    SemcachedError,
    Unauthenticated,
    Unavailable,
)
from semcached.results import Usage

log = logging.getLogger("semcached.providers")

_BY_STATUS: dict[int, type[SemcachedError]] = {
    400: InvalidArgument, 401: Unauthenticated, 403: PermissionDenied, 404: NotFound,
    408: DeadlineExceeded, 413: InvalidArgument, 422: InvalidArgument, 429: ResourceExhausted,
}
# Worth another attempt (after a pause): rate limits, overload, server errors, timeouts.
_RETRYABLE = {408, 409, 425, 429, 500, 502, 503, 504, 529}
# Anthropic requires max_tokens; used when a request sets none.
DEFAULT_MAX_TOKENS = 1024


@dataclass(frozen=True)
class Request:
    """What goes upstream: the conversation and everything else that shapes the answer."""

    messages: list[tuple[str, str]]
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    tools: list[dict[str, Any]] | None = None
    response_format: dict[str, Any] | None = None


@dataclass(frozen=True)
class Answer:
    text: str
    model: str  # "<provider>/<model>"
    usage: Usage
    finish_reason: str
    attempts: int = 1
    tier: str = ""
    route_reason: str = ""
    upstream_ms: float = 0.0  # the answering attempt's time at the provider


@dataclass
class Delta:
    """A piece of a streamed answer; the last one carries finish_reason and usage."""

    text: str = ""
    finish_reason: str = ""
    usage: Usage = field(default_factory=Usage)
    # Set on the first delta by the router: who answers, after how many attempts.
    model: str = ""
    attempts: int = 0


class UpstreamError(Exception):
    def __init__(self, error: SemcachedError, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.retryable = retryable
        self.retry_after = retry_after


class Provider:
    """One configured endpoint. ``max_concurrency`` calls at a time; others queue."""

    def __init__(self, name: str, settings: ProviderSettings, key: str) -> None:
        self.name = name
        self.settings = settings
        self._key = key
        self._slots = asyncio.Semaphore(settings.max_concurrency)

    async def complete(self, request: Request, model: str, timeout: float) -> Answer:
        async with self._slots:
            try:
                return await self._complete(request, model, timeout)
            except (openai.APIError, anthropic.APIError) as e:
                raise self._upstream_error(e, model) from None
            except UpstreamError:
                raise
            except ValueError as e:  # a body that is not JSON, or not the API's shape
                raise self._malformed(e, model) from None
            except Exception as e:  # a transport error the SDK did not wrap
                raise UpstreamError(Unavailable(f"{self.name}/{model} failed: {self._redact(e)}"), True) from None

    async def stream(self, request: Request, model: str, timeout: float) -> AsyncIterator[Delta]:
        """Text deltas as the provider sends them; closing the iterator closes the
        upstream connection."""
        async with self._slots:
            try:
                async for delta in self._stream(request, model, timeout):
                    yield delta
            except (openai.APIError, anthropic.APIError) as e:
                raise self._upstream_error(e, model) from None
            except UpstreamError:
                raise
            except ValueError as e:
                raise self._malformed(e, model) from None
            except Exception as e:  # e.g. a connection reset mid-stream, unwrapped by the SDK
                raise UpstreamError(Unavailable(f"{self.name}/{model} failed: {self._redact(e)}"), True) from None

    async def _complete(self, request: Request, model: str, timeout: float) -> Answer:
        raise NotImplementedError

    def _stream(self, request: Request, model: str, timeout: float) -> AsyncIterator[Delta]:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    def _malformed(self, e: ValueError, model: str) -> UpstreamError:
        return UpstreamError(Unavailable(f"{self.name}/{model} sent a malformed response: {self._redact(e)}"), True)

    def _upstream_error(self, e: Exception, model: str) -> UpstreamError:
        where = f"{self.name}/{model}"
        if isinstance(e, (openai.APITimeoutError, anthropic.APITimeoutError)):
            return UpstreamError(DeadlineExceeded(f"{where} did not answer in time"), True)
        status = getattr(e, "status_code", None)
        if status is None:  # connection refused, reset, DNS, a body that is not JSON
            return UpstreamError(Unavailable(f"could not get an answer from {where}: {self._redact(e)}"), True)
        cls = _BY_STATUS.get(status, Unavailable)
        error = cls(f"{where} answered HTTP {status}: {self._redact(e)}")
        return UpstreamError(error, status in _RETRYABLE or status >= 500, _retry_after(e))

    def _redact(self, error: Exception) -> str:
        message = getattr(error, "message", None) or str(error) or type(error).__name__
        return message.replace(self._key, "[redacted]") if self._key else message


def _retry_after(e: Exception) -> float | None:
    """Seconds from Retry-After (seconds) or retry-after-ms, when the response has them."""
    response = getattr(e, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    try:
        if "retry-after-ms" in headers:
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        if "retry-after" in headers:
            return max(0.0, float(headers["retry-after"]))
    except ValueError:
        return None  # an HTTP date: rare from LLM APIs; fall back to our own backoff
    return None


class OpenAIProvider(Provider):
    def __init__(self, name: str, settings: ProviderSettings, key: str) -> None:
        super().__init__(name, settings, key)
        self._client = openai.AsyncOpenAI(api_key=key, base_url=settings.base_url or None,
                                          timeout=settings.timeout_seconds, max_retries=0)

    def _arguments(self, request: Request, model: str) -> dict[str, Any]:
        args: dict[str, Any] = {
            "model": model,
            "messages": [{"role": role, "content": content} for role, content in request.messages],
        }
        for key in ("temperature", "top_p", "max_tokens", "tools", "response_format"):
            if getattr(request, key) is not None:
                args[key] = getattr(request, key)
        return args

    async def _complete(self, request: Request, model: str, timeout: float) -> Answer:
        result = await self._client.chat.completions.create(**self._arguments(request, model), timeout=timeout)
        if not result.choices:
            raise UpstreamError(Unavailable(f"{self.name}/{model} returned no choices"), True)
        choice = result.choices[0]
        text = choice.message.content
        if text is None and choice.message.tool_calls:
            text = json.dumps([c.model_dump() for c in choice.message.tool_calls])
        if text is None:
            raise UpstreamError(Unavailable(f"{self.name}/{model} returned no text"), True)
        usage = Usage(result.usage.prompt_tokens, result.usage.completion_tokens) if result.usage else Usage()
        return Answer(text, f"{self.name}/{result.model or model}", usage, choice.finish_reason or "")

    async def _stream(self, request: Request, model: str, timeout: float) -> AsyncIterator[Delta]:
        stream = await self._client.chat.completions.create(
            **self._arguments(request, model), stream=True, stream_options={"include_usage": True},
            timeout=timeout)
        finish, usage = "", Usage()
        try:
            async for chunk in stream:
                if chunk.usage:
                    usage = Usage(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
                for choice in chunk.choices:
                    finish = choice.finish_reason or finish
                    if choice.delta.content:
                        yield Delta(choice.delta.content)
        finally:
            await stream.close()
        yield Delta(finish_reason=finish or "stop", usage=usage)

    async def close(self) -> None:
        await self._client.close()


_ANTHROPIC_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls"}


class AnthropicProvider(Provider):
    def __init__(self, name: str, settings: ProviderSettings, key: str) -> None:
        super().__init__(name, settings, key)
        self._client = anthropic.AsyncAnthropic(api_key=key, base_url=settings.base_url or None,
                                                timeout=settings.timeout_seconds, max_retries=0)

    def _arguments(self, request: Request, model: str) -> dict[str, Any]:
        # The Messages API takes the system prompt apart and only user/assistant turns.
        system = "\n\n".join(c for r, c in request.messages if r in ("system", "developer"))
        turns = [{"role": "assistant" if r == "assistant" else "user", "content": c}
                 for r, c in request.messages if r not in ("system", "developer")]
        if request.response_format and request.response_format.get("type", "").startswith("json"):
            system = (system + "\n\n" if system else "") + "Answer with JSON only."
        args: dict[str, Any] = {"model": model, "messages": turns,
                                "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS}
        if system:
            args["system"] = system
        if request.tools:
            args["tools"] = [_anthropic_tool(t) for t in request.tools]
        sampling = {k: getattr(request, k) for k in ("temperature", "top_p") if getattr(request, k) is not None}
        if sampling:
            args["extra_body"] = sampling
        return args

    async def _complete(self, request: Request, model: str, timeout: float) -> Answer:
        result = await self._client.messages.create(**self._arguments(request, model), timeout=timeout)
        parts = [getattr(block, "text", "") for block in result.content if block.type == "text"]
        tools = [{"name": b.name, "input": b.input} for b in result.content if b.type == "tool_use"]
        text = "".join(parts) if parts or not tools else json.dumps(tools)
        usage = Usage(result.usage.input_tokens, result.usage.output_tokens)
        return Answer(text, f"{self.name}/{result.model or model}", usage,
                      _ANTHROPIC_FINISH.get(result.stop_reason or "", result.stop_reason or ""))

    async def _stream(self, request: Request, model: str, timeout: float) -> AsyncIterator[Delta]:
        stream = await self._client.messages.create(**self._arguments(request, model), stream=True,
                                                    timeout=timeout)
        prompt_tokens = completion_tokens = 0
        finish = ""
        try:
            async for event in stream:
                if event.type == "message_start":
                    prompt_tokens = event.message.usage.input_tokens
                elif event.type == "content_block_delta" and getattr(event.delta, "text", None):
                    yield Delta(event.delta.text)
                elif event.type == "message_delta":
                    finish = event.delta.stop_reason or finish
                    completion_tokens = event.usage.output_tokens
        finally:
            await stream.close()
        yield Delta(finish_reason=_ANTHROPIC_FINISH.get(finish, finish or "stop"),
                    usage=Usage(prompt_tokens, completion_tokens))

    async def close(self) -> None:
        await self._client.close()


def _anthropic_tool(tool: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI-style function tool in the Messages API's shape."""
    function = tool.get("function", tool)
    return {"name": function.get("name", ""), "description": function.get("description", ""),
            "input_schema": function.get("parameters", {"type": "object", "properties": {}})}


KINDS: dict[str, type[Provider]] = {"openai": OpenAIProvider, "anthropic": AnthropicProvider}


def connect(providers: dict[str, ProviderSettings], required: set[str],
            environ: dict[str, str] | None = None) -> tuple[dict[str, Provider], dict[str, str]]:
    """The providers whose key variable is set, and for the others, why not. A provider
    in ``required`` (named in the user's own file) without its key is a startup error."""
    env = os.environ if environ is None else environ
    ready: dict[str, Provider] = {}
    missing: dict[str, str] = {}
    for name, settings in providers.items():
        key = env.get(settings.api_key_env, "") if settings.api_key_env else "unused"
        if not key:
            reason = f"provider {name!r} has no API key: set the environment variable {settings.api_key_env}"
            if name in required:
                raise ConfigError(reason)
            missing[name] = reason
            continue
        ready[name] = KINDS[settings.kind](name, settings, key)
    return ready, missing
