"""Helpers for the AccountService tests (no tests here).

Fixtures are built through the public API as the bootstrapped admin: CreateAccount
(whose first user is an account-admin), UpdateAccount for account roles and
consultancy links, UserService.CreateUser for further users. A HUMAN user's token is a
real JWT minted by the server's own signing key (``app.jwts.issue``), which then goes
through the real authentication path; a MACHINE user gets its token from CreateToken.
The database is only read, to prove that a call changed nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import grpc
import sqlalchemy as sa
from accounts.v1 import (
    account_pb2,
    account_service_pb2,
    session_service_pb2,
    user_pb2,
    user_service_pb2,
)
from google.protobuf import field_mask_pb2

from accounts_grpc.auth.secrets import hash_secret, new_client_id, new_client_secret
from accounts_grpc.store.db import new_etag, new_id, now_us
from accounts_grpc.store.tables import accounts, audit_events, users
from tests.support import Server, bearer

pb = account_service_pb2
Md = tuple[tuple[str, str], ...]
HUMAN, MACHINE = user_pb2.USER_KIND_HUMAN, user_pb2.USER_KIND_MACHINE


def uniq(prefix: str = "") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def new_account(
    server: Server,
    *,
    name: str | None = None,
    email: str | None = None,
    roles: tuple[str, ...] = (),
    consultancy_account_id: str = "",
    request_id: str = "",
    metadata: Md | None = None,
) -> pb.CreateAccountResponse:
    """CreateAccount as admin, with unique names and emails."""
    return server.stubs.accounts.CreateAccount(
        pb.CreateAccountRequest(
            account=account_pb2.Account(
                name=name or uniq("Acme "),
                email=email or f"{uniq('ops-')}@example.com",
                roles=list(roles),
                consultancy_account_id=consultancy_account_id,
            ),
            first_user=user_pb2.User(
                kind=HUMAN, email=f"{uniq('first-')}@example.com", first_name="Fay",
                last_name="First",
            ),
            request_id=request_id,
        ),
        metadata=metadata or server.admin,
    )


def update(
    server: Server, account: account_pb2.Account, paths: list[str] | None = None,
    metadata: Md | None = None,
) -> account_pb2.Account:
    mask = field_mask_pb2.FieldMask(paths=paths) if paths is not None else None
    req = pb.UpdateAccountRequest(account=account, update_mask=mask)
    return server.stubs.accounts.UpdateAccount(req, metadata=metadata or server.admin).account


def get(server: Server, account_id: str, metadata: Md | None = None) -> account_pb2.Account:
    return server.stubs.accounts.GetAccount(
        pb.GetAccountRequest(id=account_id), metadata=metadata or server.admin
    ).account


def human_token(server: Server, user: user_pb2.User) -> Md:
    """A real JWT for a HUMAN user, signed by the server's current key."""
    issued = server.app.jwts.issue(
        user_id=user.id, account_id=user.account_id, roles=list(user.roles), kind="HUMAN"
    )
    return bearer(issued.token)


def machine_token(server: Server, client_id: str, client_secret: str) -> Md:
    resp = server.stubs.sessions.CreateToken(
        session_service_pb2.CreateTokenRequest(client_id=client_id, client_secret=client_secret)
    )
    return bearer(resp.access_token)


@dataclass
class NewUser:
    id: str
    account_id: str
    metadata: Md


def add_user(server: Server, account_id: str, *, kind: int = HUMAN,
             roles: tuple[str, ...] = ()) -> NewUser:
    """A user with ``roles`` in the account, and a token for it.

    Through UserService.CreateUser; only while that RPC is UNIMPLEMENTED, by a direct
    insert of the same row (the token still goes through the real auth path).
    """
    user = user_pb2.User(kind=kind, roles=list(roles))
    if kind == HUMAN:
        user.email = f"{uniq('u-')}@example.com"
        user.first_name, user.last_name = "Uma", "User"
    try:
        resp = server.stubs.users.CreateUser(
            user_service_pb2.CreateUserRequest(account_id=account_id, user=user),
            metadata=server.admin,
        )
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.UNIMPLEMENTED:
            raise
        return _insert_user(server, account_id, kind, roles, user.email)
    if kind == MACHINE:
        md = machine_token(server, resp.user.client_id, resp.client_secret)
    else:
        md = human_token(server, resp.user)
    return NewUser(resp.user.id, account_id, md)


def _insert_user(server: Server, account_id: str, kind: int, roles: tuple[str, ...],
                 email: str) -> NewUser:
    uid, now = new_id(), now_us()
    client_id = secret = None
    if kind == MACHINE:
        client_id, secret = new_client_id(), new_client_secret()
    with server.app.db.engine.begin() as conn:
        conn.execute(users.insert().values(
            id=uid, account_id=account_id, kind="MACHINE" if kind == MACHINE else "HUMAN",
            email=email or None, email_lower=email.lower() or None, first_name="Uma",
            last_name="User", name=email or f"machine {client_id}", external_id=None,
            client_id=client_id, secret_hash=hash_secret(secret) if secret else None,
            roles=list(roles), create_time=now, update_time=now, etag=new_etag(),
        ))
    if kind == MACHINE:
        assert client_id and secret
        return NewUser(uid, account_id, machine_token(server, client_id, secret))
    issued = server.app.jwts.issue(user_id=uid, account_id=account_id, roles=list(roles),
                                   kind="HUMAN")
    return NewUser(uid, account_id, bearer(issued.token))


def account_row(server: Server, account_id: str) -> Any:
    with server.app.db.engine.connect() as conn:
        return conn.execute(sa.select(accounts).where(accounts.c.id == account_id)).first()


def audit_count(server: Server, account_id: str | None = None) -> int:
    q = sa.select(sa.func.count()).select_from(audit_events)
    if account_id is not None:
        q = q.where(audit_events.c.account_id == account_id)
    with server.app.db.engine.connect() as conn:
        return int(conn.execute(q).scalar_one())


def account_count(server: Server) -> int:
    with server.app.db.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(accounts)).scalar_one())


def user_count(server: Server) -> int:
    with server.app.db.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(users)).scalar_one())


def snapshot(server: Server) -> tuple[Any, ...]:
    """Everything a failed call must leave unchanged: every account row (but the activity
    time, which any authenticated call may move), the audit log and the users."""
    cols = [c for c in accounts.c if c.name != "activity_time"]
    with server.app.db.engine.connect() as conn:
        rows = conn.execute(sa.select(*cols).order_by(accounts.c.id)).all()
    return (tuple(tuple(r) for r in rows), audit_count(server), user_count(server))
