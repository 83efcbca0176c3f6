"""Every bad input is INVALID_ARGUMENT naming the field, on the server (raw stub) and in the
client (before sending), and a rejected request leaves what is stored untouched."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from conftest import ServerProcess
from semcached import Client, InvalidArgument
from semcached.v1 import semcached_pb2 as pb
from semcached.v1 import semcached_pb2_grpc as pb_grpc

BIG = "x" * (32 * 1024 + 1)  # one byte over the default max_prompt_bytes
USER = [pb.Message(role="user", content="hi")]

# (name, raw request, client call, words the message must contain)
CASES: list[tuple[str, Any, Callable[[Client], Any], str]] = [
    ("empty prompt", pb.LookupRequest(prompt=""), lambda c: c.lookup(""), "prompt must not be empty"),
    ("blank prompt", pb.LookupRequest(prompt=" \n\t"), lambda c: c.lookup(" \n\t"), "prompt must not be empty"),
    ("nan similarity", pb.LookupRequest(prompt="q", min_similarity=float("nan")),
     lambda c: c.lookup("q", min_similarity=float("nan")), "min_similarity"),
    ("similarity > 1", pb.LookupRequest(prompt="q", min_similarity=1.5),
     lambda c: c.lookup("q", min_similarity=1.5), "min_similarity must be a number in [0, 1]"),
    ("similarity < 0", pb.LookupRequest(prompt="q", min_similarity=-0.1),
     lambda c: c.lookup("q", min_similarity=-0.1), "min_similarity"),
    ("target precision 1", pb.LookupRequest(prompt="q", target_precision=1.0),
     lambda c: c.lookup("q", target_precision=1.0), "target_precision must be a number in [0, 1)"),
    ("nan target precision", pb.CompleteRequest(messages=USER, target_precision=float("nan")),
     lambda c: c.complete([{"role": "user", "content": "hi"}], target_precision=float("nan")),
     "target_precision"),
    ("wrong feedback, no prompt", pb.FeedbackRequest(entry_id=1, correct=False),
     lambda c: c.feedback(1, correct=False), "wrong feedback needs the prompt"),
    ("feedback entry 0", pb.FeedbackRequest(entry_id=0, correct=True),
     lambda c: c.feedback(0, correct=True), "entry_id must be positive"),
    ("hot temperature", pb.CompleteRequest(messages=USER, temperature=3.0),
     lambda c: c.complete([{"role": "user", "content": "hi"}], temperature=3.0),
     "temperature must be a number in [0, 2]"),
    ("top_p 0", pb.CompleteRequest(messages=USER, top_p=0.0),
     lambda c: c.complete([{"role": "user", "content": "hi"}], top_p=0.0), "top_p must be a number in (0, 1]"),
    ("model and tier", pb.CompleteRequest(messages=USER, model="fake/m", tier="cheap"),
     lambda c: c.complete([{"role": "user", "content": "hi"}], model="fake/m", tier="cheap"),
     "name a model or a tier, not both"),
    ("long user", pb.CompleteRequest(messages=USER, user="u" * 300),
     lambda c: c.complete([{"role": "user", "content": "hi"}], user="u" * 300), "user is 300 bytes; the limit is 256"),
    ("long tenant", pb.LookupRequest(prompt="q", tenant="t" * 300),
     lambda c: c.lookup("q", tenant="t" * 300), "tenant is 300 bytes"),
    ("unknown tier", pb.CompleteRequest(messages=USER, tier="gold"), None, "unknown tier 'gold'"),
    ("unknown model", pb.CompleteRequest(messages=USER, model="nobody-knows"), None,
     "unknown model 'nobody-knows'"),
    ("tools not JSON", pb.CompleteRequest(messages=USER, tools_json="[{"), None, "tools_json is not valid JSON"),
    ("tools not objects", pb.CompleteRequest(messages=USER, tools_json="[1]"), None,
     "tools_json must be an array of objects"),
    ("deeply nested JSON", pb.CompleteRequest(messages=USER, tools_json="[" * 100000 + "]" * 100000), None,
     "tools_json is not valid JSON"),
    ("report since forever", pb.ReportRequest(by="user", since_seconds=2**62), None, "since_seconds must be between"),
    ("response_format not an object", pb.CompleteRequest(messages=USER, response_format_json="[1]"), None,
     "response_format_json must be a JSON object"),
    ("bad namespace", pb.LookupRequest(namespace="no spaces!", prompt="q"),
     lambda c: c.lookup("q", namespace="no spaces!"), "namespace 'no spaces!' is invalid"),
    ("long namespace", pb.LookupRequest(namespace="n" * 65, prompt="q"),
     lambda c: c.lookup("q", namespace="n" * 65), "namespace"),
    ("negative ttl", pb.StoreRequest(prompt="q", response="a", ttl_seconds=-5),
     lambda c: c.store("q", "a", ttl_seconds=-5), "ttl_seconds must be between 0 and"),
    ("huge ttl", pb.StoreRequest(prompt="q", response="a", ttl_seconds=10**16),
     lambda c: c.store("q", "a", ttl_seconds=10**16), "ttl_seconds must be between 0 and"),
    ("empty response", pb.StoreRequest(prompt="q", response=" "),
     lambda c: c.store("q", " "), "response must not be empty"),
    ("empty messages", pb.CompleteRequest(), lambda c: c.complete([]), "messages must not be empty"),
    ("unknown role", pb.CompleteRequest(messages=[pb.Message(role="wizard", content="hi")]),
     lambda c: c.complete([{"role": "wizard", "content": "hi"}]), "messages[0].role 'wizard' is unknown"),
    ("last not user", pb.CompleteRequest(messages=[*USER, pb.Message(role="assistant", content="yo")]),
     lambda c: c.complete([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]),
     "last message must have role 'user'"),
    ("blank question", pb.CompleteRequest(messages=[pb.Message(role="user", content="  ")]),
     lambda c: c.complete([{"role": "user", "content": "  "}]), "messages[0].content must not be empty"),
    ("invalidate nothing", pb.InvalidateRequest(), lambda c: c.invalidate(),
     "exactly one of entry_id, prompt, all"),
    ("invalidate all=false", pb.InvalidateRequest(all=False), None, "exactly one"),
]

SERVER_ONLY: list[tuple[str, Any, str]] = [
    ("prompt too large", pb.LookupRequest(prompt=BIG), "prompt is 32769 bytes; the limit is 32768"),
    ("stored prompt too large", pb.StoreRequest(prompt=BIG, response="a"), "prompt is 32769 bytes"),
    ("message too large", pb.CompleteRequest(messages=[pb.Message(role="user", content=BIG)]),
     "messages[0].content is 32769 bytes"),
]


@pytest.fixture(scope="module")
def stub(server: ServerProcess) -> Iterator[pb_grpc.SemanticCacheStub]:
    with grpc.insecure_channel(server.target) as channel:
        yield pb_grpc.SemanticCacheStub(channel)


def _method(stub: pb_grpc.SemanticCacheStub, request: Any) -> Any:
    name = type(request).__name__.removesuffix("Request")
    return getattr(stub, name)


@pytest.mark.parametrize("name,request_,call,words", CASES, ids=[c[0] for c in CASES])
def test_server_and_client_reject_alike(stub: pb_grpc.SemanticCacheStub, client: Client, name: str,
                                        request_: Any, call: Callable[[Client], Any] | None,
                                        words: str) -> None:
    with pytest.raises(grpc.RpcError) as raw:
        _method(stub, request_)(request_, timeout=10)
    assert raw.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in raw.value.details()
    if call is not None:
        with pytest.raises(InvalidArgument) as checked:
            call(client)
        assert checked.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert words in checked.value.message


@pytest.mark.parametrize("name,request_,words", SERVER_ONLY, ids=[c[0] for c in SERVER_ONLY])
def test_size_limits(stub: pb_grpc.SemanticCacheStub, client: Client, name: str, request_: Any,
                     words: str) -> None:
    with pytest.raises(InvalidArgument, match=words.replace("[", r"\[")):
        client._call(_method(stub, request_), request_)


def test_undecodable_request_bytes_are_invalid_argument(server: ServerProcess) -> None:
    # Field 2 (prompt) declared as a 2-byte string holding invalid UTF-8.
    raw = b"\x12\x02\xff\xfe"
    with grpc.insecure_channel(server.target) as channel:
        lookup = channel.unary_unary("/semcached.v1.SemanticCache/Lookup",
                                     request_serializer=lambda b: b, response_deserializer=lambda b: b)
        with pytest.raises(grpc.RpcError) as e:
            lookup(raw, timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid LookupRequest" in e.value.details()


def test_rejected_requests_leave_stored_entries_untouched(client: Client, namespace: str) -> None:
    stored = client.store("How do I export my data?", "Settings → Privacy → Export.")
    before = client.stats().namespaces[namespace]
    for bad in (lambda: client.store("How do I export my data?", " "),
                lambda: client.store("How do I export my data?", "new", ttl_seconds=-1),
                lambda: client.invalidate(prompt=" ")):
        with pytest.raises(InvalidArgument):
            bad()
    r = client.lookup("How do I export my data?")
    assert (r.entry_id, r.response) == (stored.entry_id, "Settings → Privacy → Export.")
    assert client.stats().namespaces[namespace] == before
