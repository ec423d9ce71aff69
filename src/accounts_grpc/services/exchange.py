"""ExchangeToken: OAuth 2.0 Token Exchange (RFC 8693) for delegated tokens.

The caller's own token (``subject_token``: a JWT or a session token, a bearer token
either way) is exchanged for a JWT that acts in account ``account_id`` with delegated
roles (``scope``), for the user ``actor_user_id`` (the caller itself by default), named
in the token's ``act`` claim (§4.1). Who may delegate what is domain/delegation.py's
``refusal``, which the authenticator applies again on every call made with the token.

- The subject token is authenticated as any bearer token is (auth/authenticate.py); one
  that would not authenticate a call is INVALID_ARGUMENT ``SUBJECT_TOKEN_INVALID``
  (RFC 8693 §2.2.2: ``invalid_request``), its cause in the ErrorInfo metadata.
- A delegated subject token is PERMISSION_DENIED ``DELEGATED_TOKEN``: no chains.
- The lifetime is the least of ``requested_lifetime`` (if set), the subject token's
  remaining lifetime and ``--delegation-max-lifetime``.
- Every exchange that got as far as a known caller is audited, allowed
  ("token.exchange") or refused ("token.exchange_denied"), on the requested account
  (``resource_type`` "Account") in its log, or in the caller's when there is no such
  account, naming the actor and the subject (``delegation_*``). A refusal is committed
  before it is raised.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from accounts_grpc.auth.jwt_tokens import IssuedToken
from accounts_grpc.domain import delegation as D
from accounts_grpc.domain import roles as R
from accounts_grpc.domain.errors import (
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
    not_found,
)
from accounts_grpc.domain.ports import UnitOfWork
from accounts_grpc.domain.principal import Principal
from accounts_grpc.domain.validate import Validator
from accounts_grpc.services.deps import Deps

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
TOKEN_TYPES = (ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE)


@dataclass(frozen=True)
class ExchangeArgs:
    """An ExchangeTokenRequest as plain values."""

    subject_token: str
    subject_token_type: str
    account_id: str
    scope: str = ""
    actor_user_id: str = ""
    requested_token_type: str = ""
    requested_lifetime: int = 0
    grant_type: str = ""


@dataclass(frozen=True)
class Exchanged:
    issued: IssuedToken
    issued_token_type: str
    scope: str


def _check(a: ExchangeArgs) -> tuple[str, frozenset[str] | None]:
    """The request's own checks: (the token type to issue, the roles asked for)."""
    if a.grant_type not in ("", GRANT_TYPE):
        raise InvalidArgument.field("grant_type", f"must be {GRANT_TYPE}",
                                    reason="UNSUPPORTED_GRANT_TYPE")
    v = Validator()
    if not a.subject_token.strip():
        v.add("subject_token", "is required")
    if a.subject_token_type not in TOKEN_TYPES:
        v.add("subject_token_type", f"must be one of {list(TOKEN_TYPES)}")
    if a.requested_token_type not in ("", *TOKEN_TYPES):
        v.add("requested_token_type", f"must be empty or one of {list(TOKEN_TYPES)}")
    if a.requested_lifetime < 0:
        v.add("requested_lifetime", "must not be negative (0: as long as allowed)")
    v.id("account_id", a.account_id)
    v.id("actor_user_id", a.actor_user_id, required=False)
    v.raise_if_any()
    words = a.scope.split()
    roles = frozenset(R.validate_roles(words, R.USER_ROLES, "scope")) if words else None
    return a.requested_token_type or ACCESS_TOKEN_TYPE, roles


def _actor_refusal(actor: Any, actor_id: str) -> DomainError | None:
    """Why the user named to act cannot (an admin named it): none such, or closed."""
    if actor is None:
        return not_found("user", "id", actor_id)
    if actor.account_closed:
        return FailedPrecondition("the actor's account is closed", reason="ACCOUNT_CLOSED")
    return None


class ExchangeService:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def exchange(self, a: ExchangeArgs) -> Exchanged:
        """RFC 8693 §2: the subject token → a delegated JWT (module docstring)."""
        issued_type, asked = _check(a)
        try:
            p = self.deps.authn.principal_for_token(a.subject_token.strip(), touch=False)
        except Unauthenticated as e:
            raise InvalidArgument(f"subject_token: {e.message}", reason="SUBJECT_TOKEN_INVALID",
                                  metadata={"cause": e.reason}) from None
        if a.subject_token_type == JWT_TOKEN_TYPE and p.token_type != "jwt":
            raise InvalidArgument.field("subject_token_type", "the subject token is not a JWT; "
                                        f"its type is {ACCESS_TOKEN_TYPE}")
        roles = asked if asked is not None else D.default_roles(p.roles)
        actor_id = a.actor_user_id or p.user_id
        lifetime = self._lifetime(p, a.requested_lifetime)
        with self.deps.db.write() as uow:
            target = uow.accounts.get(a.account_id)
            log_in = target.id if target is not None else p.account_id
            why: DomainError | None = None
            if p.delegation is not None:
                why = PermissionDenied("a delegated token cannot be exchanged again",
                                       reason="DELEGATED_TOKEN")
                subject_id = p.delegation.subject_user_id
            else:
                subject_id = p.user_id
                why = D.refusal(
                    D.Grantor(p.user_id, p.account_id, p.roles), a.account_id,
                    None if target is None else D.TargetAccount(
                        target.id, target.consultancy_account_id, bool(target.closed)),
                    actor_id, roles)
            actor = uow.authority.user_by_id(actor_id) if why is None else None
            if why is None:
                why = _actor_refusal(actor, actor_id)
            self._audit(uow, p, log_in, a.account_id, actor_id, subject_id, why is None)
            if why is not None:
                uow.commit()  # the refusal is audited, then told
                raise why
            assert target is not None and actor is not None  # else ``why`` says why not
            issued = self.deps.jwts.issue(
                user_id=p.user_id, account_id=target.id, roles=sorted(roles), kind=actor.kind,
                lifetime=lifetime,
                generation=int(p.user_row.credential_generation),
                act={"sub": actor.id, "account_id": actor.account_id,
                     "gen": int(actor.credential_generation)},
            )
            uow.commit()
        return Exchanged(issued, issued_type, " ".join(sorted(roles)))

    def _lifetime(self, p: Principal, requested: int) -> int:
        """The least of what was asked, what the subject token has left, and the cap."""
        left = (p.expires_at or 0) - int(time.time())
        if left < 1:
            raise InvalidArgument("subject_token: the token expires now",
                                  reason="SUBJECT_TOKEN_INVALID",
                                  metadata={"cause": "TOKEN_EXPIRED"})
        return min(left, self.deps.settings.delegation_max_lifetime, requested or left)

    @staticmethod
    def _audit(uow: UnitOfWork, p: Principal, log_in: str, account_id: str, actor_id: str,
               subject_id: str, allowed: bool) -> None:
        uow.audit.record(
            account_id=log_in,
            actor_user_id=p.user_id,
            action="token.exchange" if allowed else "token.exchange_denied",
            resource_type="Account",
            resource_id=account_id,
            delegation=(actor_id, subject_id),
        )
