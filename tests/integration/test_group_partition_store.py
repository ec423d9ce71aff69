"""store/groups.py, store/partitions.py, store/devices.py and
``uow.accounts.by_ids`` on SQLite and PostgreSQL: point reads with their account's scope,
names, members and partitions of groups, the lists (whole account, or what a member's
groups reach), the ids a device batch would take, and the accounts a list includes."""

from __future__ import annotations

from typing import Any

import pytest

from accounts_grpc.domain.listing import parse_list_request
from accounts_grpc.store import devices, groups, partitions
from accounts_grpc.store.db import Database, new_etag, new_id, now_us
from accounts_grpc.store.tables import accounts, users

SECRET = b"k" * 32


def _row(**values: Any) -> dict[str, Any]:
    now = now_us()
    return {"id": new_id(), "create_time": now, "update_time": now, "etag": new_etag(), **values}


@pytest.fixture
def world(db: Database) -> dict[str, Any]:
    """Two accounts (the first a client of the second); in the first, two partitions,
    three users and two groups: ``g1`` (u1, u2) reaches ``p1``, ``g2`` (u2) reaches
    ``p2``; devices d1, d2 in p1 and d3 in p2; one device in the other account."""
    ids: dict[str, Any] = {k: new_id() for k in ("consultancy", "account")}
    now = now_us()
    with db.write() as uow:
        for aid, consultancy, closed in (
            (ids["consultancy"], None, False),
            (ids["account"], ids["consultancy"], True),
        ):
            uow.conn.execute(accounts.insert().values(
                id=aid, name="acme", email=f"{aid}@example.com", email_lower=f"{aid}@example.com",
                roles=[], consultancy_account_id=consultancy, closed=closed, create_time=now,
                update_time=now, etag=new_etag()))
        for i in (1, 2, 3):
            ids[f"u{i}"] = uid = new_id()
            uow.conn.execute(users.insert().values(
                id=uid, account_id=ids["account"], kind="HUMAN", roles=[], create_time=now,
                update_time=now, etag=new_etag()))
        for name, aid in (("p1", ids["account"]), ("p2", ids["account"]),
                          ("px", ids["consultancy"])):
            row = _row(account_id=aid, name=f"{name} name", description=f"{name} text")
            uow.partitions.insert(row)
            ids[name] = row["id"]
        for name, members, pids in (("g1", ("u1", "u2"), ("p1",)), ("g2", ("u2",), ("p2",))):
            row = _row(account_id=ids["account"], name=f"{name} name", description="", roles=[])
            uow.groups.insert(row)
            ids[name] = row["id"]
            uow.groups.add_members(row["id"], [ids[u] for u in members])
            uow.groups.set_partitions(row["id"], sorted(ids[p] for p in pids))
        rows = []
        for i, (dev, pid) in enumerate((("d1", "p1"), ("d2", "p1"), ("d3", "p2"), ("dx", "px"))):
            ids[dev] = new_id()
            account = ids["consultancy"] if pid == "px" else ids["account"]
            rows.append({"id": ids[dev], "account_id": account, "partition_id": ids[pid],
                         "device_id": f"DEV{i:05d}", "meter_id": None if i == 1 else f"m-{i}",
                         "name": dev, "create_time": now + i, "update_time": now + i,
                         "etag": new_etag()})
        uow.devices.insert(rows)
        uow.commit()
    return ids


def _query(spec: Any, **kw: Any) -> Any:
    return parse_list_request(spec, secret=SECRET, scope={"t": 1}, **kw)


def test_load_with_the_accounts_scope(db: Database, world: dict[str, Any]) -> None:
    with db.write() as uow:  # for_update: a lock on PostgreSQL, the same row
        g = uow.groups.load(world["g1"], for_update=True)
        p = uow.partitions.load(world["p1"], for_update=True)
    with db.read() as uow:
        assert uow.groups.load(new_id()) is None
        assert uow.partitions.load(new_id()) is None
        assert uow.groups.load(world["g1"]) == g
        assert uow.partitions.load(world["p1"]) == p
    assert g is not None and p is not None
    assert (g.id, g.account_id, g.consultancy_account_id, bool(g.account_closed)) == (
        world["g1"], world["account"], world["consultancy"], True)
    assert (p.id, p.name, p.consultancy_account_id, bool(p.account_closed)) == (
        world["p1"], "p1 name", world["consultancy"], True)


