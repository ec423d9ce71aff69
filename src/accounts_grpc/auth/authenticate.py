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
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from accounts_grpc.auth.jwt_tokens import JwtService
from accounts_grpc.auth.secrets import SESSION_TOKEN_PREFIX, hash_secret
from accounts_grpc.config import Settings
from accounts_grpc.domain.errors import Unauthenticated
from accounts_grpc.domain.principal import Principal
from accounts_grpc.store import principals
from accounts_grpc.store.db import Database, Record, new_etag, now_us


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
        with self._db.read(single_statement=True) as conn:
            rows = principals.by_user_id(conn, claims["sub"])
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
                rows, token_type="jwt", token_id=claims["jti"], expires_at=int(claims["exp"])
            )
            if touch and p.extra.get("touch_account"):
                now = now_us()
                principals.touch_account(
                    self._db, conn, p.account_id, now=now,
                    older_than=now - self._settings.activity_interval * 1_000_000,
                )
        return p

    def _session(self, token: str, *, touch: bool = True) -> Principal:
        now = now_us()
        with self._db.read(single_statement=True) as conn:
            rows = principals.by_session_token(conn, hash_secret(token))
            if not rows:
                raise Unauthenticated("the session token is not known", reason="TOKEN_INVALID")
            row = rows[0]
            if row.s_revoke_time is not None:
                raise Unauthenticated("the session has been revoked", reason="SESSION_REVOKED")
            if row.s_expire_time <= now:
                raise Unauthenticated("the session has expired", reason="SESSION_EXPIRED")
            p = self._principal(
                rows,
                token_type="session",
                session_id=row.s_id,
                expires_at=row.s_expire_time // 1_000_000,
            )
            if not touch:
                return p
            if now - row.s_last_activity_time > self._settings.activity_interval * 1_000_000:
                principals.touch_session(
                    self._db, conn, row.s_id, now=now,
                    expire_time=now + self._settings.session_ttl * 1_000_000, etag=new_etag(),
                )
            if p.extra.get("touch_account"):
                now = now_us()
                principals.touch_account(
                    self._db, conn, row.account_id, now=now,
                    older_than=now - self._settings.activity_interval * 1_000_000,
                )
        return p

    def _principal(self, rows: Sequence[Record], **extra: Any) -> Principal:
        row = rows[0]
        if row.a_closed:
            raise Unauthenticated("the account is closed", reason="ACCOUNT_CLOSED")
        roles = set(row.roles or ()) | {"member"}
        group_ids: set[str] = set()
        partition_ids: set[str] = set()
        for g in rows:
            if g.g_id is None:
                continue
            group_ids.add(g.g_id)
            roles.update(g.g_roles or ())
            if g.g_partition_id:
                partition_ids.add(g.g_partition_id)
        interval = self._settings.activity_interval * 1_000_000
        stale = row.a_activity_time is None or now_us() - row.a_activity_time > interval
        user_row, account_row = principals.user_and_account(row)
        return Principal(
            user_id=row.id,
            account_id=row.account_id,
            kind=row.kind,
            roles=frozenset(roles),
            account_roles=frozenset(row.a_roles or ()),
            partition_ids=frozenset(partition_ids),
            group_ids=frozenset(group_ids),
            client_id=row.client_id,
            extra={"touch_account": "1"} if stale else {},
            user_row=user_row,
            account_row=account_row,
            **extra,
        )
