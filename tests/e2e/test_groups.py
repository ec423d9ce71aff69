"""UserGroupService, what works: CRUD, members, lists, ListMyUserGroups, audit, and
role/membership changes taking effect on the caller's next call."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from accounts.v1 import (
    partition_pb2,
    partition_service_pb2,
    user_group_pb2,
)
from accounts.v1 import user_group_service_pb2 as pb
from google.protobuf import field_mask_pb2

from tests.e2e.groups_helpers import (
    Persona,
    admin,
    create_account,
    events,
    human,
    make_group,
    make_partition,
    uniq,
)
from tests.support import Server, expect_error, failure


@pytest.fixture(scope="module")
def acct(server: Server) -> tuple[str, Persona]:
    account_id, owner_id = create_account(server, "Groups Inc")
    return account_id, human(server, "owner", account_id, ("account-admin",), user_id=owner_id)


def test_create_get_and_audit(server: Server, acct: tuple[str, Persona]) -> None:
    account_id, owner = acct
    p1 = make_partition(server, account_id)
    created = server.stubs.groups.CreateUserGroup(
        pb.CreateUserGroupRequest(
            account_id=account_id,
            user_group=user_group_pb2.UserGroup(
                name="Operators",
                description="run things",
                roles=["consultant", "account-admin", "consultant"],
                partition_ids=[p1.id, p1.id],
            ),
            request_id="req-create-operators",
        ),
        metadata=owner.md,
    ).user_group
    assert created.id and created.account_id == account_id
    assert (created.name, created.description) == ("Operators", "run things")
    assert list(created.roles) == ["account-admin", "consultant"]  # sorted, de-duplicated
    assert list(created.partition_ids) == [p1.id]
    assert list(created.member_ids) == []
    assert (
        created.etag and created.create_time.seconds and created.create_time == created.update_time
    )

    got = server.stubs.groups.GetUserGroup(pb.GetUserGroupRequest(id=created.id), metadata=owner.md)
    assert got.user_group == created

    [ev] = events(server, created.id)
    assert (ev.action, ev.resource_type, ev.account_id, ev.actor_user_id, ev.request_id) == (
        "user_group.create",
        "UserGroup",
        account_id,
        owner.user_id,
        "req-create-operators",
    )
    assert ev.changed_fields == ["description", "name", "partition_ids", "roles"]


def test_create_is_idempotent_with_request_id(server: Server, acct: tuple[str, Persona]) -> None:
    account_id, owner = acct
    req = pb.CreateUserGroupRequest(
        account_id=account_id,
        user_group=user_group_pb2.UserGroup(name=uniq("retry-")),
        request_id=uniq("rid-"),
    )
    first = server.stubs.groups.CreateUserGroup(req, metadata=owner.md).user_group
    again = server.stubs.groups.CreateUserGroup(req, metadata=owner.md).user_group
    assert again == first
    assert len(events(server, first.id)) == 1
    req.user_group.name = uniq("other-")
    expect_error(
        server.stubs.groups.CreateUserGroup,
        req,
        metadata=owner.md,
        code=grpc.StatusCode.INVALID_ARGUMENT,
        reason="REQUEST_ID_REUSED",
        field="request_id",
    )


def test_update_with_mask_and_etag(server: Server, acct: tuple[str, Persona]) -> None:
    account_id, owner = acct
    p1, p2 = make_partition(server, account_id), make_partition(server, account_id)
    g = make_group(server, account_id, description="keep me", partition_ids=(p1.id,))
    upd = server.stubs.groups.UpdateUserGroup(
        pb.UpdateUserGroupRequest(
            user_group=user_group_pb2.UserGroup(
                id=g.id, name="renamed", partition_ids=[p2.id, p1.id], etag=g.etag
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["name", "partitionIds"]),
        ),
        metadata=owner.md,
    ).user_group
    assert upd.name == "renamed" and upd.description == "keep me"
    assert set(upd.partition_ids) == {p1.id, p2.id}
    assert upd.etag != g.etag and upd.update_time.ToMicroseconds() > g.update_time.ToMicroseconds()

    # no mask: the populated fields; an empty description is not "populated"
    upd2 = server.stubs.groups.UpdateUserGroup(
        pb.UpdateUserGroupRequest(
            user_group=user_group_pb2.UserGroup(id=g.id, roles=["consultant"])
        ),
        metadata=owner.md,
    ).user_group
    assert list(upd2.roles) == ["consultant"] and upd2.description == "keep me"
    # an explicit mask clears
    upd3 = server.stubs.groups.UpdateUserGroup(
        pb.UpdateUserGroupRequest(
            user_group=user_group_pb2.UserGroup(id=g.id),
            update_mask=field_mask_pb2.FieldMask(paths=["description", "partition_ids", "roles"]),
        ),
        metadata=owner.md,
    ).user_group
    assert (upd3.description, list(upd3.partition_ids), list(upd3.roles)) == ("", [], [])

    expect_error(
        server.stubs.groups.UpdateUserGroup,
        pb.UpdateUserGroupRequest(
            user_group=user_group_pb2.UserGroup(id=g.id, name="x", etag=g.etag)
        ),
        metadata=owner.md,
        code=grpc.StatusCode.ABORTED,
        reason="ETAG_MISMATCH",
    )
    assert [(e.action, e.changed_fields) for e in events(server, g.id)[1:]] == [
        ("user_group.update", ["name", "partition_ids"]),
        ("user_group.update", ["roles"]),
        ("user_group.update", ["description", "partition_ids", "roles"]),
    ]


def test_members_are_idempotent(server: Server, acct: tuple[str, Persona]) -> None:
    account_id, owner = acct
    a = human(server, "a", account_id)
    b = human(server, "b", account_id)
    g = make_group(server, account_id)
    add = server.stubs.groups.AddUserGroupMembers
    rem = server.stubs.groups.RemoveUserGroupMembers
    g1 = add(
        pb.AddUserGroupMembersRequest(id=g.id, user_ids=[a.user_id, a.user_id]), metadata=owner.md
    )
    assert list(g1.user_group.member_ids) == [a.user_id]
    g2 = add(
        pb.AddUserGroupMembersRequest(id=g.id, user_ids=[b.user_id, a.user_id]), metadata=owner.md
    )
    assert set(g2.user_group.member_ids) == {a.user_id, b.user_id}
    # already in: no change, no event, same etag
    g3 = add(pb.AddUserGroupMembersRequest(id=g.id, user_ids=[a.user_id]), metadata=owner.md)
    assert g3.user_group.etag == g2.user_group.etag
    g4 = rem(pb.RemoveUserGroupMembersRequest(id=g.id, user_ids=[a.user_id]), metadata=owner.md)
    assert list(g4.user_group.member_ids) == [b.user_id]
    # not in: no change, no event
    g5 = rem(pb.RemoveUserGroupMembersRequest(id=g.id, user_ids=[a.user_id]), metadata=owner.md)
    assert g5.user_group.etag == g4.user_group.etag
    assert [(e.action, e.changed_fields, e.actor_user_id) for e in events(server, g.id)] == [
        ("user_group.create", ["name"], admin(server).user_id),
        ("user_group.add_members", ["member_ids"], owner.user_id),
        ("user_group.add_members", ["member_ids"], owner.user_id),
        ("user_group.remove_members", ["member_ids"], owner.user_id),
    ]


def test_delete(server: Server, acct: tuple[str, Persona]) -> None:
    account_id, owner = acct
    user = human(server, "u", account_id)
    p1 = make_partition(server, account_id)
    g = make_group(server, account_id, partition_ids=(p1.id,), members=(user.user_id,))
    expect_error(
        server.stubs.groups.DeleteUserGroup,
        pb.DeleteUserGroupRequest(id=g.id, etag="stale"),
        metadata=owner.md,
        code=grpc.StatusCode.ABORTED,
        reason="ETAG_MISMATCH",
    )
    server.stubs.groups.DeleteUserGroup(
        pb.DeleteUserGroupRequest(id=g.id, etag=g.etag), metadata=owner.md
    )
    expect_error(
        server.stubs.groups.GetUserGroup,
        pb.GetUserGroupRequest(id=g.id),
        metadata=owner.md,
        code=grpc.StatusCode.NOT_FOUND,
        reason="USER_GROUP_NOT_FOUND",
    )
    mine = server.stubs.groups.ListMyUserGroups(pb.ListMyUserGroupsRequest(), metadata=user.md)
    assert list(mine.user_groups) == []
    # the partition itself is untouched
    server.stubs.partitions.GetPartition(
        partition_service_pb2.GetPartitionRequest(id=p1.id), metadata=owner.md
    )
    assert [e.action for e in events(server, g.id)][-1] == "user_group.delete"


def test_list_filter_order_and_paging(server: Server, acct: tuple[str, Persona]) -> None:
    account_id, owner = acct
    tag = uniq("zz")
    names = [f"{tag} {n}" for n in ("delta", "alpha", "echo", "charlie", "bravo")]
    for n in names:
        make_group(server, account_id, n)
    make_group(server, account_id, uniq("other "), description="not tagged")
    lst = server.stubs.groups.ListUserGroups
    req = pb.ListUserGroupsRequest(
        account_id=account_id, filter=tag, order_by="name desc", page_size=2
    )
    seen: list[str] = []
    pages = 0
    prev_tokens = []
    while True:
        resp = lst(req, metadata=owner.md)
        pages += 1
        assert resp.total_size == 5
        seen += [g.name for g in resp.user_groups]
        prev_tokens.append(resp.previous_page_token)
        if not resp.next_page_token:
            break
        req.page_token = resp.next_page_token
    assert seen == sorted(names, reverse=True) and pages == 3
    assert prev_tokens[0] == "" and all(prev_tokens[1:])
    back = lst(
        pb.ListUserGroupsRequest(
            account_id=account_id,
            filter=tag,
            order_by="name desc",
            page_size=2,
            page_token=prev_tokens[-1],
        ),
        metadata=owner.md,
    )
    assert [g.name for g in back.user_groups] == seen[2:4]
    # every term must occur: name or description, case-insensitive
    two = lst(
        pb.ListUserGroupsRequest(account_id=account_id, filter=f"{tag.upper()} ALPHA"),
        metadata=owner.md,
    )
    assert [g.name for g in two.user_groups] == [f"{tag} alpha"]


def test_list_my_user_groups_pages_with_includes(server: Server, acct: tuple[str, Persona]) -> None:
    account_id, _ = acct
    user = human(server, "me", account_id)
    ps = [make_partition(server, account_id) for _ in range(3)]
    gs = [
        make_group(server, account_id, partition_ids=(ps[i].id,), members=(user.user_id,))
        for i in range(3)
    ]
    make_group(server, account_id, partition_ids=(ps[0].id,))  # not a member
    r1 = server.stubs.groups.ListMyUserGroups(
        pb.ListMyUserGroupsRequest(page_size=2), metadata=user.md
    )
    assert [g.id for g in r1.user_groups] == [gs[0].id, gs[1].id]  # oldest first
    assert {p.id for p in r1.included_partitions} == {ps[0].id, ps[1].id}
    assert [a.id for a in r1.included_accounts] == [account_id]
    assert r1.total_size == 3 and r1.next_page_token and not r1.previous_page_token
    r2 = server.stubs.groups.ListMyUserGroups(
        pb.ListMyUserGroupsRequest(page_size=2, page_token=r1.next_page_token), metadata=user.md
    )
    assert [g.id for g in r2.user_groups] == [gs[2].id]
    assert [p.id for p in r2.included_partitions] == [ps[2].id]
    assert not r2.next_page_token and r2.previous_page_token


def test_role_and_membership_changes_take_effect_on_the_next_call(
    server: Server, acct: tuple[str, Persona]
) -> None:
    """The authenticator reloads groups on every call: the same token loses at once what
    a group no longer grants (the JWT's roles claim is only a snapshot)."""
    account_id, _ = acct
    user = human(server, "u", account_id)
    p1 = make_partition(server, account_id)
    g = make_group(
        server,
        account_id,
        roles=("account-admin",),
        partition_ids=(p1.id,),
        members=(user.user_id,),
    )

    def create_partition() -> None:
        server.stubs.partitions.CreatePartition(
            partition_service_pb2.CreatePartitionRequest(
                account_id=account_id, partition=partition_pb2.Partition(name=uniq("p-"))
            ),
            metadata=user.md,
        )

    def cannot_create_partition() -> None:
        expect_error(
            create_partition, code=grpc.StatusCode.PERMISSION_DENIED, reason="ROLE_REQUIRED"
        )

    create_partition()  # account-admin through the group
    # the role is taken off the group: the very next call is denied
    server.stubs.groups.UpdateUserGroup(
        pb.UpdateUserGroupRequest(
            user_group=user_group_pb2.UserGroup(id=g.id),
            update_mask=field_mask_pb2.FieldMask(paths=["roles"]),
        ),
        metadata=server.admin,
    )
    cannot_create_partition()
    # given back, then the membership is removed: denied again
    server.stubs.groups.UpdateUserGroup(
        pb.UpdateUserGroupRequest(
            user_group=user_group_pb2.UserGroup(id=g.id, roles=["account-admin"])
        ),
        metadata=server.admin,
    )
    create_partition()
    server.stubs.groups.RemoveUserGroupMembers(
        pb.RemoveUserGroupMembersRequest(id=g.id, user_ids=[user.user_id]), metadata=server.admin
    )
    cannot_create_partition()

    # partition reach too: a plain member reads p1 while a group reaches it, not after
    g2 = make_group(server, account_id, partition_ids=(p1.id,), members=(user.user_id,))
    get = partition_service_pb2.GetPartitionRequest(id=p1.id)
    assert server.stubs.partitions.GetPartition(get, metadata=user.md).partition.id == p1.id
    server.stubs.groups.UpdateUserGroup(
        pb.UpdateUserGroupRequest(
            user_group=user_group_pb2.UserGroup(id=g2.id),
            update_mask=field_mask_pb2.FieldMask(paths=["partition_ids"]),
        ),
        metadata=server.admin,
    )
    expect_error(
        server.stubs.partitions.GetPartition,
        get,
        metadata=user.md,
        code=grpc.StatusCode.NOT_FOUND,
        reason="PARTITION_NOT_FOUND",
    )


def test_account_admin_grants_no_role_above_its_own(
    server: Server, acct: tuple[str, Persona]
) -> None:
    account_id, owner = acct
    for roles in (["admin"], ["admin-reader"], ["consultant", "admin"]):
        f = expect_error(
            server.stubs.groups.CreateUserGroup,
            pb.CreateUserGroupRequest(
                account_id=account_id,
                user_group=user_group_pb2.UserGroup(name=uniq("g-"), roles=roles),
            ),
            metadata=owner.md,
            code=grpc.StatusCode.PERMISSION_DENIED,
            reason="ROLE_NOT_GRANTABLE",
        )
        assert f.metadata["roles"] in ("admin", "admin-reader")
    # what it holds it may grant
    ok = make_group(server, account_id)
    server.stubs.groups.UpdateUserGroup(
        pb.UpdateUserGroupRequest(
            user_group=user_group_pb2.UserGroup(id=ok.id, roles=["account-admin", "consultant"])
        ),
        metadata=owner.md,
    )
    # an admin-made group granting admin-reader: the account-admin may not change who
    # holds it, nor take the role away, nor delete the group
    high = make_group(server, account_id, roles=("admin-reader",))
    someone = human(server, "x", account_id)
    for call, req in [
        (
            server.stubs.groups.AddUserGroupMembers,
            pb.AddUserGroupMembersRequest(id=high.id, user_ids=[someone.user_id]),
        ),
        (
            server.stubs.groups.RemoveUserGroupMembers,
            pb.RemoveUserGroupMembersRequest(id=high.id, user_ids=[someone.user_id]),
        ),
        (
            server.stubs.groups.UpdateUserGroup,
            pb.UpdateUserGroupRequest(
                user_group=user_group_pb2.UserGroup(id=high.id),
                update_mask=field_mask_pb2.FieldMask(paths=["roles"]),
            ),
        ),
        (server.stubs.groups.DeleteUserGroup, pb.DeleteUserGroupRequest(id=high.id)),
    ]:
        expect_error(
            call,
            req,
            metadata=owner.md,
            code=grpc.StatusCode.PERMISSION_DENIED,
            reason="ROLE_NOT_GRANTABLE",
        )
    # ... but it may rename it
    server.stubs.groups.UpdateUserGroup(
        pb.UpdateUserGroupRequest(user_group=user_group_pb2.UserGroup(id=high.id, name=uniq("n-"))),
        metadata=owner.md,
    )


def _race(n: int, fn: Callable[[int], Any]) -> list[Any]:
    """Run fn(0..n-1) at once; returns each result or the grpc.RpcError it raised."""
    barrier = threading.Barrier(n)

    def run(i: int) -> Any:
        barrier.wait()
        try:
            return fn(i)
        except grpc.RpcError as e:
            return e

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(run, range(n)))


