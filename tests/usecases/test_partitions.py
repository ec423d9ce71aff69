"""The rules of PartitionService's use cases (partitions and devices), asked in process:
the domain error (class = gRPC code, reason, the exact field violations, metadata) and no
row changed. RegisterDevices names every bad item of a batch at once.

Moved from tests/e2e/test_partitions_errors.py (old test → here); the e2e module keeps
one real call per RPC and per error class:
- test_bad_input[<case>] → test_bad_input[<case>], every case of the old table but
  "register: device id with a control character" (INVALID_CHARACTER is the edge's check
  of every string, rpc/inputs.py: e2e only)
- test_already_registered_names_every_id → same name
- test_bad_batch_message_names_the_items → same name
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from accounts.v1 import partition_pb2
from accounts.v1 import partition_service_pb2 as pb
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
from accounts_grpc.rpc.convert.partitions import device_input, partition_input, populated
from accounts_grpc.services import Services
from tests.usecases.helpers import UNKNOWN_ID, UseCases, device_id, uniq


@dataclass
class World:
    account_id: str
    owner: Principal  # the account's first user, an account-admin
    partition: Any  # "Main", with two devices
    full: Any  # a partition with a device
    other_account_id: str
    other_partition: Any
    taken_device_id: str
    taken_meter_id: str
    closed_account_id: str
    closed_partition: Any  # a partition of the account before it was closed


@pytest.fixture(scope="module")
def w(uc: UseCases) -> World:
    account, owner = uc.new_account("Partition Errors AG")
    part = uc.new_partition(account.id, "Main")
    uc.new_partition(account.id, "Taken")
    full = uc.new_partition(account.id)
    taken_d, taken_m = device_id(), uniq("MTR-")
    uc.register(part.id, dict(device_id=taken_d), dict(meter_id=taken_m))
    uc.register(full.id, dict(device_id=device_id()))
    other, _ = uc.new_account("Other AG")
    closed, _ = uc.new_account("Closed AG")
    closed_part = uc.new_partition(closed.id)
    uc.close_account(closed.id)
    return World(account.id, uc.principal(owner), part, full, other.id,
                 uc.new_partition(other.id), taken_d, taken_m, closed.id, closed_part)


#: each RPC as its servicer calls the use case
CALLS: dict[str, Callable[[Services, Principal, Any], Any]] = {
    "CreatePartition": lambda s, p, r: s.partitions.create(
        p, r.account_id, partition_input(r.partition), request_id=r.request_id),
    "GetPartition": lambda s, p, r: s.partitions.get(p, r.id),
    "ListPartitions": lambda s, p, r: s.partitions.list_partitions(
        p, r.account_id, page_size=r.page_size, page_token=r.page_token, filter=r.filter,
        order_by=r.order_by, include=list(r.include)),
    "UpdatePartition": lambda s, p, r: s.partitions.update(
        p, r.partition.id, partition_input(r.partition), mask_paths=list(r.update_mask.paths),
        populated=populated(r.partition)),
    "DeletePartition": lambda s, p, r: s.partitions.delete(p, r.id, etag=r.etag, force=r.force),
    "RegisterDevices": lambda s, p, r: s.devices.register_devices(
        p, r.partition_id, [device_input(d) for d in r.devices], request_id=r.request_id),
    "ListDevices": lambda s, p, r: s.devices.list_devices(
        p, partition_id=r.partition_id, account_id=r.account_id, page_size=r.page_size,
        page_token=r.page_token, filter=r.filter, order_by=r.order_by),
}


def P(**kw: Any) -> partition_pb2.Partition:
    return partition_pb2.Partition(**kw)


def D(**kw: Any) -> partition_pb2.Device:
    return partition_pb2.Device(**kw)


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


# name → (RPC, request builder, error, reason, exact violated fields or None)
Case = tuple[str, Callable[[World], Any], type[DomainError], str, list[str] | None]
CASES: dict[str, Case] = {
    # CreatePartition
    "create: no name": (
        "CreatePartition", lambda w: pb.CreatePartitionRequest(account_id=w.account_id,
                                                               partition=P()),
        InvalidArgument, "INVALID_ARGUMENT", ["partition.name"]),
    "create: name and description too long": (
        "CreatePartition",
        lambda w: pb.CreatePartitionRequest(
            account_id=w.account_id, partition=P(name="x" * 201, description="y" * 2001)),
        InvalidArgument, "INVALID_ARGUMENT", ["partition.name", "partition.description"]),
    "create: name taken": (
        "CreatePartition",
        lambda w: pb.CreatePartitionRequest(account_id=w.account_id, partition=P(name="Taken")),
        AlreadyExists, "PARTITION_ALREADY_EXISTS", None),
    "create: account_id not an id": (
        "CreatePartition",
        lambda w: pb.CreatePartitionRequest(account_id="nope", partition=P(name="x")),
        InvalidArgument, "INVALID_ID", ["account_id"]),
    "create: unknown account": (
        "CreatePartition",
        lambda w: pb.CreatePartitionRequest(account_id=UNKNOWN_ID, partition=P(name="x")),
        NotFound, "ACCOUNT_NOT_FOUND", None),
    # GetPartition
    "get: not an id": (
        "GetPartition", lambda w: pb.GetPartitionRequest(id="main"),
        InvalidArgument, "INVALID_ID", ["id"]),
    "get: unknown": (
        "GetPartition", lambda w: pb.GetPartitionRequest(id=UNKNOWN_ID),
        NotFound, "PARTITION_NOT_FOUND", None),
    # ListPartitions
    "list: unknown include": (
        "ListPartitions",
        lambda w: pb.ListPartitionsRequest(account_id=w.account_id, include=["account", "users"]),
        InvalidArgument, "INVALID_INCLUDE", ["include[1]"]),
    "list: include is case-sensitive": (
        "ListPartitions",
        lambda w: pb.ListPartitionsRequest(account_id=w.account_id, include=["Account"]),
        InvalidArgument, "INVALID_INCLUDE", ["include[0]"]),
    "list: negative page_size": (
        "ListPartitions",
        lambda w: pb.ListPartitionsRequest(account_id=w.account_id, page_size=-1),
        InvalidArgument, "INVALID_PAGE_SIZE", ["page_size"]),
    "list: unknown order_by": (
        "ListPartitions",
        lambda w: pb.ListPartitionsRequest(account_id=w.account_id, order_by="size"),
        InvalidArgument, "INVALID_ORDER_BY", ["order_by"]),
    "list: garbage page_token": (
        "ListPartitions",
        lambda w: pb.ListPartitionsRequest(account_id=w.account_id, page_token="xyz"),
        InvalidArgument, "INVALID_PAGE_TOKEN", ["page_token"]),
    "list: no account_id": (
        "ListPartitions", lambda w: pb.ListPartitionsRequest(),
        InvalidArgument, "INVALID_ARGUMENT", ["account_id"]),
    # UpdatePartition
    "update: output-only path": (
        "UpdatePartition",
        lambda w: pb.UpdatePartitionRequest(partition=P(id=w.partition.id),
                                            update_mask=mask("account_id")),
        InvalidArgument, "INVALID_UPDATE_MASK", ["update_mask.paths[0]"]),
    "update: unknown path": (
        "UpdatePartition",
        lambda w: pb.UpdatePartitionRequest(partition=P(id=w.partition.id),
                                            update_mask=mask("devices")),
        InvalidArgument, "INVALID_UPDATE_MASK", ["update_mask.paths[0]"]),
    "update: populated output-only field": (
        "UpdatePartition",
        lambda w: pb.UpdatePartitionRequest(
            partition=P(id=w.partition.id, name="n", account_id=w.other_account_id)),
        InvalidArgument, "FIELD_NOT_UPDATABLE", ["partition.account_id"]),
    "update: empty name": (
        "UpdatePartition",
        lambda w: pb.UpdatePartitionRequest(partition=P(id=w.partition.id),
                                            update_mask=mask("name")),
        InvalidArgument, "INVALID_ARGUMENT", ["partition.name"]),
    "update: name taken": (
        "UpdatePartition",
        lambda w: pb.UpdatePartitionRequest(partition=P(id=w.partition.id, name="Taken")),
        AlreadyExists, "PARTITION_ALREADY_EXISTS", None),
    "update: stale etag": (
        "UpdatePartition",
        lambda w: pb.UpdatePartitionRequest(partition=P(id=w.partition.id, name="n", etag="e")),
        Aborted, "ETAG_MISMATCH", None),
    "update: unknown": (
        "UpdatePartition",
        lambda w: pb.UpdatePartitionRequest(partition=P(id=UNKNOWN_ID, name="n")),
        NotFound, "PARTITION_NOT_FOUND", None),
    # DeletePartition
    "delete: holds devices": (
        "DeletePartition", lambda w: pb.DeletePartitionRequest(id=w.full.id),
        FailedPrecondition, "PARTITION_HAS_DEVICES", None),
    "delete: stale etag": (
        "DeletePartition",
        lambda w: pb.DeletePartitionRequest(id=w.full.id, etag="stale", force=True),
        Aborted, "ETAG_MISMATCH", None),
    "delete: unknown": (
        "DeletePartition", lambda w: pb.DeletePartitionRequest(id=UNKNOWN_ID),
        NotFound, "PARTITION_NOT_FOUND", None),
    # RegisterDevices
    "register: no devices": (
        "RegisterDevices", lambda w: pb.RegisterDevicesRequest(partition_id=w.partition.id),
        InvalidArgument, "INVALID_ARGUMENT", ["devices"]),
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
        InvalidArgument, "INVALID_ARGUMENT",
        ["devices[1].device_id", "devices[2]", "devices[3].device_id", "devices[4].meter_id",
         "devices[5].device_id", "devices[6].meter_id", "devices[7].partition_id",
         "devices[8].meter_id"]),
    "register: too many": (
        "RegisterDevices",
        lambda w: pb.RegisterDevicesRequest(
            partition_id=w.partition.id, devices=[D(meter_id=f"m{i}") for i in range(1001)]),
        InvalidArgument, "INVALID_ARGUMENT", ["devices"]),
    "register: ids already registered": (
        "RegisterDevices",
        lambda w: pb.RegisterDevicesRequest(
            partition_id=w.partition.id,
            devices=[D(device_id=w.taken_device_id), D(device_id=device_id()),
                     D(meter_id=w.taken_meter_id, device_id=device_id())]),
        AlreadyExists, "DEVICE_ALREADY_EXISTS", None),
    "register: unknown partition": (
        "RegisterDevices",
        lambda w: pb.RegisterDevicesRequest(partition_id=UNKNOWN_ID,
                                            devices=[D(device_id=device_id())]),
        NotFound, "PARTITION_NOT_FOUND", None),
    "register: partition_id not an id": (
        "RegisterDevices",
        lambda w: pb.RegisterDevicesRequest(partition_id="p", devices=[D(device_id=device_id())]),
        InvalidArgument, "INVALID_ID", ["partition_id"]),
    # ListDevices
    "list devices: no parent": (
        "ListDevices", lambda w: pb.ListDevicesRequest(),
        InvalidArgument, "PARENT_REQUIRED", ["partition_id"]),
    "list devices: partition of another account than account_id": (
        "ListDevices",
        lambda w: pb.ListDevicesRequest(partition_id=w.partition.id,
                                        account_id=w.other_account_id),
        InvalidArgument, "INVALID_ARGUMENT", ["account_id"]),
    "list devices: unknown order_by": (
        "ListDevices",
        lambda w: pb.ListDevicesRequest(partition_id=w.partition.id, order_by="serial"),
        InvalidArgument, "INVALID_ORDER_BY", ["order_by"]),
    "list devices: unknown partition": (
        "ListDevices", lambda w: pb.ListDevicesRequest(partition_id=UNKNOWN_ID),
        NotFound, "PARTITION_NOT_FOUND", None),
    # closed accounts take no writes, even from admin
    "create: closed account": (
        "CreatePartition",
        lambda w: pb.CreatePartitionRequest(account_id=w.closed_account_id, partition=P(name="x")),
        FailedPrecondition, "ACCOUNT_CLOSED", None),
    "register: a partition that went with its closed account": (
        "RegisterDevices",
        lambda w: pb.RegisterDevicesRequest(partition_id=w.closed_partition.id,
                                            devices=[D(device_id=device_id())]),
        NotFound, "PARTITION_NOT_FOUND", None),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(uc: UseCases, w: World, case: str) -> None:
    rpc, build, error, reason, fields = CASES[case]
    p = uc.admin if "closed account" in case else w.owner  # admin may see a tombstone
    uc.rejects(lambda: CALLS[rpc](uc.services, p, build(w)), error, reason, fields=fields)


def register(uc: UseCases, w: World, req: pb.RegisterDevicesRequest) -> Any:
    return CALLS["RegisterDevices"](uc.services, w.owner, req)


def test_already_registered_names_every_id(uc: UseCases, w: World) -> None:
    fresh = device_id()
    req = pb.RegisterDevicesRequest(
        partition_id=w.full.id,
        devices=[D(device_id=fresh), D(device_id=w.taken_device_id),
                 D(meter_id=w.taken_meter_id)])
    e = uc.rejects(lambda: register(uc, w, req), AlreadyExists, "DEVICE_ALREADY_EXISTS")
    assert e.metadata == {
        "device_ids": w.taken_device_id,
        "meter_ids": w.taken_meter_id,
        "fields": "devices[1].device_id,devices[2].meter_id",
    }
    assert w.taken_device_id in e.message and w.taken_meter_id in e.message
    # all or nothing: the fresh id was not registered either
    register(uc, w, pb.RegisterDevicesRequest(partition_id=w.full.id,
                                              devices=[D(device_id=fresh)]))


def test_bad_batch_message_names_the_items(uc: UseCases, w: World) -> None:
    req = pb.RegisterDevicesRequest(partition_id=w.partition.id,
                                    devices=[D(device_id="1234567"), D()])
    e = uc.rejects(lambda: register(uc, w, req), InvalidArgument, "INVALID_ARGUMENT")
    assert "devices[0].device_id" in e.message and "devices[1]" in e.message
    assert "nothing was registered" in e.message
