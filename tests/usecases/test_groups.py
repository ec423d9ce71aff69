"""The rules of UserGroupService's use cases (groups and their members), asked in
process: the domain error (class = gRPC code, reason, the exact field violations) and no
row changed.

Moved from tests/e2e/test_groups_errors.py (old test → here); the e2e module keeps one
real call per RPC and per error class:
- test_bad_input[<case>] → test_bad_input[<case>], every case of the old table
- test_page_token_is_bound_to_its_query → same name
- test_a_members_token_cannot_page_an_admins_list → same name
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest
from accounts.v1 import user_group_pb2
from accounts.v1 import user_group_service_pb2 as pb
from google.protobuf import field_mask_pb2

from accounts_grpc.domain.errors import (
    Aborted,
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from accounts_grpc.domain.principal import Principal
from accounts_grpc.rpc.convert.groups import group_input, populated
from accounts_grpc.services import Services
from tests.usecases.helpers import UNKNOWN_ID, UseCases


@dataclass
class World:
    account_id: str
    owner: Principal  # the account's first user, an account-admin
    group: Any  # a group of the account ("Main"), with one member
    other_group: Any  # a second group ("Taken")
    partition: Any
    member: Principal
    foreign_partition: Any  # a partition of another account
    foreign_user: Any  # a user of another account
    closed_account_id: str


@pytest.fixture(scope="module")
def w(uc: UseCases) -> World:
    account, owner = uc.new_account("Errors Ltd")
    member = uc.new_user(account.id).row
    foreign, _ = uc.new_account("Elsewhere")
    closed, _ = uc.new_account("Closed Co")
    uc.close_account(closed.id)
    return World(
        account.id,
        uc.principal(owner),
        uc.new_group(account.id, "Main", members=(member.id,)),
        uc.new_group(account.id, "Taken"),
        uc.new_partition(account.id),
        uc.principal(member),
        uc.new_partition(foreign.id),
        uc.new_user(foreign.id).row,
        closed.id,
    )


#: each RPC as its servicer calls the use case
CALLS: dict[str, Callable[[Services, Principal, Any], Any]] = {
    "CreateUserGroup": lambda s, p, r: s.groups.create(
        p, r.account_id, group_input(r.user_group), request_id=r.request_id),
    "GetUserGroup": lambda s, p, r: s.groups.get(p, r.id),
    "ListUserGroups": lambda s, p, r: s.groups.list_groups(
        p, r.account_id, page_size=r.page_size, page_token=r.page_token, filter=r.filter,
        order_by=r.order_by),
    "UpdateUserGroup": lambda s, p, r: s.groups.update(
        p, r.user_group.id, group_input(r.user_group), mask_paths=list(r.update_mask.paths),
        populated=populated(r.user_group)),
    "DeleteUserGroup": lambda s, p, r: s.groups.delete(p, r.id, etag=r.etag),
    "AddUserGroupMembers": lambda s, p, r: s.memberships.add_members(p, r.id, list(r.user_ids)),
    "RemoveUserGroupMembers": lambda s, p, r: s.memberships.remove_members(
        p, r.id, list(r.user_ids)),
    "ListMyUserGroups": lambda s, p, r: s.groups.list_mine(
        p, page_size=r.page_size, page_token=r.page_token),
}


def G(**kw: Any) -> user_group_pb2.UserGroup:
    return user_group_pb2.UserGroup(**kw)


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


# name → (RPC, request builder, error, reason, exact violated fields or None)
Case = tuple[str, Callable[[World], Any], type[DomainError], str, list[str] | None]
CASES: dict[str, Case] = {
    # CreateUserGroup
    "create: no name": (
        "CreateUserGroup",
        lambda w: pb.CreateUserGroupRequest(account_id=w.account_id, user_group=G(name="  ")),
        InvalidArgument, "INVALID_ARGUMENT", ["user_group.name"]),
    "create: name too long": (
        "CreateUserGroup",
        lambda w: pb.CreateUserGroupRequest(account_id=w.account_id, user_group=G(name="n" * 201)),
        InvalidArgument, "INVALID_ARGUMENT", ["user_group.name"]),
    "create: control characters in name": (
        "CreateUserGroup",
        lambda w: pb.CreateUserGroupRequest(account_id=w.account_id, user_group=G(name="a\nb")),
        InvalidArgument, "INVALID_ARGUMENT", ["user_group.name"]),
    "create: unknown roles": (
        "CreateUserGroup",
        lambda w: pb.CreateUserGroupRequest(
            account_id=w.account_id,
            user_group=G(name="x", roles=["member", "superuser", "intermediary"])),
        InvalidArgument, "UNKNOWN_ROLE", ["user_group.roles[1]", "user_group.roles[2]"]),
    "create: partition id is not an id": (
        "CreateUserGroup",
        lambda w: pb.CreateUserGroupRequest(
            account_id=w.account_id, user_group=G(name="x", partition_ids=[w.partition.id, "p1"])),
        InvalidArgument, "INVALID_ARGUMENT", ["user_group.partition_ids[1]"]),
    "create: partitions of another account or none": (
        "CreateUserGroup",
        lambda w: pb.CreateUserGroupRequest(
            account_id=w.account_id,
            user_group=G(name="x",
                         partition_ids=[w.foreign_partition.id, w.partition.id, UNKNOWN_ID])),
        InvalidArgument, "PARTITION_NOT_IN_ACCOUNT",
        ["user_group.partition_ids[0]", "user_group.partition_ids[2]"]),
    "create: every bad field at once": (
        "CreateUserGroup",
        lambda w: pb.CreateUserGroupRequest(
            account_id=w.account_id,
            user_group=G(name="", description="d" * 2001, roles=["boss"], partition_ids=["x"])),
        InvalidArgument, "INVALID_ARGUMENT",
        ["user_group.name", "user_group.description", "user_group.roles[0]",
         "user_group.partition_ids[0]"]),
    "create: name taken": (
        "CreateUserGroup",
        lambda w: pb.CreateUserGroupRequest(account_id=w.account_id, user_group=G(name="Taken")),
        AlreadyExists, "USER_GROUP_ALREADY_EXISTS", None),
    "create: account_id not an id": (
        "CreateUserGroup",
        lambda w: pb.CreateUserGroupRequest(account_id="acme", user_group=G(name="x")),
        InvalidArgument, "INVALID_ID", ["account_id"]),
    "create: no account_id": (
        "CreateUserGroup",
        lambda w: pb.CreateUserGroupRequest(user_group=G(name="x")),
        InvalidArgument, "INVALID_ARGUMENT", ["account_id"]),
    "create: unknown account": (
        "CreateUserGroup",
        lambda w: pb.CreateUserGroupRequest(account_id=UNKNOWN_ID, user_group=G(name="x")),
        NotFound, "ACCOUNT_NOT_FOUND", None),
    "create: request_id too long": (
        "CreateUserGroup",
        lambda w: pb.CreateUserGroupRequest(
            account_id=w.account_id, user_group=G(name="x"), request_id="r" * 201),
        InvalidArgument, "INVALID_ARGUMENT", ["request_id"]),
    # GetUserGroup
    "get: id not an id": (
        "GetUserGroup", lambda w: pb.GetUserGroupRequest(id="main"),
        InvalidArgument, "INVALID_ID", ["id"]),
    "get: no id": (
        "GetUserGroup", lambda w: pb.GetUserGroupRequest(),
        InvalidArgument, "INVALID_ARGUMENT", ["id"]),
    "get: unknown": (
        "GetUserGroup", lambda w: pb.GetUserGroupRequest(id=UNKNOWN_ID),
        NotFound, "USER_GROUP_NOT_FOUND", None),
    # ListUserGroups
    "list: negative page_size": (
        "ListUserGroups", lambda w: pb.ListUserGroupsRequest(account_id=w.account_id, page_size=-1),
        InvalidArgument, "INVALID_PAGE_SIZE", ["page_size"]),
    "list: unknown order_by field": (
        "ListUserGroups",
        lambda w: pb.ListUserGroupsRequest(account_id=w.account_id, order_by="roles"),
        InvalidArgument, "INVALID_ORDER_BY", ["order_by"]),
    "list: garbage page_token": (
        "ListUserGroups",
        lambda w: pb.ListUserGroupsRequest(account_id=w.account_id, page_token="abc"),
        InvalidArgument, "INVALID_PAGE_TOKEN", ["page_token"]),
    "list: unterminated quote": (
        "ListUserGroups",
        lambda w: pb.ListUserGroupsRequest(account_id=w.account_id, filter='"main'),
        InvalidArgument, "INVALID_FILTER", ["filter"]),
    "list: no account_id": (
        "ListUserGroups", lambda w: pb.ListUserGroupsRequest(),
        InvalidArgument, "INVALID_ARGUMENT", ["account_id"]),
    "list: unknown account": (
        "ListUserGroups", lambda w: pb.ListUserGroupsRequest(account_id=UNKNOWN_ID),
        NotFound, "ACCOUNT_NOT_FOUND", None),
    # UpdateUserGroup
    "update: output-only path in mask": (
        "UpdateUserGroup",
        lambda w: pb.UpdateUserGroupRequest(user_group=G(id=w.group.row.id),
                                            update_mask=mask("member_ids")),
        InvalidArgument, "INVALID_UPDATE_MASK", ["update_mask.paths[0]"]),
    "update: unknown path in mask": (
        "UpdateUserGroup",
        lambda w: pb.UpdateUserGroupRequest(user_group=G(id=w.group.row.id, name="y"),
                                            update_mask=mask("name", "colour")),
        InvalidArgument, "INVALID_UPDATE_MASK", ["update_mask.paths[1]"]),
    "update: populated output-only field without mask": (
        "UpdateUserGroup",
        lambda w: pb.UpdateUserGroupRequest(
            user_group=G(id=w.group.row.id, name="y", account_id=w.foreign_user.account_id)),
        InvalidArgument, "FIELD_NOT_UPDATABLE", ["user_group.account_id"]),
    "update: member_ids cannot be set": (
        "UpdateUserGroup",
        lambda w: pb.UpdateUserGroupRequest(
            user_group=G(id=w.group.row.id, member_ids=[w.member.user_id, w.owner.user_id])),
        InvalidArgument, "FIELD_NOT_UPDATABLE", ["user_group.member_ids"]),
    "update: empty name": (
        "UpdateUserGroup",
        lambda w: pb.UpdateUserGroupRequest(user_group=G(id=w.group.row.id),
                                            update_mask=mask("name")),
        InvalidArgument, "INVALID_ARGUMENT", ["user_group.name"]),
    "update: unknown role": (
        "UpdateUserGroup",
        lambda w: pb.UpdateUserGroupRequest(user_group=G(id=w.group.row.id, roles=["root"])),
        InvalidArgument, "UNKNOWN_ROLE", ["user_group.roles[0]"]),
    "update: partition of another account": (
        "UpdateUserGroup",
        lambda w: pb.UpdateUserGroupRequest(
            user_group=G(id=w.group.row.id, partition_ids=[w.foreign_partition.id])),
        InvalidArgument, "PARTITION_NOT_IN_ACCOUNT", ["user_group.partition_ids[0]"]),
    "update: name taken": (
        "UpdateUserGroup",
        lambda w: pb.UpdateUserGroupRequest(user_group=G(id=w.group.row.id, name="Taken")),
        AlreadyExists, "USER_GROUP_ALREADY_EXISTS", None),
    "update: stale etag": (
        "UpdateUserGroup",
        lambda w: pb.UpdateUserGroupRequest(
            user_group=G(id=w.group.row.id, name="y", etag="0" * 32)),
        Aborted, "ETAG_MISMATCH", None),
    "update: no id": (
        "UpdateUserGroup", lambda w: pb.UpdateUserGroupRequest(user_group=G(name="y")),
        InvalidArgument, "INVALID_ARGUMENT", ["user_group.id"]),
    "update: unknown": (
        "UpdateUserGroup",
        lambda w: pb.UpdateUserGroupRequest(user_group=G(id=UNKNOWN_ID, name="y")),
        NotFound, "USER_GROUP_NOT_FOUND", None),
    # DeleteUserGroup
    "delete: stale etag": (
        "DeleteUserGroup", lambda w: pb.DeleteUserGroupRequest(id=w.group.row.id, etag="0" * 32),
        Aborted, "ETAG_MISMATCH", None),
    "delete: unknown": (
        "DeleteUserGroup", lambda w: pb.DeleteUserGroupRequest(id=UNKNOWN_ID),
        NotFound, "USER_GROUP_NOT_FOUND", None),
    "delete: id not an id": (
        "DeleteUserGroup", lambda w: pb.DeleteUserGroupRequest(id="main"),
        InvalidArgument, "INVALID_ID", ["id"]),
    # AddUserGroupMembers
    "add members: none named": (
        "AddUserGroupMembers", lambda w: pb.AddUserGroupMembersRequest(id=w.group.row.id),
        InvalidArgument, "INVALID_ARGUMENT", ["user_ids"]),
    "add members: not ids": (
        "AddUserGroupMembers",
        lambda w: pb.AddUserGroupMembersRequest(
            id=w.group.row.id, user_ids=[w.member.user_id, "bob", ""]),
        InvalidArgument, "INVALID_ARGUMENT", ["user_ids[1]", "user_ids[2]"]),
    "add members: users of another account or none": (
        "AddUserGroupMembers",
        lambda w: pb.AddUserGroupMembersRequest(
            id=w.group.row.id, user_ids=[w.foreign_user.id, w.owner.user_id, UNKNOWN_ID]),
        InvalidArgument, "USER_NOT_IN_ACCOUNT", ["user_ids[0]", "user_ids[2]"]),
    "add members: unknown group": (
        "AddUserGroupMembers",
        lambda w: pb.AddUserGroupMembersRequest(id=UNKNOWN_ID, user_ids=[w.owner.user_id]),
        NotFound, "USER_GROUP_NOT_FOUND", None),
    "add members: too many": (
        "AddUserGroupMembers",
        lambda w: pb.AddUserGroupMembersRequest(
            id=w.group.row.id, user_ids=[str(uuid.uuid4()) for _ in range(1001)]),
        InvalidArgument, "INVALID_ARGUMENT", ["user_ids"]),
    # RemoveUserGroupMembers
    "remove members: none named": (
        "RemoveUserGroupMembers", lambda w: pb.RemoveUserGroupMembersRequest(id=w.group.row.id),
        InvalidArgument, "INVALID_ARGUMENT", ["user_ids"]),
    "remove members: users of another account": (
        "RemoveUserGroupMembers",
        lambda w: pb.RemoveUserGroupMembersRequest(
            id=w.group.row.id, user_ids=[w.member.user_id, w.foreign_user.id]),
        InvalidArgument, "USER_NOT_IN_ACCOUNT", ["user_ids[1]"]),
    # ListMyUserGroups
    "my groups: negative page_size": (
        "ListMyUserGroups", lambda w: pb.ListMyUserGroupsRequest(page_size=-5),
        InvalidArgument, "INVALID_PAGE_SIZE", ["page_size"]),
    "my groups: garbage page_token": (
        "ListMyUserGroups", lambda w: pb.ListMyUserGroupsRequest(page_token="!!"),
        InvalidArgument, "INVALID_PAGE_TOKEN", ["page_token"]),
    # a closed account takes no new groups, even from admin
    "create: closed account": (
        "CreateUserGroup",
        lambda w: pb.CreateUserGroupRequest(account_id=w.closed_account_id, user_group=G(name="x")),
        FailedPrecondition, "ACCOUNT_CLOSED", None),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(uc: UseCases, w: World, case: str) -> None:
    rpc, build, error, reason, fields = CASES[case]
    p = uc.admin if "closed account" in case else w.owner
    uc.rejects(lambda: CALLS[rpc](uc.services, p, build(w)), error, reason, fields=fields)


def list_groups(uc: UseCases, p: Principal, req: pb.ListUserGroupsRequest) -> Any:
    return CALLS["ListUserGroups"](uc.services, p, req)


def test_page_token_is_bound_to_its_query(uc: UseCases, w: World) -> None:
    first = list_groups(uc, w.owner, pb.ListUserGroupsRequest(account_id=w.account_id,
                                                              page_size=1))
    assert first.next_page_token
    for changed in (
        dict(filter="main"),
        dict(order_by="name"),
        dict(account_id=w.foreign_user.account_id),
    ):
        req = pb.ListUserGroupsRequest(account_id=w.account_id, page_size=1,
                                       page_token=first.next_page_token)
        for k, v in changed.items():
            setattr(req, k, v)
        p = uc.admin if "account_id" in changed else w.owner
        uc.rejects(partial(list_groups, uc, p, req), InvalidArgument,
                   "PAGE_TOKEN_QUERY_MISMATCH", field="page_token")


def test_a_members_token_cannot_page_an_admins_list(uc: UseCases, w: World) -> None:
    """The member sees a narrower list: the owner's page token is not valid for it."""
    first = list_groups(uc, w.owner, pb.ListUserGroupsRequest(account_id=w.account_id,
                                                              page_size=1))
    req = pb.ListUserGroupsRequest(account_id=w.account_id, page_size=1,
                                   page_token=first.next_page_token)
    uc.rejects(lambda: list_groups(uc, w.member, req), InvalidArgument,
               "PAGE_TOKEN_QUERY_MISMATCH")
