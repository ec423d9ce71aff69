"""CheckAccess and ListAccessibleDevices on a real server, over gRPC and REST, on both
databases: allowed and denied per rule, who may ask, the token form, a foreign tenant's
asset (answered exactly as a never-registered one), the batch, and paging.

The world: account A (consultancy C) with partitions P1 (devices d1, d2) and P2 (d3);
member M is in a group reaching P1, holds d2's permission with charging and d3's
without. Account B, another tenant, has a device and a partition of its own.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest
from accounts.v1 import access_pb2, user_service_pb2
from accounts.v1 import partition_service_pb2 as ps
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.groups_helpers import make_group, make_partition, register
from tests.e2e.rest_helpers import rest_error
from tests.e2e.users_helpers import (
    Persona,
    by_device,
    by_meter,
    create_account,
    device_id,
    human,
    ref,
    session_token,
    uniq,
)
from tests.support import Server, expect_error

us = user_service_pb2
C = grpc.StatusCode
READ, CONTROL, CHARGE = (
    access_pb2.ACCESS_ACTION_READ,
    access_pb2.ACCESS_ACTION_CONTROL,
    access_pb2.ACCESS_ACTION_CHARGE,
)
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"


@dataclass
class W:
    server: Server
    a: str
    owner: Persona  # account-admin of A
    member: Persona  # M
    consultant: Persona  # of C, A's consultancy
    stranger: Persona  # account-admin of B
    p1: Any
    p2: Any
    d1: Any
    d2: Any
    d3: Any
    foreign_device: Any  # in B
    foreign_partition: Any  # of B


@pytest.fixture(scope="module")
def w(server: Server) -> W:
    s = server
    c, _ = create_account(s, "Consultancy", roles=["consultancy"])
    a, owner = create_account(s, "Access", consultancy_account_id=c)
    b, other_owner = create_account(s, "Other")
    p1, p2 = make_partition(s, a), make_partition(s, a)
    d1, d2 = register(s, p1.id, dict(device_id=device_id(), meter_id=uniq("MTR-")),
                      dict(meter_id=uniq("MTR-")))
    (d3,) = register(s, p2.id, dict(device_id=device_id(), meter_id=uniq("MTR-")))
    member = human(s, "member", a)
    make_group(s, a, partition_ids=(p1.id,), members=(member.user_id,))
    s.stubs.users.AddDevicePermissions(us.AddDevicePermissionsRequest(
        user=ref(member.user_id),
        devices=[by_device(d3.device_id), by_meter(d2.meter_id)]),
        metadata=s.admin)
    s.stubs.users.AddChargingPermission(us.AddChargingPermissionRequest(
        user=ref(member.user_id), device=by_meter(d2.meter_id)),
        metadata=s.admin)
    pb_ = make_partition(s, b)
    (fd,) = register(s, pb_.id, dict(device_id=device_id()))
    return W(s, a, Persona("owner", owner, a, session_token(s, owner)), member,
             human(s, "consultant", c, ["consultant"]),
             Persona("stranger", other_owner, b, session_token(s, other_owner)),
             p1, p2, d1, d2, d3, fd, pb_)


def chk(action: int, **asset: str) -> access_pb2.AccessCheck:
    return access_pb2.AccessCheck(action=action, **asset)


def check(w: W, md: Any, *checks: access_pb2.AccessCheck, **who: str) -> list[tuple[Any, ...]]:
    resp = w.server.stubs.users.CheckAccess(
        us.CheckAccessRequest(checks=list(checks), **who), metadata=md)
    assert [d.check for d in resp.decisions] == list(checks)
    return [(d.allowed, d.rule, d.reason) for d in resp.decisions]


def test_each_rule_decides(w: W) -> None:
    m = w.member
    assert check(w, m.md,
                 chk(READ, device_id=w.d1.device_id),
                 chk(CONTROL, device_id=w.d1.device_id),
                 chk(CHARGE, device_id=w.d1.device_id),
                 chk(READ, meter_id=w.d2.meter_id),
                 chk(CHARGE, meter_id=w.d2.meter_id),
                 chk(READ, meter_id=w.d3.meter_id),
                 chk(CHARGE, device_id=w.d3.device_id),
                 chk(READ, partition_id=w.p1.id),
                 chk(READ, partition_id=w.p2.id)) == [
        (True, "group_partition", ""),
        (False, "no_rule", "CONTROL_NOT_GRANTED"),
        (False, "no_rule", "DEVICE_PERMISSION_REQUIRED"),
        (True, "device_permission", ""),
        (True, "charging_permission", ""),
        (True, "device_permission", ""),
        (False, "no_rule", "CHARGING_NOT_GRANTED"),
        (True, "group_partition", ""),
        (False, "no_rule", "NOT_VISIBLE"),
    ]
    # the same answers about M, asked by its account-admin and by admin
    for md in (w.owner.md, w.server.admin):
        assert check(w, md, chk(READ, partition_id=w.p2.id), chk(CHARGE, meter_id=w.d2.meter_id),
                     user_id=m.user_id) == [(False, "no_rule", "NOT_VISIBLE"),
                                            (True, "charging_permission", "")]
    assert check(w, w.owner.md, chk(CONTROL, partition_id=w.p2.id),
                 chk(CONTROL, device_id=w.d3.device_id), chk(CHARGE, device_id=w.d3.device_id)) == [
        (True, "account_role:account-admin", ""),
        (True, "account_role:account-admin", ""),
        (False, "no_rule", "DEVICE_PERMISSION_REQUIRED"),
    ]
    assert check(w, w.server.admin, chk(CONTROL, device_id=w.d1.device_id, account_id=w.a)) == [
        (True, "account_role:admin", "")]
    assert check(w, w.consultant.md, chk(READ, partition_id=w.p2.id),
                 chk(CONTROL, partition_id=w.p2.id)) == [
        (True, "account_role:consultant", ""), (False, "no_rule", "CONTROL_NOT_GRANTED")]


def test_a_foreign_asset_answers_as_a_never_registered_one(w: W) -> None:
    def full(md: Any, *checks: access_pb2.AccessCheck, **who: str) -> list[Any]:
        resp = w.server.stubs.users.CheckAccess(
            us.CheckAccessRequest(checks=list(checks), **who), metadata=md)
        return [(d.allowed, d.rule, d.reason, d.message) for d in resp.decisions]

    foreign = [chk(READ, device_id=w.foreign_device.device_id),
               chk(CHARGE, device_id=w.foreign_device.device_id, account_id=w.stranger.account_id),
               chk(CONTROL, partition_id=w.foreign_partition.id)]
    never = [chk(READ, device_id=device_id()),
             chk(CHARGE, device_id=device_id(), account_id=str(uuid.uuid4())),
             chk(CONTROL, partition_id=str(uuid.uuid4()))]
    for md, who in ((w.member.md, {}), (w.owner.md, {"user_id": w.member.user_id}),
                    (w.owner.md, {})):
        assert full(md, *foreign, **who) == full(md, *never, **who)
        assert {x[2] for x in full(md, *foreign, **who)} == {"NOT_VISIBLE"}
    # the stranger itself sees its own assets
    assert check(w, w.stranger.md, *foreign)[0] == (True, "account_role:account-admin", "")


def test_who_may_ask(w: W) -> None:
    users = w.server.stubs.users
    req = us.CheckAccessRequest(user_id=w.owner.user_id, checks=[chk(READ, partition_id=w.p1.id)])
    expect_error(users.CheckAccess, req, metadata=w.member.md, code=C.NOT_FOUND,
                 reason="USER_NOT_FOUND")
    req.user_id = w.member.user_id
    expect_error(users.CheckAccess, req, metadata=w.stranger.md, code=C.NOT_FOUND,
                 reason="USER_NOT_FOUND")
    for md in (w.member.md, w.owner.md, w.consultant.md, w.server.admin):
        assert users.CheckAccess(req, metadata=md).user_id == w.member.user_id
    expect_error(users.ListAccessibleDevices,
                 us.ListAccessibleDevicesRequest(user_id=w.member.user_id),
                 metadata=w.stranger.md, code=C.NOT_FOUND, reason="USER_NOT_FOUND")


def test_the_bearer_of_a_token(w: W) -> None:
    users, s = w.server.stubs.users, w.server
    token = session_token(s, w.member.user_id)
    req = us.CheckAccessRequest(token=token, checks=[chk(CHARGE, meter_id=w.d2.meter_id)])
    resp = users.CheckAccess(req, metadata=w.owner.md)
    assert resp.user_id == w.member.user_id and resp.decisions[0].allowed
    expect_error(users.CheckAccess, req, metadata=w.stranger.md, code=C.NOT_FOUND)
    expect_error(users.CheckAccess, us.CheckAccessRequest(
        token="not-a-token", checks=[chk(READ, partition_id=w.p1.id)]), metadata=w.owner.md,
        code=C.INVALID_ARGUMENT, reason="TOKEN_INVALID", field="token")
    expect_error(users.CheckAccess, us.CheckAccessRequest(
        token=token, user_id=w.member.user_id, checks=[chk(READ, partition_id=w.p1.id)]),
        metadata=w.owner.md, code=C.INVALID_ARGUMENT, field="token")


def test_bad_checks_are_named(w: W) -> None:
    users = w.server.stubs.users
    f = expect_error(users.CheckAccess, us.CheckAccessRequest(checks=[
        chk(READ, partition_id=w.p1.id), chk(0, partition_id=w.p1.id),
        chk(CHARGE, partition_id=w.p1.id), chk(READ), chk(READ, device_id="short"),
        chk(READ, partition_id="nope")]), metadata=w.member.md, code=C.INVALID_ARGUMENT)
    assert [v[0] for v in f.violations] == [
        "checks[1].action", "checks[2].action", "checks[3]", "checks[4].device_id",
        "checks[5].partition_id"]
    expect_error(users.CheckAccess, us.CheckAccessRequest(), metadata=w.member.md,
                 code=C.INVALID_ARGUMENT, field="checks")
    expect_error(users.CheckAccess, us.CheckAccessRequest(
        checks=[chk(READ, partition_id=w.p1.id)] * 1001), metadata=w.member.md,
        code=C.INVALID_ARGUMENT, field="checks")


def test_a_batch_answers_in_order(w: W) -> None:
    assets = [chk(READ, device_id=w.d1.device_id), chk(READ, device_id=w.d3.device_id),
              chk(CHARGE, meter_id=w.d2.meter_id), chk(READ, partition_id=w.p2.id),
              chk(READ, device_id=device_id())]
    one_by_one = [check(w, w.member.md, c)[0] for c in assets]
    batch = [assets[i % len(assets)] for i in range(1000)]
    assert check(w, w.member.md, *batch) == [one_by_one[i % len(assets)] for i in range(1000)]


def _pages(w: W, md: Any, user_id: str, size: int) -> list[Any]:
    out, token = [], ""
    while True:
        resp = w.server.stubs.users.ListAccessibleDevices(us.ListAccessibleDevicesRequest(
            user_id=user_id, page_size=size, page_token=token, order_by="name"), metadata=md)
        out.append(resp)
        token = resp.next_page_token
        if not token:
            return out


def test_list_accessible_devices_pages_with_actions_and_rules(w: W) -> None:
    pages = _pages(w, w.owner.md, w.member.user_id, 1)
    assert [p.total_size for p in pages] == [3, 3, 3]
    got = {d.device.id: [(g.action, g.rule) for g in d.grants]
           for p in pages for d in p.devices}
    assert got == {
        w.d1.id: [(READ, "group_partition")],
        w.d2.id: [(READ, "device_permission"), (CHARGE, "charging_permission")],
        w.d3.id: [(READ, "device_permission")],
    }
    back = w.server.stubs.users.ListAccessibleDevices(us.ListAccessibleDevicesRequest(
        user_id=w.member.user_id, page_size=1, page_token=pages[2].previous_page_token,
        order_by="name"), metadata=w.owner.md)
    assert back.devices == pages[1].devices and not pages[0].previous_page_token
    owner = _pages(w, w.owner.md, w.owner.user_id, 50)[0]
    assert {d.device.id for d in owner.devices} == {w.d1.id, w.d2.id, w.d3.id}
    assert all([g.action for g in d.grants] == [READ, CONTROL] for d in owner.devices)
    # the platform admin reads every tenant's devices; its account-admin sees only A's
    admin_id = w.server.stubs.users.GetMe(us.GetMeRequest(), metadata=w.server.admin).user.id
    seen_by_admin = {d.device.id for p in _pages(w, w.server.admin, admin_id, 1000)
                     for d in p.devices}
    assert {w.d1.id, w.foreign_device.id} <= seen_by_admin


def test_rest_routes(w: W) -> None:
    m, s = w.member, w.server
    body = {"checks": [{"action": "ACCESS_ACTION_CHARGE", "meterId": w.d2.meter_id},
                       {"action": "ACCESS_ACTION_READ", "partitionId": w.p2.id}]}
    with httpx.Client(base_url=s.http_url, timeout=30) as c:
        for path, token in ((f"/v1/users/{m.user_id}:checkAccess", w.owner.token),
                            ("/v1/users:checkAccess", m.token)):
            r = c.post(path, json=body, headers={"authorization": f"Bearer {token}"})
            assert r.status_code == 200, r.text
            out = r.json()
            assert out["userId"] == m.user_id
            assert [(d["allowed"], d["rule"], d["reason"]) for d in out["decisions"]] == [
                (True, "charging_permission", ""), (False, "no_rule", "NOT_VISIBLE")]
        r = c.get(f"/v1/users/{m.user_id}/accessibleDevices", params={"pageSize": 2},
                  headers={"authorization": f"Bearer {m.token}"})
        assert r.status_code == 200, r.text
        page = r.json()
        assert page["totalSize"] == 3 and len(page["devices"]) == 2 and page["nextPageToken"]
        assert page["devices"][0]["grants"][0]["action"] == "ACCESS_ACTION_READ"
    rest_error(s, "POST", f"/v1/users/{w.owner.user_id}:checkAccess", token=m.token,
               status=404, code=C.NOT_FOUND, reason="USER_NOT_FOUND", body=body)
    rest_error(s, "POST", "/v1/users:checkAccess", token=m.token, status=400,
               code=C.INVALID_ARGUMENT, reason="INVALID_ARGUMENT", field="checks[0].action",
               body={"checks": [{"partitionId": w.p1.id}]})
    rest_error(s, "GET", f"/v1/users/{UNKNOWN_ID}/accessibleDevices", token=w.owner.token,
               status=404, code=C.NOT_FOUND, reason="USER_NOT_FOUND")


# -- the property, end to end (the in-process one: tests/usecases/test_access_property.py) --


def _real(w: W, u: Persona) -> dict[tuple[int, str], bool]:
    """What the real RPCs answer to ``u`` itself: GetPartition, ListDevices and its own
    ListDevicePermissions (read), RegisterDevices of nothing (control: INVALID_ARGUMENT
    once the policy let it through), the permissions' ``charging`` (charge)."""
    stubs = w.server.stubs

    def passes(fn: Any, req: Any) -> bool:
        try:
            fn(req, metadata=u.md)
        except grpc.RpcError as e:
            assert e.code() in (C.NOT_FOUND, C.PERMISSION_DENIED, C.INVALID_ARGUMENT), e
            return bool(e.code() == C.INVALID_ARGUMENT)
        return True

    perms = {p.device.id: p.charging for p in stubs.users.ListDevicePermissions(
        us.ListDevicePermissionsRequest(user=ref(u.user_id), page_size=1000),
        metadata=u.md).permissions}
    listed: set[str] = set()
    if passes(stubs.partitions.ListDevices, ps.ListDevicesRequest(account_id=w.a)):
        listed = {d.id for d in stubs.partitions.ListDevices(
            ps.ListDevicesRequest(account_id=w.a, page_size=1000), metadata=u.md).devices}
    out = {}
    for part in (w.p1, w.p2, w.foreign_partition):
        get = ps.GetPartitionRequest(id=part.id)
        out[READ, part.id] = passes(stubs.partitions.GetPartition, get)
        out[CONTROL, part.id] = passes(stubs.partitions.RegisterDevices,
                                       ps.RegisterDevicesRequest(partition_id=part.id))
    for d, part in ((w.d1, w.p1), (w.d2, w.p1), (w.d3, w.p2)):
        out[READ, d.id] = d.id in listed or d.id in perms
        out[CONTROL, d.id] = out[CONTROL, part.id]
        out[CHARGE, d.id] = perms.get(d.id, False)
    return out