def test_names_taken_in_the_account_only(db: Database, world: dict[str, Any]) -> None:
    aid, other = world["account"], world["consultancy"]
    with db.read() as uow:
        assert uow.groups.name_taken(aid, "g1 name")
        assert not uow.groups.name_taken(aid, "g1 name", other_than=world["g1"])
        assert uow.groups.name_taken(aid, "g1 name", other_than=world["g2"])
        assert not uow.groups.name_taken(other, "g1 name")
        assert uow.partitions.name_taken(aid, "p2 name")
        assert not uow.partitions.name_taken(aid, "p2 name", other_than=world["p2"])
        assert uow.partitions.name_taken(aid, "p2 name", other_than=world["p1"])
        assert not uow.partitions.name_taken(aid, "px name")


def test_members_partitions_and_ids_in_the_account(db: Database, world: dict[str, Any]) -> None:
    w = world
    with db.read() as uow:
        assert uow.groups.members_of([w["g1"], w["g2"]]) == {
            w["g1"]: [w["u1"], w["u2"]] if w["u1"] < w["u2"] else [w["u2"], w["u1"]],
            w["g2"]: [w["u2"]],
        }
        assert uow.groups.partitions_of([w["g1"], w["g2"]]) == {
            w["g1"]: [w["p1"]], w["g2"]: [w["p2"]]}
        assert uow.groups.members_of([]) == {} and uow.groups.partitions_of([]) == {}
        assert uow.groups.partitions_in_account(w["account"], [w["p1"], w["px"], w["p1"]]) == {
            w["p1"]}
        assert uow.groups.users_in_account(w["account"], [w["u3"], new_id()]) == {w["u3"]}
        assert uow.groups.users_in_account(w["account"], []) == set()
        assert [(r.id, r.account_id) for r in uow.groups.reaching(w["p2"])] == [
            (w["g2"], w["account"])]
        assert [r.id for r in uow.partitions.load_many([w["p2"], w["p1"], w["p2"]])] == sorted(
            [w["p1"], w["p2"]])


def test_add_remove_members_and_touch(db: Database, world: dict[str, Any]) -> None:
    w = world
    with db.write() as uow:
        assert uow.groups.add_members(w["g2"], [w["u1"], w["u2"]]) == [w["u1"]]
        assert uow.groups.remove_members(w["g2"], [w["u3"], w["u2"]]) == [w["u2"]]
        before = uow.groups.load(w["g2"])
        uow.groups.touch(w["g2"], now=before.update_time + 5)
        after = uow.groups.load(w["g2"])
        uow.commit()
    with db.read() as uow:
        assert uow.groups.members_of([w["g2"]]) == {w["g2"]: [w["u1"]]}
    assert after.update_time == before.update_time + 5
    assert after.etag != before.etag and len(after.etag) == 32
    assert (after.name, after.roles) == (before.name, before.roles)


def test_group_lists(db: Database, world: dict[str, Any]) -> None:
    w = world
    q = _query(groups.GROUPS_LIST, order_by="name")
    mine = _query(groups.MY_GROUPS_LIST)
    with db.read() as uow:
        every = uow.groups.list_in_account(w["account"], q)
        of_u1 = uow.groups.list_in_account(w["account"], q, member=w["u1"])
        none = uow.groups.list_in_account(w["consultancy"], q)
        my_u2 = uow.groups.list_of_member(w["u2"], mine)
        my_u3 = uow.groups.list_of_member(w["u3"], mine)
        found = uow.groups.list_in_account(w["account"], _query(groups.GROUPS_LIST,
                                                                  filter="g2"))
    assert [r.name for r in every.rows] == ["g1 name", "g2 name"] and every.total_size == 2
    assert [r.id for r in of_u1.rows] == [w["g1"]] and of_u1.total_size == 1
    assert none.rows == [] and none.total_size == 0
    assert {r.id for r in my_u2.rows} == {w["g1"], w["g2"]} and my_u2.total_size == 2
    assert my_u3.rows == []
    assert [r.id for r in found.rows] == [w["g2"]]


