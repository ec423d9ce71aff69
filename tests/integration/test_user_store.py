"""The statements behind services/users.py, device_permissions.py, charging.py and
orders.py, on SQLite and PostgreSQL: ``uow.users`` (point reads, unique keys, insert,
cascade delete, the secret's generation, ListUsers' visibility), ``uow.devices``,
``uow.device_permissions``, ``uow.orders`` and store/errors.ConstraintViolation; and the
retried write of services/user_access.py."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from accounts_grpc.domain.errors import Aborted, AlreadyExists
from accounts_grpc.domain.listing import parse_list_request
from accounts_grpc.domain.ports import Visible
from accounts_grpc.services.user_access import write
from accounts_grpc.store import device_permissions, errors, orders
from accounts_grpc.store import users as repo
from accounts_grpc.store.db import Database, new_etag, new_id, now_us
from accounts_grpc.store.tables import (
    accounts,
    group_members,
    partitions,
    sessions,
    user_groups,
)
from accounts_grpc.store.tables import devices as devices_table
from accounts_grpc.store.tables import users as users_table

SECRET = b"k" * 32


def _account(conn: sa.Connection) -> str:
    aid, now = new_id(), now_us()
    conn.execute(accounts.insert().values(
        id=aid, name="A", email=f"{aid}@x.io", email_lower=f"{aid}@x.io", roles=[],
        consultancy_account_id=None, create_time=now, update_time=now, etag=new_etag()))
    return aid


def _user(account_id: str, kind: str = "HUMAN", **values: Any) -> dict[str, Any]:
    now = now_us()
    email = values.pop("email", None)
    return {
        "id": new_id(), "account_id": account_id, "kind": kind, "email": email,
        "email_lower": email.lower() if email else None, "first_name": "", "last_name": "",
        "name": email or "", "external_id": None, "client_id": None, "secret_hash": None,
        "roles": ["member"], "create_time": now, "update_time": now, "etag": new_etag(),
        **values,
    }


def _device(conn: sa.Connection, account_id: str, device_id: str | None,
            meter_id: str | None = None) -> str:
    pid, pk, now = new_id(), new_id(), now_us()
    conn.execute(partitions.insert().values(
        id=pid, account_id=account_id, name=f"p-{pid}", create_time=now, update_time=now,
        etag=new_etag()))
    conn.execute(devices_table.insert().values(
        id=pk, account_id=account_id, partition_id=pid, device_id=device_id, meter_id=meter_id,
        name=f"dev {device_id or meter_id}", create_time=now, update_time=now, etag=new_etag()))
    return pk


@pytest.fixture
def world(db: Database) -> dict[str, Any]:
    """Two accounts; the first with a HUMAN, an EXTERNAL and a MACHINE user and two
    devices, the second with one device whose ids the first's share."""
    with db.write() as uow:
        a, b = _account(uow.conn), _account(uow.conn)
        human = _user(a, email="Ada@Example.com", first_name="Ada")
        external = _user(a, "EXTERNAL", external_id="ext-1")
        machine = _user(a, "MACHINE", client_id="cid-1", secret_hash="ab" * 32)
        for u in (human, external, machine):
            uow.users.insert(u, AssertionError)
        ids = {
            "a": a, "b": b, "human": human["id"], "external": external["id"],
            "machine": machine["id"],
            "d1": _device(uow.conn, a, "AB12CD34"),
            "d2": _device(uow.conn, a, None, "meter-2"),
            "other": _device(uow.conn, b, "AB12CD34", "meter-2"),
        }
        uow.commit()
    return ids


# -- users -------------------------------------------------------------------------------------


def test_me_reads_the_user_and_its_account(db: Database, world: dict[str, Any]) -> None:
    with db.read() as uow:
        user, account = uow.users.me(world["human"], world["a"])
        assert (user.id, user.email, account.id) == (world["human"], "Ada@Example.com", world["a"])
        assert uow.users.me(new_id(), new_id()) == (None, None)


def test_user_by_email_is_case_blind_and_carries_the_account_scope(
    db: Database, world: dict[str, Any]
) -> None:
    with db.read() as uow:
        row = uow.users.user_by_email(world["a"], "  ada@EXAMPLE.com ")
        assert row is not None and row.id == world["human"]
        assert row.consultancy_account_id is None and row.account_closed is False
        assert uow.users.user_by_email(world["b"], "ada@example.com") is None


def test_taken_fields(db: Database, world: dict[str, Any]) -> None:
    a = world["a"]
    with db.read() as uow:
        assert uow.users.taken_fields(a, email="ADA@example.com", external_id="ext-1") == [
            "email", "external_id"]
        assert uow.users.taken_fields(a, email="bob@example.com", external_id="ext-2") == []
        assert uow.users.taken_fields(world["b"], email="ada@example.com") == []
        assert uow.users.taken_fields(a, email="ada@example.com",
                                 exclude_user_id=world["human"]) == []
        assert uow.users.taken_fields(a, external_id="ext-1",
                                 exclude_user_id=world["human"]) == ["external_id"]
        assert uow.users.taken_fields(a) == []


