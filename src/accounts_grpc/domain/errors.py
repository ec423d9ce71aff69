"""Typed domain errors. The domain raises these; one interceptor maps them to gRPC statuses.

Each error carries an UPPER_SNAKE ``reason`` (sent as ``google.rpc.ErrorInfo.reason``),
optional ``metadata`` for ErrorInfo, and, for InvalidArgument, field violations
(sent as ``google.rpc.BadRequest``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class FieldViolation:
    """One bad field: ``field`` is a dotted path of the request, ``description`` says why."""

    field: str
    description: str


class DomainError(Exception):
    """Base of every error a client can cause; ``code`` is the gRPC status code name."""

    code = "INTERNAL"
    default_reason = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata = dict(metadata or {})


class InvalidArgument(DomainError):
    code = "INVALID_ARGUMENT"
    default_reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        message: str,
        violations: Iterable[FieldViolation] = (),
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.violations = list(violations)

    @classmethod
    def field(cls, field: str, description: str, *, reason: str | None = None) -> InvalidArgument:
        """One bad field: the message repeats it so plain clients see it too."""
        return cls(f"{field}: {description}", [FieldViolation(field, description)], reason=reason)


class NotFound(DomainError):
    code = "NOT_FOUND"
    default_reason = "NOT_FOUND"


class AlreadyExists(DomainError):
    code = "ALREADY_EXISTS"
    default_reason = "ALREADY_EXISTS"


class PermissionDenied(DomainError):
    code = "PERMISSION_DENIED"
    default_reason = "PERMISSION_DENIED"


class Unauthenticated(DomainError):
    code = "UNAUTHENTICATED"
    default_reason = "UNAUTHENTICATED"


class FailedPrecondition(DomainError):
    code = "FAILED_PRECONDITION"
    default_reason = "FAILED_PRECONDITION"


class Aborted(DomainError):
    code = "ABORTED"
    default_reason = "ABORTED"


class ResourceExhausted(DomainError):
    """Too many attempts; ``retry_after`` seconds is sent as ``google.rpc.RetryInfo``."""

    code = "RESOURCE_EXHAUSTED"
    default_reason = "RESOURCE_EXHAUSTED"

    def __init__(self, message: str, *, retry_after: float, reason: str | None = None) -> None:
        super().__init__(message, reason=reason, metadata={"retry_after": f"{retry_after:.0f}"})
        self.retry_after = retry_after


class Unavailable(DomainError):
    code = "UNAVAILABLE"
    default_reason = "UNAVAILABLE"


def not_found(kind: str, key: str, value: str) -> NotFound:
    """``NotFound`` with reason ``<KIND>_NOT_FOUND`` and the key in ErrorInfo metadata."""
    return NotFound(
        f"{kind.replace('_', ' ')} {value!r} not found",
        reason=f"{kind.upper()}_NOT_FOUND",
        metadata={key: value},
    )
