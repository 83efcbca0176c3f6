"""Fake LLM providers: one real HTTP server on 127.0.0.1 speaking the OpenAI chat API
(POST /v1/chat/completions) and the Anthropic Messages API (POST /v1/messages), plain and
streamed (server-sent events), for the official SDKs to talk to.

It counts calls per question and per model, and misbehaves on cue. In the question:
``[status=NNN]`` answers that HTTP status; ``[retry-after=S]`` adds a Retry-After header;
``[fail-first=N]`` fails the first N calls of that question with 503, then answers;
``[slow=S]`` waits S seconds first; ``[truncate]`` stops for length; ``[malformed]``
sends a body that is not JSON; ``[drip=S]`` streams one word every S seconds. In the
model name: ``down`` answers 503, ``hang`` never answers, ``ratelimited`` answers 429
with Retry-After 30.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

API_KEY = "sk-test-fake-key-0123456789"
ANTHROPIC_KEY = "sk-ant-test-fake-key-9876543210"


class _Server(ThreadingHTTPServer):
    # The default listen backlog (5) refuses connections when a load test opens dozens
    # at once on a busy machine.
    request_queue_size = 512
    daemon_threads = True


class FakeLLM:
    def __init__(self, delay_s: float = 0.0) -> None:
        self.calls: Counter[str] = Counter()  # per question
        self.model_calls: Counter[str] = Counter()
        self.disconnects: Counter[str] = Counter()  # per question: streams the client stopped reading
        self.delay_s = delay_s
        self.last_body: dict[str, Any] = {}
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # header and body go out at once, no 40 ms delayed-ACK stall

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                try:
                    fake._answer(self, body)
                except (BrokenPipeError, ConnectionResetError):
                    with fake._lock:
                        turns = body.get("messages") or [{}]
                        fake.disconnects[str(turns[-1].get("content", ""))] += 1

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_port}/v1"
        self.anthropic_url = f"http://127.0.0.1:{self._server.server_port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def _answer(self, handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        anthropic = handler.path == "/v1/messages"
        if handler.path not in ("/v1/chat/completions", "/v1/messages"):
            return _send(handler, 404, {"error": {"message": f"no route {handler.path}"}})
        # The Anthropic SDK sends its key as x-api-key or (newer versions) a bearer token.
        key = handler.headers.get("x-api-key") or handler.headers.get("Authorization", "").removeprefix("Bearer ")
        if key != (ANTHROPIC_KEY if anthropic else API_KEY):
            return _send(handler, 401, {"error": {"type": "authentication_error", "message": "invalid API key"}})
        question = body["messages"][-1]["content"]
        model = body["model"]
        with self._lock:
            self.calls[question] += 1
            self.model_calls[model] += 1
            calls = self.calls[question]
            self.last_body = body
        if slow := re.search(r"\[slow=([\d.]+)\]", question):
            time.sleep(float(slow.group(1)))
        time.sleep(self.delay_s)
        if "hang" in model:
            time.sleep(60)
        headers = {}
        if after := re.search(r"\[retry-after=([\d.]+)\]", question):
            headers["Retry-After"] = after.group(1)
        code = 503 if "down" in model else 429 if "ratelimited" in model else 0
        if "ratelimited" in model:
            headers["Retry-After"] = "30"
        if status := re.search(r"\[status=(\d+)\]", question):
            code = int(status.group(1))
        if (first := re.search(r"\[fail-first=(\d+)\]", question)) and calls <= int(first.group(1)):
            code = 503
        if code:
            return _send(handler, code, {"type": "error", "error": {"type": "fake", "message": f"fake failure {code}",
                                                                    "code": str(code)}}, headers)
        if "[malformed]" in question:
            return _send_raw(handler, 200, b"{this is not json", "application/json")
        system = body.get("system", "") if anthropic else " ".join(
            m["content"] for m in body["messages"] if m["role"] == "system")
        text = f"answer to: {question}" + (f" (as {system})" if system else "") + f" [{model}]"
        truncated = "[truncate]" in question
        drip = re.search(r"\[drip=([\d.]+)\]", question)
        if body.get("stream"):
            words = re.findall(r"\S+\s*", text)
            stream = _anthropic_events if anthropic else _openai_events
            return _send_events(handler, stream(model, question, words, truncated),
                                float(drip.group(1)) if drip else 0.0)
        if anthropic:
            return _send(handler, 200, {
                "id": "msg_fake", "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": text}],
                "stop_reason": "max_tokens" if truncated else "end_turn", "stop_sequence": None,
                "usage": {"input_tokens": len(question.split()) + 5, "output_tokens": len(text.split())},
            })
        _send(handler, 200, {
            "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "length" if truncated else "stop"}],
            "usage": {"prompt_tokens": len(question.split()) + 5, "completion_tokens": len(text.split()),
                      "total_tokens": len(question.split()) + 5 + len(text.split())},
        })

    def total_calls(self) -> int:
        with self._lock:
            return sum(self.calls.values())

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _openai_events(model: str, question: str, words: list[str], truncated: bool) -> list[tuple[str, dict[str, Any]]]:
    base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
    events = [("", {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": w},
                                          "finish_reason": None}]}) for w in words]
    events.append(("", {**base, "choices": [{"index": 0, "delta": {},
                                              "finish_reason": "length" if truncated else "stop"}]}))
    events.append(("", {**base, "choices": [], "usage": {"prompt_tokens": len(question.split()) + 5,
                                                         "completion_tokens": len(words),
                                                         "total_tokens": len(question.split()) + 5 + len(words)}}))
    return events


def _anthropic_events(model: str, question: str, words: list[str], truncated: bool) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": {
            "id": "msg_fake", "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": len(question.split()) + 5, "output_tokens": 0}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
    ]
    events += [("content_block_delta", {"type": "content_block_delta", "index": 0,
                                        "delta": {"type": "text_delta", "text": w}}) for w in words]
    events += [
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta",
                           "delta": {"stop_reason": "max_tokens" if truncated else "end_turn", "stop_sequence": None},
                           "usage": {"output_tokens": len(words)}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    return events


def _send_events(handler: BaseHTTPRequestHandler, events: list[tuple[str, dict[str, Any]]], drip: float) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "text/event-stream")
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()

    def chunk(data: bytes) -> None:
        handler.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        handler.wfile.flush()

    for name, payload in events:
        line = (f"event: {name}\n" if name else "") + f"data: {json.dumps(payload)}\n\n"
        chunk(line.encode())
        time.sleep(drip)
    if not events or not events[0][0]:  # OpenAI ends its stream with [DONE]
        chunk(b"data: [DONE]\n\n")
    chunk(b"")


def _send(handler: BaseHTTPRequestHandler, status: int, payload: dict[str, Any],
          headers: dict[str, str] | None = None) -> None:
    _send_raw(handler, status, json.dumps(payload).encode(), "application/json", headers)


def _send_raw(handler: BaseHTTPRequestHandler, status: int, data: bytes, kind: str,
              headers: dict[str, str] | None = None) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", kind)
    handler.send_header("Content-Length", str(len(data)))
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(data)
