"""Bad input to UserService, case by case: the status, the ErrorInfo reason, the field
violated, and that nothing changed (no row written, no audit event recorded).
Then: every successful write records exactly one AuditEvent of the right shape."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from accounts.v1 import user_pb2
from accounts.v1 import user_service_pb2 as us
from google.protobuf import field_mask_pb2, timestamp_pb2

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


@pytest.fixture(scope="module")
def world(server: Server) -> World:
    w = build_world(server)
    users = server.stubs.users
    x = new_user(server, w.inter, EXTERNAL).user
    users.AddDevicePermissions(
        us.AddDevicePermissionsRequest(user=ref(x.id), devices=[by_device(w.devices[0].device_id)]),
        metadata=server.admin,
    )
    w.extra.update(
        x=x,
        h=new_user(server, w.inter, HUMAN, email="Taken@Example.com").user,
        m=new_user(server, w.inter, MACHINE).user,
        reader_in_inter=new_user(server, w.inter, HUMAN, roles=["admin-reader"]).user,
        order_id=uniq("o-"),
    )
    users.UpsertUserOrder(
        us.UpsertUserOrderRequest(
            user=ref(x.id), order=user_pb2.Order(order_id=w.extra["order_id"], status=RECEIVED)
        ),
        metadata=server.admin,
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


# -- CreateUser ---------------------------------------------------------------------------------

CREATE_CASES = [
    (
        "unknown kind number",
        dict(kind=9, email="k@example.com"),
        C.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
        "user.kind",
    ),
    # (id, user fields, code, reason, field)
    (
        "kind missing",
        dict(email="a@example.com"),
        C.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
        "user.kind",
    ),
    (
        "human without email",
        dict(kind=HUMAN, first_name="A"),
        C.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
        "user.email",
    ),
    (
        "human bad email",
        dict(kind=HUMAN, email="not-an-email"),
        C.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
        "user.email",
    ),
    (
        "human email newline",
        dict(kind=HUMAN, email="a@example.com\nb"),
        C.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
        "user.email",
    ),
    (
        "human with external_id",
        dict(kind=HUMAN, email="b@example.com", external_id="e1"),
        C.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
        "user.external_id",
    ),
    (
        "external without external_id",
        dict(kind=EXTERNAL, first_name="E"),
        C.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
        "user.external_id",
    ),
    (
        "external_id too long",
        dict(kind=EXTERNAL, external_id="x" * 201),
        C.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
        "user.external_id",
    ),
    (
        "machine with email",
        dict(kind=MACHINE, email="m@example.com"),
        C.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
        "user.email",
    ),
    (
        "machine with external_id",
        dict(kind=MACHINE, external_id="m1"),
        C.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
        "user.external_id",
    ),
    (
        "name too long",
        dict(kind=HUMAN, email="c@example.com", first_name="n" * 201),
        C.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
        "user.first_name",
    ),
    (
        "control character",
        dict(kind=HUMAN, email="d@example.com", last_name="a\x07b"),
        C.INVALID_ARGUMENT,
        "INVALID_CHARACTER",
        "user.last_name",
    ),
    (
        "output-only id",
        dict(kind=HUMAN, email="e@example.com", id="x"),
        C.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
        "user.id",
    ),
    (
        "output-only client_id",
        dict(kind=MACHINE, client_id="cid_mine"),
        C.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
        "user.client_id",
    ),
    (
        "output-only create_time",
        dict(kind=HUMAN, email="f@example.com", create_time=timestamp_pb2.Timestamp(seconds=5)),
        C.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
        "user.create_time",
    ),
    (
        "etag on create",
        dict(kind=HUMAN, email="g@example.com", etag="abc"),
        C.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
        "user.etag",
    ),
    (
        "unknown role",
        dict(kind=HUMAN, email="h@example.com", roles=["member", "boss"]),
        C.INVALID_ARGUMENT,
        "UNKNOWN_ROLE",
        "user.roles[1]",
    ),
    (
        "account role as user role",
        dict(kind=HUMAN, email="i@example.com", roles=["intermediary"]),
        C.INVALID_ARGUMENT,
        "UNKNOWN_ROLE",
        "user.roles[0]",
    ),
    (
        "email taken (any case)",
        dict(kind=HUMAN, email="taken@EXAMPLE.com"),
        C.ALREADY_EXISTS,
        "EMAIL_TAKEN",
        None,
    ),
]


@pytest.mark.parametrize("case", CREATE_CASES, ids=[c[0] for c in CREATE_CASES])
def test_create_user_bad_input(world: World, case: tuple[Any, ...]) -> None:
    _, fields, code, reason, field = case
    rejected(
        world,
        world.server.stubs.users.CreateUser,
        us.CreateUserRequest(account_id=world.inter, user=user_pb2.User(**fields)),
        code=code,
        reason=reason,
        field=field,
    )


def test_create_user_external_id_taken_inside_the_account_only(world: World) -> None:
    x = world.extra["x"]
    rejected(
        world,
        world.server.stubs.users.CreateUser,
        us.CreateUserRequest(
            account_id=world.inter, user=user_pb2.User(kind=EXTERNAL, external_id=x.external_id)
        ),
        code=C.ALREADY_EXISTS,
        reason="EXTERNAL_ID_TAKEN",
        meta={"external_id": x.external_id},
    )
    # the same external id in another account is a different user
    other = new_user(world.server, world.other, EXTERNAL, external_id=x.external_id).user
    assert other.account_id == world.other and other.external_id == x.external_id


@pytest.mark.parametrize(
    "actor,roles,denied",
    [
        ("account-admin", ["admin"], "admin"),
        ("account-admin", ["admin-reader"], "admin-reader"),
        ("intermediary-machine", ["account-admin"], "account-admin"),
        ("intermediary-machine", ["consultant"], "consultant"),
    ],
)
def test_create_user_role_above_the_callers(
    world: World, actor: str, roles: list[str], denied: str
) -> None:
    rejected(
        world,
        world.server.stubs.users.CreateUser,
        us.CreateUserRequest(
            account_id=world.inter,
            user=user_pb2.User(kind=EXTERNAL, external_id=uniq("e-"), roles=roles),
        ),
        md=world[actor].md,
        code=C.PERMISSION_DENIED,
        reason="ROLE_NOT_GRANTABLE",
        meta={"roles": denied},
    )


@pytest.mark.parametrize(
    "account_id,code,reason,field",
    [
        ("", C.INVALID_ARGUMENT, "INVALID_ARGUMENT", "account_id"),
        ("nope", C.INVALID_ARGUMENT, "INVALID_ARGUMENT", "account_id"),
        ("00000000-0000-4000-8000-000000000000", C.NOT_FOUND, "ACCOUNT_NOT_FOUND", None),
    ],
)
def test_create_user_bad_account(
    world: World, account_id: str, code: grpc.StatusCode, reason: str, field: str | None
) -> None:
    rejected(
        world,
        world.server.stubs.users.CreateUser,
        us.CreateUserRequest(
            account_id=account_id, user=user_pb2.User(kind=EXTERNAL, external_id=uniq())
        ),
        code=code,
        reason=reason,
        field=field,
    )


def test_create_user_request_id(world: World) -> None:
    users = world.server.stubs.users
    rid = uniq("req-")
    req = us.CreateUserRequest(
        account_id=world.inter, user=user_pb2.User(kind=MACHINE), request_id=rid
    )
    first = users.CreateUser(req, metadata=world.server.admin)
    assert first.client_secret
    again = users.CreateUser(req, metadata=world.server.admin)
    assert again.user.id == first.user.id and again.client_secret == ""  # shown once
    changed = us.CreateUserRequest(
        account_id=world.inter,
        user=user_pb2.User(kind=MACHINE, roles=["consultant"]),
        request_id=rid,
    )
    rejected(
        world,
        users.CreateUser,
        changed,
        code=C.INVALID_ARGUMENT,
        reason="REQUEST_ID_REUSED",
        field="request_id",
    )
    too_long = us.CreateUserRequest(
        account_id=world.inter, user=user_pb2.User(kind=MACHINE), request_id="r" * 201
    )
    rejected(
        world,
        users.CreateUser,
        too_long,
        code=C.INVALID_ARGUMENT,
        reason="INVALID_ARGUMENT",
        field="request_id",
    )


# -- GetUser / ListUsers ------------------------------------------------------------------------

GET_CASES = [
    ("nothing named", dict(), C.INVALID_ARGUMENT, "USER_REF_REQUIRED", "id"),
    (
        "two names",
        dict(id="00000000-0000-4000-8000-000000000000", email="a@example.com"),
        C.INVALID_ARGUMENT,
        "USER_REF_REQUIRED",
        "id",
    ),
    ("malformed id", dict(id="123"), C.INVALID_ARGUMENT, "INVALID_ID", "id"),
    (
        "malformed account_id",
        dict(email="a@example.com", account_id="x"),
        C.INVALID_ARGUMENT,
        "INVALID_ID",
        "account_id",
    ),
    (
        "unknown id",
        dict(id="00000000-0000-4000-8000-000000000000"),
        C.NOT_FOUND,
        "USER_NOT_FOUND",
        None,
    ),
    ("unknown email", dict(email="nobody@example.com"), C.NOT_FOUND, "USER_NOT_FOUND", None),
    ("unknown external_id", dict(external_id="nobody"), C.NOT_FOUND, "USER_NOT_FOUND", None),
]


@pytest.mark.parametrize("case", GET_CASES, ids=[c[0] for c in GET_CASES])
def test_get_user_bad_input(world: World, case: tuple[Any, ...]) -> None:
    _, fields, code, reason, field = case
    f = rejected(
        world,
        world.server.stubs.users.GetUser,
        us.GetUserRequest(**fields),
        code=code,
        reason=reason,
        field=field,
    )
    if code == C.NOT_FOUND:
        key = next(k for k in ("id", "email", "external_id") if k in fields)
        assert f.metadata == {key: fields[key]}


def test_get_user_by_id_in_the_wrong_account(world: World) -> None:
    x = world.extra["x"]
    rejected(
        world,
        world.server.stubs.users.GetUser,
        us.GetUserRequest(id=x.id, account_id=world.other),
        code=C.NOT_FOUND,
        reason="USER_NOT_FOUND",
    )


LIST_CASES = [
    ("no account", dict(), "INVALID_ARGUMENT", "account_id"),
    ("negative page_size", dict(page_size=-1), "INVALID_PAGE_SIZE", "page_size"),
    ("unknown order_by", dict(order_by="password"), "INVALID_ORDER_BY", "order_by"),
    ("bad order direction", dict(order_by="name up"), "INVALID_ORDER_BY", "order_by"),
    ("unterminated quote", dict(filter='"abc'), "INVALID_FILTER", "filter"),
    ("unknown kind number", dict(kind=9), "INVALID_ARGUMENT", "kind"),
    ("garbage page_token", dict(page_token="garbage"), "INVALID_PAGE_TOKEN", "page_token"),
]


@pytest.mark.parametrize("case", LIST_CASES, ids=[c[0] for c in LIST_CASES])
def test_list_users_bad_input(world: World, case: tuple[Any, ...]) -> None:
    _, fields, reason, field = case
    if "account_id" not in fields and case[0] != "no account":
        fields = dict(fields, account_id=world.inter)
    rejected(
        world,
        world.server.stubs.users.ListUsers,
        us.ListUsersRequest(**fields),
        code=C.INVALID_ARGUMENT,
        reason=reason,
        field=field,
    )


def test_list_users_token_bound_to_its_query(world: World) -> None:
    users = world.server.stubs.users
    page = users.ListUsers(
        us.ListUsersRequest(account_id=world.inter, page_size=1), metadata=world.server.admin
    )
    assert page.next_page_token
    for changed in (
        dict(filter="x"),
        dict(order_by="email"),
        dict(kind=HUMAN),
        dict(account_id=world.other),
    ):
        req = us.ListUsersRequest(
            account_id=world.inter, page_size=1, page_token=page.next_page_token
        )
        for k, v in changed.items():
            setattr(req, k, v)
        rejected(
            world,
            users.ListUsers,
            req,
            code=C.INVALID_ARGUMENT,
            reason="PAGE_TOKEN_QUERY_MISMATCH",
            field="page_token",
        )


# -- UpdateUser ---------------------------------------------------------------------------------


def test_update_user_bad_input(world: World) -> None:
    users = world.server.stubs.users
    h, x = world.extra["h"], world.extra["x"]
    current = users.GetUser(us.GetUserRequest(id=h.id), metadata=world.server.admin).user
    other_email = new_user(world.server, world.inter, HUMAN).user.email

    def upd(user: user_pb2.User, *paths: str) -> us.UpdateUserRequest:
        return us.UpdateUserRequest(user=user, update_mask=mask(*paths) if paths else None)

    cases = [
        (upd(user_pb2.User(first_name="x")), C.INVALID_ARGUMENT, "INVALID_ARGUMENT", "user.id"),
        (upd(user_pb2.User(id="zzz", first_name="x")), C.INVALID_ARGUMENT, "INVALID_ID", "user.id"),
        (
            upd(user_pb2.User(id="00000000-0000-4000-8000-000000000000", first_name="x")),
            C.NOT_FOUND,
            "USER_NOT_FOUND",
            None,
        ),
        (
            upd(user_pb2.User(id=h.id, first_name="x", etag="stale")),
            C.ABORTED,
            "ETAG_MISMATCH",
            None,
        ),
        (
            upd(user_pb2.User(id=h.id, kind=MACHINE), "kind"),
            C.INVALID_ARGUMENT,
            "INVALID_UPDATE_MASK",
            "update_mask.paths[0]",
        ),
        (
            upd(user_pb2.User(id=h.id), "client_id"),
            C.INVALID_ARGUMENT,
            "INVALID_UPDATE_MASK",
            "update_mask.paths[0]",
        ),
        (
            upd(user_pb2.User(id=h.id), "first_name", "password"),
            C.INVALID_ARGUMENT,
            "INVALID_UPDATE_MASK",
            "update_mask.paths[1]",
        ),
        (
            upd(user_pb2.User(id=h.id), "user.first_name"),
            C.INVALID_ARGUMENT,
            "INVALID_UPDATE_MASK",
            "update_mask.paths[0]",
        ),
        (
            upd(user_pb2.User(id=h.id, kind=EXTERNAL)),
            C.INVALID_ARGUMENT,
            "FIELD_NOT_UPDATABLE",
            "user.kind",
        ),
        (
            upd(user_pb2.User(id=h.id, create_time=timestamp_pb2.Timestamp(seconds=1))),
            C.INVALID_ARGUMENT,
            "FIELD_NOT_UPDATABLE",
            "user.create_time",
        ),
        (
            upd(user_pb2.User(id=h.id), "email"),
            C.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
            "user.email",
        ),
        (
            upd(user_pb2.User(id=h.id, email="nope")),
            C.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
            "user.email",
        ),
        (
            upd(user_pb2.User(id=h.id, external_id="e-1")),
            C.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
            "user.external_id",
        ),
        (
            upd(user_pb2.User(id=x.id), "external_id"),
            C.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
            "user.external_id",
        ),
        (
            upd(user_pb2.User(id=h.id, email=other_email.upper())),
            C.ALREADY_EXISTS,
            "EMAIL_TAKEN",
            None,
        ),
        (
            upd(user_pb2.User(id=h.id, roles=["superuser"])),
            C.INVALID_ARGUMENT,
            "UNKNOWN_ROLE",
            "user.roles[0]",
        ),
    ]
    for req, code, reason, field in cases:
        rejected(world, users.UpdateUser, req, code=code, reason=reason, field=field)
    after = users.GetUser(us.GetUserRequest(id=h.id), metadata=world.server.admin).user
    assert after == current


def test_update_user_rights(world: World) -> None:
    users = world.server.stubs.users
    h = world.extra["h"]
    aa, bot = world["account-admin"], world["intermediary-machine"]
    rejected(
        world,
        users.UpdateUser,
        us.UpdateUserRequest(user=user_pb2.User(id=h.id, roles=["admin"])),
        md=aa.md,
        code=C.PERMISSION_DENIED,
        reason="ROLE_NOT_GRANTABLE",
    )
    # an account-admin cannot touch a user holding a role it could not grant
    reader = world.extra["reader_in_inter"]
    rejected(
        world,
        users.UpdateUser,
        us.UpdateUserRequest(user=user_pb2.User(id=reader.id, first_name="x")),
        md=aa.md,
        code=C.PERMISSION_DENIED,
        reason="USER_OUTRANKS_CALLER",
    )
    rejected(
        world,
        users.DeleteUser,
        us.DeleteUserRequest(id=reader.id),
        md=aa.md,
        code=C.PERMISSION_DENIED,
        reason="USER_OUTRANKS_CALLER",
    )
    # the machine user may not promote an EXTERNAL user above itself
    x = new_user(world.server, world.inter, EXTERNAL, md=bot.md).user
    rejected(
        world,
        users.UpdateUser,
        us.UpdateUserRequest(user=user_pb2.User(id=x.id, roles=["account-admin"])),
        md=bot.md,
        code=C.PERMISSION_DENIED,
        reason="ROLE_NOT_GRANTABLE",
    )


# -- DeleteUser / RotateClientSecret ------------------------------------------------------------


def test_delete_user_bad_input(world: World) -> None:
    users = world.server.stubs.users
    h = world.extra["h"]
    rejected(
        world,
        users.DeleteUser,
        us.DeleteUserRequest(),
        code=C.INVALID_ARGUMENT,
        reason="INVALID_ARGUMENT",
        field="id",
    )
    rejected(
        world,
        users.DeleteUser,
        us.DeleteUserRequest(id="1"),
        code=C.INVALID_ARGUMENT,
        reason="INVALID_ID",
        field="id",
    )
    rejected(
        world,
        users.DeleteUser,
        us.DeleteUserRequest(id="00000000-0000-4000-8000-000000000000"),
        code=C.NOT_FOUND,
        reason="USER_NOT_FOUND",
    )
    rejected(
        world,
        users.DeleteUser,
        us.DeleteUserRequest(id=h.id, etag="stale"),
        code=C.ABORTED,
        reason="ETAG_MISMATCH",
    )
    aa = world["account-admin"]
    rejected(
        world,
        users.DeleteUser,
        us.DeleteUserRequest(id=aa.user_id),
        md=aa.md,
        code=C.FAILED_PRECONDITION,
        reason="CANNOT_DELETE_SELF",
    )


def test_rotate_client_secret_bad_input(world: World) -> None:
    users = world.server.stubs.users
    rejected(
        world,
        users.RotateClientSecret,
        us.RotateClientSecretRequest(id=world.extra["h"].id),
        code=C.FAILED_PRECONDITION,
        reason="USER_NOT_MACHINE",
        meta={"kind": "HUMAN"},
    )
    rejected(
        world,
        users.RotateClientSecret,
        us.RotateClientSecretRequest(id=""),
        code=C.INVALID_ARGUMENT,
        reason="INVALID_ARGUMENT",
        field="id",
    )
    rejected(
        world,
        users.RotateClientSecret,
        us.RotateClientSecretRequest(id="00000000-0000-4000-8000-000000000000"),
        code=C.NOT_FOUND,
        reason="USER_NOT_FOUND",
    )


# -- device permissions -------------------------------------------------------------------------


def test_device_permissions_bad_input(world: World) -> None:
    users = world.server.stubs.users
    x = world.extra["x"]
    known = world.devices[1]
    ghost_dev, ghost_meter = device_id(), uniq("ghost-")
    foreign = world.other_devices[0]
    bad: list[tuple[Any, grpc.StatusCode, str, str | None, dict[str, str] | None]] = [
        (
            us.AddDevicePermissionsRequest(devices=[by_device(known.device_id)]),
            C.INVALID_ARGUMENT,
            "USER_REF_REQUIRED",
            "user",
            None,
        ),
        (
            us.AddDevicePermissionsRequest(user=ref(x.id)),
            C.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
            "devices",
            None,
        ),
        (
            us.AddDevicePermissionsRequest(user=ref(x.id), devices=[by_device("1234567")]),
            C.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
            "devices[0].device_id",
            None,
        ),
        (
            us.AddDevicePermissionsRequest(user=ref(x.id), devices=[by_device("123456789")]),
            C.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
            "devices[0].device_id",
            None,
        ),
        (
            us.AddDevicePermissionsRequest(
                user=ref(x.id), devices=[by_device(known.device_id), user_pb2.DeviceRef()]
            ),
            C.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
            "devices[1]",
            None,
        ),
        (
            us.AddDevicePermissionsRequest(
                user=user_pb2.UserRef(user_id="nope"), devices=[by_device(known.device_id)]
            ),
            C.INVALID_ARGUMENT,
            "INVALID_ID",
            "user.user_id",
            None,
        ),
        # all or nothing: the known device is not granted either; every unknown one is named
        (
            us.AddDevicePermissionsRequest(
                user=ref(x.id),
                devices=[by_device(known.device_id), by_device(ghost_dev), by_meter(ghost_meter)],
            ),
            C.NOT_FOUND,
            "DEVICE_NOT_FOUND",
            None,
            {"device_id": ghost_dev, "meter_id": ghost_meter},
        ),
        # a device of another account is as unknown as a missing one
        (
            us.AddDevicePermissionsRequest(user=ref(x.id), devices=[by_meter(foreign.meter_id)]),
            C.NOT_FOUND,
            "DEVICE_NOT_FOUND",
            None,
            {"meter_id": foreign.meter_id},
        ),
        (
            us.AddDevicePermissionsRequest(
                user=ref(external_id="nobody"), devices=[by_device(known.device_id)]
            ),
            C.NOT_FOUND,
            "USER_NOT_FOUND",
            None,
            {"external_id": "nobody"},
        ),
    ]
    for req, code, reason, field, meta in bad:
        rejected(
            world, users.AddDevicePermissions, req, code=code, reason=reason, field=field, meta=meta
        )
        removal = us.RemoveDevicePermissionsRequest(user=req.user, devices=req.devices)
        rejected(
            world,
            users.RemoveDevicePermissions,
            removal,
            code=code,
            reason=reason,
            field=field,
            meta=meta,
        )


def test_charging_needs_the_device_permission(world: World) -> None:
    users = world.server.stubs.users
    x = world.extra["x"]
    not_held = world.devices[2]
    for fn, req_type in (
        (users.AddChargingPermission, us.AddChargingPermissionRequest),
        (users.RemoveChargingPermission, us.RemoveChargingPermissionRequest),
    ):
        rejected(
            world,
            fn,
            req_type(user=ref(x.id), device=by_device(not_held.device_id)),
            code=C.FAILED_PRECONDITION,
            reason="DEVICE_PERMISSION_REQUIRED",
            meta={"device_id": not_held.device_id},
        )
        rejected(
            world,
            fn,
            req_type(user=ref(x.id)),
            code=C.INVALID_ARGUMENT,
            reason="INVALID_ARGUMENT",
            field="device",
        )
        rejected(
            world,
            fn,
            req_type(user=ref(x.id), device=by_device("short")),
            code=C.INVALID_ARGUMENT,
            reason="INVALID_ARGUMENT",
            field="device.device_id",
        )
        rejected(
            world,
            fn,
            req_type(user=ref(x.id), device=by_meter(uniq("ghost-"))),
            code=C.NOT_FOUND,
            reason="DEVICE_NOT_FOUND",
        )


def test_list_device_permissions_bad_input(world: World) -> None:
    users = world.server.stubs.users
    rejected(
        world,
        users.ListDevicePermissions,
        us.ListDevicePermissionsRequest(),
        code=C.INVALID_ARGUMENT,
        reason="USER_REF_REQUIRED",
        field="user",
    )
    rejected(
        world,
        users.ListDevicePermissions,
        us.ListDevicePermissionsRequest(user=ref(world.extra["x"].id), page_size=-5),
        code=C.INVALID_ARGUMENT,
        reason="INVALID_PAGE_SIZE",
        field="page_size",
    )


# -- orders -------------------------------------------------------------------------------------


def test_upsert_order_bad_input(world: World) -> None:
    users = world.server.stubs.users
    x, oid = world.extra["x"], world.extra["order_id"]

    def up(order: user_pb2.Order, who: str = "") -> us.UpsertUserOrderRequest:
        return us.UpsertUserOrderRequest(user=ref(who or x.id), order=order)

    link = "https://track.example.com/1"
    cases = [
        (
            up(user_pb2.Order(status=RECEIVED)),
            C.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
            "order.order_id",
        ),
        (
            up(user_pb2.Order(order_id=uniq())),
            C.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
            "order.status",
        ),
        (
            up(user_pb2.Order(order_id=uniq(), status=42)),
            C.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
            "order.status",
        ),
        (
            up(user_pb2.Order(order_id=uniq(), status=SHIPPED)),
            C.INVALID_ARGUMENT,
            "SHIPPING_DETAILS_REQUIRED",
            "order.device_id",
        ),
        (
            up(user_pb2.Order(order_id=uniq(), status=SHIPPED, device_id="ABCDEFGH")),
            C.INVALID_ARGUMENT,
            "SHIPPING_DETAILS_REQUIRED",
            "order.tracking_link",
        ),
        (
            up(
                user_pb2.Order(
                    order_id=uniq(),
                    status=SHIPPED,
                    device_id="ABCDEFGH",
                    tracking_link="ftp://track.example.com/1",
                )
            ),
            C.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
            "order.tracking_link",
        ),
        (
            up(
                user_pb2.Order(order_id=uniq(), status=SHIPPED, device_id="ABC", tracking_link=link)
            ),
            C.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
            "order.device_id",
        ),
        (
            up(user_pb2.Order(order_id=uniq(), status=RECEIVED, id="mine")),
            C.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
            "order.id",
        ),
        (
            up(user_pb2.Order(order_id=oid, status=RECEIVED, etag="stale")),
            C.ABORTED,
            "ETAG_MISMATCH",
            None,
        ),
        (
            up(user_pb2.Order(order_id=uniq(), status=RECEIVED, etag="stale")),
            C.ABORTED,
            "ETAG_MISMATCH",
            None,
        ),
        (
            up(user_pb2.Order(order_id=uniq(), status=RECEIVED), world.extra["h"].id),
            C.FAILED_PRECONDITION,
            "USER_NOT_EXTERNAL",
            None,
        ),
    ]
    for req, code, reason, field in cases:
        rejected(world, users.UpsertUserOrder, req, code=code, reason=reason, field=field)
    # another user's order id, inside the same account
    y = new_user(world.server, world.inter, EXTERNAL).user
    rejected(
        world,
        users.UpsertUserOrder,
        up(user_pb2.Order(order_id=oid, status=RECEIVED), y.id),
        code=C.ALREADY_EXISTS,
        reason="ORDER_ID_TAKEN",
        meta={"order_id": oid},
    )


def test_order_status_never_moves_backwards(world: World) -> None:
    users = world.server.stubs.users
    x = world.extra["x"]
    oid = uniq("o-")
    link = "http://track.example.com/x"

    def up(status: int, **kw: Any) -> us.UpsertUserOrderRequest:
        return us.UpsertUserOrderRequest(
            user=ref(x.id), order=user_pb2.Order(order_id=oid, status=status, **kw)
        )

    users.UpsertUserOrder(
        up(SHIPPED, device_id=world.devices[0].device_id, tracking_link=link),
        metadata=world.server.admin,
    )
    for back in (RECEIVED, user_pb2.ORDER_STATUS_PROCESSING):
        rejected(
            world,
            users.UpsertUserOrder,
            up(back),
            code=C.FAILED_PRECONDITION,
            reason="ORDER_STATUS_BACKWARDS",
            meta={"status": "SHIPPED"},
        )
    users.UpsertUserOrder(up(user_pb2.ORDER_STATUS_CANCELLED), metadata=world.server.admin)
    for after in (RECEIVED, SHIPPED, user_pb2.ORDER_STATUS_DELIVERED):
        rejected(
            world,
            users.UpsertUserOrder,
            up(after),
            code=C.FAILED_PRECONDITION,
            reason="ORDER_CLOSED",
            meta={"status": "CANCELLED"},
        )


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


def test_no_change_records_nothing(world: World) -> None:
    """Idempotent repeats (permission held, charging off, order unchanged) write nothing."""
    s = world.server
    users = s.stubs.users
    x = world.extra["x"]
    before = snapshot(s)
    users.AddDevicePermissions(
        us.AddDevicePermissionsRequest(
            user=ref(x.id), devices=[by_device(world.devices[0].device_id)]
        ),
        metadata=s.admin,
    )
    users.RemoveDevicePermissions(
        us.RemoveDevicePermissionsRequest(
            user=ref(x.id), devices=[by_device(world.devices[5].device_id)]
        ),
        metadata=s.admin,
    )
    users.RemoveChargingPermission(
        us.RemoveChargingPermissionRequest(
            user=ref(x.id), device=by_device(world.devices[0].device_id)
        ),
        metadata=s.admin,
    )
    users.UpsertUserOrder(
        us.UpsertUserOrderRequest(
            user=ref(x.id), order=user_pb2.Order(order_id=world.extra["order_id"], status=RECEIVED)
        ),
        metadata=s.admin,
    )
    assert snapshot(s) == before
