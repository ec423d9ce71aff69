"""google.rpc.Status → an HTTP error response, exactly as grpc-gateway writes it.

Body: ``{"code": <gRPC code number>, "message": "...", "details": [{"@type": ...}, ...]}``
(proto3 JSON of the Status, details unpacked and always present, each detail with every
field, at its default too, as grpc-gateway's marshaler writes it);
HTTP status from grpc-gateway's ``HTTPStatusFromCode`` table. A RESOURCE_EXHAUSTED
status with ``google.rpc.RetryInfo`` also gets ``Retry-After`` (whole seconds, rounded
up); UNAUTHENTICATED gets ``WWW-Authenticate: Bearer`` as RFC 9110 asks of every 401.
"""

from __future__ import annotations

import base64
import json
import math
from typing import Any

from google.protobuf import json_format
from google.rpc import code_pb2, error_details_pb2, status_pb2

from accounts_grpc.rest.transcode import message_json
from accounts_grpc.rpc.status import status_for

# grpc-gateway runtime.HTTPStatusFromCode.
HTTP_STATUS: dict[int, int] = {
    code_pb2.OK: 200,
    code_pb2.CANCELLED: 499,
    code_pb2.UNKNOWN: 500,
    code_pb2.INVALID_ARGUMENT: 400,
    code_pb2.DEADLINE_EXCEEDED: 504,
    code_pb2.NOT_FOUND: 404,
    code_pb2.ALREADY_EXISTS: 409,
    code_pb2.PERMISSION_DENIED: 403,
    code_pb2.UNAUTHENTICATED: 401,
    code_pb2.RESOURCE_EXHAUSTED: 429,
    code_pb2.FAILED_PRECONDITION: 400,
    code_pb2.ABORTED: 409,
    code_pb2.OUT_OF_RANGE: 400,
    code_pb2.UNIMPLEMENTED: 501,
    code_pb2.INTERNAL: 500,
    code_pb2.UNAVAILABLE: 503,
    code_pb2.DATA_LOSS: 500,
}

REALM = "accounts-grpc"
JSON = b"application/json"

Headers = list[tuple[bytes, bytes]]


def http_status(code: int) -> int:
    return HTTP_STATUS.get(code, 500)


def retry_after(status: status_pb2.Status) -> int | None:
    """Seconds from the status' RetryInfo, rounded up (at least 1), or None."""
    for d in status.details:
        if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            d.Unpack(info)
            delay = info.retry_delay.seconds + info.retry_delay.nanos / 1e9
            return max(1, math.ceil(delay))
    return None


def status_dict(status: status_pb2.Status) -> dict[str, Any]:
    details: list[dict[str, Any]] = []
    for d in status.details:
        try:
            details.append(message_json(d))  # every field, as grpc-gateway writes it
        except (TypeError, KeyError, json_format.Error):  # a type this process cannot unpack
            details.append({"@type": d.type_url,
                            "value": base64.b64encode(d.value).decode("ascii")})
    return {"code": status.code, "message": status.message, "details": details}


#: RESOURCE_EXHAUSTED reasons that mean the server, not the caller, is out of room:
#: 503 (RFC 9110 "temporarily overloaded"), not grpc-gateway's 429 "too many requests".
SERVER_OVERLOAD = frozenset({"OVERLOADED"})


def _reason(status: status_pb2.Status) -> str:
    for d in status.details:
        if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            d.Unpack(info)
            return str(info.reason)
    return ""


def error_response(status: status_pb2.Status,
                   http_code: int | None = None) -> tuple[int, Headers, bytes]:
    """(HTTP status, headers, body) for a failed call."""
    code = http_status(status.code) if http_code is None else http_code
    if (http_code is None and status.code == code_pb2.RESOURCE_EXHAUSTED
            and _reason(status) in SERVER_OVERLOAD):
        code = 503
    headers: Headers = [(b"content-type", JSON)]
    if status.code == code_pb2.RESOURCE_EXHAUSTED:
        secs = retry_after(status)
        if secs is not None:
            headers.append((b"retry-after", str(secs).encode()))
    if code == 401:
        headers.append((b"www-authenticate", f'Bearer realm="{REALM}"'.encode()))
    body = json.dumps(status_dict(status), ensure_ascii=False, separators=(",", ":")).encode()
    return code, headers, body


def shim_status(code: str, message: str, reason: str, metadata: dict[str, str] | None = None,
                extra: list[object] | None = None) -> status_pb2.Status:
    """A status the shim itself answers with (routing, body size), in the same shape."""
    return status_for(code, message, reason, metadata, extra)
