"""Rules of the use cases, asked of the services themselves over an in-memory unit of
work (tests/fakes.py): no database, no server. What they check is the rule, and that a
refused call leaves every table as it was."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from accounts_grpc.config import Settings
from accounts_grpc.domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from accounts_grpc.domain.principal import Principal
from accounts_grpc.services import Services
from accounts_grpc.services.deps import Deps
from accounts_grpc.services.device_permissions import DeviceRef
from accounts_grpc.services.partitions import PartitionInput
from accounts_grpc.services.user_access import UserRef
from tests.fakes import FakeDatabase, Row, Tables


@pytest.fixture
def db() -> FakeDatabase:
    return FakeDatabase()


@pytest.fixture
def services(db: FakeDatabase) -> Services:
    deps = Deps(Settings(), db, None, None, None, page_secret=b"k" * 32)
    return Services.build(deps)


def admin_of(account: Row, *roles: str) -> Principal:
    """A caller of ``account`` holding ``roles`` (and ``member``)."""
    return Principal(f"caller-of-{account.id}", account.id, "HUMAN",
                     frozenset({"member", *roles}), frozenset())


def refuses(db: FakeDatabase, call: Any, error: type[Exception], reason: str) -> Any:
    """``call()`` raises ``error`` with ``reason`` and commits nothing."""
    before: Tables = copy.deepcopy(db.tables)
    commits = db.commits
    with pytest.raises(error) as info:
        call()
    assert info.value.reason == reason, info.value
    assert db.commits == commits and db.tables == before
    return info.value


# -- memberships -------------------------------------------------------------------------------


def test_members_must_be_users_of_the_groups_account(db: FakeDatabase,
                                                     services: Services) -> None:
    acme, other = db.add_account(), db.add_account()
    ann, stranger = db.add_user(acme), db.add_user(other)
    group = db.add_group(acme)
    p = admin_of(acme, "account-admin")
    e = refuses(db, lambda: services.memberships.add_members(p, group.id, [ann.id, stranger.id]),
                InvalidArgument, "USER_NOT_IN_ACCOUNT")
    assert [v.field for v in e.violations] == ["user_ids[1]"]

    view = services.memberships.add_members(p, group.id, [ann.id])
    assert view.member_ids == [ann.id] and view.row.etag != group.etag
    assert [(a.action, a.resource_id) for a in db.tables.audit] == [
        ("user_group.add_members", group.id)]
    again = services.memberships.add_members(p, group.id, [ann.id])  # a member already
    assert again.row.etag == view.row.etag and len(db.tables.audit) == 1


def test_only_who_may_grant_a_groups_role_changes_its_members(
    db: FakeDatabase, services: Services
) -> None:
    acme = db.add_account()
    ann = db.add_user(acme)
    readers = db.add_group(acme, roles=["admin-reader"])
    e = refuses(db, lambda: services.memberships.add_members(
        admin_of(acme, "account-admin"), readers.id, [ann.id]),
        PermissionDenied, "ROLE_NOT_GRANTABLE")
    assert e.metadata == {"roles": "admin-reader"}
    view = services.memberships.add_members(admin_of(acme, "admin"), readers.id, [ann.id])
    assert view.member_ids == [ann.id]


# -- no roles above your own, through a group --------------------------------------------------


def test_a_user_outranks_the_caller_through_its_groups(db: FakeDatabase,
                                                      services: Services) -> None:
    acme = db.add_account()
    bob = db.add_user(acme)
    db.add_group(acme, roles=["admin-reader"], members=[bob])
    p = admin_of(acme, "account-admin")
    e = refuses(db, lambda: services.users.delete_user(p, bob.id), PermissionDenied,
                "USER_OUTRANKS_CALLER")
    assert e.metadata == {"roles": "admin-reader"}

    plain = db.add_user(acme)
    db.add_group(acme, roles=["consultant"], members=[plain])  # a role the caller grants
    services.users.delete_user(p, plain.id)
    assert plain.id not in db.tables.users and bob.id in db.tables.users
    assert [(a.action, a.changed_fields) for a in db.tables.audit] == [
        ("user.delete", ["memberships"])]


# -- device and charging permissions -----------------------------------------------------------


def test_charging_needs_the_device_permission_first(db: FakeDatabase,
                                                    services: Services) -> None:
    acme, other = db.add_account(), db.add_account()
    eve = db.add_user(acme, kind="EXTERNAL")
    db.add_device(acme, "AB12CD34")
    db.add_device(other, "FFFF0000")
    p, ref = admin_of(acme, "account-admin"), UserRef(user_id=eve.id)
    e = refuses(db, lambda: services.charging.add_charging_permission(
        p, ref, DeviceRef(device_id="AB12CD34")), FailedPrecondition,
        "DEVICE_PERMISSION_REQUIRED")
    assert e.metadata == {"device_id": "AB12CD34"}
    refuses(db, lambda: services.device_permissions.add_device_permissions(
        p, ref, [DeviceRef(device_id="FFFF0000")]), NotFound, "DEVICE_NOT_FOUND")

    (perm,) = services.device_permissions.add_device_permissions(
        p, ref, [DeviceRef(device_id="AB12CD34")])
    assert perm.charging is False
    on = services.charging.add_charging_permission(p, ref, DeviceRef(device_id="AB12CD34"))
    assert on.id == perm.id and on.charging is True and on.etag != perm.etag
    assert services.charging.add_charging_permission(
        p, ref, DeviceRef(device_id="AB12CD34")).etag == on.etag  # on already: no write
    assert [a.action for a in db.tables.audit] == [
        "device_permission.add", "device_permission.update"]


# -- idempotent creates ------------------------------------------------------------------------


def test_a_create_with_a_request_id_replays_its_first_result(
    db: FakeDatabase, services: Services
) -> None:
    acme = db.add_account()
    p = admin_of(acme, "account-admin")
    first = services.partitions.create(p, acme.id, PartitionInput(name="Hall"),
                                       request_id="r-1")
    again = services.partitions.create(p, acme.id, PartitionInput(name="Hall"),
                                       request_id="r-1")
    assert again.id == first.id and len(db.tables.partitions) == 1
    assert [a.action for a in db.tables.audit] == ["partition.create"]
    refuses(db, lambda: services.partitions.create(
        p, acme.id, PartitionInput(name="Other"), request_id="r-1"),
        InvalidArgument, "REQUEST_ID_REUSED")
    refuses(db, lambda: services.partitions.create(p, acme.id, PartitionInput(name="Hall")),
            AlreadyExists, "PARTITION_ALREADY_EXISTS")


def test_a_read_unit_of_work_refuses_writes(db: FakeDatabase) -> None:
    acme = db.add_account()
    with db.read() as uow, pytest.raises(AssertionError, match="read unit of work"):
        uow.partitions.insert({"id": "p", "account_id": acme.id, "name": "x"})
    assert db.tables.partitions == {}
