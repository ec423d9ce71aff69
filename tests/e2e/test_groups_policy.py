"""Who may do what in UserGroupService: every RPC, every kind of caller, exact outcome.

The callers (see test_groups_support.policy_world) and the account they act on, A:
member (of A, in group "fixture mine"), account-admin (of A), intermediary machine
(a MACHINE user of A, which is an ``intermediary`` account), consultant (of A's
consultancy), admin-reader and admin (of other accounts), stranger (an account-admin
of an unrelated account).

A cell is "ok", a set of the names a list returns, or (code, ErrorInfo reason).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest
from accounts.v1 import user_group_pb2
from accounts.v1 import user_group_service_pb2 as pb

from tests.e2e.test_groups_support import (
    PERSONAS,
    PolicyWorld,
    make_group,
    policy_world,
    snapshot,
    uniq,
)
from tests.support import Server, failure

OK = "ok"
ROLE_REQUIRED = (grpc.StatusCode.PERMISSION_DENIED, "ROLE_REQUIRED")
NO_ACCOUNT = (grpc.StatusCode.NOT_FOUND, "ACCOUNT_NOT_FOUND")
NO_GROUP = (grpc.StatusCode.NOT_FOUND, "USER_GROUP_NOT_FOUND")

Outcome = Any  # "ok" | frozenset[str] | tuple[StatusCode, str]
BOTH = frozenset({"fixture mine", "fixture theirs"})
MINE = frozenset({"fixture mine"})
NONE: frozenset[str] = frozenset()


def _names(resp: Any) -> frozenset[str]:
    return frozenset(g.name for g in resp.user_groups)


# rpc row → (prepare(server, world) → (method, request, result extractor or None), row)
Prepare = Callable[[Server, PolicyWorld], tuple[str, Any, Callable[[Any], Any] | None]]


def _fresh(server: Server, w: PolicyWorld, **kw: Any) -> Any:
    return make_group(server, w.account_id, uniq("policy "), **kw)


TABLE: dict[str, tuple[Prepare, dict[str, Outcome]]] = {
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
    rpcs = {label.split(" ")[0] for label in TABLE}
    assert rpcs == set(pb.DESCRIPTOR.services_by_name["UserGroupService"].methods_by_name)
    for _, row in TABLE.values():
        assert set(row) == set(PERSONAS)


@pytest.fixture(scope="module")
def world(server: Server) -> PolicyWorld:
    return policy_world(server)


@pytest.mark.parametrize("persona", PERSONAS)
@pytest.mark.parametrize("rpc", list(TABLE))
def test_policy(server: Server, world: PolicyWorld, rpc: str, persona: str) -> None:
    prepare, row = TABLE[rpc]
    expected = row[persona]
    method, request, extract = prepare(server, world)
    caller = world.personas[persona]
    before = snapshot(server)
    try:
        resp = getattr(server.stubs.groups, method)(request, metadata=caller.md)
    except grpc.RpcError as e:
        f = failure(e)
        got: Outcome = (f.code, f.reason)
        assert snapshot(server) == before, "a denied call changed something"
    else:
        got = extract(resp) if extract else OK
    assert got == expected, f"{persona} → {rpc}: expected {expected}, got {got}"
