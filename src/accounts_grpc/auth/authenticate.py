"""From an ``authorization`` header to a Principal, once per call.

Both token kinds work on every RPC:
- a JWT (``CreateToken``) is verified offline (signature, kid, alg, iss, aud, exp, iat);
- an opaque session token (``CreateSession``) is looked up by its SHA-256.
Either way the user and its account are then read from the database on *every* call,
so a deleted user, a closed account, a revoked session, a removed role or a rotated
client secret (a JWT whose ``gen`` claim, missing meaning 0, is not the user's
``credential_generation``: ``TOKEN_REVOKED``) takes effect on the very next call, on
every server sharing the database. Activity times (session
sliding expiry, account ``activity_time``) are written at most once per
``activity_interval`` seconds, never on every call.

A delegated JWT (ExchangeToken, RFC 8693: it has ``act``) is checked the same way for
both its users: the actor (``act.sub``, whose ``gen`` is ``act.gen``) and the subject
(``sub``) must exist, in open accounts, with unchanged credentials, and the delegation
must still be one the subject may grant (domain/delegation.py ``refusal``, against the
target account as it is now), else ``DELEGATION_REVOKED``. Its Principal acts in the
token's account with the token's roles (domain/principal.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from accounts_grpc.auth.jwt_tokens import JwtService, actor_claim
from accounts_grpc.auth.secrets import SESSION_TOKEN_PREFIX, hash_secret
from accounts_grpc.config import Settings
from accounts_grpc.domain import delegation as D
from accounts_grpc.domain import ports
from accounts_grpc.domain.errors import Unauthenticated
from accounts_grpc.domain.principal import Principal
from accounts_grpc.store.db import Database, ReadUnitOfWork, new_etag, now_us
from accounts_grpc.store.rows import Record


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise Unauthenticated(
            "this call needs `authorization: Bearer <token>`", reason="TOKEN_MISSING"
        )
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated(
            "the authorization header must be `Bearer <token>`", reason="TOKEN_MALFORMED"
        )
    return token


class Authenticator:
    def __init__(self, db: Database, jwts: JwtService, settings: Settings) -> None:
        self._db = db
        self._jwts = jwts
        self._settings = settings

    def authenticate(self, authorization: str | None) -> Principal:
        return self.principal_for_token(bearer_token(authorization))

    def principal_for_token(self, token: str, *, touch: bool = True) -> Principal:
        """The Principal a token stands for, or Unauthenticated saying why not.

        ``touch=False`` only looks (IntrospectToken): no activity time is written, so a
        session's sliding expiry moves only when its token is used as a credential.
        """
        if token.startswith(SESSION_TOKEN_PREFIX):
            return self._session(token, touch=touch)
        if token.count(".") == 2:
            return self._jwt(token, touch=touch)
        raise Unauthenticated("the access token is malformed", reason="TOKEN_INVALID")

    def _jwt(self, token: str, *, touch: bool = True) -> Principal:
        claims = self._jwts.verify(token)
        actor = actor_claim(claims)
        if actor is not None:
            return self._delegated(claims, *actor)
        with self._db.read(single_statement=True) as uow:
            rows = uow.principals.by_user_id(claims["sub"])
            if not rows:
                raise Unauthenticated("the token's user no longer exists", reason="USER_DELETED")
            if rows[0].account_id != claims.get("account_id"):
                raise Unauthenticated("the token does not match its user", reason="TOKEN_INVALID")
            if claims.get("gen", 0) != rows[0].credential_generation:
                raise Unauthenticated(
                    "the access token is revoked: the client secret was rotated after this "
                    "token was issued",
                    reason="TOKEN_REVOKED",
                )
            p = self._principal(
                uow, rows, token_type="jwt", token_id=claims["jti"], expires_at=int(claims["exp"])
            )
            if touch and p.extra.get("touch_account"):
                now = now_us()
                uow.principals.touch_account(
                    p.account_id, now=now,
                    older_than=now - self._settings.activity_interval * 1_000_000,
                )
        return p

    def _session(self, token: str, *, touch: bool = True) -> Principal:
        now = now_us()
        with self._db.read(single_statement=True) as uow:
            rows = uow.principals.by_session_token(hash_secret(token))
            if not rows:
                raise Unauthenticated("the session token is not known", reason="TOKEN_INVALID")
            row = rows[0]
            if row.s_revoke_time is not None:
                raise Unauthenticated("the session has been revoked", reason="SESSION_REVOKED")
            if row.s_expire_time <= now:
                raise Unauthenticated("the session has expired", reason="SESSION_EXPIRED")
            p = self._principal(
                uow,
                rows,
                token_type="session",
                session_id=row.s_id,
                expires_at=row.s_expire_time // 1_000_000,
            )
            if not touch:
                return p
            if now - row.s_last_activity_time > self._settings.activity_interval * 1_000_000:
                uow.principals.touch_session(
                    row.s_id, now=now,
                    expire_time=now + self._settings.session_ttl * 1_000_000, etag=new_etag(),
                )
            if p.extra.get("touch_account"):
                now = now_us()
                uow.principals.touch_account(
                    row.account_id, now=now,
                    older_than=now - self._settings.activity_interval * 1_000_000,
                )
        return p

    def _delegated(self, claims: dict[str, Any], actor_id: str, actor_account_id: str,
                   actor_gen: int) -> Principal:
        """The Principal of a delegated JWT, if its actor, its subject and the delegation
        all still hold (module docstring). No activity time is written for it."""
        roles = claims.get("roles")
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise Unauthenticated("the access token's roles claim is malformed",
                                  reason="TOKEN_INVALID")
        with self._db.read() as uow:
            actor = _live(uow.principals.by_user_id(actor_id), actor_account_id, actor_gen,
                          "acting user")
            subject_id = claims["sub"]
            subject = actor if subject_id == actor_id else uow.principals.by_user_id(subject_id)
            subject_row = subject[0] if subject else None
            _live(subject, subject_row.account_id if subject_row else "",
                  claims.get("gen", 0), "user")
            assert subject_row is not None
            target = uow.accounts.get(str(claims.get("account_id", "")))
            why = D.refusal(
                D.Grantor(subject_id, subject_row.account_id, frozenset(_roles(subject))),
                str(claims.get("account_id", "")),
                None if target is None else D.TargetAccount(
                    target.id, target.consultancy_account_id, bool(target.closed)),
                actor_id, frozenset(roles))
            if why is not None:
                raise Unauthenticated(f"the delegation no longer holds: {why.message}",
                                      reason="DELEGATION_REVOKED")
            assert target is not None
            user_row, _own_account = uow.principals.user_and_account(actor[0])
        return Principal(
            user_id=actor_id,
            account_id=target.id,
            kind=actor[0].kind,
            roles=frozenset(roles) | {"member"},
            account_roles=frozenset(target.roles or ()),
            token_type="jwt",
            token_id=claims["jti"],
            expires_at=int(claims["exp"]),
            delegation=D.Delegation(subject_id, actor_id, frozenset(roles)),
            user_row=user_row,
            account_row=target,
        )

    def _principal(self, uow: ReadUnitOfWork, rows: Sequence[Record], **extra: Any) -> Principal:
        row = rows[0]
        if row.a_closed:
            raise Unauthenticated("the account is closed", reason="ACCOUNT_CLOSED")
        interval = self._settings.activity_interval * 1_000_000
        stale = row.a_activity_time is None or now_us() - row.a_activity_time > interval
        return principal_of(uow, rows, extra={"touch_account": "1"} if stale else {}, **extra)


def principal_of(uow: ports.ReadUnitOfWork, rows: Sequence[Record], **extra: Any) -> Principal:
    """The Principal that a user's authentication rows (``uow.principals.by_user_id`` or
    ``by_session_token``: the user, its account, one row per group and partition) describe:
    its effective roles, groups and partitions, and the rows as read. The one place this is
    worked out, for a caller and for the user a CheckAccess asks about alike."""
    row = rows[0]
    groups = [g for g in rows if g.g_id is not None]
    user_row, account_row = uow.principals.user_and_account(row)
    return Principal(
        user_id=row.id,
        account_id=row.account_id,
        kind=row.kind,
        roles=frozenset(_roles(rows)),
        account_roles=frozenset(row.a_roles or ()),
        partition_ids=frozenset(g.g_partition_id for g in groups if g.g_partition_id),
        group_ids=frozenset(g.g_id for g in groups),
        client_id=row.client_id,
        user_row=user_row,
        account_row=account_row,
        **extra,
    )


def _roles(rows: Sequence[Record]) -> set[str]:
    """A user's effective roles from its authentication rows: direct, groups', member."""
    out = set(rows[0].roles or ()) | {"member"}
    for g in rows:
        out.update(g.g_roles or ())
    return out


def _live(rows: Sequence[Record], account_id: str, generation: object, who: str
          ) -> Sequence[Record]:
    """The rows of a delegated token's actor or subject, if it still stands as the token
    says: it exists, in ``account_id``, still open, with credential ``generation``."""
    if not rows:
        raise Unauthenticated(f"the token's {who} no longer exists", reason="USER_DELETED")
    row = rows[0]
    if row.account_id != account_id:
        raise Unauthenticated("the token does not match its user", reason="TOKEN_INVALID")
    if row.a_closed:
        raise Unauthenticated(f"the account of the token's {who} is closed",
                              reason="ACCOUNT_CLOSED")
    if generation != row.credential_generation:
        raise Unauthenticated(
            f"the access token is revoked: the client secret of its {who} was rotated "
            "after it was issued", reason="TOKEN_REVOKED")
    return rows
