"""PartitionService, bad input case by case: the status, the ErrorInfo reason, the field
violations, and nothing changed (no row, no audit event). RegisterDevices names every
bad item of a batch at once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from accounts.v1 import partition_pb2
from accounts.v1 import partition_service_pb2 as pb
from google.protobuf import field_mask_pb2

from tests.e2e.groups_helpers import (
    Persona,
    close_account,
    create_account,
    device_id,
    human,
    make_partition,
    register,
    snapshot,
    uniq,
)
from tests.support import Server, expect_error

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
EXISTS = grpc.StatusCode.ALREADY_EXISTS
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"


@dataclass
class World:
    account_id: str
    owner: Persona
    partition: Any  # "Main", with two devices
    full: Any  # a partition with a device
    other_account_id: str
    other_partition: Any
    taken_device_id: str
    taken_meter_id: str
    closed_account_id: str
    closed_partition: Any  # a partition of the account before it was closed


@pytest.fixture(scope="module")
def w(server: Server) -> World:
    account_id, owner_id = create_account(server, "Partition Errors AG")
    owner = human(server, "owner", account_id, ("account-admin",), user_id=owner_id)
    part = make_partition(server, account_id, "Main")
    make_partition(server, account_id, "Taken")
    full = make_partition(server, account_id)
    taken_d, taken_m = device_id(), uniq("MTR-")
    register(server, part.id, dict(device_id=taken_d), dict(meter_id=taken_m))
    register(server, full.id, dict(device_id=device_id()))
    other_id, _ = create_account(server, "Other AG")
    closed_id, _ = create_account(server, "Closed AG")
    closed_part = make_partition(server, closed_id)
    close_account(server, closed_id)
    return World(
        account_id,
        owner,
        part,
        full,
        other_id,
        make_partition(server, other_id),
        taken_d,
        taken_m,
        closed_id,
        closed_part,
    )


def P(**kw: Any) -> partition_pb2.Partition:
    return partition_pb2.Partition(**kw)


def D(**kw: Any) -> partition_pb2.Device:
    return partition_pb2.Device(**kw)


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


Case = tuple[str, Callable[[World], Any], grpc.StatusCode, str, list[str] | None]
CASES: dict[str, Case] = {
    # CreatePartition
    "create: no name": (
        "CreatePartition",
        lambda w: pb.CreatePartitionRequest(account_id=w.account_id, partition=P()),
        INVALID,
        "INVALID_ARGUMENT",
        ["partition.name"],
    ),
    "create: name and description too long": (
        "CreatePartition",
        lambda w: pb.CreatePartitionRequest(
            account_id=w.account_id, partition=P(name="x" * 201, description="y" * 2001)
        ),
        INVALID,
        "INVALID_ARGUMENT",
        ["partition.name", "partition.description"],
    ),
    "create: name taken": (
        "CreatePartition",
        lambda w: pb.CreatePartitionRequest(account_id=w.account_id, partition=P(name="Taken")),
        EXISTS,
        "PARTITION_ALREADY_EXISTS",
        None,
    ),
    "create: account_id not an id": (
        "CreatePartition",
        lambda w: pb.CreatePartitionRequest(account_id="nope", partition=P(name="x")),
        INVALID,
        "INVALID_ID",
        ["account_id"],
    ),
    "create: unknown account": (
        "CreatePartition",
        lambda w: pb.CreatePartitionRequest(account_id=UNKNOWN_ID, partition=P(name="x")),
        NOT_FOUND,
        "ACCOUNT_NOT_FOUND",
        None,
    ),
    # GetPartition
    "get: not an id": (
        "GetPartition",
        lambda w: pb.GetPartitionRequest(id="main"),
        INVALID,
        "INVALID_ID",
        ["id"],
    ),
    "get: unknown": (
        "GetPartition",
        lambda w: pb.GetPartitionRequest(id=UNKNOWN_ID),
        NOT_FOUND,
        "PARTITION_NOT_FOUND",
        None,
    ),
    # ListPartitions
    "list: unknown include": (
        "ListPartitions",
        lambda w: pb.ListPartitionsRequest(account_id=w.account_id, include=["account", "users"]),
        INVALID,
        "INVALID_INCLUDE",
        ["include[1]"],
    ),
    "list: include is case-sensitive": (
        "ListPartitions",
        lambda w: pb.ListPartitionsRequest(account_id=w.account_id, include=["Account"]),
        INVALID,
        "INVALID_INCLUDE",
        ["include[0]"],
    ),
    "list: negative page_size": (
        "ListPartitions",
        lambda w: pb.ListPartitionsRequest(account_id=w.account_id, page_size=-1),
        INVALID,
        "INVALID_PAGE_SIZE",
        ["page_size"],
    ),
    "list: unknown order_by": (
        "ListPartitions",
        lambda w: pb.ListPartitionsRequest(account_id=w.account_id, order_by="size"),
        INVALID,
        "INVALID_ORDER_BY",
        ["order_by"],
    ),
    "list: garbage page_token": (
        "ListPartitions",
        lambda w: pb.ListPartitionsRequest(account_id=w.account_id, page_token="xyz"),
        INVALID,
        "INVALID_PAGE_TOKEN",
        ["page_token"],
    ),
    "list: no account_id": (
        "ListPartitions",
        lambda w: pb.ListPartitionsRequest(),
        INVALID,
        "INVALID_ARGUMENT",
        ["account_id"],
    ),
    # UpdatePartition
    "update: output-only path": (
        "UpdatePartition",
        lambda w: pb.UpdatePartitionRequest(
            partition=P(id=w.partition.id), update_mask=mask("account_id")
        ),
        INVALID,
        "INVALID_UPDATE_MASK",
        ["update_mask.paths[0]"],
    ),
    "update: unknown path": (
        "UpdatePartition",
        lambda w: pb.UpdatePartitionRequest(
            partition=P(id=w.partition.id), update_mask=mask("devices")
        ),
        INVALID,
        "INVALID_UPDATE_MASK",
        ["update_mask.paths[0]"],
    ),
    "update: populated output-only field": (
        "UpdatePartition",
        lambda w: pb.UpdatePartitionRequest(
            partition=P(id=w.partition.id, name="n", account_id=w.other_account_id)
        ),
        INVALID,
        "FIELD_NOT_UPDATABLE",
        ["partition.account_id"],
    ),
    "update: empty name": (
        "UpdatePartition",
        lambda w: pb.UpdatePartitionRequest(
            partition=P(id=w.partition.id), update_mask=mask("name")
        ),
        INVALID,
        "INVALID_ARGUMENT",
        ["partition.name"],
    ),
    "update: name taken": (
        "UpdatePartition",
        lambda w: pb.UpdatePartitionRequest(partition=P(id=w.partition.id, name="Taken")),
        EXISTS,
        "PARTITION_ALREADY_EXISTS",
        None,
    ),
    "update: stale etag": (
        "UpdatePartition",
        lambda w: pb.UpdatePartitionRequest(partition=P(id=w.partition.id, name="n", etag="e")),
        grpc.StatusCode.ABORTED,
        "ETAG_MISMATCH",
        None,
    ),
    "update: unknown": (
        "UpdatePartition",
        lambda w: pb.UpdatePartitionRequest(partition=P(id=UNKNOWN_ID, name="n")),
        NOT_FOUND,
        "PARTITION_NOT_FOUND",
        None,
    ),
    # DeletePartition
    "delete: holds devices": (
        "DeletePartition",
        lambda w: pb.DeletePartitionRequest(id=w.full.id),
        grpc.StatusCode.FAILED_PRECONDITION,
        "PARTITION_HAS_DEVICES",
        None,
    ),
    "delete: stale etag": (
        "DeletePartition",
        lambda w: pb.DeletePartitionRequest(id=w.full.id, etag="stale", force=True),
        grpc.StatusCode.ABORTED,
        "ETAG_MISMATCH",
        None,
    ),
    "delete: unknown": (
        "DeletePartition",
        lambda w: pb.DeletePartitionRequest(id=UNKNOWN_ID),
        NOT_FOUND,
        "PARTITION_NOT_FOUND",
        None,
    ),
    # RegisterDevices
    "register: no devices": (
        "RegisterDevices",
        lambda w: pb.RegisterDevicesRequest(partition_id=w.partition.id),
        INVALID,
        "INVALID_ARGUMENT",
        ["devices"],
    ),
    "register: every bad item named": (
        "RegisterDevices",
        lambda w: pb.RegisterDevicesRequest(
            partition_id=w.partition.id,
            devices=[
                D(device_id="GOOD0001"),  # fine, but the batch fails as a whole
                D(device_id="SHORT"),  # 5 characters
                D(name="nameless"),  # neither id
                D(device_id="GOOD0001"),  # duplicate of devices[0] inside the batch
                D(meter_id="   "),  # blank
                D(meter_id="M-1", device_id="TOOLONG01"),  # 9 characters
                D(meter_id="M-1"),  # duplicate meter inside the batch
                D(device_id="GOOD0002", partition_id=w.other_partition.id),
                D(meter_id=" M-2"),  # surrounding spaces
            ],
        ),
        INVALID,
        "INVALID_ARGUMENT",
        [
            "devices[1].device_id",
            "devices[2]",
            "devices[3].device_id",
            "devices[4].meter_id",
            "devices[5].device_id",
            "devices[6].meter_id",
            "devices[7].partition_id",
            "devices[8].meter_id",
        ],
    ),
    "register: device id with a control character": (
        "RegisterDevices",
        lambda w: pb.RegisterDevicesRequest(
            partition_id=w.partition.id, devices=[D(device_id="ABCD\x0012")]
        ),
        INVALID,
        "INVALID_CHARACTER",  # the edge refuses it for every field, before any use case
        ["devices[0].device_id"],
    ),
    "register: too many": (
        "RegisterDevices",
        lambda w: pb.RegisterDevicesRequest(
            partition_id=w.partition.id, devices=[D(meter_id=f"m{i}") for i in range(1001)]
        ),
        INVALID,
        "INVALID_ARGUMENT",
        ["devices"],
    ),
    "register: ids already registered": (
        "RegisterDevices",
        lambda w: pb.RegisterDevicesRequest(
            partition_id=w.partition.id,
            devices=[
                D(device_id=w.taken_device_id),
                D(device_id=device_id()),
                D(meter_id=w.taken_meter_id, device_id=device_id()),
            ],
        ),
        EXISTS,
        "DEVICE_ALREADY_EXISTS",
        None,
    ),
    "register: unknown partition": (
        "RegisterDevices",
        lambda w: pb.RegisterDevicesRequest(
            partition_id=UNKNOWN_ID, devices=[D(device_id=device_id())]
        ),
        NOT_FOUND,
        "PARTITION_NOT_FOUND",
        None,
    ),
    "register: partition_id not an id": (
        "RegisterDevices",
        lambda w: pb.RegisterDevicesRequest(partition_id="p", devices=[D(device_id=device_id())]),
        INVALID,
        "INVALID_ID",
        ["partition_id"],
    ),
    # ListDevices
    "list devices: no parent": (
        "ListDevices",
        lambda w: pb.ListDevicesRequest(),
        INVALID,
        "PARENT_REQUIRED",
        ["partition_id"],
    ),
    "list devices: partition of another account than account_id": (
        "ListDevices",
        lambda w: pb.ListDevicesRequest(partition_id=w.partition.id, account_id=w.other_account_id),
        INVALID,
        "INVALID_ARGUMENT",
        ["account_id"],
    ),
    "list devices: unknown order_by": (
        "ListDevices",
        lambda w: pb.ListDevicesRequest(partition_id=w.partition.id, order_by="serial"),
        INVALID,
        "INVALID_ORDER_BY",
        ["order_by"],
    ),
    "list devices: unknown partition": (
        "ListDevices",
        lambda w: pb.ListDevicesRequest(partition_id=UNKNOWN_ID),
        NOT_FOUND,
        "PARTITION_NOT_FOUND",
        None,
    ),
    # closed accounts take no writes, even from admin
    "create: closed account": (
        "CreatePartition",
        lambda w: pb.CreatePartitionRequest(account_id=w.closed_account_id, partition=P(name="x")),
        grpc.StatusCode.FAILED_PRECONDITION,
        "ACCOUNT_CLOSED",
        None,
    ),
    "register: a partition that went with its closed account": (
        "RegisterDevices",
        lambda w: pb.RegisterDevicesRequest(
            partition_id=w.closed_partition.id, devices=[D(device_id=device_id())]
        ),
        NOT_FOUND,
        "PARTITION_NOT_FOUND",
        None,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(server: Server, w: World, case: str) -> None:
    method, build, code, reason, fields = CASES[case]
    md = server.admin if "closed account" in case else w.owner.md  # admin may see a tombstone
    before = snapshot(server)
    f = expect_error(
        getattr(server.stubs.partitions, method), build(w), metadata=md, code=code, reason=reason
    )
    if fields is not None:
        assert [v[0] for v in f.violations] == fields, f.violations
        assert all(v[1] for v in f.violations)
    assert f.message and "Traceback" not in f.message
    assert snapshot(server) == before, "a failed call changed something"


def test_already_registered_names_every_id(server: Server, w: World) -> None:
    fresh = device_id()
    f = expect_error(
        server.stubs.partitions.RegisterDevices,
        pb.RegisterDevicesRequest(
            partition_id=w.full.id,
            devices=[
                D(device_id=fresh),
                D(device_id=w.taken_device_id),
                D(meter_id=w.taken_meter_id),
            ],
        ),
        metadata=w.owner.md,
        code=EXISTS,
        reason="DEVICE_ALREADY_EXISTS",
    )
    assert f.metadata == {
        "device_ids": w.taken_device_id,
        "meter_ids": w.taken_meter_id,
        "fields": "devices[1].device_id,devices[2].meter_id",
    }
    assert w.taken_device_id in f.message and w.taken_meter_id in f.message
    # all or nothing: the fresh id was not registered either
    register(server, w.full.id, dict(device_id=fresh))


def test_bad_batch_message_names_the_items(server: Server, w: World) -> None:
    f = expect_error(
        server.stubs.partitions.RegisterDevices,
        pb.RegisterDevicesRequest(
            partition_id=w.partition.id, devices=[D(device_id="1234567"), D()]
        ),
        metadata=w.owner.md,
        code=INVALID,
    )
    assert "devices[0].device_id" in f.message and "devices[1]" in f.message
    assert "nothing was registered" in f.message
