"""Errors with a gRPC status code, the same on both sides of the wire.

The engine raises these; the server turns them into a status; the client turns a status
back into the same class. A check the client makes before sending raises exactly what the
server would have.
"""

from __future__ import annotations

import grpc


class SemcachedError(Exception):
    """Base class: ``code`` is the gRPC status code, ``message`` says what to do about it."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


class InvalidArgument(SemcachedError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(SemcachedError):
    code = grpc.StatusCode.NOT_FOUND


class FailedPrecondition(SemcachedError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(SemcachedError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unauthenticated(SemcachedError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(SemcachedError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unavailable(SemcachedError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(SemcachedError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


_BY_CODE: dict[grpc.StatusCode, type[SemcachedError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        FailedPrecondition,
        ResourceExhausted,
        Unauthenticated,
        PermissionDenied,
        Unavailable,
        DeadlineExceeded,
    )
}


def from_status(code: grpc.StatusCode, message: str) -> SemcachedError:
    """The exception for a status received over the wire (INTERNAL and others: the base)."""
    cls = _BY_CODE.get(code)
    if cls is not None:
        return cls(message)
    error = SemcachedError(message)
    error.code = code
    return error