def test_concurrent_member_adds_all_land(server: Server, acct: tuple[str, Persona]) -> None:
    account_id, owner = acct
    users = [human(server, f"u{i}", account_id) for i in range(6)]
    g = make_group(server, account_id)
    results = _race(
        6,
        lambda i: server.stubs.groups.AddUserGroupMembers(
            pb.AddUserGroupMembersRequest(id=g.id, user_ids=[users[i].user_id]),
            metadata=owner.md,
        ),
    )
    assert not [r for r in results if isinstance(r, grpc.RpcError)], results
    final = server.stubs.groups.GetUserGroup(pb.GetUserGroupRequest(id=g.id), metadata=owner.md)
    assert set(final.user_group.member_ids) == {u.user_id for u in users}
    assert len(events(server, g.id)) == 1 + 6


def test_concurrent_creates_of_one_name(server: Server, acct: tuple[str, Persona]) -> None:
    account_id, owner = acct
    name = uniq("race ")
    results = _race(
        5,
        lambda i: server.stubs.groups.CreateUserGroup(
            pb.CreateUserGroupRequest(
                account_id=account_id, user_group=user_group_pb2.UserGroup(name=name)
            ),
            metadata=owner.md,
        ),
    )
    errors = [failure(r) for r in results if isinstance(r, grpc.RpcError)]
    assert len(errors) == 4, errors
    assert {(f.code, f.reason) for f in errors} == {
        (grpc.StatusCode.ALREADY_EXISTS, "USER_GROUP_ALREADY_EXISTS")
    }


