"""Facts about the call being served (transport, client address, metadata).

Set once per call by the edge (``rpc.pipeline``), for gRPC and REST alike, and read by
the few use cases that need them (the token endpoint's rate limit, a session's user
agent) without importing anything from ``rpc``.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class CallInfo:
    """The call being served."""

    method: str  # "/accounts.v1.SessionService/CreateToken"
    transport: str  # "grpc" | "rest"
    peer: str  # the client's address without port, e.g. "127.0.0.1" or "::1"
    metadata: Mapping[str, str]  # lower-case keys; never logged


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
