"""Facts about the call being served (transport, client address, request id, metadata).

Set once per call by the edge (``rpc.pipeline``), for gRPC and REST alike, and read by
the few use cases that need them (the token endpoint's rate limit, a session's user
agent) without importing anything from ``rpc``.

The request id: a caller may name its call with ``x-request-id`` (gRPC metadata, or the
``X-Request-Id`` HTTP header); ``request_id`` keeps a value that is 1 to 128 visible
ASCII characters (``!`` to ``~``: no space, no control character, nothing outside
ASCII) and replaces anything else, or nothing, with a new id (32 hex digits, a UUID4).
A value that fails is replaced rather than refused: the id is for tracing, and a call
should not fail over it. Both edges echo the id the call ended up with, and the call's
log line names it, so what reaches the log is always one token of safe characters.
"""

from __future__ import annotations

import contextvars
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

#: the metadata key (gRPC) and, case-insensitively, the HTTP header
REQUEST_ID_KEY = "x-request-id"
REQUEST_ID_MAX = 128
_REQUEST_ID = re.compile(rf"[!-~]{{1,{REQUEST_ID_MAX}}}")


def new_request_id() -> str:
    """A fresh request id: 32 lower-case hex digits."""
    return uuid.uuid4().hex


def request_id(given: str | None) -> str:
    """The caller's request id if it is well formed, otherwise a new one."""
    if given and _REQUEST_ID.fullmatch(given):
        return given
    return new_request_id()


@dataclass(frozen=True)
class CallInfo:
    """The call being served."""

    method: str  # "/accounts.v1.SessionService/CreateToken"
    transport: str  # "grpc" | "rest"
    peer: str  # the client's address without port, e.g. "127.0.0.1" or "::1"
    metadata: Mapping[str, str]  # lower-case keys; never logged
    request_id: str = ""  # the call's id (see ``request_id``), echoed and logged


_call: contextvars.ContextVar[CallInfo | None] = contextvars.ContextVar(
    "accounts_call", default=None
)


def current_call() -> CallInfo | None:
    """The call being served, or None outside a call (tests, the CLI)."""
    return _call.get()


def set_call(info: CallInfo | None) -> contextvars.Token[CallInfo | None]:
    return _call.set(info)


def reset_call(token: contextvars.Token[CallInfo | None]) -> None:
    _call.reset(token)
