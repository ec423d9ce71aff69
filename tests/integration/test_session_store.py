"""store/sessions.py on SQLite and PostgreSQL: the client lookup of CreateToken, and
sessions inserted, read, scoped, revoked (once) and listed (only those that still work)."""

from __future__ import annotations

import pytest

from accounts_grpc.domain.listing import parse_list_request
from accounts_grpc.store import sessions as repo
from accounts_grpc.store.db import Database, new_etag, new_id, now_us
from accounts_grpc.store.tables import accounts, users

HOUR = 3600 * 1_000_000
SECRET = b"k" * 32


@pytest.fixture
def owner(db: Database) -> dict[str, str]:
    """An open account (a client of a consultancy) with one machine user."""
    now = now_us()
    ids = {"consultancy": new_id(), "account": new_id(), "user": new_id()}
    with db.write() as uow:
        for aid, consultancy in ((ids["consultancy"], None), (ids["account"], ids["consultancy"])):
            uow.conn.execute(accounts.insert().values(
                id=aid, name="acme", email=f"{aid}@example.com", email_lower=f"{aid}@example.com",
                roles=[], consultancy_account_id=consultancy, create_time=now, update_time=now,
                etag=new_etag()))
        uow.conn.execute(users.insert().values(
            id=ids["user"], account_id=ids["account"], kind="MACHINE", client_id="cid_1",
            secret_hash="ab" * 32, credential_generation=3, roles=["account-admin"],
            create_time=now, update_time=now, etag=new_etag()))
        uow.commit()
    return ids


def add(db: Database, owner: dict[str, str], *, now: int, ttl: int = HOUR) -> str:
    sid = new_id()
    with db.write() as uow:
        uow.sessions.insert(session_id=sid, user_id=owner["user"], account_id=owner["account"],
            token_hash=new_etag() + new_etag(), user_agent="ua/1", now=now,
            expire_time=now + ttl,
        )
        uow.commit()
    return sid


def test_client_by_client_id(db: Database, owner: dict[str, str]) -> None:
    with db.read() as uow:
        row = uow.sessions.client_by_client_id("cid_1")
        assert uow.sessions.client_by_client_id("cid_unknown") is None
    assert row is not None
    assert (row.id, row.account_id, row.kind, row.roles, row.secret_hash,
            row.credential_generation, bool(row.closed)) == (
        owner["user"], owner["account"], "MACHINE", ["account-admin"], "ab" * 32, 3, False)


def test_insert_read_and_scope(db: Database, owner: dict[str, str]) -> None:
    now = now_us()
    sid = add(db, owner, now=now)
    with db.read() as uow:
        row = uow.sessions.by_id(sid)
        scope = uow.sessions.scope(sid)
        assert uow.sessions.by_id(new_id()) is None
        assert uow.sessions.scope(new_id()) is None
    assert row is not None and scope is not None
    assert (row.user_id, row.account_id, row.user_agent, row.revoke_time) == (
        owner["user"], owner["account"], "ua/1", None)
    assert row.create_time == row.update_time == row.last_activity_time == now
    assert row.expire_time == now + HOUR and len(row.etag) == 32
    assert (scope.id, scope.user_id, scope.account_id, scope.revoke_time, scope.kind,
            scope.roles, scope.consultancy_account_id, bool(scope.closed)) == (
        sid, owner["user"], owner["account"], None, "MACHINE", ["account-admin"],
        owner["consultancy"], False)


def test_revoke_keeps_the_first_revoke_time(db: Database, owner: dict[str, str]) -> None:
    now = now_us()
    sid = add(db, owner, now=now)
    etags = set()
    for at in (now + 10, now + 20):  # the second revocation changes nothing
        with db.write() as uow:
            uow.sessions.revoke(sid, now=at)
            uow.commit()
        with db.read() as uow:
            row = uow.sessions.by_id(sid)
        assert row is not None and row.revoke_time == row.update_time == now + 10
        etags.add(row.etag)
    assert len(etags) == 1


def test_list_for_user_only_working_sessions_newest_first(
    db: Database, owner: dict[str, str]
) -> None:
    now = now_us()
    older, newer = add(db, owner, now=now - 2000), add(db, owner, now=now - 1000)
    add(db, owner, now=now - 3000, ttl=1000)  # expired
    revoked = add(db, owner, now=now - 500)
    with db.write() as uow:
        uow.sessions.revoke(revoked, now=now)
        uow.commit()
    query = parse_list_request(repo.SESSIONS_LIST, secret=SECRET,
                               scope={"user_id": owner["user"]})
    with db.read() as uow:
        page = uow.sessions.list_for_user(owner["user"], query, now=now)
        assert uow.sessions.list_for_user(new_id(), query, now=now).rows == []
    assert [r.id for r in page.rows] == [newer, older]
    assert page.total_size == 2 and page.next_page_token == ""