@pytest.mark.parametrize("field", ["email", "external_id", "client_id"])
def test_insert_user_reports_the_unique_key_it_lost(
    db: Database, world: dict[str, Any], field: str
) -> None:
    taken = {"email": {"email": "ada@example.com"}, "external_id": {"external_id": "ext-1"},
             "client_id": {"client_id": "cid-1"}}[field]
    with db.write() as uow:
        if field == "client_id":
            with pytest.raises(sa.exc.IntegrityError):  # not the caller's to explain
                uow.users.insert(_user(world["a"], "EXTERNAL", **taken,
                                                 external_id="x"), AlreadyExists)
        else:
            with pytest.raises(AlreadyExists) as e:
                uow.users.insert(_user(world["a"], "EXTERNAL", **taken),
                                 lambda f: AlreadyExists(f))
            assert str(e.value) == field


def test_delete_user_cascade_counts_what_went(db: Database, world: dict[str, Any]) -> None:
    uid, now = world["external"], now_us()
    with db.write() as uow:
        gid = new_id()
        uow.conn.execute(user_groups.insert().values(
            id=gid, account_id=world["a"], name="g", roles=[], create_time=now,
            update_time=now, etag=new_etag()))
        uow.conn.execute(group_members.insert().values(group_id=gid, user_id=uid,
                                                       create_time=now))
        uow.conn.execute(sessions.insert().values(
            id=new_id(), user_id=uid, account_id=world["a"], token_hash="t" * 64,
            create_time=now, update_time=now, last_activity_time=now, expire_time=now + 1,
            etag=new_etag()))
        uow.orders.insert(_order(world, "o-1"))
        uow.orders.insert(_order(world, "o-2"))
        counts = uow.users.delete_cascade(uid)
        assert counts == {"memberships": 1, "device_permissions": 0, "sessions": 1, "orders": 2}
        assert uow.users.me(uid, world["a"])[0] is None
        assert uow.users.me(world["human"], world["a"])[0] is not None
        uow.commit()


def test_secret_rotated_takes_the_next_generation(db: Database, world: dict[str, Any]) -> None:
    uid = world["machine"]
    for expected in (1, 2):
        with db.write() as uow:
            values = uow.users.secret_rotated("cd" * 32)
            uow.conn.execute(users_table.update().where(users_table.c.id == uid).values(**values))
            uow.commit()
        with db.read() as uow:
            row = uow.users.me(uid, world["a"])[0]
            assert (row.secret_hash, row.credential_generation) == ("cd" * 32, expected)


def _ids(page: Any) -> set[str]:
    return {r.id for r in page.rows}


def test_list_users_by_account_kind_and_visibility(db: Database, world: dict[str, Any]) -> None:
    a = world["a"]
    everyone = {world["human"], world["external"], world["machine"]}

    def page(**kw: Any) -> set[str]:
        q = parse_list_request(repo.USER_LIST, secret=SECRET, scope={"t": repr(kw)})
        with db.read() as uow:
            return _ids(uow.users.list_page(q, **kw))

    assert page(account_id=a) == everyone
    assert page(account_id=None) >= everyone
    assert page(account_id=world["b"]) == set()
    assert page(account_id=a, kind="MACHINE") == {world["machine"]}
    assert page(account_id=a, visible=Visible(("EXTERNAL",))) == {world["external"]}
    assert page(account_id=a, visible=Visible(("EXTERNAL",), world["human"])) == {
        world["external"], world["human"]}
    assert page(account_id=a, visible=Visible((), world["machine"])) == {world["machine"]}
    assert page(account_id=a, kind="HUMAN", visible=Visible(("EXTERNAL",))) == set()
    assert page(account_id=a, visible=Visible()) == set()


def test_list_users_searches_and_orders(db: Database, world: dict[str, Any]) -> None:
    q = parse_list_request(repo.USER_LIST, secret=SECRET, filter="ada", order_by="email desc")
    with db.read() as uow:
        assert _ids(uow.users.list_page(q, account_id=world["a"])) == {world["human"]}


# -- devices and permissions -------------------------------------------------------------------


def test_devices_in_account_by_device_or_meter_id(db: Database, world: dict[str, Any]) -> None:
    a = world["a"]
    with db.read() as uow:
        def pks(dids: list[str], mids: list[str]) -> set[str]:
            return {d.id for d in uow.devices.in_account(a, dids, mids)}

        assert pks(["AB12CD34"], []) == {world["d1"]}
        assert pks([], ["meter-2"]) == {world["d2"]}
        assert pks(["AB12CD34", "FFFFFFFF"], ["meter-2", "nope"]) == {world["d1"], world["d2"]}
        assert pks([], []) == set()
        assert pks(["FFFFFFFF"], []) == set()
        other = uow.devices.in_account(world["b"], ["AB12CD34"], ["meter-2"])
        assert [d.id for d in other] == [world["other"]]


