"""The rules of UserService's use cases (users, device and charging permissions, orders),
asked in process: the domain error (class = gRPC code, reason, field violations,
metadata) and no row changed.

Moved from tests/e2e/test_users_errors.py (old test → here); the e2e module keeps one
real call per RPC and per error class, and the audit story:
- test_create_user_bad_input[*] → test_create_user_bad_input[*], but "control character"
  (INVALID_CHARACTER is the edge's check of every string, rpc/inputs.py: e2e only)
- test_create_user_external_id_taken_inside_the_account_only → same name
- test_create_user_role_above_the_callers[*] → same name
- test_create_user_bad_account[*] → same name
- test_create_user_request_id → same name
- test_get_user_bad_input[*], test_get_user_by_id_in_the_wrong_account → same names
- test_list_users_bad_input[*], test_list_users_token_bound_to_its_query → same names
- test_update_user_bad_input, test_update_user_rights → same names
- test_delete_user_bad_input, test_rotate_client_secret_bad_input → same names
- test_device_permissions_bad_input, test_charging_needs_the_device_permission,
  test_list_device_permissions_bad_input → same names
- test_upsert_order_bad_input, test_order_status_never_moves_backwards → same names
- test_no_change_records_nothing → same name
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest
from accounts.v1 import user_pb2
from accounts.v1 import user_service_pb2 as us
from google.protobuf import timestamp_pb2

from accounts_grpc.domain.errors import (
    Aborted,
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from accounts_grpc.domain.principal import Principal
from accounts_grpc.rpc.convert import users as cv
from tests.usecases.helpers import (
    EXTERNAL,
    HUMAN,
    MACHINE,
    UNKNOWN_ID,
    UseCases,
    device_id,
    uniq,
)

SHIPPED = user_pb2.ORDER_STATUS_SHIPPED
RECEIVED = user_pb2.ORDER_STATUS_RECEIVED
Err = type[DomainError]


@dataclass
class World:
    """An intermediary account ``inter`` (its account-admin ``aa``, a machine user ``bot``
    that ``aa`` made, six devices and users ``x`` EXTERNAL with a permission on
    devices[0] and an order, ``h`` HUMAN, ``m`` MACHINE, ``reader`` an admin-reader),
    and an account ``other`` with two devices."""

    inter: str
    other: str
    aa: Principal
    bot: Principal
    devices: list[Any]
    other_devices: list[Any]
    x: Any
    h: Any
    m: Any
    reader: Any
    order_id: str


@pytest.fixture(scope="module")
def w(uc: UseCases) -> World:
    consult, _ = uc.new_account("Consultancy", roles=["consultancy"])
    inter, aa_row = uc.new_account("Intermediary", roles=["intermediary"],
                                   consultancy_account_id=consult.id)
    other, _ = uc.new_account("Other")
    aa = uc.principal(aa_row)
    bot = uc.principal(uc.new_user(inter.id, MACHINE, p=aa).row)
    devices = uc.register(uc.new_partition(inter.id).id,
                          *(dict(device_id=device_id(), meter_id=uniq("MTR-")) for _ in range(6)))
    other_devices = uc.register(uc.new_partition(other.id).id,
                                *(dict(device_id=device_id(), meter_id=uniq("MTR-"))
                                  for _ in range(2)))
    x = uc.new_user(inter.id, EXTERNAL).row
    s = uc.services
    s.device_permissions.add_device_permissions(
        uc.admin, cv.user_ref(ref(x.id)), cv.device_refs([by_device(devices[0].device_id)]))
    order_id = uniq("o-")
    s.orders.upsert_user_order(uc.admin, cv.user_ref(ref(x.id)),
                               cv.order_input(user_pb2.Order(order_id=order_id, status=RECEIVED)))
    return World(
        inter=inter.id, other=other.id, aa=aa, bot=bot, devices=devices,
        other_devices=other_devices, x=x,
        h=uc.new_user(inter.id, HUMAN, email="Taken@Example.com").row,
        m=uc.new_user(inter.id, MACHINE).row,
        reader=uc.new_user(inter.id, HUMAN, roles=["admin-reader"]).row,
        order_id=order_id,
    )


def ref(user_id: str = "", external_id: str = "") -> user_pb2.UserRef:
    return user_pb2.UserRef(user_id=user_id) if user_id else user_pb2.UserRef(
        external_id=external_id)


def by_device(device_id: str) -> user_pb2.DeviceRef:
    return user_pb2.DeviceRef(device_id=device_id)


def by_meter(meter_id: str) -> user_pb2.DeviceRef:
    return user_pb2.DeviceRef(meter_id=meter_id)


# -- CreateUser ---------------------------------------------------------------------------------

CREATE_CASES: list[tuple[str, dict[str, Any], Err, str, str | None]] = [
    # (id, user fields, error, reason, field)
    ("unknown kind number", dict(kind=9, email="k@example.com"), InvalidArgument,
     "INVALID_ARGUMENT", "user.kind"),
    ("kind missing", dict(email="a@example.com"), InvalidArgument, "INVALID_ARGUMENT",
     "user.kind"),
    ("human without email", dict(kind=HUMAN, first_name="A"), InvalidArgument,
     "INVALID_ARGUMENT", "user.email"),
    ("human bad email", dict(kind=HUMAN, email="not-an-email"), InvalidArgument,
     "INVALID_ARGUMENT", "user.email"),
    ("human email newline", dict(kind=HUMAN, email="a@example.com\nb"), InvalidArgument,
     "INVALID_ARGUMENT", "user.email"),
    ("human with external_id", dict(kind=HUMAN, email="b@example.com", external_id="e1"),
     InvalidArgument, "INVALID_ARGUMENT", "user.external_id"),
    ("external without external_id", dict(kind=EXTERNAL, first_name="E"), InvalidArgument,
     "INVALID_ARGUMENT", "user.external_id"),
    ("external_id too long", dict(kind=EXTERNAL, external_id="x" * 201), InvalidArgument,
     "INVALID_ARGUMENT", "user.external_id"),
    ("machine with email", dict(kind=MACHINE, email="m@example.com"), InvalidArgument,
     "INVALID_ARGUMENT", "user.email"),
    ("machine with external_id", dict(kind=MACHINE, external_id="m1"), InvalidArgument,
     "INVALID_ARGUMENT", "user.external_id"),
    ("name too long", dict(kind=HUMAN, email="c@example.com", first_name="n" * 201),
     InvalidArgument, "INVALID_ARGUMENT", "user.first_name"),
    ("output-only id", dict(kind=HUMAN, email="e@example.com", id="x"), InvalidArgument,
     "INVALID_ARGUMENT", "user.id"),
    ("output-only client_id", dict(kind=MACHINE, client_id="cid_mine"), InvalidArgument,
     "INVALID_ARGUMENT", "user.client_id"),
    ("output-only create_time",
     dict(kind=HUMAN, email="f@example.com", create_time=timestamp_pb2.Timestamp(seconds=5)),
     InvalidArgument, "INVALID_ARGUMENT", "user.create_time"),
    ("etag on create", dict(kind=HUMAN, email="g@example.com", etag="abc"), InvalidArgument,
     "INVALID_ARGUMENT", "user.etag"),
    ("unknown role", dict(kind=HUMAN, email="h@example.com", roles=["member", "boss"]),
     InvalidArgument, "UNKNOWN_ROLE", "user.roles[1]"),
    ("account role as user role", dict(kind=HUMAN, email="i@example.com", roles=["intermediary"]),
     InvalidArgument, "UNKNOWN_ROLE", "user.roles[0]"),
    ("email taken (any case)", dict(kind=HUMAN, email="taken@EXAMPLE.com"), AlreadyExists,
     "EMAIL_TAKEN", None),
]


def create(uc: UseCases, p: Principal, account_id: str, request_id: str = "",
           **fields: Any) -> Any:
    """CreateUser as the servicer makes it."""
    return uc.services.users.create_user(p, account_id, cv.user_input(user_pb2.User(**fields)),
                                         request_id)


@pytest.mark.parametrize("case", CREATE_CASES, ids=[c[0] for c in CREATE_CASES])
def test_create_user_bad_input(uc: UseCases, w: World, case: tuple[Any, ...]) -> None:
    _, fields, error, reason, field = case
    uc.rejects(lambda: create(uc, uc.admin, w.inter, **fields), error, reason, field=field)


def test_create_user_external_id_taken_inside_the_account_only(uc: UseCases, w: World) -> None:
    uc.rejects(lambda: create(uc, uc.admin, w.inter, kind=EXTERNAL, external_id=w.x.external_id),
               AlreadyExists, "EXTERNAL_ID_TAKEN", meta={"external_id": w.x.external_id})
    # the same external id in another account is a different user
    other = uc.new_user(w.other, EXTERNAL, external_id=w.x.external_id).row
    assert other.account_id == w.other and other.external_id == w.x.external_id


@pytest.mark.parametrize(
    "actor,roles,denied",
    [
        ("aa", ["admin"], "admin"),
        ("aa", ["admin-reader"], "admin-reader"),
        ("bot", ["account-admin"], "account-admin"),
        ("bot", ["consultant"], "consultant"),
    ],
)
def test_create_user_role_above_the_callers(
    uc: UseCases, w: World, actor: str, roles: list[str], denied: str
) -> None:
    uc.rejects(
        lambda: create(uc, getattr(w, actor), w.inter, kind=EXTERNAL, external_id=uniq("e-"),
                       roles=roles),
        PermissionDenied, "ROLE_NOT_GRANTABLE", meta={"roles": denied})


@pytest.mark.parametrize(
    "account_id,error,reason,field",
    [
        ("", InvalidArgument, "INVALID_ARGUMENT", "account_id"),
        ("nope", InvalidArgument, "INVALID_ARGUMENT", "account_id"),
        (UNKNOWN_ID, NotFound, "ACCOUNT_NOT_FOUND", None),
    ],
)
def test_create_user_bad_account(
    uc: UseCases, w: World, account_id: str, error: Err, reason: str, field: str | None
) -> None:
    uc.rejects(lambda: create(uc, uc.admin, account_id, kind=EXTERNAL, external_id=uniq()),
               error, reason, field=field)


def test_create_user_request_id(uc: UseCases, w: World) -> None:
    rid = uniq("req-")
    first = create(uc, uc.admin, w.inter, rid, kind=MACHINE)
    assert first.client_secret
    again = create(uc, uc.admin, w.inter, rid, kind=MACHINE)
    assert again.row.id == first.row.id and again.client_secret == ""  # shown once
    uc.rejects(lambda: create(uc, uc.admin, w.inter, rid, kind=MACHINE, roles=["consultant"]),
               InvalidArgument, "REQUEST_ID_REUSED", field="request_id")
    uc.rejects(lambda: create(uc, uc.admin, w.inter, "r" * 201, kind=MACHINE),
               InvalidArgument, "INVALID_ARGUMENT", field="request_id")


# -- GetUser / ListUsers ------------------------------------------------------------------------

GET_CASES: list[tuple[str, dict[str, str], Err, str, str | None]] = [
    ("nothing named", dict(), InvalidArgument, "USER_REF_REQUIRED", "id"),
    ("two names", dict(id=UNKNOWN_ID, email="a@example.com"), InvalidArgument,
     "USER_REF_REQUIRED", "id"),
    ("malformed id", dict(id="123"), InvalidArgument, "INVALID_ID", "id"),
    ("malformed account_id", dict(email="a@example.com", account_id="x"), InvalidArgument,
     "INVALID_ID", "account_id"),
    ("unknown id", dict(id=UNKNOWN_ID), NotFound, "USER_NOT_FOUND", None),
    ("unknown email", dict(email="nobody@example.com"), NotFound, "USER_NOT_FOUND", None),
    ("unknown external_id", dict(external_id="nobody"), NotFound, "USER_NOT_FOUND", None),
]


@pytest.mark.parametrize("case", GET_CASES, ids=[c[0] for c in GET_CASES])
def test_get_user_bad_input(uc: UseCases, w: World, case: tuple[Any, ...]) -> None:
    _, fields, error, reason, field = case
    e = uc.rejects(lambda: uc.services.users.get_user(uc.admin, **fields), error, reason,
                   field=field)
    if error is NotFound:
        key = next(k for k in ("id", "email", "external_id") if k in fields)
        assert e.metadata == {key: fields[key]}


def test_get_user_by_id_in_the_wrong_account(uc: UseCases, w: World) -> None:
    uc.rejects(lambda: uc.services.users.get_user(uc.admin, id=w.x.id, account_id=w.other),
               NotFound, "USER_NOT_FOUND")


def list_users(uc: UseCases, req: us.ListUsersRequest) -> Any:
    """ListUsers as the servicer makes it."""
    return uc.services.users.list_users(
        uc.admin, req.account_id, page_size=req.page_size, page_token=req.page_token,
        filter=req.filter, order_by=req.order_by, kind=cv.kind_of(req.kind))


LIST_CASES: list[tuple[str, dict[str, Any], str, str]] = [
    ("no account", dict(), "INVALID_ARGUMENT", "account_id"),
    ("negative page_size", dict(page_size=-1), "INVALID_PAGE_SIZE", "page_size"),
    ("unknown order_by", dict(order_by="password"), "INVALID_ORDER_BY", "order_by"),
    ("bad order direction", dict(order_by="name up"), "INVALID_ORDER_BY", "order_by"),
    ("unterminated quote", dict(filter='"abc'), "INVALID_FILTER", "filter"),
    ("unknown kind number", dict(kind=9), "INVALID_ARGUMENT", "kind"),
    ("garbage page_token", dict(page_token="garbage"), "INVALID_PAGE_TOKEN", "page_token"),
]


@pytest.mark.parametrize("case", LIST_CASES, ids=[c[0] for c in LIST_CASES])
def test_list_users_bad_input(uc: UseCases, w: World, case: tuple[Any, ...]) -> None:
    name, fields, reason, field = case
    if name != "no account":
        fields = dict(fields, account_id=w.inter)
    uc.rejects(lambda: list_users(uc, us.ListUsersRequest(**fields)), InvalidArgument, reason,
               field=field)


def test_list_users_token_bound_to_its_query(uc: UseCases, w: World) -> None:
    page = list_users(uc, us.ListUsersRequest(account_id=w.inter, page_size=1))
    assert page.next_page_token
    for changed in (
        dict(filter="x"),
        dict(order_by="email"),
        dict(kind=HUMAN),
        dict(account_id=w.other),
    ):
        req = us.ListUsersRequest(account_id=w.inter, page_size=1,
                                  page_token=page.next_page_token)
        for k, v in changed.items():
            setattr(req, k, v)
        uc.rejects(partial(list_users, uc, req), InvalidArgument,
                   "PAGE_TOKEN_QUERY_MISMATCH", field="page_token")


# -- UpdateUser ---------------------------------------------------------------------------------


def update(uc: UseCases, p: Principal, user: user_pb2.User, *paths: str) -> Any:
    """UpdateUser as the servicer makes it (no paths: no update_mask)."""
    return uc.services.users.update_user(p, user.id, cv.user_input(user), list(paths))


def test_update_user_bad_input(uc: UseCases, w: World) -> None:
    h, x = w.h, w.x
    current = cv.user_to_proto(uc.services.users.get_user(uc.admin, id=h.id))
    other_email = uc.new_user(w.inter, HUMAN).row.email
    U = user_pb2.User
    cases: list[tuple[user_pb2.User, tuple[str, ...], Err, str, str | None]] = [
        (U(first_name="x"), (), InvalidArgument, "INVALID_ARGUMENT", "user.id"),
        (U(id="zzz", first_name="x"), (), InvalidArgument, "INVALID_ID", "user.id"),
        (U(id=UNKNOWN_ID, first_name="x"), (), NotFound, "USER_NOT_FOUND", None),
        (U(id=h.id, first_name="x", etag="stale"), (), Aborted, "ETAG_MISMATCH", None),
        (U(id=h.id, kind=MACHINE), ("kind",), InvalidArgument, "INVALID_UPDATE_MASK",
         "update_mask.paths[0]"),
        (U(id=h.id), ("client_id",), InvalidArgument, "INVALID_UPDATE_MASK",
         "update_mask.paths[0]"),
        (U(id=h.id), ("first_name", "password"), InvalidArgument, "INVALID_UPDATE_MASK",
         "update_mask.paths[1]"),
        (U(id=h.id), ("user.first_name",), InvalidArgument, "INVALID_UPDATE_MASK",
         "update_mask.paths[0]"),
        (U(id=h.id, kind=EXTERNAL), (), InvalidArgument, "FIELD_NOT_UPDATABLE", "user.kind"),
        (U(id=h.id, create_time=timestamp_pb2.Timestamp(seconds=1)), (), InvalidArgument,
         "FIELD_NOT_UPDATABLE", "user.create_time"),
        (U(id=h.id), ("email",), InvalidArgument, "INVALID_ARGUMENT", "user.email"),
        (U(id=h.id, email="nope"), (), InvalidArgument, "INVALID_ARGUMENT", "user.email"),
        (U(id=h.id, external_id="e-1"), (), InvalidArgument, "INVALID_ARGUMENT",
         "user.external_id"),
        (U(id=x.id), ("external_id",), InvalidArgument, "INVALID_ARGUMENT", "user.external_id"),
        (U(id=h.id, email=other_email.upper()), (), AlreadyExists, "EMAIL_TAKEN", None),
        (U(id=h.id, roles=["superuser"]), (), InvalidArgument, "UNKNOWN_ROLE", "user.roles[0]"),
    ]
    for user, paths, error, reason, field in cases:
        uc.rejects(partial(update, uc, uc.admin, user, *paths), error, reason,
                   field=field)
    assert cv.user_to_proto(uc.services.users.get_user(uc.admin, id=h.id)) == current


def test_update_user_rights(uc: UseCases, w: World) -> None:
    s = uc.services
    uc.rejects(lambda: update(uc, w.aa, user_pb2.User(id=w.h.id, roles=["admin"])),
               PermissionDenied, "ROLE_NOT_GRANTABLE")
    # an account-admin cannot touch a user holding a role it could not grant
    uc.rejects(lambda: update(uc, w.aa, user_pb2.User(id=w.reader.id, first_name="x")),
               PermissionDenied, "USER_OUTRANKS_CALLER")
    uc.rejects(lambda: s.users.delete_user(w.aa, w.reader.id), PermissionDenied,
               "USER_OUTRANKS_CALLER")
    # the machine user may not promote an EXTERNAL user above itself
    x = uc.new_user(w.inter, EXTERNAL, p=w.bot).row
    uc.rejects(lambda: update(uc, w.bot, user_pb2.User(id=x.id, roles=["account-admin"])),
               PermissionDenied, "ROLE_NOT_GRANTABLE")


# -- DeleteUser / RotateClientSecret ------------------------------------------------------------


def test_delete_user_bad_input(uc: UseCases, w: World) -> None:
    delete = uc.services.users.delete_user
    uc.rejects(lambda: delete(uc.admin, ""), InvalidArgument, "INVALID_ARGUMENT", field="id")
    uc.rejects(lambda: delete(uc.admin, "1"), InvalidArgument, "INVALID_ID", field="id")
    uc.rejects(lambda: delete(uc.admin, UNKNOWN_ID), NotFound, "USER_NOT_FOUND")
    uc.rejects(lambda: delete(uc.admin, w.h.id, "stale"), Aborted, "ETAG_MISMATCH")
    uc.rejects(lambda: delete(w.aa, w.aa.user_id), FailedPrecondition, "CANNOT_DELETE_SELF")


def test_rotate_client_secret_bad_input(uc: UseCases, w: World) -> None:
    rotate = uc.services.users.rotate_client_secret
    uc.rejects(lambda: rotate(uc.admin, w.h.id), FailedPrecondition, "USER_NOT_MACHINE",
               meta={"kind": "HUMAN"})
    uc.rejects(lambda: rotate(uc.admin, ""), InvalidArgument, "INVALID_ARGUMENT", field="id")
    uc.rejects(lambda: rotate(uc.admin, UNKNOWN_ID), NotFound, "USER_NOT_FOUND")


# -- device permissions -------------------------------------------------------------------------


def test_device_permissions_bad_input(uc: UseCases, w: World) -> None:
    dp = uc.services.device_permissions
    x, known, foreign = w.x, w.devices[1], w.other_devices[0]
    ghost_dev, ghost_meter = device_id(), uniq("ghost-")
    R = us.AddDevicePermissionsRequest
    bad: list[tuple[Any, Err, str, str | None, dict[str, str] | None]] = [
        (R(devices=[by_device(known.device_id)]), InvalidArgument, "USER_REF_REQUIRED", "user",
         None),
        (R(user=ref(x.id)), InvalidArgument, "INVALID_ARGUMENT", "devices", None),
        (R(user=ref(x.id), devices=[by_device("1234567")]), InvalidArgument, "INVALID_ARGUMENT",
         "devices[0].device_id", None),
        (R(user=ref(x.id), devices=[by_device("123456789")]), InvalidArgument,
         "INVALID_ARGUMENT", "devices[0].device_id", None),
        (R(user=ref(x.id), devices=[by_device(known.device_id), user_pb2.DeviceRef()]),
         InvalidArgument, "INVALID_ARGUMENT", "devices[1]", None),
        (R(user=user_pb2.UserRef(user_id="nope"), devices=[by_device(known.device_id)]),
         InvalidArgument, "INVALID_ID", "user.user_id", None),
        # all or nothing: the known device is not granted either; every unknown one is named
        (R(user=ref(x.id), devices=[by_device(known.device_id), by_device(ghost_dev),
                                    by_meter(ghost_meter)]),
         NotFound, "DEVICE_NOT_FOUND", None, {"device_id": ghost_dev, "meter_id": ghost_meter}),
        # a device of another account is as unknown as a missing one
        (R(user=ref(x.id), devices=[by_meter(foreign.meter_id)]), NotFound, "DEVICE_NOT_FOUND",
         None, {"meter_id": foreign.meter_id}),
        (R(user=ref(external_id="nobody"), devices=[by_device(known.device_id)]), NotFound,
         "USER_NOT_FOUND", None, {"external_id": "nobody"}),
    ]
    for req, error, reason, field, meta in bad:
        user, devices = cv.user_ref(req.user), cv.device_refs(req.devices)
        for fn in (dp.add_device_permissions, dp.remove_device_permissions):
            uc.rejects(partial(fn, uc.admin, user, devices), error, reason,
                       field=field, meta=meta)


def test_charging_needs_the_device_permission(uc: UseCases, w: World) -> None:
    ch = uc.services.charging
    user, not_held = cv.user_ref(ref(w.x.id)), w.devices[2]
    for fn in (ch.add_charging_permission, ch.remove_charging_permission):
        for device, error, reason, field, meta in [
            (by_device(not_held.device_id), FailedPrecondition, "DEVICE_PERMISSION_REQUIRED",
             None, {"device_id": not_held.device_id}),
            (user_pb2.DeviceRef(), InvalidArgument, "INVALID_ARGUMENT", "device", None),
            (by_device("short"), InvalidArgument, "INVALID_ARGUMENT", "device.device_id", None),
            (by_meter(uniq("ghost-")), NotFound, "DEVICE_NOT_FOUND", None, None),
        ]:
            uc.rejects(partial(fn, uc.admin, user, cv.device_ref(device)), error,
                       reason, field=field, meta=meta)


def test_list_device_permissions_bad_input(uc: UseCases, w: World) -> None:
    list_dp = uc.services.device_permissions.list_device_permissions
    uc.rejects(lambda: list_dp(uc.admin, cv.user_ref(user_pb2.UserRef())), InvalidArgument,
               "USER_REF_REQUIRED", field="user")
    uc.rejects(lambda: list_dp(uc.admin, cv.user_ref(ref(w.x.id)), page_size=-5),
               InvalidArgument, "INVALID_PAGE_SIZE", field="page_size")


# -- orders -------------------------------------------------------------------------------------


def upsert(uc: UseCases, user_id: str, **order: Any) -> Any:
    """UpsertUserOrder as the servicer makes it."""
    return uc.services.orders.upsert_user_order(
        uc.admin, cv.user_ref(ref(user_id)), cv.order_input(user_pb2.Order(**order)))


def test_upsert_order_bad_input(uc: UseCases, w: World) -> None:
    x, oid = w.x.id, w.order_id
    link = "https://track.example.com/1"
    ship = dict(status=SHIPPED, device_id="ABCDEFGH")
    cases: list[tuple[str, dict[str, Any], Err, str, str | None]] = [
        (x, dict(status=RECEIVED), InvalidArgument, "INVALID_ARGUMENT", "order.order_id"),
        (x, dict(order_id=uniq()), InvalidArgument, "INVALID_ARGUMENT", "order.status"),
        (x, dict(order_id=uniq(), status=42), InvalidArgument, "INVALID_ARGUMENT",
         "order.status"),
        (x, dict(order_id=uniq(), status=SHIPPED), InvalidArgument, "SHIPPING_DETAILS_REQUIRED",
         "order.device_id"),
        (x, dict(order_id=uniq(), **ship), InvalidArgument, "SHIPPING_DETAILS_REQUIRED",
         "order.tracking_link"),
        (x, dict(order_id=uniq(), **ship, tracking_link="ftp://track.example.com/1"),
         InvalidArgument, "INVALID_ARGUMENT", "order.tracking_link"),
        (x, dict(order_id=uniq(), status=SHIPPED, device_id="ABC", tracking_link=link),
         InvalidArgument, "INVALID_ARGUMENT", "order.device_id"),
        (x, dict(order_id=uniq(), status=RECEIVED, id="mine"), InvalidArgument,
         "INVALID_ARGUMENT", "order.id"),
        (x, dict(order_id=oid, status=RECEIVED, etag="stale"), Aborted, "ETAG_MISMATCH", None),
        (x, dict(order_id=uniq(), status=RECEIVED, etag="stale"), Aborted, "ETAG_MISMATCH",
         None),
        (w.h.id, dict(order_id=uniq(), status=RECEIVED), FailedPrecondition, "USER_NOT_EXTERNAL",
         None),
    ]
    for who, order, error, reason, field in cases:
        uc.rejects(partial(upsert, uc, who, **order), error, reason, field=field)
    # another user's order id, inside the same account
    y = uc.new_user(w.inter, EXTERNAL).row
    uc.rejects(lambda: upsert(uc, y.id, order_id=oid, status=RECEIVED), AlreadyExists,
               "ORDER_ID_TAKEN", meta={"order_id": oid})


def test_order_status_never_moves_backwards(uc: UseCases, w: World) -> None:
    oid = uniq("o-")
    upsert(uc, w.x.id, order_id=oid, status=SHIPPED, device_id=w.devices[0].device_id,
           tracking_link="http://track.example.com/x")
    for back in (RECEIVED, user_pb2.ORDER_STATUS_PROCESSING):
        uc.rejects(partial(upsert, uc, w.x.id, order_id=oid, status=back),
                   FailedPrecondition, "ORDER_STATUS_BACKWARDS", meta={"status": "SHIPPED"})
    upsert(uc, w.x.id, order_id=oid, status=user_pb2.ORDER_STATUS_CANCELLED)
    for after in (RECEIVED, SHIPPED, user_pb2.ORDER_STATUS_DELIVERED):
        uc.rejects(partial(upsert, uc, w.x.id, order_id=oid, status=after),
                   FailedPrecondition, "ORDER_CLOSED", meta={"status": "CANCELLED"})


# -- writes that change nothing -----------------------------------------------------------------


def test_no_change_records_nothing(uc: UseCases, w: World) -> None:
    """Idempotent repeats (permission held, charging off, order unchanged) write nothing."""
    s, x = uc.services, cv.user_ref(ref(w.x.id))
    before = uc.snapshot()
    s.device_permissions.add_device_permissions(
        uc.admin, x, cv.device_refs([by_device(w.devices[0].device_id)]))
    s.device_permissions.remove_device_permissions(
        uc.admin, x, cv.device_refs([by_device(w.devices[5].device_id)]))
    s.charging.remove_charging_permission(uc.admin, x, cv.device_ref(
        by_device(w.devices[0].device_id)))
    upsert(uc, w.x.id, order_id=w.order_id, status=RECEIVED)
    assert uc.snapshot() == before
