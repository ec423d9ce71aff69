"""Typed errors to google.rpc.Status, mapped once for gRPC and REST alike.

Every status carries ``google.rpc.ErrorInfo`` (domain ``accounts.v1``, an UPPER_SNAKE
reason, metadata); INVALID_ARGUMENT adds ``google.rpc.BadRequest`` field violations;
RESOURCE_EXHAUSTED adds ``google.rpc.RetryInfo``. Anything unexpected becomes INTERNAL
with a generic message and nothing of the exception on the wire.
"""

from __future__ import annotations

import math

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from accounts_grpc.domain.errors import DomainError, InvalidArgument, ResourceExhausted

DOMAIN = "accounts.v1"

CODE_BY_NAME: dict[str, grpc.StatusCode] = {c.name: c for c in grpc.StatusCode}


def _pack(msg: object) -> any_pb2.Any:
    a = any_pb2.Any()
    a.Pack(msg)  # type: ignore[arg-type]
    return a


#: Bounds on what a status echoes: gRPC clients refuse trailers past 8 KiB by default
#: (the whole status travels in ``grpc-status-details-bin``), so a caller's long value
#: repeated in a message must never turn a clear error into a lost one.
MAX_MESSAGE = 1000
MAX_DETAIL = 300
MAX_VIOLATIONS = 20


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def status_for(code: str, message: str, reason: str, metadata: dict[str, str] | None = None,
               extra: list[object] | None = None) -> status_pb2.Status:
    message = _cut(message, MAX_MESSAGE)
    metadata = {_cut(k, 64): _cut(v, MAX_DETAIL) for k, v in (metadata or {}).items()}
    info = error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata)
    details = [_pack(info)]
    for d in extra or ():
        details.append(_pack(d))
    return status_pb2.Status(code=getattr(code_pb2, code), message=message, details=details)


def status_from_error(e: DomainError) -> status_pb2.Status:
    extra: list[object] = []
    if isinstance(e, InvalidArgument) and e.violations:
        extra.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=_cut(v.field, MAX_DETAIL), description=_cut(v.description,
                                                                          MAX_DETAIL)
                    )
                    for v in e.violations[:MAX_VIOLATIONS]
                ]
            )
        )
    if isinstance(e, ResourceExhausted):
        secs = max(1, math.ceil(e.retry_after))
        extra.append(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=secs)))
    return status_for(e.code, e.message, e.reason, e.metadata, extra)


def internal_status() -> status_pb2.Status:
    return status_for("INTERNAL", "internal error; the server logged the details", "INTERNAL")


def grpc_code(status: status_pb2.Status) -> grpc.StatusCode:
    return CODE_BY_NAME[code_pb2.Code.Name(status.code)]