def _permission(world: dict[str, Any], device_pk: str, user: str = "human") -> dict[str, Any]:
    now = now_us()
    return {"id": new_id(), "user_id": world[user], "device_pk": device_pk,
            "account_id": world["a"], "charging": False, "create_time": now,
            "update_time": now, "etag": new_etag()}


def test_permissions_inserted_read_with_their_device_listed_and_deleted(
    db: Database, world: dict[str, Any]
) -> None:
    uid, d1, d2 = world["human"], world["d1"], world["d2"]
    with db.write() as uow:
        assert uow.device_permissions.of_user(uid, [d1, d2]) == {}
        uow.device_permissions.insert([])
        uow.device_permissions.insert([_permission(world, d1), _permission(world, d2)])
        uow.device_permissions.insert([_permission(world, d1, "external")])
        held = uow.device_permissions.of_user(uid, [d1, d2])
        assert set(held) == {d1, d2}
        assert (held[d1].d_device_id, held[d1].d_meter_id, held[d1].charging) == (
            "AB12CD34", None, False)
        assert held[d2].d_meter_id == "meter-2"
        assert uow.device_permissions.of_user(uid, []) == {}
        uow.commit()
    q = parse_list_request(device_permissions.PERMISSION_LIST, secret=SECRET, filter="meter")
    with db.read() as uow:
        page = uow.device_permissions.list_for_user(uid, q)
        assert [r.device_pk for r in page.rows] == [d2]
        all_ = parse_list_request(device_permissions.PERMISSION_LIST, secret=SECRET)
        assert {r.device_pk for r in uow.device_permissions.list_for_user(uid, all_).rows} == {
            d1, d2}
    with db.write() as uow:
        uow.device_permissions.delete(uid, [])
        uow.device_permissions.delete(uid, [d1])
        assert set(uow.device_permissions.of_user(uid, [d1, d2])) == {d2}
        assert set(uow.device_permissions.of_user(world["external"], [d1])) == {d1}
        uow.commit()


# -- orders ------------------------------------------------------------------------------------


def _order(world: dict[str, Any], order_id: str, **values: Any) -> dict[str, Any]:
    now = now_us()
    return {"id": new_id(), "account_id": world["a"], "user_id": world["external"],
            "order_id": order_id, "status": "RECEIVED", "device_id": None,
            "tracking_link": None, "create_time": now, "update_time": now,
            "etag": new_etag(), **values}


def test_orders_inserted_found_and_listed(db: Database, world: dict[str, Any]) -> None:
    first = _order(world, "o-1")
    with db.write() as uow:
        uow.orders.insert(first)
        uow.orders.insert(_order(world, "o-2", tracking_link="https://t.example/2"))
        uow.commit()
    with db.read() as uow:
        row = uow.orders.by_order_id(world["a"], "o-1")
        assert row is not None and row.id == first["id"]
        assert uow.orders.by_order_id(world["b"], "o-1") is None
        by_pk = uow.orders.by_pk(first["id"])
        assert by_pk is not None and by_pk.order_id == "o-1"
        assert uow.orders.by_pk(new_id()) is None
        q = parse_list_request(orders.ORDER_LIST, secret=SECRET, order_by="order_id desc")
        page = uow.orders.list_for_user(world["external"], q)
        assert [r.order_id for r in page.rows] == ["o-2", "o-1"]
        q = parse_list_request(orders.ORDER_LIST, secret=SECRET, filter="t.example")
        assert [r.order_id for r in uow.orders.list_for_user(world["external"], q).rows] == [
            "o-2"]
        assert uow.orders.list_for_user(world["human"], q).rows == []


# -- lost races --------------------------------------------------------------------------------


def test_unique_and_foreign_keys_are_constraint_violations(
    db: Database, world: dict[str, Any]
) -> None:
    with pytest.raises(errors.ConstraintViolation), db.write() as uow:
        uow.orders.insert(_order(world, "dup"))
        uow.orders.insert(_order(world, "dup"))
    with pytest.raises(errors.ConstraintViolation), db.write() as uow:
        uow.orders.insert(_order(world, "x", user_id=new_id()))  # no such user


def test_a_spoiled_write_runs_once_more_then_aborts(db: Database, world: dict[str, Any]) -> None:
    calls: list[int] = []

    def once_spoiled(uow: Any) -> str:
        calls.append(1)
        if len(calls) == 1:  # a concurrent writer took the key first, this time only
            uow.orders.insert(_order(world, "race"))
            uow.orders.insert(_order(world, "race"))
        return "done"

    assert write(db, once_spoiled) == "done" and len(calls) == 2

    def always_spoiled(uow: Any) -> None:
        uow.orders.insert(_order(world, "again"))
        uow.orders.insert(_order(world, "again"))

    with pytest.raises(Aborted) as e:
        write(db, always_spoiled)
    assert e.value.reason == "CONCURRENT_MODIFICATION"
    with db.read() as uow:  # nothing of any attempt was kept
        assert uow.orders.by_order_id(world["a"], "race") is None
        assert uow.orders.by_order_id(world["a"], "again") is None
        count = sa.select(sa.func.count()).select_from(users_table)
        assert uow.conn.execute(count).scalar_one() == 3
