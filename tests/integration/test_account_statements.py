"""The statements behind services/accounts.py, audit_log.py and bootstrap.py, on real
databases: ``uow.accounts`` (lists by scope, the user an account is made with, column
values), ``uow.audit`` (an account's events) and ``uow.bootstrap`` (bootstrap)."""

from __future__ import annotations

from typing import Any

import pytest

from accounts_grpc.domain.listing import Page, parse_list_request
from accounts_grpc.domain.ports import ListScope
from accounts_grpc.store import accounts as store
from accounts_grpc.store import audit, errors
from accounts_grpc.store.db import Database, new_etag, new_id, now_us

SECRET = b"s"


def _account(db: Database, name: str, *, consultancy: str | None = None,
             closed: bool = False) -> str:
    aid, now = new_id(), now_us()
    with db.write() as uow:
        uow.accounts.insert({
            "name": name, "email": f"{name}@X.io", "roles": [],
            "consultancy_account_id": consultancy or "", "primary_color": "",
            "secondary_color": "", "logo_url": "",
            "id": aid, "closed": closed, "create_time": now, "update_time": now,
            "activity_time": None, "etag": new_etag()})
        uow.commit()
    return aid


def _names(page: Page) -> list[str]:
    return [r.name for r in page.rows]


def _list(db: Database, scope: ListScope, own: str, *, flt: str = "",
          size: int = 50, token: str = "") -> Page:
    q = parse_list_request(store.ACCOUNTS_LIST, secret=SECRET, page_size=size, filter=flt,
                           page_token=token, order_by="name", scope={"s": scope, "own": own})
    with db.read() as uow:
        return uow.accounts.list_page(q, scope=scope, own=own)


def test_column_values() -> None:
    assert store._column_values({"email": " A@B.io ", "consultancy_account_id": ""}) == {
        "email": " A@B.io ", "email_lower": "a@b.io", "consultancy_account_id": None}
    assert store._column_values({"name": "n", "consultancy_account_id": "c"}) == {
        "name": "n", "consultancy_account_id": "c"}


def test_each_scope_lists_what_it_names(db: Database) -> None:
    consultancy = _account(db, "cons")
    client = _account(db, "client", consultancy=consultancy)
    _account(db, "gone", consultancy=consultancy, closed=True)
    other = _account(db, "other")
    assert _names(_list(db, "every", consultancy)) == ["client", "cons", "gone", "other"]
    assert _names(_list(db, "open", consultancy)) == ["client", "cons", "other"]
    assert _names(_list(db, "own", consultancy)) == ["cons"]
    assert _names(_list(db, "own_and_clients", consultancy)) == ["client", "cons"]
    # the statements are made once and kept: the bind parameter, not the first value, holds
    assert _names(_list(db, "own", other)) == ["other"]
    assert _names(_list(db, "own_and_clients", client)) == ["client"]
    assert _names(_list(db, "own", new_id())) == []
    # totals: read in account_counts (unfiltered whole lists) or counted
    assert [_list(db, s, consultancy, size=1).total_size
            for s in ("every", "open", "own", "own_and_clients")] == [4, 3, 1, 2]
    # filtered: counted (on SQLite by the search index alone, closed accounts marked in it)
    assert _list(db, "every", consultancy, flt="on", size=1).total_size == 2  # cons, gone
    assert _list(db, "open", consultancy, flt="on", size=1).total_size == 1
    assert _names(_list(db, "every", consultancy, flt="one")) == ["gone"]
    assert _names(_list(db, "open", consultancy, flt="one")) == []
    assert _names(_list(db, "own_and_clients", consultancy, flt="ent")) == ["client"]


def test_a_scoped_list_pages_with_its_token(db: Database) -> None:
    consultancy = _account(db, "cons")
    for i in range(3):
        _account(db, f"client{i}", consultancy=consultancy)
    first = _list(db, "own_and_clients", consultancy, size=2)
    assert _names(first) == ["client0", "client1"] and first.total_size == 4
    second = _list(db, "own_and_clients", consultancy, size=2, token=first.next_page_token)
    assert _names(second) == ["client2", "cons"] and not second.next_page_token


