"""Who may call what on UserService: every RPC by every persona, one exact outcome per cell.

Personas (see ``build_world``): ``member`` (HUMAN member of the intermediary account),
``account-admin`` of that account, ``intermediary-machine`` (MACHINE member of it),
``consultant`` (in the account's consultancy), ``admin-reader`` and ``admin`` (platform),
``stranger`` (account-admin of an unrelated account). Targets live in the intermediary
account: X is an EXTERNAL user, H a HUMAN member, M a MACHINE user; each write cell
gets fresh targets. A denied write must change nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from accounts.v1 import access_pb2, user_pb2
from accounts.v1 import user_service_pb2 as us
from google.protobuf import field_mask_pb2

from tests.e2e.users_helpers import (
    ACTORS,
    EXTERNAL,
    HUMAN,
    MACHINE,
    Persona,
    World,
    build_world,
    by_device,
    new_user,
    ref,
    snapshot,
    uniq,
)
from tests.support import Server, expect_error

OK = "OK"
PD = (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")
ROLE = (grpc.StatusCode.PERMISSION_DENIED, "ROLE_REQUIRED")
NF_USER = (grpc.StatusCode.NOT_FOUND, "USER_NOT_FOUND")
NF_ACCOUNT = (grpc.StatusCode.NOT_FOUND, "ACCOUNT_NOT_FOUND")


def row(member: Any, aa: Any, bot: Any, consultant: Any, reader: Any, admin: Any, stranger: Any):
    return dict(zip(ACTORS, (member, aa, bot, consultant, reader, admin, stranger), strict=True))


#: Managing an EXTERNAL user: account-admin, the intermediary's machine user, admin.
MANAGE_EXTERNAL = row(NF_USER, OK, OK, PD, PD, OK, NF_USER)
#: Reading an EXTERNAL user's things: also the consultant and the admin-reader.
READ_EXTERNAL = row(NF_USER, OK, OK, OK, OK, OK, NF_USER)
#: Managing a HUMAN user: the machine user may not even see it.
MANAGE_HUMAN = row(NF_USER, OK, NF_USER, PD, PD, OK, NF_USER)
#: Asking what an EXTERNAL user may do (CheckAccess): its readers with read rights and
#: admin; the intermediary's machine user reads the user but may not ask.
ASK_ABOUT_EXTERNAL = row(NF_USER, OK, PD, OK, OK, OK, NF_USER)


@dataclass(frozen=True)
class Case:
    name: str
    expect: dict[str, Any]
    call: Callable[[World, Persona], Any]
    writes: bool = True
    check: Callable[[World, Persona, Any], None] | None = None


def _x(w: World, *, permission: bool = False, charging: bool = False) -> user_pb2.User:
    """A fresh EXTERNAL user of the intermediary account, optionally holding device 0."""
    x = new_user(w.server, w.inter, EXTERNAL).user
    users = w.server.stubs.users
    if permission or charging:
        users.AddDevicePermissions(
            us.AddDevicePermissionsRequest(
                user=ref(x.id), devices=[by_device(w.devices[0].device_id)]
            ),
            metadata=w.server.admin,
        )
    if charging:
        users.AddChargingPermission(
            us.AddChargingPermissionRequest(
                user=ref(x.id), device=by_device(w.devices[0].device_id)
            ),
            metadata=w.server.admin,
        )
    return x


def _h(w: World) -> user_pb2.User:
    return new_user(w.server, w.inter, HUMAN).user


def _users(w: World) -> Any:
    return w.server.stubs.users


def _check_self(p: Persona, resp: us.GetUserResponse) -> None:
    assert resp.user.id == p.user_id


def _check_list_inter(w: World, p: Persona, resp: us.ListUsersResponse) -> None:
    kinds = {u.kind for u in resp.users}
    ids = {u.id for u in resp.users}
    if p.name == "member":
        assert ids == {p.user_id}, "a member lists only itself"
    elif p.name == "intermediary-machine":
        others = {u.kind for u in resp.users if u.id != p.user_id}
        assert others == {EXTERNAL} and p.user_id in ids, "the machine user sees EXTERNAL users"
    else:
        assert {HUMAN, EXTERNAL, MACHINE} <= kinds
    assert resp.total_size == len(resp.users)
    assert all(u.account_id == w.inter for u in resp.users)


def _check_list_all(w: World, p: Persona, resp: us.ListUsersResponse) -> None:
    assert {w.inter, w.other, w.consult, w.platform} <= {u.account_id for u in resp.users}


def _mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


CASES = [
    Case(
        "CreateUser(EXTERNAL)",
        row(PD, OK, OK, PD, PD, OK, NF_ACCOUNT),
        lambda w, p: new_user(w.server, w.inter, EXTERNAL, md=p.md),
    ),
    Case(
        "CreateUser(HUMAN)",
        row(PD, OK, PD, PD, PD, OK, NF_ACCOUNT),
        lambda w, p: new_user(w.server, w.inter, HUMAN, md=p.md),
    ),
    Case(
        "CreateUser(MACHINE)",
        row(PD, OK, PD, PD, PD, OK, NF_ACCOUNT),
        lambda w, p: new_user(w.server, w.inter, MACHINE, md=p.md),
    ),
    Case(
        "GetUser(EXTERNAL)",
        READ_EXTERNAL,
        lambda w, p: _users(w).GetUser(us.GetUserRequest(id=w.extra["x"].id), metadata=p.md),
        writes=False,
    ),
    Case(
        "GetUser(HUMAN)",
        row(NF_USER, OK, NF_USER, OK, OK, OK, NF_USER),
        lambda w, p: _users(w).GetUser(us.GetUserRequest(id=w.extra["h"].id), metadata=p.md),
        writes=False,
    ),
    Case(
        "GetUser(self)",
        row(OK, OK, OK, OK, OK, OK, OK),
        lambda w, p: _users(w).GetUser(us.GetUserRequest(id=p.user_id), metadata=p.md),
        writes=False,
        check=lambda w, p, resp: _check_self(p, resp),
    ),
    Case(
        "GetUser(external_id)",
        READ_EXTERNAL,
        lambda w, p: _users(w).GetUser(
            us.GetUserRequest(external_id=w.extra["x"].external_id, account_id=w.inter),
            metadata=p.md,
        ),
        writes=False,
    ),
    Case(
        "ListUsers(account)",
        row(OK, OK, OK, OK, OK, OK, NF_ACCOUNT),
        lambda w, p: _users(w).ListUsers(
            us.ListUsersRequest(account_id=w.inter, page_size=1000), metadata=p.md
        ),
        writes=False,
        check=_check_list_inter,
    ),
    Case(
        "ListUsers(-)",
        row(PD, PD, PD, PD, OK, OK, PD),
        lambda w, p: _users(w).ListUsers(
            us.ListUsersRequest(account_id="-", page_size=1000), metadata=p.md
        ),
        writes=False,
        check=_check_list_all,
    ),
    Case(
        "UpdateUser(EXTERNAL)",
        MANAGE_EXTERNAL,
        lambda w, p: _users(w).UpdateUser(
            us.UpdateUserRequest(
                user=user_pb2.User(id=_x(w).id, first_name="New"), update_mask=_mask("first_name")
            ),
            metadata=p.md,
        ),
    ),
    Case(
        "UpdateUser(HUMAN)",
        MANAGE_HUMAN,
        lambda w, p: _users(w).UpdateUser(
            us.UpdateUserRequest(
                user=user_pb2.User(id=_h(w).id, last_name="New"), update_mask=_mask("last_name")
            ),
            metadata=p.md,
        ),
    ),
    Case(
        "DeleteUser(EXTERNAL)",
        MANAGE_EXTERNAL,
        lambda w, p: _users(w).DeleteUser(
            us.DeleteUserRequest(id=_x(w, permission=True).id), metadata=p.md
        ),
    ),
    Case(
        "DeleteUser(HUMAN)",
        MANAGE_HUMAN,
        lambda w, p: _users(w).DeleteUser(us.DeleteUserRequest(id=_h(w).id), metadata=p.md),
    ),
    Case(
        "RotateClientSecret",
        row(ROLE, OK, ROLE, ROLE, ROLE, OK, NF_USER),
        lambda w, p: _users(w).RotateClientSecret(
            us.RotateClientSecretRequest(id=new_user(w.server, w.inter, MACHINE).user.id),
            metadata=p.md,
        ),
    ),
    Case(
        "GetMe",
        row(OK, OK, OK, OK, OK, OK, OK),
        lambda w, p: _users(w).GetMe(us.GetMeRequest(), metadata=p.md),
        writes=False,
    ),
    Case(
        "AddDevicePermissions",
        MANAGE_EXTERNAL,
        lambda w, p: _users(w).AddDevicePermissions(
            us.AddDevicePermissionsRequest(
                user=ref(_x(w).id), devices=[by_device(w.devices[1].device_id)]
            ),
            metadata=p.md,
        ),
    ),
    Case(
        "AddDevicePermissions(external_id)",
        # an external_id without account_id resolves in the caller's own account
        row(NF_USER, OK, OK, NF_USER, NF_USER, NF_USER, NF_USER),
        lambda w, p: _users(w).AddDevicePermissions(
            us.AddDevicePermissionsRequest(
                user=ref(external_id=_x(w).external_id),
                devices=[by_device(w.devices[1].device_id)],
            ),
            metadata=p.md,
        ),
    ),
    Case(
        "RemoveDevicePermissions",
        MANAGE_EXTERNAL,
        lambda w, p: _users(w).RemoveDevicePermissions(
            us.RemoveDevicePermissionsRequest(
                user=ref(_x(w, permission=True).id), devices=[by_device(w.devices[0].device_id)]
            ),
            metadata=p.md,
        ),
    ),
    Case(
        "ListDevicePermissions",
        READ_EXTERNAL,
        lambda w, p: _users(w).ListDevicePermissions(
            us.ListDevicePermissionsRequest(user=ref(w.extra["x"].id)), metadata=p.md
        ),
        writes=False,
    ),
    Case(
        "AddChargingPermission",
        MANAGE_EXTERNAL,
        lambda w, p: _users(w).AddChargingPermission(
            us.AddChargingPermissionRequest(
                user=ref(_x(w, permission=True).id), device=by_device(w.devices[0].device_id)
            ),
            metadata=p.md,
        ),
    ),
    Case(
        "RemoveChargingPermission",
        MANAGE_EXTERNAL,
        lambda w, p: _users(w).RemoveChargingPermission(
            us.RemoveChargingPermissionRequest(
                user=ref(_x(w, charging=True).id), device=by_meter_of(w, 0)
            ),
            metadata=p.md,
        ),
    ),
    Case(
        "UpsertUserOrder",
        MANAGE_EXTERNAL,
        lambda w, p: _users(w).UpsertUserOrder(
            us.UpsertUserOrderRequest(
                user=ref(_x(w).id),
                order=user_pb2.Order(order_id=uniq("o-"), status=user_pb2.ORDER_STATUS_RECEIVED),
            ),
            metadata=p.md,
        ),
    ),
    Case(
        "ListUserOrders",
        READ_EXTERNAL,
        lambda w, p: _users(w).ListUserOrders(
            us.ListUserOrdersRequest(user=ref(w.extra["x"].id)), metadata=p.md
        ),
        writes=False,
    ),
    # who may ask what a user may do with assets: readers with read rights, and admin
    Case(
        "CheckAccess",
        ASK_ABOUT_EXTERNAL,
        lambda w, p: _users(w).CheckAccess(
            us.CheckAccessRequest(user_id=w.extra["x"].id, checks=[access_pb2.AccessCheck(
                action=access_pb2.ACCESS_ACTION_READ, device_id=w.devices[0].device_id)]),
            metadata=p.md,
        ),
        writes=False,
        check=lambda w, p, r: _check_rule(r.decisions[0].rule),
    ),
    Case(
        "ListAccessibleDevices",
        ASK_ABOUT_EXTERNAL,
        lambda w, p: _users(w).ListAccessibleDevices(
            us.ListAccessibleDevicesRequest(user_id=w.extra["x"].id), metadata=p.md
        ),
        writes=False,
        check=lambda w, p, r: _check_rule(r.devices[0].grants[0].rule),
    ),
]


def _check_rule(rule: str) -> None:
    assert rule == "device_permission", rule


def by_meter_of(w: World, i: int) -> user_pb2.DeviceRef:
    return user_pb2.DeviceRef(meter_id=w.devices[i].meter_id)


@pytest.fixture(scope="module")
def world(server: Server) -> World:
    w = build_world(server)
    w.extra["x"] = _x(w, permission=True)
    w.extra["h"] = _h(w)
    _users(w).UpsertUserOrder(
        us.UpsertUserOrderRequest(
            user=ref(w.extra["x"].id),
            order=user_pb2.Order(order_id=uniq("o-"), status=user_pb2.ORDER_STATUS_RECEIVED),
        ),
        metadata=server.admin,
    )
    return w


def test_every_rpc_has_a_row() -> None:
    rpcs = set(us.DESCRIPTOR.services_by_name["UserService"].methods_by_name)
    covered = {c.name.split("(")[0] for c in CASES}
    assert rpcs == covered
    assert all(set(c.expect) == set(ACTORS) for c in CASES)


@pytest.mark.parametrize("actor", ACTORS)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_policy(world: World, case: Case, actor: str) -> None:
    p = world[actor]
    expected = case.expect[actor]
    if expected == OK:
        resp = case.call(world, p)
        if case.check is not None:
            case.check(world, p, resp)
        return
    code, reason = expected
    before = snapshot(world.server)
    expect_error(case.call, world, p, code=code, reason=reason)
    if case.writes:
        # targets made by the cell itself (as admin) are new rows: compare what existed
        after = snapshot(world.server)
        for old, new in zip(before, after, strict=True):
            assert set(old) <= set(new), "a denied call changed or removed rows"
        audit_before = {r[0] for r in before[-1]}
        made = [r for r in after[-1] if r[0] not in audit_before]
        assert all(r[2] == world["admin"].user_id for r in made), (
            "only the cell's own setup (by admin) may be audited"
        )
