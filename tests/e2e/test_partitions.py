"""PartitionService's partitions, what works: CRUD, lists with include, audit."""

from __future__ import annotations

import grpc
import pytest
from accounts.v1 import partition_pb2
from accounts.v1 import partition_service_pb2 as pb
from accounts.v1 import user_group_service_pb2 as gpb
from google.protobuf import field_mask_pb2

from tests.e2e.groups_helpers import (
    Persona,
    create_account,
    events,
    human,
    make_group,
    make_partition,
    uniq,
)
from tests.support import Server, expect_error


@pytest.fixture(scope="module")
def acct(server: Server) -> tuple[str, Persona]:
    account_id, owner_id = create_account(server, "Partitions plc")
    return account_id, human(server, "owner", account_id, ("account-admin",), user_id=owner_id)


def test_create_get_update_delete(server: Server, acct: tuple[str, Persona]) -> None:
    account_id, owner = acct
    s = server.stubs.partitions
    p = s.CreatePartition(
        pb.CreatePartitionRequest(
            account_id=account_id,
            partition=partition_pb2.Partition(name="  Plant A ", description="the old plant"),
            request_id="rid-plant-a",
        ),
        metadata=owner.md,
    ).partition
    assert (p.name, p.description, p.account_id) == ("Plant A", "the old plant", account_id)
    assert p.id and p.etag and p.create_time == p.update_time
    assert s.GetPartition(pb.GetPartitionRequest(id=p.id), metadata=owner.md).partition == p

    u = s.UpdatePartition(
        pb.UpdatePartitionRequest(
            partition=partition_pb2.Partition(id=p.id, description="", etag=p.etag),
            update_mask=field_mask_pb2.FieldMask(paths=["description"]),
        ),
        metadata=owner.md,
    ).partition
    assert (u.name, u.description) == ("Plant A", "") and u.etag != p.etag
    u2 = s.UpdatePartition(
        pb.UpdatePartitionRequest(partition=partition_pb2.Partition(id=p.id, name="Plant B")),
        metadata=owner.md,
    ).partition
    assert u2.name == "Plant B"

    expect_error(
        s.DeletePartition,
        pb.DeletePartitionRequest(id=p.id, etag=u.etag),
        metadata=owner.md,
        code=grpc.StatusCode.ABORTED,
        reason="ETAG_MISMATCH",
    )
    s.DeletePartition(pb.DeletePartitionRequest(id=p.id, etag=u2.etag), metadata=owner.md)
    expect_error(
        s.GetPartition,
        pb.GetPartitionRequest(id=p.id),
        metadata=owner.md,
        code=grpc.StatusCode.NOT_FOUND,
        reason="PARTITION_NOT_FOUND",
    )
    evs = events(server, p.id)
    assert [(e.action, e.changed_fields, e.actor_user_id) for e in evs] == [
        ("partition.create", ["description", "name"], owner.user_id),
        ("partition.update", ["description"], owner.user_id),
        ("partition.update", ["name"], owner.user_id),
        ("partition.delete", [], owner.user_id),
    ]
    assert evs[0].request_id == "rid-plant-a"


def test_create_is_idempotent_with_request_id(server: Server, acct: tuple[str, Persona]) -> None:
    account_id, owner = acct
    req = pb.CreatePartitionRequest(
        account_id=account_id,
        partition=partition_pb2.Partition(name=uniq("p-")),
        request_id=uniq("rid-"),
    )
    first = server.stubs.partitions.CreatePartition(req, metadata=owner.md).partition
    assert server.stubs.partitions.CreatePartition(req, metadata=owner.md).partition == first
    assert len(events(server, first.id)) == 1


