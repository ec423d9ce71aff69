"""Helpers for the authentication and session tests (no tests here).

Accounts and users are written straight into the server's database: these tests are
about tokens, and must not depend on AccountService/UserService. Everything they then
check goes through the real server and a real channel.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import jwt
import sqlalchemy as sa
from accounts.v1 import session_service_pb2

from accounts_grpc.auth.secrets import hash_secret, new_client_id, new_client_secret
from accounts_grpc.store.db import new_etag, now_us
from accounts_grpc.store.tables import accounts, users
from tests.support import Server


def make_account(srv: Server, *, roles: tuple[str, ...] = (), name: str = "") -> str:
    aid = str(uuid.uuid4())
    now = now_us()
    email = f"{aid[:8]}@example.com"
    with srv.app.db.write() as uow:
        uow.conn.execute(
            accounts.insert().values(
                id=aid, name=name or f"acct {aid[:8]}", email=email, email_lower=email,
                roles=list(roles), consultancy_account_id=None, primary_color="",
                secondary_color="", logo_url="", closed=False, create_time=now,
                update_time=now, activity_time=None, etag=new_etag(),
            )
        )
        uow.commit()
    return aid


@dataclass(frozen=True)
class UserCreds:
    id: str
    account_id: str
    client_id: str = ""
    client_secret: str = ""
    external_id: str = ""


def make_user(
    srv: Server,
    account_id: str,
    *,
    kind: str = "MACHINE",
    roles: tuple[str, ...] = (),
    external_id: str = "",
) -> UserCreds:
    uid = str(uuid.uuid4())
    now = now_us()
    client_id = new_client_id() if kind == "MACHINE" else ""
    secret = new_client_secret() if kind == "MACHINE" else ""
    email = f"{uid[:8]}@example.com" if kind == "HUMAN" else None
    with srv.app.db.write() as uow:
        uow.conn.execute(
            users.insert().values(
                id=uid, account_id=account_id, kind=kind, email=email,
                email_lower=email, first_name="", last_name="",
                name=email or external_id or client_id, external_id=external_id or None,
                client_id=client_id or None, secret_hash=hash_secret(secret) if secret else None,
                roles=list(roles), create_time=now, update_time=now, etag=new_etag(),
            )
        )
        uow.commit()
    return UserCreds(uid, account_id, client_id, secret, external_id)


def token_for(srv: Server, user: UserCreds) -> str:
    resp = srv.stubs.sessions.CreateToken(
        session_service_pb2.CreateTokenRequest(
            client_id=user.client_id, client_secret=user.client_secret
        )
    )
    return str(resp.access_token)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims_for(srv: Server, user: UserCreds, **changes: Any) -> dict[str, Any]:
    """Valid claims for ``user``; ``changes`` override (None removes a claim)."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": srv.app.settings.issuer,
        "sub": user.id,
        "aud": srv.app.settings.audience,
        "iat": now,
        "exp": now + 600,
        "jti": str(uuid.uuid4()),
        "account_id": user.account_id,
        "roles": ["member"],
        "kind": "MACHINE",
    }
    for k, v in changes.items():
        if v is None:
            claims.pop(k, None)
        else:
            claims[k] = v
    return claims


def sign_with_server_key(srv: Server, claims: dict[str, Any]) -> str:
    """A token signed by the server's own current key (what the server itself would do)."""
    key = srv.app.keys.signing_key()
    return jwt.encode(claims, key.private_key, algorithm=key.alg, headers={"kid": key.kid})


def raw_jwt(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"",
            *, hmac_key: bytes | None = None) -> str:
    """A JWT put together by hand (PyJWT refuses some of these on purpose)."""
    signing_input = (
        b64url(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + b64url(json.dumps(claims, separators=(",", ":")).encode())
    )
    if hmac_key is not None:
        signature = hmac.new(hmac_key, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64url(signature)


@contextlib.contextmanager
def hold_write_lock(srv: Server) -> Iterator[None]:
    """Hold the database's write lock (SQLite) or the sessions table (PostgreSQL), so a
    call that writes is genuinely slow: it waits in the server until the block ends."""
    if srv.backend == "sqlite":
        path = srv.db_url.split(":///", 1)[1]
        conn = sqlite3.connect(path, isolation_level=None, timeout=30)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    from accounts_grpc.store.db import normalize_url

    engine = sa.create_engine(normalize_url(srv.db_url))
    with engine.connect() as c:
        tx = c.begin()
        c.exec_driver_sql("LOCK TABLE sessions, idempotency_keys, audit_events IN EXCLUSIVE MODE")
        try:
            yield
        finally:
            tx.rollback()
    engine.dispose()
