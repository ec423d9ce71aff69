"""UserGroupService, bad input case by case: the status, the ErrorInfo reason, the field
violations, and nothing changed (no row, no audit event)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from accounts.v1 import user_group_pb2
from accounts.v1 import user_group_service_pb2 as pb
from google.protobuf import field_mask_pb2

from tests.e2e.groups_helpers import (
    Persona,
    close_account,
    create_account,
    human,
    make_group,
    make_partition,
    snapshot,
)
from tests.support import Server, expect_error

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"


@dataclass
class World:
    account_id: str
    owner: Persona
    group: Any  # a group of the account, with one member
    other_group: Any  # a second group ("Taken")
    partition: Any
    member: Persona
    foreign_partition: Any  # a partition of another account
    foreign_user: Persona  # a user of another account
    closed_account_id: str


@pytest.fixture(scope="module")
def w(server: Server) -> World:
    account_id, owner_id = create_account(server, "Errors Ltd")
    owner = human(server, "owner", account_id, ("account-admin",), user_id=owner_id)
    member = human(server, "member", account_id)
    partition = make_partition(server, account_id)
    group = make_group(server, account_id, "Main", members=(member.user_id,))
    other = make_group(server, account_id, "Taken")
    foreign_id, _ = create_account(server, "Elsewhere")
    closed_id, _ = create_account(server, "Closed Co")
    close_account(server, closed_id)
    return World(
        account_id,
        owner,
        group,
        other,
        partition,
        member,
        make_partition(server, foreign_id),
        human(server, "foreigner", foreign_id),
        closed_id,
    )


def G(**kw: Any) -> user_group_pb2.UserGroup:
    return user_group_pb2.UserGroup(**kw)


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


# name → (method, request builder, code, reason, exact violated fields or None)
Case = tuple[str, Callable[[World], Any], grpc.StatusCode, str, list[str] | None]
CASES: dict[str, Case] = {
    # CreateUserGroup
    "create: no name": (
        "CreateUserGroup",
        lambda w: pb.CreateUserGroupRequest(account_id=w.account_id, user_group=G(name="  ")),
        INVALID,
        "INVALID_ARGUMENT",
        ["user_group.name"],
    ),
    "create: name too long": (
        "CreateUserGroup",
        lambda w: pb.CreateUserGroupRequest(account_id=w.account_id, user_group=G(name="n" * 201)),
        INVALID,
        "INVALID_ARGUMENT",
        ["user_group.name"],
    ),
    "create: control characters in name": (
        "CreateUserGroup",
        lambda w: pb.CreateUserGroupRequest(account_id=w.account_id, user_group=G(name="a\nb")),
        INVALID,
        "INVALID_ARGUMENT",
        ["user_group.name"],
    ),
    "create: unknown roles": (
        "CreateUserGroup",
        lambda w: pb.CreateUserGroupRequest(
            account_id=w.account_id,
            user_group=G(name="x", roles=["member", "superuser", "intermediary"]),
        ),
        INVALID,
        "UNKNOWN_ROLE",
        ["user_group.roles[1]", "user_group.roles[2]"],
    ),
    "create: partition id is not an id": (
        "CreateUserGroup",
        lambda w: pb.CreateUserGroupRequest(
            account_id=w.account_id, user_group=G(name="x", partition_ids=[w.partition.id, "p1"])
        ),
        INVALID,
        "INVALID_ARGUMENT",
        ["user_group.partition_ids[1]"],
    ),
    "create: partitions of another account or none": (
        "CreateUserGroup",
        lambda w: pb.CreateUserGroupRequest(
            account_id=w.account_id,
            user_group=G(
                name="x", partition_ids=[w.foreign_partition.id, w.partition.id, UNKNOWN_ID]
            ),
        ),
        INVALID,
        "PARTITION_NOT_IN_ACCOUNT",
        ["user_group.partition_ids[0]", "user_group.partition_ids[2]"],
    ),
    "create: every bad field at once": (
        "CreateUserGroup",
        lambda w: pb.CreateUserGroupRequest(
            account_id=w.account_id,
            user_group=G(name="", description="d" * 2001, roles=["boss"], partition_ids=["x"]),
        ),
        INVALID,
        "INVALID_ARGUMENT",
        [
            "user_group.name",
            "user_group.description",
            "user_group.roles[0]",
            "user_group.partition_ids[0]",
        ],
    ),
    "create: name taken": (
        "CreateUserGroup",
        lambda w: pb.CreateUserGroupRequest(account_id=w.account_id, user_group=G(name="Taken")),
        grpc.StatusCode.ALREADY_EXISTS,
        "USER_GROUP_ALREADY_EXISTS",
        None,
    ),
    "create: account_id not an id": (
        "CreateUserGroup",
        lambda w: pb.CreateUserGroupRequest(account_id="acme", user_group=G(name="x")),
        INVALID,
        "INVALID_ID",
        ["account_id"],
    ),
    "create: no account_id": (
        "CreateUserGroup",
        lambda w: pb.CreateUserGroupRequest(user_group=G(name="x")),
        INVALID,
        "INVALID_ARGUMENT",
        ["account_id"],
    ),
    "create: unknown account": (
        "CreateUserGroup",
        lambda w: pb.CreateUserGroupRequest(account_id=UNKNOWN_ID, user_group=G(name="x")),
        NOT_FOUND,
        "ACCOUNT_NOT_FOUND",
        None,
    ),
    "create: request_id too long": (
        "CreateUserGroup",
        lambda w: pb.CreateUserGroupRequest(
            account_id=w.account_id, user_group=G(name="x"), request_id="r" * 201
        ),
        INVALID,
        "INVALID_ARGUMENT",
        ["request_id"],
    ),
    # GetUserGroup
    "get: id not an id": (
        "GetUserGroup",
        lambda w: pb.GetUserGroupRequest(id="main"),
        INVALID,
        "INVALID_ID",
        ["id"],
    ),
    "get: no id": (
        "GetUserGroup",
        lambda w: pb.GetUserGroupRequest(),
        INVALID,
        "INVALID_ARGUMENT",
        ["id"],
    ),
    "get: unknown": (
        "GetUserGroup",
        lambda w: pb.GetUserGroupRequest(id=UNKNOWN_ID),
        NOT_FOUND,
        "USER_GROUP_NOT_FOUND",
        None,
    ),
    # ListUserGroups
    "list: negative page_size": (
        "ListUserGroups",
        lambda w: pb.ListUserGroupsRequest(account_id=w.account_id, page_size=-1),
        INVALID,
        "INVALID_PAGE_SIZE",
        ["page_size"],
    ),
    "list: unknown order_by field": (
        "ListUserGroups",
        lambda w: pb.ListUserGroupsRequest(account_id=w.account_id, order_by="roles"),
        INVALID,
        "INVALID_ORDER_BY",
        ["order_by"],
    ),
    "list: garbage page_token": (
        "ListUserGroups",
        lambda w: pb.ListUserGroupsRequest(account_id=w.account_id, page_token="abc"),
        INVALID,
        "INVALID_PAGE_TOKEN",
        ["page_token"],
    ),
    "list: unterminated quote": (
        "ListUserGroups",
        lambda w: pb.ListUserGroupsRequest(account_id=w.account_id, filter='"main'),
        INVALID,
        "INVALID_FILTER",
        ["filter"],
    ),
    "list: no account_id": (
        "ListUserGroups",
        lambda w: pb.ListUserGroupsRequest(),
        INVALID,
        "INVALID_ARGUMENT",
        ["account_id"],
    ),
    "list: unknown account": (
        "ListUserGroups",
        lambda w: pb.ListUserGroupsRequest(account_id=UNKNOWN_ID),
        NOT_FOUND,
        "ACCOUNT_NOT_FOUND",
        None,
    ),
    # UpdateUserGroup
    "update: output-only path in mask": (
        "UpdateUserGroup",
        lambda w: pb.UpdateUserGroupRequest(
            user_group=G(id=w.group.id), update_mask=mask("member_ids")
        ),
        INVALID,
        "INVALID_UPDATE_MASK",
        ["update_mask.paths[0]"],
    ),
    "update: unknown path in mask": (
        "UpdateUserGroup",
        lambda w: pb.UpdateUserGroupRequest(
            user_group=G(id=w.group.id, name="y"), update_mask=mask("name", "colour")
        ),
        INVALID,
        "INVALID_UPDATE_MASK",
        ["update_mask.paths[1]"],
    ),
    "update: populated output-only field without mask": (
        "UpdateUserGroup",
        lambda w: pb.UpdateUserGroupRequest(
            user_group=G(id=w.group.id, name="y", account_id=w.foreign_user.account_id)
        ),
        INVALID,
        "FIELD_NOT_UPDATABLE",
        ["user_group.account_id"],
    ),
    "update: member_ids cannot be set": (
        "UpdateUserGroup",
        lambda w: pb.UpdateUserGroupRequest(
            user_group=G(id=w.group.id, member_ids=[w.member.user_id, w.owner.user_id])
        ),
        INVALID,
        "FIELD_NOT_UPDATABLE",
        ["user_group.member_ids"],
    ),
    "update: empty name": (
        "UpdateUserGroup",
        lambda w: pb.UpdateUserGroupRequest(user_group=G(id=w.group.id), update_mask=mask("name")),
        INVALID,
        "INVALID_ARGUMENT",
        ["user_group.name"],
    ),
    "update: unknown role": (
        "UpdateUserGroup",
        lambda w: pb.UpdateUserGroupRequest(user_group=G(id=w.group.id, roles=["root"])),
        INVALID,
        "UNKNOWN_ROLE",
        ["user_group.roles[0]"],
    ),
    "update: partition of another account": (
        "UpdateUserGroup",
        lambda w: pb.UpdateUserGroupRequest(
            user_group=G(id=w.group.id, partition_ids=[w.foreign_partition.id])
        ),
        INVALID,
        "PARTITION_NOT_IN_ACCOUNT",
        ["user_group.partition_ids[0]"],
    ),
    "update: name taken": (
        "UpdateUserGroup",
        lambda w: pb.UpdateUserGroupRequest(user_group=G(id=w.group.id, name="Taken")),
        grpc.StatusCode.ALREADY_EXISTS,
        "USER_GROUP_ALREADY_EXISTS",
        None,
    ),
    "update: stale etag": (
        "UpdateUserGroup",
        lambda w: pb.UpdateUserGroupRequest(user_group=G(id=w.group.id, name="y", etag="0" * 32)),
        grpc.StatusCode.ABORTED,
        "ETAG_MISMATCH",
        None,
    ),
    "update: no id": (
        "UpdateUserGroup",
        lambda w: pb.UpdateUserGroupRequest(user_group=G(name="y")),
        INVALID,
        "INVALID_ARGUMENT",
        ["user_group.id"],
    ),
    "update: unknown": (
        "UpdateUserGroup",
        lambda w: pb.UpdateUserGroupRequest(user_group=G(id=UNKNOWN_ID, name="y")),
        NOT_FOUND,
        "USER_GROUP_NOT_FOUND",
        None,
    ),
    # DeleteUserGroup
    "delete: stale etag": (
        "DeleteUserGroup",
        lambda w: pb.DeleteUserGroupRequest(id=w.group.id, etag="0" * 32),
        grpc.StatusCode.ABORTED,
        "ETAG_MISMATCH",
        None,
    ),
    "delete: unknown": (
        "DeleteUserGroup",
        lambda w: pb.DeleteUserGroupRequest(id=UNKNOWN_ID),
        NOT_FOUND,
        "USER_GROUP_NOT_FOUND",
        None,
    ),
    "delete: id not an id": (
        "DeleteUserGroup",
        lambda w: pb.DeleteUserGroupRequest(id="main"),
        INVALID,
        "INVALID_ID",
        ["id"],
    ),
    # AddUserGroupMembers
    "add members: none named": (
        "AddUserGroupMembers",
        lambda w: pb.AddUserGroupMembersRequest(id=w.group.id),
        INVALID,
        "INVALID_ARGUMENT",
        ["user_ids"],
    ),
    "add members: not ids": (
        "AddUserGroupMembers",
        lambda w: pb.AddUserGroupMembersRequest(
            id=w.group.id, user_ids=[w.member.user_id, "bob", ""]
        ),
        INVALID,
        "INVALID_ARGUMENT",
        ["user_ids[1]", "user_ids[2]"],
    ),
    "add members: users of another account or none": (
        "AddUserGroupMembers",
        lambda w: pb.AddUserGroupMembersRequest(
            id=w.group.id, user_ids=[w.foreign_user.user_id, w.owner.user_id, UNKNOWN_ID]
        ),
        INVALID,
        "USER_NOT_IN_ACCOUNT",
        ["user_ids[0]", "user_ids[2]"],
    ),
    "add members: unknown group": (
        "AddUserGroupMembers",
        lambda w: pb.AddUserGroupMembersRequest(id=UNKNOWN_ID, user_ids=[w.owner.user_id]),
        NOT_FOUND,
        "USER_GROUP_NOT_FOUND",
        None,
    ),
    "add members: too many": (
        "AddUserGroupMembers",
        lambda w: pb.AddUserGroupMembersRequest(
            id=w.group.id, user_ids=[str(uuid.uuid4()) for _ in range(1001)]
        ),
        INVALID,
        "INVALID_ARGUMENT",
        ["user_ids"],
    ),
    # RemoveUserGroupMembers
    "remove members: none named": (
        "RemoveUserGroupMembers",
        lambda w: pb.RemoveUserGroupMembersRequest(id=w.group.id),
        INVALID,
        "INVALID_ARGUMENT",
        ["user_ids"],
    ),
    "remove members: users of another account": (
        "RemoveUserGroupMembers",
        lambda w: pb.RemoveUserGroupMembersRequest(
            id=w.group.id, user_ids=[w.member.user_id, w.foreign_user.user_id]
        ),
        INVALID,
        "USER_NOT_IN_ACCOUNT",
        ["user_ids[1]"],
    ),
    # ListMyUserGroups
    "my groups: negative page_size": (
        "ListMyUserGroups",
        lambda w: pb.ListMyUserGroupsRequest(page_size=-5),
        INVALID,
        "INVALID_PAGE_SIZE",
        ["page_size"],
    ),
    "my groups: garbage page_token": (
        "ListMyUserGroups",
        lambda w: pb.ListMyUserGroupsRequest(page_token="!!"),
        INVALID,
        "INVALID_PAGE_TOKEN",
        ["page_token"],
    ),
    # a closed account takes no new groups, even from admin
    "create: closed account": (
        "CreateUserGroup",
        lambda w: pb.CreateUserGroupRequest(account_id=w.closed_account_id, user_group=G(name="x")),
        grpc.StatusCode.FAILED_PRECONDITION,
        "ACCOUNT_CLOSED",
        None,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(server: Server, w: World, case: str) -> None:
    method, build, code, reason, fields = CASES[case]
    md = server.admin if "closed account" in case else w.owner.md
    before = snapshot(server)
    f = expect_error(
        getattr(server.stubs.groups, method), build(w), metadata=md, code=code, reason=reason
    )
    if fields is not None:
        assert [v[0] for v in f.violations] == fields, f.violations
        assert all(v[1] for v in f.violations)
    assert f.message and "Traceback" not in f.message
    assert snapshot(server) == before, "a failed call changed something"


def test_page_token_is_bound_to_its_query(server: Server, w: World) -> None:
    first = server.stubs.groups.ListUserGroups(
        pb.ListUserGroupsRequest(account_id=w.account_id, page_size=1), metadata=w.owner.md
    )
    assert first.next_page_token
    for changed in (
        dict(filter="main"),
        dict(order_by="name"),
        dict(account_id=w.foreign_user.account_id),
    ):
        req = pb.ListUserGroupsRequest(
            account_id=w.account_id, page_size=1, page_token=first.next_page_token
        )
        for k, v in changed.items():
            setattr(req, k, v)
        md = server.admin if "account_id" in changed else w.owner.md
        expect_error(
            server.stubs.groups.ListUserGroups,
            req,
            metadata=md,
            code=INVALID,
            reason="PAGE_TOKEN_QUERY_MISMATCH",
            field="page_token",
        )


def test_a_members_token_cannot_page_an_admins_list(server: Server, w: World) -> None:
    """The member sees a narrower list: the owner's page token is not valid for it."""
    first = server.stubs.groups.ListUserGroups(
        pb.ListUserGroupsRequest(account_id=w.account_id, page_size=1), metadata=w.owner.md
    )
    expect_error(
        server.stubs.groups.ListUserGroups,
        pb.ListUserGroupsRequest(
            account_id=w.account_id, page_size=1, page_token=first.next_page_token
        ),
        metadata=w.member.md,
        code=INVALID,
        reason="PAGE_TOKEN_QUERY_MISMATCH",
    )
