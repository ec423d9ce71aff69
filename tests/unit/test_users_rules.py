"""The pure rules of services/users.py, without I/O."""

from __future__ import annotations

from itertools import product
from types import SimpleNamespace

import pytest

from accounts_grpc.domain.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from accounts_grpc.domain.principal import Principal
from accounts_grpc.domain.validate import Validator
from accounts_grpc.services import users as U


def principal(*roles: str, kind: str = "HUMAN") -> Principal:
    return Principal("u1", "a1", kind, frozenset({"member", *roles}), frozenset())


# -- kinds ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind,fields,bad",
    [
        ("HUMAN", dict(email="a@b.co"), []),
        ("HUMAN", dict(email="a@b.co", first_name="A", last_name="B"), []),
        ("HUMAN", dict(), ["user.email"]),
        ("HUMAN", dict(email="a@b.co", external_id="x"), ["user.external_id"]),
        ("EXTERNAL", dict(external_id="x"), []),
        ("EXTERNAL", dict(external_id="x", email="a@b.co", first_name="E"), []),
        ("EXTERNAL", dict(email="a@b.co"), ["user.external_id"]),
        ("EXTERNAL", dict(external_id="x", email="nope"), ["user.email"]),
        ("MACHINE", dict(), []),
        ("MACHINE", dict(first_name="billing", last_name="service"), []),
        ("MACHINE", dict(email="a@b.co", first_name="M"), ["user.email"]),
        ("MACHINE", dict(external_id="x"), ["user.external_id"]),
    ],
)
def test_fields_by_kind(kind: str, fields: dict[str, str], bad: list[str]) -> None:
    v = Validator()
    args = dict(email="", first_name="", last_name="", external_id="") | fields
    U.check_user_fields(v, kind, **args)
    assert sorted({x.field for x in v.violations}) == sorted(bad)


def test_display_name() -> None:
    assert U.display_name(" Ada ", "Lovelace", "a@b.co", "", "") == "Ada Lovelace"
    assert U.display_name("", "Lovelace", "a@b.co", "", "") == "Lovelace"
    assert U.display_name("", "", "a@b.co", "x", "") == "a@b.co"
    assert U.display_name("", "", "", "x", "cid") == "x"
    assert U.display_name("", "", "", "", "cid") == "cid"


# -- orders --------------------------------------------------------------------------------------

RANK = {"RECEIVED": 1, "PROCESSING": 2, "SHIPPED": 3, "DELIVERED": 4}


@pytest.mark.parametrize("cur,new", list(product(U.ORDER_STATUSES, U.ORDER_STATUSES)))
def test_order_transitions(cur: str, new: str) -> None:
    """Forward only (skips allowed), CANCELLED from any open status, final means final."""
    final = cur in ("DELIVERED", "CANCELLED")
    allowed = (not final and (new == "CANCELLED" or RANK[new] >= RANK[cur])) or (
        final and new == cur
    )
    changed = new != cur
    if allowed:
        U.check_order_transition(cur, new, changed=changed)
    else:
        with pytest.raises(FailedPrecondition) as e:
            U.check_order_transition(cur, new, changed=changed)
        assert e.value.reason == ("ORDER_CLOSED" if final else "ORDER_STATUS_BACKWARDS")


def test_a_final_order_may_not_change_its_details() -> None:
    with pytest.raises(FailedPrecondition):
        U.check_order_transition("DELIVERED", "DELIVERED", changed=True)
    U.check_order_transition(None, "SHIPPED", changed=True)  # new orders start anywhere


@pytest.mark.parametrize("status", U.ORDER_STATUSES)
def test_shipping_details(status: str) -> None:
    U.check_shipping(status, "ABCDEFGH", "https://t.example.com")
    if status in ("SHIPPED", "DELIVERED"):
        with pytest.raises(InvalidArgument) as e:
            U.check_shipping(status, "", "")
        assert [v.field for v in e.value.violations] == ["order.device_id", "order.tracking_link"]
    else:
        U.check_shipping(status, "", "")


# -- roles ---------------------------------------------------------------------------------------


def test_grantable_roles() -> None:
    assert U.check_grantable(principal("account-admin"), [], "r") == ["member"]
    assert U.check_grantable(principal("account-admin"), ["consultant", "account-admin"], "r") == [
        "account-admin",
        "consultant",
    ]
    assert U.check_grantable(principal("admin"), ["admin"], "r") == ["admin"]
    for caller, role in (
        ("account-admin", "admin"),
        ("account-admin", "admin-reader"),
        ("admin-reader", "admin-reader"),
        ("consultant", "account-admin"),
        ("", "consultant"),
    ):
        with pytest.raises(PermissionDenied) as e:
            U.check_grantable(principal(*[caller] if caller else []), [role], "r")
        assert e.value.reason == "ROLE_NOT_GRANTABLE"
    with pytest.raises(InvalidArgument):
        U.check_grantable(principal("admin"), ["root"], "r")


# "outranked" (acting on a user with roles the caller could not grant) is decided once,
# for every RPC, in services/common.py: tests/unit/test_user_authority.py


# -- inputs --------------------------------------------------------------------------------------


def test_unchanged_fields() -> None:
    row = SimpleNamespace(
        kind="HUMAN",
        account_id="a1",
        email="a@b.co",
        first_name="A",
        last_name="",
        external_id=None,
        client_id=None,
        roles=["member", "consultant"],
        create_time=10,
        update_time=20,
    )
    u = U.UserInput(
        kind="HUMAN",
        account_id="a1",
        email="a@b.co",
        first_name="B",
        roles=("consultant", "member"),
        create_time=10,
        update_time=21,
        populated=(
            "kind",
            "account_id",
            "email",
            "first_name",
            "roles",
            "create_time",
            "update_time",
        ),
    )
    assert U.unchanged_fields(u, row) == {"kind", "account_id", "email", "roles", "create_time"}


def test_device_refs() -> None:
    U.check_device_refs([U.DeviceRef(device_id="ABCDEFGH"), U.DeviceRef(meter_id="m")], "d")
    for refs, field in (
        ([], "d"),
        ([U.DeviceRef()], "d[0]"),
        ([U.DeviceRef(device_id="ABC")], "d[0].device_id"),
        ([U.DeviceRef(device_id=" ABCDEFG")], "d[0].device_id"),
        ([U.DeviceRef(meter_id="m" * 201)], "d[0].meter_id"),
        ([U.DeviceRef(meter_id="m")] * (U.MAX_DEVICES_PER_CALL + 1), "d"),
    ):
        with pytest.raises(InvalidArgument) as e:
            U.check_device_refs(refs, "d")
        assert field in [v.field for v in e.value.violations]
    with pytest.raises(InvalidArgument) as e:
        U.check_device_refs([U.DeviceRef()], "device", single=True)
    assert [v.field for v in e.value.violations] == ["device"]


def test_user_ref() -> None:
    U.check_user_ref(U.UserRef(user_id="00000000-0000-4000-8000-000000000000"))
    U.check_user_ref(U.UserRef(external_id="x"))
    for r, reason, field in (
        (U.UserRef(), "USER_REF_REQUIRED", "user"),
        (U.UserRef(user_id="x"), "INVALID_ID", "user.user_id"),
        (U.UserRef(external_id="x", account_id="y"), "INVALID_ID", "user.account_id"),
        (U.UserRef(external_id="x" * 201), "INVALID_ARGUMENT", "user.external_id"),
    ):
        with pytest.raises(InvalidArgument) as e:
            U.check_user_ref(r)
        assert e.value.reason == reason and e.value.violations[0].field == field
