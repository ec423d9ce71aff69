"""The pure rules of groups, partitions and devices (no I/O)."""

from __future__ import annotations

import pytest

from accounts_grpc.domain.errors import InvalidArgument, PermissionDenied
from accounts_grpc.services.devices import DeviceInput, taken_error, validate_devices
from accounts_grpc.services.groups import UPDATABLE, GroupInput, validate_group
from accounts_grpc.services.memberships import validate_user_ids
from accounts_grpc.services.partitions import validate_include
from accounts_grpc.services.tenancy import check_role_change

ID = "6f1c2d3e-4b5a-4c6d-8e7f-0123456789ab"


@pytest.mark.parametrize(
    ("caller", "old", "new", "denied"),
    [
        ({"account-admin", "member"}, [], ["account-admin", "consultant", "member"], None),
        ({"account-admin", "member"}, [], ["admin"], "admin"),
        ({"account-admin", "member"}, [], ["admin-reader"], "admin-reader"),
        ({"consultant", "member"}, [], ["account-admin"], "account-admin"),
        # keeping a role one could not grant is fine; taking it away is not
        ({"account-admin"}, ["admin-reader"], ["admin-reader", "consultant"], None),
        ({"account-admin"}, ["admin-reader"], [], "admin-reader"),
        ({"admin"}, [], ["admin", "admin-reader"], None),
        ({"admin-reader"}, [], ["admin-reader"], "admin-reader"),  # only admin grants it
    ],
)
def test_role_change(caller: set[str], old: list[str], new: list[str], denied: str | None) -> None:
    if denied is None:
        check_role_change(frozenset(caller), old, new, what="t")
        return
    with pytest.raises(PermissionDenied) as e:
        check_role_change(frozenset(caller), old, new, what="t")
    assert e.value.reason == "ROLE_NOT_GRANTABLE" and e.value.metadata["roles"] == denied


def test_validate_group_cleans_and_collects_every_violation() -> None:
    values, pids = validate_group(
        GroupInput(name="  Ops ", roles=["member", "consultant", "member"], partition_ids=[ID, ID]),
        UPDATABLE,
    )
    assert values == {"name": "Ops", "description": "", "roles": ["consultant", "member"]}
    assert pids == [ID]
    with pytest.raises(InvalidArgument) as e:
        validate_group(GroupInput(name="", roles=["x"], partition_ids=["nope"]), UPDATABLE)
    assert [v.field for v in e.value.violations] == [
        "user_group.name",
        "user_group.roles[0]",
        "user_group.partition_ids[0]",
    ]
    with pytest.raises(InvalidArgument) as e:
        validate_group(GroupInput(roles=["root"]), {"roles"})
    assert e.value.reason == "UNKNOWN_ROLE"
    # only the masked fields are looked at
    assert validate_group(GroupInput(name=""), {"description"}) == ({"description": ""}, [])


def test_validate_user_ids() -> None:
    assert validate_user_ids([ID, ID]) == [ID]
    with pytest.raises(InvalidArgument) as e:
        validate_user_ids([])
    assert [v.field for v in e.value.violations] == ["user_ids"]
    with pytest.raises(InvalidArgument) as e:
        validate_user_ids([ID, "x", ""])
    assert [v.field for v in e.value.violations] == ["user_ids[1]", "user_ids[2]"]


def test_validate_devices_names_every_bad_item() -> None:
    batch = [
        DeviceInput(device_id="ABCDEFGH", name="ok"),
        DeviceInput(device_id="ABCDEFG"),
        DeviceInput(),
        DeviceInput(device_id="ABCDEFGH"),
        DeviceInput(meter_id="  "),
        DeviceInput(meter_id="M1"),
        DeviceInput(meter_id="M1", device_id="ZZZZZZZZ"),
        DeviceInput(meter_id="m" * 201),
        DeviceInput(device_id=" ABCDEF1"),
        DeviceInput(device_id="12345678", partition_id="elsewhere"),
    ]
    with pytest.raises(InvalidArgument) as e:
        validate_devices(batch, "here")
    assert [v.field for v in e.value.violations] == [
        "devices[1].device_id",
        "devices[2]",
        "devices[3].device_id",
        "devices[4].meter_id",
        "devices[6].meter_id",
        "devices[7].meter_id",
        "devices[8].device_id",
        "devices[9].partition_id",
    ]
    assert "devices[0]" in e.value.violations[2].description  # the duplicate names the first


def test_validate_devices_clean() -> None:
    rows = validate_devices(
        [
            DeviceInput(device_id="ABCDEFGH"),
            DeviceInput(meter_id="M-1", name=" n ", partition_id="p"),
        ],
        "p",
    )
    assert rows == [
        {"device_id": "ABCDEFGH", "meter_id": None, "name": ""},
        {"device_id": None, "meter_id": "M-1", "name": "n"},
    ]
    with pytest.raises(InvalidArgument) as e:
        validate_devices([DeviceInput(meter_id=str(i)) for i in range(1001)], "p")
    assert [v.field for v in e.value.violations] == ["devices"]


def test_taken_error_names_every_taken_id() -> None:
    batch = [
        {"device_id": "AAAAAAAA", "meter_id": None},
        {"device_id": "BBBBBBBB", "meter_id": "M1"},
        {"device_id": None, "meter_id": "M2"},
    ]
    assert taken_error(batch, set(), set()) is None
    err = taken_error(batch, {"BBBBBBBB"}, {"M1", "M2"})
    assert err is not None and err.reason == "DEVICE_ALREADY_EXISTS"
    assert err.metadata == {
        "device_ids": "BBBBBBBB",
        "meter_ids": "M1,M2",
        "fields": "devices[1].device_id,devices[1].meter_id,devices[2].meter_id",
    }


def test_validate_include() -> None:
    assert validate_include(["account", "account"]) == frozenset({"account"})
    assert validate_include([]) == frozenset()
    with pytest.raises(InvalidArgument) as e:
        validate_include(["account", "accounts", ""])
    assert e.value.reason == "INVALID_INCLUDE"
    assert [v.field for v in e.value.violations] == ["include[1]", "include[2]"]
