"""The pure rules of services/users.py, without I/O."""

from __future__ import annotations

from itertools import product
from types import SimpleNamespace

import pytest

from accounts_grpc.domain.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from accounts_grpc.domain.principal import Principal
from accounts_grpc.domain.validate import Validator
from accounts_grpc.services import device_permissions as DP
from accounts_grpc.services import orders as O
from accounts_grpc.services import user_access as UA
from accounts_grpc.services import user_fields as UF


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
    UF.check_user_fields(v, kind, **args)
    assert sorted({x.field for x in v.violations}) == sorted(bad)


def test_display_name() -> None:
    assert UF.display_name(" Ada ", "Lovelace", "a@b.co", "", "") == "Ada Lovelace"
    assert UF.display_name("", "Lovelace", "a@b.co", "", "") == "Lovelace"
    assert UF.display_name("", "", "a@b.co", "x", "") == "a@b.co"
    assert UF.display_name("", "", "", "x", "cid") == "x"
    assert UF.display_name("", "", "", "", "cid") == "cid"


# -- orders --------------------------------------------------------------------------------------

RANK = {"RECEIVED": 1, "PROCESSING": 2, "SHIPPED": 3, "DELIVERED": 4}


@pytest.mark.parametrize("cur,new", list(product(O.ORDER_STATUSES, O.ORDER_STATUSES)))
def test_order_transitions(cur: str, new: str) -> None:
    """Forward only (skips allowed), CANCELLED from any open status, final means final."""
    final = cur in ("DELIVERED", "CANCELLED")
    allowed = (not final and (new == "CANCELLED" or RANK[new] >= RANK[cur])) or (
        final and new == cur
    )
    changed = new != cur
    if allowed:
        O.check_order_transition(cur, new, changed=changed)
    else:
        with pytest.raises(FailedPrecondition) as e:
            O.check_order_transition(cur, new, changed=changed)
        assert e.value.reason == ("ORDER_CLOSED" if final else "ORDER_STATUS_BACKWARDS")


def test_a_final_order_may_not_change_its_details() -> None:
    with pytest.raises(FailedPrecondition):
        O.check_order_transition("DELIVERED", "DELIVERED", changed=True)
    O.check_order_transition(None, "SHIPPED", changed=True)  # new orders start anywhere


@pytest.mark.parametrize("status", O.ORDER_STATUSES)
def test_shipping_details(status: str) -> None:
    O.check_shipping(status, "ABCDEFGH", "https://t.example.com")
    if status in ("SHIPPED", "DELIVERED"):
        with pytest.raises(InvalidArgument) as e:
            O.check_shipping(status, "", "")
        assert [v.field for v in e.value.violations] == ["order.device_id", "order.tracking_link"]
    else:
        O.check_shipping(status, "", "")


# -- roles ---------------------------------------------------------------------------------------


def test_grantable_roles() -> None:
    assert UF.check_grantable(principal("account-admin"), [], "r") == ["member"]
    assert UF.check_grantable(principal("account-admin"), ["consultant", "account-admin"], "r") == [
        "account-admin",
        "consultant",
    ]
    assert UF.check_grantable(principal("admin"), ["admin"], "r") == ["admin"]
    for caller, role in (
        ("account-admin", "admin"),
        ("account-admin", "admin-reader"),
        ("admin-reader", "admin-reader"),
        ("consultant", "account-admin"),
        ("", "consultant"),
    ):
        with pytest.raises(PermissionDenied) as e:
            UF.check_grantable(principal(*[caller] if caller else []), [role], "r")
        assert e.value.reason == "ROLE_NOT_GRANTABLE"
    with pytest.raises(InvalidArgument):
        UF.check_grantable(principal("admin"), ["root"], "r")


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
    u = UF.UserInput(
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
    assert UF.unchanged_fields(u, row) == {"kind", "account_id", "email", "roles", "create_time"}


def test_device_refs() -> None:
    DP.check_device_refs([DP.DeviceRef(device_id="ABCDEFGH"), DP.DeviceRef(meter_id="m")], "d")
    for refs, field in (
        ([], "d"),
        ([DP.DeviceRef()], "d[0]"),
        ([DP.DeviceRef(device_id="ABC")], "d[0].device_id"),
        ([DP.DeviceRef(device_id=" ABCDEFG")], "d[0].device_id"),
        ([DP.DeviceRef(meter_id="m" * 201)], "d[0].meter_id"),
        ([DP.DeviceRef(meter_id="m")] * (DP.MAX_DEVICES_PER_CALL + 1), "d"),
    ):
        with pytest.raises(InvalidArgument) as e:
            DP.check_device_refs(refs, "d")
        assert field in [v.field for v in e.value.violations]
    with pytest.raises(InvalidArgument) as e:
        DP.check_device_refs([DP.DeviceRef()], "device", single=True)
    assert [v.field for v in e.value.violations] == ["device"]


def test_user_ref() -> None:
    UA.check_user_ref(UA.UserRef(user_id="00000000-0000-4000-8000-000000000000"))
    UA.check_user_ref(UA.UserRef(external_id="x"))
    for r, reason, field in (
        (UA.UserRef(), "USER_REF_REQUIRED", "user"),
        (UA.UserRef(user_id="x"), "INVALID_ID", "user.user_id"),
        (UA.UserRef(external_id="x", account_id="y"), "INVALID_ID", "user.account_id"),
        (UA.UserRef(external_id="x" * 201), "INVALID_ARGUMENT", "user.external_id"),
    ):
        with pytest.raises(InvalidArgument) as e:
            UA.check_user_ref(r)
        assert e.value.reason == reason and e.value.violations[0].field == field
