"""The building platform, end to end, as a new customer would do it.

An account-admin of a building company creates partitions (one per building part) and
user groups that grant roles and reach partitions; a MACHINE user (the building
platform's backend) in those groups gets a token with its client credentials, asks
ListMyUserGroups what it may do, and lists the company's partitions with the owning
company included. Its group's roles work at once, and stop working on its next call
once the account-admin takes it out of the group.
"""

from __future__ import annotations

import grpc
from accounts.v1 import (
    partition_pb2,
    partition_service_pb2,
    user_group_pb2,
    user_group_service_pb2,
)

from tests.e2e.groups_helpers import (
    create_account,
    create_user,
    device_id,
    events,
    human,
    machine_token,
)
from tests.support import Server, bearer, expect_error


def test_building_platform(server: Server) -> None:
    s = server.stubs
    # The platform admin signs up the company; its first user is an account-admin.
    account_id, owner_id = create_account(server, "Acme Buildings")
    owner = human(server, "owner", account_id, ("account-admin",), user_id=owner_id)

    # The owner makes one partition per building part.
    parts = {}
    for name, description in [
        ("North Tower", "offices, floors 1-20"),
        ("South Tower", "offices, floors 1-12"),
        ("Garage", "EV chargers"),
        ("Archive", "nobody's business"),
    ]:
        parts[name] = s.partitions.CreatePartition(
            partition_service_pb2.CreatePartitionRequest(
                account_id=account_id,
                partition=partition_pb2.Partition(name=name, description=description),
                request_id=f"create-{name}",
            ),
            metadata=owner.md,
        ).partition
        assert parts[name].account_id == account_id

    # ... a machine user for the building platform's backend (its secret is shown once) ...
    bot_id, client_id, secret = create_user(server, account_id, kind="MACHINE", metadata=owner.md)

    # ... and two groups: operators of both towers, and the garage's monitoring.
    operators = s.groups.CreateUserGroup(
        user_group_service_pb2.CreateUserGroupRequest(
            account_id=account_id,
            user_group=user_group_pb2.UserGroup(
                name="Tower operators",
                description="run the towers",
                roles=["account-admin"],
                partition_ids=[parts["North Tower"].id, parts["South Tower"].id],
            ),
        ),
        metadata=owner.md,
    ).user_group
    garage = s.groups.CreateUserGroup(
        user_group_service_pb2.CreateUserGroupRequest(
            account_id=account_id,
            user_group=user_group_pb2.UserGroup(
                name="Garage monitoring", partition_ids=[parts["Garage"].id]
            ),
        ),
        metadata=owner.md,
    ).user_group
    for g in (operators, garage):
        added = s.groups.AddUserGroupMembers(
            user_group_service_pb2.AddUserGroupMembersRequest(id=g.id, user_ids=[bot_id]),
            metadata=owner.md,
        ).user_group
        assert list(added.member_ids) == [bot_id]

    # The machine user gets a token with its client credentials ...
    bot = bearer(machine_token(server, client_id, secret))

    # ... and asks what it may do: each group's roles, partitions and owning account.
    mine = s.groups.ListMyUserGroups(user_group_service_pb2.ListMyUserGroupsRequest(), metadata=bot)
    assert mine.total_size == 2 and not mine.next_page_token
    by_name = {g.name: g for g in mine.user_groups}
    assert set(by_name) == {"Tower operators", "Garage monitoring"}
    assert list(by_name["Tower operators"].roles) == ["account-admin"]
    assert set(by_name["Tower operators"].partition_ids) == {
        parts["North Tower"].id,
        parts["South Tower"].id,
    }
    assert list(by_name["Garage monitoring"].roles) == []
    assert list(by_name["Garage monitoring"].partition_ids) == [parts["Garage"].id]
    assert all(g.account_id == account_id for g in mine.user_groups)
    assert all(bot_id in g.member_ids for g in mine.user_groups)
    assert {p.name for p in mine.included_partitions} == {"North Tower", "South Tower", "Garage"}
    assert [a.id for a in mine.included_accounts] == [account_id]
    assert mine.included_accounts[0].name == "Acme Buildings"

    # It lists the company's partitions with the company included.
    listed = s.partitions.ListPartitions(
        partition_service_pb2.ListPartitionsRequest(
            account_id=account_id, include=["account"], order_by="name"
        ),
        metadata=bot,
    )
    assert [p.name for p in listed.partitions] == [
        "Archive",
        "Garage",
        "North Tower",
        "South Tower",
    ]
    assert listed.total_size == 4
    assert [a.id for a in listed.included_accounts] == [account_id]
    assert listed.included_accounts[0].name == "Acme Buildings"

    # The group's account-admin role works: the machine registers the tower's meters.
    regs = s.partitions.RegisterDevices(
        partition_service_pb2.RegisterDevicesRequest(
            partition_id=parts["North Tower"].id,
            devices=[
                partition_pb2.Device(device_id=device_id(), name="lobby charger"),
                partition_pb2.Device(meter_id="NT-MAIN-0001", name="main meter"),
            ],
        ),
        metadata=bot,
    ).devices
    assert [d.partition_id for d in regs] == [parts["North Tower"].id] * 2
    assert [e.actor_user_id for d in regs for e in events(server, d.id)] == [bot_id, bot_id]

    # The owner takes the machine out of the operators: on its very next call the
    # same token no longer carries account-admin here, and it reaches only the garage.
    s.groups.RemoveUserGroupMembers(
        user_group_service_pb2.RemoveUserGroupMembersRequest(id=operators.id, user_ids=[bot_id]),
        metadata=owner.md,
    )
    expect_error(
        s.partitions.RegisterDevices,
        partition_service_pb2.RegisterDevicesRequest(
            partition_id=parts["North Tower"].id,
            devices=[partition_pb2.Device(device_id=device_id())],
        ),
        metadata=bot,
        code=grpc.StatusCode.PERMISSION_DENIED,
        reason="ROLE_REQUIRED",
    )
    listed = s.partitions.ListPartitions(
        partition_service_pb2.ListPartitionsRequest(account_id=account_id, include=["account"]),
        metadata=bot,
    )
    assert [p.name for p in listed.partitions] == ["Garage"]
    assert [a.id for a in listed.included_accounts] == [account_id]
    mine = s.groups.ListMyUserGroups(user_group_service_pb2.ListMyUserGroupsRequest(), metadata=bot)
    assert [g.name for g in mine.user_groups] == ["Garage monitoring"]
    assert [p.name for p in mine.included_partitions] == ["Garage"]
    expect_error(
        s.partitions.GetPartition,
        partition_service_pb2.GetPartitionRequest(id=parts["North Tower"].id),
        metadata=bot,
        code=grpc.StatusCode.NOT_FOUND,
        reason="PARTITION_NOT_FOUND",
    )

    # Every change of the story is in the audit log, made by the owner.
    for p in parts.values():
        assert [(e.action, e.actor_user_id) for e in events(server, p.id)] == [
            ("partition.create", owner.user_id)
        ]
    assert [e.action for e in events(server, operators.id)] == [
        "user_group.create",
        "user_group.add_members",
        "user_group.remove_members",
    ]
