"""A fake OpenAI-compatible provider: a real HTTP server on 127.0.0.1 for the real SDK.

It answers POST /v1/chat/completions, counts calls per question, and misbehaves on cue:
a question containing ``[status=NNN]`` gets that HTTP status, ``[slow=S]`` waits S
seconds before answering, ``[truncate]`` answers with finish_reason "length".
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

API_KEY = "sk-test-fake-key-0123456789"


class FakeOpenAI:
    def __init__(self, delay_s: float = 0.0) -> None:
        self.calls: Counter[str] = Counter()
        self.delay_s = delay_s
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake._answer(self, body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_port}/v1"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def _answer(self, handler: BaseHTTPRequestHandler, body: dict) -> None:
        if handler.path != "/v1/chat/completions":
            return _send(handler, 404, {"error": {"message": f"no route {handler.path}"}})
        if handler.headers.get("Authorization") != f"Bearer {API_KEY}":
            return _send(handler, 401, {"error": {"message": "Incorrect API key provided"}})
        question = body["messages"][-1]["content"]
        with self._lock:
            self.calls[question] += 1
        if slow := re.search(r"\[slow=([\d.]+)\]", question):
            time.sleep(float(slow.group(1)))
        time.sleep(self.delay_s)
        if status := re.search(r"\[status=(\d+)\]", question):
            code = int(status.group(1))
            return _send(handler, code, {"error": {"message": f"fake failure {code}",
                                                    "type": "fake", "code": str(code)}})
        system = " ".join(m["content"] for m in body["messages"] if m["role"] == "system")
        text = f"answer to: {question}" + (f" (as {system})" if system else "")
        _send(handler, 200, {
            "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
            "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "length" if "[truncate]" in question else "stop"}],
            "usage": {"prompt_tokens": len(question.split()) + 5,
                      "completion_tokens": len(text.split()),
                      "total_tokens": len(question.split()) + 5 + len(text.split())},
        })

    def total_calls(self) -> int:
        with self._lock:
            return sum(self.calls.values())

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _send(handler: BaseHTTPRequestHandler, status: int, payload: dict) -> None:
    data = json.dumps(payload).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)