def test_send_back_what_was_read(server: Server, acct: tuple[str, Persona]) -> None:
    """Without a mask, fields sent back unchanged (output-only ones too) ask for nothing;
    only what was edited changes."""
    account_id, owner = acct
    p1 = make_partition(server, account_id)
    g = make_group(server, account_id, roles=("consultant",), partition_ids=(p1.id,))
    g = server.stubs.groups.AddUserGroupMembers(
        pb.AddUserGroupMembersRequest(id=g.id, user_ids=[owner.user_id]), metadata=owner.md
    ).user_group
    edited = user_group_pb2.UserGroup()
    edited.CopyFrom(g)
    edited.description = "edited"
    out = server.stubs.groups.UpdateUserGroup(
        pb.UpdateUserGroupRequest(user_group=edited), metadata=owner.md
    ).user_group
    assert out.description == "edited" and out.name == g.name
    assert list(out.member_ids) == [owner.user_id] and list(out.roles) == ["consultant"]
    assert events(server, g.id)[-1].changed_fields == ["description"]
    # an edited output-only field is still an error
    edited.CopyFrom(out)
    edited.member_ids.append(owner.user_id + "x")
    expect_error(
        server.stubs.groups.UpdateUserGroup,
        pb.UpdateUserGroupRequest(user_group=edited),
        metadata=owner.md,
        code=grpc.StatusCode.INVALID_ARGUMENT,
        reason="FIELD_NOT_UPDATABLE",
        field="user_group.member_ids",
    )
