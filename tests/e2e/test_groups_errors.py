"""UserGroupService's errors end to end: one real call per RPC and per error class, over
gRPC (the status, the ErrorInfo reason, the field violations, and nothing changed: no
row, no audit event) and over REST (the HTTP status and grpc-gateway body).

The rules themselves, case by case, are asked of the use cases in process:
tests/usecases/test_groups.py (its docstring maps each test that was here to its new home).
"""

from __future__ import annotations

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
    snapshot,
)
from tests.e2e.rest_helpers import rest_error
from tests.support import Server, expect_error

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"


@dataclass
class World:
    account_id: str
    owner: Persona
    group: Any  # a group of the account ("Main")
    other_group: Any  # a second group ("Taken")
    foreign_user: Persona  # a user of another account
    closed_account_id: str


@pytest.fixture(scope="module")
def w(server: Server) -> World:
    account_id, owner_id = create_account(server, "Errors Ltd")
    owner = human(server, "owner", account_id, ("account-admin",), user_id=owner_id)
    group = make_group(server, account_id, "Main")
    other = make_group(server, account_id, "Taken")
    foreign_id, _ = create_account(server, "Elsewhere")
    closed_id, _ = create_account(server, "Closed Co")
    close_account(server, closed_id)
    return World(
        account_id,
        owner,
        group,
        other,
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
    "create: unknown account": (
        "CreateUserGroup",
        lambda w: pb.CreateUserGroupRequest(account_id=UNKNOWN_ID, user_group=G(name="x")),
        NOT_FOUND,
        "ACCOUNT_NOT_FOUND",
        None,
    ),
    "get: unknown": (
        "GetUserGroup",
        lambda w: pb.GetUserGroupRequest(id=UNKNOWN_ID),
        NOT_FOUND,
        "USER_GROUP_NOT_FOUND",
        None,
    ),
    "list: garbage page_token": (
        "ListUserGroups",
        lambda w: pb.ListUserGroupsRequest(account_id=w.account_id, page_token="abc"),
        INVALID,
        "INVALID_PAGE_TOKEN",
        ["page_token"],
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
    "update: stale etag": (
        "UpdateUserGroup",
        lambda w: pb.UpdateUserGroupRequest(user_group=G(id=w.group.id, name="y", etag="0" * 32)),
        grpc.StatusCode.ABORTED,
        "ETAG_MISMATCH",
        None,
    ),
    "delete: id not an id": (
        "DeleteUserGroup",
        lambda w: pb.DeleteUserGroupRequest(id="main"),
        INVALID,
        "INVALID_ID",
        ["id"],
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
    "remove members: none named": (
        "RemoveUserGroupMembers",
        lambda w: pb.RemoveUserGroupMembersRequest(id=w.group.id),
        INVALID,
        "INVALID_ARGUMENT",
        ["user_ids"],
    ),
    "my groups: negative page_size": (
        "ListMyUserGroups",
        lambda w: pb.ListMyUserGroupsRequest(page_size=-5),
        INVALID,
        "INVALID_PAGE_SIZE",
        ["page_size"],
    ),
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


# (method, path, JSON body, as admin (else the owner), HTTP status, code, reason, field)
RestCase = tuple[str, Callable[[World], str], dict[str, Any], bool, int, grpc.StatusCode, str,
                 str | None]
REST_CASES: dict[str, RestCase] = {
    "400 INVALID_ARGUMENT": (
        "POST", lambda w: f"/v1/accounts/{w.account_id}/userGroups", {"name": ""}, False, 400,
        INVALID, "INVALID_ARGUMENT", "user_group.name"),
    "404 NOT_FOUND": (
        "GET", lambda w: f"/v1/userGroups/{UNKNOWN_ID}", {}, False, 404, NOT_FOUND,
        "USER_GROUP_NOT_FOUND", None),
    "409 ALREADY_EXISTS": (
        "POST", lambda w: f"/v1/accounts/{w.account_id}/userGroups", {"name": "Taken"}, False,
        409, grpc.StatusCode.ALREADY_EXISTS, "USER_GROUP_ALREADY_EXISTS", None),
    "409 ABORTED": (
        "PATCH", lambda w: f"/v1/userGroups/{w.group.id}", {"name": "y", "etag": "0" * 32},
        False, 409, grpc.StatusCode.ABORTED, "ETAG_MISMATCH", None),
    "400 FAILED_PRECONDITION": (
        "POST", lambda w: f"/v1/accounts/{w.closed_account_id}/userGroups", {"name": "x"}, True,
        400, grpc.StatusCode.FAILED_PRECONDITION, "ACCOUNT_CLOSED", None),
}


@pytest.mark.parametrize("case", list(REST_CASES))
def test_rest_error(server: Server, w: World, case: str) -> None:
    method, path, body, as_admin, status, code, reason, field = REST_CASES[case]
    rest_error(server, method, path(w), body=body or None, snapshot=snapshot,
               token=server.admin_token if as_admin else w.owner.token, status=status,
               code=code, reason=reason, field=field)