@settings(max_examples=6, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(roles=st.sampled_from([(), ("consultant",), ("account-admin",)]),
       reach=st.frozensets(st.sampled_from([0, 1])),
       perms=st.dictionaries(st.sampled_from([0, 1, 2]), st.booleans(), max_size=3))
def test_check_access_agrees_with_the_real_rpcs(
    w: W, roles: tuple[str, ...], reach: frozenset[int], perms: dict[int, bool]
) -> None:
    s, devs = w.server, (w.d1, w.d2, w.d3)
    u = human(s, "generated", w.a, roles)
    make_group(s, w.a, partition_ids=tuple((w.p1.id, w.p2.id)[i] for i in sorted(reach)),
               members=(u.user_id,))
    for i, charging in perms.items():
        dref = by_meter(devs[i].meter_id)
        s.stubs.users.AddDevicePermissions(us.AddDevicePermissionsRequest(
            user=ref(u.user_id), devices=[dref]), metadata=s.admin)
        if charging:
            s.stubs.users.AddChargingPermission(us.AddChargingPermissionRequest(
                user=ref(u.user_id), device=dref), metadata=s.admin)
    truth = _real(w, u)
    checks = [chk(a, partition_id=p.id) for p in (w.p1, w.p2, w.foreign_partition)
              for a in (READ, CONTROL)]
    ids = [p.id for p in (w.p1, w.p2, w.foreign_partition) for _ in (READ, CONTROL)]
    for d in devs:
        named = {"device_id": d.device_id} if d.device_id else {"meter_id": d.meter_id}
        checks += [chk(a, **named) for a in (READ, CONTROL, CHARGE)]
        ids += [d.id] * 3
    got = check(w, u.md, *checks)
    assert [g[0] for g in got] == [truth[c.action, i] for c, i in zip(checks, ids, strict=True)]
