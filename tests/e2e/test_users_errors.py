"""UserService's errors end to end: one real call per RPC and per error class, over gRPC
(the status, the ErrorInfo reason, the field violated, and that nothing changed: no row
written, no audit event recorded) and over REST (the HTTP status and grpc-gateway body).
Then: every successful write records exactly one AuditEvent of the right shape.

The rules themselves, case by case, are asked of the use cases in process:
tests/usecases/test_users.py (its docstring maps each test that was here to its new home).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest
from accounts.v1 import user_pb2
from accounts.v1 import user_service_pb2 as us
from google.protobuf import field_mask_pb2

from tests.e2e.rest_helpers import rest_error
from tests.e2e.users_helpers import (
    EXTERNAL,
    HUMAN,
    MACHINE,
    World,
    audit_events,
    build_world,
    by_device,
    by_meter,
    device_id,
    new_user,
    ref,
    snapshot,
    uniq,
)
from tests.support import Failure, Server, expect_error

C = grpc.StatusCode
SHIPPED = user_pb2.ORDER_STATUS_SHIPPED
RECEIVED = user_pb2.ORDER_STATUS_RECEIVED
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"
GHOST_DEVICE, GHOST_METER = device_id(), uniq("ghost-")


@pytest.fixture(scope="module")
def world(server: Server) -> World:
    w = build_world(server)
    w.extra.update(
        x=new_user(server, w.inter, EXTERNAL).user,
        h=new_user(server, w.inter, HUMAN, email="Taken@Example.com").user,
        reader_in_inter=new_user(server, w.inter, HUMAN, roles=["admin-reader"]).user,
    )
    return w


def rejected(
    w: World,
    fn: Any,
    request: Any,
    *,
    code: grpc.StatusCode,
    reason: str,
    field: str | None = None,
    md: Any = None,
    meta: dict[str, str] | None = None,
) -> Failure:
    """The call fails exactly so, and the database is as it was."""
    before = snapshot(w.server)
    f = expect_error(
        fn, request, metadata=md or w.server.admin, code=code, reason=reason, field=field
    )
    if field is None and code == C.INVALID_ARGUMENT:
        assert f.violations, "INVALID_ARGUMENT without field violations"
    for k, v in (meta or {}).items():
        assert f.metadata.get(k) == v, (k, f.metadata)
    assert "Traceback" not in f.message
    assert snapshot(w.server) == before, "a rejected call changed the database"
    return f


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


def create(w: World, **fields: Any) -> us.CreateUserRequest:
    return us.CreateUserRequest(account_id=w.inter, user=user_pb2.User(**fields))


# id → (RPC, request, caller (None: admin), code, reason, field, ErrorInfo metadata)
Case = tuple[str, Callable[[World], Any], str | None, grpc.StatusCode, str, str | None,
             Callable[[World], dict[str, str]] | None]
CASES: dict[str, Case] = {
    "CreateUser INVALID_ARGUMENT": (
        "CreateUser", lambda w: create(w, kind=HUMAN, email="not-an-email"), None,
        C.INVALID_ARGUMENT, "INVALID_ARGUMENT", "user.email", None),
    "CreateUser INVALID_CHARACTER (the edge, before any use case)": (
        "CreateUser", lambda w: create(w, kind=HUMAN, email="d@example.com", last_name="a\x07b"),
        None, C.INVALID_ARGUMENT, "INVALID_CHARACTER", "user.last_name", None),
    "CreateUser ALREADY_EXISTS": (
        "CreateUser", lambda w: create(w, kind=HUMAN, email="taken@EXAMPLE.com"), None,
        C.ALREADY_EXISTS, "EMAIL_TAKEN", None, None),
    "CreateUser PERMISSION_DENIED": (
        "CreateUser",
        lambda w: create(w, kind=EXTERNAL, external_id=uniq("e-"), roles=["account-admin"]),
        "intermediary-machine", C.PERMISSION_DENIED, "ROLE_NOT_GRANTABLE", None,
        lambda w: {"roles": "account-admin"}),
    "CreateUser NOT_FOUND": (
        "CreateUser",
        lambda w: us.CreateUserRequest(account_id=UNKNOWN_ID,
                                       user=user_pb2.User(kind=EXTERNAL, external_id=uniq())),
        None, C.NOT_FOUND, "ACCOUNT_NOT_FOUND", None, None),
    "GetUser NOT_FOUND": (
        "GetUser", lambda w: us.GetUserRequest(id=UNKNOWN_ID), None, C.NOT_FOUND,
        "USER_NOT_FOUND", None, lambda w: {"id": UNKNOWN_ID}),
    "ListUsers INVALID_ARGUMENT": (
        "ListUsers", lambda w: us.ListUsersRequest(account_id=w.inter, order_by="password"),
        None, C.INVALID_ARGUMENT, "INVALID_ORDER_BY", "order_by", None),
    "UpdateUser ABORTED": (
        "UpdateUser",
        lambda w: us.UpdateUserRequest(
            user=user_pb2.User(id=w.extra["h"].id, first_name="x", etag="stale")),
        None, C.ABORTED, "ETAG_MISMATCH", None, None),
    "UpdateUser INVALID_ARGUMENT (mask)": (
        "UpdateUser",
        lambda w: us.UpdateUserRequest(user=user_pb2.User(id=w.extra["h"].id),
                                       update_mask=mask("first_name", "password")),
        None, C.INVALID_ARGUMENT, "INVALID_UPDATE_MASK", "update_mask.paths[1]", None),
    "UpdateUser PERMISSION_DENIED": (
        "UpdateUser",
        lambda w: us.UpdateUserRequest(
            user=user_pb2.User(id=w.extra["reader_in_inter"].id, first_name="x")),
        "account-admin", C.PERMISSION_DENIED, "USER_OUTRANKS_CALLER", None, None),
    "DeleteUser FAILED_PRECONDITION": (
        "DeleteUser", lambda w: us.DeleteUserRequest(id=w["account-admin"].user_id),
        "account-admin", C.FAILED_PRECONDITION, "CANNOT_DELETE_SELF", None, None),
    "RotateClientSecret FAILED_PRECONDITION": (
        "RotateClientSecret", lambda w: us.RotateClientSecretRequest(id=w.extra["h"].id), None,
        C.FAILED_PRECONDITION, "USER_NOT_MACHINE", None, lambda w: {"kind": "HUMAN"}),
    "AddDevicePermissions NOT_FOUND": (
        "AddDevicePermissions",
        lambda w: us.AddDevicePermissionsRequest(
            user=ref(w.extra["x"].id),
            devices=[by_device(w.devices[1].device_id), by_device(GHOST_DEVICE),
                     by_meter(GHOST_METER)]),
        None, C.NOT_FOUND, "DEVICE_NOT_FOUND", None,
        lambda w: {"device_id": GHOST_DEVICE, "meter_id": GHOST_METER}),
    "RemoveDevicePermissions INVALID_ARGUMENT": (
        "RemoveDevicePermissions",
        lambda w: us.RemoveDevicePermissionsRequest(user=ref(w.extra["x"].id),
                                                    devices=[by_device("1234567")]),
        None, C.INVALID_ARGUMENT, "INVALID_ARGUMENT", "devices[0].device_id", None),
    "ListDevicePermissions INVALID_ARGUMENT": (
        "ListDevicePermissions", lambda w: us.ListDevicePermissionsRequest(), None,
        C.INVALID_ARGUMENT, "USER_REF_REQUIRED", "user", None),
    "AddChargingPermission FAILED_PRECONDITION": (
        "AddChargingPermission",
        lambda w: us.AddChargingPermissionRequest(user=ref(w.extra["x"].id),
                                                  device=by_device(w.devices[2].device_id)),
        None, C.FAILED_PRECONDITION, "DEVICE_PERMISSION_REQUIRED", None,
        lambda w: {"device_id": w.devices[2].device_id}),
    "RemoveChargingPermission INVALID_ARGUMENT": (
        "RemoveChargingPermission",
        lambda w: us.RemoveChargingPermissionRequest(user=ref(w.extra["x"].id)), None,
        C.INVALID_ARGUMENT, "INVALID_ARGUMENT", "device", None),
    "UpsertUserOrder INVALID_ARGUMENT": (
        "UpsertUserOrder",
        lambda w: us.UpsertUserOrderRequest(
            user=ref(w.extra["x"].id), order=user_pb2.Order(order_id=uniq(), status=SHIPPED)),
        None, C.INVALID_ARGUMENT, "SHIPPING_DETAILS_REQUIRED", "order.device_id", None),
    "ListUserOrders INVALID_ARGUMENT": (
        "ListUserOrders",
        lambda w: us.ListUserOrdersRequest(user=ref(w.extra["x"].id), page_size=-1), None,
        C.INVALID_ARGUMENT, "INVALID_PAGE_SIZE", "page_size", None),
}


@pytest.mark.parametrize("case", list(CASES))
def test_error(world: World, case: str) -> None:
    rpc, build, caller, code, reason, field, meta = CASES[case]
    rejected(
        world,
        getattr(world.server.stubs.users, rpc),
        build(world),
        md=world[caller].md if caller else None,
        code=code,
        reason=reason,
        field=field,
        meta=meta(world) if meta else None,
    )


# (method, path, JSON body, caller (None: admin), HTTP status, code, reason, field)
RestCase = tuple[str, Callable[[World], str], Callable[[World], Any], str | None, int,
                 grpc.StatusCode, str, str | None]
REST_CASES: dict[str, RestCase] = {
    "400 INVALID_ARGUMENT": (
        "POST", lambda w: f"/v1/accounts/{w.inter}/users",
        lambda w: {"kind": "USER_KIND_HUMAN", "email": "not-an-email"}, None, 400,
        C.INVALID_ARGUMENT, "INVALID_ARGUMENT", "user.email"),
    "404 NOT_FOUND": (
        "GET", lambda w: f"/v1/users/{UNKNOWN_ID}", lambda w: None, None, 404, C.NOT_FOUND,
        "USER_NOT_FOUND", None),
    "403 PERMISSION_DENIED": (
        "POST", lambda w: f"/v1/accounts/{w.inter}/users",
        lambda w: {"kind": "USER_KIND_EXTERNAL", "externalId": uniq("e-"),
                   "roles": ["account-admin"]},
        "intermediary-machine", 403, C.PERMISSION_DENIED, "ROLE_NOT_GRANTABLE", None),
    "409 ALREADY_EXISTS": (
        "POST", lambda w: f"/v1/accounts/{w.inter}/users",
        lambda w: {"kind": "USER_KIND_HUMAN", "email": "taken@EXAMPLE.com"}, None, 409,
        C.ALREADY_EXISTS, "EMAIL_TAKEN", None),
    "409 ABORTED": (
        "PATCH", lambda w: f"/v1/users/{w.extra['h'].id}",
        lambda w: {"firstName": "x", "etag": "stale"}, None, 409, C.ABORTED, "ETAG_MISMATCH",
        None),
    "400 FAILED_PRECONDITION": (
        "POST", lambda w: f"/v1/users/{w.extra['h'].id}:rotateClientSecret", lambda w: {},
        None, 400, C.FAILED_PRECONDITION, "USER_NOT_MACHINE", None),
}


@pytest.mark.parametrize("case", list(REST_CASES))
def test_rest_error(world: World, case: str) -> None:
    method, path, body, caller, status, code, reason, field = REST_CASES[case]
    rest_error(world.server, method, path(world), body=body(world), snapshot=snapshot,
               token=world[caller or "admin"].token, status=status, code=code, reason=reason,
               field=field)


# -- audit --------------------------------------------------------------------------------------


def test_every_write_records_one_audit_event(world: World) -> None:
    """Each successful UserService write: one event, right action/resource/actor/fields,
    in the account's log, never a secret."""
    s = world.server
    users = s.stubs.users
    bot = world["intermediary-machine"]
    d = world.devices[3]

    def one(action: str, fn: Any, req: Any, md: Any = None) -> tuple[Any, Any]:
        before = {e.id for e in audit_events(s, world.inter)}
        resp = fn(req, metadata=md or bot.md)
        new = [e for e in audit_events(s, world.inter) if e.id not in before]
        assert [e.action for e in new] == [action]
        assert new[0].account_id == world.inter
        assert new[0].actor_user_id == (world["admin"].user_id if md else bot.user_id)
        assert not any("secret" in f or "token" in f for f in new[0].changed_fields)
        return resp, new[0]

    created, ev = one(
        "user.create",
        users.CreateUser,
        us.CreateUserRequest(
            account_id=world.inter,
            request_id=uniq(),
            user=user_pb2.User(kind=EXTERNAL, external_id=uniq("e-"), first_name="A"),
        ),
    )
    x = created.user
    assert (ev.resource_type, ev.resource_id) == ("User", x.id)
    assert {"kind", "external_id", "first_name", "roles"} <= set(ev.changed_fields)
    assert ev.request_id
    _, ev = one(
        "user.update",
        users.UpdateUser,
        us.UpdateUserRequest(
            user=user_pb2.User(id=x.id, last_name="B"), update_mask=mask("last_name")
        ),
    )
    assert list(ev.changed_fields) == ["last_name"]
    resp, ev = one(
        "device_permission.add",
        users.AddDevicePermissions,
        us.AddDevicePermissionsRequest(user=ref(x.id), devices=[by_device(d.device_id)]),
    )
    assert (ev.resource_type, ev.resource_id) == ("DevicePermission", resp.permissions[0].id)
    _, ev = one(
        "device_permission.update",
        users.AddChargingPermission,
        us.AddChargingPermissionRequest(user=ref(x.id), device=by_device(d.device_id)),
    )
    assert list(ev.changed_fields) == ["charging"]
    one(
        "device_permission.update",
        users.RemoveChargingPermission,
        us.RemoveChargingPermissionRequest(user=ref(x.id), device=by_device(d.device_id)),
    )
    order, ev = one(
        "order.create",
        users.UpsertUserOrder,
        us.UpsertUserOrderRequest(
            user=ref(x.id), order=user_pb2.Order(order_id=uniq(), status=RECEIVED)
        ),
    )
    assert (ev.resource_type, ev.resource_id) == ("Order", order.order.id)
    _, ev = one(
        "order.update",
        users.UpsertUserOrder,
        us.UpsertUserOrderRequest(
            user=ref(x.id),
            order=user_pb2.Order(
                order_id=order.order.order_id,
                status=SHIPPED,
                device_id=d.device_id,
                tracking_link="https://t.example.com/1",
            ),
        ),
    )
    assert sorted(ev.changed_fields) == ["device_id", "status", "tracking_link"]
    one(
        "device_permission.remove",
        users.RemoveDevicePermissions,
        us.RemoveDevicePermissionsRequest(user=ref(x.id), devices=[by_device(d.device_id)]),
    )
    _, ev = one("user.delete", users.DeleteUser, us.DeleteUserRequest(id=x.id))
    assert ev.resource_id == x.id and "orders" in ev.changed_fields
    m = new_user(s, world.inter, MACHINE).user
    _, ev = one(
        "user.rotate_secret",
        users.RotateClientSecret,
        us.RotateClientSecretRequest(id=m.id),
        md=s.admin,
    )
    assert ev.resource_id == m.id and list(ev.changed_fields) == []
