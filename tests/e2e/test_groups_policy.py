"""Who may do what in UserGroupService: every RPC, every kind of caller, exact outcome.

The callers (see groups_helpers.policy_world) and the account they act on, A:
member (of A, in group "fixture mine"), account-admin (of A), intermediary machine
(a MACHINE user of A, which is an ``intermediary`` account), consultant (of A's
consultancy), admin-reader and admin (of other accounts), stranger (an account-admin
of an unrelated account).

A cell is "ok", a set of the names a list returns, or (code, ErrorInfo reason).
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from accounts.v1 import user_group_pb2
from accounts.v1 import user_group_service_pb2 as pb

from tests.e2e.groups_helpers import (
    NO_ACCOUNT,
    OK,
    PERSONAS,
    ROLE_REQUIRED,
    PolicyTable,
    PolicyWorld,
    check_cell,
    check_table_covers,
    make_group,
    policy_world,
    uniq,
)
from tests.support import Server

NO_GROUP = (grpc.StatusCode.NOT_FOUND, "USER_GROUP_NOT_FOUND")

BOTH = frozenset({"fixture mine", "fixture theirs"})
MINE = frozenset({"fixture mine"})
NONE: frozenset[str] = frozenset()


def _names(resp: Any) -> frozenset[str]:
    return frozenset(g.name for g in resp.user_groups)


# rpc row → (prepare(server, world) → (method, request, result extractor or None), row)


def _fresh(server: Server, w: PolicyWorld, **kw: Any) -> Any:
    return make_group(server, w.account_id, uniq("policy "), **kw)


TABLE: PolicyTable = {
    "CreateUserGroup": (
        lambda s, w: (
            "CreateUserGroup",
            pb.CreateUserGroupRequest(
                account_id=w.account_id, user_group=user_group_pb2.UserGroup(name=uniq("new "))
            ),
            None,
        ),
        {
            "member": ROLE_REQUIRED,
            "account-admin": OK,
            "intermediary machine": ROLE_REQUIRED,
            "consultant": ROLE_REQUIRED,
            "admin-reader": ROLE_REQUIRED,
            "admin": OK,
            "stranger": NO_ACCOUNT,
        },
    ),
    "GetUserGroup (a group the member is in)": (
        lambda s, w: ("GetUserGroup", pb.GetUserGroupRequest(id=w.group_mine.id), None),
        {
            "member": OK,
            "account-admin": OK,
            "intermediary machine": NO_GROUP,
            "consultant": OK,
            "admin-reader": OK,
            "admin": OK,
            "stranger": NO_GROUP,
        },
    ),
    "GetUserGroup (another group)": (
        lambda s, w: ("GetUserGroup", pb.GetUserGroupRequest(id=w.group_theirs.id), None),
        {
            "member": NO_GROUP,
            "account-admin": OK,
            "intermediary machine": NO_GROUP,
            "consultant": OK,
            "admin-reader": OK,
            "admin": OK,
            "stranger": NO_GROUP,
        },
    ),
    "ListUserGroups": (
        lambda s, w: (
            "ListUserGroups",
            pb.ListUserGroupsRequest(account_id=w.account_id, filter="fixture"),
            _names,
        ),
        {
            "member": MINE,
            "account-admin": BOTH,
            "intermediary machine": NONE,
            "consultant": BOTH,
            "admin-reader": BOTH,
            "admin": BOTH,
            "stranger": NO_ACCOUNT,
        },
    ),
    "UpdateUserGroup": (
        lambda s, w: (
            "UpdateUserGroup",
            pb.UpdateUserGroupRequest(
                user_group=user_group_pb2.UserGroup(id=_fresh(s, w).id, description="changed")
            ),
            None,
        ),
        {
            "member": ROLE_REQUIRED,
            "account-admin": OK,
            "intermediary machine": ROLE_REQUIRED,
            "consultant": ROLE_REQUIRED,
            "admin-reader": ROLE_REQUIRED,
            "admin": OK,
            "stranger": NO_GROUP,
        },
    ),
    "DeleteUserGroup": (
        lambda s, w: ("DeleteUserGroup", pb.DeleteUserGroupRequest(id=_fresh(s, w).id), None),
        {
            "member": ROLE_REQUIRED,
            "account-admin": OK,
            "intermediary machine": ROLE_REQUIRED,
            "consultant": ROLE_REQUIRED,
            "admin-reader": ROLE_REQUIRED,
            "admin": OK,
            "stranger": NO_GROUP,
        },
    ),
    "AddUserGroupMembers": (
        lambda s, w: (
            "AddUserGroupMembers",
            pb.AddUserGroupMembersRequest(id=_fresh(s, w).id, user_ids=[w.bystander.user_id]),
            None,
        ),
        {
            "member": ROLE_REQUIRED,
            "account-admin": OK,
            "intermediary machine": ROLE_REQUIRED,
            "consultant": ROLE_REQUIRED,
            "admin-reader": ROLE_REQUIRED,
            "admin": OK,
            "stranger": NO_GROUP,
        },
    ),
    "RemoveUserGroupMembers": (
        lambda s, w: (
            "RemoveUserGroupMembers",
            pb.RemoveUserGroupMembersRequest(
                id=_fresh(s, w, members=(w.bystander.user_id,)).id,
                user_ids=[w.bystander.user_id],
            ),
            None,
        ),
        {
            "member": ROLE_REQUIRED,
            "account-admin": OK,
            "intermediary machine": ROLE_REQUIRED,
            "consultant": ROLE_REQUIRED,
            "admin-reader": ROLE_REQUIRED,
            "admin": OK,
            "stranger": NO_GROUP,
        },
    ),
    "ListMyUserGroups": (
        lambda s, w: ("ListMyUserGroups", pb.ListMyUserGroupsRequest(), _names),
        {
            "member": MINE,
            "account-admin": NONE,
            "intermediary machine": NONE,
            "consultant": NONE,
            "admin-reader": NONE,
            "admin": NONE,
            "stranger": NONE,
        },
    ),
}


def test_table_covers_every_rpc_and_caller() -> None:
    check_table_covers(TABLE, pb.DESCRIPTOR.services_by_name["UserGroupService"])


@pytest.fixture(scope="module")
def world(server: Server) -> PolicyWorld:
    return policy_world(server)


@pytest.mark.parametrize("persona", PERSONAS)
@pytest.mark.parametrize("rpc", list(TABLE))
def test_policy(server: Server, world: PolicyWorld, rpc: str, persona: str) -> None:
    check_cell(server, world, server.stubs.groups, TABLE, rpc, persona)