def _event(db: Database, account_id: str, action: str) -> None:
    with db.write() as uow:
        uow.audit.record(account_id=account_id, actor_user_id=None, action=action,
                     resource_type="Account", resource_id=account_id,
                     changed_fields=["name", "secret_hash"])
        uow.commit()


def _events(db: Database, account_id: str, *, flt: str = "", size: int = 50,
            token: str = "") -> Page:
    q = parse_list_request(audit.AUDIT_LIST, secret=SECRET, page_size=size, filter=flt,
                           page_token=token, scope={"account_id": account_id})
    with db.read() as uow:
        return uow.audit.list_page(account_id, q)


def test_audit_events_of_one_account_newest_first(db: Database) -> None:
    a, b = new_id(), new_id()
    for action in ("account.create", "user.create", "account.update"):
        _event(db, a, action)
    _event(db, b, "account.close")
    page = _events(db, a, size=2)
    assert [r.action for r in page.rows] == ["account.update", "user.create"]
    assert page.total_size == 3 and list(page.rows[0].changed_fields) == ["name"]
    rest = _events(db, a, size=2, token=page.next_page_token)
    assert [r.action for r in rest.rows] == ["account.create"]
    # the same shape of request for another account: its events only
    assert [r.action for r in _events(db, b, size=2).rows] == ["account.close"]
    assert [r.action for r in _events(db, a, flt="user").rows] == ["user.create"]
    assert _events(db, new_id()).rows == []


def test_the_user_an_account_is_made_with(db: Database) -> None:
    aid = _account(db, "acme")
    human, machine, now = new_id(), new_id(), now_us()
    with db.write() as uow:
        uow.accounts.insert_user(user_id=human, account_id=aid, kind="HUMAN",
                          email="Ann@Acme.io", first_name="Ann", last_name="Lee",
                          name="Ann Lee", roles=["account-admin"], now=now)
        uow.accounts.insert_user(user_id=machine, account_id=aid, kind="MACHINE",
                          email=None, first_name="", last_name="", name="bot",
                          roles=["admin"], now=now, client_id="cid", secret_hash="h")
        uow.commit()
    with db.read() as uow:
        h: Any = uow.accounts.user_by_id(human)
        m: Any = uow.accounts.user_by_id(machine)
        assert uow.accounts.user_by_id(new_id()) is None
    assert (h.email, h.email_lower, h.kind, h.roles, h.external_id, h.client_id) == (
        "Ann@Acme.io", "ann@acme.io", "HUMAN", ["account-admin"], None, None)
    assert h.create_time == h.update_time == now and h.etag
    assert (m.email, m.email_lower, m.client_id, m.secret_hash, m.roles) == (
        None, None, "cid", "h", ["admin"])
    assert m.etag != h.etag


def test_bootstrap_statements(db: Database) -> None:
    with db.read() as uow:
        assert not uow.bootstrap.any_user()
    closed = _account(db, "plat", closed=True)  # email plat@X.io, closed: not the platform's
    with db.write() as uow:
        assert uow.bootstrap.platform_account_id("plat@x.io") is None
        aid = new_id()
        uow.bootstrap.insert_platform_account(account_id=aid, name="Platform",
                                         email="Plat@X.io", now=now_us())
        assert uow.bootstrap.platform_account_id("PLAT@x.io") == aid
        uow.accounts.insert_user(user_id=new_id(), account_id=aid, kind="MACHINE",
                          email=None, first_name="", last_name="", name="bot",
                          roles=["admin"], now=now_us(), client_id="c1", secret_hash="h")
        uow.commit()
    with db.read() as uow:
        assert uow.bootstrap.any_user()
        row: Any = uow.accounts.get(aid)
    assert (row.email, row.email_lower, row.roles, row.closed, row.consultancy_account_id) == (
        "Plat@X.io", "plat@x.io", [], False, None)
    assert aid != closed
    # a second open platform account with that email: the constraint a concurrent
    # bootstrap loses on (services/bootstrap.py then runs again and finds the first)
    with pytest.raises(errors.ConstraintViolation), db.write() as uow:
        uow.bootstrap.insert_platform_account(account_id=new_id(), name="P",
                                         email="plat@x.io", now=now_us())