def test_partition_lists(db: Database, world: dict[str, Any]) -> None:
    w = world
    q = _query(partitions.PARTITIONS_LIST, order_by="name desc")
    with db.read() as uow:
        every = uow.partitions.list_in_account(w["account"], q)
        reached = uow.partitions.list_in_account(w["account"], q, reachable_by=w["u1"])
        unreached = uow.partitions.list_in_account(w["account"], q, reachable_by=w["u3"])
        found = uow.partitions.list_in_account(
            w["account"], _query(partitions.PARTITIONS_LIST, filter="p2 TEXT"))
    assert [r.id for r in every.rows] == [w["p2"], w["p1"]] and every.total_size == 2
    assert [r.id for r in reached.rows] == [w["p1"]]
    assert unreached.rows == [] and unreached.total_size == 0
    assert [r.id for r in found.rows] == [w["p2"]]


def test_device_lists_and_pages(db: Database, world: dict[str, Any]) -> None:
    w = world
    with db.read() as uow:
        in_p1 = uow.devices.list_in_partition(w["p1"], _query(devices.DEVICES_LIST))
        by_meter = uow.devices.list_in_account(
            w["account"], _query(devices.DEVICES_LIST, order_by="meter_id"))
        reached = uow.devices.list_in_account(
            w["account"], _query(devices.DEVICES_LIST), reachable_by=w["u2"])
        only_p1 = uow.devices.list_in_account(
            w["account"], _query(devices.DEVICES_LIST), reachable_by=w["u1"])
        found = uow.devices.list_in_account(
            w["account"], _query(devices.DEVICES_LIST, filter="M-2"))
        first = uow.devices.list_in_account(w["account"], _query(devices.DEVICES_LIST,
                                                                   page_size=2))
        second = uow.devices.list_in_account(w["account"], _query(
            devices.DEVICES_LIST, page_size=2, page_token=first.next_page_token))
    assert [r.name for r in in_p1.rows] == ["d1", "d2"]
    # a NULL meter_id sorts as '' (first)
    assert [r.name for r in by_meter.rows] == ["d2", "d1", "d3"]
    assert [r.name for r in reached.rows] == ["d1", "d2", "d3"]
    assert [r.name for r in only_p1.rows] == ["d1", "d2"]
    assert [r.name for r in found.rows] == ["d3"]
    assert [r.name for r in first.rows + second.rows] == ["d1", "d2", "d3"]
    assert first.total_size == second.total_size == 3 and second.next_page_token == ""


def test_device_ids_taken_in_the_account_only(db: Database, world: dict[str, Any]) -> None:
    w = world
    with db.read() as uow:
        assert uow.devices.registered(
            w["account"], ["DEV00000", "DEV00003", "NEW00000"], ["m-2", "m-3", "m-9"]
        ) == ({"DEV00000"}, {"m-2"})
        assert uow.devices.registered(w["consultancy"], ["DEV00003"], []) == (
            {"DEV00003"}, set())
        assert uow.devices.registered(w["account"], [], []) == (set(), set())
        assert uow.devices.ids_in_partition(w["p1"]) == sorted([w["d1"], w["d2"]])
        assert uow.devices.ids_in_partition(new_id()) == []
        loaded = uow.devices.load([w["d3"], new_id(), w["d1"]])
        assert uow.devices.load([]) == []
    assert [r.id for r in loaded] == [w["d3"], w["d1"]]


def test_delete_a_partition_with_its_devices_and_links(
    db: Database, world: dict[str, Any]
) -> None:
    w = world
    with db.write() as uow:
        uow.partitions.delete(w["p1"])
        uow.commit()
    with db.read() as uow:
        assert uow.partitions.load(w["p1"]) is None
        assert uow.devices.ids_in_partition(w["p1"]) == []
        assert uow.groups.partitions_of([w["g1"]]) == {w["g1"]: []}
        assert uow.devices.ids_in_partition(w["p2"]) == [w["d3"]]


def test_included_accounts_once_each_in_order(db: Database, world: dict[str, Any]) -> None:
    w = world
    with db.read() as uow:
        rows = uow.accounts.by_ids([w["consultancy"], new_id(), w["account"], w["consultancy"]])
        assert uow.accounts.by_ids([]) == []
    assert [r.id for r in rows] == [w["consultancy"], w["account"]]
    assert rows[0].email == f"{w['consultancy']}@example.com"
