"""Who is calling: built once per call at the edge, held in a contextvar."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from typing import Any

from accounts_grpc.domain.delegation import Delegation
from accounts_grpc.domain.errors import Unauthenticated


@dataclass(frozen=True)
class Principal:
    """An authenticated caller.

    ``roles`` are the *effective* roles: the user's direct roles, the roles of its
    groups and the implicit ``member``, loaded from the database on every call (a
    JWT's ``roles`` claim is a snapshot for other services, not trusted here).

    A delegated token (RFC 8693, domain/delegation.py) makes a Principal of another
    shape: ``user_id`` is its actor (who acts), ``account_id`` the account it acts in,
    ``roles`` its delegated roles and ``member`` (re-checked against the subject on every
    call, not the actor's own), no groups; ``delegation`` names the subject too.
    """

    user_id: str
    account_id: str
    kind: str  # "HUMAN" | "EXTERNAL" | "MACHINE"
    roles: frozenset[str]
    account_roles: frozenset[str]
    partition_ids: frozenset[str] = frozenset()
    group_ids: frozenset[str] = frozenset()
    token_type: str = "jwt"  # "jwt" | "session"
    session_id: str | None = None
    token_id: str | None = None  # the JWT's jti
    client_id: str | None = None
    expires_at: int | None = None
    #: set for a delegated token: its subject and actor
    delegation: Delegation | None = None
    extra: dict[str, str] = field(default_factory=dict, compare=False)
    #: the user's and account's rows as authentication read them on this call (GetMe
    #: answers from them instead of reading again); attribute access like table rows
    user_row: Any = field(default=None, compare=False, repr=False)
    account_row: Any = field(default=None, compare=False, repr=False)

    def has(self, role: str) -> bool:
        return role in self.roles

    @property
    def is_platform_reader(self) -> bool:
        return "admin" in self.roles or "admin-reader" in self.roles


_current: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "accounts_principal", default=None
)
_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("accounts_request_id", default="")


def current_principal() -> Principal:
    """The caller of the RPC being served; UNAUTHENTICATED if the RPC is public."""
    p = _current.get()
    if p is None:
        raise Unauthenticated("this call needs an access token", reason="TOKEN_MISSING")
    return p


def maybe_principal() -> Principal | None:
    return _current.get()


def set_principal(p: Principal | None) -> contextvars.Token[Principal | None]:
    return _current.set(p)


def reset_principal(token: contextvars.Token[Principal | None]) -> None:
    _current.reset(token)