def test_list_with_include_account_filter_order_paging(
    server: Server, acct: tuple[str, Persona]
) -> None:
    account_id, owner = acct
    tag = uniq("t")
    for n in ("b", "c", "a"):
        make_partition(server, account_id, f"{tag}-{n}", description=f"zone {n}")
    make_partition(server, account_id, uniq("untagged-"))
    lst = server.stubs.partitions.ListPartitions
    r = lst(
        pb.ListPartitionsRequest(
            account_id=account_id, filter=tag, order_by="name", include=["account"]
        ),
        metadata=owner.md,
    )
    assert [p.name for p in r.partitions] == [f"{tag}-a", f"{tag}-b", f"{tag}-c"]
    assert r.total_size == 3 and not r.next_page_token
    [company] = r.included_accounts
    assert (company.id, company.name) == (account_id, "Partitions plc")
    # without include, no account; description is searched too
    r2 = lst(
        pb.ListPartitionsRequest(account_id=account_id, filter=f'{tag} "ZONE b"'),
        metadata=owner.md,
    )
    assert [p.name for p in r2.partitions] == [f"{tag}-b"] and not r2.included_accounts
    # paging, newest first
    seen = []
    req = pb.ListPartitionsRequest(
        account_id=account_id, filter=tag, order_by="create_time desc", page_size=2
    )
    while True:
        page = lst(req, metadata=owner.md)
        seen += [p.name for p in page.partitions]
        if not page.next_page_token:
            break
        req.page_token = page.next_page_token
    assert seen == [f"{tag}-a", f"{tag}-c", f"{tag}-b"]


def test_member_lists_only_partitions_its_groups_reach(
    server: Server, acct: tuple[str, Persona]
) -> None:
    account_id, _ = acct
    tag = uniq("m")
    p1 = make_partition(server, account_id, f"{tag} one")
    p2 = make_partition(server, account_id, f"{tag} two")
    make_partition(server, account_id, f"{tag} three")
    member = human(server, "member", account_id)
    make_group(server, account_id, partition_ids=(p1.id,), members=(member.user_id,))
    make_group(server, account_id, partition_ids=(p1.id, p2.id), members=(member.user_id,))
    r = server.stubs.partitions.ListPartitions(
        pb.ListPartitionsRequest(
            account_id=account_id, filter=tag, order_by="name", include=["account", "account"]
        ),
        metadata=member.md,
    )
    assert [p.id for p in r.partitions] == [p1.id, p2.id] and r.total_size == 2
    assert [a.id for a in r.included_accounts] == [account_id]


def test_deleting_a_partition_unlinks_it_from_groups(
    server: Server, acct: tuple[str, Persona]
) -> None:
    account_id, owner = acct
    p = make_partition(server, account_id)
    keep = make_partition(server, account_id)
    g = make_group(server, account_id, partition_ids=(p.id, keep.id))
    server.stubs.partitions.DeletePartition(pb.DeletePartitionRequest(id=p.id), metadata=owner.md)
    after = server.stubs.groups.GetUserGroup(
        gpb.GetUserGroupRequest(id=g.id), metadata=owner.md
    ).user_group
    assert list(after.partition_ids) == [keep.id] and after.etag != g.etag
    assert [(e.action, e.changed_fields) for e in events(server, g.id)][-1] == (
        "user_group.update",
        ["partition_ids"],
    )


def test_send_back_what_was_read(server: Server, acct: tuple[str, Persona]) -> None:
    account_id, owner = acct
    p = make_partition(server, account_id, description="old")
    edited = partition_pb2.Partition()
    edited.CopyFrom(p)
    edited.name = uniq("renamed-")
    out = server.stubs.partitions.UpdatePartition(
        pb.UpdatePartitionRequest(partition=edited), metadata=owner.md
    ).partition
    assert (out.name, out.description) == (edited.name, "old")
    assert events(server, p.id)[-1].changed_fields == ["name"]
    edited.CopyFrom(out)
    edited.create_time.seconds += 1
    expect_error(
        server.stubs.partitions.UpdatePartition,
        pb.UpdatePartitionRequest(partition=edited),
        metadata=owner.md,
        code=grpc.StatusCode.INVALID_ARGUMENT,
        reason="FIELD_NOT_UPDATABLE",
        field="partition.create_time",
    )
